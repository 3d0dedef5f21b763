"""The two small mechanisms every stage shares: per-key locks (threads and processes) with owners that
die with their process, and all-or-nothing files and directories. Real processes, real SIGKILLs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from repogen import atomic, locks

pytestmark = pytest.mark.timeout(120)


def child(code: str, ready: Path) -> subprocess.Popen[bytes]:
    """A Python process running ``code``; returns once it has touched ``ready``."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)])
    for _ in range(300):  # bounded: 30 s
        if ready.exists():
            return proc
        assert proc.poll() is None, "the child died before it was ready"
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the child never got ready")


def test_key_lock_waits_for_another_process_says_whom_and_dies_with_it(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    holder = child(f"""
        import pathlib, time
        from repogen.locks import KeyLocks
        with KeyLocks(pathlib.Path({str(tmp_path / 'locks')!r})).hold("build-x"):
            pathlib.Path({str(ready)!r}).touch()
            time.sleep(600)
    """, ready)
    messages: list[str] = []
    locks.notify_waits(messages.append)
    try:
        threading.Timer(1.0, holder.send_signal, [signal.SIGKILL]).start()
        started = time.monotonic()
        with locks.KeyLocks(tmp_path / "locks").hold("build-x", "building x"):
            waited = time.monotonic() - started
    finally:
        locks.notify_waits(None)
        holder.kill()
        holder.wait()
    # It waited for the holder, said so naming it, and got the lock as soon as kill -9 ended it.
    assert 0.5 < waited < 30, waited
    assert messages == [f"waiting for pid {holder.pid} on {locks.HOST} (building x)"], messages


def test_key_lock_serialises_threads_per_key_only(tmp_path: Path) -> None:
    key_locks = locks.KeyLocks(tmp_path / "locks")
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}
    guard = threading.Lock()

    def work(key: str) -> None:
        with key_locks.hold(key):
            with guard:
                inside[key] += 1
                most[key] = max(most[key], inside[key])
            time.sleep(0.02)
            with guard:
                inside[key] -= 1

    threads = [threading.Thread(target=work, args=(key,)) for key in "ab" * 8]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert most == {"a": 1, "b": 1}
    assert list((tmp_path / "locks").iterdir()) == []  # released locks leave no file behind
    # A key that is not a file name still gets one lock file of its own, inside the directory.
    assert key_locks.path("http://x/../y z").parent == tmp_path / "locks"


def test_sweep_removes_only_what_dead_owners_left(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "print(1)"], stdout=subprocess.DEVNULL)
    dead_token = locks.token(dead.pid)  # while it runs: its real start time
    dead.wait()
    assert not locks.alive(dead_token) and locks.alive(locks.token())
    # The same pid with another start time is another process: not alive either.
    assert not locks.alive(f"{os.getpid()}-1")
    mine = tmp_path / locks.owned(".headers.staging")
    theirs = tmp_path / f".headers.staging~run{dead_token}~1"
    their_part = tmp_path / f".part~run{dead_token}~abc"
    kept = tmp_path / f"work~run{dead_token}~2"
    plain = tmp_path / "0123abcd"
    for directory in (mine, theirs, kept, plain):
        directory.mkdir()
    (kept / ".keep").touch()
    their_part.write_text("half a download")
    removed = locks.sweep(tmp_path, keep=lambda entry: (entry / ".keep").exists())
    assert removed == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, kept.name, plain.name])


def test_install_dir_is_all_or_nothing_even_under_kill_9(tmp_path: Path) -> None:
    final = tmp_path / "tree"
    # A failing fill leaves nothing.
    with pytest.raises(RuntimeError):
        atomic.install_dir(final, lambda staging: (staging / "a").write_text("x") and _raise())
    assert list(tmp_path.iterdir()) == []
    # A killed fill leaves only its owned scratch directory, which the next sweep removes.
    ready = tmp_path / "ready"
    proc = child(f"""
        import pathlib, time
        from repogen import atomic
        def fill(staging):
            (staging / "half").write_text("x")
            pathlib.Path({str(ready)!r}).touch()
            time.sleep(600)
        atomic.install_dir(pathlib.Path({str(final)!r}), fill)
    """, ready)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ready.unlink()
    assert not final.exists() and atomic.completed(final) is None
    assert len([p for p in tmp_path.iterdir() if locks.owner_of(p.name)]) == 1
    assert locks.sweep(tmp_path) == 1 and list(tmp_path.iterdir()) == []
    # A complete one carries its marker; an incomplete leftover at the final name is replaced.
    final.mkdir()
    (final / "stale").write_text("from an old version")
    assert atomic.install_dir(final, lambda staging: (staging / "f").write_text("ok") and "facts",
                              durable=True) == "facts"
    assert sorted(p.name for p in final.iterdir()) == [".complete", "f"] and atomic.completed(final) == "facts"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]


def _raise() -> None:
    raise RuntimeError("fill failed")


def test_write_file_replaces_whole_and_leaves_no_scratch(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "index.json"
    atomic.write_file(target, b"one")
    atomic.write_file(target, b"two", mode=0o444)
    assert target.read_bytes() == b"two" and (target.stat().st_mode & 0o777) == 0o444
    atomic.copy_file(target, tmp_path / "copy", mode=0o400)
    assert (tmp_path / "copy").read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["copy", "index.json", "sub"]
