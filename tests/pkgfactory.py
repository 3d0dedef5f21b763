"""Build small real packages for tests with the real tools (``dpkg-deb --build``, ``rpmbuild``)."""

from __future__ import annotations

import hashlib
import subprocess
import textwrap
from pathlib import Path


def _tag(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]


def make_deb(
    out_dir: Path,
    name: str,
    version: str,
    arch: str = "amd64",
    *,
    source: str | None = None,
    payload: str = "hello",
    file_name: str | None = None,
    nocheck: bool = False,
    depends: str | None = None,
) -> Path:
    """A minimal .deb holding one file whose text is ``payload`` (vary it to vary the contents)."""
    work = out_dir / f".build-{_tag(name, version, arch, payload)}"
    (work / "DEBIAN").mkdir(parents=True, exist_ok=True)
    data_dir = work / "usr" / "share" / "repogen-test" / _tag(name)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "README").write_text(payload + "\n")
    control = textwrap.dedent(f"""\
        Package: {name}
        Version: {version}
        Architecture: {arch}
        Maintainer: repogen tests <test@example.invalid>
        Installed-Size: 1
        Section: misc
        Priority: optional
        Description: test package {name}
         Built by repogen's test suite.
        """)
    if source:
        control = control.replace("Section:", f"Source: {source}\nSection:")
    if depends:
        control = control.replace("Section:", f"Depends: {depends}\nSection:")
    (work / "DEBIAN" / "control").write_text(control)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / (file_name or f"{name}_{version.split(':')[-1]}_{arch}.deb")
    checks = ["--nocheck"] if nocheck else []  # to build the malformed packages tests need
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", *checks, "--build", str(work), str(target)],
                   check=True, capture_output=True, timeout=60)
    return target


def make_rpm(
    out_dir: Path,
    name: str,
    version: str,
    release: str = "1",
    arch: str = "x86_64",
    *,
    payload: str = "hello",
    epoch: int | None = None,
    sign_with: tuple[Path, str] | None = None,
) -> Path:
    """A minimal .rpm holding one file whose text is ``payload``; ``arch`` may be noarch/aarch64.

    ``sign_with`` is (GnuPG home, fingerprint): dnf's ``gpgcheck=1`` needs signed packages.
    """
    top = out_dir / f".rpmbuild-{_tag(name, version, release, arch, payload)}"
    (top / "SPECS").mkdir(parents=True, exist_ok=True)
    spec = top / "SPECS" / f"{name}.spec"
    epoch_line = f"Epoch: {epoch}\n" if epoch is not None else ""
    spec.write_text(
        f"Name: {name}\nVersion: {version}\nRelease: {release}\n{epoch_line}"
        f"Summary: test package {name}\nLicense: MIT\n"
        + ("BuildArch: noarch\n" if arch == "noarch" else "")
        + f"%description\nBuilt by repogen's test suite.\n"
        f"%install\nmkdir -p %{{buildroot}}/usr/share/{name}\n"
        f"echo '{payload}' > %{{buildroot}}/usr/share/{name}/README\n"
        f"%files\n/usr/share/{name}/README\n"
    )
    command = ["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}",
               "--define", "_build_id_links none"]
    if arch != "noarch":
        command += ["--target", arch]
    subprocess.run([*command, str(spec)], check=True, capture_output=True, timeout=120)
    built = next((top / "RPMS").rglob("*.rpm"))
    if sign_with is not None:
        homedir, fingerprint = sign_with
        subprocess.run(
            ["rpmsign", "--addsign", "--define", "__gpg /usr/bin/gpg", "--define", f"_gpg_name {fingerprint}",
             "--define", f"_gpg_path {homedir}",
             "--define", "_gpg_sign_cmd_extra_args --batch --pinentry-mode loopback", str(built)],
            check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=120,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / built.name
    built.replace(target)
    return target


def truncated_copy(package: Path, dest: Path, keep: int = 300) -> Path:
    """The first ``keep`` bytes of a package, as an interrupted download leaves it."""
    dest.write_bytes(package.read_bytes()[:keep])
    return dest
