"""The published generations beside ``site``: list them, and roll ``site`` back to one, atomically.

A generation is a complete tree in ``.<site>.generations/``; ``site`` is a symbolic link to the
live one. Rolling back is the same single rename(2) that publishing does, so a reader sees the
old tree or the new one, never a mix.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from repogen import locks
from repogen.errors import PublishError, UsageError
from repogen.publish import SHARED_POOL, generations_dir, live_tree, site_lock, swap_live
from repogen.repos.pool import MANIFEST_FILE, read_manifest


@dataclass(frozen=True)
class Generation:
    name: str
    path: Path
    created: float  # the directory's modification time: when publishing finished writing it
    live: bool
    artifacts: int | None  # drivers in its index.json (None when unreadable)
    debs: int
    rpms: int
    signed: bool

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "path": str(self.path), "live": self.live, "artifacts": self.artifacts,
                "debs": self.debs, "rpms": self.rpms, "signed": self.signed,
                "created": dt.datetime.fromtimestamp(self.created, dt.UTC).isoformat(timespec="seconds")}


def _count(repository: Path, top: str, suffix: str) -> int:
    """Packages the repository lists (its manifest: its pool may be the shared one, holding more)."""
    try:
        return sum(1 for path in read_manifest(repository / MANIFEST_FILE) if path.endswith(suffix))
    except (FileNotFoundError, PublishError):
        pass
    root = repository / top
    if not root.is_dir():
        return 0
    return sum(1 for _dir, _dirs, files in os.walk(root) for name in files if name.endswith(suffix))


def _artifacts(tree: Path) -> int | None:
    try:
        return len(json.loads((tree / "index.json").read_text())["artifacts"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def generations(site: Path) -> list[Generation]:
    """Every complete generation, oldest first (staging directories of a running publish excluded)."""
    site = site.absolute()
    directory = generations_dir(site)
    if not directory.is_dir():
        return []
    live = live_tree(site)
    found = []
    for path in directory.iterdir():
        # Not a generation: a publish's staging, a scratch name (a pruned tree being removed), or the
        # shared package pool.
        if (not path.is_dir() or path.is_symlink() or path.name.endswith(".staging") or path.name == SHARED_POOL
                or path.name.startswith(".") or locks.owner_of(path.name)):
            continue
        found.append(Generation(
            name=path.name, path=path, created=path.stat().st_mtime, live=path == live,
            artifacts=_artifacts(path), debs=_count(path / "deb", "pool", ".deb"),
            rpms=_count(path / "rpm", "packages", ".rpm"), signed=(path / "SHA256SUMS.asc").is_file()))
    found.sort(key=lambda g: (g.created, g.name))
    return found


def rollback(site: Path, name: str | None = None) -> tuple[Generation, Generation | None]:
    """Point ``site`` at generation ``name`` (a unique prefix will do), or at the one published before
    the live one. Returns (the new live generation, the one it replaced). Holds the site's lock, so a
    publish never prunes the target nor swaps the link under it."""
    site = site.absolute()
    if not generations_dir(site).is_dir():
        raise UsageError(f"{site} has no published generation", hint="run `repogen publish` first")
    with site_lock(site, "rolling back"):
        return _rollback(site, name)


def _rollback(site: Path, name: str | None) -> tuple[Generation, Generation | None]:
    known = generations(site)
    if not known:
        raise UsageError(f"{site} has no published generation", hint="run `repogen publish` first")
    live = next((g for g in known if g.live), None)
    if name is None:
        if live is None:
            raise PublishError(f"{site} does not point at a generation repogen knows; name one to roll back to",
                               hint="`repogen generations` lists them")
        older = [g for g in known if (g.created, g.name) < (live.created, live.name)]
        if not older:
            raise UsageError(f"{live.name} is the oldest generation kept: nothing to roll back to",
                             hint="`repogen generations` lists them")
        target = older[-1]
    else:
        matches = [g for g in known if g.name == name] or [g for g in known if g.name.startswith(name)]
        if len(matches) != 1:
            names = ", ".join(g.name for g in known)
            raise UsageError(f"{'no' if not matches else 'more than one'} generation named {name!r} "
                             f"(kept: {names})")
        target = matches[0]
    if target.artifacts is None:
        raise PublishError(f"generation {target.name} has no readable index.json: refusing to serve it")
    if not target.live:
        swap_live(site, target.path, generations_dir(site))
    return target, live
