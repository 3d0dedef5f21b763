"""Benchmark: the real Falco driver (unmodified falcosecurity/libs), one kernel and a whole matrix.

    python3 bench/bench_real_driver.py [--runs 3] [--matrix] [--boot]

1. Overhead. The whole ``repogen build --rebuild kind=kmod -j 1`` command (interpreter start, config,
   plan, work copy, container, verification with Module.symvers, store) of libs 9.1.0's falco.ko for
   the newest Debian 12 kernel, against a bare ``docker run make`` of the same prepared libs tree in
   the same image with the same mounts and make -j, measured alternately in the same run.
   Goal: median ratio <= 1.05.
2. Prepare (libs' cmake) runs once per driver version and toolchain, whatever the number of kernels:
   counted on the matrix below.
3. Boot check (``--boot``): seconds per module, booting each x86_64 module in its own kernel under
   QEMU without KVM. Goal: at most 12 s each.
4. The matrix of the tests (``--matrix``): libs 9.1.0 and 10.2.0 x Debian 11/12/13 (x86_64) + Debian 12
   (aarch64, cross-built), both kinds where they exist: wall time at -j 2, against the sum of the build
   containers' own seconds (what the compilers took) halved for 2 parallel builds: the limit.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import debian_headers
from _common import (
    CACHE,
    ROOT,
    Goals,
    LocalServer,
    builder_image,
    docker_ready,
    fmt,
    load_note,
    median,
    must,
    repogen,
    unpacked_trees,
)

from tests.matrixfiles import kernels_yaml

UPSTREAM = Path(os.environ.get("REPOGEN_UPSTREAM", ROOT.parent / "shared" / "upstream"))
OVERHEAD_GOAL = 1.05
BOOT_GOAL = 12.0


def drivers_yaml(versions: list[str], kinds: str | None = None) -> str:
    lines = ["drivers:"]
    for version in versions:
        tarball = UPSTREAM / f"falcosecurity-libs-{version}.tar.gz"
        if not tarball.is_file():
            raise SystemExit(f"{tarball} is missing (set REPOGEN_UPSTREAM to the directory of the libs tarballs)")
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        lines += ["  - name: falco", f"    version: {version}", f"    source: {{path: {tarball}, sha256: {digest}}}"]
        if kinds:
            lines.append(f"    kinds: {kinds}")
    return "\n".join(lines) + "\n"


def kernels(base_url: str, picks: list[tuple[str, str]], image: bool) -> list[dict[str, object]]:
    apt = debian_headers.archive(CACHE / "apt")
    apt.update()
    catalog = debian_headers.Catalog(apt)
    found = [catalog.find(suite, arch, image=image and arch == "amd64")[0] for suite, arch in picks]
    return debian_headers.fetch(apt, found, CACHE / "mirror", base_url)


def bare_make(home: Path, scratch: Path, make_jobs: int) -> float:
    """A fresh copy of the prepared libs module tree, then a bare ``docker run make`` of it."""
    prepared = next(p for p in (home / "cache" / "prepared").iterdir() if (p / "build" / "src").is_dir())
    tree = unpacked_trees(home)[0]
    started = time.perf_counter()
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(prepared / "build" / "src", scratch, symlinks=True)
    subprocess.run(["chown", "-R", "1000:1000", str(scratch)], check=True)
    subprocess.run(["chmod", "-R", "u+w", str(scratch)], check=True)  # the prepared cache is sealed read-only
    cmd = ["docker", "run", "--rm", "--network", "none", "--user", "1000:1000", "--cap-drop", "ALL",
           "--security-opt", "no-new-privileges", "--memory", "4g", "--memory-swap", "4g", "--pids-limit", "4096",
           "--read-only", "--tmpfs", "/tmp:rw,exec,size=1g", "-w", "/work"]
    for source, target in tree.mounts():
        cmd += ["--mount", f"type=bind,source={source},target={target},readonly"]
    cmd += ["--mount", f"type=bind,source={scratch},target=/work", builder_image(),
            "make", "-C", "/work", f"-j{make_jobs}", f"KERNELDIR={tree.container_kernel_dir}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if proc.returncode or not (scratch / "falco.ko").is_file():
        raise SystemExit(f"bare docker run make failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def overhead(base_url: str, runs: int, tmp: Path, goals: Goals) -> None:
    kernel = kernels(base_url, [("bookworm", "amd64")], image=False)
    config = tmp / "one" / "kernels.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(drivers_yaml(["9.1.0+driver"], "[kmod]") + kernels_yaml(kernel))
    home = tmp / "one" / "home"
    warm = must(repogen(home, config, "build", "-j", "1", "--json"), "warm-up build")
    print(f"[overhead] warm-up (download, unpack, prepare, build): {warm.seconds:.1f}s, "
          f"kernel {kernel[0]['kernelrelease']}")
    make_jobs = os.cpu_count() or 1  # what repogen gives one build at -j 1
    bare_make(home, tmp / "bare", make_jobs)  # warm the bare path too
    ours: list[float] = []
    bare: list[float] = []
    for _ in range(runs):
        run = must(repogen(home, config, "build", "--rebuild", "kind=kmod", "-j", "1", "--json"), "rebuild")
        if run.json["built"] != 1:
            raise SystemExit(f"INVALID: the rebuild did not build one job: {run.json}")
        ours.append(run.seconds)
        bare.append(bare_make(home, tmp / "bare", make_jobs))
    ratio = median(ours) / median(bare)
    print(f"[overhead] repogen build --rebuild (whole command): {fmt(ours)} s; median {median(ours):.2f}s")
    print(f"[overhead] baseline: copy + bare docker run make -j{make_jobs}: {fmt(bare)} s; median {median(bare):.2f}s")
    goals.check(f"real falco.ko, whole repogen build vs bare docker run make <= {OVERHEAD_GOAL}",
                ratio <= OVERHEAD_GOAL, f"{ratio:.3f}")


def container_seconds(home: Path) -> float:
    """What the build and prepare containers themselves took, from their logs."""
    total = 0.0
    for log in (home / "logs").rglob("*.log"):
        for m in re.finditer(r"^# exit 0 after ([\d.]+)s", log.read_text(errors="replace"), re.M):
            total += float(m.group(1))
    return total


def matrix(base_url: str, tmp: Path, boot: bool, goals: Goals) -> None:
    picks = [("bullseye", "amd64"), ("bookworm", "amd64"), ("trixie", "amd64"), ("bookworm", "arm64")]
    entries = kernels(base_url, picks, image=boot)
    config = tmp / "matrix" / "kernels.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(drivers_yaml(["9.1.0+driver", "10.2.0+driver"]) + kernels_yaml(entries))
    home = tmp / "matrix" / "home"
    run = must(repogen(home, config, "build", "-j", "2", "--json", timeout=7200), "matrix build")
    report = run.json
    compilers = container_seconds(home)
    print(f"[matrix] {report['built']} artifacts built, {report['failed']} failed, in {run.seconds:.0f}s wall at -j 2")
    print(f"[matrix] build containers took {compilers:.0f}s in all; limit with 2 in parallel: {compilers / 2:.0f}s; "
          f"wall / limit = {run.seconds / (compilers / 2):.2f}")
    prepares = report["counters"]["prepares"]
    goals.check("prepare once per driver version and toolchain", prepares == 2 * 3,
                f"{prepares} prepares for 2 versions x 3 toolchains over {len(entries)} kernels")
    if boot:
        check = must(repogen(home, config, "verify", "--boot", "-j", "2", "--json", "kind=kmod,arch=x86_64"),
                     "boot check")
        seconds = [r["seconds"] for r in check.json["results"] if r.get("seconds")]
        statuses = sorted({r["status"] for r in check.json["results"]})
        print(f"[boot] {len(seconds)} boots: {fmt(seconds)} s; statuses {statuses}")
        goals.check(f"boot check per module <= {BOOT_GOAL}s", bool(seconds) and max(seconds) <= BOOT_GOAL,
                    f"max {max(seconds or [0]):.1f}s, median {median(seconds or [0]):.1f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--matrix", action="store_true", help="also build the tests' whole matrix")
    parser.add_argument("--boot", action="store_true", help="with --matrix: boot-check the x86_64 modules")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    docker_ready()
    print(f"start: {load_note()}")
    goals = Goals()
    with LocalServer(CACHE / "mirror") as server, tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
        if not args.skip_overhead:
            overhead(server.base_url, args.runs, Path(tmp), goals)
        if args.matrix:
            matrix(server.base_url, Path(tmp), args.boot, goals)
    print(f"end: {load_note()}")
    return goals.exit_code


if __name__ == "__main__":
    sys.exit(main())
