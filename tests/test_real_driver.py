"""The real Falco driver: unmodified falcosecurity/libs tarballs, real kernels of Debian 11, 12 and 13.

One matrix is built once for the module (2 libs versions x 3 Debian releases on x86_64 + Debian 12 on
aarch64, cross-built; the legacy eBPF probe where the libs line has it) and every test reads it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Repogen, kernels_yaml
from elftools.elf.elffile import ELFFile

from repogen.model import Kind
from repogen.verify import VerificationError, modinfo, module_versions, read_symvers, verify

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3600)]

UPSTREAM = Path(os.environ.get("REPOGEN_UPSTREAM", ROOT.parent / "shared" / "upstream"))
#: The unmodified `git archive`s of libs tags the product side ships (sha256 from shared/upstream/README.md).
LIBS = {
    "9.1.0+driver": "5754c2328aaa3ab7f871dafcf1a57fb8601126fa8b4d740223dc002746d183f9",
    "10.2.0+driver": "3ecd7da0ccb493050a3b6375afd4729210c945a41bd757f86d4a3e00e2d4403a",
}
TOOLCHAIN = {"bullseye": "gcc10", "bookworm": "gcc12", "trixie": "gcc14"}


def libs_tarball(version: str) -> Path:
    path = UPSTREAM / f"falcosecurity-libs-{version}.tar.gz"
    if not path.is_file():
        pytest.fail(f"{path} is missing: the real driver sources live in ../shared/upstream (or $REPOGEN_UPSTREAM)")
    return path


def libs_drivers_yaml() -> str:
    lines = ["drivers:"]
    for version, sha256 in LIBS.items():
        lines += ["  - name: falco", f"    version: {version}",
                  f"    source: {{path: {libs_tarball(version)}, sha256: {sha256}}}"]
    return "\n".join(lines) + "\n"


class Matrix:
    def __init__(self, root: Path, kernels: dict[str, dict[str, Any]], report: dict[str, Any], repogen: Repogen):
        self.root = root
        self.kernels = kernels
        self.report = report
        self.repogen = repogen

    def artifact(self, result: dict[str, Any]) -> Path:
        return self.root / "home" / "store" / "sha256" / result["sha256"][:2] / result["sha256"]

    def kernel_of(self, result: dict[str, Any]) -> dict[str, Any]:
        return next(k for k in self.kernels.values()
                    if (k["kernelrelease"], k["architecture"]) == (result["kernelrelease"], result["architecture"]))


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory, release_kernels: dict[str, dict[str, Any]],
           docker_client: Any) -> Matrix:
    root = tmp_path_factory.mktemp("real-driver")
    config = root / "kernels.yaml"
    config.write_text(libs_drivers_yaml() + kernels_yaml(list(release_kernels.values())))
    repogen = Repogen(root / "home", config)
    result = repogen("build", "-j", "2", "--json", timeout=3300)
    assert result.code == 0, result.err[-3000:] + result.out[-3000:]
    return Matrix(root, release_kernels, result.json, repogen)


def test_config_refuses_the_legacy_probe_for_libs_10(tmp_path: Path) -> None:
    config = tmp_path / "kernels.yaml"
    config.write_text("drivers:\n  - name: falco\n    version: 10.2.0+driver\n"
                      f"    source: {{path: {libs_tarball('10.2.0+driver')}}}\n    kinds: [kmod, ebpf]\n")
    result = Repogen(tmp_path / "home", config)("validate")
    assert result.code == 2
    assert f"{config}:5: drivers[0].kinds: falcosecurity-libs 10.2.0+driver has no ebpf" in result.err
    assert "Traceback" not in result.err


def test_every_libs_line_builds_for_every_debian_release_and_arm64(matrix: Matrix) -> None:
    report = matrix.report
    # 9.1.0: module + probe; 10.2.0: module only (no legacy probe) -> 3 artifacts per kernel.
    assert (report["built"], report["failed"]) == (3 * len(matrix.kernels), 0), report
    built = {(r["driverversion"], r["kind"], r["kernelrelease"], r["architecture"]) for r in report["results"]}
    for kernel in matrix.kernels.values():
        for want in (("9.1.0+driver", "kmod"), ("9.1.0+driver", "ebpf"), ("10.2.0+driver", "kmod")):
            assert (*want, kernel["kernelrelease"], kernel["architecture"]) in built
    # cmake runs once per driver version and toolchain, whatever the number of kernels (Debian 12's
    # amd64 and arm64 kernels share one).
    assert report["counters"]["prepares"] == len(LIBS) * len(TOOLCHAIN)


def test_each_kernel_gets_the_toolchain_of_the_gcc_that_built_it(matrix: Matrix) -> None:
    plan = matrix.repogen("plan", "--json", "--all").json
    assert plan["counts"] == {"built": 3 * len(matrix.kernels)}
    for job in plan["jobs"]:
        kernel = matrix.kernel_of(job)
        assert job["toolchain"] == TOOLCHAIN[kernel["suite"]], job


def test_modules_are_for_their_kernel_and_match_its_symbol_versions(matrix: Matrix) -> None:
    for result in matrix.report["results"]:
        kernel = matrix.kernel_of(result)
        with matrix.artifact(result).open("rb") as fh:
            elf = ELFFile(fh)
            if result["kind"] == "ebpf":
                assert elf["e_machine"] == "EM_BPF"
                recorded = elf.get_section_by_name("kernel_version").data().split(b"\0")[0].decode()
                assert recorded == kernel["uname_r"]
                continue
            assert elf["e_machine"] == {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}[kernel["architecture"]]
            info = modinfo(elf)
            versions = module_versions(elf)
        assert info["name"] == "falco" and info["vermagic"].split()[0] == kernel["uname_r"]
        assert "modversions" in info["vermagic"] and len(versions) > 50
        log = Path(result["log"]).read_text()
        assert f"{len(versions)} symbol versions match Module.symvers" in log


def _symvers(mirror_dir: Path, kernel: dict[str, Any], tmp: Path) -> Path:
    """The Module.symvers of a kernel's flavour headers package, unpacked with dpkg-deb."""
    flavour_deb = next(h for h in kernel["headers"] if "-common" not in h["url"] and "kbuild" not in h["url"])
    subprocess.run(["dpkg-deb", "-x", str(mirror_dir / flavour_deb["url"].rsplit("/", 1)[1]), str(tmp)],
                   check=True, timeout=300)
    return next(tmp.glob("usr/src/linux-headers-*/Module.symvers"))


