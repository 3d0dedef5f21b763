#!/usr/bin/env python3
"""Install Debian's static arm64 busybox where repogen's aarch64 boot check looks for it.

    scripts/arm64_busybox.py [--dest /usr/local/lib/repogen/busybox-aarch64]

The VM that loads an aarch64 module runs one program from outside it: a static busybox of its
architecture. Debian ships one (``busybox-static:arm64``); it is fetched with a private apt
configuration (scripts/debian_archive.py: the machine's own mirror, nothing of the system's apt touched)
and unpacked once. Run by scripts/setup.sh; a no-op when the file is there.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from debian_archive import AptArchive, deb_member

from repogen.boot import AARCH64_BUSYBOX, busybox_for
from repogen.errors import RepogenError


def install(dest: Path, apt_dir: Path) -> Path:
    archive = AptArchive(apt_dir, suites=["bookworm"], architectures=["arm64"])
    archive.update()
    versions = [v for v, arch, suite in archive.versions("busybox-static:arm64") if arch == "arm64"]
    if not versions:
        raise SystemExit("the mirror has no busybox-static for arm64")
    with tempfile.TemporaryDirectory(prefix="repogen-busybox-") as tmp:
        (deb,) = archive.download([f"busybox-static:arm64={versions[0]}"], Path(tmp))
        return deb_member(deb, "./bin/busybox", dest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=Path(AARCH64_BUSYBOX))
    parser.add_argument("--apt-dir", type=Path, default=Path.home() / ".cache" / "repogen" / "apt-bookworm-arm64",
                        help="private apt state (default: %(default)s)")
    args = parser.parse_args()
    os.environ["REPOGEN_BUSYBOX_AARCH64"] = str(args.dest)
    try:
        if args.dest.exists() and busybox_for("aarch64"):
            print(f"{args.dest}: present")
            return 0
    except RepogenError:
        pass  # not a static arm64 busybox: replaced below
    install(args.dest, args.apt_dir)
    busybox_for("aarch64")  # refuses anything but a static aarch64 ELF
    print(f"{args.dest}: installed (Debian busybox-static:arm64)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
