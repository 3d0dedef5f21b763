"""Any other os-release ID: falcoctl's generic rule (target = ID, ``uname -r``, ``#N`` of ``uname -v``)."""

from __future__ import annotations

from repogen.distro import Distro


class Generic(Distro, name="generic"):
    """Not a target of its own: names hosts whose ID no other class claims."""
