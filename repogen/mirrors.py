"""Mirror names: where a distribution's packages are published, resolved at run time.

kernels.yaml may write header and image URLs relative to a named mirror
(``{mirror: debian, path: pool/main/l/linux/...}``) so one matrix moves between mirrors and proxies. A
name resolves to, in order: the file's own ``mirrors:`` map, ``--mirror NAME=URL`` on the command line,
then a default. Debian's default is the archive this machine's apt already uses (its sources are read
at run time, so no archive host is written anywhere); other distributions default to their public
mirrors.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

#: Public mirrors of distributions this machine's apt does not know.
PUBLIC: dict[str, str] = {
    "ubuntu": "http://archive.ubuntu.com/ubuntu",
    "ubuntu-ports": "http://ports.ubuntu.com/ubuntu-ports",
    "centos-stream": "https://mirror.stream.centos.org",
    "rocky": "https://dl.rockylinux.org/pub/rocky",
    "almalinux": "https://repo.almalinux.org/almalinux",
    "fedora": "https://dl.fedoraproject.org/pub/fedora/linux",
    "ol": "https://yum.oracle.com/repo/OracleLinux",
    "amazonlinux2": "https://amazonlinux-2-repos-us-east-1.s3.dualstack.us-east-1.amazonaws.com/2/core/latest",
    "amazonlinux2023": "https://cdn.amazonlinux.com/al2023/core/mirrors/latest",
}

#: Mirrors with no public default (a subscription, a private proxy): give them with --mirror or mirrors:.
NO_DEFAULT = ("rhel",)

_APT_SOURCES = Path("/etc/apt/sources.list.d")


def _apt_uris() -> list[str]:
    from debian import deb822

    uris: list[str] = []
    for path in sorted(_APT_SOURCES.glob("*.sources")) if _APT_SOURCES.is_dir() else []:
        with path.open(encoding="utf-8") as fh:
            for para in deb822.Deb822.iter_paragraphs(fh):
                uris.extend(para.get("URIs", "").split())
    for path in [Path("/etc/apt/sources.list"), *sorted(_APT_SOURCES.glob("*.list"))]:
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)", line)
                if m:
                    uris.append(m.group(1))
    return [u.rstrip("/") for u in uris]


@functools.cache
def _host_debian() -> dict[str, str]:
    from repogen.images import host_debian_mirror

    found: dict[str, str] = {}
    archive = host_debian_mirror()
    if archive:
        found["debian"] = archive
    try:
        uris = _apt_uris()
    except (OSError, UnicodeDecodeError):
        uris = []
    security = next((u for u in uris if u.endswith("/debian-security")), None)
    if security is None and archive and archive.endswith("/debian"):
        security = archive + "-security"
    if security:
        found["debian-security"] = security
    return found


def default(name: str) -> str | None:
    """The URL a mirror name means when neither the matrix nor the command line says."""
    if name in ("debian", "debian-security"):
        return _host_debian().get(name)
    return PUBLIC.get(name)


def known() -> list[str]:
    return sorted({"debian", "debian-security", *PUBLIC, *NO_DEFAULT})


def resolve(name: str, given: dict[str, str]) -> str | None:
    """``given`` (the matrix's ``mirrors:`` and ``--mirror``) first, then the default."""
    url = given.get(name) or default(name)
    return url.rstrip("/") if url else None


def join(base: str, path: str) -> str:
    return f"{base.rstrip('/')}/{path.lstrip('/')}"
