"""Benchmark: time to driver, from a new kernel's headers appearing on its mirror to its verified
drivers downloadable from the CDN, unattended, and that the new kernel costs only its own work.

    python3 bench/bench_time_to_driver.py [--runs 1] [--fresh] [--skip-baseline]

Setup (not timed; kept in $REPOGEN_TEST_CACHE/ttd-bench and reused while repogen's version is the same):

* A real Debian mirror on 127.0.0.1 (a fixed port, saved with the setup, since kernels.yaml names it):
  the bookworm amd64 ``Packages`` index of this machine's Debian archive (``tests/debian_dists.py``,
  through a private apt configuration), its ``Release`` listing its SHA256, and the pool files of the
  kernels used, downloaded by apt. Only the plain ``amd64`` flavour is kept (the cloud and rt kernel
  stanzas are removed) so the setup stays a few minutes. "Before": the same index without the newest
  kernel ABI's stanzas (linux-headers-*, linux-image-*), Release rewritten to match. ``linux-kbuild-6.1``
  stays in both: Debian's archive keeps only its newest version, so the older kernel uses it already.
* kernels.yaml: the real Falco driver (falcosecurity/libs 9.1.0+driver, kinds kmod and ebpf) and the
  kernels ``repogen crawl debian:bookworm --arch x86_64 --write`` finds on the "before" mirror; then
  ``repogen build --boot`` and ``repogen publish --require-boot``: the steady state, snapshotted.
* Each run restores that snapshot, starts moto's S3 server on 127.0.0.1 (``tests/s3server.py``,
  counting every request), makes a public bucket and uploads the steady-state site to it (not timed).

Timed, as a cron job would run it: the mirror gets the newest kernel (index and Release replaced,
pool files present), then each a subprocess: ``repogen crawl debian:bookworm --arch x86_64 --write``,
``repogen build --boot``, ``repogen publish --require-boot``, ``repogen upload s3://...``, then plain
HTTP GETs of the new kernel's drivers from the bucket exactly as falcoctl names them
(``driver/9.1.0%2Bdriver/x86_64/falco_debian_<kernelrelease>_<kernelversion>.ko`` and ``.o``), whose
bytes must hash to what the build reported. Time to driver = the sum of the stages.

Checks ("one new kernel costs only its own work"), from the commands' --json and the servers' counts:
the crawl wrote exactly 1 new kernel; the build built exactly its 2 jobs, downloaded only its headers
(the mirror's GET log: its header and image files, nothing of the older kernel) and booted only its
module; the upload PUT only the new kernel's driver files plus the indexes.

Baseline, same run: the irreducible work of that kernel, ``repogen build --rebuild`` of just its 2 jobs
(headers already downloaded and unpacked) plus ``repogen verify --boot --recheck`` of its module.
Goals: time to driver < 600 s (the product brief's 10 minutes); the overhead ratio (time to driver /
irreducible work) is printed, with no goal: see bench/README.md for the measured values.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import debian_dists
from _common import CACHE, Goals, LocalServer, Run, docker_ready, load_note, must, repogen
from debian import deb822
from s3server import CountingMotoServer, moto_server

from repogen import __version__

UPSTREAM = Path(os.environ.get("REPOGEN_UPSTREAM", "/work/shared/upstream"))
LIBS = UPSTREAM / "falcosecurity-libs-9.1.0+driver.tar.gz"
LIBS_SHA256 = "5754c2328aaa3ab7f871dafcf1a57fb8601126fa8b4d740223dc002746d183f9"
DRIVER_VERSION = "9.1.0+driver"
SUITE = "bookworm"
INDEX = "main/binary-amd64/Packages.xz"
BUCKET = "falco-drivers"
PREFIX = "falco"
GOAL_SECONDS = 600.0
WORK = CACHE / "ttd-bench"
FLAVOURED = re.compile(r"linux-(?:headers|image)-\d[^ ]*-(?:cloud|rt)-amd64(?:-unsigned|-dbg)?"
                       r"|linux-headers-.*-common-rt")
ABI = re.compile(r"linux-headers-(\d+\.\d+\.\d+-\d+)-amd64")


# -- the mirror: "before" and "after" the newest kernel ----------------------------------------------

def _paragraphs(text: bytes) -> list[bytes]:
    return [p for p in text.split(b"\n\n") if p.strip()]


def _name(paragraph: bytes) -> str:
    m = re.search(rb"(?m)^Package: (\S+)", paragraph)
    return m.group(1).decode() if m else ""


def _field(paragraph: bytes, name: str) -> str:
    m = re.search(rb"(?m)^" + name.encode() + rb": (\S+)", paragraph)
    return m.group(1).decode() if m else ""


def _version_key(abi: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.split(r"[.-]", abi))


def _write_state(directory: Path, paragraphs: list[bytes], date: str) -> None:
    data = lzma.compress(b"\n\n".join(paragraphs) + b"\n", preset=1)
    (directory / "main" / "binary-amd64").mkdir(parents=True, exist_ok=True)
    (directory / INDEX).write_bytes(data)
    release = deb822.Release()
    release["Suite"] = SUITE
    release["Date"] = date
    release["SHA256"] = [{"sha256": hashlib.sha256(data).hexdigest(), "size": str(len(data)), "name": INDEX}]
    (directory / "Release").write_text(release.dump())


def prepare_mirror() -> dict[str, Any]:
    """The two states of the index, the pool files of both kernels; returns what the run needs."""
    tree = debian_dists.build(CACHE, [SUITE], ["amd64"])
    full = _index_text(tree.root / "debian" / "dists" / SUITE / INDEX)
    after = [p for p in _paragraphs(full) if not FLAVOURED.fullmatch(_name(p))]
    abis = sorted({m.group(1) for p in after if (m := ABI.fullmatch(_name(p)))}, key=_version_key)
    if len(abis) < 2:
        raise SystemExit(f"INVALID: the {SUITE} index has {len(abis)} plain amd64 kernel ABIs; 2 are needed")
    newest, older = abis[-1], abis[-2]
    before = [p for p in after if f"-{newest}-" not in _name(p) + "-"]
    states = WORK / "states"
    _write_state(states / "before", before, "Mon, 23 Nov 2026 00:00:00 UTC")
    _write_state(states / "after", after, "Mon, 23 Nov 2026 06:00:00 UTC")
    # the pool files the kernels' entries name, downloaded by apt and hard-linked into the pool
    wanted = {f"linux-headers-{abi}-{flavour}" for abi in (newest, older) for flavour in ("amd64", "common")}
    wanted |= {f"linux-image-{abi}-amd64" for abi in (newest, older)} | {"linux-kbuild-6.1"}
    pool: list[str] = []
    for p in after:
        name = _name(p)
        if name in wanted:
            filename = _field(p, "Filename")
            tree.pool_add("debian", filename, f"{name}:{_field(p, 'Architecture')}={_field(p, 'Version')}")
            pool.append(filename)
    if len(pool) != len(wanted):
        raise SystemExit(f"INVALID: found {len(pool)} of the {len(wanted)} pool files {sorted(wanted)}")
    return {"pool": str(tree.root / "debian" / "pool"), "newest": newest, "older": older, "files": pool}


def _index_text(path: Path) -> bytes:
    return lzma.decompress(path.read_bytes())


def set_state(mirror: Path, state: str) -> None:
    """Put the index, then its Release, in place (each an atomic rename), as a mirror sync does."""
    source = WORK / "states" / state
    dists = mirror / "debian" / "dists" / SUITE
    (dists / "main" / "binary-amd64").mkdir(parents=True, exist_ok=True)
    for name in (INDEX, "Release"):
        tmp = dists / f"{name}.new"
        shutil.copyfile(source / name, tmp)
        os.replace(tmp, dists / name)


# -- setup: the steady state ------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_text(mirror_url: str) -> str:
    return (f"mirrors:\n  debian: {mirror_url}/debian\n"
            "drivers:\n  - name: falco\n"
            f"    version: {DRIVER_VERSION}\n"
            f"    source: {{path: {LIBS}, sha256: {LIBS_SHA256}}}\n"
            "    kinds: [kmod, ebpf]\n"
            "kernels: []\n")


@dataclass
class Paths:
    run: Path = WORK / "run"        #: where every command works (restored from ``steady`` each run)
    steady: Path = WORK / "steady"  #: the snapshot of the steady state
    mirror: Path = WORK / "mirror"

    @property
    def home(self) -> Path:
        return self.run / "home"

    @property
    def config(self) -> Path:
        return self.run / "kernels.yaml"

    @property
    def site(self) -> Path:
        return self.run / "site"


def setup(paths: Paths, fresh: bool) -> dict[str, Any]:
    stamp = WORK / "setup.json"
    if not fresh and stamp.is_file():
        saved: dict[str, Any] = json.loads(stamp.read_text())
        if saved.get("version") == __version__ and paths.steady.is_dir():
            print(f"setup: reusing the steady state in {paths.steady} (--fresh to rebuild it)", flush=True)
            return saved
    if not LIBS.is_file() or hashlib.sha256(LIBS.read_bytes()).hexdigest() != LIBS_SHA256:
        raise SystemExit(f"{LIBS} is missing or not the expected libs 9.1.0 tarball (set REPOGEN_UPSTREAM)")
    started = time.perf_counter()
    for p in (paths.run, paths.steady, paths.mirror):
        shutil.rmtree(p, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    print("setup: the mirror (apt downloads the kernels' packages once)", flush=True)
    info = prepare_mirror()
    (paths.mirror / "debian").mkdir(parents=True)
    (paths.mirror / "debian" / "pool").symlink_to(info["pool"])
    set_state(paths.mirror, "before")
    info["port"] = _free_port()
    info["version"] = __version__
    paths.run.mkdir(parents=True)
    with LocalServer(paths.mirror, port=info["port"]) as server:
        paths.config.write_text(config_text(server.base_url))
        crawl = must(repogen(paths.home, paths.config, "crawl", f"debian:{SUITE}", "--arch", "x86_64",
                             "--write", "--json", timeout=900), "setup crawl")
        print(f"setup: crawl found {crawl.json['targets'][0]['found']} kernels", flush=True)
        print("setup: building and boot-checking the steady state (libs' cmake once, then the kernels)", flush=True)
        built = must(repogen(paths.home, paths.config, "build", "--boot", "--json", timeout=3600), "setup build")
        published = must(repogen(paths.home, paths.config, "publish", "--require-boot", "--site", str(paths.site),
                                 "--json"), "setup publish")
    print(f"setup: {built.json['built']} built, {published.json['artifacts']} published "
          f"in {time.perf_counter() - started:.0f}s", flush=True)
    subprocess.run(["cp", "-a", str(paths.run), str(paths.steady)], check=True, timeout=600)
    stamp.write_text(json.dumps(info))
    return info


def restore(paths: Paths) -> None:
    shutil.rmtree(paths.run, ignore_errors=True)
    subprocess.run(["cp", "-a", str(paths.steady), str(paths.run)], check=True, timeout=600)


# -- the timed run -------------------------------------------------------------------------------------

@dataclass
class Timed:
    stages: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.stages.values())


def stage(timed: Timed, name: str, run: Run) -> Any:
    must(run, name)
    timed.stages[name] = run.seconds
    data = run.json
    timed.outputs[name] = data
    print(f"  {name:<8} {run.seconds:7.1f} s", flush=True)
    return data


def _s3_env(moto: CountingMotoServer) -> dict[str, str]:
    return {**os.environ, **moto.env}


def upload_cmd(paths: Paths, moto: CountingMotoServer, bucket: str) -> Run:
    cmd = [sys.executable, "-m", "repogen", "--home", str(paths.home), "-c", str(paths.config), "upload",
           "--site", str(paths.site), f"s3://{bucket}/{PREFIX}", "--json"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=_s3_env(moto))
    return Run(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - started)


def falcoctl_urls(base: str, kernelrelease: str, kernelversion: str) -> dict[str, str]:
    """What falcoctl requests for a kernel: each path segment escaped, '+' as %2B."""
    version = urllib.request.quote(DRIVER_VERSION, safe="")
    name = f"falco_debian_{urllib.request.quote(kernelrelease, safe='')}_{urllib.request.quote(kernelversion, safe='')}"
    return {kind: f"{base}/driver/{version}/x86_64/{name}{ext}" for kind, ext in (("kmod", ".ko"), ("ebpf", ".o"))}


def get_drivers(urls: dict[str, str]) -> dict[str, str]:
    """sha256 of each URL's body, or what went wrong (a FAIL line then, not a traceback)."""
    out = {}
    for kind, url in urls.items():
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                out[kind] = hashlib.sha256(response.read()).hexdigest()
        except OSError as exc:  # urllib.error.HTTPError and URLError included
            out[kind] = f"{url}: {exc}"
    return out


