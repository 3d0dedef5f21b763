"""Vanilla kernels: a prepared kernel.org tree shipped as a tarball (``make modules_prepare`` done)."""

from __future__ import annotations

from repogen.distro import Distro, PackageFormat


class Vanilla(Distro, name="vanilla"):
    targets = ("vanilla",)
    package_format = PackageFormat.tarball
    kernel_dir_globs = ("*", "usr/src/*")
    kernelversion_hint = "'1' for vanilla kernels"
