#!/usr/bin/env python3
"""Fetch real Debian kernel headers through this machine's apt configuration into a local mirror.

For the demo and the tests: picks the newest N ``linux-headers-<abi>-<flavour>`` packages that apt
can see, downloads each with its ``-common`` and a ``linux-kbuild`` package (``apt-get download``,
so no archive host is named anywhere), and writes a kernels.yaml fragment whose headers URLs point
at a server on 127.0.0.1 serving the mirror directory.

    python3 scripts/debian_headers.py --count 3 --dest .demo/mirror --base-url http://127.0.0.1:8099 \
        --kernels-out examples/kernels.d/debian-demo.yaml
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def _madison(package: str) -> list[str]:
    proc = subprocess.run(["apt-cache", "madison", package], capture_output=True, text=True, check=False)
    return [line.split("|")[1].strip() for line in proc.stdout.splitlines() if line.count("|") >= 2]


def _version_key(version: str) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"[.\-+~]", version)]


def available(flavour: str, series: str) -> list[tuple[str, str]]:
    """(abi, package version) of every headers package for ``flavour`` apt knows, newest first."""
    proc = subprocess.run(["apt-cache", "pkgnames", f"linux-headers-{series}"], capture_output=True, text=True,
                          check=True)
    pattern = re.compile(rf"linux-headers-({re.escape(series)}-\d+)-{re.escape(flavour)}")
    found = []
    for name in proc.stdout.split():
        m = pattern.fullmatch(name)
        if m:
            versions = _madison(name)
            if versions:
                found.append((m.group(1), versions[0]))
    found.sort(key=lambda item: int(item[0].rsplit("-", 1)[1]), reverse=True)
    return found


def kbuild_for(series_major: str, version: str) -> str:
    """The linux-kbuild version matching ``version`` if apt has it, else the nearest newer, else newest."""
    versions = _madison(f"linux-kbuild-{series_major}")
    if not versions:
        raise SystemExit(f"apt knows no linux-kbuild-{series_major}: run `apt-get update`")
    if version in versions:
        return version
    newer = sorted((v for v in versions if _version_key(v) >= _version_key(version)), key=_version_key)
    return newer[0] if newer else sorted(versions, key=_version_key)[-1]


def download(packages: list[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    missing = []
    for spec in packages:
        name, _, version = spec.partition("=")
        arch = "all" if name.endswith("-common") else "amd64"
        if not list(dest.glob(f"{name}_{version.replace(':', '%3a')}_{arch}.deb")):
            missing.append(spec)
    if missing:
        apt_download(["apt-get", "download", "-q", *missing], dest)


def apt_download(command: list[str], dest: Path) -> None:
    """Run ``apt-get download`` in a scratch directory apt's sandbox user (_apt) may write, then move
    the files to ``dest``: as root into a root-only directory, apt warns "Download is performed
    unsandboxed as root" once per file."""
    with tempfile.TemporaryDirectory(prefix="repogen-apt-") as scratch:
        # Without a sandbox user on this system, apt runs as root and does not warn.
        if os.geteuid() == 0 and any(user.pw_name == "_apt" for user in pwd.getpwall()):
            os.chown(scratch, pwd.getpwnam("_apt").pw_uid, -1)
        subprocess.run(command, cwd=scratch, check=True, stdout=subprocess.DEVNULL)
        for path in Path(scratch).glob("*.deb"):
            shutil.move(str(path), dest / path.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--skip", type=int, default=0, help="skip the newest N kernels")
    parser.add_argument("--flavour", default="amd64")
    parser.add_argument("--series", default="6.1.0")
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--base-url", required=True, help="URL the mirror directory is served at")
    parser.add_argument("--kernels-out", type=Path, help="write a kernels.yaml fragment here")
    parser.add_argument("--json", action="store_true", help="print the kernels as JSON")
    parser.add_argument("--image", action="store_true",
                        help="also download each kernel's linux-image package and give it as image: (boot check)")
    args = parser.parse_args()

    kernels = available(args.flavour, args.series)[args.skip:args.skip + args.count]
    if len(kernels) < args.count:
        print(f"only {len(kernels)} linux-headers-{args.series}-*-{args.flavour} packages known to apt "
              "(run `apt-get update`?)", file=sys.stderr)
        return 1
    entries = []
    major = ".".join(args.series.split(".")[:2])
    for abi, version in kernels:
        kbuild = kbuild_for(major, version)
        specs = [f"linux-headers-{abi}-common={version}", f"linux-headers-{abi}-{args.flavour}={version}",
                 f"linux-kbuild-{major}={kbuild}"]
        download(specs, args.dest)
        headers = []
        for spec in specs:
            name, _, ver = spec.partition("=")
            path = next(args.dest.glob(f"{name}_{ver.replace(':', '%3a')}_*.deb"))
            headers.append({"url": f"{args.base_url.rstrip('/')}/{path.name}",
                            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
        # Falco's identifiers for Debian (kernel-crawler): <package version>-<flavour>, kernelversion 1.
        entry = {"target": "debian", "kernelrelease": f"{version}-{args.flavour}", "kernelversion": "1",
                 "architecture": "x86_64", "headers": headers, "uname_r": f"{abi}-{args.flavour}"}
        if args.image:
            name = f"linux-image-{abi}-{args.flavour}"
            versions = _madison(name)
            if not versions:
                print(f"apt knows no {name} (run `apt-get update`?)", file=sys.stderr)
                return 1
            image_version = version if version in versions else versions[0]
            download([f"{name}={image_version}"], args.dest)
            path = next(args.dest.glob(f"{name}_{image_version.replace(':', '%3a')}_*.deb"))
            entry["image"] = {"url": f"{args.base_url.rstrip('/')}/{path.name}",
                              "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        entries.append(entry)
    if args.kernels_out:
        args.kernels_out.parent.mkdir(parents=True, exist_ok=True)
        lines = ["# Generated by scripts/debian_headers.py: real Debian kernels served from a local mirror.",
                 "kernels:"]
        for e in entries:
            lines += [f"  - target: {e['target']}  # uname -r: {e['uname_r']}",
                      f"    kernelrelease: {e['kernelrelease']}",
                      f"    kernelversion: \"{e['kernelversion']}\"",
                      f"    architecture: {e['architecture']}",
                      "    headers:"]
            for h in e["headers"]:
                lines += [f"      - url: {h['url']}", f"        sha256: {h['sha256']}"]
            if "image" in e:
                lines += [f"    image: {{url: {e['image']['url']}, sha256: {e['image']['sha256']}}}"]
        args.kernels_out.write_text("\n".join(lines) + "\n")
    if args.json:
        print(json.dumps(entries, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
