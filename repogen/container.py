"""Run one hermetic build container through the Docker SDK, with limits, a timeout and a full log."""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import requests.exceptions
from docker.types import Mount

from repogen import locks
from repogen.errors import RepogenError

LABEL = "org.repogen.build"
OWNER_LABEL = "org.repogen.owner"  # <pid>-<start time> of the repogen process that made it
HOST_LABEL = "org.repogen.host"
HOME_LABEL = "org.repogen.home"
# The engine's own limit outlives the client's: coreutils timeout kills the build (and its process
# group) even when repogen is gone; the client waits this much longer before it kills the container.
CLIENT_GRACE = 30
TIMEOUT_EXITS = (124, 137)  # timeout(1)'s "timed out", and 128+SIGKILL

DOCKER_HINT = ("start the engine: `systemctl start docker`, or as root `dockerd --bridge=none "
               "--iptables=false &` (then `docker info` should answer)")


def connect() -> docker.DockerClient:
    """A client for the local engine, or a clear error saying how to start it."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise RepogenError(f"Docker is not running or not reachable at {host}: {exc}",
                           hint=DOCKER_HINT) from None


def owner_labels(home: Path) -> dict[str, str]:
    """Labels naming the run that owns a container, so a later run can reap it once that run is dead."""
    return {LABEL: "1", OWNER_LABEL: locks.token(), HOST_LABEL: locks.HOST, HOME_LABEL: str(home)}


def reap(client: docker.DockerClient, home: Path) -> int:
    """Remove this home's build containers whose run is dead (a kill -9); returns how many."""
    reaped = 0
    for found in client.containers.list(all=True, filters={"label": [f"{HOME_LABEL}={home}"]}):
        labels = found.labels or {}
        if labels.get(HOST_LABEL) != locks.HOST or locks.alive(labels.get(OWNER_LABEL, "")):
            continue
        with contextlib.suppress(docker.errors.NotFound):
            found.remove(force=True)
            reaped += 1
    return reaped


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    timed_out: bool
    oom_killed: bool
    seconds: float
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.oom_killed

    def describe(self, timeout: int, memory: str) -> str:
        if self.timed_out:
            return f"timed out after {timeout}s (build.timeout)"
        if self.oom_killed or self.exit_code == 137:
            return f"exceeded its memory limit of {memory} (build.memory)"
        return f"exited with status {self.exit_code}: " + first_error(self.output)


#: What a compiler, linker, cmake or the kernel's build says when it fails; make's own
#: ``make[2]: *** [...] Error 1`` lines only repeat that something below failed.
_ERROR_LINE = re.compile(
    r"(?:^|[\s:])(?:fatal )?error:|undefined reference to|^CMake Error|: No such file or directory$|"
    r"^ERROR: modpost:|^ld(?:\.\w+)?: |^collect2: ", re.IGNORECASE)
_MAKE_NOISE = re.compile(r"^make(?:\[\d+\])?: \*\*\*|^make(?:\[\d+\])?: Leaving|Error \d+$")


def first_error(output: str, context: int = 1) -> str:
    """The first compiler/linker/cmake error line of a build's output (with the line after it, which
    often names the missing symbol or header), else its last lines; one line, ``|``-joined."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if _ERROR_LINE.search(line.strip()) and not _MAKE_NOISE.search(line.strip()):
            excerpt = [line.strip()]
            for follower in lines[index + 1:index + 1 + context]:
                if _ERROR_LINE.search(follower.strip()) or _MAKE_NOISE.search(follower.strip()):
                    break
                excerpt.append(follower.strip())
            return " | ".join(excerpt)
    return " | ".join(line.strip() for line in lines[-3:])


def run(
    client: docker.DockerClient,
    image: str,
    command: list[str],
    *,
    readonly: list[tuple[Path, str]],
    writable: list[tuple[Path, str]],
    environment: dict[str, str],
    workdir: str,
    timeout: int,
    memory: str,
    pids: int,
    log_path: Path,
    labels: dict[str, str] | None = None,
) -> RunResult:
    """Run ``command`` with no network, no capabilities, a non-root user and a read-only root."""
    mounts = [Mount(target, str(source), type="bind", read_only=True) for source, target in readonly]
    mounts += [Mount(target, str(source), type="bind", read_only=False) for source, target in writable]
    user = f"{os.getuid()}:{os.getgid()}" if os.getuid() != 0 else "1000:1000"
    started = time.monotonic()
    container = client.containers.create(
        image,
        ["timeout", "--signal=KILL", f"{timeout}s", *command],
        mounts=mounts,
        environment=environment,
        working_dir=workdir,
        user=user,
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        mem_limit=memory,
        memswap_limit=memory,
        pids_limit=pids,
        read_only=True,
        tmpfs={"/tmp": "rw,exec,size=1g"},
        labels=labels or {LABEL: "1"},
    )
    timed_out = False
    try:
        container.start()
        try:
            status = container.wait(timeout=timeout + CLIENT_GRACE)
            exit_code = int(status.get("StatusCode", -1))
            timed_out = exit_code in TIMEOUT_EXITS and time.monotonic() - started >= timeout
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            timed_out = True
            exit_code = -1
            with contextlib.suppress(docker.errors.APIError):
                container.kill()
            container.wait(timeout=60)
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
        state = client.api.inspect_container(container.id)["State"]
        oom = bool(state.get("OOMKilled"))
        timed_out = timed_out and not oom
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
    seconds = time.monotonic() - started
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(command)}\n# image {image}, user {user}, network none, memory {memory}, "
                  f"pids {pids}, timeout {timeout}s\n")
        for source, target in readonly:
            log.write(f"# mount {source} -> {target} (ro)\n")
        for source, target in writable:
            log.write(f"# mount {source} -> {target} (rw)\n")
        log.write(output)
        log.write(f"\n# exit {exit_code}{' (timed out)' if timed_out else ''}{' (OOM killed)' if oom else ''}"
                  f" after {seconds:.1f}s\n")
    return RunResult(exit_code, timed_out, oom, seconds, output)
