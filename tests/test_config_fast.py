"""The config fast path: a well-formed matrix is read without PyYAML's composer, and reads the same.

No Docker: config files in tmp_path, parsed in process both ways (the fast path switched off by
hiding ``yaml_rs``), compared field for field, line numbers included.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import HELLO_KBUILD

from repogen import arch, config, config_fast
from repogen.errors import ConfigErrors

FAMILIES = [("debian", "6.1.{n}-1-amd64"), ("ubuntu-generic", "5.15.0-{n}-generic"),
            ("fedora", "6.5.{n}-200.fc39.x86_64")]


def kernels_text(count: int, start: int = 0) -> str:
    lines = ["kernels:"]
    for i in range(start, start + count):
        target, release = FAMILIES[i % len(FAMILIES)]
        url = f"http://127.0.0.1:9/{target}/headers-{i}.deb"
        lines += [f"  - target: {target}", f"    kernelrelease: {release.format(n=i)}",
                  f'    kernelversion: "{1 + i % 3}"', f"    architecture: {'x86_64' if i % 2 else 'amd64'}",
                  "    headers:", f"      - url: {url}", f"        sha256: {hashlib.sha256(url.encode()).hexdigest()}",
                  f"      - {url}.common"]
        if i % 7 == 0:
            lines += ["    builder: gcc12", f"    image: {{url: {url}.image}}",
                      "    kernelconfigdata: Q09ORklHX0ZPTz15Cg=="]
        if i % 11 == 0:
            lines.append("    # a comment between entries")
    return "\n".join(lines) + "\n"


def write_matrix(root: Path, settings: str = "") -> Path:
    (root / "kernels.d").mkdir(parents=True)
    (root / "kernels.d" / "a.yaml").write_text(kernels_text(150, 100))
    (root / "kernels.d" / "b.yaml").write_text(kernels_text(40, 300).replace("kernels:", "kernels:  # more"))
    main = root / "kernels.yaml"
    main.write_text(f"""\
drivers:
  - name: falco
    version: 8.0.0+driver
    source: {{path: {HELLO_KBUILD}}}
    recipe: kbuild
    kinds: [kmod, ebpf]
  - name: falco
    version: 7.3.0+driver
    source: {{url: https://example.invalid/libs.tar.gz, sha256: {"AB" * 32}}}
include:
  - kernels.d/*.yaml
{settings}""" + kernels_text(100))
    return main


def parse_slow(path: Path, monkeypatch: pytest.MonkeyPatch) -> config.Config:
    with monkeypatch.context() as patch:
        patch.setattr(config_fast, "yaml_rs", None)
        return config.parse(path)


def fast_accepts(path: Path, is_main: bool) -> bool:
    from repogen.recipes import known_recipes

    return config_fast.load_file(path, path.read_text(), is_main=is_main, architectures=arch.ALIASES,
                                 known_recipes=known_recipes()) is not None


def test_fast_path_reads_a_well_formed_matrix_exactly_as_the_slow_path(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    main = write_matrix(tmp_path, "build: {timeout: 30m, pids: 4096}\n"
                                  "packages: {keep-versions: 5, grace-period: 3d, deb: [dist/*.deb]}\n")
    assert fast_accepts(main, True)
    assert fast_accepts(tmp_path / "kernels.d" / "a.yaml", False)
    fast = config.parse(main)
    slow = parse_slow(main, monkeypatch)
    assert len(fast.kernels) == 290 and len(fast.drivers) == 2
    assert fast == slow  # every field, file and line of every driver and kernel
    assert fast.limits.pids == 4096 and fast.packages.keep_versions == 5
    assert fast.kernels[0].line == 15 and fast.kernels[-1].file.endswith("b.yaml")


@pytest.mark.parametrize(("old", "new"), [
    ('kernelversion: "1"', "kernelversion: 007"),    # a number (7, not "007"): refused, located
    ('kernelversion: "1"', "kernelversion: 0x1F"),   # a number too, refused by the path rules
    ("architecture: x86_64", "architecture: yes"),   # a boolean in YAML 1.1
    ('kernelversion: "1"', "kernelversion: on"),     # a boolean in YAML 1.1 only: text for yaml_rs
    ('kernelversion: "1"', 'kernelversion: "on"'),   # quoted: text for both
    ("kernelrelease: 6.1.0-1-amd64", "kernelrelease: 2024-01-01"),  # a date in YAML 1.1
    ("kernelrelease: 6.1.0-1-amd64", "kernelrelease: 1_000"),       # a number in YAML 1.1
    ("pids: 4096", "pids: 0x1000"),                  # 4096 for yaml_rs, not a whole number here
    ("- target: debian", "- {target: debian}"),      # not ``- key:``: no cheap line map
    ("target: debian", "target: &t debian"),         # anchors: fine for both, same result
])
def test_anything_unusual_reads_as_the_slow_path_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          old: str, new: str) -> None:
    main = write_matrix(tmp_path, "build: {pids: 4096}\n")
    main.write_text(main.read_text().replace(old, new, 1))
    try:
        expected: config.Config | str = parse_slow(main, monkeypatch)
    except ConfigErrors as errors:
        expected = str(errors)
    try:
        got: config.Config | str = config.parse(main)
    except ConfigErrors as errors:
        got = str(errors)
    assert got == expected
    if old.startswith("kernelversion") and new.endswith("007"):
        assert not fast_accepts(main, True)
        assert isinstance(got, str) and "quote it" in got  # located by the slow path


def test_duplicate_kernel_in_a_fast_file_names_both_lines(tmp_path: Path) -> None:
    main = write_matrix(tmp_path)
    (tmp_path / "kernels.d" / "c.yaml").write_text(kernels_text(2, 100))  # a.yaml starts with these two
    assert fast_accepts(tmp_path / "kernels.d" / "c.yaml", False)
    with pytest.raises(ConfigErrors) as raised:
        config.parse(main)
    messages = [str(e) for e in raised.value.errors]
    a, c = tmp_path / "kernels.d" / "a.yaml", tmp_path / "kernels.d" / "c.yaml"
    assert messages[0] == (f"{c}:2: kernels[0]: duplicate kernel ubuntu-generic/5.15.0-100-generic/2/x86_64 "
                           f"(first at {a}:2)")
    assert len(messages) == 2
