"""The verifier: each rejection with its message, and mutated ELF files that must only ever fail cleanly.

The objects are real: ``gcc -c`` of a small C file that carries a ``.modinfo`` and a
``.gnu.linkonce.this_module`` section like a kernel module does (what the verifier reads).
"""

from __future__ import annotations

import random
import struct
import subprocess
import time
from pathlib import Path

import pytest

from repogen.model import Kind
from repogen.verify import VerificationError, verify

RELEASE = "6.1.0-9-amd64"
NAME = "hello_repogen"


def _object(tmp_path: Path, modinfo: str | None = f"name={NAME}\\0vermagic={RELEASE} SMP mod_unload modversions ",
            this_module: bool = True, file_name: str = "hello.ko") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = tmp_path / (file_name + ".c")
    text = "int hello_value = 42;\n"
    if modinfo is not None:
        text += f'static const char modinfo[] __attribute__((section(".modinfo"), used)) = "{modinfo}";\n'
    if this_module:
        text += 'struct module { int x; } __this_module __attribute__((section(".gnu.linkonce.this_module"))) = {1};\n'
    source.write_text(text)
    out = tmp_path / file_name
    subprocess.run(["gcc", "-c", "-O0", "-o", str(out), str(source)], check=True, capture_output=True, timeout=60)
    return out


def _check(path: Path, kind: Kind = Kind.kmod, *, name: str = NAME, release: str = RELEASE,
           architecture: str = "x86_64") -> object:
    return verify(path, kind, name=name, kernel_release=release, architecture=architecture)


def _patch(path: Path, offset: int, fmt: str, value: int) -> Path:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _object(tmp_path_factory.mktemp("elf"))


