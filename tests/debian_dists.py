"""Real Debian ``dists/`` trees on 127.0.0.1 for crawl tests and benchmarks.

apt, with a private configuration built from this machine's mirror (``scripts/debian_archive.py``),
downloads the real indexes of the requested suites and architectures; they are laid out again as a
mirror would serve them (``dists/<suite>/main/binary-<arch>/Packages.xz`` + a ``Release`` listing their
SHA256), one tree per mirror name (``debian``, ``debian-security``), and pool files are added on demand.
"""

from __future__ import annotations

import hashlib
import lzma
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from debian import deb822

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from debian_archive import AptArchive  # noqa: E402

from repogen import mirrors  # noqa: E402

_LIST = re.compile(r"_dists_([^_]+)_main_binary-([^_]+)_Packages(?:\.\w+)?$")


@dataclass
class DistsTree:
    root: Path  #: holds debian/ and debian-security/
    archives: dict[str, AptArchive]  #: mirror name -> the apt configuration that read it

    def pool_add(self, mirror: str, filename: str, spec: str) -> Path:
        """Download ``spec`` (name:arch=version) with apt and place it where the index says."""
        dest = self.root / mirror / filename
        if not dest.is_file():
            [got] = self.archives[mirror].download([spec], self.root / ".downloads")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.hardlink_to(got)
        return dest


def _index_text(path: Path) -> bytes:
    """A list file apt keeps (compressed as apt is configured) as plain text."""
    return subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(path)], check=True, capture_output=True,
                          timeout=300).stdout


def _publish(archive: AptArchive, tree: Path) -> None:
    stamp = archive.root / ".updated"
    done = tree / ".built"
    if done.is_file() and stamp.is_file() and done.stat().st_mtime >= stamp.stat().st_mtime:
        return
    per_suite: dict[str, list[dict[str, str]]] = {}
    for path in sorted(archive.lists.iterdir()):
        m = _LIST.search(path.name)
        if not m:
            continue
        suite, arch = m.groups()
        name = f"main/binary-{arch}/Packages.xz"
        data = lzma.compress(_index_text(path), preset=1)
        out = tree / "dists" / suite / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        per_suite.setdefault(suite, []).append({"sha256": hashlib.sha256(data).hexdigest(), "size": str(len(data)),
                                               "name": name})
    for suite, files in per_suite.items():
        release = deb822.Release()
        release["Suite"] = suite
        release["Date"] = "Mon, 23 Nov 2026 00:00:00 UTC"
        release["SHA256"] = files
        (tree / "dists" / suite / "Release").write_text(release.dump())
    done.touch()


def build(cache: Path, suites: list[str], architectures: list[str]) -> DistsTree:
    """Indexes of ``suites`` (``*-security`` from the security mirror) for ``architectures``, served as trees."""
    groups = {"debian": [s for s in suites if not s.endswith("-security")],
              "debian-security": [s for s in suites if s.endswith("-security")]}
    root = cache / "dists-mirror"
    archives = {}
    for name, group in groups.items():
        if not group:
            continue
        url = mirrors.default(name)
        assert url, f"this machine's apt sources give no {name} mirror"
        archive = AptArchive(cache / f"apt-{name}", group, architectures, mirror=url)
        archive.update()
        _publish(archive, root / name)
        archives[name] = archive
    return DistsTree(root, archives)
