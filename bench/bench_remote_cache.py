"""Benchmark: ``repogen plan --cache s3://...`` against a remote cache holding 40,000 built jobs.

    python3 bench/bench_remote_cache.py [--kernels 10000] [--runs 5] [--baseline-sample N]

Goal: the whole ``repogen plan --cache ... --json`` command (cold interpreter start included, config
cache warm) in under 1 s and a handful of requests (at most 10), counted at the server. Baseline,
measured in the same run: one HEAD per job on its action-cache entry (how the grid asks S3 today
whether an artifact exists), sequential over boto3's keep-alive connection.

The S3 server is moto's, on 127.0.0.1 in its own process, seeded in-process with one action-cache
entry per job (the very keys ``repogen plan`` computes) and an index in the layout ``build`` writes:
one compacted generation per driver version plus a few small log objects of recent pushes.
The planning home is fresh (no build records): everything it reports as cached comes from S3.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import CACHE, HELLO_KBUILD, Goals, fmt, load_note, median
from bench_plan import DRIVER_VERSIONS, synthetic_yaml

from repogen import config as config_mod
from repogen import images, remote_cache, s3
from repogen.home import Home
from repogen.matrix import expand
from repogen.plan import plan

GOAL_SECONDS = 1.0
GOAL_REQUESTS = 10
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


def requests_since(log: Path, mark: int) -> tuple[int, list[str]]:
    lines = log.read_text().splitlines()
    return len(lines), lines[mark:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-sample", type=int, default=0,
                        help="HEAD only this many entries and scale up (0: all of them)")
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    print(f"start: {load_note()}")
    work = args.work or CACHE / f"bench-remote-cache-{args.kernels}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "driver").parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(HELLO_KBUILD, work / "driver")
    config_path = work / "kernels.yaml"
    config_path.write_text(synthetic_yaml(args.kernels, work / "driver"))
    config = config_mod.parse(config_path)
    home = Home(work / "home")
    ids = {images.choose(k).name: "sha256:" + "cd" * 32 for k in config.kernels}
    home.store.record_images(ids, ids)  # image ids and toolchain ids alike
    planned = plan(home, expand(config), home.store.toolchain_ids())
    total = len(planned)
    cache = remote_cache.RemoteCache(s3.parse_url(f"s3://{BUCKET}/{PREFIX}"))

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
    request_log.touch()
    proc = subprocess.Popen([sys.executable, __file__, "serve", str(seed), str(request_log)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            print(f"INVALID: the S3 server did not start: {url!r}")
            return 2
        env = {**os.environ, **ENV, "AWS_ENDPOINT_URL": url}
        os.environ.update(env)
        # The index, as builds leave it: a compacted generation per driver version, then recent pushes.
        for i, p in enumerate(planned):
            cache.note(p.job, p.key or "")
            if i % 2000 == 1999:
                cache.flush()
        cache.flush()
        for name, version in sorted({(p.job.driver.name, p.job.driver.version) for p in planned}):
            cache._compact(cache._read(name, version))
        for p in planned[:3]:
            cache.note(p.job, p.key or "")
            cache.flush()
        print(f"remote cache: {total} action-cache entries, index of {len(DRIVER_VERSIONS)} driver versions "
              f"(1 generation + 3 recent log objects each at most)")

        def plan_run() -> tuple[float, int, list[str]]:
            mark = len(request_log.read_text().splitlines())
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "repogen", "--home", str(work / "home"), "-c",
                                     str(config_path), "plan", "--cache", f"s3://{BUCKET}/{PREFIX}", "--json"],
                                    capture_output=True, text=True, env=env, timeout=600)
            seconds = time.perf_counter() - started
            if result.returncode != 0:
                raise SystemExit(f"repogen plan --cache failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
            counts = json.loads(result.stdout)["counts"]
            if counts != {"cached": total}:
                raise SystemExit(f"INVALID: plan reported {counts}, expected all {total} cached")
            time.sleep(0.2)  # let the server's log line for the last request land
            _, lines = requests_since(request_log, mark)
            return seconds, len(lines), lines

        shutil.rmtree(work / "home" / "cache" / "config", ignore_errors=True)
        cold_s, cold_n, _ = plan_run()
        warm = [plan_run() for _ in range(args.runs)]
        # Reference in the same run: the same plan without the cache (every job missing), so the
        # cost of asking the cache shows apart from the plan itself on a loaded machine.
        local = []
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "repogen", "--home", str(work / "home"), "-c", str(config_path),
                            "plan"], capture_output=True, env={**env, "REPOGEN_CACHE": ""}, timeout=600,
                           check=True)
            local.append(time.perf_counter() - started)
        local_s = median(local)
        plan_s = median([w[0] for w in warm])
        plan_n = max(w[1] for w in warm)
        print(f"repogen plan --cache --json, first run (YAML parse): {cold_s:.3f}s, {cold_n} requests")
        print(f"repogen plan --cache --json, warm runs: {fmt([w[0] for w in warm])} s; median {plan_s:.3f}s; "
              f"requests per run: {sorted({w[1] for w in warm})}")
        print(f"reference: repogen plan (table) without the cache (all {total} missing): {fmt(local)} s; "
              f"median {local_s:.3f}s -> the cache adds {plan_s - local_s:+.3f}s")
        for line in warm[-1][2]:
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
    goals.check(f"plan from the cache over {total} jobs < {GOAL_SECONDS:.0f} s", plan_s < GOAL_SECONDS,
                f"median {plan_s:.3f}s = {plan_s / GOAL_SECONDS:.2f} of the goal")
    goals.check(f"plan from the cache in <= {GOAL_REQUESTS} requests", plan_n <= GOAL_REQUESTS,
                f"{plan_n} requests")
    return goals.exit_code


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(Path(sys.argv[2]), Path(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
