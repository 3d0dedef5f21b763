"""The boot check: boot the very kernel a module was built for under QEMU and load the module in it.

The kernel image package named by a kernel's ``image:`` is downloaded once (the download cache) and
its ``vmlinuz`` copied out once per image (``cache/boot/<digest>/``). Each check boots it with QEMU
(TCG, no KVM needed) into a tiny initramfs written here: the host's static busybox, an ``/init``
script, and the module; nothing else from the host. ``/init`` runs ``insmod`` and prints what it
saw on the serial console between ``@@repogen`` markers; the kernel's own words (``disagrees about
version of symbol module_layout``, ``Unknown symbol``) are the reason a refused module gets.

Falco's legacy eBPF probe declares its maps in a ``maps`` section of ``struct bpf_map_def``, which
libbpf >= 1.0 refuses to open ("legacy map definitions in 'maps' section are not supported"), so
bookworm's and trixie's ``bpftool`` cannot load it; Falco's own loader is libscap. Every probe gets
:func:`check_probe`, an ELF check of what that loader needs; and with ``REPOGEN_BPFTOOL`` naming an
older bpftool (Debian 11's 5.10, libbpf 0.3, which reads legacy maps), the probe is also loaded in
the VM with ``bpftool prog loadall``, so every program goes through the kernel's own verifier.
"""

from __future__ import annotations

import contextlib
import json
import lzma
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from repogen import distro, recipes  # (elftools is imported where it is used: `plan` reads summaries only)
from repogen.distro import PackageFormat
from repogen.errors import FetchError, RepogenError
from repogen.fetch import Download
from repogen.home import Home
from repogen.model import Job, Kind

#: Bump when the VM, the init script or the verdict rules change: older results are checked again.
BOOT_FORMAT = 1
DEFAULT_TIMEOUT = 120.0
MARK = "@@repogen"
MAX_VMLINUZ = 256 << 20
MAX_CONSOLE = 4 << 20
#: The probe check boots no image: its results are kept under this key instead of an image digest.
PROBE_KEY = "elf"


class BootStatus(StrEnum):
    loaded = "loaded"            # insmod succeeded in the VM (and the device appeared, where expected)
    refused = "refused"          # insmod failed, or the kernel crashed: the kernel's reason is given
    timed_out = "timed out"      # the VM did not finish in time (killed)
    qemu_failed = "qemu failed"  # QEMU could not boot the image at all
    checked = "checked"          # eBPF probe: ELF-level check passed (not loaded, see the module doc)
    not_checked = "not checked"  # no image, an architecture without boot support, or no artifact
    error = "error"              # the check itself could not run (image download or unpack failed)

    @property
    def fails_build(self) -> bool:
        """The module's fault: the build counts as failed (an unreachable image does not)."""
        return self in (BootStatus.refused, BootStatus.timed_out, BootStatus.qemu_failed)

    @property
    def passed(self) -> bool:
        return self in (BootStatus.loaded, BootStatus.checked)


@dataclass(frozen=True)
class BootResult:
    status: BootStatus
    seconds: float = 0.0
    kernel: str | None = None  # the booted kernel's `uname -r`
    reason: str | None = None
    console: str | None = None  # where the VM's console output was kept
    cached: bool = False

    def summary(self) -> dict[str, object]:
        """What ``plan --json`` and ``index.json`` show."""
        out: dict[str, object] = {"status": self.status.value}
        if self.seconds:
            out["seconds"] = round(self.seconds, 1)
        if self.kernel:
            out["kernel"] = self.kernel
        if self.reason:
            out["reason"] = self.reason
        return out

    def describe(self) -> str:
        text = self.status.value
        if self.seconds and self.status is not BootStatus.not_checked:
            text += f" in {self.seconds:.1f}s"
        return f"{text}: {self.reason}" if self.reason else text


# -- the kernel image -----------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelImage:
    vmlinuz: Path
    release: str  # from the image's file name, /boot/vmlinuz-<release>
    digest: str   # sha256 of the image package
    boot_file: Path | None = None  # what QEMU boots: the PVH vmlinux when there is one, else vmlinuz

    @property
    def kernel(self) -> Path:
        return self.boot_file or self.vmlinuz


MAX_VMLINUX = 512 << 20
XEN_ELFNOTE_PHYS32_ENTRY = 18


def _payload(bzimage: bytes) -> bytes | None:
    """The compressed kernel inside an x86 bzImage (its setup header says where), or None."""
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        return None
    setup_sectors = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sectors + 1) * 512 + offset
    return bzimage[start:start + length] if length and start + length <= len(bzimage) else None


