"""Ubuntu: Debian packaging; the target names the flavour (``ubuntu-generic``, ``ubuntu-aws``)."""

from __future__ import annotations

from repogen.distro import Distro
from repogen.distro.debian import Debian


class Ubuntu(Debian, name="ubuntu"):
    targets = ()
    target_pattern = r"ubuntu-[a-z0-9.-]+"
    kernelversion_hint = Distro.kernelversion_hint
