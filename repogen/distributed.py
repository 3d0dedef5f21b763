"""Builds on a Dask cluster: ``repogen build --dask tcp://SCHEDULER:8786``.

Each Dask worker is a build host with its own Docker engine and its own state directory
(``$REPOGEN_HOME`` in the worker's environment). A worker keeps one :class:`Builder` per run in its
process, so shared inputs (header downloads, unpacked kernels, prepared driver sources) are fetched
and prepared once per worker, not once per job; the matrix is sent to each worker once (scattered),
and each task carries one planned job. Workers push what they build to the shared remote cache; the
client records each result in its own state, writes the cache's index log, and shows the same
progress and summary as a local build. A worker lost in the middle of a job is Dask's business: the
scheduler runs the job again on another worker.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from repogen.build import Builder, Counters, Result, select_work
from repogen.errors import RepogenError
from repogen.matrix import Selector
from repogen.model import Config
from repogen.plan import Planned
from repogen.remote_cache import RemoteCache
from repogen.store import BuildRecord

#: How many builders (runs) a worker process keeps; older ones are dropped.
_KEEP_RUNS = 4
_builders: dict[tuple[str, str], Builder] = {}
_baselines: dict[tuple[str, str], tuple[int, int, int]] = {}
_homes: dict[str, Any] = {}
_lock = threading.Lock()


def _home_path() -> Path:
    return Path(os.environ.get("REPOGEN_HOME", ".repogen")).absolute()


def _worker_builder(run_id: str, config: Config, remote: RemoteCache) -> Builder:
    """This worker's builder for ``run_id``: made once, then shared by every task of the run."""
    from repogen import container, images
    from repogen.home import Home

    path = _home_path()
    key = (str(path), run_id)
    with _lock:
        builder = _builders.get(key)
        if builder is not None:
            return builder
        home = _homes.get(str(path))
        if home is None:
            home = _homes[str(path)] = Home(path)
        client = container.connect()
        ids, toolchain_ids = images.record(client, home.store)
        builder = Builder(home, config, client, image_ids=ids, toolchain_ids=toolchain_ids, remote=remote)
        builder.log_pushes = False  # the client writes the index log: it sees every result
        builder.lease_owner = f"dask-run-{run_id}"  # a job retried after a lost worker takes its lease over
        _builders[key] = builder
        _baselines[key] = (home.downloads.downloads, home.headers.unpacked, home.sources.fetches)
        while len(_builders) > _KEEP_RUNS:
            oldest = next(iter(_builders))
            _builders.pop(oldest)
            _baselines.pop(oldest, None)
        return builder


class RunPlugin(WorkerPlugin):
    """What every task of a run shares (the matrix, the cache), sent once to each worker.

    A Dask worker plugin, so a worker that joins (or restarts) mid-run gets it too: unlike scattered
    data, it cannot be lost with a worker.
    """

    def __init__(self, run_id: str, config: Config, remote: RemoteCache) -> None:
        self.name = f"repogen-run-{run_id}"
        self.run_id = run_id
        self.config = config
        self.remote = remote

    def teardown(self, worker: Any) -> None:
        with _lock:
            for key in [k for k in _builders if k[1] == self.run_id]:
                _builders.pop(key)
                _baselines.pop(key, None)


def build_on_worker(run_id: str, planned: Planned, force: bool) -> tuple[Result, BuildRecord | None, list[str]]:
    """One job on this worker: the result, its build record (for the client's state), cache warnings."""
    from distributed import get_worker

    plugin = get_worker().plugins[f"repogen-run-{run_id}"]
    assert isinstance(plugin, RunPlugin)
    builder = _worker_builder(run_id, plugin.config, plugin.remote)
    result = builder.run_job(planned, force)
    record = builder.home.store.builds([result.key]).get(result.key) if result.key else None
    cache = builder.remote
    if (cache is not None and result.status == "up-to-date" and record is not None and record.artifact_sha256
            and cache.lookup(planned.job, record.build_key) is None):
        # Built on this worker before, maybe without the cache: make sure the others can have it.
        cache.push(planned.job, record, builder.home.store.object_path(record.artifact_sha256), log_it=False)
    return result, record, cache.drain_warnings() if cache is not None else []


def worker_counters(run_id: str) -> dict[str, int]:
    """What this worker's builder for ``run_id`` did (run on every worker at the end)."""
    key = (str(_home_path()), run_id)
    with _lock:
        builder = _builders.get(key)
        baseline = _baselines.get(key)
    if builder is None or baseline is None:
        return {}
    home = builder.home
    return {"header_downloads": home.downloads.downloads - baseline[0],
            "kernels_unpacked": home.headers.unpacked - baseline[1],
            "source_fetches": home.sources.fetches - baseline[2],
            "prepares": builder.counters.prepares, "containers": builder.counters.containers}


def run_on_dask(address: str, builder: Builder, planned: list[Planned], *, rebuild: list[Selector],
                on_done: Callable[[Result], None] | None = None,
                connect_timeout: float = 20.0) -> list[Result]:
    """Run the work of ``planned`` on the cluster at ``address``; same results as :meth:`Builder.run`."""
    from distributed import Client, as_completed

    remote = builder.remote
    if remote is None:
        raise RepogenError("--dask needs a shared build cache (--cache s3://BUCKET/PREFIX)")
    todo, forced = select_work(planned, rebuild)
    store = builder.home.store
    good = store.good_keys()
    for job_id in forced:
        if good_key := good.get(job_id):
            store.forget_build(good_key)
    running = {p.job.job_id for p in todo}
    results = [Result(p.job, "up-to-date", key=p.key) for p in planned if p.job.job_id not in running]
    try:
        client = Client(address, timeout=f"{connect_timeout}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise RepogenError(f"cannot reach the Dask scheduler at {address}: {exc}",
                           hint="start one with `dask scheduler` and workers with `dask worker ADDRESS`") from None
    run_id = uuid.uuid4().hex
    try:
        plugin = RunPlugin(run_id, builder.config, remote)
        client.register_plugin(plugin, name=plugin.name)
        futures = {client.submit(build_on_worker, run_id, p, p.job.job_id in forced,
                                 key=f"repogen-build-{run_id[:12]}-{i}", pure=False, retries=1): p
                   for i, p in enumerate(todo)}
        for future in as_completed(list(futures), loop=client.loop):
            p = futures[future]
            try:
                result, record, warnings = future.result()
            except Exception as exc:  # a worker lost too many times (KilledWorker), a crash in the task
                result, record, warnings = Result(p.job, "failed", key=p.key,
                                                  error=f"on the Dask cluster: {type(exc).__name__}: {exc}"), None, []
            for message in warnings:
                remote.warn(message)
            if record is not None:
                store.record_build(record)
            if result.status != "failed" and result.key:
                remote.note(p.job, result.key)
            results.append(result)
            if on_done:
                on_done(result)
        totals = Counters()
        for counts in client.run(worker_counters, run_id).values():
            for name, value in counts.items():
                setattr(totals, name, getattr(totals, name) + value)
        builder.counters = totals
        client.unregister_worker_plugin(plugin.name)
    except RepogenError:
        raise
    except Exception as exc:  # the cluster went away (scheduler lost, connection closed...)
        raise RepogenError(f"the Dask cluster at {address} failed: {type(exc).__name__}: {exc}",
                           hint="the jobs that finished are recorded and in the cache; run the build again") from None
    finally:
        client.close()
        remote.close()
    order = {p.job.job_id: i for i, p in enumerate(planned)}
    results.sort(key=lambda r: order[r.job.job_id])
    return results
