"""Benchmark: ``repogen plan --cache s3://...`` against a remote cache holding 40,000 built jobs.

    python3 bench/bench_remote_cache.py [--kernels 10000] [--runs 5] [--baseline-sample N]

Goals: the whole ``repogen plan --cache ... --json`` command (cold interpreter start included, config
cache warm, the home's copies of the index current) in under 1 s and a handful of requests (at most
10, counted at the server); and asking the cache adds under 0.25 s to the same plan of a home that
holds the 40,000 builds itself, measured alternately in the same run. Baseline: one HEAD per job on
its action-cache entry (how the grid asks S3 today whether an artifact exists), sequential over
boto3's keep-alive connection.

The S3 server is moto's, on 127.0.0.1 in its own process, seeded in-process with one action-cache
entry per job (the very keys ``repogen plan`` computes) and an index in the layout ``build`` writes:
one compacted generation per driver version plus a few small log objects of recent pushes.
The planning home starts fresh (no build records, no copy of the index): everything it reports as
cached comes from S3. Also reported: its first contact (downloads the index), a plan after a push
from elsewhere (one new log object) and after a compaction elsewhere (a new generation).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import CACHE, Goals, Run, fmt, load_note, median, must, repogen
from bench_plan import DRIVER_VERSIONS, prepare_state

from repogen import config as config_mod
from repogen import remote_cache, s3
from repogen.home import Home
from repogen.matrix import expand
from repogen.plan import plan

GOAL_SECONDS = 1.0
GOAL_REQUESTS = 10
GOAL_ADDED_SECONDS = 0.25
IMAGE_TAG = "gcc12"
IMAGE_ID = "sha256:" + "cd" * 32  # recorded, never run: plan needs no Docker
TOOLCHAIN_ID = "sha256:" + "ef" * 32
BUCKET = "grid-cache"
PREFIX = "bench"
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def serve(seed: Path, request_log: Path) -> None:
    """Server process: moto with the seed loaded straight into its backend, then serve (bounded)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from s3server import CountingMotoServer

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    backend.create_bucket(BUCKET, "us-east-1")
    with seed.open() as fh:
        for line in fh:
            key, body = json.loads(line)
            backend.put_object(BUCKET, key, body.encode())
    server = CountingMotoServer(log_file=request_log)
    server.start()
    print(server.url, flush=True)
    time.sleep(3600)  # bounded: the parent stops it long before


