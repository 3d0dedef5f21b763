"""Run a long command with its output kept in a log and fed, line by line, to a progress callback."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

#: Receives each non-empty output line of a long step (debootstrap, docker build) as it comes.
OnLine = Callable[[str], None]


def run_logged(command: list[str], log_path: Path, on_line: OnLine | None = None,
               timeout: float | None = None) -> int:
    """Run ``command`` (stdout and stderr together) into ``log_path``; returns its exit status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as log, subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if on_line is not None and line.strip():
                on_line(line.strip())
        return proc.wait(timeout=timeout)
