"""The records that flow through the pipeline: drivers, kernels, and the jobs they multiply into.

These are the one currency between stages (config -> matrix -> fetch -> build -> verify -> store ->
publish), kept as plain frozen dataclasses so each stage can be read on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    """What is built for a kernel: Falco's kernel module or its eBPF probe."""

    kmod = "kmod"
    ebpf = "ebpf"

    @property
    def extension(self) -> str:
        """The file extension falcoctl and falco-driver-loader expect."""
        return ".ko" if self is Kind.kmod else ".o"


@dataclass(frozen=True)
class Source:
    """Where a driver version's source comes from: a tarball URL or a local path."""

    url: str | None = None
    path: str | None = None
    sha256: str | None = None

    @property
    def pinned(self) -> bool:
        """A pinned source cannot change under us; an unpinned URL (a branch) is re-fetched."""
        return self.sha256 is not None or self.path is not None

    @property
    def location(self) -> str:
        return self.url or self.path or ""


@dataclass(frozen=True)
class Driver:
    name: str
    version: str
    source: Source
    recipe: str
    kinds: tuple[Kind, ...]
    file: str = ""
    line: int = 0


@dataclass(frozen=True)
class Header:
    url: str
    sha256: str | None = None


@dataclass(frozen=True)
class Kernel:
    """One kernel, in the identifiers Falco's clients compute (kernel-crawler's record)."""

    target: str
    kernelrelease: str
    kernelversion: str
    architecture: str
    headers: tuple[Header, ...]
    kernelconfigdata: str | None = None
    builder: str | None = None
    #: The kernel image package (Debian: ``linux-image-<abi>-<flavour>``), for the boot check.
    image: Header | None = None
    file: str = ""
    line: int = 0

    @property
    def ident(self) -> tuple[str, str, str, str]:
        return (self.target, self.kernelrelease, self.kernelversion, self.architecture)

    @property
    def label(self) -> str:
        return f"{self.target}/{self.kernelrelease}/{self.kernelversion}/{self.architecture}"


@dataclass(frozen=True)
class Job:
    """One build: a driver version, a kernel, a kind."""

    driver: Driver
    kernel: Kernel
    kind: Kind

    @property
    def job_id(self) -> str:
        k = self.kernel
        # Kind is a StrEnum: joined as its value, without the (slow) enum attribute lookup.
        return "|".join(
            (self.driver.name, self.driver.version, k.target, k.kernelrelease, k.kernelversion,
             k.architecture, self.kind)
        )

    @property
    def fields(self) -> dict[str, str]:
        """The fields a ``--only``/``--rebuild`` selector can match on."""
        k = self.kernel
        return {
            "name": self.driver.name,
            "driverversion": self.driver.version,
            "target": k.target,
            "kernelrelease": k.kernelrelease,
            "kernelversion": k.kernelversion,
            "architecture": k.architecture,
            "arch": k.architecture,
            "kind": self.kind.value,
        }

    @property
    def artifact_name(self) -> str:
        """Falco's download name: ``<name>_<target>_<kernelrelease>_<kernelversion>.ko|.o``."""
        k = self.kernel
        return f"{self.driver.name}_{k.target}_{k.kernelrelease}_{k.kernelversion}{self.kind.extension}"

    @property
    def label(self) -> str:
        return f"{self.driver.name} {self.driver.version} {self.kind.value} {self.kernel.label}"


@dataclass(frozen=True)
class BuildLimits:
    timeout_seconds: int = 1800
    memory: str = "4g"
    pids: int = 4096


@dataclass(frozen=True)
class PackagesConfig:
    deb: tuple[str, ...] = ()
    rpm: tuple[str, ...] = ()
    suite: str = "stable"
    component: str = "main"
    origin: str = "repogen"
    label: str = "repogen"
    keep_versions: int | None = None
    valid_until_days: int | None = None
    grace_seconds: int = 3 * 86400
    rpm_compression: str = "gz"
    base_url: str | None = None


@dataclass(frozen=True)
class SigningConfig:
    key: str | None = None
    key_file: str | None = None
    homedir: str | None = None
    passphrase_env: str | None = None


@dataclass(frozen=True)
class Config:
    files: tuple[str, ...]
    includes: tuple[str, ...]
    drivers: tuple[Driver, ...]
    kernels: tuple[Kernel, ...]
    limits: BuildLimits = field(default_factory=BuildLimits)
    packages: PackagesConfig = field(default_factory=PackagesConfig)
    signing: SigningConfig = field(default_factory=SigningConfig)
    #: Entries that parse but break their distribution's naming rule (``file:line: field: message``):
    #: checked by ``config.parse`` (what `validate` runs), not by ``config.load``.
    warnings: tuple[str, ...] = ()
    #: The ``mirrors:`` map of the main file, and the default mirrors the entries used (name, URL).
    mirrors: tuple[tuple[str, str], ...] = ()
    mirror_defaults: tuple[tuple[str, str], ...] = ()
    #: The shared remote build cache, ``s3://BUCKET/PREFIX`` (``--cache`` overrides it).
    cache: str | None = None
