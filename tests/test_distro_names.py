"""Each distribution's naming rule: what a Falco client on that host requests, and what the crawl
derives from a package in an index. The Debian ``uname`` strings are real: read from
``include/generated/utsrelease.h`` / ``utsversion.h`` of bookworm's headers packages (the crawl test
checks the same agreement on every headers package it unpacks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from repogen import distro
from repogen.distro import KernelName, Uname, client_name
from repogen.distro.debian import release_from_package
from repogen.distro.ubuntu import kernelversion_from_package


@pytest.mark.parametrize(("uname_r", "uname_v", "expected"), [
    # linux-headers-6.1.0-56-amd64 6.1.192-2 (bookworm-security)
    ("6.1.0-56-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)", "6.1.192-2-amd64"),
    # linux-headers-6.1.0-56-rt-amd64 6.1.192-2
    ("6.1.0-56-rt-amd64", "#1 SMP PREEMPT_RT Debian 6.1.192-2 (2026-11-16)", "6.1.192-2-rt-amd64"),
    # linux-headers-6.12.117+deb12-amd64 6.12.117-1~deb12u1: the 6.12 line in bookworm-security
    ("6.12.117+deb12-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1~deb12u1 (2026-11-14)", "6.12.117-1-amd64"),
    # a backport and the cloud/arm64 flavours
    ("6.12.12+bpo-cloud-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.12.12-1~bpo12+1 (2025-02-23)",
     "6.12.12-1-cloud-amd64"),
    ("6.1.0-56-arm64", "#1 SMP Debian 6.1.192-2 (2026-11-16)", "6.1.192-2-arm64"),
    # falcoctl's own example: an old ABI string, the real version in uname -v
    ("5.10.0-0.deb10.22-rt-amd64", "#1 SMP PREEMPT_RT Debian 5.10.178-3 (2023-04-22)", "5.10.178-3-rt-amd64"),
    # other architectures get no suffix
    ("6.1.0-56-686-pae", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)", "6.1.192-2"),
])
def test_debian_rule(uname_r: str, uname_v: str, expected: str) -> None:
    assert client_name(Uname(uname_r, uname_v, "debian")) == KernelName("debian", expected, "1")


def test_debian_kernel_not_built_by_debian_falls_back_to_the_generic_rule() -> None:
    assert client_name(Uname("6.6.0-custom", "#3 SMP Tue Jan 1", "debian")) == KernelName("debian", "6.6.0-custom", "3")


@pytest.mark.parametrize(("version", "flavour", "expected"), [
    ("6.1.192-2", "amd64", "6.1.192-2-amd64"),
    ("6.12.12-1~bpo12+1", "amd64", "6.12.12-1-amd64"),
    ("6.12.117-1~deb12u1", "rt-amd64", "6.12.117-1-rt-amd64"),
    ("6.12.57-1", "cloud-arm64", "6.12.57-1-cloud-arm64"),
])
def test_debian_package_to_release(version: str, flavour: str, expected: str) -> None:
    assert release_from_package(version, flavour) == expected


@pytest.mark.parametrize(("uname_r", "uname_v", "expected"), [
    ("5.15.0-1009-aws", "#11-Ubuntu SMP Thu May 26 19:39:49 UTC 2022",
     KernelName("ubuntu-aws", "5.15.0-1009-aws", "11")),
    ("6.2.0-26-generic", "#26~22.04.1-Ubuntu SMP PREEMPT_DYNAMIC Thu Jul 13 16:27:29 UTC 2",
     KernelName("ubuntu-generic", "6.2.0-26-generic", "26~22.04.1")),
    ("5.0.0-1028-aws-5.0", "#31-Ubuntu SMP", KernelName("ubuntu-aws", "5.0.0-1028-aws-5.0", "31")),
    ("6.8.0-1015-gcp", "#17-Ubuntu SMP", KernelName("ubuntu-gcp", "6.8.0-1015-gcp", "17")),
    ("6.8.0-45", "#45-Ubuntu SMP", KernelName("ubuntu-generic", "6.8.0-45", "45")),
])
def test_ubuntu_rule(uname_r: str, uname_v: str, expected: KernelName) -> None:
    assert client_name(Uname(uname_r, uname_v, "ubuntu")) == expected


def test_ubuntu_package_to_kernelversion() -> None:
    assert kernelversion_from_package("6.8.0-45", "6.8.0-45.45~22.04.1") == "45~22.04.1"
    assert kernelversion_from_package("5.15.0-1009", "5.15.0-1009.11") == "11"


@pytest.mark.parametrize(("os_id", "version_id", "target"), [
    ("amzn", "2", "amazonlinux2"), ("amzn", "2022", "amazonlinux2022"), ("amzn", "2023", "amazonlinux2023"),
    ("amzn", "2018.03", "amazonlinux"), ("centos", "9", "centos"), ("rocky", "9.4", "rocky"),
    ("almalinux", "9.4", "almalinux"), ("fedora", "41", "fedora"), ("rhel", "9.4", "rhel"), ("ol", "9.4", "ol"),
    ("arch", "", "arch"),
])
def test_rpm_and_generic_rule(os_id: str, version_id: str, target: str) -> None:
    name = client_name(Uname("5.14.0-503.11.1.el9_5.x86_64", "#1 SMP PREEMPT_DYNAMIC Fri Nov 15 2024", os_id,
                             version_id))
    assert name == KernelName(target, "5.14.0-503.11.1.el9_5.x86_64", "1")


def test_config_only_rules() -> None:
    assert client_name(Uname("5.15.148", "#1 SMP", "bottlerocket", "1.19.2", "aws-k8s-1.29")) == \
        KernelName("bottlerocket", "5.15.148", "1_1.19.2-aws")
    assert client_name(Uname("6.1.82-talos", "#1 SMP", "talos", "v1.6.7")) == \
        KernelName("talos", "6.1.82-talos", "1_v1.6.7")
    assert client_name(Uname("5.10.207", "#1 SMP", "buildroot", minikube_version="v1.33.0-1712138767-18566")) == \
        KernelName("minikube", "5.10.207", "1_1.33.0")
    assert client_name(Uname("6.6.21-flatcar", "#1 SMP PREEMPT_DYNAMIC", "flatcar", "3815.2.1")) == \
        KernelName("flatcar", "3815.2.1", "1")


def test_rhel_and_ol_are_targets_redhat_and_oracle_warn(tmp_path: Path) -> None:
    from repogen import config as config_mod

    assert distro.for_target("rhel") and distro.for_target("ol")
    path = tmp_path / "kernels.yaml"
    entries = ""
    for target in ("rhel", "ol", "redhat", "oracle"):
        entries += (f"  - {{target: {target}, kernelrelease: 5.14.0-503.el9.x86_64, kernelversion: '1', "
                    f"architecture: x86_64, headers: [http://127.0.0.1/{target}.rpm]}}\n")
    path.write_text("drivers:\n  - {name: falco, version: '1', source: {url: http://127.0.0.1/x.tgz}}\n"
                    f"kernels:\n{entries}")
    config = config_mod.parse(path)
    assert len(config.kernels) == 4
    assert len(config.warnings) == 2
    assert "requests target 'redhat'" in config.warnings[0] and "'rhel'" in config.warnings[0]
    assert f"{path}:10:" in config.warnings[0] or f"{path}:" in config.warnings[0]
    assert "'ol'" in config.warnings[1]
    # load (every other command, plan's cold parse) does not check the rules; the rest is the same.
    import dataclasses

    for cache in (None, tmp_path / "cache", tmp_path / "cache"):  # no cache, written, read back
        assert config_mod.load(path, cache) == dataclasses.replace(config, warnings=())


def test_validate_warns_where_an_entry_breaks_its_rule(tmp_path: Path) -> None:
    from repogen import config as config_mod

    path = tmp_path / "kernels.yaml"
    path.write_text(
        "drivers:\n  - {name: falco, version: '1', source: {url: http://127.0.0.1/x.tgz}}\n"
        "kernels:\n"
        "  - target: debian\n    kernelrelease: 6.1.192-2-amd64\n    kernelversion: '1'\n    architecture: x86_64\n"
        "    headers: [http://127.0.0.1/linux-headers-6.1.0-56-amd64_6.1.192-2_amd64.deb]\n"
        "  - target: debian\n    kernelrelease: 6.1.0-56-amd64\n    kernelversion: '1'\n    architecture: x86_64\n"
        "    headers: [http://127.0.0.1/linux-headers-6.1.0-56-amd64_6.1.192-2_amd64.deb]\n"
        "  - target: debian\n    kernelrelease: 6.1.192-2-amd64\n    kernelversion: '1'\n    architecture: aarch64\n"
        "    headers: [http://127.0.0.1/a.deb]\n"
        "  - target: ubuntu-aws\n    kernelrelease: 6.8.0-45-generic\n    kernelversion: '45'\n"
        "    architecture: x86_64\n    headers: [http://127.0.0.1/b.deb]\n")
    config = config_mod.parse(path)
    warnings = "\n".join(config.warnings)
    assert len(config.kernels) == 4
    assert f"{path}:4:" not in warnings  # the first entry follows the rule
    # The ABI looks like a version; the headers file says which version clients request.
    assert (f"{path}:9: kernels[1]: headers linux-headers-6.1.0-56-amd64_6.1.192-2_amd64.deb are requested as "
            "kernelrelease '6.1.192-2-amd64', not '6.1.0-56-amd64'") in warnings
    assert f"{path}:14: kernels[2]: kernelrelease '6.1.192-2-amd64' lacks the '-arm64'" in warnings
    assert f"{path}:19: kernels[3]: a host running 6.8.0-45-generic requests target 'ubuntu-generic'" in warnings
