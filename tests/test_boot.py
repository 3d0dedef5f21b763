"""The boot check, for real: Debian's own kernel image booted under QEMU, a module built by repogen
loaded in it (or refused by it, with the kernel's reason), and what that changes in plan and publish."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import CACHE, HELLO_KBUILD, ROOT, Mirror, Repogen, driver_yaml, write_config

from repogen.boot import BootStatus, Cpio, KernelImage, check_probe, initramfs, verdict

# -- the console verdict and the initramfs (no VM) ----------------------------------------------------

REFUSED = """\
[    0.000000] Linux version 6.1.0-56-amd64
@@repogen uname 6.1.0-56-amd64
@@repogen insmod
[    3.1] hello_repogen: disagrees about version of symbol module_layout
@@repogen insmod-failed insmod: can't insert '/hello_repogen.ko': invalid module format
@@repogen dmesg [    3.100000] hello_repogen: disagrees about version of symbol module_layout
@@repogen end
"""


def test_verdict_gives_the_kernels_reason_for_a_refused_module() -> None:
    result = verdict(REFUSED, name="hello_repogen")
    assert result.status is BootStatus.refused
    assert result.kernel == "6.1.0-56-amd64"
    assert result.reason == ("hello_repogen: disagrees about version of symbol module_layout "
                             "(insmod: can't insert 'hello_repogen.ko': invalid module format)")


def test_verdict_loaded_needs_the_device_where_the_recipe_says_so() -> None:
    console = ("@@repogen uname 6.1.0-56-amd64\n@@repogen insmod\n@@repogen insmod-ok\n"
               "@@repogen dmesg [    2.5] falco: driver loading, falco 9.1.0+driver\n@@repogen sysmodule\n")
    assert verdict(console + "@@repogen device /dev/falco0\n@@repogen end\n", name="falco",
                   expect_device=True).status is BootStatus.loaded
    missing = verdict(console + "@@repogen end\n", name="falco", expect_device=True)
    assert missing.status is BootStatus.refused and "no /dev/falco*" in (missing.reason or "")
    assert verdict(console + "@@repogen end\n", name="falco").status is BootStatus.loaded


def test_verdict_kernel_crash_on_insmod_is_refused_and_no_init_is_qemu_failed() -> None:
    crashed = verdict("@@repogen insmod\n[ 3.0] BUG: kernel NULL pointer dereference, address: 0\n", name="m")
    assert crashed.status is BootStatus.refused and "BUG: kernel NULL pointer" in (crashed.reason or "")
    no_init = verdict("[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n", name="m")
    assert no_init.status is BootStatus.qemu_failed and "Kernel panic" in (no_init.reason or "")


def test_aarch64_busybox_is_found_where_setup_puts_it_or_reported_missing(tmp_path: Path, monkeypatch: Any) -> None:
    import dataclasses

    from repogen import boot
    from repogen.errors import RepogenError

    monkeypatch.delenv("REPOGEN_BUSYBOX_AARCH64", raising=False)
    default = tmp_path / "busybox-aarch64"
    monkeypatch.setitem(boot.MACHINES, "aarch64",
                        dataclasses.replace(boot.MACHINES["aarch64"], default_busybox=str(default)))
    assert boot.busybox_for("aarch64") is None  # not set up: aarch64 modules report `not checked`
    default.write_bytes(Path("/bin/busybox").read_bytes())  # there, but the host's x86_64 one
    with pytest.raises(RepogenError, match="EM_X86_64: the VM needs a static aarch64 busybox"):
        boot.busybox_for("aarch64")
    installed = Path(boot.AARCH64_BUSYBOX)  # scripts/setup.sh installs Debian's arm64 busybox-static there
    if installed.is_file():
        default.write_bytes(installed.read_bytes())
        assert boot.busybox_for("aarch64") == installed.read_bytes()


def test_initramfs_is_a_newc_archive_cpio_reads(tmp_path: Path) -> None:
    data = initramfs(b"\x7fELF-not-really-busybox", b"module bytes", "hello_repogen")
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=data, capture_output=True, check=True).stdout.decode()
    names = [line.split()[-1] for line in listing.splitlines()]
    assert names == ["bin", "dev", "proc", "sys", "tmp", "dev/console", "bin/busybox", "init", "hello_repogen.ko"]
    assert listing.splitlines()[5].startswith("crw-------")  # /dev/console, made without mknod
    subprocess.run(["cpio", "-id", "--quiet"], input=data, cwd=tmp_path, check=True)
    assert (tmp_path / "hello_repogen.ko").read_bytes() == b"module bytes"
    assert "insmod /hello_repogen.ko" in (tmp_path / "init").read_text()
    assert os.access(tmp_path / "init", os.X_OK)
    with pytest.raises(Exception, match="cannot be boot-checked"):
        initramfs(b"", b"", "bad name; reboot")
    assert Cpio().getvalue().startswith(b"070701")


# -- real boots ---------------------------------------------------------------------------------------


def _debian_kernels(mirror: Mirror, *args: str) -> list[dict[str, Any]]:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "debian_headers.py"), "--dest",
                           str(mirror.directory), "--base-url", mirror.base_url, "--json", *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    kernels: list[dict[str, Any]] = json.loads(proc.stdout)
    return kernels


@pytest.fixture(scope="session")
def boot_kernels(mirror: Mirror, debian: Any) -> dict[str, dict[str, Any]]:
    """The newest Debian 12 kernel apt knows, with its image; and the oldest ABI's headers (no image)."""
    abis = debian.find("bookworm", "amd64", count=100)
    if len(abis) < 2:
        pytest.skip("apt knows a single 6.1 ABI: no other ABI to build against")
    newest = _debian_kernels(mirror, "--count", "1", "--image")[0]
    oldest = _debian_kernels(mirror, "--count", "1", "--skip", str(len(abis) - 1))[0]
    return {"newest": newest, "oldest": oldest}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_debian_kernel_boots_both_ways_and_refuses_a_broken_module(tmp_path: Path, mirror: Mirror,
                                                                   boot_kernels: dict[str, Any]) -> None:
    """The image's PVH vmlinux (the fast path) and its bzImage (the fallback) both reach /init, and the
    kernel's own words come back for a file that is no module."""
    from repogen.boot import KernelImageCache, boot
    from repogen.home import Home

    home = Home(tmp_path / "home")
    image = boot_kernels["newest"]["image"]
    kernel = KernelImageCache(tmp_path / "cache").get(home.downloads.get(image["url"], image["sha256"]))
    assert kernel.release == boot_kernels["newest"]["uname_r"]
    assert kernel.boot_file is not None and kernel.boot_file.name == "vmlinux"  # Debian's kernels have PVH
    broken = tmp_path / "broken.ko"
    broken.write_bytes(b"not an ELF file at all")
    for variant in (kernel, KernelImage(kernel.vmlinuz, kernel.release, kernel.digest)):
        result = boot(variant, broken, name="broken", architecture="x86_64", timeout=300,
                      console=tmp_path / f"{variant.kernel.name}.console")
        print(f"{variant.kernel.name}: {result.seconds:.1f}s")
        assert result.status is BootStatus.refused, result
        assert result.kernel == kernel.release
        assert "Invalid ELF header" in (result.reason or "") and "invalid module format" in (result.reason or "")


