"""Benchmark: a no-op ``repogen plan`` over 10,000 kernels x 2 driver versions (40,000 built jobs).

    python3 bench/bench_plan.py [--kernels 10000] [--runs 5] [--cold-runs 3] [--head-threads 8]
                                [--no-heads] [--work DIR]

Goals: the whole ``repogen plan --json`` command (cold interpreter start included) in under 1 s,
both warm (config cache valid) and cold (right after kernels.yaml changed: no config cache, the
YAML parsed and validated again). Baselines, measured in the same run: the cold run with the
config fast path switched off (the located PyYAML parse every run paid before), and one HTTP HEAD
per artifact against a threaded static server on 127.0.0.1 serving the 40,000 artifacts in the
driver layout, sequential over one keep-alive connection (how the driverkit build grid skips
existing artifacts today).

The state is synthetic but exact: the build records carry the very keys ``repogen.build.plan``
computes (``job_key`` with the real builder image's toolchain id), written with
``Store.record_build``. It is kept under ``--work`` and reused while its inputs are unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import inspect
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    CACHE,
    HELLO_KBUILD,
    ROOT,
    Goals,
    Run,
    docker_ready,
    fmt,
    load_note,
    median,
    must,
    repogen,
    serve_subprocess,
    stop,
)

from repogen import __version__, container, images
from repogen import config as config_mod
from repogen import plan as plan_mod
from repogen.home import Home
from repogen.matrix import expand
from repogen.plan import job_key
from repogen.publish import driver_path
from repogen.sources import tree_digest
from repogen.store import BuildRecord

GOAL_SECONDS = 1.0
DRIVER_VERSIONS = ("7.3.0+driver", "8.0.0+driver")

# (target, kernelrelease pattern, headers file patterns): all >= 5.15, so the one gcc12 image serves them.
FAMILIES = [
    ("debian", "{a}.{b}.{c}-{d}-amd64",
     ["linux-headers-{a}.{b}.0-{d}-common_{a}.{b}.{c}-{d}_all.deb",
      "linux-headers-{a}.{b}.0-{d}-amd64_{a}.{b}.{c}-{d}_amd64.deb",
      "linux-kbuild-{a}.{b}_{a}.{b}.{c}-{d}_amd64.deb"]),
    ("ubuntu-generic", "{a}.{b}.0-{d}-generic",
     ["linux-headers-{a}.{b}.0-{d}_{a}.{b}.0-{d}.{c}_all.deb",
      "linux-headers-{a}.{b}.0-{d}-generic_{a}.{b}.0-{d}.{c}_amd64.deb",
      "linux-modules-{a}.{b}.0-{d}-generic_{a}.{b}.0-{d}.{c}_amd64.deb"]),
    ("ubuntu-aws", "{a}.{b}.0-{d}-aws",
     ["linux-aws-headers-{a}.{b}.0-{d}_{a}.{b}.0-{d}.{c}_all.deb",
      "linux-headers-{a}.{b}.0-{d}-aws_{a}.{b}.0-{d}.{c}_amd64.deb",
      "linux-modules-{a}.{b}.0-{d}-aws_{a}.{b}.0-{d}.{c}_amd64.deb"]),
    ("fedora", "{a}.{b}.{c}-{d}.fc39.x86_64",
     ["kernel-devel-{a}.{b}.{c}-{d}.fc39.x86_64.rpm",
      "kernel-headers-{a}.{b}.{c}-{d}.fc39.x86_64.rpm",
      "kernel-core-{a}.{b}.{c}-{d}.fc39.x86_64.rpm"]),
    ("amazonlinux2023", "{a}.{b}.{c}-{d}.amzn2023.x86_64",
     ["kernel6.1-devel-{a}.{b}.{c}-{d}.amzn2023.x86_64.rpm",
      "kernel6.1-headers-{a}.{b}.{c}-{d}.amzn2023.x86_64.rpm",
      "kernel6.1-core-{a}.{b}.{c}-{d}.amzn2023.x86_64.rpm"]),
]
SERIES = [(5, 15), (6, 1), (6, 5), (6, 6), (6, 8)]  # all in gcc12's range (>=5.15,<6.10)


def synthetic_yaml(kernels: int, driver_dir: Path) -> str:
    """kernels.yaml text: 2 driver versions of the kbuild example, ``kernels`` kernels, 3 headers each."""
    lines = ["drivers:"]
    for version in DRIVER_VERSIONS:
        lines += ["  - name: falco", f"    version: {version}", f"    source: {{path: {driver_dir}}}",
                  "    recipe: kbuild", "    kinds: [kmod, ebpf]"]
    lines.append("kernels:")
    for i in range(kernels):
        target, release, files = FAMILIES[i % len(FAMILIES)]
        a, b = SERIES[(i // len(FAMILIES)) % len(SERIES)]
        n = i // (len(FAMILIES) * len(SERIES))
        values = {"a": a, "b": b, "c": n, "d": n + 1}  # patch level and ABI number: unique per series
        rel = release.format(**values)
        lines += [f"  - target: {target}", f"    kernelrelease: {rel}", f"    kernelversion: \"{1 + i % 4}\"",
                  "    architecture: x86_64", "    headers:"]
        for f in files:
            url = f"http://127.0.0.1:9/{target}/pool/{f.format(**values)}"
            lines += [f"      - url: {url}", f"        sha256: {hashlib.sha256(url.encode()).hexdigest()}"]
    return "\n".join(lines) + "\n"


def prepare_state(work: Path, kernels: int, image_tag: str, image_id: str,
                  toolchain_id: str) -> tuple[Path, Path, Path, int]:
    """The matrix, a home whose DB says every job is built, and the artifact tree; reused when unchanged."""
    driver_dir = work / "driver"
    config_path = work / "kernels.yaml"
    home_path = work / "home"
    tree = work / "site"
    stamp = work / ".complete"
    driver_digest = tree_digest(HELLO_KBUILD)
    # The key scheme is part of the identity: a state written with other keys would plan as unbuilt.
    probe = hashlib.sha256("".join(inspect.getsource(f) for f in (
        plan_mod.job_key, plan_mod._driver_part, plan_mod._kernel_part, plan_mod._combine)).encode()).hexdigest()[:16]
    identity = f"{__version__} {kernels} {toolchain_id} {driver_digest} {probe}\n"
    if stamp.exists() and stamp.read_text() == identity:
        config = config_mod.parse(config_path)
        return config_path, home_path, tree, len(expand(config))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(HELLO_KBUILD, driver_dir)
    config_path.write_text(synthetic_yaml(kernels, driver_dir))
    started = time.perf_counter()
    config = config_mod.parse(config_path)
    jobs = expand(config)
    home = Home(home_path)
    home.store.record_images({image_tag: image_id}, {image_tag: toolchain_id})  # as `repogen images build` does
    source = tree_digest(driver_dir)
    now = time.time()
    for job in jobs:
        chain = images.choose(job.kernel)
        assert chain.name == image_tag, f"{job.kernel.label} needs {chain.name}"
        key = job_key(job, source, [h.sha256 or "" for h in job.kernel.headers], toolchain_id)
        digest = hashlib.sha256(job.job_id.encode()).hexdigest()
        home.store.record_build(BuildRecord(
            build_key=key, job_id=job.job_id, status="ok", artifact_sha256=digest, size=0, image_id=image_id,
            toolchain=chain.name, vermagic=None, kernel_release=job.kernel.kernelrelease,
            kernel_config_sha256=None, inputs="", started_at=now, finished_at=now + 30, seconds=30.0,
            log_path=None, error=None))
        path = tree / driver_path(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    print(f"synthetic state: {len(jobs)} build records and artifacts written in "
          f"{time.perf_counter() - started:.1f}s (kept in {work})")
    stamp.write_text(identity)
    return config_path, home_path, tree, len(jobs)


def head_all(base_url: str, paths: list[str]) -> int:
    """One HEAD per path over one keep-alive connection; returns how many answered 200."""
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    ok = 0
    try:
        for path in paths:
            conn.request("HEAD", path)
            response = conn.getresponse()
            response.read()
            ok += response.status == 200
    finally:
        conn.close()
    return ok


# The same command with the config fast path switched off: every file through PyYAML's composer.
_SLOW_PATH = ("import sys, repogen.config_fast as fast; fast.yaml_rs = None; "
              "from repogen.cli import main; sys.exit(main())")


def cpu_seconds() -> float:
    """User + system CPU time of the finished child processes so far (timings on a shared machine:
    the wall clock counts the other processes' share of the CPUs, this does not)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(runs: list[Run], cpu: list[float], run: Callable[[], Run]) -> None:
    before = cpu_seconds()
    runs.append(run())
    cpu.append(cpu_seconds() - before)


def cold_plan(home: Path, config_path: Path, *, slow: bool) -> Run:
    """``repogen plan --json`` right after the matrix changed: no config cache."""
    shutil.rmtree(home / "cache" / "config", ignore_errors=True)
    if not slow:
        return must(repogen(home, config_path, "plan", "--json"), "repogen plan (cold)")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _SLOW_PATH, "--home", str(home), "-c", str(config_path),
                           "plan", "--json"], capture_output=True, text=True, timeout=600)
    return must(Run(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - started),
                "repogen plan (cold, slow path)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=5, help="warm runs of `repogen plan` (median reported)")
    parser.add_argument("--head-threads", type=int, default=8,
                        help="also time the HEADs with this many connections in parallel (0: skip)")
    parser.add_argument("--cold-runs", type=int, default=3,
                        help="cold runs (no config cache), each also with the fast path off (median reported)")
    parser.add_argument("--no-heads", action="store_true", help="skip the HEAD-per-artifact baseline")
    parser.add_argument("--work", type=Path, help="where the synthetic state is kept "
                        "(default: $REPOGEN_TEST_CACHE/bench-plan-<kernels>)")
    args = parser.parse_args()
    docker_ready()
    client = container.connect()
    print(f"start: {load_note()}")
    image_tag = "gcc12"  # the toolchain's name: what the state records, as `repogen images build` does
    image_id = images.resolve_ids(client).get(image_tag)
    if not image_id:
        raise SystemExit(f"{image_tag} is missing")
    work = args.work or CACHE / f"bench-plan-{args.kernels}"
    toolchain_id = images.toolchain_ids(client, {image_tag: image_id})[image_tag]
    config_path, home, tree, total = prepare_state(work, args.kernels, image_tag, image_id, toolchain_id)
    print(f"matrix: {args.kernels} kernels x {len(DRIVER_VERSIONS)} driver versions x [kmod, ebpf] = {total} jobs; "
          f"builder {image_tag} {image_id[:19]}")

    # repogen's modules as an installed package has them: compiled to bytecode once. (This machine's
    # environment sets PYTHONDONTWRITEBYTECODE, so a source checkout would compile ~60 modules on
    # every run: 0.05-0.1 s that no user of an installed repogen pays.)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "repogen")], check=True)
    print("bytecode: repogen's modules compiled once (python -m compileall), as pip installs them")

    # Cold: right after kernels.yaml changed (no config cache), fast path vs the located slow path,
    # alternating. Then the no-op case, config cache warm.
    cold_fast: list[Run] = []
    cold_slow: list[Run] = []
    cold_cpu: list[float] = []
    slow_cpu: list[float] = []
    for _ in range(args.cold_runs):
        timed(cold_fast, cold_cpu, lambda: cold_plan(home, config_path, slow=False))
        timed(cold_slow, slow_cpu, lambda: cold_plan(home, config_path, slow=True))
    cold_plan(home, config_path, slow=False)  # leaves the cache written for the warm runs
    warm_runs: list[Run] = []
    warm_cpu: list[float] = []
    for _ in range(args.runs):
        timed(warm_runs, warm_cpu, lambda: must(repogen(home, config_path, "plan", "--json"), "repogen plan"))
    for run in [*cold_fast, *cold_slow, *warm_runs]:
        report = run.json
        if report["total"] != total or report["counts"] != {"built": total}:
            print(f"INVALID: plan did not report all {total} jobs as built: {report['counts']} "
                  f"(total {report['total']})")
            return 2
    warm = [r.seconds for r in warm_runs]
    plan_s = median(warm)
    cold_s = median([r.seconds for r in cold_fast])
    slow_s = median([r.seconds for r in cold_slow])
    print(f"repogen plan --json, cold (no config cache): {fmt([r.seconds for r in cold_fast])} s; median {cold_s:.3f}s")
    print(f"baseline: the same, config fast path off:    {fmt([r.seconds for r in cold_slow])} s; median {slow_s:.3f}s")
    print(f"repogen plan --json, warm runs: {fmt(warm)} s; median {plan_s:.3f}s "
          f"(all {total} jobs reported built)")
    print(f"CPU time (user + system) medians: cold {median(cold_cpu):.3f}s, cold with the slow path "
          f"{median(slow_cpu):.3f}s, warm {median(warm_cpu):.3f}s (what the runs cost without the other "
          "processes' share of the CPUs)")
    print(f"ratio: cold / warm = {cold_s / plan_s:.2f}; cold / cold with the slow path = {cold_s / slow_s:.2f}")
    goals = Goals()
    goals.check(f"cold plan over {total} jobs < {GOAL_SECONDS:.0f} s", cold_s < GOAL_SECONDS,
                f"median {cold_s:.3f}s = {cold_s / GOAL_SECONDS:.2f} of the goal")
    goals.check(f"no-op plan over {total} jobs < {GOAL_SECONDS:.0f} s", plan_s < GOAL_SECONDS,
                f"median {plan_s:.3f}s = {plan_s / GOAL_SECONDS:.2f} of the goal")
    if args.no_heads:
        print(f"end: {load_note()}")
        return goals.exit_code

    # Baseline: one HEAD per artifact, as the grid does, against a local server in its own process.
    paths = sorted("/" + p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())
    if len(paths) != total:
        print(f"INVALID: the artifact tree holds {len(paths)} files, expected {total}")
        return 2
    proc, base_url = serve_subprocess(tree)
    try:
        head_all(base_url, paths[:200])  # warm the server's page cache and code paths
        started = time.perf_counter()
        ok = head_all(base_url, paths)
        head_s = time.perf_counter() - started
        if ok != total:
            print(f"INVALID: {total - ok} HEADs did not answer 200")
            return 2
        print(f"baseline: {total} sequential HEADs over one keep-alive connection to 127.0.0.1: {head_s:.3f}s "
              f"({head_s / total * 1e6:.0f} us each)")
        if args.head_threads > 0:
            n = args.head_threads
            chunks = [paths[i::n] for i in range(n)]
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=n) as pool:
                ok = sum(pool.map(lambda c: head_all(base_url, c), chunks))
            pool_s = time.perf_counter() - started
            print(f"baseline: {total} HEADs over {n} parallel connections: {pool_s:.3f}s (ok {ok})")
    finally:
        stop(proc)

    print(f"ratio: repogen plan / sequential HEADs = {plan_s / head_s:.4f} ({head_s / plan_s:.0f}x faster)")
    print(f"end: {load_note()}")
    goals.check("no-op plan faster than one HEAD per artifact", plan_s < head_s,
                f"{plan_s:.3f}s vs {head_s:.3f}s")
    return goals.exit_code


if __name__ == "__main__":
    sys.exit(main())