def test_a_good_module_passes(good: Path) -> None:
    info = _check(good)
    assert info.vermagic.startswith(RELEASE + " ")  # type: ignore[attr-defined]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda p: _patch(p, 16, "<H", 2), "is ET_EXEC, not a relocatable object"),
    (lambda p: _patch(p, 18, "<H", 183), "is for EM_AARCH64, not EM_X86_64 (x86_64)"),
    (lambda p: p.write_text("just text\n") or p, "is not a valid ELF file"),
    (lambda p: p.write_bytes(b"") or p, "is not a valid ELF file"),
    (lambda p: p.write_bytes(p.read_bytes()[:40]) or p, "is not a valid ELF file"),
    (lambda p: p.unlink() or p, "the build left no hello.ko"),
    (lambda p: (p.unlink(), p.symlink_to("/etc/hostname")) and p, "is a symbolic link"),
])
def test_rejections(good: Path, tmp_path: Path, mutate: object, message: str) -> None:
    path = tmp_path / "hello.ko"
    path.write_bytes(good.read_bytes())
    mutate(path)  # type: ignore[operator]
    with pytest.raises(VerificationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _check(path)


def test_rejections_of_module_contents(good: Path, tmp_path: Path) -> None:
    cases = {
        "no-modinfo": (_object(tmp_path / "a", modinfo=None), {}, "has no vermagic in .modinfo"),
        "no-vermagic": (_object(tmp_path / "b", modinfo=f"name={NAME}"), {}, "has no vermagic in .modinfo"),
        "no-this-module": (_object(tmp_path / "c", this_module=False), {}, "no .gnu.linkonce.this_module"),
        "wrong-release": (good, {"release": "6.1.0-10-amd64"}, "does not begin with the headers' release"),
        "release-prefix": (good, {"release": "6.1.0-9"}, "does not begin with the headers' release"),
        "wrong-name": (good, {"name": "falco"}, ".modinfo name is 'hello_repogen', expected 'falco'"),
        "wrong-arch": (good, {"architecture": "aarch64"}, "not EM_AARCH64 (aarch64)"),
        "kmod-as-probe": (good, {"kind": Kind.ebpf}, "is for EM_X86_64, not EM_BPF"),
    }
    for case, (path, options, message) in cases.items():
        kind = options.pop("kind", Kind.kmod)
        with pytest.raises(VerificationError) as raised:
            _check(path, kind, **options)  # type: ignore[arg-type]
        assert message in str(raised.value), (case, str(raised.value))


def _probe(tmp_path: Path, sections: str) -> Path:
    """An object with the sections of a probe, its machine patched to EM_BPF."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = tmp_path / "probe.c"
    source.write_text(sections)
    out = tmp_path / "probe.o"
    subprocess.run(["gcc", "-c", "-O0", "-o", str(out), str(source)], check=True, capture_output=True, timeout=60)
    return _patch(out, 18, "<H", 247)  # EM_BPF


def test_a_probe_is_an_elf_for_bpf_with_a_gpl_license_built_for_its_kernel(tmp_path: Path) -> None:
    license_gpl = 'char l[] __attribute__((section("license"), used)) = "Dual MIT/GPL";\n'
    # Falco's probe records the release it was built for (UTS_RELEASE) in its kernel_version section.
    release = f'char k[] __attribute__((section("kernel_version"), used)) = "{RELEASE}";\n'
    probe = _probe(tmp_path / "ok", license_gpl + release)
    info = _check(probe, Kind.ebpf)
    assert info.vermagic is None and info.kernel_version == RELEASE  # type: ignore[attr-defined]
    with pytest.raises(VerificationError, match=r"built for kernel '6\.1\.0-9-amd64', not the headers' '6\.1\.0-10"):
        _check(probe, Kind.ebpf, release="6.1.0-10-amd64")
    with pytest.raises(VerificationError, match="no GPL-compatible license section"):
        _check(_probe(tmp_path / "nolicense", release), Kind.ebpf)
    # A 4-byte LINUX_VERSION_CODE (what many probes carry) says nothing exact: accepted.
    code = 'unsigned int k __attribute__((section("kernel_version"), used)) = 0x060100;\n'
    assert _check(_probe(tmp_path / "code", license_gpl + code), Kind.ebpf).kernel_version is None  # type: ignore[attr-defined]


def _mutations(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    how = rng.randrange(5)
    if how == 0:  # flip a few bytes anywhere
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif how == 1:  # cut it short
        del out[rng.randrange(len(out)):]
    elif how == 2:  # an ELF header field to an extreme
        offset, size = rng.choice([(32, 8), (40, 8), (58, 2), (60, 2), (62, 2), (4, 1), (5, 1)])
        value = rng.choice([0, 1, 0xFF, 0xFFFF, 0xFFFFFFFF, (1 << 63) - 1]) & ((1 << 8 * size) - 1)
        out[offset:offset + size] = value.to_bytes(size, "little")
    else:  # a section header field (name, type, offset, size, link, info, alignment, entsize) to an extreme
        shoff, = struct.unpack_from("<Q", data, 40)
        shnum, = struct.unpack_from("<H", data, 60)
        section = shoff + 64 * rng.randrange(max(shnum, 1))
        offset, size = rng.choice([(0, 4), (4, 4), (24, 8), (32, 8), (40, 4), (44, 4), (48, 8), (56, 8)])
        value = rng.choice([0, 0xFFFFFFFF, len(data) - 1, len(data) + 1, 1 << 40]) & ((1 << 8 * size) - 1)
        if section + offset + size <= len(out):
            out[section + offset:section + offset + size] = value.to_bytes(size, "little")
    return bytes(out)


def test_fuzz_mutated_elf_only_ever_fails_cleanly(good: Path, tmp_path: Path) -> None:
    """Seeded, bounded in count and time: every outcome is a pass or a VerificationError."""
    rng = random.Random(20261123)
    data = good.read_bytes()
    path = tmp_path / "hello.ko"
    outcomes = {"passed": 0, "refused": 0}
    deadline = time.monotonic() + 60
    for _ in range(1500):
        if time.monotonic() > deadline:
            break
        path.write_bytes(_mutations(data, rng))
        try:
            _check(path)
            outcomes["passed"] += 1
        except VerificationError as exc:
            assert str(exc), "a refusal without a message"
            outcomes["refused"] += 1
    assert outcomes["refused"] > 500, outcomes
