"""Bad matrices: ``repogen validate`` refuses each with ``file:line: field: message`` and exit 2.

No Docker and no network: these run the real CLI as a subprocess on small files in tmp_path.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import HELLO_KBUILD, Repogen

pytestmark = pytest.mark.timeout(120)

HEADERS = "http://127.0.0.1:9/linux-headers.deb"
GOOD_SHA = "a" * 64

# Line numbers below are the ones of this template (1-based); tests patch single lines of it.
DRIVER = textwrap.dedent(f"""\
    drivers:
      - name: hello_repogen
        version: 0.1.0
        source: {{path: {HELLO_KBUILD}}}
        recipe: kbuild
        kinds: [kmod]
""")
KERNEL = textwrap.dedent(f"""\
      - target: debian
        kernelrelease: 6.1.0-1-amd64
        kernelversion: "1"
        architecture: x86_64
        headers: [{HEADERS}]
""")
BASE = DRIVER + "kernels:\n" + KERNEL
# drivers[0] is lines 2-6, kernels[0] is lines 8-12.
LINE = {"name": 2, "version": 3, "source": 4, "recipe": 5, "kinds": 6,
        "target": 8, "kernelrelease": 9, "kernelversion": 10, "architecture": 11, "headers": 12}


def kernel(release: str = "6.1.0-1-amd64", version: str = "1") -> str:
    return KERNEL.replace("6.1.0-1-amd64", release).replace('"1"', f'"{version}"')


def patch(text: str, line: int, new: str) -> str:
    lines = text.splitlines(keepends=True)
    indent = re.match(r"\s*(- )?", lines[line - 1]).group(0)  # type: ignore[union-attr]
    lines[line - 1] = indent + new + "\n"
    return "".join(lines)


@dataclass
class Refusal:
    stderr: str
    errors: list[dict[str, Any]]


def _flat(text: str) -> str:
    return " ".join(text.split())


def refused(tmp_path: Path, text: str, files: dict[str, str] | None = None, *,
            config: str = "kernels.yaml") -> Refusal:
    """Write the matrix, run ``validate`` and ``validate --json``: both must refuse it with exit 2."""
    (tmp_path / config).write_text(text)
    for name, body in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    repogen = Repogen(tmp_path / "home", tmp_path / config)
    plain = repogen("validate", timeout=60)
    assert plain.code == 2, (plain.code, plain.out, plain.err)
    assert "Traceback" not in plain.err, plain.err
    as_json = repogen("validate", "--json", timeout=60)
    assert as_json.code == 2, (as_json.code, as_json.out, as_json.err)
    report = as_json.json
    assert report["ok"] is False and report["errors"], report
    for e in report["errors"]:
        # Every JSON error (file, line, field and the message alone) also shows in the plain form
        # as one `error: file:line: field: message` line.
        where = f"{e['file']}:{e['line']}: " if e["line"] else f"{e['file']}: "
        assert not e["message"].startswith(where), e
        text = f"error: {where}{e['field'] + ': ' if e['field'] else ''}{e['message']}"
        assert text in plain.err.splitlines(), (text, plain.err)
    assert f"{len(report['errors'])} error(s)" in plain.err
    return Refusal(plain.err, report["errors"])


def only_error(r: Refusal) -> dict[str, Any]:
    assert len(r.errors) == 1, r.errors
    return r.errors[0]


def assert_error(r: Refusal, file: Path, line: int, field: str, *words: str) -> dict[str, Any]:
    """One of the errors is at file:line for field, and its message holds every word."""
    for e in r.errors:
        if e["file"] == str(file) and e["line"] == line and e["field"] == field:
            for word in words:
                assert word in e["message"], (word, e)
            return e
    raise AssertionError(f"no error at {file}:{line} {field}: {r.errors}")


def test_the_template_itself_is_valid(tmp_path: Path) -> None:
    (tmp_path / "kernels.yaml").write_text(BASE)
    result = Repogen(tmp_path / "home", tmp_path / "kernels.yaml")("validate", "--json", timeout=60)
    assert result.code == 0, result.err
    assert result.json == {"ok": True, "files": [str(tmp_path / "kernels.yaml")], "drivers": 1, "kernels": 1,
                           "jobs": 1}


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    r = refused(tmp_path, patch(BASE, LINE["recipe"], "recipe: kbuild: kmod"))
    e = only_error(r)
    assert (e["file"], e["line"]) == (str(tmp_path / "kernels.yaml"), LINE["recipe"])
    assert "malformed YAML" in e["message"]


def test_malformed_yaml_unclosed_list_names_file_and_line(tmp_path: Path) -> None:
    r = refused(tmp_path, patch(BASE, LINE["kinds"], "kinds: [kmod"))
    e = only_error(r)
    # libyaml notices the missing ']' at the next token: the line after the opening one.
    assert e["file"] == str(tmp_path / "kernels.yaml") and e["line"] in (LINE["kinds"], LINE["kinds"] + 1)
    assert "malformed YAML" in e["message"] and "']'" in e["message"]


def test_empty_file_is_refused(tmp_path: Path) -> None:
    e = only_error(refused(tmp_path, ""))
    assert "empty" in e["message"]


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    repogen = Repogen(tmp_path / "home", tmp_path / "nope.yaml")
    result = repogen("validate", timeout=60)
    assert result.code == 2 and "Traceback" not in result.err
    assert f"{tmp_path / 'nope.yaml'}: no such file" in _flat(result.err)


def test_unknown_top_level_field_is_refused(tmp_path: Path) -> None:
    r = refused(tmp_path, BASE + "kernel: []\n")
    e = only_error(r)
    assert (e["file"], e["line"], e["field"]) == (str(tmp_path / "kernels.yaml"), 13, "kernel")
    assert "unknown top-level field" in e["message"] and "kernels" in e["message"]


def test_error_about_a_key_with_a_block_value_names_the_keys_line(tmp_path: Path) -> None:
    r = refused(tmp_path, BASE + "kernel:\n  - target: debian\n")
    e = only_error(r)
    assert (e["line"], e["field"]) == (13, "kernel") and "unknown top-level field" in e["message"]
    # The same for "first at line N" of a duplicate key: 'kernels:' is on line 7, its list on line 8.
    r = refused(tmp_path, BASE + "kernels:\n" + kernel("6.1.0-2-amd64"))
    assert any("duplicate key (first at line 7)" in e["message"] for e in r.errors), r.errors


def test_unknown_driver_field_is_refused(tmp_path: Path) -> None:
    r = refused(tmp_path, patch(BASE, LINE["kinds"], "kind: [kmod]"))
    assert_error(r, tmp_path / "kernels.yaml", LINE["kinds"], "drivers[0].kind", "unknown field", "kinds")


def test_unknown_kernel_field_is_refused(tmp_path: Path) -> None:
    r = refused(tmp_path, patch(BASE, LINE["architecture"], "arch: x86_64"))
    assert_error(r, tmp_path / "kernels.yaml", LINE["architecture"], "kernels[0].arch", "unknown field")
    # ... and, the real key now being absent, that it is missing.
    assert_error(r, tmp_path / "kernels.yaml", LINE["target"], "kernels[0].architecture", "missing required field")


@pytest.mark.parametrize(("line", "field"), [
    (LINE["version"], "drivers[0].version"),
    (LINE["source"], "drivers[0].source"),
    (LINE["headers"], "kernels[0].headers"),
    (LINE["kernelrelease"], "kernels[0].kernelrelease"),
])
def test_missing_required_field_is_named(tmp_path: Path, line: int, field: str) -> None:
    lines = BASE.splitlines(keepends=True)
    del lines[line - 1]
    r = refused(tmp_path, "".join(lines))
    owner = LINE["name"] if field.startswith("drivers") else LINE["target"]
    assert_error(r, tmp_path / "kernels.yaml", owner, field, "missing required field")


def test_no_driver_at_all_is_refused(tmp_path: Path) -> None:
    e = only_error(refused(tmp_path, "kernels:\n" + KERNEL))
    assert e["field"] == "drivers" and "no driver" in e["message"]


def test_duplicate_kernels_name_both_lines(tmp_path: Path) -> None:
    r = refused(tmp_path, BASE + KERNEL)
    e = only_error(r)
    config = tmp_path / "kernels.yaml"
    assert (e["file"], e["line"], e["field"]) == (str(config), 13, "kernels[1]")
    assert "duplicate kernel" in e["message"] and f"first at {config}:8" in e["message"]


def test_duplicate_driver_names_both_lines(tmp_path: Path) -> None:
    second = DRIVER.replace("drivers:\n", "")
    text = DRIVER + second + "kernels:\n" + KERNEL
    e = only_error(refused(tmp_path, text))
    config = tmp_path / "kernels.yaml"
    assert (e["file"], e["line"], e["field"]) == (str(config), 7, "drivers[1]")
    assert "duplicate driver hello_repogen 0.1.0" in e["message"] and f"first at {config}:2" in e["message"]


def test_same_driver_name_with_another_version_is_fine(tmp_path: Path) -> None:
    second = DRIVER.replace("drivers:\n", "").replace("0.1.0", "0.2.0")
    (tmp_path / "kernels.yaml").write_text(DRIVER + second + "kernels:\n" + KERNEL)
    result = Repogen(tmp_path / "home", tmp_path / "kernels.yaml")("validate", "--json", timeout=60)
    assert result.code == 0 and result.json["jobs"] == 2


def test_duplicate_kernel_across_included_files_names_both(tmp_path: Path) -> None:
    text = DRIVER + "include: [kernels.d/*.yaml]\n"
    r = refused(tmp_path, text, {"kernels.d/a.yaml": "kernels:\n" + KERNEL,
                                  "kernels.d/b.yaml": "# the same kernel again\nkernels:\n" + KERNEL})
    e = only_error(r)
    assert (e["file"], e["line"]) == (str(tmp_path / "kernels.d/b.yaml"), 3)
    assert f"first at {tmp_path / 'kernels.d/a.yaml'}:2" in e["message"]


def test_duplicate_yaml_key_is_refused(tmp_path: Path) -> None:
    lines = BASE.splitlines(keepends=True)
    lines.insert(LINE["version"], "    version: 0.2.0\n")  # a second 'version' right after the first
    e = only_error(refused(tmp_path, "".join(lines)))
    assert (e["line"], e["field"]) == (LINE["version"] + 1, "drivers[0].version")
    assert f"duplicate key (first at line {LINE['version']})" in e["message"]


def test_duplicate_top_level_key_is_refused(tmp_path: Path) -> None:
    r = refused(tmp_path, BASE + "kernels:\n" + kernel("6.1.0-2-amd64"))
    assert_error(r, tmp_path / "kernels.yaml", 13, "kernels", "duplicate key")


def test_duplicate_top_level_key_is_reported_once(tmp_path: Path) -> None:
    r = refused(tmp_path, BASE + "kernels: []\n")
    e = only_error(r)
    assert (e["line"], e["field"]) == (13, "kernels") and "duplicate key (first at line 7)" in e["message"]


# Values that become path components of the published tree. Double-quoted YAML, so "\0" is NUL and
# "\a" is BEL: the parser hands repogen the real control characters.
BAD_PATH_VALUES = {
    "slash": r'"a/b"',
    "leading-slash": r'"/etc"',
    "dotdot": r'".."',
    "dotdot-inside": r'"a..b"',
    "dotdot-slash": r'"../../x"',
    "dot": r'"."',
    "nul": r'"a\0b"',
    "bell": r'"a\ab"',
    "escape": r'"a\eb"',
    "newline": r'"a\nb"',
    "tab": r'"a\tb"',
    "space": r'"a b"',
    "trailing-space": r'"ab "',
    "leading-dash": r'"-ab"',
    "empty": r'""',
    "non-ascii": r'"a\u2215b"',  # DIVISION SLASH, looks like '/'
}
PATH_FIELDS = ["target", "kernelrelease", "kernelversion", "version", "name"]


@pytest.mark.parametrize("key", PATH_FIELDS)
def test_path_escaping_values_are_each_refused(tmp_path: Path, key: str) -> None:
    """One entry per bad value (so one run checks them all), each refused on its own line."""
    is_driver = key in ("name", "version")
    entry = DRIVER.replace("drivers:\n", "") if is_driver else KERNEL
    first, offset = (2, LINE[key] - 2) if is_driver else (8, LINE[key] - 8)
    size = len(entry.splitlines())
    entries = [patch(entry, offset + 1, f"{key}: {value}") for value in BAD_PATH_VALUES.values()]
    if is_driver:
        text = "drivers:\n" + "".join(entries) + "kernels:\n" + KERNEL
    else:
        text = DRIVER + "kernels:\n" + "".join(entries)
    r = refused(tmp_path, text)
    section = "drivers" if is_driver else "kernels"
    for i, name in enumerate(BAD_PATH_VALUES):
        e = assert_error(r, tmp_path / "kernels.yaml", first + i * size + offset, f"{section}[{i}].{key}")
        assert "becomes part of a published path" in e["message"], (name, e)
        # The message names the culprit, escaped (never a raw control character on the terminal).
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", e["message"]), (name, e)
    assert len(r.errors) == len(BAD_PATH_VALUES), r.errors
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", r.stderr)


def test_path_escaping_value_is_refused_in_an_included_file(tmp_path: Path) -> None:
    r = refused(tmp_path, DRIVER + "include: [kernels.d/*.yaml]\n",
                {"kernels.d/x.yaml": "kernels:\n" + kernel(release="../../etc")})
    assert_error(r, tmp_path / "kernels.d/x.yaml", 3, "kernels[0].kernelrelease", "'../../etc'", "not allowed")


@pytest.mark.parametrize(("line", "new", "field", "words"), [
    (LINE["target"], "target: slackware", "kernels[0].target", ("unknown target 'slackware'", "debian")),
    (LINE["architecture"], "architecture: mips", "kernels[0].architecture",
     ("unknown architecture 'mips'", "x86_64")),
    (LINE["recipe"], "recipe: cmake", "drivers[0].recipe", ("unknown recipe 'cmake'", "kbuild")),
    (LINE["kinds"], "kinds: [kmod, modern_bpf]", "drivers[0].kinds", ("unknown kind 'modern_bpf'", "ebpf")),
    (LINE["kinds"], "kinds: [kmod, kmod]", "drivers[0].kinds", ("'kmod' listed twice",)),
    (LINE["kinds"], "kinds: []", "drivers[0].kinds", ("at least one kind",)),
    (LINE["headers"], "headers: []", "kernels[0].headers", ("at least one headers URL",)),
    (LINE["headers"], "headers: [ftp://127.0.0.1/x.deb]", "kernels[0].headers[0]", ("not an http(s)://",)),
], ids=["target", "architecture", "recipe", "kind", "kind-twice", "no-kind", "no-headers", "headers-scheme"])
def test_unknown_value_is_refused_with_the_known_ones(
        tmp_path: Path, line: int, new: str, field: str, words: tuple[str, ...]) -> None:
    r = refused(tmp_path, patch(BASE, line, new))
    assert_error(r, tmp_path / "kernels.yaml", line, field, *words)


@pytest.mark.parametrize("sha", ["abc", "g" * 64, "a" * 63, "a" * 65, '"' + "a" * 63 + ' "', "sha256:" + "a" * 64],
                         ids=["short", "not-hex", "63", "65", "space", "prefixed"])
def test_bad_headers_sha256_is_refused(tmp_path: Path, sha: str) -> None:
    text = patch(BASE, LINE["headers"], "headers:") + f"      - url: {HEADERS}\n        sha256: {sha}\n"
    r = refused(tmp_path, text)
    assert_error(r, tmp_path / "kernels.yaml", LINE["headers"] + 2, "kernels[0].headers[0].sha256",
                 "expected 64 hexadecimal digits")


def test_bad_source_sha256_is_refused(tmp_path: Path) -> None:
    text = patch(BASE, LINE["source"], f"source: {{url: {HEADERS}, sha256: 1234}}")
    r = refused(tmp_path, text)
    assert_error(r, tmp_path / "kernels.yaml", LINE["source"], "drivers[0].source.sha256",
                 "expected 64 hexadecimal digits")


def test_source_with_both_url_and_path_is_refused(tmp_path: Path) -> None:
    text = patch(BASE, LINE["source"], f"source: {{url: {HEADERS}, path: {HELLO_KBUILD}}}")
    assert_error(refused(tmp_path, text), tmp_path / "kernels.yaml", LINE["source"], "drivers[0].source",
                 "exactly one of 'url' or 'path'")


def test_source_path_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    text = patch(BASE, LINE["source"], "source: {path: no-such-dir}")
    assert_error(refused(tmp_path, text), tmp_path / "kernels.yaml", LINE["source"], "drivers[0].source.path",
                 "no such file or directory", str(tmp_path / "no-such-dir"))


@pytest.mark.parametrize(("section", "words"), [
    ("build: {timeout: soon}", ("build.timeout", "duration")),
    ("build: {memory: lots}", ("build.memory", "512m")),
    ("build: {pids: 3}", ("build.pids", ">= 16")),
    ("build: {cpus: 2}", ("build.cpus", "unknown field")),
])
def test_bad_build_settings_are_refused(tmp_path: Path, section: str, words: tuple[str, ...]) -> None:
    r = refused(tmp_path, BASE + section + "\n")
    e = only_error(r)
    assert e["line"] == 13 and e["field"] == words[0] and words[1] in e["message"]


def test_include_of_kernels_d_works(tmp_path: Path) -> None:
    (tmp_path / "kernels.yaml").write_text(DRIVER + "include: [kernels.d/*.yaml]\n")
    (tmp_path / "kernels.d").mkdir()
    (tmp_path / "kernels.d/b.yaml").write_text("kernels:\n" + kernel("6.1.0-2-amd64"))
    (tmp_path / "kernels.d/a.yaml").write_text("kernels:\n" + kernel("6.1.0-1-amd64") + kernel("6.1.0-3-amd64"))
    (tmp_path / "kernels.d/notes.txt").write_text("not yaml: [")  # not matched by the glob
    result = Repogen(tmp_path / "home", tmp_path / "kernels.yaml")("validate", "--json", timeout=60)
    assert result.code == 0, result.err
    assert result.json["files"] == [str(tmp_path / p) for p in ("kernels.yaml", "kernels.d/a.yaml",
                                                                  "kernels.d/b.yaml")]
    assert result.json["kernels"] == 3 and result.json["jobs"] == 3


def test_include_matching_nothing_is_refused(tmp_path: Path) -> None:
    r = refused(tmp_path, BASE + "include: [kernels.d/*.yaml]\n")
    assert_error(r, tmp_path / "kernels.yaml", 13, "include", "matches no file")


def test_error_in_included_file_names_that_file_and_line(tmp_path: Path) -> None:
    included = "kernels:\n" + kernel("6.1.0-2-amd64") + patch(kernel("6.1.0-3-amd64"), 4, "architecture: sparc")
    r = refused(tmp_path, BASE + "include: [kernels.d/*.yaml]\n", {"kernels.d/more.yaml": included})
    e = only_error(r)
    assert (e["file"], e["line"], e["field"]) == (str(tmp_path / "kernels.d/more.yaml"), 10,
                                                  "kernels[1].architecture")
    assert "unknown architecture 'sparc'" in e["message"]


def test_malformed_included_file_names_that_file_and_line(tmp_path: Path) -> None:
    r = refused(tmp_path, BASE + "include: [kernels.d/*.yaml]\n",
                {"kernels.d/more.yaml": "kernels:\n  - target: debian\n    kernelrelease: [6.1\n"})
    e = only_error(r)
    assert e["file"] == str(tmp_path / "kernels.d/more.yaml") and e["line"] in (3, 4)
    assert "malformed YAML" in e["message"]


def test_included_file_may_not_hold_main_file_settings(tmp_path: Path) -> None:
    r = refused(tmp_path, BASE + "include: [kernels.d/*.yaml]\n",
                {"kernels.d/more.yaml": "build: {timeout: 5s}\nkernels: []\n"})
    assert_error(r, tmp_path / "kernels.d/more.yaml", 1, "build", "unknown top-level field")


def test_several_errors_reported_in_one_run(tmp_path: Path) -> None:
    text = patch(BASE, LINE["recipe"], "recipe: cmake")
    text = patch(text, LINE["kernelrelease"], "kernelrelease: a/b")
    text = patch(text, LINE["architecture"], "architecture: mips")
    text += "include: [kernels.d/*.yaml]\n"
    r = refused(tmp_path, text, {"kernels.d/x.yaml": "kernels:\n" + kernel(version="x y")})
    main, other = tmp_path / "kernels.yaml", tmp_path / "kernels.d/x.yaml"
    assert_error(r, main, LINE["recipe"], "drivers[0].recipe", "unknown recipe")
    assert_error(r, main, LINE["kernelrelease"], "kernels[0].kernelrelease", "'/'")
    assert_error(r, main, LINE["architecture"], "kernels[0].architecture", "unknown architecture")
    assert_error(r, other, 4, "kernels[0].kernelversion", "' '")
    assert len(r.errors) == 4
    assert "4 error(s)" in r.stderr


def test_error_lines_are_never_wrapped(tmp_path: Path) -> None:
    """Each error is one `error: file:line: field: message` line, however long (CI logs, grep, editors)."""
    deep = tmp_path / ("a-rather-long-directory-name-" * 3) / "kernels.d"
    deep.mkdir(parents=True)
    text = patch(BASE, LINE["kernelrelease"], r'kernelrelease: "6.1.0-1-amd64/../../../../../etc/passwd"')
    (deep / "kernels.yaml").write_text(text)
    result = Repogen(tmp_path / "home", deep / "kernels.yaml")("validate", timeout=60)
    assert result.code == 2
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert lines[0].startswith(f"error: {deep / 'kernels.yaml'}:{LINE['kernelrelease']}: kernels[0].kernelrelease: ")
    assert lines[0].endswith("(allowed: letters, digits and . _ + ~ -)"), lines
    assert lines[1:] == ["1 error(s)"], lines


def test_values_that_look_like_markup_are_reported_verbatim(tmp_path: Path) -> None:
    """A value with brackets is shown as written: not eaten as a style, never a crash."""
    text = patch(BASE, LINE["recipe"], 'recipe: "[bold]kbuild"')
    text = patch(text, LINE["version"], 'version: "0.1[/x]"')
    (tmp_path / "kernels.yaml").write_text(text)
    result = Repogen(tmp_path / "home", tmp_path / "kernels.yaml")("validate", timeout=60)
    assert result.code == 2, result.err
    assert "Traceback" not in result.err, result.err
    assert "unknown recipe '[bold]kbuild'" in _flat(result.err)
    assert "'0.1[/x]'" in _flat(result.err)


def test_validate_json_lists_every_field_of_an_error(tmp_path: Path) -> None:
    (tmp_path / "kernels.yaml").write_text(patch(BASE, LINE["target"], "target: slackware"))
    result = Repogen(tmp_path / "home", tmp_path / "kernels.yaml")("validate", "--json", timeout=60)
    assert result.code == 2
    assert result.json["ok"] is False
    [e] = result.json["errors"]
    assert set(e) == {"file", "line", "field", "message"}
    assert e["file"] == str(tmp_path / "kernels.yaml") and e["line"] == LINE["target"]
    assert e["field"] == "kernels[0].target" and "unknown target 'slackware'" in e["message"]


def test_plan_and_build_refuse_a_bad_matrix_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "kernels.yaml").write_text(patch(BASE, LINE["target"], "target: slackware"))
    repogen = Repogen(tmp_path / "home", tmp_path / "kernels.yaml")
    for command in ("plan", "build"):
        result = repogen(command, timeout=60)
        assert result.code == 2, (command, result.err)
        assert f"{tmp_path / 'kernels.yaml'}:{LINE['target']}: kernels[0].target: unknown target" in _flat(result.err)
    assert not (tmp_path / "home" / "store" / "sha256").exists() or not any(
        (tmp_path / "home" / "store" / "sha256").iterdir())


# -- the validated-config cache ------------------------------------------------------------------

def _plan_total(repogen: Repogen) -> int:
    result = repogen("plan", "--json", timeout=60)
    assert result.code == 0, result.err
    return int(result.json["total"])


def test_config_cache_is_invalidated_when_an_included_file_changes(tmp_path: Path) -> None:
    config = tmp_path / "kernels.yaml"
    config.write_text(DRIVER + "include: [kernels.d/*.yaml]\n")
    (tmp_path / "kernels.d").mkdir()
    included = tmp_path / "kernels.d/a.yaml"
    included.write_text("kernels:\n" + kernel("6.1.0-1-amd64"))
    repogen = Repogen(tmp_path / "home", config)
    (tmp_path / "home").mkdir()  # plan is read-only: it never creates the home, but caches in one
    assert _plan_total(repogen) == 1
    assert list((tmp_path / "home" / "cache" / "config").glob("*.json")), "no cache written"
    assert _plan_total(repogen) == 1  # served from the cache
    # Same size, same mtime second: only the content tells.
    included.write_text("kernels:\n" + kernel("6.1.0-1-amd64") + kernel("6.1.0-2-amd64"))
    assert _plan_total(repogen) == 2
    # An included file broken after being cached is reported, not served from the cache.
    included.write_text("kernels:\n" + kernel("6.1.0-1-amd64") + patch(kernel("6.1.0-2-amd64"), 1,
                                                                      "target: slackware"))
    result = repogen("plan", "--json", timeout=60)
    assert result.code == 2 and "unknown target 'slackware'" in result.err
    included.write_text("kernels:\n" + kernel("6.1.0-1-amd64"))
    assert _plan_total(repogen) == 1


def test_config_cache_is_invalidated_when_a_file_appears_or_goes_in_kernels_d(tmp_path: Path) -> None:
    config = tmp_path / "kernels.yaml"
    config.write_text(DRIVER + "include: [kernels.d/*.yaml]\n")
    (tmp_path / "kernels.d").mkdir()
    (tmp_path / "kernels.d/a.yaml").write_text("kernels:\n" + kernel("6.1.0-1-amd64"))
    repogen = Repogen(tmp_path / "home", config)
    assert _plan_total(repogen) == 1
    (tmp_path / "kernels.d/b.yaml").write_text("kernels:\n" + kernel("6.1.0-2-amd64") + kernel("6.1.0-3-amd64"))
    assert _plan_total(repogen) == 3
    (tmp_path / "kernels.d/a.yaml").unlink()
    assert _plan_total(repogen) == 2


def test_config_cache_is_invalidated_when_the_main_file_changes(tmp_path: Path) -> None:
    config = tmp_path / "kernels.yaml"
    config.write_text(BASE)
    repogen = Repogen(tmp_path / "home", config)
    assert _plan_total(repogen) == 1
    config.write_text(patch(BASE, LINE["kinds"], "kinds: [kmod, ebpf]"))
    assert _plan_total(repogen) == 2


def test_corrupt_config_cache_is_ignored(tmp_path: Path) -> None:
    config = tmp_path / "kernels.yaml"
    config.write_text(BASE)
    repogen = Repogen(tmp_path / "home", config)
    (tmp_path / "home").mkdir()  # plan caches only in a home that exists
    assert _plan_total(repogen) == 1
    caches = list((tmp_path / "home" / "cache" / "config").glob("*.json"))
    assert caches
    for junk in (b"\x80\x05not json", b'{"schema": 1}', b"[]", b'{"schema": null, "config": {}}'):
        for cached in caches:
            cached.write_bytes(junk)
        assert _plan_total(repogen) == 1


def test_config_cache_round_trips_the_validated_config(tmp_path: Path) -> None:
    from repogen import config as config_mod

    example = tmp_path / "kernels.yaml"
    example.write_text(patch(BASE, LINE["kinds"], "kinds: [kmod, ebpf]") + "include: [kernels.d/*.yaml]\n"
                       "build: {timeout: 10m, pids: 100}\npackages: {suite: s, keep-versions: 2, deb: [x/*.deb]}\n")
    (tmp_path / "kernels.d").mkdir()
    (tmp_path / "kernels.d" / "a.yaml").write_text("kernels:\n" + kernel("6.1.0-2-amd64"))
    parsed = config_mod.parse(example)
    assert len(parsed.kernels) == 2 and parsed.packages.deb and parsed.drivers[0].kinds[1].value == "ebpf"
    assert config_mod.load(example, tmp_path / "cache") == parsed  # parsed, cache written
    [cache] = (tmp_path / "cache").glob("*.json")
    assert b"pickle" not in cache.read_bytes() and cache.read_bytes().startswith(b"{")
    assert config_mod.load(example, tmp_path / "cache") == parsed  # decoded from the cache


def test_a_deleted_source_path_is_reported_not_served_from_the_cache(tmp_path: Path) -> None:
    source = tmp_path / "hello"
    shutil.copytree(HELLO_KBUILD, source)
    config = tmp_path / "kernels.yaml"
    config.write_text(BASE.replace(str(HELLO_KBUILD), str(source)))
    repogen = Repogen(tmp_path / "home", config)
    (tmp_path / "home").mkdir()
    assert _plan_total(repogen) == 1  # cached, with the path
    assert list((tmp_path / "home" / "cache" / "config").glob("*.json"))
    shutil.rmtree(source)
    for command in ("plan", "validate"):
        result = repogen(command, timeout=60)
        assert result.code == 2, (command, result.err)
        assert f"{config}:{LINE['source']}: drivers[0].source.path: no such file or directory: {source}" \
            in result.err, result.err
        assert "Traceback" not in result.err
