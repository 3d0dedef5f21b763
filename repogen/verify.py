"""Check every artifact before it is accepted: a wrong or broken file is a failed build.

- kernel module: an ELF relocatable for the kernel's machine whose ``.modinfo`` says the expected
  name and a vermagic that begins with the release read from the headers themselves, and whose
  symbol versions (``__versions``) match the kernel's ``Module.symvers`` CRC for CRC: the check that
  catches a module built against the headers of another flavour or ABI ("disagrees about version of
  symbol module_layout"), which the kernel would refuse to load;
- eBPF probe: an ELF relocatable for machine BPF with a license, and, where it records one (Falco's
  legacy probe does, in its ``kernel_version`` section), the kernel release it was built for.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from repogen import arch
from repogen.model import Kind

#: struct modversion_info on 64-bit kernels: unsigned long crc; char name[64 - sizeof(unsigned long)].
_MODVERSION_64 = 64


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
    symbols_checked: int = 0
    kernel_version: str | None = None  # eBPF probe: the release its kernel_version section names

    def describe(self) -> str:
        if self.vermagic is None:
            return "ELF for machine BPF" + (f", kernel_version {self.kernel_version!r}" if self.kernel_version else "")
        return (f"vermagic {self.vermagic!r}, name {self.modinfo.get('name')!r}, "
                f"{self.symbols_checked} symbol versions match Module.symvers")


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


def module_versions(elf: ELFFile) -> dict[str, int]:
    """The ``__versions`` section: symbol -> the CRC the module was built against."""
    section = elf.get_section_by_name("__versions")
    if section is None:
        return {}
    data = section.data()
    little = elf.little_endian
    out: dict[str, int] = {}
    for offset in range(0, len(data) - _MODVERSION_64 + 1, _MODVERSION_64):
        crc = struct.unpack_from("<Q" if little else ">Q", data, offset)[0] & 0xFFFFFFFF
        name = data[offset + 8:offset + _MODVERSION_64].split(b"\0", 1)[0].decode(errors="replace")
        if name:
            out[name] = crc
    return out


@functools.lru_cache(maxsize=64)
def read_symvers(path: Path) -> dict[str, int]:
    """``Module.symvers``: ``0xCRC<TAB>symbol<TAB>module<TAB>export type[<TAB>namespace]`` per line."""
    out: dict[str, int] = {}
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.split("\t", 2)
            if len(parts) >= 2 and parts[0].startswith("0x"):
                try:
                    out[parts[1]] = int(parts[0], 16) & 0xFFFFFFFF
                except ValueError:
                    continue
    return out


def check_symbol_versions(versions: dict[str, int], symvers: dict[str, int], name: str) -> int:
    """Every symbol the module was built against must carry the kernel's CRC; returns how many."""
    wrong = [(symbol, crc, symvers[symbol]) for symbol, crc in versions.items()
             if symbol in symvers and symvers[symbol] != crc]
    unknown = sorted(symbol for symbol in versions if symbol not in symvers)
    if wrong:
        symbol, crc, expected = wrong[0]
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise VerificationError(f"{name} disagrees about version of symbol {symbol}: built against CRC "
                                f"0x{crc:08x}, the kernel's Module.symvers has 0x{expected:08x}{more}; "
                                "were the headers of another flavour or ABI used?")
    if unknown:
        raise VerificationError(f"{name} needs symbols the kernel does not export: {', '.join(unknown[:5])}"
                                + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""))
    return len(versions)


@_only_verification_errors
def verify(path: Path, kind: Kind, *, name: str, kernel_release: str, architecture: str,
           symvers: Path | None = None) -> Verified:
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
                return _verify_probe(elf, path.name, kernel_release)
            expected = arch.ARCHES[architecture].elf_machine if architecture in arch.ARCHES else None
            if expected and machine != expected:
                raise VerificationError(f"{path.name} is for {machine}, not {expected} ({architecture})")
            info = modinfo(elf)
            if elf.get_section_by_name(".gnu.linkonce.this_module") is None:
                raise VerificationError(f"{path.name} has no .gnu.linkonce.this_module: not a kernel module")
            versions = module_versions(elf)
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
    checked = 0
    if symvers is not None and "modversions" in vermagic.split():
        if not versions:
            raise VerificationError(f"{path.name} has no __versions section, but the kernel uses modversions")
        checked = check_symbol_versions(versions, read_symvers(symvers), path.name)
    return Verified(vermagic, info, checked)


def _verify_probe(elf: ELFFile, name: str, kernel_release: str) -> Verified:
    license_section = elf.get_section_by_name("license")
    if license_section is None or b"GPL" not in license_section.data():
        raise VerificationError(f"{name} has no GPL-compatible license section: the kernel would refuse "
                                "its GPL-only helpers")
    version_section = elf.get_section_by_name("kernel_version")
    recorded = None
    # Falco's probe records UTS_RELEASE as a string; a 4-byte LINUX_VERSION_CODE says nothing exact.
    if version_section is not None and version_section.data_size != 4:
        recorded = version_section.data().split(b"\0", 1)[0].decode(errors="replace")
        if recorded != kernel_release:
            raise VerificationError(f"{name} was built for kernel {recorded!r}, not the headers' "
                                    f"{kernel_release!r}")
    return Verified(None, {}, 0, recorded)
