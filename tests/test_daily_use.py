"""What a new user trips on in daily use: where state lives, options where people type them, clean
errors for every mistake, selectors that match nothing, balanced shards, packages-only trees.

These run the real ``repogen`` command in a subprocess; none of them needs Docker or a build.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import HELLO_KBUILD, Result, driver_yaml, write_config
from pkgfactory import make_deb

from repogen.config import parse
from repogen.errors import ConfigErrors
from repogen.matrix import expand


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    """``repogen ARGS`` in ``cwd`` with no REPOGEN_HOME, as a user at a shell would type it."""
    base = {k: v for k, v in os.environ.items() if k != "REPOGEN_HOME"}
    proc = subprocess.run([sys.executable, "-m", "repogen", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**base, **(env or {})})
    return Result(proc.returncode, proc.stdout, proc.stderr)


def kernels(count: int) -> list[dict[str, Any]]:
    """Kernel entries whose headers are never fetched (these tests do not build)."""
    return [{"target": "debian", "kernelrelease": f"6.1.{100 + i}-1-amd64", "kernelversion": "1",
             "architecture": "x86_64", "headers": [f"http://127.0.0.1:9/linux-headers-{i}.deb"]}
            for i in range(count)]


def matrix(directory: Path, count: int = 3) -> Path:
    return write_config(directory, [driver_yaml("hello_repogen", "0.1.0", HELLO_KBUILD, "kbuild")], kernels(count))


def one_clean_error(result: Result, code: int, *words: str) -> None:
    assert result.code == code, (result.code, result.out, result.err)
    assert "Traceback" not in result.err + result.out, result.err
    assert result.err.startswith("error: ") or "\nerror: " in result.err, result.err
    for word in words:
        assert word in result.err, (word, result.err)


# -- where the state lives (surprises 6 and 10) -----------------------------------------------------

def test_read_only_commands_create_nothing_on_disk(tmp_path: Path) -> None:
    project = tmp_path / "project"
    config = matrix(project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = sorted(p.name for p in project.iterdir())
    for args in (["validate"], ["plan"], ["plan", "--json", "--why"], ["images", "list", "--json"],
                 ["generations"], ["packages", "list"], ["gc", "--dry-run"]):
        result = run("-c", str(config), *args, cwd=elsewhere)
        assert result.code == 0, (args, result.out, result.err)
    assert sorted(p.name for p in project.iterdir()) == before
    assert list(elsewhere.iterdir()) == []


def test_default_home_is_beside_the_config_file_whatever_the_working_directory(tmp_path: Path) -> None:
    config = matrix(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run("-c", str(config), "publish", "--site", str(tmp_path / "site"), cwd=elsewhere)
    assert result.code == 0, result.err
    assert (config.parent / ".repogen" / "state.db").is_file()
    assert list(elsewhere.iterdir()) == []
    # --home and REPOGEN_HOME still win.
    result = run("-c", str(config), "publish", "--site", str(tmp_path / "site"), cwd=elsewhere,
                 env={"REPOGEN_HOME": str(tmp_path / "env-home")})
    assert result.code == 0 and (tmp_path / "env-home" / "state.db").is_file(), result.err
    result = run("publish", "-c", str(config), "--home", str(tmp_path / "flag-home"), "--site",
                 str(tmp_path / "site"), cwd=elsewhere, env={"REPOGEN_HOME": str(tmp_path / "env-home")})
    assert result.code == 0 and (tmp_path / "flag-home" / "state.db").is_file(), result.err


def test_config_may_be_a_directory_and_options_may_follow_the_subcommand(tmp_path: Path) -> None:
    config = matrix(tmp_path / "project")
    for args in (["-c", str(config.parent), "validate", "--json"], ["validate", "-c", str(config.parent), "--json"],
                 ["validate", "--json", "--config", str(config)]):
        result = run(*args, cwd=tmp_path)
        assert result.code == 0, (args, result.err)
        assert result.json["kernels"] == 3 and result.json["files"] == [str(config)]
    # An option after the subcommand wins over the same option before it.
    result = run("-c", str(tmp_path / "nope.yaml"), "plan", "--json", "-c", str(config.parent), "--home",
                 str(tmp_path / "h"), cwd=tmp_path)
    assert result.code == 0 and result.json["total"] == 6, result.err
    assert not (tmp_path / "h").exists()  # plan is read-only


# -- clean errors (surprises 2, 3, 5) ---------------------------------------------------------------

def test_serve_on_a_busy_port_is_one_clean_line(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("serve", "--site", "site", "--port", str(port), cwd=tmp_path)
    one_clean_error(result, 1, f"cannot listen on 127.0.0.1:{port}", "--port")


def test_unexpected_error_is_one_line_and_the_traceback_goes_to_a_file(tmp_path: Path) -> None:
    config = matrix(tmp_path)
    result = run("-c", str(config), "--home", "/dev/null/home", "publish", cwd=tmp_path,
                 env={"TMPDIR": str(tmp_path)})
    one_clean_error(result, 1, "NotADirectoryError", "/dev/null/home")
    lines = [line for line in result.err.strip().splitlines() if not line.startswith("note:")]
    assert len(lines) == 2 and lines[0].startswith("error: "), result.err
    log = Path(result.err.split("traceback is in ", 1)[1].split(")")[0])
    assert log.is_file() and log.parent == tmp_path and "Traceback" in log.read_text()


def test_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    config = matrix(tmp_path)
    one_clean_error(run("-c", str(config), "plan", "--only", "color=blue", cwd=tmp_path), 2, "bad selector")
    one_clean_error(run("-c", str(config), "plan", "--shard", "4/3", cwd=tmp_path), 2, "bad --shard")
    one_clean_error(run("-c", str(config), "build", "--shard", "x", cwd=tmp_path), 2, "bad --shard")


def test_selectors_and_globs_that_match_nothing_are_not_silent(tmp_path: Path) -> None:
    config = matrix(tmp_path)
    one_clean_error(run("-c", str(config), "plan", "--only", "kernelrelease=5.*", cwd=tmp_path), 2,
                    "'kernelrelease=5.*' matches no job")
    # One of two selectors matching nothing is a warning; the other one's jobs are planned.
    some = run("-c", str(config), "plan", "--json", "--only", "kernelrelease=5.*", "--only", "kind=kmod",
               cwd=tmp_path)
    assert some.code == 0 and some.json["total"] == 3 and "warning: --only 'kernelrelease=5.*'" in some.err
    # Checked before Docker is asked anything.
    one_clean_error(run("-c", str(config), "build", "--rebuild", "name=nope", cwd=tmp_path), 2,
                    "--rebuild 'name=nope' matches no job")
    one_clean_error(run("-c", str(config), "publish", "--deb", str(tmp_path / "nonexistent" / "*.deb"),
                        cwd=tmp_path), 2, "no package file matched --deb")
    assert not (tmp_path / "site").exists()
    # An empty shard is normal (more CI runners than kernels): not an error.
    empty = run("-c", str(config), "plan", "--json", "--shard", "5/5", cwd=tmp_path)
    assert empty.code == 0 and empty.json["total"] == 0, empty.err


def test_wording_names_kinds_and_json_help_says_one_object(tmp_path: Path) -> None:
    config = matrix(tmp_path)
    result = run("-c", str(config), "validate", cwd=tmp_path)
    assert "1 driver versions x 3 kernels = 6 builds (2 per kernel: ebpf+kmod" in result.out, result.out
    assert "one JSON object" in run("plan", "--help", cwd=tmp_path).out


# -- shards (surprise 9) ----------------------------------------------------------------------------

@pytest.mark.parametrize(("count", "shards"), [(3, 3), (7, 3), (10, 4), (2, 5)])
def test_shards_are_balanced_disjoint_and_keep_a_kernels_jobs_together(tmp_path: Path, count: int,
                                                                      shards: int) -> None:
    config = parse(matrix(tmp_path, count))
    everything = {j.job_id for j in expand(config)}
    parts = [expand(config, shard=(i, shards)) for i in range(1, shards + 1)]
    per_shard = [len({j.kernel.ident for j in part}) for part in parts]
    assert max(per_shard) - min(per_shard) <= 1, per_shard
    ids = [j.job_id for part in parts for j in part]
    assert len(ids) == len(set(ids)) and set(ids) == everything
    owners = {}
    for index, part in enumerate(parts):
        for job in part:
            assert owners.setdefault(job.kernel.ident, index) == index  # one kernel, one shard
    # Stable: the same file gives the same split (what every CI runner relies on).
    assert [[j.job_id for j in p] for p in parts] == [[j.job_id for j in expand(config, shard=(i, shards))]
                                                     for i in range(1, shards + 1)]


# -- config (surprises 7 and 11) --------------------------------------------------------------------

@pytest.mark.parametrize("value", ["1.0", "1", "true"])
def test_kernelversion_that_yaml_reads_as_a_number_is_refused_with_the_fix(tmp_path: Path, value: str) -> None:
    config = matrix(tmp_path, 1)
    config.write_text(config.read_text().replace('kernelversion: "1"', f"kernelversion: {value}"))
    with pytest.raises(ConfigErrors) as caught:
        parse(config)
    message = caught.value.errors[0].message
    assert message.startswith(f"{config}:") and "kernels[0].kernelversion" in message
    assert f'quote it (kernelversion: "{value}")' in message


def test_packages_only_matrix_is_valid_and_publishes_the_repositories(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    make_deb(dist, "falco", "0.40.0")
    config = tmp_path / "kernels.yaml"
    config.write_text("packages: {deb: [dist/*.deb]}\n")
    valid = run("-c", str(config), "validate", "--json", cwd=tmp_path)
    assert valid.code == 0 and valid.json["drivers"] == 0, valid.out + valid.err
    published = run("-c", str(config), "publish", "--json", cwd=tmp_path)
    assert published.code == 0, published.err
    assert published.json["deb_repository"]["packages"] == 1 and published.json["artifacts"] == 0
    assert (tmp_path / "site" / "deb" / "dists" / "stable" / "Release").is_file()
    assert json.loads((tmp_path / "site" / "index.json").read_text())["artifacts"] == []
    # Neither drivers nor packages: still a mistake.
    config.write_text("kernels: []\n")
    one_clean_error(run("-c", str(config), "validate", cwd=tmp_path), 2, "no driver is defined")


# -- generations, rollback, packages list/remove, gc (the commands people looked for) ---------------

def packages_matrix(tmp_path: Path) -> tuple[Path, Path]:
    dist = tmp_path / "dist"
    dist.mkdir(exist_ok=True)
    config = tmp_path / "kernels.yaml"
    config.write_text("packages: {deb: [dist/*.deb], rpm: [dist/*.rpm]}\n")
    return config, dist


def test_generations_and_rollback_swap_the_live_tree_atomically(tmp_path: Path) -> None:
    config, dist = packages_matrix(tmp_path)
    make_deb(dist, "falco", "0.40.0")
    assert run("-c", str(config), "publish", cwd=tmp_path).code == 0
    make_deb(dist, "falco", "0.41.0")
    assert run("-c", str(config), "publish", cwd=tmp_path).code == 0
    listed = run("-c", str(config), "generations", "--json", cwd=tmp_path)
    assert listed.code == 0, listed.err
    first, second = listed.json
    assert (first["debs"], second["debs"]) == (1, 2) and second["live"] and not first["live"]
    assert (tmp_path / "site").resolve() == Path(second["path"])
    # Back to the one before the live one; the link is replaced, the generations stay.
    back = run("-c", str(config), "rollback", "--json", cwd=tmp_path)
    assert back.code == 0, back.err
    assert back.json["live"]["name"] == first["name"] and (tmp_path / "site").resolve() == Path(first["path"])
    assert not list(tmp_path.glob(".site.link-*"))
    listed = run("-c", str(config), "packages", "list", "--json", cwd=tmp_path)
    assert [(p["name"], p["version"]) for p in listed.json] == [("falco", "0.40.0")]
    # Forward again by name (a unique prefix will do); an unknown name is a clean usage error.
    assert run("-c", str(config), "rollback", second["name"][:18], cwd=tmp_path).code == 0
    assert (tmp_path / "site").resolve() == Path(second["path"])
    one_clean_error(run("-c", str(config), "rollback", "nope", cwd=tmp_path), 2, "no generation named 'nope'")
    one_clean_error(run("-c", str(config), "rollback", "--site", "elsewhere", cwd=tmp_path), 2,
                    "has no published generation")


def test_publish_rollback_and_gc_of_one_site_wait_for_each_other_from_any_home(tmp_path: Path) -> None:
    """The lock belongs to the published tree, not to a home: a rollback or a publish from another
    checkout waits while a publish holds it, and then does its work."""
    import time

    from repogen.publish import site_lock

    config, dist = packages_matrix(tmp_path)
    make_deb(dist, "falco", "0.40.0")
    assert run("-c", str(config), "publish", cwd=tmp_path).code == 0
    make_deb(dist, "falco", "0.41.0")
    assert run("-c", str(config), "publish", cwd=tmp_path).code == 0
    first, second = run("-c", str(config), "generations", "--json", cwd=tmp_path).json
    site = tmp_path / "site"
    other = tmp_path / "elsewhere"  # another checkout: another home, the same published tree
    other.mkdir()
    (other / "kernels.yaml").write_text(config.read_text().replace("dist/", f"{dist}/"))
    base = {k: v for k, v in os.environ.items() if k != "REPOGEN_HOME"}
    commands = {
        "rollback": ["rollback", "--site", str(site), "--json"],
        "publish": ["publish", "--site", str(site), "--json"],
        "gc": ["gc", "--site", str(site), "--json"],
    }
    for name, args in commands.items():
        errors = tmp_path / f"{name}.err"
        with site_lock(site, "testing"), errors.open("w") as err_file:
            proc = subprocess.Popen([sys.executable, "-m", "repogen", "-c", str(other / "kernels.yaml"), *args],
                                    cwd=other, env=base, stdout=subprocess.PIPE, stderr=err_file, text=True)
            deadline = time.monotonic() + 120  # a busy machine may take a while to start it
            while "waiting for pid" not in errors.read_text() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert proc.poll() is None, (name, errors.read_text())  # waiting, not failing or done
            assert f"waiting for pid {os.getpid()}" in errors.read_text(), (name, errors.read_text())
            time.sleep(1)
            assert proc.poll() is None  # still waiting
            assert site.resolve() == Path(second["path"]) if name == "rollback" else True
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, (name, errors.read_text())
        if name == "rollback":
            assert json.loads(out)["live"]["name"] == first["name"]
            assert site.resolve() == Path(first["path"])
    assert not list(tmp_path.glob("*.lock")) and not list(tmp_path.glob(".*.lock"))  # no file left behind


def test_packages_remove_publishes_a_generation_without_them(tmp_path: Path) -> None:
    from pkgfactory import make_rpm

    config, dist = packages_matrix(tmp_path)
    extra = tmp_path / "extra"
    extra.mkdir()
    make_deb(dist, "falco", "0.40.0")
    make_rpm(dist, "falco", "0.40.0")
    make_deb(extra, "falco", "0.39.0")
    make_deb(extra, "falcoctl", "0.10.0")
    result = run("-c", str(config), "publish", "--deb", str(extra / "*.deb"), cwd=tmp_path)
    assert result.code == 0, result.err
    listed = run("-c", str(config), "packages", "list", "--json", cwd=tmp_path)
    assert sorted((p["kind"], p["name"], p["version"]) for p in listed.json) == [
        ("deb", "falco", "0.39.0"), ("deb", "falco", "0.40.0"), ("deb", "falcoctl", "0.10.0"),
        ("rpm", "falco", "0.40.0-1")]
    before = (tmp_path / "site").resolve()
    one_clean_error(run("-c", str(config), "packages", "remove", "falco=9.9", cwd=tmp_path), 1,
                    "not published", "falco=9.9")
    assert (tmp_path / "site").resolve() == before
    removed = run("-c", str(config), "packages", "remove", "falco=0.39.0", "falcoctl", "--json", cwd=tmp_path)
    assert removed.code == 0, removed.err
    assert (tmp_path / "site").resolve() != before  # a new generation
    listed = run("-c", str(config), "packages", "list", "--json", cwd=tmp_path)
    assert sorted((p["kind"], p["name"], p["version"]) for p in listed.json) == [
        ("deb", "falco", "0.40.0"), ("rpm", "falco", "0.40.0-1")]
    packages_index = next((tmp_path / "site" / "deb" / "dists" / "stable").rglob("binary-amd64/Packages"))
    stanzas = packages_index.read_text()
    assert "Version: 0.39.0" not in stanzas and "falcoctl" not in stanzas and "Version: 0.40.0" in stanzas
    # A later publish keeps what is published (and not removed); the removed ones stay out.
    again = run("-c", str(config), "publish", "--json", cwd=tmp_path)
    assert again.code == 0 and again.json["deb_repository"]["packages"] == 1, again.out + again.err
    # An rpm by version-release.
    assert run("-c", str(config), "packages", "remove", "falco=0.40.0-1", cwd=tmp_path).code == 0
    names = [(p["kind"], p["name"]) for p in run("-c", str(config), "packages", "list", "--json",
                                                    cwd=tmp_path).json]
    assert ("rpm", "falco") not in names


def test_gc_removes_old_generations_and_reports_the_space(tmp_path: Path) -> None:
    config, dist = packages_matrix(tmp_path)
    for version in ("0.1", "0.2", "0.3", "0.4"):
        make_deb(dist, "falco", version, payload="x" * 50_000 + version)
        assert run("-c", str(config), "publish", cwd=tmp_path).code == 0
    kept = [g["name"] for g in run("-c", str(config), "generations", "--json", cwd=tmp_path).json]
    assert len(kept) == 3  # publish itself keeps three
    dry = run("-c", str(config), "gc", "--dry-run", "--keep-generations", "0", "--json", cwd=tmp_path)
    assert dry.code == 0, dry.err
    assert dry.json["removed"]["generation"]["count"] == 2 and dry.json["freed"] > 0
    assert [g["name"] for g in run("-c", str(config), "generations", "--json", cwd=tmp_path).json] == kept
    done = run("-c", str(config), "gc", "--keep-generations", "0", cwd=tmp_path)
    assert done.code == 0 and "freed" in done.out, done.err
    left = run("-c", str(config), "generations", "--json", cwd=tmp_path).json
    assert [g["name"] for g in left] == kept[-1:] and left[0]["live"]
    assert run("-c", str(config), "packages", "list", "--json", cwd=tmp_path).json  # the live tree is whole


# -- clean output while fetching (surprise 8) -------------------------------------------------------

def test_apt_download_as_root_gives_no_unsandboxed_warning(tmp_path: Path) -> None:
    """The demo's header download: no "W: Download is performed unsandboxed as root" per file."""
    scripts = Path(__file__).resolve().parent.parent / "scripts"
    dest = tmp_path / "root-only"
    dest.mkdir(mode=0o700)
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import debian_headers; "
            "debian_headers.apt_download(['apt-get', 'download', '-q', 'hello'], Path(sys.argv[2]))")
    proc = subprocess.run([sys.executable, "-c", code, str(scripts), str(dest)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "unsandboxed" not in proc.stderr, proc.stderr
    assert [p.name for p in dest.glob("hello_*.deb")], list(dest.iterdir())


# -- the README names what people looked for -------------------------------------------------------

def test_readme_lists_every_command_and_the_daily_use_answers() -> None:
    from repogen.cli import cli

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    commands = readme.split("## Commands", 1)[1].split("```", 2)[1]
    for name, command in cli.commands.items():
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for sub in subcommands:
                assert f"repogen {name} " in commands and sub in commands, (name, sub)
        else:
            assert f"repogen {name}" in commands, name
    for needle in ("keep-versions", "grace-period", "--base-url", "serve --host", "linux-kbuild-6.1_6.1.176-1",
                   "kill $(cat .demo/mirror.pid .demo/serve.pid)", "docker rmi", "1 GB", "pip install .",
                   "debootstrap", "rpm2cpio"):
        assert needle in readme, needle


def test_images_list_without_docker_says_unknown_not_missing(tmp_path: Path) -> None:
    result = run("images", "list", cwd=tmp_path, env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert result.code == 0, result.err
    assert "unknown" in result.out and "not built" not in result.out, result.out
    assert "Docker is not reachable" in result.err
    listed = run("images", "list", "--json", cwd=tmp_path, env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})
    assert listed.code == 0 and all(not r["docker"] and r["id"] is None for r in listed.json)


# -- progress of long steps (surprise 8) ------------------------------------------------------------

DEBOOTSTRAP_LIKE = """#!/bin/sh
# debootstrap's own output format (a few of its hundreds of lines), then a tiny root file system.
set -e
rootfs="$3"
echo "I: Retrieving InRelease"
echo "I: Checking Release signature"
for p in libc6 dpkg apt; do echo "I: Retrieving $p 1.0"; echo "I: Validating $p 1.0"; done
echo "I: Extracting libc6..."
echo "I: Installing core packages..."
echo "I: Unpacking required packages..."
echo "I: Configuring libc6..."
echo "I: Base system installed successfully."
mkdir -p "$rootfs/etc/apt" "$rootfs/bin"
echo hello > "$rootfs/hello"
"""


def test_bootstrap_shows_progress_milestones_and_keeps_the_full_log(tmp_path: Path, docker_client: Any) -> None:
    """`images bootstrap` through the real CLI and a real `docker import`; debootstrap itself is replaced
    by a script printing its output format (a real one takes minutes and the network)."""
    import uuid

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "debootstrap").write_text(DEBOOTSTRAP_LIKE)
    (bin_dir / "debootstrap").chmod(0o755)
    suite = f"test-{uuid.uuid4().hex[:8]}"
    config = matrix(tmp_path / "project", 1)
    try:
        result = run("-c", str(config), "images", "bootstrap", "--suite", suite, "--mirror", "http://127.0.0.1:9/debian",
                     cwd=tmp_path, env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
        assert result.code == 0, result.err
        milestones = [line.strip() for line in result.err.splitlines() if line.startswith("  debootstrap")]
        assert milestones == [f"debootstrap {suite}: {m}" for m in (
            "downloading packages", "extracting", "installing", "configuring", "base system installed",
            f"importing repogen/base:{suite} into Docker")], result.err
        assert "I: Validating" not in result.err  # the detail is in the log, not on the screen
        log = config.parent / ".repogen" / "logs" / "images" / f"bootstrap-{suite}.log"
        assert log.read_text().count("I: Validating") == 3
        image = docker_client.images.get(f"repogen/base:{suite}")
        assert f"repogen/base:{suite}: imported ({image.id[:19]})" in result.out, result.out
    finally:
        import contextlib

        import docker.errors

        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(f"repogen/base:{suite}", force=True)


def test_milestones_of_a_docker_build() -> None:
    from repogen.cli import milestone

    assert milestone("Step 3/7 : RUN apt-get install -y gcc-12") == "step 3/7: RUN apt-get install -y gcc-12"
    assert milestone("Get:12 http://127.0.0.1/debian bookworm/main amd64 gcc-12 [19.0 MB]") is None
    assert milestone("I: Retrieving libc6 2.36-9") == "downloading packages"


def test_gc_keeps_the_downloads_the_matrix_names_kernel_images_included(tmp_path: Path) -> None:
    """Real downloads over HTTP into a real home; gc removes only the one no kernel names any more."""
    from repogen.home import Home
    from repogen.serve import serve_in_thread

    served = tmp_path / "mirror"
    served.mkdir()
    for name in ("linux-headers.deb", "linux-image.deb", "linux-headers-old.deb"):
        (served / name).write_bytes(name.encode() * 1000)
    server, base_url = serve_in_thread(served)
    try:
        home = Home(tmp_path / "project" / ".repogen")
        fetched = {name: home.downloads.get(f"{base_url}/{name}") for name in
                   ("linux-headers.deb", "linux-image.deb", "linux-headers-old.deb")}
    finally:
        server.shutdown()
    config = write_config(tmp_path / "project", [driver_yaml("hello_repogen", "0.1.0", HELLO_KBUILD, "kbuild")],
                          [{"target": "debian", "kernelrelease": "6.1.100-1-amd64", "kernelversion": "1",
                            "architecture": "x86_64", "headers": [f"{base_url}/linux-headers.deb"]}],
                          extra="")
    config.write_text(config.read_text().replace(
        "    headers:\n", f"    image: {base_url}/linux-image.deb\n    headers:\n"))
    dry = run("-c", str(config), "gc", "--dry-run", "--json", cwd=tmp_path)
    assert dry.code == 0, dry.err
    old = str(fetched["linux-headers-old.deb"].path)
    assert [p for p in dry.json["paths"] if "/cache/downloads/" in p] == [old], dry.json
    done = run("-c", str(config), "gc", "--json", cwd=tmp_path)
    assert done.code == 0 and done.json["freed"] >= len(b"linux-headers-old.deb") * 1000, done.err
    assert not Path(old).exists()
    assert fetched["linux-headers.deb"].path.exists() and fetched["linux-image.deb"].path.exists()
    # The database forgot the removed download too: asking for it fetches it again, not a missing file.
    assert Home(tmp_path / "project" / ".repogen").store.get(f"{base_url}/linux-headers-old.deb") is None
