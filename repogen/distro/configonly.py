"""Distributions that publish no headers package, only the kernel's configuration (kernel-crawler's
``kernelconfigdata``): Bottlerocket, Talos, minikube, Flatcar. Building for them needs the kernel
sources prepared with that configuration, a later step: the matrix lists them and ``plan`` says so.

Naming (falcoctl ``bottlerocket.go``, ``talos.go``, ``minikube.go``, ``flatcar.go``): the target is the
os-release ID; the kernelversion carries the OS version (``1_<VERSION_ID>-<variant>``, ``1_<VERSION_ID>``,
``1_<minikube version>``), and Flatcar's kernelrelease is its VERSION_ID.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from repogen.distro import Distro, KernelName, PackageFormat, Uname

if TYPE_CHECKING:
    from repogen.model import Kernel


class ConfigOnly(Distro):
    package_format = PackageFormat.config
    needs_sources = True
    kernel_dir_globs = ("usr/src/*",)
    #: What the kernelversion looks like, checked by validate.
    kernelversion_pattern: ClassVar[str] = r"\d+"

    @classmethod
    def rule_problems(cls, kernel: Kernel) -> list[str]:
        if re.fullmatch(cls.kernelversion_pattern, kernel.kernelversion):
            return []
        return [f"kernelversion {kernel.kernelversion!r} is not what clients request ({cls.kernelversion_hint})"]


class Bottlerocket(ConfigOnly, name="bottlerocket"):
    targets = ("bottlerocket",)
    os_ids = ("bottlerocket",)
    kernelversion_hint = "1_<VERSION_ID>-<first part of VARIANT_ID>, e.g. 1_1.19.2-aws"
    kernelversion_pattern = r"1_[0-9.]+-[a-z0-9]+"

    @classmethod
    def name(cls, uname: Uname) -> KernelName:
        variant = uname.variant_id.split("-")[0]
        return KernelName("bottlerocket", uname.release, f"1_{uname.version_id}-{variant}")


class Talos(ConfigOnly, name="talos"):
    targets = ("talos",)
    os_ids = ("talos",)
    kernelversion_hint = "1_<VERSION_ID>, e.g. 1_1.6.4"
    kernelversion_pattern = r"1_v?[0-9.]+"

    @classmethod
    def name(cls, uname: Uname) -> KernelName:
        return KernelName("talos", uname.release, f"1_{uname.version_id}")


class Minikube(ConfigOnly, name="minikube"):
    targets = ("minikube",)
    os_ids = ("minikube",)
    kernelversion_hint = "1_<minikube version>, e.g. 1_1.32.0"
    kernelversion_pattern = r"1_[0-9.]+"

    @classmethod
    def name(cls, uname: Uname) -> KernelName:
        m = re.search(r"\d+(\.\d+){2}", uname.minikube_version)
        return KernelName("minikube", uname.release, f"1_{m.group(0) if m else ''}")


class Flatcar(ConfigOnly, name="flatcar"):
    targets = ("flatcar",)
    os_ids = ("flatcar",)
    kernelversion_hint = "the number after '#' in `uname -v`"

    @classmethod
    def name(cls, uname: Uname) -> KernelName:
        return KernelName("flatcar", uname.version_id, cls.kernelversion_for(uname))
