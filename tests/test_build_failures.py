"""Builds that fail: each says why (exit 1), never stops the other builds, is shown as failed by
``plan --json``, leaves no bad file behind, and builds once the cause is fixed.

Real Docker, the real builder image and real Debian headers over HTTP on 127.0.0.1. Each test starts
from a warm copy (hard links) of a headers cache filled once per session, so a test costs a container
run or two, not a headers download and unpack.
"""

from __future__ import annotations

import copy
import shutil
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import HELLO_KBUILD, Repogen, Result, driver_yaml, write_config

from repogen.serve import serve_in_thread

pytestmark = [pytest.mark.timeout(600), pytest.mark.docker]

NAME = "hello_repogen"
FAKE_RELEASE = "6.1.999-1-amd64"  # a second kernel label over the same real headers: no second unpack


def good_kernel(mirror: Any) -> dict[str, Any]:
    return copy.deepcopy(mirror.kernels[0])


def other_kernel(mirror: Any, header: int | None = None, new: Any = None) -> dict[str, Any]:
    """mirror.kernels[0]'s headers under another label, with headers[header] replaced by ``new``."""
    k = good_kernel(mirror)
    k["kernelrelease"] = FAKE_RELEASE
    if header is not None:
        k["headers"][header] = new
    return k


def flavour_index(kernel: dict[str, Any]) -> int:
    return next(i for i, h in enumerate(kernel["headers"]) if "-amd64_" in h["url"] and "headers" in h["url"])


def flat(result: Result) -> str:
    return " ".join((result.out + "\n" + result.err).split())


def plan_states(repogen: Repogen, env: dict[str, str] | None = None) -> dict[tuple[str, str, str], dict[str, Any]]:
    result = repogen("plan", "--json", "--all", timeout=120, env=env)
    assert result.code == 0, result.err
    return {(j["driverversion"], j["kernelrelease"], j["kind"]): j for j in result.json["jobs"]}


def build_with_one_failure(repogen: Repogen, failed: tuple[str, str, str], *words: str,
                           env: dict[str, str] | None = None, jobs: int = 2) -> Result:
    """``repogen build`` exits 1 naming the cause; every other job is built."""
    result = repogen("build", "-j", str(jobs), "--json", timeout=600, env=env)
    assert result.code == 1, (result.code, result.out, result.err)
    assert "Traceback" not in result.err, result.err
    text = flat(result)
    for word in words:
        assert word in text, (word, text)
    by_job = {(r["driverversion"], r["kernelrelease"], r["kind"]): r for r in result.json["results"]}
    assert by_job[failed]["status"] == "failed", by_job[failed]
    for word in words:
        assert word in " ".join(by_job[failed]["error"].split()), (word, by_job[failed])
    others = [r for key, r in by_job.items() if key != failed]
    assert others and all(r["status"] == "built" for r in others), others
    assert result.json["failed"] == 1 and result.json["built"] == len(others)
    return result


def assert_plan_shows_failed(repogen: Repogen, failed: tuple[str, str, str], *words: str) -> None:
    states = plan_states(repogen)
    assert states[failed]["state"] == "failed", states[failed]
    for word in words:
        assert word in (states[failed]["error"] or ""), (word, states[failed])
    assert all(s["state"] == "built" for key, s in states.items() if key != failed), states


def build_all_ok(repogen: Repogen, expect_built: int) -> None:
    result = repogen("build", "-j", "2", "--json", timeout=600)
    assert result.code == 0, result.out + result.err
    assert result.json["failed"] == 0 and result.json["built"] == expect_built, result.json
    states = plan_states(repogen)
    assert all(s["state"] == "built" for s in states.values()), states


def downloads_hold(home: Path, url: str) -> list[str]:
    with sqlite3.connect(home / "state.db") as db:
        return [r[0] for r in db.execute("SELECT sha256 FROM downloads WHERE url=?", (url,))]


def no_partial_downloads(home: Path) -> None:
    leftovers = [p.name for p in (home / "cache" / "downloads").iterdir() if p.name.startswith(".part")]
    assert leftovers == []


