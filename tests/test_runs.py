"""Runs that go wrong around the builds: a mirror that speaks garbage, two builds at once on one home,
and kill -9 of `repogen build` (mid-fetch, mid-build, mid-rebuild) and of `repogen publish` (at each
step of the swap). Each time the next run finds a true state, reaps and sweeps what the dead run
left, and the live tree stays complete (checked with sha256sum and the real apt-get).

Real Docker, the real builder image, real Debian headers over HTTP on 127.0.0.1, real SIGKILLs.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import HELLO_KBUILD, Repogen, driver_yaml, write_config
from test_build_failures import NAME, broken_driver, flavour_index, good_kernel, other_kernel, plan_states
from test_repos_apt import Apt

from repogen import locks
from tests.pkgfactory import make_deb

pytestmark = [pytest.mark.timeout(600), pytest.mark.docker]

HOME_LABEL = "org.repogen.home"


_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_stray_processes() -> Iterator[None]:
    """A test that fails half-way must not leave a `repogen` running."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)


def start(repogen: Repogen, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "repogen", "--home", str(repogen.home), "-c", str(repogen.config), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    _started.append(proc)
    return proc


def wait_for(condition: Any, what: str, seconds: float = 120, every: float = 0.05,
             proc: subprocess.Popen[str] | None = None) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # bounded in time
        if found := condition():
            return found
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(every)
    output = ""
    if proc is not None:
        proc.kill()
        output = "".join(proc.communicate(timeout=60))
    raise AssertionError(f"timed out waiting for {what}: {output}")


def home_containers(client: Any, home: Path, *, running: bool = False) -> list[str]:
    """Ids of the build containers of this home (one listing call: none vanishes half-way)."""
    found = client.api.containers(all=True, filters={"label": f"{HOME_LABEL}={home.absolute()}"})
    return [c["Id"] for c in found if not running or c["State"] == "running"]


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def leftovers(directory: Path) -> list[str]:
    """Entries some run owns (scratch names), under ``directory``."""
    return [str(p) for p in directory.rglob("*") if locks.owner_of(p.name)] if directory.exists() else []


# -- a mirror that speaks garbage ---------------------------------------------------------------------

@pytest.fixture
def garbage_server() -> Iterator[str]:
    """A TCP server on 127.0.0.1 answering every request with a line that is not an HTTP status."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():  # bounded by the fixture's lifetime
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    conn.sendall(b"SPEAKING GARBAGE\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=10)
    listener.close()


def test_any_exception_in_a_job_fails_that_job_only(tmp_path: Path, home: Path, mirror: Any,
                                                     garbage_server: str) -> None:
    bad = other_kernel(mirror)
    url = f"{garbage_server}/linux-headers.deb"
    bad["headers"][flavour_index(bad)] = url
    config = write_config(tmp_path, [driver_yaml(NAME, "0.1.0", HELLO_KBUILD, "kbuild", "[kmod]")],
                          [good_kernel(mirror), bad])
    result = Repogen(home, config)("build", "-j", "2", "--json", timeout=600)
    assert result.code == 1, result.out + result.err
    assert "Traceback" not in result.err, result.err
    by_release = {r["kernelrelease"]: r for r in result.json["results"]}
    assert by_release[mirror.kernels[0]["kernelrelease"]]["status"] == "built"
    failed = by_release[bad["kernelrelease"]]
    assert failed["status"] == "failed", failed
    assert "BadStatusLine" in failed["error"] or url in failed["error"], failed
    states = plan_states(Repogen(home, config))
    assert states[("0.1.0", bad["kernelrelease"], "kmod")]["state"] == "failed"


# -- two builds at once -----------------------------------------------------------------------------

def test_two_builds_at_once_build_each_artifact_once(tmp_path: Path, home: Path, mirror: Any,
                                                      docker_client: Any) -> None:
    config = write_config(tmp_path, [driver_yaml(NAME, "0.1.0", HELLO_KBUILD, "kbuild", "[kmod, ebpf]")],
                          [good_kernel(mirror)])
    repogen = Repogen(home, config)
    procs = [start(repogen, "build", "-j", "2", "--json") for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err
        assert "Traceback" not in err and "ENOTEMPTY" not in err and "Directory not empty" not in err, err
    reports = [json.loads(out) for out, _ in outputs]
    # Each artifact was compiled by exactly one of them; the other waited and took it as it was.
    assert sum(r["built"] for r in reports) == 2, reports
    assert sum(r["counters"]["containers"] for r in reports) == 2, reports
    statuses = sorted(res["status"] for r in reports for res in r["results"])
    assert statuses == ["built", "built", "up-to-date", "up-to-date"], statuses
    assert "waiting for pid" in outputs[0][1] + outputs[1][1]
    assert all(s["state"] == "built" for s in plan_states(repogen).values())
    assert home_containers(docker_client, home) == [] and leftovers(home) == []


# -- kill -9 of `repogen build` ---------------------------------------------------------------------

class SlowMirror(http.server.ThreadingHTTPServer):
    """Serves the test mirror's files, holding each body after its first 64 KiB while ``slow`` is set."""

    slow = True


def slow_mirror(directory: Path) -> tuple[SlowMirror, str]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def copyfile(self, source: Any, outputfile: Any) -> None:
            outputfile.write(source.read(65536))
            outputfile.flush()
            for _ in range(1200):  # bounded: 2 minutes
                if not self.server.slow:  # type: ignore[attr-defined]
                    break
                time.sleep(0.1)
            shutil.copyfileobj(source, outputfile)

        def log_message(self, *args: Any) -> None:
            pass

    server = SlowMirror(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_kill_9_mid_download_then_rerun(tmp_path: Path, home: Path, mirror: Any) -> None:
    server, base = slow_mirror(mirror.directory)
    try:
        kernel = other_kernel(mirror)
        index = flavour_index(kernel)
        kernel["headers"][index] = base + "/" + kernel["headers"][index]["url"].rsplit("/", 1)[1]
        config = write_config(tmp_path, [driver_yaml(NAME, "0.1.0", HELLO_KBUILD, "kbuild", "[kmod]")], [kernel])
        repogen = Repogen(home, config)
        proc = start(repogen, "build", "--json")
        downloads = home / "cache" / "downloads"
        part = wait_for(lambda: list(downloads.glob(".part*")), "a download under way", proc=proc)
        kill(proc)
        assert all(p.exists() for p in part)  # what kill -9 leaves ...
        server.slow = False
        result = repogen("build", "--json", timeout=600)
        assert result.code == 0, result.out + result.err
        assert result.json["built"] == 1
        assert "1 partial files and directories swept" in result.err or "partial files" in result.err, result.err
        assert not list(downloads.glob(".part*")) and leftovers(home) == []  # ... is swept by the next run
        assert all(s["state"] == "built" for s in plan_states(repogen).values())
    finally:
        server.shutdown()
        server.server_close()


def test_kill_9_mid_build_container_stops_by_itself_and_is_reaped(tmp_path: Path, home: Path, mirror: Any,
                                                                   docker_client: Any) -> None:
    source = broken_driver(tmp_path, kbuild_prefix="$(shell sleep 600)\n")
    config = write_config(tmp_path, [driver_yaml(NAME, "0.1.0", source, "kbuild", "[kmod]")],
                          [good_kernel(mirror)], "build: {timeout: 15s}\n")
    repogen = Repogen(home, config)
    proc = start(repogen, "build", "--json")
    running = wait_for(lambda: home_containers(docker_client, home, running=True), "the build container", proc=proc)
    kill(proc)
    (orphan_id,) = running
    orphan = docker_client.containers.get(orphan_id)
    assert orphan.status == "running"  # repogen is gone, its build is not (yet)
    # The limit is the engine's own: the build ends at its timeout with nobody watching.
    wait_for(lambda: (orphan.reload(), orphan.status != "running")[1], "the orphan to stop", seconds=90, every=1)
    state = docker_client.api.inspect_container(orphan.id)["State"]
    assert state["ExitCode"] in (124, 137), state
    assert leftovers(home / "work")  # its work directory is still there ...
    broken_driver(tmp_path)  # the source fixed: the next run builds it, and cleans up first
    write_config(tmp_path, [driver_yaml(NAME, "0.1.0", source, "kbuild", "[kmod]")], [good_kernel(mirror)],
                 "build: {timeout: 600s}\n")  # a busy machine may need more than 15 s for the real build
    result = repogen("build", "--json", timeout=600)
    assert result.code == 0, result.out + result.err
    assert result.json["built"] == 1
    assert "1 build containers removed" in result.err, result.err
    assert home_containers(docker_client, home) == [] and leftovers(home) == []  # ... and now gone
    assert all(s["state"] == "built" for s in plan_states(repogen).values())


def test_kill_9_mid_rebuild_keeps_the_artifact_published(tmp_path: Path, home: Path, mirror: Any,
                                                          docker_client: Any) -> None:
    config = write_config(tmp_path, [driver_yaml(NAME, "0.1.0", HELLO_KBUILD, "kbuild", "[kmod]")],
                          [good_kernel(mirror)])
    repogen = Repogen(home, config)
    first = repogen("build", "--json", timeout=600)
    assert first.code == 0, first.out + first.err
    proc = start(repogen, "build", "--rebuild", "kind=kmod", "--json")
    wait_for(lambda: home_containers(docker_client, home, running=True), "the rebuild's container", every=0.02,
             proc=proc)
    kill(proc)
    # The rebuild never finished: the job keeps its artifact, and publish still serves it.
    assert [s["state"] for s in plan_states(repogen).values()] == ["built"]
    site = tmp_path / "site"
    published = repogen("publish", "--site", str(site), "--json", timeout=300)
    assert published.code == 0 and published.json["artifacts"] == 1, published.out + published.err
    again = repogen("build", "--rebuild", "kind=kmod", "--json", timeout=600)
    assert again.code == 0 and again.json["built"] == 1, again.out + again.err
    assert home_containers(docker_client, home) == [] and leftovers(home) == []


# -- kill -9 of `repogen publish` -------------------------------------------------------------------

def check_live_tree(site: Path, home: Path, tmp_path: Path, base_url: str, versions: list[str]) -> None:
    """The live tree is complete: its checksums verify, index.json names real artifacts, apt-get can
    fetch every version, and the store's objects are what their names say."""
    check = subprocess.run(["sha256sum", "--strict", "-c", "--quiet", "SHA256SUMS"], cwd=site,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    index = json.loads((site / "index.json").read_text())
    assert len(index["artifacts"]) == 1
    for artifact in index["artifacts"]:
        assert hashlib.sha256((site / artifact["path"]).read_bytes()).hexdigest() == artifact["sha256"]
    apt = Apt(tmp_path / f"apt-{time.monotonic_ns()}", base_url, signed_by=None, trusted=True)
    update = apt("update")
    assert update.returncode == 0 and "W:" not in update.stdout + update.stderr, update.stdout + update.stderr
    fetched = apt("download", *(f"falco={v}" for v in versions))
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    for obj in (home / "store" / "sha256").rglob("*"):
        if obj.is_file():
            assert hashlib.sha256(obj.read_bytes()).hexdigest() == obj.name


@pytest.mark.parametrize("point", ["publish-repositories", "publish-filled", "publish-renamed", "publish-swapped"])
def test_kill_9_mid_publish_leaves_the_live_tree_whole(point: str, tmp_path: Path, home: Path, mirror: Any,
                                                       served: tuple[Path, str]) -> None:
    site, base_url = served
    config = write_config(tmp_path, [driver_yaml(NAME, "0.1.0", HELLO_KBUILD, "kbuild", "[kmod]")],
                          [good_kernel(mirror)])
    repogen = Repogen(home, config)
    assert repogen("build", timeout=600).code == 0
    packages = tmp_path / "packages"
    old, new = (make_deb(packages, "falco", v, "amd64", payload=v) for v in ("0.40.0", "0.41.0"))
    assert repogen("publish", "--site", str(site), "--deb", str(old), timeout=300).code == 0
    live = site.resolve()
    killed = repogen("publish", "--site", str(site), "--deb", str(new), timeout=300,
                     env={"REPOGEN_FAILPOINT": point})
    assert killed.code == -signal.SIGKILL, killed.out + killed.err
    swapped = point == "publish-swapped"
    assert (site.resolve() != live) is swapped  # the old tree, or (killed after the swap) the new one
    check_live_tree(site, home, tmp_path, base_url, ["0.40.0", "0.41.0"] if swapped else ["0.40.0"])
    # The next publish sweeps at once what the killed one left, and publishes both packages.
    generations = site.parent / f".{site.name}.generations"
    assert repogen("publish", "--site", str(site), "--deb", str(new), timeout=300).code == 0
    assert leftovers(generations) == [] and not list(site.parent.glob(f".{site.name}.link*"))
    check_live_tree(site, home, tmp_path, base_url, ["0.40.0", "0.41.0"])
