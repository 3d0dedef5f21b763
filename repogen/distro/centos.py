"""RPM distributions: headers are one ``kernel-devel`` .rpm unpacking to ``/usr/src/kernels/<release>``."""

from __future__ import annotations

from typing import ClassVar

from repogen.distro import Distro, PackageFormat


class CentOS(Distro, name="centos"):
    targets: ClassVar[tuple[str, ...]] = ("centos", "redhat", "oracle", "rocky", "almalinux")
    package_format = PackageFormat.rpm
    kernel_dir_globs = ("usr/src/kernels/*",)
    kernelversion_hint = "'1' for RPM kernels"


class Fedora(CentOS, name="fedora"):
    targets = ("fedora",)


class AmazonLinux(CentOS, name="amazonlinux"):
    targets = ("amazonlinux", "amazonlinux2", "amazonlinux2022", "amazonlinux2023")
