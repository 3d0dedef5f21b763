"""Benchmark: repogen's orchestration overhead for one kernel module build.

    python3 bench/bench_overhead.py [--runs 5] [--kernel-index 0] [--driver hello|falco-sized]

Measured: the whole ``repogen build --rebuild kind=kmod -j 1`` command (cold interpreter start,
config load, plan, Docker connect, work copy, container, ELF verification, store, SQLite), for the
hello-kbuild example on one real Debian kernel whose headers are already downloaded and unpacked
(a warm-up build runs first). Baseline, measured alternately in the same run: a bare
``docker run`` of the same ``make`` in the same image with the same mounts, user and container
settings, preceded by the same fresh copy of the source. Goal: median ratio <= 1.15.

Two drivers: ``hello`` (the shipped hello-kbuild example: a 1.5 s build, so the command's fixed
cost, mostly the interpreter and the Docker SDK import, weighs a lot) and ``falco-sized`` (a
generated kbuild module the size of Falco's, whose build takes as long as a real one). By default
both are measured and reported; the goal is checked on each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    HELLO_KBUILD,
    MIRROR,
    Goals,
    LocalServer,
    bare_build,
    docker_ready,
    driver_yaml,
    falco_sized_driver,
    fmt,
    load_note,
    median,
    mirror_kernels,
    must,
    repogen,
    unpacked_trees,
    write_config,
)

GOAL_RATIO = 1.15


def measure(name: str, source: Path, module: str, kernel: dict, runs: int, tmp: Path) -> tuple[float, str]:
    config = write_config(tmp, [driver_yaml(module, "0.1.0", source, "kbuild", "[kmod]")], [kernel])
    home = tmp / "home"
    warm = must(repogen(home, config, "build", "-j", "1", "--json"), "warm-up build")
    print(f"[{name}] warm-up: repogen build (download + unpack + build) {warm.seconds:.2f}s; "
          f"kernel {kernel['kernelrelease']}")
    tree = unpacked_trees(home)[0]
    bare_build(tree, "kmod", tmp / "bare", source, module)  # warm the bare path too (page cache)
    ours: list[float] = []
    inner: list[float] = []
    bare: list[float] = []
    for _ in range(runs):
        run = must(repogen(home, config, "build", "--rebuild", "kind=kmod", "-j", "1", "--json"),
                   "repogen build --rebuild")
        result = run.json
        if result["built"] != 1:
            raise SystemExit(f"INVALID: the rebuild did not build one job: {result}")
        ours.append(run.seconds)
        inner.append(float(result["results"][0]["seconds"]))
        bare.append(bare_build(tree, "kmod", tmp / "bare", source, module))
    ours_m, bare_m, inner_m = median(ours), median(bare), median(inner)
    ratio = ours_m / bare_m
    print(f"[{name}] repogen build --rebuild kind=kmod (whole command): {fmt(ours)} s; median {ours_m:.3f}s")
    print(f"[{name}]   of which the job itself (work copy, container, verify, store): median {inner_m:.3f}s; "
          f"the rest (interpreter, imports, config, plan, Docker connect, report): {ours_m - inner_m:.3f}s")
    print(f"[{name}] baseline: cp + bare docker run make: {fmt(bare)} s; median {bare_m:.3f}s")
    print(f"[{name}] ratio: {ratio:.3f} (overhead {ours_m - bare_m:+.3f}s)")
    return ratio, f"{ratio:.3f} = {ours_m:.3f}s / {bare_m:.3f}s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs of each (alternating)")
    parser.add_argument("--kernel-index", type=int, default=0, help="which mirror kernel (0 = newest)")
    parser.add_argument("--driver", choices=("hello", "falco-sized", "both"), default="both")
    args = parser.parse_args()
    docker_ready()
    print(f"start: {load_note()}")
    results = []
    with LocalServer(MIRROR) as server, tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        kernel = mirror_kernels(server.base_url)[args.kernel_index]
        if args.driver in ("hello", "both"):
            results.append(("hello (1.5 s build)",
                            measure("hello", HELLO_KBUILD, "hello_repogen", kernel, args.runs, Path(tmp) / "h")))
        if args.driver in ("falco-sized", "both"):
            source = falco_sized_driver(Path(tmp) / "falco-src")
            results.append(("falco-sized", measure("falco-sized", source, "falco", kernel, args.runs,
                                                   Path(tmp) / "f")))
    print(f"end: {load_note()}")
    goals = Goals()
    for label, (ratio, detail) in results:
        goals.check(f"orchestration overhead ratio <= {GOAL_RATIO}, {label}", ratio <= GOAL_RATIO, detail)
    return goals.exit_code


if __name__ == "__main__":
    sys.exit(main())
