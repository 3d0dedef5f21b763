"""A real Dask cluster on 127.0.0.1 for tests and benchmarks: ``dask scheduler`` and ``dask worker``
processes, each worker with its own REPOGEN_HOME (and whatever else its environment needs)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DASK = Path(sys.executable).parent / "dask"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Worker:
    home: Path
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        """SIGKILL the worker and its nanny (its own process group): no clean shutdown, no restart."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@dataclass
class Cluster:
    address: str
    logs: Path
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    client: Any = None  # a distributed.Client, to watch the scheduler

    def add_worker(self, home: Path) -> Worker:
        name = f"worker{len(self.workers)}"
        env = {**os.environ, **self.env, "REPOGEN_HOME": str(home)}
        proc = _start([str(DASK), "worker", self.address, "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1",
                       "--no-dashboard", "--name", name], self.logs / f"{name}.log", env)
        self.processes.append(proc)
        worker = Worker(home, proc)
        self.workers.append(worker)
        return worker

    def worker_at(self, address: str) -> Worker:
        """The worker serving at ``address`` (a scheduler's name for it)."""
        group = self.client.run(os.getpgrp, workers=[address])[address]
        return next(w for w in self.workers if w.process.pid == group)


def _start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


@contextmanager
def dask_cluster(logs: Path, homes: list[Path], env: dict[str, str]) -> Iterator[Cluster]:
    """A scheduler and one worker per home; every process is stopped on exit (by its own group id)."""
    from distributed import Client

    port = free_port()
    cluster = Cluster(f"tcp://127.0.0.1:{port}", logs, env)
    cluster.processes.append(_start([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                     "--no-dashboard"], logs / "scheduler.log"))
    try:
        for home in homes:
            cluster.add_worker(home)
        cluster.client = Client(cluster.address, timeout="60s", set_as_default=False)
        cluster.client.wait_for_workers(len(homes), timeout=120)
        yield cluster
    finally:
        if cluster.client is not None:
            cluster.client.close()
        for proc in reversed(cluster.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in cluster.processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
