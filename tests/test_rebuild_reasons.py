"""Why a job is rebuilt, said by `build`, `plan --why` and the JSON; and `gc` of what rebuilds left.

The real scenario builds the hello driver for one real Debian kernel in the real builder image.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import HELLO_KBUILD, Repogen, driver_yaml, write_config

from repogen import reasons

pytestmark = pytest.mark.timeout(900)


def test_changes_are_named_by_input() -> None:
    before = reasons.build_inputs(source="s1", headers={"http://m/linux-headers-a.deb": "h1",
                                                        "http://m/linux-kbuild-6.1_6.1.176-1_amd64.deb": "k1"},
                                  image="i1", recipe="kbuild", recipe_script="r1")
    assert reasons.changes(before, before, toolchain="gcc12") == []
    headers = {**before, "headers": {**before["headers"], "http://m/linux-kbuild-6.1_6.1.176-1_amd64.deb": "k2"}}
    assert reasons.changes(before, headers, toolchain="gcc12") == [
        "headers changed (linux-kbuild-6.1_6.1.176-1_amd64.deb)"]
    assert reasons.changes(before, {**before, "image": "i2"}, toolchain="gcc12") == ["builder image gcc12 changed"]
    assert reasons.changes(before, {**before, "image": "i2"}, toolchain="gcc12",
                           previous_toolchain="gcc10") == ["builder changed from gcc10 to gcc12"]
    assert reasons.changes(before, {**before, "source": "s2", "recipe_script": "r2"}, toolchain="gcc12") == [
        "recipe script changed", "source changed"]
    # Not known yet on one side: not a difference; a field the recorder did not have: not compared.
    assert reasons.changes(before, {**before, "source": None, "new_field": "x"}, toolchain="gcc12") == []
    assert reasons.changes({**before, "arch_flags": "a"}, {**before, "arch_flags": "b"},
                           toolchain="gcc12") == ["arch_flags changed"]


def test_explain_without_history() -> None:
    inputs = reasons.build_inputs(source="s", headers={}, image="i", recipe="kbuild", recipe_script="r")
    common: dict[str, Any] = {"pinned": True, "inputs": inputs, "toolchain": "gcc12"}
    assert reasons.explain(state="missing", forced=False, **common) == reasons.NEVER_BUILT
    assert reasons.explain(state="failed", forced=False, **common) == reasons.FAILED_BEFORE
    assert reasons.explain(state="built", forced=True, **common) == reasons.FORCED
    assert reasons.explain(state="built", forced=False, **common) is None
    assert reasons.explain(state="built", forced=False, **{**common, "pinned": False}) == reasons.UNPINNED
    # Recorded before inputs were kept (an old database): still a sentence.
    assert reasons.explain(state="changed", forced=False, previous_inputs="", **common) == "inputs changed"


def _by_reason(result: Any) -> list[tuple[str, str | None]]:
    return [(r["status"], r["reason"]) for r in result.json["results"]]


def test_build_and_plan_say_why_and_gc_collects_what_rebuilds_left(tmp_path: Path, mirror: Any,
                                                                   builder_image: str) -> None:
    source = tmp_path / "hello"
    shutil.copytree(HELLO_KBUILD, source)
    config = write_config(tmp_path, [driver_yaml("hello_repogen", "0.1.0", source, "kbuild", "[kmod]")],
                          mirror.kernels[:1])
    home = tmp_path / "home"
    repogen = Repogen(home, config)
    first = repogen("build", "--json")
    assert first.code == 0, first.err
    assert _by_reason(first) == [("built", "never built")]
    forced = repogen("build", "--rebuild", "kind=kmod")  # the plain output says why too
    assert forced.code == 0 and reasons.FORCED in forced.err, forced.err
    assert f"1 to build: 1 {reasons.FORCED}" in forced.err, forced.err  # said before it starts

    # The builder image was remade with other package versions (another toolchain id): plan says so,
    # without Docker.
    with sqlite3.connect(home / "state.db") as db:
        db.execute("UPDATE images SET toolchain_id = 'sha256:' || substr(toolchain_id, 8, 10) || 'remade'")
    plan = repogen("plan", "--json")
    (job,) = plan.json["jobs"]
    assert job["state"] == "changed" and job["reason"] == f"builder image {job['toolchain']} changed", job
    why = repogen("plan", "--why")
    assert f"builder image {job['toolchain']} changed" in why.out, why.out

    # The source changes: build (which asks Docker for the real toolchain ids again) says only that.
    (source / "hello_repogen.c").write_text((source / "hello_repogen.c").read_text()
                                            + '\nMODULE_INFO(repogen_test, "changed");\n')
    assert repogen("plan", "--json").json["jobs"][0]["reason"] == (
        f"builder image {job['toolchain']} changed, source changed")
    changed = repogen("build", "--json")
    assert _by_reason(changed) == [("built", "source changed")], changed.json

    # gc: the first artifact (the source before the change) is referenced by nothing now.
    objects = sorted(p.name for p in (home / "store" / "sha256").rglob("*") if p.is_file())
    current = changed.json["results"][0]["sha256"]
    assert current in objects and len(objects) >= 2, objects
    dry = repogen("gc", "--dry-run", "--json")
    assert dry.code == 0 and dry.json["removed"]["artifact"]["count"] == len(objects) - 1, dry.json
    assert sorted(p.name for p in (home / "store" / "sha256").rglob("*") if p.is_file()) == objects
    done = repogen("gc", "--json")
    assert done.code == 0 and done.json["freed"] >= dry.json["removed"]["artifact"]["bytes"] > 0
    assert [p.name for p in (home / "store" / "sha256").rglob("*") if p.is_file()] == [current]
    assert repogen("plan", "--json").json["counts"] == {"built": 1}
    published = repogen("publish", "--site", str(tmp_path / "site"), "--json")
    assert published.code == 0 and published.json["artifacts"] == 1, published.err
    # Reverting the source compiles again: the collected artifact is not claimed as built.
    shutil.copy(HELLO_KBUILD / "hello_repogen.c", source / "hello_repogen.c")
    reverted = repogen("build", "--json")
    assert _by_reason(reverted) == [("built", "source changed")], reverted.json