@pytest.fixture(scope="session")
def legacy_bpftool() -> Path:
    """Debian 11's bpftool (libbpf 0.3, which still reads the legacy maps section Falco's probe uses),
    fetched with a private apt configuration over the machine's own mirror."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from debian_archive import AptArchive, deb_member

    archive = AptArchive(CACHE / "apt-bullseye", suites=["bullseye"], architectures=["amd64"])
    archive.update()
    version = archive.versions("bpftool")[0][0]
    tool = CACHE / f"bpftool-{version}" / "bpftool"
    if not tool.is_file():
        deb = archive.download([f"bpftool:amd64={version}"], CACHE / "bullseye-debs")[0]
        deb_member(deb, "./usr/sbin/bpftool", tool)
    return tool


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_debian_arm64_kernel_boots_and_refuses_a_broken_module(tmp_path: Path, monkeypatch: Any) -> None:
    """aarch64: Debian's arm64 kernel under qemu-system-aarch64 (TCG, virt), with Debian's arm64
    busybox-static, both fetched with a private apt configuration."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from debian_archive import AptArchive, deb_member

    from repogen.boot import KernelImageCache, boot, busybox_for
    from repogen.fetch import Download

    archive = AptArchive(CACHE / "apt-bookworm-arm64", suites=["bookworm"], architectures=["arm64"])
    archive.update()
    images = [n for n in archive.pkgnames("linux-image-6.1.0-")
              if n.endswith("-arm64") and not n.endswith(("-cloud-arm64", "-rt-arm64"))]
    newest = max(images, key=lambda n: int(n.split("-")[3]))  # linux-image-6.1.0-<abi>-arm64
    debs = CACHE / "arm64-debs"
    busybox_deb, image_deb = archive.download(
        [f"busybox-static:arm64={archive.versions('busybox-static:arm64')[0][0]}",
         f"{newest}:arm64={archive.versions(f'{newest}:arm64')[0][0]}"], debs)
    busybox = debs / "busybox-arm64"
    if not busybox.is_file():
        deb_member(busybox_deb, "./bin/busybox", busybox)
    monkeypatch.setenv("REPOGEN_BUSYBOX_AARCH64", str(busybox))
    data = busybox_for("aarch64")
    assert data is not None and data == busybox.read_bytes()

    digest = hashlib.sha256(image_deb.read_bytes()).hexdigest()
    download = Download(image_deb.as_uri(), image_deb, digest, image_deb.stat().st_size, fetched=False)
    kernel = KernelImageCache(tmp_path / "cache").get(download)
    assert kernel.release == newest.removeprefix("linux-image-") and kernel.boot_file is None
    broken = tmp_path / "broken.ko"
    broken.write_bytes(b"not an ELF file at all")
    result = boot(kernel, broken, name="broken", architecture="aarch64", timeout=300, busybox=data,
                  console=tmp_path / "arm64.console")
    print(f"aarch64: {result.seconds:.1f}s")
    assert result.status is BootStatus.refused, result
    assert result.kernel == kernel.release
    assert "Invalid ELF header" in (result.reason or "")


