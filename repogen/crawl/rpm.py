"""RPM repository reader: ``repodata/repomd.xml`` and the primary metadata, with createrepo_c's parser.

The primary file is checked against the checksum repomd.xml gives for it, so a truncated or garbage
file fails loudly. Only packages with the wanted names are kept.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from repogen.crawl import CrawlContext
from repogen.errors import FetchError
from repogen.mirrors import join


@dataclass(frozen=True, slots=True)
class RpmPackage:
    name: str
    epoch: str
    version: str
    release: str
    arch: str
    location: str  #: relative to the mirror (repository path + location_href), or a URL (see ``absolute``)
    sha256: str | None
    build_time: int
    repo: str
    #: The repository is outside the mirror (a mirror list named another host): ``location`` is a URL.
    absolute: bool = False

    @property
    def uname_release(self) -> str:
        """``uname -r`` of the kernel this package belongs to: ``<version>-<release>.<arch>``."""
        return f"{self.version}-{self.release}.{self.arch}"


def _repo_base(ctx: CrawlContext, mirror: str, repo_path: str) -> tuple[str, str | None]:
    """(URL of the repository, its path relative to the mirror or None when outside it); a
    ``mirror.list`` (Amazon Linux) names the real repository on its first line."""
    base = ctx.mirror(mirror)
    if not repo_path.endswith("mirror.list"):
        return join(base, repo_path), repo_path.strip("/")
    url = join(base, repo_path)
    lines = [line.strip() for line in ctx.read(url).decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines or not lines[0].startswith(("http://", "https://")):
        raise FetchError(f"{url}: not a mirror list (no URL on its first line)", url=url)
    real = lines[0].rstrip("/")
    return real, (real[len(base):].strip("/") if real.startswith(base + "/") else None)


def read_repo(ctx: CrawlContext, mirror: str, repo_path: str, names: set[str],
              arches: set[str]) -> list[RpmPackage]:
    """The packages named ``names`` for ``arches`` in one repository."""
    import createrepo_c as cr

    base_url, relative = _repo_base(ctx, mirror, repo_path)
    repomd_url = join(base_url, "repodata/repomd.xml")
    repomd_path = ctx.download(repomd_url)
    try:
        repomd = cr.Repomd(str(repomd_path))
        record = next((r for r in repomd.records if r.type == "primary"), None)
    except (cr.CreaterepoCError, OSError) as exc:
        raise FetchError(f"{repomd_url}: not a repomd.xml ({exc})", url=repomd_url) from None
    if record is None or not record.location_href:
        raise FetchError(f"{repomd_url}: names no primary metadata", url=repomd_url)
    primary_url = join(base_url, record.location_href)
    primary_path = ctx.download(primary_url)
    algorithm = (record.checksum_type or "sha256").lower()
    if algorithm in hashlib.algorithms_available and record.checksum:
        digest = hashlib.new(algorithm, primary_path.read_bytes()).hexdigest()
        if digest != record.checksum:
            raise FetchError(f"{primary_url}: {algorithm} does not match repomd.xml: a truncated or corrupt file, "
                             "or a mirror in the middle of a sync", url=primary_url)
    found: list[RpmPackage] = []

    def on_package(pkg: object) -> bool:
        name = pkg.name  # type: ignore[attr-defined]
        if name in names and pkg.arch in arches:  # type: ignore[attr-defined]
            sha = pkg.pkgId if (pkg.checksum_type or "").lower() == "sha256" else None  # type: ignore[attr-defined]
            href = pkg.location_href  # type: ignore[attr-defined]
            location = join(base_url, href) if relative is None else join(relative, href) if relative else href
            found.append(RpmPackage(name, str(pkg.epoch or "0"), pkg.version, pkg.release,  # type: ignore[attr-defined]
                                    pkg.arch, location, sha, int(pkg.time_build or 0),  # type: ignore[attr-defined]
                                    relative if relative is not None else base_url, absolute=relative is None))
        return True

    try:
        cr.xml_parse_primary(str(primary_path), pkgcb=on_package, do_files=False)
    except (cr.CreaterepoCError, OSError) as exc:
        raise FetchError(f"{primary_url}: cannot parse ({exc})", url=primary_url) from None
    return found


