"""Check every artifact before it is accepted: a wrong or broken file is a failed build.

- kernel module: an ELF relocatable for the kernel's machine whose ``.modinfo`` says the expected
  name and a vermagic that begins with the release read from the headers themselves;
- eBPF probe: an ELF relocatable for machine BPF.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from repogen.model import Kind

MACHINES = {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64", "s390x": "EM_S390", "ppc64le": "EM_PPC64",
            "riscv64": "EM_RISCV"}


class VerificationError(Exception):
    pass


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _only_verification_errors(check: Callable[_P, _R]) -> Callable[_P, _R]:
    """A malformed artifact is a failed verification, whatever the ELF reader raises on it
    (``ValueError``, ``MemoryError``, ``struct.error``, ...), never an escaping exception."""
    @functools.wraps(check)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return check(*args, **kwargs)
        except VerificationError:
            raise
        except Exception as exc:  # the artifact is hostile input: any failure to read it is its fault
            detail = str(exc).splitlines()[0][:200] if str(exc) else ""
            name = Path(str(args[0] if args else kwargs.get("path", "artifact"))).name
            raise VerificationError(f"{name} is not a valid ELF file: {type(exc).__name__}"
                                    + (f": {detail}" if detail else "")) from None
    return wrapper


@dataclass(frozen=True)
class Verified:
    vermagic: str | None
    modinfo: dict[str, str]


def modinfo(elf: ELFFile) -> dict[str, str]:
    section = elf.get_section_by_name(".modinfo")
    if section is None:
        return {}
    out: dict[str, str] = {}
    for entry in section.data().split(b"\0"):
        if b"=" in entry:
            key, _, value = entry.decode(errors="replace").partition("=")
            out.setdefault(key, value)
    return out


@_only_verification_errors
def verify(path: Path, kind: Kind, *, name: str, kernel_release: str, architecture: str) -> Verified:
    """Raise :class:`VerificationError` saying what is wrong, or return what was read."""
    if path.is_symlink():  # the build container made it: it may point at a host file
        raise VerificationError(f"{path.name} is a symbolic link, not the built file")
    if not path.is_file():
        raise VerificationError(f"the build left no {path.name}")
    try:
        with path.open("rb") as fh:
            elf = ELFFile(fh)
            if elf["e_type"] != "ET_REL":
                raise VerificationError(f"{path.name} is {elf['e_type']}, not a relocatable object")
            machine = elf["e_machine"]
            if kind is Kind.ebpf:
                if machine != "EM_BPF":
                    raise VerificationError(f"{path.name} is for {machine}, not EM_BPF")
                return Verified(None, {})
            expected = MACHINES.get(architecture)
            if expected and machine != expected:
                raise VerificationError(f"{path.name} is for {machine}, not {expected} ({architecture})")
            info = modinfo(elf)
            if elf.get_section_by_name(".gnu.linkonce.this_module") is None:
                raise VerificationError(f"{path.name} has no .gnu.linkonce.this_module: not a kernel module")
    except ELFError as exc:
        raise VerificationError(f"{path.name} is not a valid ELF file: {exc}") from None
    vermagic = info.get("vermagic")
    if not vermagic:
        raise VerificationError(f"{path.name} has no vermagic in .modinfo")
    if vermagic.split(" ")[0] != kernel_release:
        raise VerificationError(f"vermagic {vermagic!r} does not begin with the headers' release "
                                f"{kernel_release!r}")
    if info.get("name") != name:
        raise VerificationError(f".modinfo name is {info.get('name')!r}, expected {name!r}")
    return Verified(vermagic, info)
