"""Named points where a test can make repogen die as by ``kill -9`` (``REPOGEN_FAILPOINT=<name>``).

A crash test then needs no timing luck: the process kills itself exactly there, and the test checks
that the next run finds everything complete. Unset (always, outside tests), a point costs one lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "REPOGEN_FAILPOINT"


def reached(name: str) -> None:
    """Die here with SIGKILL if the environment names this point."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
