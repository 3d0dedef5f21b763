"""Benchmark: requests and bytes of `repogen upload` on a 10,000-object tree, against what the others do.

    python3 bench/bench_upload.py [--kernels 2500] [--work DIR]

The tree: ``--kernels`` kernels x [kmod, ebpf] x 2 layouts (driver/ and v1/) = 10,000 driver files,
plus index.json and SHA256SUMS, laid out by the real ``repogen publish`` from stand-in artifacts
(tests/sitefactory.py). The bucket: moto's S3 server on 127.0.0.1, counting every request and its
bytes (request and status lines, headers, bodies) at the server.

Measured in the same run, against the same bucket:

* ``repogen upload`` first upload, no-op upload, and after one kernel was added (a subprocess each);
* baseline "HEAD per object" (deb-s3, the driverkit grid): one HeadObject per file of the tree, then the
  PUTs of what changed;
* baseline "full listing" (``aws s3 sync``): ListObjectsV2 over the prefix (1,000 keys a page), then the
  PUTs of what changed (a lower bound: sync compares sizes and times, not digests, so it sends more).

Goal: a no-op upload in at most 2 requests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import CACHE, Goals, load_note
from s3server import moto_server
from sitefactory import publish, seed_store, write_matrix

from repogen import __version__

BUCKET = "repogen-bench"
PREFIX = "falco"
GOAL_REQUESTS = 2


def prepare(work: Path, kernels: int) -> Path:
    """The published tree (kept and reused while repogen's version and the size are the same)."""
    stamp = work / ".complete"
    if stamp.exists() and stamp.read_text() == f"{__version__}:{kernels}":
        return work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"preparing a {kernels * 4}-file tree in {work} (once)", flush=True)
    config = write_matrix(work, kernels, work / "driver-src")
    seed_store(work / "home", config)
    publish(work / "home", config, work / "site")
    stamp.write_text(f"{__version__}:{kernels}")
    return work


def run_upload(server: Any, site: Path) -> dict[str, Any]:
    server.reset()
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "repogen", "upload", "--site", str(site), f"s3://{BUCKET}/{PREFIX}",
                           "--json"], capture_output=True, text=True, timeout=1800, env={**os.environ, **server.env})
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"repogen upload failed ({proc.returncode}): {proc.stderr[-3000:]}")
    report = json.loads(proc.stdout)
    return {"requests": len(server.requests), "bytes": server.bytes_in + server.bytes_out, "seconds": seconds,
            "uploaded": report["uploaded"], "report": report}


def digest(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def tree_files(site: Path) -> dict[str, Path]:
    root = site.resolve()
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def baseline_heads(server: Any, files: dict[str, Path], changed: list[str]) -> dict[str, Any]:
    """One HEAD per object of the tree (what deb-s3 and the grid do), then PUT what is missing or changed."""
    s3 = server.client()
    server.reset()
    started = time.perf_counter()
    for key in files:
        try:
            s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")
        except Exception as exc:  # a missing object: it would be uploaded
            if getattr(exc, "response", {}).get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
    for key in changed:
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", Body=files[key].read_bytes())
    return {"requests": len(server.requests), "bytes": server.bytes_in + server.bytes_out,
            "seconds": time.perf_counter() - started}


def baseline_listing(server: Any, files: dict[str, Path], changed: list[str]) -> dict[str, Any]:
    """ListObjectsV2 over the prefix (aws s3 sync), then PUT what changed (a lower bound for sync)."""
    s3 = server.client()
    server.reset()
    started = time.perf_counter()
    listed = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/"):
        listed += len(page.get("Contents", []))
    for key in changed:
        s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", Body=files[key].read_bytes())
    return {"requests": len(server.requests), "bytes": server.bytes_in + server.bytes_out,
            "seconds": time.perf_counter() - started, "listed": listed}


def ratio(value: float, base: float) -> str:
    return f"{value / base:.4f}" if base else "n/a"


def row(name: str, m: dict[str, Any]) -> str:
    return f"  {name:<44} {m['requests']:>7} requests {m['bytes'] / 1e6:>9.2f} MB {m['seconds']:>7.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernels", type=int, default=2500, help="kernels in the tree (4 files each)")
    parser.add_argument("--work", type=Path, default=None, help="where the tree is kept")
    args = parser.parse_args()
    work = prepare(args.work or CACHE / f"bench-upload-{args.kernels}", args.kernels)
    # A copy to add a kernel to, so the kept tree stays as it is for the next run.
    scratch = work.parent / f"{work.name}.run"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(work, scratch, symlinks=True)
    site = scratch / "site"
    print(load_note())
    goals = Goals()
    try:
        with moto_server() as server:
            server.client().create_bucket(Bucket=BUCKET)
            files = tree_files(site)
            before = {k: digest(p) for k, p in files.items()}
            print(f"tree: {len(files)} files, {sum(p.stat().st_size for p in files.values()) / 1e6:.1f} MB")
            first = run_upload(server, site)
            noop = run_upload(server, site)
            heads_noop = baseline_heads(server, files, [])
            listing_noop = baseline_listing(server, files, [])

            config = write_matrix(scratch, args.kernels + 1, scratch / "driver-src")
            seed_store(scratch / "home", config)
            publish(scratch / "home", config, site)
            new_files = tree_files(site)
            expected = {k for k, p in new_files.items() if before.get(k) != digest(p)}
            change = run_upload(server, site)
            changed = change["report"]["uploaded_keys"]
            heads_change = baseline_heads(server, new_files, changed)
            listing_change = baseline_listing(server, new_files, changed)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print("\nno-op upload (nothing changed):")
    print(row("repogen upload", noop))
    print(row("baseline: HEAD per object", heads_noop))
    print(row("baseline: full listing (aws s3 sync)", listing_noop))
    print(f"  ratio requests: {ratio(noop['requests'], heads_noop['requests'])} of HEAD-per-object, "
          f"{ratio(noop['requests'], listing_noop['requests'])} of the listing")
    print(f"  ratio bytes:    {ratio(noop['bytes'], heads_noop['bytes'])} of HEAD-per-object, "
          f"{ratio(noop['bytes'], listing_noop['bytes'])} of the listing")
    print(f"\none kernel added ({len(changed)} keys changed: {', '.join(sorted(changed)[:8])}"
          f"{' ...' if len(changed) > 8 else ''}):")
    print(row("repogen upload", change))
    print(row("baseline: HEAD per object + PUTs", heads_change))
    print(row("baseline: full listing + PUTs", listing_change))
    print(f"  ratio requests: {ratio(change['requests'], heads_change['requests'])} of HEAD-per-object, "
          f"{ratio(change['requests'], listing_change['requests'])} of the listing")
    print(f"  ratio bytes:    {ratio(change['bytes'], heads_change['bytes'])} of HEAD-per-object, "
          f"{ratio(change['bytes'], listing_change['bytes'])} of the listing")
    print(f"\nfirst upload: {first['requests']} requests, {first['bytes'] / 1e6:.2f} MB, {first['seconds']:.1f} s "
          f"({first['uploaded']} files)")
    print(load_note())
    goals.check("no-op upload requests", noop["requests"] <= GOAL_REQUESTS and noop["uploaded"] == 0,
                f"{noop['requests']} (goal <= {GOAL_REQUESTS}; HEAD per object: {heads_noop['requests']})")
    goals.check("one-kernel change uploads exactly what changed", set(changed) == expected,
                f"{len(changed)} keys PUT of {len(new_files)} (expected {len(expected)})")
    return goals.exit_code


if __name__ == "__main__":
    sys.exit(main())
