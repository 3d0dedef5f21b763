"""kernels.yaml side of the crawl: mirror-relative URLs, kernel-crawler import, and `--write` keeping
every byte of what is there (comments, order, hand-made entries). Real CLI, no network."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import Repogen

from repogen import config as config_mod
from repogen.errors import ConfigErrors

pytestmark = pytest.mark.timeout(120)

HAND_MADE = textwrap.dedent("""\
    # The matrix. Hand-made entries and comments must survive a crawl byte for byte.
    mirrors:
      debian: http://127.0.0.1:9/debian   # a local proxy
    drivers:
      - {name: falco, version: 9.1.0+driver, source: {url: "http://127.0.0.1:9/libs.tar.gz"}}   # odd quoting kept
    kernels:
      # a hand-made kernel, flow style
      - {target: debian, kernelrelease: 6.1.192-2-amd64, kernelversion: '1', architecture: x86_64,
         headers: [{mirror: debian, path: pool/main/l/linux/a.deb}]}

      - target: centos   # comment on an entry
        kernelrelease: 5.14.0-503.el9.x86_64
        kernelversion: "1"
        architecture: x86_64
        headers:
          - http://127.0.0.1:9/kernel-devel.rpm
    # trailing comment about the build section
    build: {timeout: 30m}
""")

KERNEL_CRAWLER = {
    "Debian": [
        {"kernelversion": 1, "kernelrelease": "6.1.192-2-amd64", "target": "debian",
         "headers": ["http://127.0.0.1:9/debian/pool/main/l/linux/a.deb"], "kernelconfigdata": "Q09ORklHX1g9eQo="},
        {"kernelversion": "1", "kernelrelease": "6.1.176-1-amd64", "target": "debian",
         "headers": ["http://127.0.0.1:9/b.deb", "http://127.0.0.1:9/c.deb"]},
    ],
    "BottleRocket": [
        {"kernelversion": "1_1.19.2-aws", "kernelrelease": "5.15.148", "target": "bottlerocket", "headers": [],
         "kernelconfigdata": "Q09ORklHX0JQRj15Cg=="},
    ],
    "Photon": [{"kernelversion": "1", "kernelrelease": "6.1.10-1.ph5", "target": "photon", "headers": ["x"]}],
}


def test_mirror_relative_urls_resolve_at_parse(tmp_path: Path) -> None:
    path = tmp_path / "kernels.yaml"
    path.write_text(HAND_MADE)
    config = config_mod.parse(path)
    assert config.kernels[0].headers[0].url == "http://127.0.0.1:9/debian/pool/main/l/linux/a.deb"
    assert dict(config.mirrors) == {"debian": "http://127.0.0.1:9/debian"}


def test_unknown_mirror_is_refused_with_file_line_field(tmp_path: Path) -> None:
    path = tmp_path / "kernels.yaml"
    path.write_text(HAND_MADE.replace("{mirror: debian,", "{mirror: nosuch,"))
    with pytest.raises(ConfigErrors) as info:
        config_mod.parse(path)
    assert f"{path}:9: kernels[0].headers[0].mirror: unknown mirror 'nosuch'" in str(info.value)


def test_mirror_path_must_stay_inside_the_mirror(tmp_path: Path) -> None:
    path = tmp_path / "kernels.yaml"
    path.write_text(HAND_MADE.replace("path: pool/main/l/linux/a.deb", "path: ../etc/passwd"))
    with pytest.raises(ConfigErrors) as info:
        config_mod.parse(path)
    assert "kernels[0].headers[0].path: expected a path inside the mirror" in str(info.value)


def test_import_kernel_crawler_and_write_keeps_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "kernels.yaml"
    path.write_text(HAND_MADE)
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps(KERNEL_CRAWLER))
    repogen = Repogen(tmp_path / "home", path)
    result = repogen("crawl", "--from", "kernel-crawler", str(listing), "--write", "--json")
    assert result.code == 0, result.err
    report = result.json
    assert report["written"] == [{"file": str(path), "entries": 2}]  # 6.1.192-2-amd64 was there already
    assert "photon" in " ".join(report["targets"][0]["warnings"])
    text = path.read_text()
    # Every original line is still there, in order; the new ones sit at the end of the kernels list.
    original = HAND_MADE.splitlines(keepends=True)
    added = [line for line in text.splitlines(keepends=True)]
    cut = added.index("      - http://127.0.0.1:9/kernel-devel.rpm\n") + 1
    new_block = added[cut:cut + len(added) - len(original)]
    assert added[:cut] + added[cut + len(new_block):] == original
    assert new_block[0].startswith("  - target: debian")
    config = config_mod.parse(path)
    assert [k.kernelrelease for k in config.kernels] == ["6.1.192-2-amd64", "5.14.0-503.el9.x86_64",
                                                         "6.1.176-1-amd64", "5.15.148"]
    bottlerocket = config.kernels[3]
    assert bottlerocket.headers == () and bottlerocket.kernelconfigdata == "Q09ORklHX0JQRj15Cg=="
    # A second run finds nothing new and leaves the file alone.
    before = path.read_bytes()
    again = repogen("crawl", "--from", "kernel-crawler", str(listing), "--write", "--json")
    assert again.code == 0 and again.json["written"] == [] and path.read_bytes() == before


def test_write_goes_to_kernels_d_when_the_matrix_includes_it(tmp_path: Path) -> None:
    path = tmp_path / "kernels.yaml"
    path.write_text(HAND_MADE.replace("mirrors:", "include: [kernels.d/*.yaml]\nmirrors:"))
    (tmp_path / "kernels.d").mkdir()
    (tmp_path / "kernels.d" / "centos.yaml").write_text("kernels: []\n")
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps({"Debian": KERNEL_CRAWLER["Debian"]}))
    before = path.read_bytes()
    result = Repogen(tmp_path / "home", path)("crawl", "--from", "kernel-crawler", str(listing), "--write")
    assert result.code == 0, result.err
    assert path.read_bytes() == before
    written = (tmp_path / "kernels.d" / "debian.yaml").read_text()
    assert written.startswith("# Kernels found by `repogen crawl debian --write`.\nkernels:\n  - target: debian")
    assert [k.kernelrelease for k in config_mod.parse(path).kernels][-1] == "6.1.176-1-amd64"


def test_bad_kernel_crawler_json_is_one_clean_error(tmp_path: Path) -> None:
    listing = tmp_path / "list.json"
    listing.write_text('{"Debian": [{"target": "debian"}]}')
    result = Repogen(tmp_path / "home", tmp_path / "none.yaml")("crawl", "--from", "kernel-crawler", str(listing))
    assert result.code == 1
    assert "Debian[0]: expected target, kernelrelease and kernelversion" in result.err
    assert "Traceback" not in result.err


def test_plan_says_config_only_kernels_need_sources(tmp_path: Path) -> None:
    path = tmp_path / "kernels.yaml"
    path.write_text(HAND_MADE)
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps({"BottleRocket": KERNEL_CRAWLER["BottleRocket"]}))
    repogen = Repogen(tmp_path / "home", path)
    assert repogen("crawl", "--from", "kernel-crawler", str(listing), "--write").code == 0
    plan = repogen("plan", "--json", "--all")
    assert plan.code == 0, plan.err
    rows = [r for r in plan.json["jobs"] if r["target"] == "bottlerocket"]
    assert [r["state"] for r in rows] == ["needs-sources", "needs-sources"]  # kmod and ebpf
    assert "kernel sources" in rows[0]["error"]
    text = repogen("plan")
    assert "needs kernel sources" in text.err and "2 needs-sources" in text.out


def test_the_repository_matrix_validates(tmp_path: Path) -> None:
    """The top-level kernels.yaml (refreshed with `repogen crawl debian --write`) stays valid, and every
    entry follows its distribution's naming rule."""
    root = Path(__file__).resolve().parent.parent
    result = Repogen(tmp_path / "home", root / "kernels.yaml")("validate", "--json")
    assert result.code == 0, result.err
    assert result.json["kernels"] > 50 and "warnings" not in result.json
    config = config_mod.parse(root / "kernels.yaml")
    assert {k.architecture for k in config.kernels} == {"x86_64", "aarch64"}
    assert all(h.sha256 for k in config.kernels for h in k.headers)
    tens = [d for d in config.drivers if d.version.startswith("10.")]
    assert tens and all([kind.value for kind in d.kinds] == ["kmod"] for d in tens)


def test_write_that_would_not_validate_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "kernels.yaml"
    path.write_text(HAND_MADE.replace("mirrors:", "include: [kernels.d/*.yaml]\nmirrors:"))
    (tmp_path / "kernels.d").mkdir()
    (tmp_path / "kernels.d" / "centos.yaml").write_text("kernels: []\n")
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps({
        "Debian": [{"kernelversion": "1", "kernelrelease": "6.1.99-1-amd64", "target": "debian",
                    "headers": ["ftp://127.0.0.1/a.deb"]}],
        "Centos": [{"kernelversion": "1", "kernelrelease": "5.14.0-1.el9.x86_64", "target": "centos",
                    "headers": ["http://127.0.0.1:9/kernel-devel.rpm"]}]}))
    before = {p: p.read_bytes() for p in (path, tmp_path / "kernels.d" / "centos.yaml")}
    result = Repogen(tmp_path / "home", path)("crawl", "--from", "kernel-crawler", str(listing), "--write")
    assert result.code == 1
    assert "would not validate, nothing written" in result.err and "ftp://127.0.0.1/a.deb" in result.err
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / "kernels.d" / "debian.yaml").exists()