def timed(home: Path, config: Path, *args: str) -> tuple[Run, float]:
    """``repogen`` as a subprocess: the run (wall seconds) and the CPU seconds it used (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = repogen(home, config, *args)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return run, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=5, help="warm runs of each plan (medians reported)")
    parser.add_argument("--baseline-sample", type=int, default=0,
                        help="HEAD only this many entries and scale up (0: all of them)")
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    print(f"start: {load_note()}")
    work = args.work or CACHE / f"bench-remote-cache-{args.kernels}"
    # The reference: a home that built all 40,000 jobs itself (kept between runs, as bench_plan's).
    config_path, local_home, _, total = prepare_state(work / "local", args.kernels, IMAGE_TAG, IMAGE_ID, TOOLCHAIN_ID)
    home_path = work / "home"
    shutil.rmtree(home_path, ignore_errors=True)
    home = Home(home_path)
    home.store.record_images({IMAGE_TAG: IMAGE_ID}, {IMAGE_TAG: TOOLCHAIN_ID})
    planned = plan(home, expand(config_mod.parse(config_path)), home.store.toolchain_ids())
    if len(planned) != total or not all(p.key for p in planned):
        print(f"INVALID: {len(planned)} jobs planned, expected {total}, all with a build key")
        return 2
    cache = remote_cache.RemoteCache(s3.parse_url(f"s3://{BUCKET}/{PREFIX}"))
    cache_url = f"s3://{BUCKET}/{PREFIX}"

    # The action cache, seeded straight into the server's backend (40,000 PUTs over HTTP would take minutes).
    seed = work / "seed.jsonl"
    with seed.open("w") as fh:
        for p in planned:
            assert p.key
            digest = hashlib.sha256(p.job.job_id.encode()).hexdigest()
            entry = {"format": remote_cache.FORMAT, "build_key": p.key, "job_id": p.job.job_id,
                     "artifact": {"sha256": digest, "size": 1}, "record": {"toolchain": p.toolchain}}
            fh.write(json.dumps([cache._ac_key(p.job.driver.name, p.job.driver.version, p.key),
                                 json.dumps(entry)]) + "\n")
    request_log = work / "requests.log"
    request_log.write_text("")
    proc = subprocess.Popen([sys.executable, __file__, "serve", str(seed), str(request_log)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            print(f"INVALID: the S3 server did not start: {url!r}")
            return 2
        os.environ.update({**ENV, "AWS_ENDPOINT_URL": url})
        os.environ.pop("REPOGEN_CACHE", None)
        # As installed: modules load from cached bytecode (pip writes it), not compiled on every start.
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        # The index, as builds leave it: a compacted generation per driver version, then recent pushes.
        for i, p in enumerate(planned):
            cache.note(p.job, p.key or "")
            if i % 2000 == 1999:
                cache.flush()
        cache.flush()
        drivers = sorted({(p.job.driver.name, p.job.driver.version) for p in planned})
        for name, version in drivers:
            cache._compact(cache._read(name, version))
        for p in planned[:3]:
            cache.note(p.job, p.key or "")
            cache.flush()
        print(f"remote cache: {total} action-cache entries, index of {len(DRIVER_VERSIONS)} driver versions "
              f"(1 generation + 3 recent log objects each at most)")

        def cached_plan() -> tuple[Run, float, list[str]]:
            mark = len(request_log.read_text().splitlines())
            run, cpu = timed(home_path, config_path, "plan", "--cache", cache_url, "--json")
            must(run, "plan --cache")
            if run.json["counts"] != {"cached": total}:
                raise SystemExit(f"INVALID: plan --cache reported {run.json['counts']}, expected all {total} cached")
            time.sleep(0.2)  # let the server's log line for the last request land
            return run, cpu, request_log.read_text().splitlines()[mark:]

        def local_plan() -> tuple[Run, float]:
            run, cpu = timed(local_home, config_path, "plan", "--json")
            must(run, "plan")
            if run.json["counts"] != {"built": total}:
                raise SystemExit(f"INVALID: plan reported {run.json['counts']}, expected all {total} built")
            return run, cpu

        # Each home's config cache (and the bytecode) written first, so every timed run is a warm plan.
        must(repogen(home_path, config_path, "plan", "--json"), "plan")
        local_plan()
        first, _, first_requests = cached_plan()
        warm: list[tuple[Run, float, list[str]]] = []
        local: list[tuple[Run, float]] = []
        for _ in range(args.runs):  # alternating pairs: both plans of a pair see about the same load
            warm.append(cached_plan())
            local.append(local_plan())
        # Changes made elsewhere: a push (one new log object), then a compaction (a new generation).
        cache.note(planned[-1].job, planned[-1].key or "")
        cache.flush()
        pushed, _, pushed_requests = cached_plan()
        name, version = drivers[0]
        cache._compact(cache._read(name, version))
        compacted, _, compacted_requests = cached_plan()

        plan_s = median([w[0].seconds for w in warm])
        local_s = median([r[0].seconds for r in local])
        plan_n = max(len(w[2]) for w in warm)
        # The cost of asking the cache: the median of the pairs' differences (robust to load swings).
        added_s = median([w[0].seconds - r[0].seconds for w, r in zip(warm, local, strict=True)])
        added_cpu = median([w[1] - r[1] for w, r in zip(warm, local, strict=True)])
        print(f"first contact (fresh home: the index downloaded, copies kept): {first.seconds:.3f}s, "
              f"{len(first_requests)} requests")
        print(f"repogen plan --cache --json, warm runs: {fmt([w[0].seconds for w in warm])} s; "
              f"median {plan_s:.3f}s (CPU {median([w[1] for w in warm]):.3f}s); "
              f"requests per run: {sorted({len(w[2]) for w in warm})}")
        print(f"reference: repogen plan --json of a home holding the {total} builds, no cache, alternating: "
              f"{fmt([r[0].seconds for r in local])} s; median {local_s:.3f}s "
              f"(CPU {median([r[1] for r in local]):.3f}s)")
        print(f"asking the cache adds {added_s:+.3f}s wall, {added_cpu:+.3f}s CPU (medians of the "
              f"{len(warm)} pairs' differences)")
        print(f"after a push elsewhere (one new log object): {pushed.seconds:.3f}s, {len(pushed_requests)} requests")
        print(f"after a compaction elsewhere (a new generation of one driver version): {compacted.seconds:.3f}s, "
              f"{len(compacted_requests)} requests")
        print("requests of a warm run:")
        for line in warm[-1][2]:
            print(f"    {line[:150]}")
        print("requests of the first contact:")
        for line in first_requests:
            print(f"    {line[:150]}")

        # Baseline: one HEAD per job on its action-cache entry, sequential over one keep-alive connection.
        client = s3.client(url)
        keys = [cache._ac_key(p.job.driver.name, p.job.driver.version, p.key or "") for p in planned]
        sample = keys if not args.baseline_sample else keys[:: max(1, len(keys) // args.baseline_sample)]
        for key in sample[:100]:
            client.head_object(Bucket=BUCKET, Key=key)
        started = time.perf_counter()
        for key in sample:
            client.head_object(Bucket=BUCKET, Key=key)
        head_s = (time.perf_counter() - started) * len(keys) / len(sample)
        what = "all" if len(sample) == len(keys) else f"{len(sample)} of them, scaled up"
        print(f"baseline: {total} HEADs (one per job; {what}) over one keep-alive connection: {head_s:.2f}s, "
              f"{total} requests")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    print(f"ratio: plan / HEAD per job = {plan_s / head_s:.4f} in time ({head_s / plan_s:.0f}x faster), "
          f"{plan_n / total:.6f} in requests ({plan_n} vs {total})")
    print(f"end: {load_note()}")
    goals = Goals()
    goals.check(f"plan from the cache over {total} jobs < {GOAL_SECONDS:.0f} s (whole command)",
                plan_s < GOAL_SECONDS, f"median {plan_s:.3f}s = {plan_s / GOAL_SECONDS:.2f} of the goal")
    most = max(plan_n, len(first_requests), len(pushed_requests), len(compacted_requests))
    goals.check(f"plan from the cache in <= {GOAL_REQUESTS} requests (every run, first contact included)",
                most <= GOAL_REQUESTS, f"{plan_n} per warm run, {most} at most")
    goals.check(f"asking the cache adds < {GOAL_ADDED_SECONDS} s to plan", added_s < GOAL_ADDED_SECONDS,
                f"{added_s:+.3f}s wall, {added_cpu:+.3f}s CPU "
                f"(median {plan_s:.3f}s vs {local_s:.3f}s without the cache)")
    return goals.exit_code


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(Path(sys.argv[2]), Path(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
