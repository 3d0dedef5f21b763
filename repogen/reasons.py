"""Why a job is (re)built: its inputs now against those recorded with its last good build.

Every build records what went into its key as a JSON object (the ``inputs`` column of the
``builds`` table). ``plan`` computes the same object from the database and ``build`` from what it
fetched, and :func:`explain` turns the difference into words: "builder image gcc12 changed",
"source changed", "headers changed (linux-kbuild-6.1_6.1.176-1_amd64.deb)", "forced". It compares
plain dicts, so a new input (another image naming scheme, a new field) needs no change here: an
unknown field reads "<field> changed".
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from typing import Any

FORCED = "forced (--rebuild)"
NEVER_BUILT = "never built"
FAILED_BEFORE = "failed last time"
UNKNOWN_INPUTS = "inputs not known yet (headers never downloaded, or no builder image)"
UNPINNED = "source has no sha256: fetched again to check"


def build_inputs(*, source: str | None, headers: Mapping[str, str | None], image: str | None, recipe: str,
                 recipe_script: str) -> dict[str, Any]:
    """The inputs record of one build (``None`` for what is not known yet)."""
    return {"source": source, "headers": dict(headers), "image": image, "recipe": recipe,
            "recipe_script": recipe_script}


def parse_inputs(text: str | None) -> dict[str, Any]:
    """A recorded inputs column (empty in databases written before inputs were recorded)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def changes(previous: Mapping[str, Any], current: Mapping[str, Any], *, toolchain: str,
            previous_toolchain: str | None = None) -> list[str]:
    """What differs, in words; a value not known on either side (None, or absent) is not compared."""
    out: list[str] = []
    for field in sorted(current.keys() | previous.keys()):
        before, now = previous.get(field), current.get(field)
        if before is None or now is None or before == now:
            continue
        out.append(_describe(field, before, now, toolchain, previous_toolchain))
    return out


def _describe(field: str, before: Any, now: Any, toolchain: str, previous_toolchain: str | None) -> str:
    if field == "image":
        if previous_toolchain and previous_toolchain != toolchain:
            return f"builder changed from {previous_toolchain} to {toolchain}"
        return f"builder image {toolchain} changed"
    if field == "headers" and isinstance(before, dict) and isinstance(now, dict):
        names = sorted(posixpath.basename(url) or url for url in now.keys() | before.keys()
                       if now.get(url) is not None and now.get(url) != before.get(url))
        if not names:
            return "headers changed"
        shown = ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")
        return f"headers changed ({shown})"
    if field == "recipe_script":
        return "recipe script changed"
    return f"{field} changed"


def explain(*, state: str, forced: bool, pinned: bool, inputs: Mapping[str, Any], toolchain: str,
            previous_inputs: str | None = None, previous_toolchain: str | None = None) -> str | None:
    """Why the job runs, or None when it does not need to.

    ``state`` is the plan's (built, missing, changed, failed, unknown); ``previous_inputs`` the
    recorded inputs of the artifact publish serves now, when there is one.
    """
    if forced:
        return FORCED
    if previous_inputs is not None:
        found = changes(parse_inputs(previous_inputs), inputs, toolchain=toolchain,
                        previous_toolchain=previous_toolchain)
        if found:
            return ", ".join(found)
    if state == "built":
        return None if pinned else UNPINNED
    if state == "missing":
        return NEVER_BUILT
    if state == "failed":
        return FAILED_BEFORE
    if state == "unknown":
        return UNKNOWN_INPUTS
    return "inputs changed" if state == "changed" else None
