"""Benchmark: ``repogen build -j 2`` vs ``-j 1`` on 8 builds (goal: at least 1.7x faster).

    python3 bench/bench_parallel.py [--kernels 2] [--versions 2] [--kinds kmod,ebpf] [--rounds 2]

The 8 builds: the hello-kbuild example as 2 driver versions x [kmod, ebpf] x 2 real Debian kernels.
A warm-up build downloads and unpacks the headers into the home; each measured run is then
``repogen build --rebuild name=* -j N --json`` on that home (the headers stay cached, every job
runs its container again), -j 1 and -j 2 alternating for ``--rounds`` rounds; medians compared.
A control runs the same builds as bare ``docker run``s, 1 then 2 at a time: the speedup the
machine and Docker allow without repogen.
Per run it also reads the build records' start/finish times from the state database and the
container times from the build logs, to show where the time goes (achieved concurrency, per-job
slowdown under -j 2, time outside the container).
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    HELLO_KBUILD,
    MIRROR,
    Goals,
    LocalServer,
    Run,
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

GOAL_SPEEDUP = 1.7
_EXIT = re.compile(r"# exit \S+.* after ([0-9.]+)s")


def analyse(home: Path, run: Run) -> dict[str, float]:
    """Achieved concurrency and per-job timings of one build run, from its records and logs."""
    results: list[dict[str, Any]] = run.json["results"]
    keys = [r["build_key"] for r in results if r["status"] == "built"]
    with sqlite3.connect(home / "state.db") as db:
        rows = db.execute(f"SELECT started_at, finished_at FROM builds WHERE build_key IN "
                          f"({','.join('?' * len(keys))})", keys).fetchall()
    span = max(f for _, f in rows) - min(s for s, _ in rows)
    job_sum = sum(f - s for s, f in rows)
    container = 0.0
    for r in results:
        matches = _EXIT.findall(Path(r["log"]).read_text()) if r.get("log") else []
        container += float(matches[-1]) if matches else 0.0
    return {"wall": run.seconds, "span": span, "job_sum": job_sum, "job_mean": job_sum / len(rows),
            "container_sum": container, "concurrency": job_sum / span if span else 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", type=int, default=2, help="kernels from the mirror (at most 3)")
    parser.add_argument("--versions", type=int, default=2, help="driver versions of the hello-kbuild example")
    parser.add_argument("--kinds", default="kmod,ebpf")
    parser.add_argument("--rounds", type=int, default=3, help="measured -j 1 / -j 2 pairs (medians compared)")
    parser.add_argument("--no-control", action="store_true",
                        help="skip the control: the same builds as bare `docker run`s, 1 then 2 at a time")
    args = parser.parse_args()
    docker_ready()
    print(f"start: {load_note()}")
    kind_list = [k.strip() for k in args.kinds.split(",") if k.strip()]
    kinds = "[" + ", ".join(kind_list) + "]"
    with LocalServer(MIRROR) as server, tempfile.TemporaryDirectory(prefix="bench-parallel-") as tmp:
        kernels = mirror_kernels(server.base_url)[:args.kernels]
        drivers = [driver_yaml("hello_repogen", f"0.{i + 1}.0", HELLO_KBUILD, "kbuild", kinds)
                   for i in range(args.versions)]
        config = write_config(Path(tmp), drivers, kernels)
        home = Path(tmp) / "home"
        jobs = args.versions * len(kernels) * len(kind_list)
        print(f"builds: {args.versions} versions of hello-kbuild x {kinds} x {len(kernels)} kernels = {jobs}; "
              f"{os.cpu_count()} CPUs")
        warm = must(repogen(home, config, "build", "-j", "2", "--json"), "warm-up build")
        print(f"warm-up (downloads, unpack, first builds): {warm.seconds:.1f}s, {warm.json['built']} built")
        stats: dict[int, list[dict[str, float]]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for j in (1, 2):
                run = must(repogen(home, config, "build", "--rebuild", "name=*", "-j", str(j), "--json"),
                           f"repogen build -j {j}")
                if run.json["built"] != jobs:
                    print(f"INVALID: -j {j} built {run.json['built']} of {jobs}")
                    return 2
                stats[j].append(analyse(home, run))
        control: dict[int, list[float]] = {1: [], 2: []}
        if not args.no_control:
            trees = unpacked_trees(home)
            specs = [(t, k, Path(tmp) / f"bare-{i}") for i, (t, k) in enumerate(
                (t, k) for t in trees for k in kind_list for _ in range(args.versions))]
            for _ in range(args.rounds):
                for j in (1, 2):
                    started = time.perf_counter()
                    with ThreadPoolExecutor(max_workers=j) as pool:
                        list(pool.map(lambda spec: bare_build(*spec), specs))
                    control[j].append(time.perf_counter() - started)
    for j in (1, 2):
        s = stats[j]
        print(f"-j {j}: wall {fmt([x['wall'] for x in s])} s (median {median([x['wall'] for x in s]):.2f}s); "
              f"first job start to last job end {median([x['span'] for x in s]):.2f}s; "
              f"mean job {median([x['job_mean'] for x in s]):.2f}s; "
              f"in containers {median([x['container_sum'] for x in s]) / jobs:.2f}s per job; "
              f"concurrency achieved {median([x['concurrency'] for x in s]):.2f}")
    wall1, wall2 = median([x["wall"] for x in stats[1]]), median([x["wall"] for x in stats[2]])
    span1, span2 = median([x["span"] for x in stats[1]]), median([x["span"] for x in stats[2]])
    speedup = wall1 / wall2
    print(f"speedup -j 2 vs -j 1: whole command {speedup:.2f}x; builds only (job span) {span1 / span2:.2f}x; "
          f"fixed cost outside the jobs {wall1 - span1:.2f}s / {wall2 - span2:.2f}s")
    if control[1]:
        c1, c2 = median(control[1]), median(control[2])
        print(f"control, the same {jobs} builds as bare `docker run`s (no repogen): 1 at a time {fmt(control[1])} s, "
              f"2 at a time {fmt(control[2])} s; speedup {c1 / c2:.2f}x (what this machine allows)")
    print(f"end: {load_note()}")
    goals = Goals()
    goals.check(f"-j 2 at least {GOAL_SPEEDUP}x faster than -j 1 on {jobs} builds", speedup >= GOAL_SPEEDUP,
                f"{speedup:.2f}x ({wall1:.2f}s -> {wall2:.2f}s) = {speedup / GOAL_SPEEDUP:.2f} of the goal")
    return goals.exit_code


if __name__ == "__main__":
    sys.exit(main())
