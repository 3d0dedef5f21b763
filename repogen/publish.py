"""Write the static tree and swap it in atomically: a reader never sees a half tree.

``site`` is a symbolic link to one complete generation under ``.<site>.generations/``; publishing
writes a new generation beside it and renames a new link over ``site`` (one atomic rename(2)).
If anything fails (a full disk included), the new generation is removed and the live tree is left
exactly as it was.

The APT and RPM package files are not in the generations: they live once in a shared, append-only
pool, ``.<site>.generations/pool/deb/pool/...`` and ``.<site>.generations/pool/rpm/packages/...``,
and each generation's ``deb/pool`` and ``rpm/packages`` are relative symbolic links to it
(``../../pool/deb/pool``), so adding one package writes one file instead of re-linking the whole
pool. Everything reachable from ``site`` is a regular file or a relative symlink that stays inside
``site``'s parent directory: a reader (HTTP server, ``repogen upload``) that follows symlinks sees
one complete tree. Which packages a generation publishes is its ``repogen-pool.json`` manifest (the
paths its indexes list); pool files that no generation on disk lists are deleted once they have
been unlisted for the grace period (``packages.grace-period``), see ``repos.pool.collect_garbage``.
"""

from __future__ import annotations

import base64
import datetime as dt
import errno
import hashlib
import json
import os
import secrets
import shutil
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repogen import __version__, atomic, failpoints, locks
from repogen.errors import PublishError
from repogen.home import Home
from repogen.matrix import expand
from repogen.model import Config, Job, Kind

KEEP_GENERATIONS = 3
#: The shared package pool inside ``.<site>.generations/`` (never a generation itself).
SHARED_POOL = "pool"
REPOSITORY_DIRS = ("deb", "rpm")
ADOPTED = "adopted-"  # a user's directory moved aside by --adopt: never pruned


@dataclass
class PublishReport:
    site: Path
    generation: Path
    artifacts: int
    missing: list[str] = field(default_factory=list)
    signed: bool = False
    repos: Any = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (job id, reason): --require-boot
    from_cache: int = 0  # artifacts brought in from the remote build cache


def generations_dir(site: Path) -> Path:
    return site.parent / f".{site.name}.generations"


def live_tree(site: Path) -> Path | None:
    """The generation ``site`` points at now (None before the first publish)."""
    if site.is_symlink() or site.is_dir():
        return site.resolve()
    return None


def driver_path(job: Job) -> str:
    """falcoctl / falco-driver-loader layout: ``driver/<version>/<arch>/<name>_<target>_<release>_<version>``."""
    return f"driver/{job.driver.version}/{job.kernel.architecture}/{job.artifact_name}"


def v1_path(job: Job, headers_config_sha256: str | None) -> str:
    """The original build service's layout, with the kernel config's sha256 as the last directory:
    of ``kernelconfigdata`` when the matrix gives it (what the service's clients sent), else of the
    headers' own ``.config``."""
    k = job.kernel
    config_sha256 = headers_config_sha256
    if k.kernelconfigdata:
        config_sha256 = hashlib.sha256(base64.b64decode(k.kernelconfigdata)).hexdigest()
    return (f"v1/module/{k.target}/{k.architecture}/{job.driver.version}/{k.kernelrelease}/{k.kernelversion}/"
            f"{config_sha256 or 'unknown'}/{job.driver.name}{job.kind.extension}")


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)  # same filesystem as the store: no copy, no space
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copyfile(src, dest)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def publish(
    home: Home,
    config: Config,
    site: Path,
    *,
    signer: Any = None,
    debs: list[Path] | None = None,
    rpms: list[Path] | None = None,
    repo_options: Any = None,
    now: dt.datetime | None = None,
    require_boot: bool = False,
    remote: Any = None,
    adopt: bool = False,
) -> PublishReport:
    """Publish the drivers and the repositories to ``site``: a new generation, swapped in atomically.

    The APT and RPM repositories keep every package the live tree publishes, with or without new
    ones (retention and an explicit ``repo_options.remove`` are the only ways out). A ``site`` that
    is a directory repogen did not make is refused, unless ``adopt``: then its content is moved to
    ``.<site>.generations/adopted-<time>`` and kept there (never pruned).
    """
    site = site.absolute()
    from_cache = _from_remote_cache(home, config, remote) if remote is not None else 0
    now = now or dt.datetime.now(dt.UTC)
    generations = generations_dir(site)
    with site_lock(site, "publishing"):
        _check_site(site, adopt)
        generations.mkdir(parents=True, exist_ok=True)
        _sweep(site, generations)
        live = live_tree(site)
        name = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"
        final = generations / name
        staging = generations / f"{locks.owned(name)}.staging"  # swept at once if this run is killed
        staging.mkdir()
        try:
            report = _fill(home, config, staging, live, signer=signer, debs=debs or [], rpms=rpms or [],
                           repo_options=repo_options, now=now, site=site,
                           require_boot=require_boot)
            os.chmod(staging, 0o755)
            failpoints.reached("publish-filled")
            atomic.fsync_tree(staging)  # every byte on disk before a name points at it
            if (generations / SHARED_POOL).is_dir():  # the packages the new tree links to
                atomic.sync_filesystem(generations / SHARED_POOL)
            os.rename(staging, final)
            atomic.fsync_dir(generations)
            failpoints.reached("publish-renamed")
            swap_live(site, final, generations)
            report.generation = final
            report.from_cache = from_cache
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if live_tree(site) != final:
                shutil.rmtree(final, ignore_errors=True)
            what = "the disk is full" if exc.errno == errno.ENOSPC else f"{exc.strerror or exc}"
            raise PublishError(f"publishing to {site} failed: {what}"
                               f"{f' ({exc.filename})' if exc.filename else ''}; the live tree is unchanged") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if live_tree(site) != final:
                shutil.rmtree(final, ignore_errors=True)
            raise
        failpoints.reached("publish-swapped")
        _prune(generations, keep=final)
        if report.repos is not None:
            from repogen.repos.pool import collect_garbage

            grace = getattr(repo_options, "grace_seconds", 3 * 86400)
            collect_garbage(generations / SHARED_POOL, _generation_dirs(generations, staging=True), now, grace,
                            every_seconds=min(grace / 10, 3600))
    return report


