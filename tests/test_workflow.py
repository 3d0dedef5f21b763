"""The GitHub Actions workflow: valid against GitHub's workflow schema, clean under zizmor's audits,
and doing what the README says (changed entries on a pull request; shards, cache, publish, upload on main).

Both tools run offline: check-jsonschema ships the schema (``vendor.github-workflows``), and
``zizmor --offline`` skips only the audits that ask GitHub's API.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))

pytestmark = pytest.mark.timeout(120)


def tool(name: str) -> str:
    found = Path(sys.executable).parent / name
    path = str(found) if found.exists() else shutil.which(name)
    assert path, f"{name} is not installed (pip install -e .[test])"
    return path


def test_workflows_match_githubs_schema() -> None:
    assert WORKFLOWS
    proc = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                           *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflows_pass_zizmor_audits() -> None:
    proc = subprocess.run([tool("zizmor"), "--offline", "--persona", "auditor", *map(str, WORKFLOWS)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_drivers_workflow_builds_changed_entries_on_prs_and_shards_publishes_uploads_on_main() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "drivers.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert set(triggers["pull_request"]["paths"]) == {"kernels.yaml", "kernels.d/**"}
    assert workflow["permissions"] == {}
    jobs = workflow["jobs"]

    def runs(job: str) -> str:
        return "\n".join(step.get("run", "") for step in jobs[job]["steps"])

    assert "repogen validate" in runs("changed") and "--changed-since" in runs("changed")
    assert "build --changed-since" in runs("changed") and "secrets." not in str(jobs["changed"])
    assert jobs["changed"]["permissions"] == {"contents": "read"}
    assert len(jobs["build"]["strategy"]["matrix"]["shard"]) == 4
    assert '--shard "$SHARD/4"' in runs("build") and "--cache" in runs("build")
    assert jobs["publish"]["needs"] == "build"
    assert "repogen publish" in runs("publish") and "repogen upload" in runs("publish")
    for job in jobs.values():
        for step in job["steps"]:
            uses = step.get("uses")
            if uses:
                assert len(uses.split("@", 1)[1]) == 40, f"{uses}: pin actions to a commit"
            assert "${{" not in step.get("run", ""), "expressions go through env:, never into a script"