def _qemu_processes(marker: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmdline and marker.encode() in cmdline:
                found.append(int(proc.name))
    return found


def _kernel(entry: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = {k: v for k, v in entry.items() if k != "uname_r"}
    out.update(changes)
    return out


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_module_built_for_the_kernel_loads_in_it(tmp_path: Path, boot_kernels: dict[str, Any],
                                                  builder_image: str, legacy_bpftool: Path) -> None:
    newest = boot_kernels["newest"]
    config = write_config(tmp_path, [driver_yaml("hello_repogen", "0.1.0", HELLO_KBUILD, "kbuild")],
                          [_kernel(newest)])
    repogen = Repogen(tmp_path / "home", config)
    built = repogen("build", "-j", "2", "--boot", "--json", env={"REPOGEN_BPFTOOL": str(legacy_bpftool)})
    assert built.code == 0, built.err + built.out
    boots = {r["kind"]: r["boot"] for r in built.json["results"]}
    assert boots["kmod"]["status"] == "loaded", boots
    assert boots["kmod"]["kernel"] == newest["uname_r"]
    assert 0 < boots["kmod"]["seconds"] < 120
    print(f"boot check: {boots['kmod']['seconds']}s")
    # The probe went through the kernel's own verifier (bpftool prog loadall in the same VM).
    assert boots["ebpf"]["status"] == "loaded", boots
    assert "verifier accepted 1 programs" in boots["ebpf"]["reason"]

    plan = repogen("plan", "--json", "--all")
    assert {r["kind"]: r["boot"]["status"] for r in plan.json["jobs"]} == {"kmod": "loaded", "ebpf": "loaded"}
    published = repogen("publish", "--site", str(tmp_path / "site"), "--require-boot", "--json")
    assert published.code == 0, published.err
    assert published.json["artifacts"] == 2 and published.json["skipped"] == []
    index = json.loads((tmp_path / "site" / "index.json").read_text())
    kmod = next(a for a in index["artifacts"] if a["kind"] == "kmod")
    assert kmod["boot"]["status"] == "loaded" and kmod["boot"]["kernel"] == newest["uname_r"]

    # A recorded result is reused; without a bpftool the probe gets the ELF check (kernel_version is the
    # headers' LINUX_VERSION_CODE here), and a wrong kernel_version makes that check fail (it can fail).
    again = repogen("verify", "--boot", "--json")
    assert again.code == 0, again.err
    assert {(r["kind"], r["status"], r["cached"]) for r in again.json["results"]} == {
        ("kmod", "loaded", True), ("ebpf", "checked", False)}
    probe_sha = next(r["sha256"] for r in built.json["results"] if r["kind"] == "ebpf")
    probe = tmp_path / "home" / "store" / "sha256" / probe_sha[:2] / probe_sha
    wrong = check_probe(probe, kernel_release=None, version_code=0x060100)
    assert wrong.status is BootStatus.refused and "LINUX_VERSION_CODE" in (wrong.reason or "")

    # Ctrl-C (or SIGTERM: a cancelled CI job) during a boot: the command stops and kills its QEMU.
    marker = str(tmp_path / "home")
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen([sys.executable, "-m", "repogen", "--home", marker, "-c", str(config), "verify",
                                 "--boot", "--recheck", "kind=kmod"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not _qemu_processes(marker) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _qemu_processes(marker), "no QEMU started"
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 130, proc.communicate()
        assert _qemu_processes(marker) == []
    plan = repogen("plan", "--json", "--all")  # an interrupted boot records nothing
    assert {r["kind"]: r["boot"]["status"] for r in plan.json["jobs"]} == {"kmod": "loaded", "ebpf": "loaded"}

    # A boot that cannot finish in time is killed: "timed out", and no QEMU is left running.
    timed = repogen("verify", "--boot", "--recheck", "--timeout", "1", "--json", "kind=kmod")
    assert timed.code == 1, timed.err
    assert [r["status"] for r in timed.json["results"]] == ["timed out"]
    assert _qemu_processes(str(tmp_path / "home")) == []
    plan = repogen("plan", "--json")
    assert "boot check: timed out" in plan.json["jobs"][0]["error"]


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_module_built_for_another_abi_is_refused_and_not_published(
        tmp_path: Path, boot_kernels: dict[str, Any], builder_image: str, legacy_bpftool: Path) -> None:
    newest, oldest = boot_kernels["newest"], boot_kernels["oldest"]
    # A probe the verifier must refuse: the map value is used without the NULL check.
    broken = tmp_path / "broken"
    shutil.copytree(HELLO_KBUILD, broken)
    probe = broken / "bpf" / "probe.c"
    text = probe.read_text()
    assert "if (val)\n" in text
    probe.write_text(text.replace("if (val)\n", ""))
    # The headers of one ABI with the image of another: the mistake that once shipped modules failing
    # with "disagrees about version of symbol module_layout". Kernel version 2: same headers, no image.
    config = write_config(tmp_path, [driver_yaml("hello_repogen", "0.1.0", HELLO_KBUILD, "kbuild", "[kmod]"),
                                     driver_yaml("hello_repogen", "0.1.0-broken", broken, "kbuild", "[ebpf]")],
                          [_kernel(oldest, image=newest["image"]), _kernel(oldest, kernelversion="2")])
    repogen = Repogen(tmp_path / "home", config)
    built = repogen("build", "-j", "2", "--boot", "--json", env={"REPOGEN_BPFTOOL": str(legacy_bpftool)})
    assert built.code == 1, built.err + built.out
    probes = {r["kernelversion"]: r for r in built.json["results"] if r["kind"] == "ebpf"}
    assert probes["1"]["status"] == "failed"
    assert "invalid mem access 'map_value_or_null'" in probes["1"]["boot"]["reason"], probes["1"]
    assert probes["2"]["boot"]["status"] == "checked"  # no image: the ELF check only, which this probe passes
    results = {r["kernelversion"]: r for r in built.json["results"] if r["kind"] == "kmod"}
    refused = results["1"]
    assert refused["status"] == "failed"
    assert refused["boot"]["status"] == "refused"
    assert "disagrees about version of symbol" in refused["boot"]["reason"], refused
    assert refused["boot"]["kernel"] == newest["uname_r"]
    assert results["2"]["status"] == "built"
    assert results["2"]["boot"] == {"status": "not checked", "reason": "no image"}
    assert "# boot check: refused" in Path(refused["log"]).read_text()

    plan = repogen("plan", "--json")
    row = next(r for r in plan.json["jobs"] if r["kernelversion"] == "1" and r["kind"] == "kmod")
    assert row["state"] == "failed" and "disagrees about version of symbol" in row["error"]

    published = repogen("publish", "--site", str(tmp_path / "site"), "--require-boot", "--json")
    assert published.code == 0, published.err
    assert published.json["artifacts"] == 1  # the probe of kernel version 2 (ELF-checked)
    assert [s["reason"] for s in published.json["skipped"]] == ["boot check: not checked: no image"]
    assert published.json["failed"] == 2  # the refused module and probe are failed builds, never published
