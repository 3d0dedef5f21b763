"""APT and RPM repositories of Falco's packages, written into a fresh staging tree.

The live tree is only read: its pool is what is already published (packages stay published even when
the inputs no longer list them), and its superseded metadata is carried forward for a grace period
so clients in the middle of an update never see a 404.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from repogen.bulk import paused_gc
from repogen.errors import PublishError
from repogen.repos.apt import publish_apt
from repogen.repos.pkgcache import PackageCache
from repogen.repos.pool import RepoStats
from repogen.repos.rpm import publish_rpm
from repogen.signing import Signer

log = logging.getLogger(__name__)

BASE_URL_PLACEHOLDER = "https://REPLACE-WITH-YOUR-BASE-URL"

__all__ = ["BASE_URL_PLACEHOLDER", "RepoOptions", "RepoReport", "RepoStats", "publish_repositories"]


@dataclass
class RepoOptions:
    """Repository settings; the defaults make a usable ``stable``/``main`` repository."""

    suite: str = "stable"
    codename: str | None = None  # None: same as suite
    component: str = "main"
    origin: str = "repogen"
    label: str = "repogen"
    architectures: list[str] | None = None  # None: those of the packages, plus amd64
    valid_until_days: int | None = None
    keep_versions: int | None = None  # None: keep every version ever published
    grace_seconds: int = 3 * 86400
    rpm_compression: Literal["gz", "zstd"] = "gz"
    base_url: str = BASE_URL_PLACEHOLDER  # written into the ready .sources and .repo files
    #: Packages to leave out of the new generation (``repogen packages remove``): (name, version or None).
    remove: list[tuple[str, str | None]] = field(default_factory=list)


@dataclass
class RepoReport:
    """What was published; ``deb``/``rpm`` are None when that repository has no packages at all."""

    deb: RepoStats | None = None
    rpm: RepoStats | None = None
    signed: bool = False
    fingerprint: str | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line per repository, for the CLI."""
        lines = []
        for name, stats in (("apt", self.deb), ("rpm", self.rpm)):
            if stats is not None:
                lines.append(
                    f"{name}: {stats.packages} packages ({stats.read} read, {stats.cached} from cache, "
                    f"{len(stats.added)} added, {len(stats.removed)} removed by retention"
                    + (f", {len(stats.dropped)} removed on request" if stats.dropped else "") + ")"
                )
        lines.append(f"signed with {self.fingerprint}" if self.signed else "UNSIGNED")
        return "\n".join(lines + self.notes)


def publish_repositories(
    out_dir: Path,
    previous_dir: Path | None,
    debs: list[Path],
    rpms: list[Path],
    signer: Signer | None,
    cache_dir: Path,
    options: RepoOptions,
    now: datetime | None = None,
    shared_pool: Path | None = None,
) -> RepoReport:
    """Write ``out_dir/deb`` and ``out_dir/rpm`` from the inputs plus what ``previous_dir`` publishes.

    With ``shared_pool`` (``publish`` passes ``.<site>.generations/pool``) the package files go to
    ``shared_pool/deb`` and ``shared_pool/rpm``, shared by every generation, and ``out_dir/deb/pool``
    and ``out_dir/rpm/packages`` are relative symbolic links there; without it each tree has its own
    pool (hard links to the previous one). Raises ``PublishError`` for any bad input before anything
    in ``previous_dir`` could be touched (it never is); ``out_dir`` may then hold a partial tree, which
    the caller discards (files added to the shared pool are then unlisted: garbage after the grace).
    """
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    if options.valid_until_days is not None and options.valid_until_days < 1:
        raise PublishError(f"valid_until_days must be at least 1 (got {options.valid_until_days})")
    if options.grace_seconds < 0:
        raise PublishError(f"grace_seconds must not be negative (got {options.grace_seconds})")
    report = RepoReport(signed=signer is not None, fingerprint=signer.fingerprint if signer else None)
    cache = PackageCache(Path(cache_dir))
    try:
        with paused_gc():
            _publish_each(report, out_dir, previous_dir, debs, rpms, signer, cache, options, now, shared_pool)
    finally:
        cache.close()
    if signer is None and (report.deb or report.rpm):
        note = ("repositories are UNSIGNED: apt needs [trusted=yes] (Trusted: yes), "
                "dnf needs gpgcheck=0 and repo_gpgcheck=0")
        log.warning(note)
        report.notes.append(note)
    return report


def _publish_each(report: RepoReport, out_dir: Path, previous_dir: Path | None, debs: list[Path], rpms: list[Path],
                  signer: Signer | None, cache: PackageCache, options: RepoOptions, now: datetime,
                  shared_pool: Path | None) -> None:
    for kind, inputs, publish in (("deb", debs, publish_apt), ("rpm", rpms, publish_rpm)):
        previous = previous_dir / kind if previous_dir is not None else None
        if previous is not None and not previous.is_dir():
            previous = None
        if not inputs and previous is None:
            continue
        stats = publish(out_dir / kind, previous, inputs, signer, cache, options, now,
                        shared_pool / kind if shared_pool is not None else None)
        setattr(report, kind, stats)
