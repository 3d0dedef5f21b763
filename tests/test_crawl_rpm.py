"""`repogen crawl` on RPM repositories made here with rpmbuild + createrepo_c, served from 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CACHE, Repogen
from pkgfactory import make_rpm

from repogen import config as config_mod

pytestmark = pytest.mark.timeout(600)

KERNELS = [("5.14.0", "503.el9", "x86_64", True), ("5.14.0", "427.el9", "x86_64", False),
           ("5.14.0", "503.el9", "aarch64", True)]


@pytest.fixture(scope="module")
def rpm_repo() -> Iterator[tuple[Path, str]]:
    from repogen.serve import serve_in_thread

    root = CACHE / "crawl-rpm"
    repo = root / "9-stream" / "AppStream"
    if not (repo / "repodata" / "repomd.xml").is_file():
        shutil.rmtree(root, ignore_errors=True)
        for version, release, arch, with_image in KERNELS:
            make_rpm(repo / "Packages", "kernel-devel", version, release, arch, payload=f"devel {release} {arch}")
            if with_image:
                make_rpm(repo / "Packages", "kernel-core", version, release, arch, payload=f"core {release} {arch}")
            make_rpm(repo / "Packages", "kernel-tools", version, release, arch, payload="unrelated")
        subprocess.run(["createrepo_c", "-q", str(repo)], check=True, timeout=120)
    server, base_url = serve_in_thread(root)
    yield root, base_url
    server.shutdown()


def _matrix(tmp_path: Path, base_url: str) -> Path:
    path = tmp_path / "kernels.yaml"
    path.write_text(textwrap.dedent(f"""\
        mirrors:
          centos-stream: {base_url}
        drivers:
          - {{name: falco, version: 9.1.0+driver, source: {{url: "http://127.0.0.1:9/libs.tar.gz"}}}}
        kernels:
          - target: debian   # kept: its mirror fails below
            kernelrelease: 6.1.176-1-amd64
            kernelversion: "1"
            architecture: x86_64
            headers: [http://127.0.0.1:9/debian/x.deb]
        """))
    return path


def test_kernel_devel_found_with_its_image(rpm_repo: tuple[Path, str], tmp_path: Path) -> None:
    root, base_url = rpm_repo
    result = Repogen(tmp_path / "home", tmp_path / "none.yaml")(
        "crawl", "centos:9-stream/AppStream", "--mirror", f"centos-stream={base_url}", "--json")
    assert result.code == 0, result.err
    [target] = result.json["targets"]
    kernels = {(k["kernelrelease"], k["architecture"]): k for k in target["kernels"]}
    assert set(kernels) == {("5.14.0-503.el9.x86_64", "x86_64"), ("5.14.0-427.el9.x86_64", "x86_64"),
                            ("5.14.0-503.el9.aarch64", "aarch64")}
    k = kernels[("5.14.0-503.el9.x86_64", "x86_64")]
    assert k["target"] == "centos" and k["kernelversion"] == "1"
    [devel] = k["headers"]
    assert devel["mirror"] == "centos-stream"
    assert devel["path"] == "9-stream/AppStream/Packages/kernel-devel-5.14.0-503.el9.x86_64.rpm"
    assert (root / devel["path"]).is_file()
    import hashlib

    assert devel["sha256"] == hashlib.sha256((root / devel["path"]).read_bytes()).hexdigest()
    assert k["image"]["path"].endswith("kernel-core-5.14.0-503.el9.x86_64.rpm")
    assert "image" not in kernels[("5.14.0-427.el9.x86_64", "x86_64")]
    only_arm = Repogen(tmp_path / "home", tmp_path / "none.yaml")(
        "crawl", "centos:9-stream/AppStream", "--arch", "aarch64", "--mirror", f"centos-stream={base_url}", "--json")
    assert [k["kernelrelease"] for k in only_arm.json["targets"][0]["kernels"]] == ["5.14.0-503.el9.aarch64"]


def test_one_failing_target_does_not_stop_the_others(rpm_repo: tuple[Path, str], tmp_path: Path) -> None:
    _, base_url = rpm_repo
    path = _matrix(tmp_path, base_url)
    before = path.read_text()
    result = Repogen(tmp_path / "home", path)(
        "crawl", "debian:bookworm", "centos:9-stream/AppStream", "--mirror", "debian=http://127.0.0.1:9/debian",
        "--write", "--json", env={"REPOGEN_FETCH_RETRIES": "1", "REPOGEN_FETCH_TIMEOUT": "5"})
    assert result.code == 1
    debian, centos = result.json["targets"]
    assert debian["error"].startswith("http://127.0.0.1:9/debian/dists/bookworm/Release")
    assert centos["error"] is None and centos["found"] == 3
    after = path.read_text()
    assert after.startswith(before)  # the debian entry and everything else kept, centos appended
    config = config_mod.parse(path)
    assert [k.target for k in config.kernels] == ["debian", "centos", "centos", "centos"]
    assert config.kernels[1].headers[0].url.startswith(f"{base_url}/9-stream/AppStream/Packages/kernel-devel-")


def test_primary_metadata_not_matching_repomd_is_refused(rpm_repo: tuple[Path, str], tmp_path: Path) -> None:
    root, _ = rpm_repo
    bad = tmp_path / "bad"
    shutil.copytree(root / "9-stream" / "AppStream" / "repodata", bad / "repo" / "repodata")
    primary = next((bad / "repo" / "repodata").glob("*primary.xml*"))
    primary.write_bytes(primary.read_bytes()[:200])
    from repogen.serve import serve_in_thread

    server, url = serve_in_thread(bad)
    try:
        result = Repogen(tmp_path / "home", tmp_path / "none.yaml")(
            "crawl", "rocky:repo", "--mirror", f"rocky={url}", "--json")
    finally:
        server.shutdown()
    assert result.code == 1
    error = result.json["targets"][0]["error"]
    assert f"{url}/repo/repodata/{primary.name}" in error and "does not match repomd.xml" in error


def test_a_mirror_that_never_answers_times_out_loudly(tmp_path: Path) -> None:
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the backlog; nothing is ever sent back
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        result = Repogen(tmp_path / "home", tmp_path / "none.yaml")(
            "crawl", "rocky:9/BaseOS", "--mirror", f"rocky={url}", "--json",
            env={"REPOGEN_FETCH_TIMEOUT": "1", "REPOGEN_FETCH_RETRIES": "1"}, timeout=120)
    finally:
        silent.close()
    assert result.code == 1
    error = result.json["targets"][0]["error"]
    assert error.startswith(f"{url}/9/BaseOS/repodata/repomd.xml") and "timed out" in error, error


def test_since_keeps_only_kernels_built_after_the_date(rpm_repo: tuple[Path, str], tmp_path: Path) -> None:
    _, base_url = rpm_repo
    repogen = Repogen(tmp_path / "home", tmp_path / "none.yaml")
    args = ["crawl", "centos:9-stream/AppStream", "--mirror", f"centos-stream={base_url}", "--json"]
    assert repogen(*args, "--since", "2000-01-01").json["targets"][0]["found"] == 3
    assert repogen(*args, "--since", "2999-01-01").json["targets"][0]["found"] == 0
    bad = repogen(*args, "--since", "last tuesday")
    assert bad.code == 2 and "--since" in bad.err and "'last tuesday'" in bad.err
    unknown = repogen("crawl", "gentoo")
    assert unknown.code == 2 and "unknown target(s) gentoo" in unknown.err and "rocky" in unknown.err


def test_amazon_linux_mirror_list_names_the_repository(rpm_repo: tuple[Path, str], tmp_path: Path) -> None:
    """Amazon Linux publishes `<arch>/mirror.list` whose first line is the real repository URL."""
    root, base_url = rpm_repo
    for arch in ("x86_64", "aarch64"):
        (root / "al2023" / arch).mkdir(parents=True, exist_ok=True)
        (root / "al2023" / arch / "mirror.list").write_text(f"{base_url}/9-stream/AppStream\n")
    result = Repogen(tmp_path / "home", tmp_path / "none.yaml")(
        "crawl", "amazonlinux2023", "--arch", "x86_64", "--mirror", f"amazonlinux2023={base_url}/al2023", "--json")
    assert result.code == 0, result.err
    kernels = result.json["targets"][0]["kernels"]
    assert sorted(k["kernelrelease"] for k in kernels) == ["5.14.0-427.el9.x86_64", "5.14.0-503.el9.x86_64"]
    assert {k["target"] for k in kernels} == {"amazonlinux2023"}
    # outside the named mirror: plain URLs
    assert kernels[0]["headers"][0].startswith(f"{base_url}/9-stream/AppStream/Packages/kernel-devel-")