def _from_remote_cache(home: Home, config: Config, remote: Any) -> int:
    """Bring in from the shared build cache what this home lacks (built elsewhere, or files gone)."""
    from repogen.plan import plan
    from repogen.remote_cache import restore_missing

    return restore_missing(home.store, plan(home, expand(config), home.store.toolchain_ids()), remote)


def _generation_dirs(generations: Path, *, staging: bool = False) -> list[Path]:
    """The generations on disk (and the staging trees of publishes under way, when asked)."""
    return [p for p in generations.iterdir()
            if p.is_dir() and not p.is_symlink() and p.name != SHARED_POOL
            and (staging or not p.name.endswith(".staging"))]


def site_lock(site: Path, what: str) -> AbstractContextManager[None]:
    """The one lock of a published tree, whichever home or checkout works on it: publish, rollback and
    gc of its generations take it (``.<site>.lock`` beside it, removed when released), so none of them
    swaps, prunes or sweeps under another."""
    site = site.absolute()
    return locks.KeyLocks(site.parent).hold(f".{site.name}", f"{what} {site}")


def _check_site(site: Path, adopt: bool) -> None:
    """A plain directory with content is the user's, not a generation: never take it silently."""
    if site.is_symlink() or not site.exists():
        return
    if not site.is_dir():
        raise PublishError(f"{site} exists and is not a directory", hint="publish to another --site")
    entries = sorted(p.name for p in site.iterdir())
    if entries and not adopt:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise PublishError(
            f"{site} is a directory repogen did not make ({len(entries)} entries: {shown}); "
            "refusing to replace it",
            hint=f"publish to a new --site, or pass --adopt to move its content to "
                 f"{generations_dir(site)}/adopted-<time> (kept, never pruned) and link {site} to the new tree")


def _sweep(site: Path, generations: Path) -> None:
    """What publishers killed mid-way left: staging trees, half-pruned generations, link files."""
    locks.sweep(generations)
    for link in site.parent.glob(f".{site.name}.link~run*"):
        owner = locks.owner_of(link.name)
        if owner is not None and not locks.alive(owner):
            link.unlink(missing_ok=True)