def _decompress(payload: bytes) -> bytes | None:
    if payload.startswith(b"\xfd7zXZ\0"):
        xz = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        data = xz.decompress(payload, max_length=MAX_VMLINUX)
        return data if xz.eof else None
    if payload.startswith(b"\x1f\x8b"):
        gz = zlib.decompressobj(16 + zlib.MAX_WBITS)
        data = gz.decompress(payload, MAX_VMLINUX)
        return data if gz.eof else None
    return None  # zstd, lz4, lzo: QEMU boots the bzImage itself


def _has_pvh_entry(path: Path) -> bool:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.segments import NoteSegment

    try:
        with path.open("rb") as fh:
            elf = ELFFile(fh)
            if elf["e_machine"] != "EM_X86_64":
                return False
            for segment in elf.iter_segments():
                if isinstance(segment, NoteSegment):
                    for note in segment.iter_notes():
                        if note["n_name"] == "Xen" and note["n_type"] == XEN_ELFNOTE_PHYS32_ENTRY:
                            return True
    except (ELFError, OSError, ValueError):
        return False
    return False


def pvh_vmlinux(vmlinuz: Path, dest: Path) -> bool:
    """Write the uncompressed kernel of an x86 bzImage to ``dest`` when QEMU can boot it directly.

    A kernel with a PVH entry (CONFIG_PVH, Debian's) boots from its ELF without the firmware and
    without decompressing itself under TCG: about half the CPU time of a boot check.
    """
    payload = _payload(vmlinuz.read_bytes())
    try:
        data = _decompress(payload) if payload else None
    except (lzma.LZMAError, zlib.error):
        data = None
    if not data or not data.startswith(b"\x7fELF"):
        return False
    dest.write_bytes(data)
    if _has_pvh_entry(dest):
        return True
    dest.unlink()
    return False


_VMLINUZ = re.compile(r"(?:\./)?boot/vmlinuz-([A-Za-z0-9._+~-]+)")


class KernelImageCache:
    """``<root>/<image sha256>/vmlinuz``: each image package read once, whatever asks.

    Only the ``vmlinuz`` member is read, copied to a fixed name: no path from the archive is ever
    used, so a hostile package cannot write outside the cache (and the 400 MB of modules are skipped).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.unpacked = 0

    def get(self, download: Download) -> KernelImage:
        with self._guard:
            lock = self._locks.setdefault(download.sha256, threading.Lock())
        with lock:
            final = self.root / download.sha256
            try:
                facts = json.loads((final / ".complete").read_text())
            except (OSError, ValueError):
                facts = None
            if not isinstance(facts, dict) or "release" not in facts:
                facts = self._unpack(download, final)
            boot_file = final / facts["boot"] if facts.get("boot") else None
            return KernelImage(final / "vmlinuz", str(facts["release"]), download.sha256, boot_file)

    def _unpack(self, download: Download, final: Path) -> dict[str, str | None]:
        from debian import arfile, debfile

        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{download.sha256[:16]}.", dir=self.root))
        try:
            release = None
            try:
                data = debfile.DebFile(str(download.path)).data.tgz()
                for member in data:
                    m = _VMLINUZ.fullmatch(member.name)
                    if m and member.isfile():
                        if member.size > MAX_VMLINUZ:
                            raise FetchError(f"{download.url}: {member.name} is {member.size} bytes: not a kernel")
                        src = data.extractfile(member)
                        assert src is not None
                        with src, (staging / "vmlinuz").open("wb") as out:
                            shutil.copyfileobj(src, out)
                        release = m.group(1)
                    elif release and not member.name.lstrip("./").startswith("boot"):
                        break  # dpkg-deb sorts members: boot/ is done
            except (debfile.DebError, arfile.ArError, tarfile.TarError, EOFError, OSError, ValueError,
                    KeyError) as exc:
                raise FetchError(f"{download.url}: corrupt or truncated .deb: {exc or type(exc).__name__}",
                                 url=download.url) from None
            if release is None:
                raise FetchError(f"{download.url}: no boot/vmlinuz-* in the package: is it a linux-image package?",
                                 url=download.url)
            facts = {"release": release,
                     "boot": "vmlinux" if pvh_vmlinux(staging / "vmlinuz", staging / "vmlinux") else None}
            (staging / ".complete").write_text(json.dumps(facts))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
            self.unpacked += 1
            return facts
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# -- the initramfs ----------------------------------------------------------------------------------
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

#: What both /init scripts start with: busybox's applets, and the kernel's proc, sys and dev.
_INIT_START = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
"""

