"""`repogen plan --changed-since REF`: only the jobs of entries a pull request added or edited.

A real git repository: kernels.yaml plus kernels.d/*.yaml committed, then edited the ways a pull
request edits them (a new kernel in a new include file, a changed header URL, an entry moved between
files unchanged, a new driver version).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sitefactory import kernel_entries

pytestmark = pytest.mark.timeout(120)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
                   check=True, capture_output=True, timeout=60)


def plan(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "repogen", "--home", str(repo.parent / "home"), "-c",
                           str(repo / "kernels.yaml"), "plan", "--json", "--all", *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "DOCKER_HOST": "unix:///nonexistent"})


def releases(result: subprocess.CompletedProcess[str]) -> set[tuple[str, str]]:
    assert result.returncode == 0, result.stderr
    return {(j["driverversion"], j["kernelrelease"]) for j in json.loads(result.stdout)["jobs"]}


DRIVER = "  - name: falco\n    version: {version}\n    source: {{path: src}}\n    recipe: kbuild\n    kinds: [kmod]\n"


def test_changed_since_selects_only_new_and_edited_entries(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "Kbuild").write_text("obj-m += falco.o\n")
    (repo / "kernels.d").mkdir()
    main = repo / "kernels.yaml"
    main.write_text("include: [kernels.d/*.yaml]\ndrivers:\n" + DRIVER.format(version="1.0.0+driver")
                    + "kernels:\n" + kernel_entries(2))
    (repo / "kernels.d" / "a.yaml").write_text("kernels:\n" + kernel_entries(1, start=2))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "matrix")
    assert releases(plan(repo, "--changed-since", "HEAD")) == set()

    # A pull request: kernel 0's header URL edited; kernel 2 moved from a.yaml into the main file as
    # it was; kernel 3 added in a new include file.
    text = main.read_text().replace("linux-headers-6.1.100-1-amd64_all.deb", "linux-headers-6.1.100-1-amd64_v2.deb")
    main.write_text(text + kernel_entries(1, start=2))
    (repo / "kernels.d" / "a.yaml").write_text("kernels: []\n")
    (repo / "kernels.d" / "b.yaml").write_text("kernels:\n" + kernel_entries(1, start=3))
    changed = releases(plan(repo, "--changed-since", "HEAD"))
    assert changed == {("1.0.0+driver", "6.1.100-1-amd64"), ("1.0.0+driver", "6.1.103-1-amd64")}
    assert len(releases(plan(repo))) == 4

    # A new driver version: every kernel, for that version only.
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "kernels")
    first = DRIVER.format(version="1.0.0+driver")
    main.write_text(main.read_text().replace(first, first + DRIVER.format(version="2.0.0+driver")))
    changed = releases(plan(repo, "--changed-since", "HEAD"))
    assert {v for v, _ in changed} == {"2.0.0+driver"} and len(changed) == 4


def test_changed_since_an_unknown_ref_is_a_clear_error(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "kernels.yaml").write_text("drivers:\n" + DRIVER.format(version="1.0.0") + "kernels:\n" + kernel_entries(1))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "matrix")
    result = plan(repo, "--changed-since", "no-such-branch")
    assert result.returncode == 1
    assert "no-such-branch: not a git revision" in result.stderr and "Traceback" not in result.stderr
