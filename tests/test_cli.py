"""The command line itself: help everywhere, machine output, and how the images are chosen."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import HELLO_KBUILD, Repogen, driver_yaml, write_config

from repogen import images
from repogen.cli import cli
from repogen.model import Header, Kernel

COMMANDS = [[], ["validate"], ["plan"], ["build"], ["crawl"], ["publish"], ["serve"], ["images"], ["images", "build"],
            ["images", "bootstrap"], ["images", "list"], ["gc"], ["generations"], ["rollback"], ["packages"],
            ["packages", "list"], ["packages", "remove"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "repogen")
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output and "--help" in result.output


def test_console_script_is_installed() -> None:
    """The ``repogen`` command pip installed next to this interpreter (not ``python -m repogen``)."""
    script = Path(sys.executable).parent / "repogen"
    assert script.is_file() and os.access(script, os.X_OK), f"no console script at {script}"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and "version" in proc.stdout, proc.stderr
    assert proc.stdout.strip().endswith(importlib.metadata.version("repogen"))


def _kernel(release: str, builder: str | None = None) -> Kernel:
    return Kernel("debian", release, "1", "x86_64", (Header("http://127.0.0.1/x.deb"),), builder=builder)


def test_toolchain_is_the_kernels_own_gcc_guessed_by_version_before_headers_are_read() -> None:
    # The gcc recorded in the kernel's headers decides ...
    assert images.choose(_kernel("6.1.170-3-amd64"), gcc=12).name == "gcc12"
    assert images.choose(_kernel("6.12.117-1-amd64"), gcc=14).name == "gcc14"
    assert images.choose(_kernel("5.10.223-1-amd64"), gcc=10).name == "gcc10"
    # ... a gcc with no toolchain gets the nearest newer one (then the newest) ...
    assert images.choose(_kernel("6.5.0-1"), gcc=13).name == "gcc14"
    assert images.choose(_kernel("6.18.0-1"), gcc=15).name == "gcc14"
    # ... before the headers were read, the version guesses ...
    assert images.choose(_kernel("6.1.170-3-amd64")).name == "gcc12"
    assert images.choose(_kernel("5.10.0-1")).name == "gcc10"
    assert images.choose(_kernel("6.12.117-1-amd64")).name == "gcc14"
    # ... and `builder:` overrides both.
    assert images.choose(_kernel("6.1.170-3-amd64", builder="gcc10"), gcc=12).name == "gcc10"


def test_validate_json_and_plan_json(tmp_path: Path, mirror) -> None:
    config = write_config(tmp_path, [driver_yaml("hello_repogen", "0.1.0", HELLO_KBUILD, "kbuild")], mirror.kernels)
    repogen = Repogen(tmp_path / "home", config)
    valid = repogen("validate", "--json")
    assert valid.code == 0 and valid.json == {"ok": True, "files": [str(config)], "drivers": 1, "kernels": 3,
                                               "jobs": 6}
    plan = repogen("plan", "--json")
    assert plan.code == 0
    assert plan.json["total"] == 6 and len(plan.json["jobs"]) == 6
    assert {j["state"] for j in plan.json["jobs"]} == {"missing"}


def _small_matrix(tmp_path: Path) -> Path:
    kernels = [{"target": "debian", "kernelrelease": f"6.1.{n}-1-amd64", "kernelversion": "1", "architecture": "x86_64",
                "headers": [{"url": f"http://127.0.0.1:9/linux-headers-6.1.{n}.deb",
                             "sha256": hashlib.sha256(str(n).encode()).hexdigest()}]}
               for n in range(3)]
    return write_config(tmp_path, [driver_yaml("hello_repogen", "0.1.0", HELLO_KBUILD, "kbuild")], kernels)


# What a no-op `plan --json` must not pay for at start-up (it reads the database, nothing else).
HEAVY = ("urllib3", "elftools", "docker", "boto3", "botocore", "jinja2", "debian", "dask", "distributed",
         "createrepo_c", "requests", "rich", "yaml")


def test_plan_json_loads_no_network_docker_elf_yaml_or_rich_library(tmp_path: Path) -> None:
    from repogen.home import Home

    config = _small_matrix(tmp_path)
    Home(tmp_path / "home").store.record_images({"gcc12": "sha256:" + "1" * 64}, {"gcc12": "2" * 64})  # images build
    # The modules loaded when the command ends (plan ends with os._exit: the report goes first).
    script = ("import json, os, runpy, sys\n"
              "def report(code=0):\n"
              f"    sys.stderr.write(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))\n"
              "    sys.stderr.flush()\n    exit_now(code)\n"
              "exit_now, os._exit = os._exit, report\n"
              "try:\n    runpy.run_module('repogen', run_name='__main__')\n"
              "except SystemExit as exc:\n    report(exc.code or 0)\n")
    for _ in ("cold", "warm"):  # without, then with the config cache
        proc = subprocess.run([sys.executable, "-c", script, "--home", str(tmp_path / "home"), "-c", str(config),
                               "plan", "--json"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["counts"] == {"missing": 6}
        assert json.loads(proc.stderr.splitlines()[-1]) == []


def test_json_output_is_the_json_modules_indented_output(capsys: pytest.CaptureFixture[str]) -> None:
    from repogen.cli import emit_json

    data = {"counts": {"built": 2}, "total": 2, "jobs": [{"name": "falco", "size": 12, "ok": True, "reason": None,
                                                          "ratio": 0.25, "kinds": ("kmod", "ebpf"), "none": []}]}
    emit_json(data)
    assert capsys.readouterr().out == json.dumps(data, indent=2) + "\n"
    for value in ({"error": "caf\u00e9 \u2026 \"quoted\"\n"}, {"big": 2**70}, {1: "int key"}, [], {}):
        emit_json(value)
        assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(value))


def test_images_list_json(tmp_path: Path, docker_client, builder_image: str) -> None:
    result = Repogen(tmp_path / "home")("images", "list", "--json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    gcc12 = next(r for r in rows if r["toolchain"] == "gcc12")
    # Named by content: the toolchain, then a digest of its Dockerfile and base image.
    assert gcc12["id"] == builder_image and gcc12["image"].startswith("repogen/builder:gcc12-")
    assert {r["suite"] for r in rows} == {"bullseye", "bookworm", "trixie"}