INIT = _INIT_START + """echo "@@repogen uname $(uname -r)"
dmesg -c >/dev/null
echo "@@repogen insmod"
if insmod /{name}.ko 2>/tmp/insmod.err; then echo "@@repogen insmod-ok"
else echo "@@repogen insmod-failed $(cat /tmp/insmod.err)"; fi
dmesg | while read -r line; do echo "@@repogen dmesg $line"; done
[ -d /sys/module/{module_dir} ] && echo "@@repogen sysmodule"
for d in /dev/{name}* /sys/class/{name}; do [ -e "$d" ] && echo "@@repogen device $d"; done
echo "@@repogen end"
reboot -f
"""


class Cpio:
    """A ``newc`` cpio archive (what the kernel unpacks as initramfs), written in memory.

    Device nodes need no privilege here (``/dev/console``, for init's first output); times and
    owners are fixed, so the same inputs make the same archive.
    """

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.inode = 0

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self.inode += 1
        encoded = name.encode() + b"\0"
        fields = (self.inode, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.parts += [header, encoded, b"\0" * (-(len(header) + len(encoded)) % 4), data, b"\0" * (-len(data) % 4)]

    def directory(self, name: str) -> None:
        self.add(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.add(name, stat.S_IFREG | mode, data)

    def getvalue(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return b"".join(self.parts)


PROBE_INIT = _INIT_START + """mkdir -p /sys/fs/bpf /tmp
mount -t bpf bpf /sys/fs/bpf
echo "@@repogen uname $(uname -r)"
echo "@@repogen insmod"
if /bpftool/bpftool prog loadall /{name}.o /sys/fs/bpf/probe >/tmp/bpftool.out 2>&1; then echo "@@repogen insmod-ok"
else echo "@@repogen insmod-failed bpftool prog loadall failed"; fi
grep -v 'elf: skipping' /tmp/bpftool.out | tail -n 40 | while read -r line; do echo "@@repogen dmesg $line"; done
echo "@@repogen programs $(ls /sys/fs/bpf/probe 2>/dev/null | wc -l)"
echo "@@repogen end"
reboot -f
"""


def initramfs(busybox: bytes, module: bytes, name: str, *, bpftool: dict[str, bytes] | None = None) -> bytes:
    """The VM's whole userland: busybox, /init, the module (or, with ``bpftool``, the probe and the
    bpftool that loads it, with its shared libraries at their paths)."""
    if not _SAFE_NAME.fullmatch(name):
        raise RepogenError(f"module name {name!r} cannot be boot-checked (letters, digits, _ and - only)")
    archive = Cpio()
    for directory in ("bin", "dev", "proc", "sys", "tmp"):
        archive.directory(directory)
    archive.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    archive.file("bin/busybox", busybox, 0o755)
    if bpftool is None:
        archive.file("init", INIT.format(name=name, module_dir=name.replace("-", "_")).encode(), 0o755)
        archive.file(f"{name}.ko", module)
        return archive.getvalue()
    archive.file("init", PROBE_INIT.format(name=name).encode(), 0o755)
    archive.file(f"{name}.o", module)
    made = {"bin", "dev", "proc", "sys", "tmp"}
    for path, data in sorted(bpftool.items()):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            directory = "/".join(parts[:i])
            if directory not in made:
                archive.directory(directory)
                made.add(directory)
        archive.file("/".join(parts), data, 0o755)
    return archive.getvalue()


def bpftool_files(bpftool: Path) -> dict[str, bytes]:
    """A bpftool and the shared libraries it needs (as ``ldd`` names them), for the VM.

    It must be one whose libbpf still reads the legacy ``maps`` section (libbpf < 1.0, e.g. Debian
    11's bpftool 5.10): Falco's legacy probe is written that way, and newer bpftool refuses to open it.
    """
    try:
        files = {"/bpftool/bpftool": bpftool.read_bytes()}
        ldd = subprocess.run(["ldd", str(bpftool)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RepogenError(f"REPOGEN_BPFTOOL={bpftool}: {exc}") from None
    for line in ldd.stdout.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            try:
                files[m.group(1)] = Path(m.group(1)).read_bytes()
            except OSError as exc:
                raise RepogenError(f"REPOGEN_BPFTOOL={bpftool}: {m.group(1)}: {exc.strerror}") from None
    if ldd.returncode and "not a dynamic executable" not in ldd.stderr + ldd.stdout:
        raise RepogenError(f"REPOGEN_BPFTOOL={bpftool}: ldd failed: {ldd.stderr.strip()}")
    return files


# -- QEMU -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Machine:
    qemu: str
    args: tuple[str, ...]
    console: str
    package: str
    elf_machine: str
    busybox_env: str
    default_busybox: str | None  # the host's own, where the host is this architecture


#: Where the aarch64 VM's static busybox is looked for when REPOGEN_BUSYBOX_AARCH64 is not set
#: (``scripts/arm64_busybox.py``, run by ``scripts/setup.sh``, puts Debian's arm64 busybox-static there).
AARCH64_BUSYBOX = "/usr/local/lib/repogen/busybox-aarch64"

MACHINES = {
    "x86_64": Machine("qemu-system-x86_64", ("-accel", "tcg", "-m", "512", "-smp", "1"), "ttyS0",
                      "qemu-system-x86", "EM_X86_64", "REPOGEN_BUSYBOX", "/bin/busybox"),
    # cortex-a57 (ARMv8.0, what Debian's arm64 kernels need): -cpu max is 5x slower under TCG.
    "aarch64": Machine("qemu-system-aarch64", ("-M", "virt", "-cpu", "cortex-a57", "-accel", "tcg", "-m", "512",
                                               "-smp", "1"), "ttyAMA0", "qemu-system-arm", "EM_AARCH64",
                       "REPOGEN_BUSYBOX_AARCH64", AARCH64_BUSYBOX),
}

#: A bpftool whose libbpf reads legacy ``maps`` (< 1.0): with it, probes go through the verifier (x86_64).
BPFTOOL = os.environ.get("REPOGEN_BPFTOOL", "")


def busybox_for(architecture: str) -> bytes | None:
    """The static busybox the VM runs (the only program from outside it), None when none is set.

    x86_64: the host's (Debian: busybox-static) or ``REPOGEN_BUSYBOX``; aarch64:
    ``REPOGEN_BUSYBOX_AARCH64``, else :data:`AARCH64_BUSYBOX` when it is there (Debian's arm64
    busybox-static, installed by ``scripts/arm64_busybox.py``).
    """
    machine = MACHINES[architecture]
    configured = os.environ.get(machine.busybox_env)
    if not configured:
        configured = machine.default_busybox
        if architecture != "x86_64" and configured and not Path(configured).exists():
            return None  # not set up for this architecture: its modules report `not checked`
    if not configured:
        return None
    path = Path(configured)
    hint = (f"apt-get install busybox-static (or set {machine.busybox_env})" if architecture == "x86_64" else
            f"scripts/arm64_busybox.py installs Debian's (or set {machine.busybox_env})")
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        data = path.read_bytes()
        with path.open("rb") as fh:
            elf = ELFFile(fh)
            dynamic = any(seg["p_type"] == "PT_INTERP" for seg in elf.iter_segments())
            found = elf["e_machine"]
    except (OSError, ELFError) as exc:
        raise RepogenError(f"no usable busybox at {path}: {exc}", hint=hint) from None
    if dynamic or found != machine.elf_machine:
        raise RepogenError(f"{path} is {'dynamically linked' if dynamic else found}: the VM needs a static "
                           f"{architecture} busybox", hint=hint)
    return data


def host_busybox() -> bytes:
    data = busybox_for("x86_64")
    assert data is not None
    return data


def require_tools(architectures: Iterable[str]) -> None:
    """Fail once, before any VM, when QEMU for a needed architecture is missing."""
    for arch in sorted(set(architectures)):
        machine = MACHINES.get(arch)
        if machine and not shutil.which(machine.qemu):
            raise RepogenError(f"the boot check needs {machine.qemu}", hint=f"apt-get install {machine.package}")


class _Running:
    """Every QEMU process started, so an interrupt or a timeout kills them all (none left behind)."""

    def __init__(self) -> None:
        self.procs: set[subprocess.Popen[bytes]] = set()
        self.lock = threading.Lock()
        self.cancelled = threading.Event()

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def kill_all(self) -> None:
        self.cancelled.set()
        with self.lock:
            procs = list(self.procs)
        for proc in procs:
            self.kill(proc)


RUNNING = _Running()


def boot(image: KernelImage, module: Path, *, name: str, architecture: str, timeout: float, console: Path,
         expect_device: bool = False, busybox: bytes | None = None,
         bpftool: dict[str, bytes] | None = None) -> BootResult:
    """Boot ``image`` with ``module`` in its initramfs, ``insmod`` it, and read the verdict.

    With ``bpftool`` (see :func:`bpftool_files`), ``module`` is an eBPF probe, loaded through the
    kernel's verifier with ``bpftool prog loadall``.
    """
    machine = MACHINES.get(architecture)
    if machine is None:
        return BootResult(BootStatus.not_checked, reason=f"no boot support for {architecture}")
    started = time.monotonic()
    console.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="repogen-boot-") as work:
        initrd = Path(work) / "initramfs.cpio"
        busybox = busybox or busybox_for(architecture)
        if busybox is None:
            return BootResult(BootStatus.not_checked, reason=f"no {architecture} busybox: set {machine.busybox_env} "
                                                             f"(or run scripts/arm64_busybox.py)")
        initrd.write_bytes(initramfs(busybox, module.read_bytes(), name, bpftool=bpftool))
        console.unlink(missing_ok=True)
        command = [machine.qemu, *machine.args, "-nodefaults", "-no-user-config", "-display", "none",
                   "-no-reboot", "-serial", f"file:{console}", "-kernel", str(image.kernel), "-initrd", str(initrd),
                   # no_timer_check: on a busy host TCG may miss the IO-APIC timer test and panic at boot
                   "-append", f"console={machine.console} panic=-1 quiet rdinit=/init no_timer_check"]
        with (Path(work) / "qemu.err").open("w+b") as qemu_err:
            with RUNNING.lock:
                if RUNNING.cancelled.is_set():
                    return BootResult(BootStatus.not_checked, reason="interrupted")
                proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=qemu_err, stderr=qemu_err,
                                        start_new_session=True)
                RUNNING.procs.add(proc)
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                RUNNING.kill(proc)
                with RUNNING.lock:
                    RUNNING.procs.discard(proc)
            if RUNNING.cancelled.is_set():  # killed by an interrupt: no verdict to record
                return BootResult(BootStatus.not_checked, reason="interrupted")
            qemu_err.seek(0)
            qemu_message = qemu_err.read(4096).decode(errors="replace").strip()
    seconds = time.monotonic() - started
    try:
        with console.open("rb") as fh:
            text = fh.read(MAX_CONSOLE).decode(errors="replace")
    except OSError:
        text = ""
    result = probe_verdict(text) if bpftool is not None else verdict(text, name=name, expect_device=expect_device)
    if timed_out and result.status is not BootStatus.loaded:
        stage = "after insmod" if f"{MARK} insmod" in text else "before insmod"
        result = BootResult(BootStatus.timed_out, reason=f"no verdict within {timeout:g}s ({stage})",
                            kernel=result.kernel)
    elif proc.returncode and result.status is BootStatus.qemu_failed:
        result = replace(result, reason=f"{machine.qemu} exited {proc.returncode}: "
                                        f"{qemu_message.splitlines()[-1] if qemu_message else 'no message'}")
    return replace(result, seconds=seconds, console=str(console))


_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s*")
_CRASH = re.compile(r"Kernel panic|BUG: |Oops|general protection fault|Call Trace")


def verdict(console: str, *, name: str, expect_device: bool = False) -> BootResult:
    """Read the console of one boot: loaded, refused (with the kernel's reason), or no verdict."""
    lines = console.replace("\r", "").splitlines()
    marks: list[tuple[str, str]] = []
    for line in lines:
        at = line.find(MARK + " ")
        if at >= 0:
            word, _, rest = line[at + len(MARK) + 1:].partition(" ")
            marks.append((word, rest.strip()))
    kernel = next((rest for word, rest in marks if word == "uname"), None)
    dmesg = [_TIMESTAMP.sub("", rest) for word, rest in marks if word == "dmesg"]
    words = {word for word, _ in marks}
    module_dir = name.replace("-", "_")
    about = [d for d in dmesg if d.startswith((f"{name}:", f"{module_dir}:"))]
    if "insmod" not in words:
        crash = next((line.strip() for line in lines if _CRASH.search(line)), None)
        return BootResult(BootStatus.qemu_failed, kernel=kernel,
                          reason=f"the kernel did not reach /init{f': {crash}' if crash else ''}")
    if "end" not in words:
        crash = next((line.strip() for line in lines if _CRASH.search(line)), None)
        if crash:
            return BootResult(BootStatus.refused, kernel=kernel, reason=f"the kernel crashed on insmod: {crash}")
        return BootResult(BootStatus.qemu_failed, kernel=kernel, reason="the VM stopped before the check ended")
    failed = next((rest for word, rest in marks if word == "insmod-failed"), None)
    if failed is not None:
        insmod = failed.replace(f"/{name}.ko", f"{name}.ko")
        # dmesg was cleared just before insmod: every line is the kernel's answer to it
        kernel_says = list(dict.fromkeys(about or dmesg))[:3]
        reason = "; ".join(kernel_says) if kernel_says else insmod
        if kernel_says and insmod:
            reason += f" ({insmod})"
        return BootResult(BootStatus.refused, kernel=kernel, reason=reason or "insmod failed")
    if "sysmodule" not in words:
        return BootResult(BootStatus.refused, kernel=kernel, reason=f"insmod succeeded but /sys/module/{module_dir} "
                                                                     "is missing")
    devices = [rest for word, rest in marks if word == "device"]
    if expect_device and not devices:
        return BootResult(BootStatus.refused, kernel=kernel,
                          reason=f"loaded, but no /dev/{name}* nor /sys/class/{name} appeared"
                                 + (f" ({about[-1]})" if about else ""))
    detail = ", ".join([*about[:1], *devices])
    return BootResult(BootStatus.loaded, kernel=kernel, reason=detail or None)


def probe_verdict(console: str) -> BootResult:
    """Read the console of a probe boot: every program through the verifier, or bpftool's reason."""
    marks = [line[line.find(MARK + " ") + len(MARK) + 1:].partition(" ")
             for line in console.replace("\r", "").splitlines() if MARK + " " in line]
    words = {word for word, _, _ in marks}
    kernel = next((rest for word, _, rest in marks if word == "uname"), None)
    if "insmod" not in words or "end" not in words:
        return verdict(console, name="probe")  # no verdict: the same reading as for a module
    output = [rest.strip() for word, _, rest in marks if word == "dmesg" and rest.strip()]
    programs = next((rest.strip() for word, _, rest in marks if word == "programs"), "0")
    if "insmod-ok" in words and programs.isdigit() and int(programs) > 0:
        return BootResult(BootStatus.loaded, kernel=kernel,
                          reason=f"the kernel's verifier accepted {programs} programs (bpftool prog loadall)")
    # libbpf prints the verifier's log between BEGIN and END markers: its last line says why.
    end = next((i for i, line in enumerate(output) if "END LOG" in line), None)
    verifier = [line for line in output[:end] if not line.startswith(("processed ", "libbpf:", "verification time"))
                ] if end is not None else []
    failed = [line for line in output if "failed to load program" in line]
    useful = [line for line in output if "END LOG" not in line and "BEGIN DUMP" not in line]
    reason = "; ".join([*verifier[-1:], *failed[:1]]) or "; ".join(useful[-3:])
    return BootResult(BootStatus.refused, kernel=kernel, reason=reason or "bpftool prog loadall failed, saying nothing")


# -- the eBPF probe ---------------------------------------------------------------------------------
_PROGRAM_SECTION = re.compile(r"(raw_tracepoint|tracepoint|raw_tp|tp)/.+")
_VERSION_CODE = re.compile(rb"#define\s+LINUX_VERSION_CODE\s+(\d+)")


def check_probe(path: Path, *, kernel_release: str | None, version_code: int | None = None) -> BootResult:
    """What Falco's legacy-probe loader (libscap) needs from the ELF, checked for real.

    ``kernel_version`` must name the headers' release (Falco's probe.c stores UTS_RELEASE; a u32
    LINUX_VERSION_CODE is compared with the headers' own), ``license`` must be GPL-compatible (the
    kernel refuses GPL-only helpers otherwise), the ``maps`` section and at least one tracepoint or
    raw-tracepoint program section must be there.
    """
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    started = time.monotonic()
    problems: list[str] = []
    try:
        with path.open("rb") as fh:
            elf = ELFFile(fh)
            sections = {s.name: s for s in elf.iter_sections()}
            version = sections.get("kernel_version")
            if version is None:
                problems.append("no kernel_version section")
            else:
                data = version.data()
                if len(data) == 4:  # a u32 LINUX_VERSION_CODE (older probes), not a release string
                    found = struct.unpack("<I" if elf.little_endian else ">I", data)[0]
                    if version_code is None:
                        problems.append("kernel_version is a version code, and the headers' LINUX_VERSION_CODE "
                                        "is unknown")
                    elif found != version_code:
                        problems.append(f"kernel_version is {found:#x}, the headers' LINUX_VERSION_CODE "
                                        f"{version_code:#x}")
                else:
                    text = data.split(b"\0")[0].decode(errors="replace")
                    if kernel_release and text != kernel_release:
                        problems.append(f"kernel_version says {text!r}, the headers {kernel_release!r}")
            license_section = sections.get("license")
            license_text = license_section.data().split(b"\0")[0].decode(errors="replace") if license_section else ""
            if "GPL" not in license_text:
                problems.append(f"license section {'missing' if not license_section else repr(license_text)}: "
                                "not GPL-compatible")
            if "maps" not in sections:
                problems.append("no maps section")
            programs = [n for n in sections if _PROGRAM_SECTION.fullmatch(n) and sections[n]["sh_size"] > 0]
            if not programs:
                problems.append("no tracepoint or raw_tracepoint program section")
    except (OSError, ELFError) as exc:
        problems.append(f"not a readable ELF file: {exc}")
        programs = []
    seconds = time.monotonic() - started
    if problems:
        return BootResult(BootStatus.refused, seconds, reason="; ".join(problems))
    return BootResult(BootStatus.checked, seconds,
                      reason=f"ELF only (not loaded: legacy maps section, see docs): {len(programs)} programs")


def version_code(kernel_dir: Path) -> int | None:
    for rel in ("include/generated/uapi/linux/version.h", "include/linux/version.h"):
        path = kernel_dir / rel
        if path.is_file():
            m = _VERSION_CODE.search(path.read_bytes())
            if m:
                return int(m.group(1))
    return None


# -- checking built artifacts -----------------------------------------------------------------------
@dataclass(frozen=True)
class BootTarget:
    """A built artifact to check: the job, its build and the file in the store."""

    job: Job
    build_key: str
    artifact_sha256: str
    artifact: Path
    kernel_release: str | None  # the headers' release, recorded by the build
    log_path: str | None


def targets(home: Home, jobs: Iterable[Job]) -> list[BootTarget]:
    """The artifact publish would serve for each job (jobs never built successfully are left out)."""
    job_list = list(jobs)
    good = home.store.good_keys()
    keys = {j.job_id: good[j.job_id] for j in job_list if good.get(j.job_id)}
    records = home.store.builds([k for k in keys.values() if k])
    out = []
    for job in job_list:
        record = records.get(keys.get(job.job_id) or "")
        if record is None or record.status != "ok" or not record.artifact_sha256:
            continue
        out.append(BootTarget(job, record.build_key, record.artifact_sha256,
                              home.store.object_path(record.artifact_sha256), record.kernel_release, record.log_path))
    return out


def summaries(home: Home, jobs: Iterable[Job]) -> dict[str, BootResult]:
    """job_id -> the recorded check of the artifact publish would serve (for plan and publish).

    One query for all recorded checks; the builds are read only when there is any, so a matrix that
    never ran the boot check pays nothing.
    """
    job_list = list(jobs)
    out: dict[str, BootResult] = {}
    no_image = BootResult(BootStatus.not_checked, reason="no image")
    recorded = home.store.boot_results(BOOT_FORMAT)
    if not recorded:
        return {j.job_id: no_image for j in job_list if j.kind is Kind.kmod and j.kernel.image is None}
    url_digests = home.store.url_digests()
    for target in targets(home, job_list):
        job = target.job
        image = job.kernel.image
        image_key = None if image is None else image.sha256 or url_digests.get(image.url)
        if job.kind is Kind.ebpf:
            loaded = recorded.get((target.artifact_sha256, image_key or ""))
            key: str | None = image_key if loaded is not None else PROBE_KEY
        elif job.kernel.image is None:
            out[job.job_id] = no_image
            continue
        else:
            key = job.kernel.image.sha256 or url_digests.get(job.kernel.image.url)
        result = recorded.get((target.artifact_sha256, key or ""))
        if result is not None:
            out[job.job_id] = result
    return out


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class BootChecker:
    """Checks artifacts in parallel; results are kept per (artifact, image) in the store."""

    def __init__(self, home: Home, *, timeout: float = DEFAULT_TIMEOUT, recheck: bool = False) -> None:
        self.home = home
        self.timeout = timeout
        self.recheck = recheck
        self.images = KernelImageCache(home.path / "cache" / "boot")
        self._busybox: dict[str, bytes | None] = {}
        self._bpftool: dict[str, bytes] | None = None

    def image_digest(self, job: Job) -> str | None:
        image = job.kernel.image
        return None if image is None else image.sha256 or self.home.store.get(image.url)

    def check(self, target: BootTarget) -> BootResult:
        job = target.job
        if not target.artifact.is_file():
            return BootResult(BootStatus.not_checked, reason="the artifact is missing from the store")
        if job.kind is Kind.ebpf:
            result = self._probe(target)
            self.home.store.record_boot(target.artifact_sha256, PROBE_KEY, BOOT_FORMAT, result)
            if result.status is not BootStatus.checked or not BPFTOOL or job.kernel.image is None \
                    or job.kernel.architecture != "x86_64":
                return result  # the ELF check is what there is (see the module's doc)
        image = job.kernel.image
        if image is None:
            return BootResult(BootStatus.not_checked, reason="no image")
        if job.kernel.architecture not in MACHINES:
            return BootResult(BootStatus.not_checked, reason=f"no boot support for {job.kernel.architecture}")
        family = distro.for_target(job.kernel.target)
        if family is not None and family.package_format is not PackageFormat.deb:
            return BootResult(BootStatus.not_checked,
                              reason=f"the boot check reads .deb kernel images only ({job.kernel.target} has "
                                     f"{family.package_format.value})")
        try:
            download = self.home.downloads.get(image.url, image.sha256)
            kernel = self.images.get(download)
        except FetchError as exc:
            if exc.url and (download_digest := self.home.store.get(exc.url)):
                self.home.downloads.forget(exc.url, download_digest)
            return BootResult(BootStatus.error, reason=f"image: {exc.message}")
        if not self.recheck:
            cached = self.home.store.boot_result(target.artifact_sha256, kernel.digest, BOOT_FORMAT)
            if cached is not None and cached.status in (BootStatus.loaded, BootStatus.refused):
                return replace(cached, cached=True)
        arch = job.kernel.architecture
        if arch not in self._busybox:
            self._busybox[arch] = busybox_for(arch)
        busybox = self._busybox[arch]
        if busybox is None:
            return BootResult(BootStatus.not_checked, reason=f"no {arch} busybox: set {MACHINES[arch].busybox_env}")
        if job.kind is Kind.ebpf:
            if self._bpftool is None:
                self._bpftool = bpftool_files(Path(BPFTOOL))
            console = (self.home.logs / "boot" / job.driver.name / job.driver.version
                       / f"{target.artifact_sha256[:16]}-{kernel.digest[:16]}.console")
            result = boot(kernel, target.artifact, name=job.driver.name, architecture=job.kernel.architecture,
                          timeout=self.timeout, console=console, busybox=busybox, bpftool=self._bpftool)
            if result.status is not BootStatus.not_checked:
                self.home.store.record_boot(target.artifact_sha256, kernel.digest, BOOT_FORMAT, result)
            return result
        recipe = recipes.get(job.driver.recipe)
        console = (self.home.logs / "boot" / job.driver.name / job.driver.version
                   / f"{target.artifact_sha256[:16]}-{kernel.digest[:16]}.console")
        result = boot(kernel, target.artifact, name=job.driver.name, architecture=job.kernel.architecture,
                      timeout=self.timeout, console=console, expect_device=recipe.boot_device,
                      busybox=busybox)
        if result.status is not BootStatus.not_checked:
            self.home.store.record_boot(target.artifact_sha256, kernel.digest, BOOT_FORMAT, result)
        return result

    def _probe(self, target: BootTarget) -> BootResult:
        code = None
        try:
            files = [self.home.downloads.get(h.url, h.sha256) for h in target.job.kernel.headers]
            code = version_code(self.home.headers.tree(target.job.kernel.target, files).kernel_dir)
        except FetchError:
            pass  # the string form (Falco's probe) needs no headers
        return check_probe(target.artifact, kernel_release=target.kernel_release, version_code=code)

    def _check_safely(self, target: BootTarget) -> BootResult:
        from elftools.common.exceptions import ELFError

        try:
            return self.check(target)
        except (RepogenError, OSError, ELFError) as exc:
            return BootResult(BootStatus.error, reason=str(exc) if isinstance(exc, RepogenError) else
                              f"{type(exc).__name__}: {exc}")

    def settle(self, target: BootTarget, result: BootResult) -> None:
        """A module that fails the check is a failed build: recorded, with the reason in its log."""
        line = f"# boot check: {result.describe()}" + (f" (console: {result.console})" if result.console else "")
        if target.log_path:
            try:
                with open(target.log_path, "a") as log:
                    log.write(line + "\n")
            except OSError:
                pass
        if result.status.fails_build:
            self.home.store.fail_build(target.job.job_id, target.build_key, f"boot check: {result.describe()}")

    def run(self, todo: list[BootTarget], *, jobs: int,
            on_done: Callable[[BootTarget, BootResult], None] | None = None) -> list[tuple[BootTarget, BootResult]]:
        booting = [t for t in todo if t.job.kernel.image and t.job.kernel.architecture in MACHINES
                   and (t.job.kind is Kind.kmod or (BPFTOOL and t.job.kernel.architecture == "x86_64"))]
        if booting:  # a missing tool is one clear error up front, not one per artifact
            for arch in {t.job.kernel.architecture for t in booting} - set(self._busybox):
                self._busybox[arch] = busybox_for(arch)
            require_tools(t.job.kernel.architecture for t in booting if self._busybox[t.job.kernel.architecture])
            if BPFTOOL and any(t.job.kind is Kind.ebpf for t in booting) and self._bpftool is None:
                self._bpftool = bpftool_files(Path(BPFTOOL))
        results: list[tuple[BootTarget, BootResult]] = []
        RUNNING.cancelled.clear()
        pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="boot")
        # SIGTERM (a CI job cancelled) must not leave VMs behind either: handled as Ctrl-C while running.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
        try:
            futures = {pool.submit(self._check_safely, t): t for t in todo}
            for future in as_completed(futures):
                target = futures[future]
                result = future.result()
                self.settle(target, result)
                results.append((target, result))
                if on_done:
                    on_done(target, result)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            RUNNING.kill_all()
            raise
        finally:
            pool.shutdown(wait=True)
            if main and previous is not None:
                signal.signal(signal.SIGTERM, previous)
        order = {t.job.job_id: i for i, t in enumerate(todo)}
        results.sort(key=lambda item: order[item[0].job.job_id])
        return results