def our_containers(client: Any, home: Path) -> list[str]:
    """Build containers mounting this test's home (the engine is shared with other runs)."""
    found = []
    for c in client.containers.list(all=True, filters={"label": "org.repogen.build"}):
        try:
            mounts = client.api.inspect_container(c.id)["Mounts"]
        except Exception:  # removed meanwhile
            continue
        if any(str(m.get("Source", "")).startswith(str(home)) for m in mounts):
            found.append(c.id)
    return found


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory of this test's own, served over HTTP on 127.0.0.1."""
    directory = tmp_path / "served"
    directory.mkdir()
    server, base = serve_in_thread(directory)
    try:
        yield directory, base
    finally:
        server.shutdown()
        server.server_close()


class SilentServer:
    """Accepts connections on 127.0.0.1 and never answers (a stuck mirror)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


# -- headers --------------------------------------------------------------------------------------

def test_headers_url_that_404s_fails_that_kernel_only(tmp_path: Path, home: Path, mirror: Any) -> None:
    kernel = good_kernel(mirror)
    bad_url = f"{mirror.base_url}/pool/no-such-linux-headers.deb"
    bad = other_kernel(mirror, flavour_index(kernel), {"url": bad_url})
    drivers = [driver_yaml(NAME, "0.1.0", HELLO_KBUILD, "kbuild", "[kmod]")]
    config = write_config(tmp_path, drivers, [kernel, bad])
    repogen = Repogen(home, config)
    failed = ("0.1.0", FAKE_RELEASE, "kmod")
    build_with_one_failure(repogen, failed, bad_url, "HTTP 404")
    assert_plan_shows_failed(repogen, failed, "HTTP 404")
    assert downloads_hold(home, bad_url) == []
    no_partial_downloads(home)
    # Fixed: the right URL.
    write_config(tmp_path, drivers, [kernel, other_kernel(mirror)])
    build_all_ok(repogen, expect_built=1)


def test_headers_url_that_times_out_fails_with_timed_out(tmp_path: Path, home: Path, mirror: Any) -> None:
    stuck = SilentServer()
    try:
        kernel = good_kernel(mirror)
        bad_url = f"http://127.0.0.1:{stuck.port}/linux-headers.deb"
        bad = other_kernel(mirror, flavour_index(kernel), {"url": bad_url})
        drivers = [driver_yaml(NAME, "0.1.0", HELLO_KBUILD, "kbuild", "[kmod]")]
        config = write_config(tmp_path, drivers, [kernel, bad])
        repogen = Repogen(home, config)
        failed = ("0.1.0", FAKE_RELEASE, "kmod")
        env = {"REPOGEN_FETCH_TIMEOUT": "2", "REPOGEN_FETCH_RETRIES": "1"}
        result = build_with_one_failure(repogen, failed, bad_url, "timed out after 2s", env=env)
        seconds = {r["kernelrelease"]: r["seconds"] for r in result.json["results"]}
        assert seconds[FAKE_RELEASE] < 30, seconds  # the knob is honoured: not 60s x 3 attempts
        assert stuck.accepted, "the client never connected"
        assert_plan_shows_failed(repogen, failed, "timed out")
        assert downloads_hold(home, bad_url) == []
        no_partial_downloads(home)
    finally:
        stuck.close()
    write_config(tmp_path, drivers, [kernel, other_kernel(mirror)])
    build_all_ok(repogen, expect_built=1)


def test_headers_sha256_mismatch_fails_and_keeps_nothing(tmp_path: Path, home: Path, mirror: Any,
                                                         served: tuple[Path, str]) -> None:
    directory, base = served
    kernel = good_kernel(mirror)
    i = flavour_index(kernel)
    real = mirror.directory / kernel["headers"][i]["url"].rsplit("/", 1)[1]
    shutil.copyfile(real, directory / real.name)
    url = f"{base}/{real.name}"  # a URL this home never fetched
    wrong = "0" * 64
    bad = other_kernel(mirror, i, {"url": url, "sha256": wrong})
    drivers = [driver_yaml(NAME, "0.1.0", HELLO_KBUILD, "kbuild", "[kmod]")]
    config = write_config(tmp_path, drivers, [kernel, bad])
    repogen = Repogen(home, config)
    failed = ("0.1.0", FAKE_RELEASE, "kmod")
    build_with_one_failure(repogen, failed, url, "sha256 mismatch", wrong, kernel["headers"][i]["sha256"])
    assert not (home / "cache" / "downloads" / wrong).exists()
    assert downloads_hold(home, url) == []
    no_partial_downloads(home)
    write_config(tmp_path, drivers, [kernel, other_kernel(mirror, i, {"url": url,
                                                                      "sha256": kernel["headers"][i]["sha256"]})])
    build_all_ok(repogen, expect_built=1)


def test_headers_sha256_mismatch_shows_as_failed_in_plan(tmp_path: Path, home: Path, mirror: Any) -> None:
    kernel = good_kernel(mirror)
    i = flavour_index(kernel)
    bad = other_kernel(mirror, i, {"url": kernel["headers"][i]["url"] + "?copy", "sha256": "0" * 64})
    config = write_config(tmp_path, [driver_yaml(NAME, "0.1.0", HELLO_KBUILD, "kbuild", "[kmod]")], [kernel, bad])
    repogen = Repogen(home, config)
    failed = ("0.1.0", FAKE_RELEASE, "kmod")
    build_with_one_failure(repogen, failed, "sha256 mismatch")
    assert_plan_shows_failed(repogen, failed, "sha256 mismatch")


@pytest.mark.parametrize("pinned", [True, False], ids=["with-sha256", "without-sha256"])
def test_truncated_headers_deb_fails_and_is_not_kept_in_the_cache(
        tmp_path: Path, home: Path, mirror: Any, served: tuple[Path, str], pinned: bool) -> None:
    import hashlib

    directory, base = served
    kernel = good_kernel(mirror)
    i = flavour_index(kernel)
    real = mirror.directory / kernel["headers"][i]["url"].rsplit("/", 1)[1]
    data = real.read_bytes()
    truncated = data[: len(data) * 2 // 3]
    truncated_sha = hashlib.sha256(truncated).hexdigest()
    (directory / real.name).write_bytes(truncated)
    url = f"{base}/{real.name}"
    header = {"url": url, "sha256": truncated_sha} if pinned else {"url": url}
    drivers = [driver_yaml(NAME, "0.1.0", HELLO_KBUILD, "kbuild", "[kmod]")]
    config = write_config(tmp_path, drivers, [kernel, other_kernel(mirror, i, header)])
    repogen = Repogen(home, config)
    failed = ("0.1.0", FAKE_RELEASE, "kmod")
    build_with_one_failure(repogen, failed, url, "corrupt or truncated .deb")
    assert_plan_shows_failed(repogen, failed, "corrupt or truncated .deb")
    # The bad file is forgotten: neither the file nor the URL's digest is kept.
    assert not (home / "cache" / "downloads" / truncated_sha).exists()
    assert downloads_hold(home, url) == []
    no_partial_downloads(home)
    leftovers = [p.name for p in (home / "cache" / "kernels").iterdir() if ".tmp" in p.name]
    assert leftovers == []
    # A rerun without fixing anything fetches the file again (and fails the same way, not from a cache).
    again = repogen("build", "--json", timeout=600)
    assert again.code == 1 and again.json["counters"]["header_downloads"] == 1, again.json
    # Fixed upstream: the same URL now serves the whole file.
    (directory / real.name).write_bytes(data)
    if pinned:
        header = {"url": url, "sha256": kernel["headers"][i]["sha256"]}
    write_config(tmp_path, drivers, [kernel, other_kernel(mirror, i, header)])
    build_all_ok(repogen, expect_built=1)


# -- drivers --------------------------------------------------------------------------------------

def broken_driver(tmp_path: Path, kbuild_prefix: str = "", c_suffix: str = "") -> Path:
    source = tmp_path / "broken-src"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(HELLO_KBUILD, source)
    if kbuild_prefix:
        (source / "Kbuild").write_text(kbuild_prefix + (HELLO_KBUILD / "Kbuild").read_text())
    if c_suffix:
        (source / "hello_repogen.c").write_text((HELLO_KBUILD / "hello_repogen.c").read_text() + c_suffix)
    return source


def two_drivers(tmp_path: Path, mirror: Any, broken: Path, extra: str = "", kinds: str = "[kmod]") -> Path:
    return write_config(tmp_path, [driver_yaml(NAME, "0.1.0", HELLO_KBUILD, "kbuild", "[kmod]"),
                                   driver_yaml(NAME, "0.2.0-broken", broken, "kbuild", kinds)],
                        [good_kernel(mirror)], extra)


def test_driver_failing_in_its_build_script_fails_that_job_only(tmp_path: Path, home: Path, mirror: Any) -> None:
    """A kbuild driver without bpf/ asked for an eBPF probe: the recipe refuses it, the kmod is built."""
    source = broken_driver(tmp_path)
    shutil.rmtree(source / "bpf")
    repogen = Repogen(home, two_drivers(tmp_path, mirror, source, kinds="[kmod, ebpf]"))
    failed = ("0.2.0-broken", mirror.kernels[0]["kernelrelease"], "ebpf")
    build_with_one_failure(repogen, failed, "exited with status 1", "no bpf/Makefile")
    assert_plan_shows_failed(repogen, failed, "no bpf/Makefile")
    shutil.copytree(HELLO_KBUILD / "bpf", source / "bpf")
    build_all_ok(repogen, expect_built=2)  # the source changed: its kmod is rebuilt too


def test_driver_that_does_not_compile_fails_with_the_compiler_error(
        tmp_path: Path, home: Path, mirror: Any) -> None:
    source = broken_driver(tmp_path, c_suffix="\nthis_is_not_c repogen_syntax_error;\n")
    repogen = Repogen(home, two_drivers(tmp_path, mirror, source))
    failed = ("0.2.0-broken", mirror.kernels[0]["kernelrelease"], "kmod")
    # The excerpt is the compiler's own error line, not make's "*** [...] Error 1" echo of it.
    result = build_with_one_failure(repogen, failed, "exited with status", "error:", "this_is_not_c")
    error = next(r["error"] for r in result.json["results"] if r["driverversion"] == "0.2.0-broken")
    assert "Error 1" not in error.splitlines()[0], error
    log = next(r["log"] for r in result.json["results"] if r["driverversion"] == "0.2.0-broken")
    assert log and "repogen_syntax_error" in Path(log).read_text()
    assert_plan_shows_failed(repogen, failed, "exited with status", "this_is_not_c")
    # plan without --json shows the failure reason too.
    plain = repogen("plan", timeout=120)
    assert "failed" in plain.out and "this_is_not_c" in plain.out, plain.out
    # Nothing of the failed build is left in the work directory.
    assert not any((home / "work").iterdir())
    broken_driver(tmp_path)  # fixed: the plain hello source again
    build_all_ok(repogen, expect_built=1)


def test_driver_that_does_not_compile_is_reported_in_plain_output(
        tmp_path: Path, home: Path, mirror: Any) -> None:
    """Without --json: the FAILED line and the summary, and no crash on make's '[...]' output."""
    source = broken_driver(tmp_path, c_suffix="\nthis_is_not_c repogen_syntax_error;\n")
    repogen = Repogen(home, two_drivers(tmp_path, mirror, source))
    result = repogen("build", "-j", "2", timeout=600)
    assert result.code == 1, result.out + result.err
    assert "Traceback" not in result.err, result.err
    text = flat(result)
    assert "FAILED hello_repogen 0.2.0-broken kmod" in text and "exited with status" in text
    assert "1 built, 1 failed" in text
    # The summary table stays narrow: the one log path shown is the failed build's (--logs shows all).
    assert result.err.count(".log") == 1, result.err
    # publish tells a failed job from one not built yet.
    published = repogen("publish", "--site", str(tmp_path / "site"), timeout=300)
    assert published.code == 0 and "1 failed (see `repogen plan`)" in published.out, published.out
    assert "not built yet" not in published.out


