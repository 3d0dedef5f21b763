"""A published tree made by the real ``repogen publish`` from stand-in artifacts (no Docker build).

Upload does not care what a driver's bytes are, so the store is seeded with a small unique blob per
job through ``Store.record_build`` (the same record a real build writes), and ``repogen publish``
lays out the real tree: drivers, index.json, SHA256SUMS, and the APT/RPM repositories when packages
are given. Shared by the upload tests and ``bench/bench_upload.py``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

from repogen import config as config_mod
from repogen.home import Home
from repogen.matrix import expand
from repogen.store import BuildRecord

DRIVER_VERSION = "8.0.0+driver"  # a '+', as Falco's driver versions have


def kernel_entries(count: int, start: int = 0) -> str:
    """``count`` Debian-style kernel entries (header URLs are never fetched: nothing is built)."""
    lines = []
    for i in range(start, start + count):
        release = f"6.1.{100 + i}-1-amd64"
        lines += ["  - target: debian", f"    kernelrelease: {release}", '    kernelversion: "1"',
                  "    architecture: x86_64", "    headers:",
                  f"      - http://127.0.0.1:9/linux-headers-{release}_all.deb"]
    return "\n".join(lines) + "\n"


def write_matrix(directory: Path, kernels: int, driver_dir: Path, start: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    driver_dir.mkdir(parents=True, exist_ok=True)
    (driver_dir / "Kbuild").write_text("obj-m += falco.o\n")
    config = directory / "kernels.yaml"
    config.write_text("drivers:\n  - name: falco\n"
                      f"    version: {DRIVER_VERSION}\n    source: {{path: {driver_dir}}}\n"
                      "    recipe: kbuild\n    kinds: [kmod, ebpf]\n"
                      "kernels:\n" + kernel_entries(kernels, start))
    return config


def seed_store(home_path: Path, config_path: Path, payload_size: int = 64) -> int:
    """Record one successful stand-in build per job that has none; returns how many were added."""
    home = Home(home_path)
    config = config_mod.parse(config_path)
    known = home.store.good_keys()
    scratch = home_path / "standin.tmp"
    added = 0
    for job in expand(config):
        if known.get(job.job_id):
            continue
        blob = hashlib.sha256(job.job_id.encode()).digest() * (payload_size // 32 + 1)
        scratch.write_bytes(blob[:payload_size])
        digest, size = home.store.put_object(scratch)
        key = hashlib.sha256(f"standin:{job.job_id}".encode()).hexdigest()
        now = time.time()
        home.store.record_build(BuildRecord(
            build_key=key, job_id=job.job_id, status="ok", artifact_sha256=digest, size=size, image_id="standin",
            toolchain="gcc12", vermagic=job.kernel.kernelrelease, kernel_release=job.kernel.kernelrelease,
            kernel_config_sha256=None, inputs="{}", started_at=now, finished_at=now, seconds=0.0, log_path=None,
            error=None))
        added += 1
    scratch.unlink(missing_ok=True)
    return added


def publish(home_path: Path, config_path: Path, site: Path, *args: str) -> None:
    """The real ``repogen publish`` command."""
    proc = subprocess.run([sys.executable, "-m", "repogen", "--home", str(home_path), "-c", str(config_path),
                           "publish", "--site", str(site), "--json", *args],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise RuntimeError(f"repogen publish failed ({proc.returncode}): {proc.stderr[-3000:]}")