def one_run(paths: Paths, info: dict[str, Any], goals: Goals, baseline: bool, bucket: str) -> dict[str, float]:
    restore(paths)
    set_state(paths.mirror, "before")
    newest = info["newest"]
    with LocalServer(paths.mirror, port=info["port"]) as mirror, moto_server() as moto:
        moto.make_public_bucket(bucket)  # moto keeps its buckets in the process: a new one per run
        must(upload_cmd(paths, moto, bucket), "steady-state upload")
        before_keys = {o["Key"].removeprefix(f"{PREFIX}/")
                       for o in moto.client().list_objects_v2(Bucket=bucket).get("Contents", [])}
        os.sync()  # the restored copy's writeback is setup, not the timed part's disk traffic
        moto.reset()
        mirror.counts.clear()
        print(f"start: {load_note()}  (steady state: {len(before_keys)} objects in the bucket)", flush=True)
        timed = Timed()
        # The newest kernel appears on the mirror: time to driver starts now.
        set_state(paths.mirror, "after")
        crawl = stage(timed, "crawl", repogen(paths.home, paths.config, "crawl", f"debian:{SUITE}", "--arch", "x86_64",
                                              "--write", "--json", timeout=900))
        # falcoctl's name for it (Debian: the package version, e.g. 6.1.176-1-amd64), from the crawl
        kernelrelease = next((k["kernelrelease"] for k in crawl["targets"][0]["kernels"]
                              if f" {newest}-amd64 " in f" {k.get('note', '')} "), f"{newest}-amd64")
        built = stage(timed, "build", repogen(paths.home, paths.config, "build", "--boot", "--json", timeout=3600))
        mirror_gets = mirror.gets()
        containers = container_seconds(built["results"])  # read now: the baseline's rebuild overwrites the logs
        published = stage(timed, "publish", repogen(paths.home, paths.config, "publish", "--require-boot",
                                                    "--site", str(paths.site), "--json"))
        live = paths.site.resolve()
        new_files = {str(p.relative_to(live)) for p in live.rglob("*") if p.is_file()} - before_keys
        uploaded = stage(timed, "upload", upload_cmd(paths, moto, bucket))
        s3_requests = list(moto.requests)
        urls = falcoctl_urls(f"{moto.url}/{bucket}/{PREFIX}", kernelrelease, "1")
        started = time.perf_counter()
        got = get_drivers(urls)
        timed.stages["GET"] = time.perf_counter() - started
        print(f"  {'GET':<8} {timed.stages['GET']:7.1f} s", flush=True)
        print(f"end of the timed part: {load_note()}", flush=True)
        irreducible = measure_baseline(paths, kernelrelease) if baseline else {}
    # -- checks -------------------------------------------------------------------------------------
    target = crawl["targets"][0]
    new_entries = [k["kernelrelease"] for k in target["kernels"]]
    goals.check("crawl: exactly the new kernel written", target["new"] == 1 and kernelrelease in new_entries
                and sum(w["entries"] for w in crawl["written"]) == 1,
                f"{target['new']} new of {target['found']} found, written {crawl['written']}")
    results = built["results"]
    built_jobs = sorted((r["kernelrelease"], r["kind"]) for r in results if r["status"] == "built")
    goals.check("build: exactly the new kernel's 2 jobs",
                built_jobs == [(kernelrelease, "ebpf"), (kernelrelease, "kmod")] and built["failed"] == 0,
                f"built {built_jobs}, failed {built['failed']}, "
                f"up to date {built['up_to_date']}")
    counters = built["counters"]
    fetched = sorted(p.rsplit("/", 1)[1] for p in mirror_gets if "/pool/" in p)
    older = info["older"]
    own = all(newest in name or name.startswith("linux-kbuild-") for name in fetched)
    goals.check("build: downloaded only the new kernel's packages", own and not any(older in n for n in fetched)
                and counters["prepares"] == 0 and counters["kernels_unpacked"] == 1,
                f"mirror GETs {fetched}; header_downloads {counters['header_downloads']}, "
                f"kernels_unpacked {counters['kernels_unpacked']}, prepares {counters['prepares']}")
    boots = [(r["kernelrelease"], r["kind"], (r.get("boot") or {}).get("status")) for r in results
             if r.get("boot")]
    booted = [b for b in boots if b[1] == "kmod"]
    goals.check("build --boot: booted only the new kernel's module", [b[0] for b in booted] == [kernelrelease]
                and booted[0][2] == "loaded", f"{boots}")
    artifacts = {r["kind"]: r["sha256"] for r in results if r["kernelrelease"] == kernelrelease}
    puts = sorted(path.removeprefix(f"/{bucket}/{PREFIX}/") for method, path, _ in s3_requests if method == "PUT")
    driver_puts = [p for p in puts if p.startswith(("driver/", "v1/"))]
    others = [p for p in puts if p not in driver_puts]
    indexes = {"index.json", "SHA256SUMS"}
    goals.check("upload: PUT only the new kernel's files and the indexes",
                bool(driver_puts) and all(kernelrelease in p for p in driver_puts)
                and set(driver_puts) == {k for k in new_files if k.startswith(("driver/", "v1/"))}
                and len(driver_puts) == len(set(driver_puts))
                and all(p in indexes or p.startswith(".repogen/") for p in others),
                f"{len(s3_requests)} requests; driver PUTs {driver_puts}; other PUTs {others}")
    goals.check("GET as falcoctl: the bytes are the built artifacts", got == artifacts and len(got) == 2,
                ", ".join(f"{k} {'ok' if got.get(k) == v else 'MISMATCH'}" for k, v in artifacts.items()))
    print(f"published: {published['artifacts']} artifacts; uploaded {uploaded['uploaded']} keys")
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in timed.stages.items())
    print(f"time to driver: {timed.total:.1f} s ({stages})")
    goals.check(f"time to driver < {GOAL_SECONDS:.0f} s", timed.total < GOAL_SECONDS, f"{timed.total:.1f} s")
    numbers = {"ttd": timed.total, **timed.stages}
    jobs = {r["kind"]: r["seconds"] for r in results if r["status"] == "built"}
    boot_seconds = sum(float((r.get("boot") or {}).get("seconds") or 0) for r in results if r["status"] == "built")
    print(f"  inside the build stage: jobs (--json) {', '.join(f'{k} {v:.1f}s' for k, v in jobs.items())}; "
          f"their containers (logs) {', '.join(f'{k} {v:.1f}s' for k, v in containers.items())}; "
          f"boot check {boot_seconds:.1f}s")
    if containers:
        floor = max(containers.values()) + boot_seconds  # the 2 containers ran side by side, then the boot
        print(f"  the same run's own floor: longest container + boot = {floor:.1f}s; "
              f"time to driver / floor = {timed.total / floor:.2f}")
        numbers["floor_ratio"] = timed.total / floor
    if irreducible:
        work = irreducible["rebuild"] + irreducible["boot"]
        print(f"baseline (irreducible work of that kernel): build --rebuild of its 2 jobs "
              f"{irreducible['rebuild']:.1f}s (jobs {irreducible['jobs']}) + boot check {irreducible['boot']:.1f}s "
              f"= {work:.1f}s")
        print(f"overhead ratio: time to driver / irreducible work = {timed.total / work:.2f}")
        numbers.update(irreducible, work=work, ratio=timed.total / work)
    return numbers