def test_compiler_that_hangs_is_timed_out(tmp_path: Path, home: Path, mirror: Any, docker_client: Any) -> None:
    source = broken_driver(tmp_path, kbuild_prefix="$(shell sleep 600)\n")
    repogen = Repogen(home, two_drivers(tmp_path, mirror, source, "build: {timeout: 15s}\n"))
    failed = ("0.2.0-broken", mirror.kernels[0]["kernelrelease"], "kmod")
    result = build_with_one_failure(repogen, failed, "timed out after 15s", "build.timeout")
    seconds = next(r["seconds"] for r in result.json["results"] if r["driverversion"] == "0.2.0-broken")
    assert seconds < 120, seconds
    assert_plan_shows_failed(repogen, failed, "timed out")
    # The container was killed and removed: nothing of ours keeps running.
    assert our_containers(docker_client, home) == []
    broken_driver(tmp_path)
    build_all_ok(repogen, expect_built=1)


def test_build_exceeding_its_memory_limit_says_so(tmp_path: Path, home: Path, mirror: Any,
                                                   docker_client: Any) -> None:
    source = broken_driver(tmp_path, kbuild_prefix="$(shell tail /dev/zero)\n")
    repogen = Repogen(home, two_drivers(tmp_path, mirror, source, "build: {memory: 64m, timeout: 300s}\n"))
    failed = ("0.2.0-broken", mirror.kernels[0]["kernelrelease"], "kmod")
    build_with_one_failure(repogen, failed, "memory limit of 64m", "build.memory")
    assert_plan_shows_failed(repogen, failed, "memory limit")
    assert our_containers(docker_client, home) == []
    broken_driver(tmp_path)
    build_all_ok(repogen, expect_built=1)


