"""Debian: headers come as ``linux-headers-<abi>-<flavour>`` + ``-common`` + ``linux-kbuild-X.Y`` .debs.

Falco's identifiers (kernel-crawler): kernelrelease is ``<package version>-<flavour>``, e.g.
``6.1.170-3-amd64`` for the headers of ``6.1.0-47-amd64``; kernelversion is ``1``. The flavour
Makefile includes the ``-common`` tree by its absolute ``/usr/src`` path, which is why the build
mounts the unpacked ``usr/src`` at ``/usr/src``.
"""

from __future__ import annotations

from typing import ClassVar

from repogen.distro import Distro, PackageFormat


class Debian(Distro, name="debian"):
    targets: ClassVar[tuple[str, ...]] = ("debian",)
    package_format = PackageFormat.deb
    kernel_dir_globs = ("usr/src/linux-headers-*",)
    kernelversion_hint = "'1' for Debian kernels"