def container_seconds(results: list[dict[str, Any]]) -> dict[str, float]:
    """What each built job's container took (``# exit 0 after Ns`` in its log)."""
    out = {}
    for r in results:
        if r["status"] == "built" and r.get("log") and Path(r["log"]).is_file():
            m = re.search(r"(?m)^# exit 0 after ([\d.]+)s", Path(r["log"]).read_text(errors="replace"))
            if m:
                out[r["kind"]] = float(m.group(1))
    return out


def measure_baseline(paths: Paths, kernelrelease: str) -> dict[str, Any]:
    only = f"kernelrelease={kernelrelease}"
    rebuild = must(repogen(paths.home, paths.config, "build", "--only", only, "--rebuild", only, "--json",
                           timeout=3600), "baseline rebuild")
    if rebuild.json["built"] != 2:
        raise SystemExit(f"INVALID: the baseline rebuild built {rebuild.json['built']} jobs, not 2")
    boot = must(repogen(paths.home, paths.config, "verify", "--boot", "--recheck", f"{only},kind=kmod", "--json",
                        timeout=900), "baseline boot check")
    if boot.json["checked"] != 1 or boot.json["failed"]:
        raise SystemExit(f"INVALID: the baseline boot check: {boot.out[-1000:]}")
    containers = container_seconds(rebuild.json["results"])
    jobs = ", ".join(f"{r['kind']} {r['seconds']:.1f}s (container {containers.get(r['kind'], 0):.1f}s)"
                     for r in rebuild.json["results"])
    return {"rebuild": rebuild.seconds, "boot": boot.seconds, "jobs": jobs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="timed runs, each from the restored steady state")
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached setup (mirror, steady state)")
    parser.add_argument("--skip-baseline", action="store_true", help="do not measure the irreducible work")
    args = parser.parse_args()
    docker_ready()
    print(f"start: {load_note()}", flush=True)
    paths = Paths()
    info = setup(paths, args.fresh)
    print(f"the new kernel: {info['newest']}-amd64 (steady state: {info['older']}-amd64)", flush=True)
    goals = Goals()
    runs = []
    for i in range(max(1, args.runs)):
        print(f"-- run {i + 1}/{args.runs}", flush=True)
        runs.append(one_run(paths, info, goals, baseline=not args.skip_baseline, bucket=f"{BUCKET}-{i + 1}"))
    if len(runs) > 1:
        print("time to driver per run: " + ", ".join(f"{r['ttd']:.1f}s" for r in runs))
    print(f"end: {load_note()}")
    return goals.exit_code


if __name__ == "__main__":
    sys.exit(main())
