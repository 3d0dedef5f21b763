"""Benchmark: repogen's orchestration overhead for one kernel module build.

    python3 bench/bench_overhead.py [--runs 5] [--kernel-index 0]

Measured: the whole ``repogen build --rebuild kind=kmod -j 1`` command (cold interpreter start,
config load, plan, Docker connect, work copy, container, ELF verification, store, SQLite), for the
hello-kbuild example on one real Debian kernel whose headers are already downloaded and unpacked
(a warm-up build runs first). Baseline, measured alternately in the same run: a bare
``docker run`` of the same ``make`` in the same image with the same mounts, user and container
settings, preceded by the same fresh copy of the source. Goal: median ratio <= 1.15.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs of each (alternating)")
    parser.add_argument("--kernel-index", type=int, default=0, help="which mirror kernel (0 = newest)")
    args = parser.parse_args()
    docker_ready()
    print(f"start: {load_note()}")
    with LocalServer(MIRROR) as server, tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        kernel = mirror_kernels(server.base_url)[args.kernel_index]
        config = write_config(Path(tmp), [driver_yaml("hello_repogen", "0.1.0", HELLO_KBUILD, "kbuild", "[kmod]")],
                              [kernel])
        home = Path(tmp) / "home"
        warm = must(repogen(home, config, "build", "-j", "1", "--json"), "warm-up build")
        print(f"warm-up: repogen build (download + unpack + build) {warm.seconds:.2f}s; "
              f"kernel {kernel['kernelrelease']}")
        tree = unpacked_trees(home)[0]
        bare_build(tree, "kmod", Path(tmp) / "bare")  # warm the bare path too (page cache, image layers)
        ours: list[float] = []
        inner: list[float] = []
        bare: list[float] = []
        for _ in range(args.runs):
            run = must(repogen(home, config, "build", "--rebuild", "kind=kmod", "-j", "1", "--json"),
                       "repogen build --rebuild")
            result = run.json
            if result["built"] != 1:
                raise SystemExit(f"INVALID: the rebuild did not build one job: {result}")
            ours.append(run.seconds)
            inner.append(float(result["results"][0]["seconds"]))
            bare.append(bare_build(tree, "kmod", Path(tmp) / "bare"))
    ours_m, bare_m, inner_m = median(ours), median(bare), median(inner)
    ratio = ours_m / bare_m
    print(f"repogen build --rebuild kind=kmod (whole command): {fmt(ours)} s; median {ours_m:.3f}s")
    print(f"  of which the job itself (work copy, container, verify, store): median {inner_m:.3f}s; "
          f"the rest (interpreter, config, plan, Docker connect, report): {ours_m - inner_m:.3f}s")
    print(f"baseline: cp + bare docker run make: {fmt(bare)} s; median {bare_m:.3f}s")
    print(f"ratio: {ratio:.3f} (overhead {ours_m - bare_m:+.3f}s)")
    print(f"end: {load_note()}")
    goals = Goals()
    goals.check(f"orchestration overhead ratio <= {GOAL_RATIO}", ratio <= GOAL_RATIO,
                f"{ratio:.3f} = {ours_m:.3f}s / {bare_m:.3f}s")
    return goals.exit_code


if __name__ == "__main__":
    sys.exit(main())
