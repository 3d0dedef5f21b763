"""What a published tree's APT and RPM repositories hold (``repogen packages list``), read from
the package files each repository's manifest lists (the pool itself, for trees without one): the
pool is the repositories' source of truth, the indexes are derived from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from repogen.errors import PublishError
from repogen.repos.apt import read_deb
from repogen.repos.pool import published_in
from repogen.repos.rpm import read_rpm


@dataclass(frozen=True)
class PublishedPackage:
    kind: str  # "deb" or "rpm"
    name: str
    version: str  # deb: the Version field; rpm: [epoch:]version-release
    arch: str
    size: int
    path: str  # relative to the tree

    def matches(self, name: str, version: str | None) -> bool:
        """``NAME`` or ``NAME=VERSION`` (rpm also by version alone or version-release)."""
        if self.name != name:
            return False
        if version is None:
            return True
        spellings = {self.version}
        if self.kind == "rpm":
            evr = self.version.split(":", 1)[-1]
            spellings |= {evr, evr.rsplit("-", 1)[0], f"0:{evr}"}
        return version in spellings


def published_packages(tree: Path) -> list[PublishedPackage]:
    """Every package in ``tree/deb/pool`` and ``tree/rpm/packages``, sorted by kind, name, path."""
    found: list[PublishedPackage] = []
    for path in published_in(tree / "deb", "pool", ".deb"):
        deb = read_deb(path)
        if isinstance(deb, str):
            raise PublishError(f"{path}: {deb}")
        found.append(PublishedPackage("deb", deb.name, deb.version, deb.arch, deb.size,
                                      str(Path(path).relative_to(tree))))
    for path in published_in(tree / "rpm", "packages", ".rpm"):
        rpm = read_rpm(path)
        if isinstance(rpm, str):
            raise PublishError(f"{path}: {rpm}")
        epoch = f"{rpm.epoch}:" if rpm.epoch not in ("", "0", None) else ""
        found.append(PublishedPackage("rpm", rpm.name, f"{epoch}{rpm.version}-{rpm.release}", rpm.arch, rpm.size,
                                      str(Path(path).relative_to(tree))))
    found.sort(key=lambda p: (p.kind, p.name, p.path))
    return found