def test_a_module_checked_against_another_flavour_is_refused(matrix: Matrix, mirror: Any, tmp_path: Path) -> None:
    result = next(r for r in matrix.report["results"]
                  if r["kind"] == "kmod" and r["driverversion"] == "9.1.0+driver"
                  and matrix.kernel_of(r)["suite"] == "bookworm" and r["architecture"] == "x86_64")
    kernel = matrix.kernel_of(result)
    module = matrix.artifact(result)
    own = _symvers(mirror.directory, kernel, tmp_path / "own")
    ok = verify(module, Kind.kmod, name="falco", kernel_release=kernel["uname_r"],
                architecture="x86_64", symvers=own)
    assert ok.symbols_checked > 50
    # Debian 12's cloud flavour (or another ABI): same release series, other symbol CRCs.
    other = next(k for k in mirror.kernels if k["headers"] != kernel["headers"])
    other_symvers = _symvers(mirror.directory, other, tmp_path / "other")
    assert read_symvers(other_symvers) != read_symvers(own)
    with pytest.raises(VerificationError, match=r"disagrees about version of symbol \S+: built against CRC"):
        verify(module, Kind.kmod, name="falco", kernel_release=kernel["uname_r"],
               architecture="x86_64", symvers=other_symvers)


def test_published_where_falcos_clients_fetch(matrix: Matrix) -> None:
    site = matrix.root / "site"
    result = matrix.repogen("publish", "--site", str(site), "--json")
    assert result.code == 0, result.err
    arm = matrix.kernels["bookworm-arm64"]
    for version in LIBS:
        path = site / "driver" / version / "aarch64" / f"falco_debian_{arm['kernelrelease']}_1.ko"
        assert path.is_file(), path
        with path.open("rb") as fh:
            assert ELFFile(fh)["e_machine"] == "EM_AARCH64"
    trixie = matrix.kernels["trixie-amd64"]["kernelrelease"]
    probe = site / "driver" / "9.1.0+driver" / "x86_64" / f"falco_debian_{trixie}_1.o"
    assert probe.is_file()
    assert not list(site.glob("driver/10.2.0+driver/*/*.o"))
    sums = (site / "SHA256SUMS").read_text()
    assert hashlib.sha256(probe.read_bytes()).hexdigest() in sums


def test_every_module_loads_in_its_own_kernel_under_qemu(matrix: Matrix) -> None:
    """The real falco.ko of each libs line, booted in the very kernel it was built for (QEMU, no KVM):
    Debian 11, 12 and 13 on x86_64 and Debian 12 on aarch64 (cross-built here, booted under
    qemu-system-aarch64 with Debian's arm64 busybox, which scripts/setup.sh installs). Each loads:
    `falco: driver loading` and its device."""
    result = matrix.repogen("verify", "--boot", "-j", "2", "--json", "kind=kmod", timeout=1800)
    assert result.code == 0, result.err[-3000:] + result.out[-2000:]
    report = result.json
    assert report["checked"] == 2 * 4 and report["failed"] == 0, report
    for row in report["results"]:
        kernel = matrix.kernel_of(row)
        assert row["status"] == "loaded", row
        assert row["kernel"] == kernel["uname_r"]
    assert sorted(row["architecture"] for row in report["results"]) == ["aarch64"] * 2 + ["x86_64"] * 6
    # The result is recorded per artifact: plan shows it without booting again.
    plan = matrix.repogen("plan", "--json", "--all", "--only", "kind=kmod").json
    assert {job["boot"]["status"] for job in plan["jobs"]} == {"loaded"}, plan["jobs"]