def test_docker_not_running_says_how_to_start_it(tmp_path: Path, home: Path, mirror: Any) -> None:
    config = write_config(tmp_path, [driver_yaml(NAME, "0.1.0", HELLO_KBUILD, "kbuild", "[kmod]")],
                          [good_kernel(mirror)])
    repogen = Repogen(home, config)
    env = {"DOCKER_HOST": "unix:///tmp/nonexistent.sock"}
    result = repogen("build", timeout=180, env=env)
    assert result.code != 0
    assert "Traceback" not in result.err, result.err
    text = flat(result)
    assert "Docker is not running or not reachable at unix:///tmp/nonexistent.sock" in text
    assert "hint: start the engine" in text and "dockerd" in text
    # plan still works without Docker, and says build keys cannot be computed.
    plan = repogen("plan", timeout=180, env=env)
    assert plan.code == 0, plan.err
    assert "Docker is not running" in flat(plan)
    # Nothing was recorded as failed: Docker's absence is not the build's fault.
    states = plan_states(repogen)
    assert [s["state"] for s in states.values()] == ["missing"]


def test_failing_driver_next_to_a_good_one_publishes_the_good_one(
        tmp_path: Path, home: Path, mirror: Any) -> None:
    import json

    source = broken_driver(tmp_path)
    shutil.rmtree(source / "bpf")  # fails cleanly in the recipe (a compile error hits the markup bug)
    repogen = Repogen(home, two_drivers(tmp_path, mirror, source, kinds="[ebpf]"))
    failed = ("0.2.0-broken", mirror.kernels[0]["kernelrelease"], "ebpf")
    build_with_one_failure(repogen, failed, "no bpf/Makefile")
    site = tmp_path / "site"
    published = repogen("publish", "--site", str(site), "--json", timeout=300)
    assert published.code == 0, published.err
    # The failed job is counted as failed, not as "not built yet".
    assert published.json["artifacts"] == 1 and published.json["failed"] == 1 and published.json["missing"] == 0
    k = mirror.kernels[0]
    good = site / "driver" / "0.1.0" / "x86_64" / f"{NAME}_debian_{k['kernelrelease']}_1.ko"
    assert good.is_file() and good.read_bytes()[:4] == b"\x7fELF"
    assert not (site / "driver" / "0.2.0-broken").exists() and not list(site.rglob("*.o"))
    index = json.loads((site / "index.json").read_text())
    assert [a["driverversion"] for a in index["artifacts"]] == ["0.1.0"]
