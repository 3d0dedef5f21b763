"""Builds on a real Dask cluster: a ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1,
each with its own REPOGEN_HOME, sharing a moto S3 build cache; real builds of hello-kbuild against
real Debian headers, and a worker killed (SIGKILL) in the middle of its job.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import HELLO_KBUILD, Repogen, driver_yaml, write_config
from daskcluster import Cluster, dask_cluster
from s3server import CountingMotoServer, moto_server

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


@pytest.fixture
def s3() -> Iterator[CountingMotoServer]:
    with moto_server() as server:
        server.client().create_bucket(Bucket="dask-cache")
        yield server


@pytest.fixture
def cluster(tmp_path: Path, s3: CountingMotoServer) -> Iterator[Cluster]:
    with dask_cluster(tmp_path / "logs", [tmp_path / "worker0", tmp_path / "worker1"], s3.env) as running:
        yield running


def _ok_keys(home: Path) -> set[str]:
    db = home / "state.db"
    if not db.exists():
        return set()
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT build_key FROM builds WHERE status='ok'")}


def test_dask_build_survives_a_worker_killed_mid_job(
        tmp_path: Path, mirror: Any, builder_image: str, s3: CountingMotoServer, cluster: Cluster) -> None:
    kernels = mirror.kernels[:2]
    config = write_config(tmp_path, [driver_yaml("hello_repogen", "0.3.0", HELLO_KBUILD, "kbuild")], kernels)
    cache = "s3://dask-cache/grid"
    client_home = Repogen(tmp_path / "client", config)
    plan = client_home("plan", "--json", "--all")
    assert plan.code == 0, plan.err
    order = plan.json["jobs"]  # the order the jobs are submitted in
    assert len(order) == 4

    build = subprocess.Popen(
        [sys.executable, "-m", "repogen", "--home", str(tmp_path / "client"), "-c", str(config), "build",
         "--dask", cluster.address, "--cache", cache, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **s3.env})

    # Wait until a worker is in the middle of a job (a couple of seconds into it), then SIGKILL it.
    victim_task = victim_address = None
    deadline = time.monotonic() + 300
    seen: dict[str, float] = {}
    while time.monotonic() < deadline and build.poll() is None:
        for address, tasks in cluster.client.processing().items():
            for task in tasks:
                seen.setdefault(task, time.monotonic())
                if time.monotonic() - seen[task] > 2.0:
                    victim_task, victim_address = task, address
        if victim_task:
            break
        time.sleep(0.2)
    if not (victim_task and victim_address):
        out, err = build.communicate(timeout=600)
        raise AssertionError(f"no job ran long enough on a worker to be killed mid-job: {err.decode()[-3000:]}")
    victim = cluster.worker_at(victim_address)
    survivor = next(w for w in cluster.workers if w is not victim)
    victim.kill()

    out, err = build.communicate(timeout=600)
    assert build.returncode == 0, err.decode()
    assert b"Traceback" not in err
    report = json.loads(out)
    assert report["failed"] == 0
    assert report["built"] + report["cached"] == 4
    by_job = {(r["kind"], r["kernelrelease"]): r for r in report["results"]}

    # The killed job was not finished on the victim; the survivor built it, and it is in the cache.
    killed = order[int(str(victim_task).rsplit("-", 1)[1])]
    killed_result = by_job[(killed["kind"], killed["kernelrelease"])]
    assert killed_result["status"] == "built"
    assert killed_result["build_key"] not in _ok_keys(victim.home)
    assert killed_result["build_key"] in _ok_keys(survivor.home)
    # Shared inputs once per worker: the survivor unpacked each kernel's headers at most once.
    assert report["counters"]["kernels_unpacked"] <= len(kernels)

    # The client recorded every result: nothing left to build; a fresh home sees all four in the cache.
    assert "nothing to build" in client_home("build").out
    fresh = Repogen(tmp_path / "fresh", config)("plan", "--cache", cache, "--json", env=s3.env)
    assert fresh.code == 0, fresh.err
    assert fresh.json["counts"] == {"cached": 4}
