"""Benchmark: seconds per boot check (goal: at most 12 s each), the PVH vmlinux against the bzImage.

    python3 bench/bench_boot.py [--runs 3]

The newest Debian 12 kernel image apt knows (``scripts/debian_headers.py --image``, into the tests'
mirror directory) is read once by :class:`repogen.boot.KernelImageCache`; then, alternating
``--runs`` times, :func:`repogen.boot.boot` boots its PVH ``vmlinux`` (what the boot check uses) and,
as the baseline measured in the same run, its bzImage ``vmlinuz`` (what ``qemu -kernel`` would boot
otherwise), each time into the real initramfs with a file that is no module, so the VM runs the whole
check (``insmod``, dmesg, reboot) and must answer "refused". Wall and CPU seconds (QEMU's, from
``getrusage``) per boot; medians compared. No Docker needed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MIRROR, ROOT, Goals, LocalServer, fmt, load_note, median

from repogen.boot import BootStatus, KernelImage, KernelImageCache, boot, host_busybox
from repogen.home import Home

GOAL_SECONDS = 12.0


def newest_image(base_url: str) -> dict[str, str]:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "debian_headers.py"), "--count", "1", "--image",
                           "--dest", str(MIRROR), "--base-url", base_url, "--json"],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise SystemExit(f"debian_headers.py failed: {proc.stderr.strip()}")
    image: dict[str, str] = json.loads(proc.stdout)[0]["image"]
    return image


def timed_boot(kernel: KernelImage, module: Path, console: Path, busybox: bytes) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = boot(kernel, module, name="notamodule", architecture="x86_64", timeout=300, console=console,
                  busybox=busybox)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.status is not BootStatus.refused:
        raise SystemExit(f"invalid run: {kernel.kernel.name} gave {result.describe()} (console {console})")
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"start: {load_note()}")
    MIRROR.mkdir(parents=True, exist_ok=True)
    server = LocalServer(MIRROR)
    with tempfile.TemporaryDirectory(prefix="bench-boot-") as work_dir:
        work = Path(work_dir)
        home = Home(work / "home")
        image = newest_image(server.base_url)
        started = time.monotonic()
        kernel = KernelImageCache(work / "images").get(home.downloads.get(image["url"], image["sha256"]))
        print(f"image {Path(image['url']).name}: read once in {time.monotonic() - started:.1f}s "
              f"(vmlinuz + PVH vmlinux: {'yes' if kernel.boot_file else 'no'})")
        if kernel.boot_file is None:
            raise SystemExit("invalid run: this kernel has no PVH entry")
        bzimage = KernelImage(kernel.vmlinuz, kernel.release, kernel.digest)
        module = work / "notamodule.ko"
        module.write_bytes(b"not an ELF file")
        busybox = host_busybox()
        pvh: list[tuple[float, float]] = []
        baseline: list[tuple[float, float]] = []
        for run in range(args.runs):
            pvh.append(timed_boot(kernel, module, work / f"pvh-{run}.console", busybox))
            baseline.append(timed_boot(bzimage, module, work / f"bz-{run}.console", busybox))
            print(f"run {run + 1}: vmlinux {pvh[-1][0]:.1f}s wall {pvh[-1][1]:.1f}s cpu, "
                  f"bzImage {baseline[-1][0]:.1f}s wall {baseline[-1][1]:.1f}s cpu")
    server.server.shutdown()
    walls, cpus = [w for w, _ in pvh], [c for _, c in pvh]
    base_walls, base_cpus = [w for w, _ in baseline], [c for _, c in baseline]
    print(f"vmlinux (PVH): wall {fmt(walls)}, cpu {fmt(cpus)}")
    print(f"bzImage (baseline): wall {fmt(base_walls)}, cpu {fmt(base_cpus)}")
    print(f"ratio vmlinux / bzImage: wall {median(walls) / median(base_walls):.2f}, "
          f"cpu {median(cpus) / median(base_cpus):.2f}")
    print(f"end: {load_note()}")
    goals = Goals()
    goals.check("seconds per boot check", median(walls) <= GOAL_SECONDS,
                f"median {median(walls):.1f}s wall (goal <= {GOAL_SECONDS:g}s)")
    return goals.exit_code


if __name__ == "__main__":
    sys.exit(main())
