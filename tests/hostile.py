"""Hostile archives for tests: the same list of members as a tarball, a ``.deb`` or an ``.rpm``.

Tarballs and ``.deb`` data members are written with :mod:`tarfile`, which stores any name, link or
device as given. An ``.rpm`` is built by the real ``rpmbuild`` (uncompressed payload) with each member
at a harmless placeholder path of the same length, then the placeholders in the cpio payload are
replaced by the hostile names and the package's digests recomputed, so ``rpmkeys --checksig`` still
passes and only the member names are hostile.
"""

from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    kind: str  # "file" | "dir" | "symlink" | "hardlink" | "chardev" | "fifo"
    name: str
    data: bytes = b""
    target: str = ""  # symlink target or hard link name


def _tarinfo(entry: Entry) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(entry.name)
    info.mtime = int(time.time())
    info.mode = 0o644
    data = None
    if entry.kind == "file":
        info.size = len(entry.data)
        data = entry.data
    elif entry.kind == "dir":
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    elif entry.kind == "symlink":
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
    elif entry.kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, entry.target
    elif entry.kind == "chardev":
        info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    elif entry.kind == "fifo":
        info.type = tarfile.FIFOTYPE
    else:
        raise ValueError(entry.kind)
    return info, data


def tar_bytes(entries: list[Entry], compression: str = "gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}" if compression else "w") as tar:
        for entry in entries:
            info, data = _tarinfo(entry)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def make_tarball(path: Path, entries: list[Entry], compression: str = "gz") -> Path:
    path.write_bytes(tar_bytes(entries, compression))
    return path


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{int(time.time()):<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}`\n".encode()
    assert len(header) == 60
    return header + data + (b"\n" if len(data) % 2 else b"")


def make_deb(path: Path, entries: list[Entry], name: str = "linux-headers-hostile") -> Path:
    """A .deb (ar: debian-binary, control.tar.gz, data.tar.xz) whose data member holds ``entries``."""
    control = (f"Package: {name}\nVersion: 1.0\nArchitecture: amd64\nMaintainer: tests <t@example.invalid>\n"
               "Description: hostile test package\n").encode()
    control_tar = tar_bytes([Entry("file", "./control", control)], "gz")
    path.write_bytes(b"!<arch>\n" + _ar_member("debian-binary", b"2.0\n")
                     + _ar_member("control.tar.gz", control_tar) + _ar_member("data.tar.xz", tar_bytes(entries, "xz")))
    return path


# -- rpm ---------------------------------------------------------------------------------------------
def _cpio_name(name: str) -> str:
    return name if name.startswith(("/", "..")) else "./" + name


def _placeholder(index: int, length: int) -> str:
    """A buildable relative path (rpmbuild stores it as ``./<path>``) of ``length`` characters."""
    assert length >= 5, length
    chars = ["/" if j % 201 == 200 and j < length - 1 else "q" for j in range(length)]
    return f"p{index:03d}" + "".join(chars[4:])


def _header_end(data: bytes, start: int, pad: bool) -> int:
    index_count, data_size = struct.unpack(">II", data[start + 8:start + 16])
    end = start + 16 + 16 * index_count + data_size
    return end + (-end % 8 if pad else 0)


def _patch_payload(rpm: Path, replacements: dict[bytes, bytes]) -> None:
    """Replace byte strings of equal length in an uncompressed payload and fix every digest over it."""
    data = rpm.read_bytes()
    signature_end = _header_end(data, 96, pad=True)
    header_end = _header_end(data, signature_end, pad=False)
    signature, header, payload = data[96:signature_end], data[signature_end:header_end], data[header_end:]
    new_payload = payload
    for old, new in replacements.items():
        assert len(old) == len(new) and new_payload.count(old) == 1, old
        new_payload = new_payload.replace(old, new)
    new_header = header.replace(hashlib.sha256(payload).hexdigest().encode(),
                                hashlib.sha256(new_payload).hexdigest().encode())
    new_signature = signature
    for algorithm in ("sha1", "sha256"):
        new_signature = new_signature.replace(hashlib.new(algorithm, header).hexdigest().encode(),
                                              hashlib.new(algorithm, new_header).hexdigest().encode())
    new_signature = new_signature.replace(hashlib.md5(header + payload).digest(),
                                          hashlib.md5(new_header + new_payload).digest())
    rpm.write_bytes(data[:96] + new_signature + new_header + new_payload)


def make_rpm(path: Path, entries: list[Entry], name: str = "kernel-devel-hostile") -> Path:
    """An .rpm whose cpio payload holds ``entries`` (hard links have no names in cpio: not allowed)."""
    top = path.parent / f".rpmbuild-{path.stem}"
    (top / "SPECS").mkdir(parents=True, exist_ok=True)
    install, files, replacements = [], [], {}
    for i, entry in enumerate(entries):
        real = _cpio_name(entry.name)
        placeholder = _placeholder(i, len(real) - 2)
        replacements[f"./{placeholder}\0".encode()] = f"{real}\0".encode()
        parent = placeholder.rpartition("/")[0]
        if parent:
            install.append(f"mkdir -p %{{buildroot}}/{parent}")
        if entry.kind == "file":
            install.append(f"printf %s '{entry.data.decode()}' > %{{buildroot}}/{placeholder}")
            files.append(f"/{placeholder}")
        elif entry.kind == "dir":
            install.append(f"mkdir -p %{{buildroot}}/{placeholder}")
            files.append(f"%dir /{placeholder}")
        elif entry.kind == "symlink":
            install.append(f"ln -s '{entry.target}' %{{buildroot}}/{placeholder}")
            files.append(f"/{placeholder}")
        elif entry.kind == "chardev":
            files.append(f"%dev(c, 1, 3) /{placeholder}")
        elif entry.kind == "fifo":
            install.append(f"mkfifo %{{buildroot}}/{placeholder}")
            files.append(f"/{placeholder}")
        else:
            raise ValueError(f"{entry.kind} cannot be expressed in an rpm's cpio payload")
    spec = top / "SPECS" / f"{name}.spec"
    spec.write_text(f"Name: {name}\nVersion: 1.0\nRelease: 1\nSummary: hostile\nLicense: MIT\nBuildArch: noarch\n"
                    "%description\nhostile test package\n%install\n" + "\n".join(install)
                    + "\n%files\n" + "\n".join(files) + "\n")
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}", "--define", "_build_id_links none",
                    "--define", "_binary_payload w.ufdio", str(spec)], check=True, capture_output=True, timeout=120)
    built = next((top / "RPMS").rglob("*.rpm"))
    _patch_payload(built, replacements)
    built.replace(path)
    return path