def _fill(home: Home, config: Config, out: Path, live: Path | None, *, signer: Any, debs: list[Path],
          rpms: list[Path], repo_options: Any, now: dt.datetime, site: Path,
          require_boot: bool = False) -> PublishReport:
    from repogen.boot import summaries

    good_keys = home.store.good_keys()
    jobs = expand(config)
    boots = summaries(home, jobs)
    good = {j.job_id: good_keys[j.job_id] for j in jobs if good_keys.get(j.job_id)}
    records = home.store.builds([k for k in good.values() if k])
    report = PublishReport(site=site, generation=out, artifacts=0)
    entries: list[dict[str, Any]] = []
    for job in jobs:
        record = records.get(good.get(job.job_id) or "")
        if record is None or record.status != "ok" or not record.artifact_sha256:
            report.missing.append(job.job_id)
            continue
        obj = home.store.object_path(record.artifact_sha256)
        if not obj.is_file() or obj.stat().st_size != record.size:
            report.missing.append(job.job_id)
            continue
        boot = boots.get(job.job_id)
        if require_boot and (boot is None or not boot.status.passed):
            report.skipped.append((job.job_id, f"boot check: {boot.describe() if boot else 'not run'}"))
            continue
        paths = [driver_path(job), v1_path(job, record.kernel_config_sha256)]
        for rel in paths:
            _place(obj, out / rel)
        k = job.kernel
        entries.append({
            "path": paths[0], "v1_path": paths[1], "sha256": record.artifact_sha256, "size": record.size,
            "name": job.driver.name, "driverversion": job.driver.version, "kind": job.kind.value,
            "target": k.target, "kernelrelease": k.kernelrelease, "kernelversion": k.kernelversion,
            "architecture": k.architecture, "vermagic": record.vermagic,
            "builder_image": record.image_id, "toolchain": record.toolchain,
            "built_at": dt.datetime.fromtimestamp(record.finished_at or 0, dt.UTC).isoformat(timespec="seconds"),
            "build_key": record.build_key, "boot": boot.summary() if boot else None,
        })
    report.artifacts = len(entries)
    # The live repositories are kept whether or not this publish brings new packages.
    removals = bool(repo_options and repo_options.remove)
    if debs or rpms or removals or (live is not None and any((live / d).is_dir() for d in REPOSITORY_DIRS)):
        from repogen.repos import RepoOptions, publish_repositories

        report.repos = publish_repositories(out, live, debs, rpms, signer, home.path / "cache" / "repos",
                                            repo_options or RepoOptions(), now=now,
                                            shared_pool=out.parent / SHARED_POOL)
        failpoints.reached("publish-repositories")
    index = {"generator": f"repogen {__version__}", "generated_at": now.isoformat(timespec="seconds"),
             "kinds": {Kind.kmod.value: ".ko", Kind.ebpf.value: ".o"}, "artifacts": entries}
    _write(out / "index.json", json.dumps(index, indent=1, sort_keys=True).encode() + b"\n")
    # SHA256SUMS covers the drivers and index.json; the APT and RPM repositories carry their own
    # signed indexes (Release, repomd.xml) with every file's hash, so their pools are not hashed again.
    known = {e[p]: e["sha256"] for e in entries for p in ("path", "v1_path")}
    lines = []
    covered: list[Path] = []
    for top in out.iterdir():
        if top.name in REPOSITORY_DIRS or top.name in ("SHA256SUMS", "SHA256SUMS.asc"):
            continue
        covered.extend(p for p in ([top] if top.is_file() else top.rglob("*")) if p.is_file() and not p.is_symlink())
    for path in sorted(covered):
        rel = path.relative_to(out).as_posix()
        lines.append(f"{known.get(rel) or _sha256(path)}  {rel}\n")
    sums = "".join(lines).encode()
    _write(out / "SHA256SUMS", sums)
    if signer is not None:
        _write(out / "SHA256SUMS.asc", signer.detach_sign(sums, armor=True))
        report.signed = True
    return report


def swap_live(site: Path, generation: Path, generations: Path) -> None:
    """Point ``site`` at ``generation`` with one atomic rename (publish and rollback)."""
    if site.exists() and not site.is_symlink():
        if site.is_dir() and any(site.iterdir()):
            # Asked to adopt (checked before): move the user's directory aside, for good.
            os.replace(site, generations / f"{ADOPTED}{int(time.time())}")
        elif site.is_dir():
            site.rmdir()
        else:
            raise PublishError(f"{site} exists and is not a directory")
    link = site.with_name(locks.owned(f".{site.name}.link"))
    link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(generation, site.parent), link)
    os.replace(link, site)
    atomic.fsync_dir(site.parent)


def _prune(generations: Path, keep: Path) -> None:
    """Keep the live generation and the ones before it (old readers finish their downloads), and
    whatever was adopted; an old one is renamed to a scratch name first, so a kill mid-way leaves
    nothing that looks like a generation."""
    done = sorted((p for p in _generation_dirs(generations)
                   if locks.owner_of(p.name) is None and not p.name.startswith((ADOPTED, "."))),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    for old in done[KEEP_GENERATIONS:]:
        if old != keep:
            trash = old.with_name(locks.owned(f".{old.name}.pruned"))
            os.rename(old, trash)
            shutil.rmtree(trash, ignore_errors=True)
