"""Which jobs a change to kernels.yaml touches: the entries that differ from the matrix at a git ref.

A pull request that adds or edits a few kernels should build those, not the whole matrix. Each file
of the matrix (the main file and what its ``include:`` patterns match) is read as it is now and as
``git show REF:path`` has it; a driver is compared by (name, version) and a kernel by (target,
kernelrelease, kernelversion, architecture), entry against entry, so an edited header URL or sha256
counts as a change while moving an entry between files does not.
"""

from __future__ import annotations

import fnmatch
import subprocess
from pathlib import Path
from typing import Any

import yaml

from repogen.errors import RepogenError
from repogen.model import Config, Job

DriverKey = tuple[str, str]
KernelKey = tuple[str, str, str, str]


def _git(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise RepogenError("--changed-since needs git, which is not installed") from None


def _entries(texts: list[str]) -> tuple[dict[DriverKey, Any], dict[KernelKey, Any]]:
    drivers: dict[DriverKey, Any] = {}
    kernels: dict[KernelKey, Any] = {}
    for text in texts:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            continue  # the old side may be broken: every entry of it then counts as changed
        if not isinstance(data, dict):
            continue
        for d in data.get("drivers") or []:
            if isinstance(d, dict):
                drivers[(str(d.get("name")), str(d.get("version")))] = d
        for k in data.get("kernels") or []:
            if isinstance(k, dict):
                kernels[(str(k.get("target")), str(k.get("kernelrelease")), str(k.get("kernelversion")),
                         str(k.get("architecture")))] = k
    return drivers, kernels


def _files_at(ref: str, main: Path) -> list[str]:
    """The matrix files' texts at ``ref``: the main file and what its include patterns matched there."""
    directory = main.parent
    shown = _git(directory, "show", f"{ref}:./{main.name}")
    if shown.returncode:
        check = _git(directory, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if check.returncode:
            raise RepogenError(f"--changed-since {ref}: not a git revision here ({directory})",
                               hint="fetch it first (e.g. `git fetch origin main` and use origin/main)")
        return []  # the file did not exist at ref: everything is new
    texts = [shown.stdout]
    try:
        data = yaml.safe_load(shown.stdout)
    except yaml.YAMLError:
        return texts
    patterns = data.get("include") if isinstance(data, dict) else None
    if not isinstance(patterns, list) or not patterns:
        return texts
    listing = _git(directory, "ls-tree", "-r", "--name-only", ref, "--", ".")
    names = listing.stdout.splitlines() if listing.returncode == 0 else []
    for name in sorted(names):
        if any(isinstance(p, str) and fnmatch.fnmatchcase(name, p) for p in patterns):
            older = _git(directory, "show", f"{ref}:./{name}")
            if older.returncode == 0:
                texts.append(older.stdout)
    return texts


def changed_since(config: Config, main: Path, ref: str) -> tuple[set[DriverKey], set[KernelKey]]:
    """The drivers and kernels that are new or different now compared with ``ref``."""
    now_drivers, now_kernels = _entries([Path(f).read_text() for f in config.files])
    old_drivers, old_kernels = _entries(_files_at(ref, main.absolute()))
    drivers = {key for key, entry in now_drivers.items() if old_drivers.get(key) != entry}
    kernels = {key for key, entry in now_kernels.items() if old_kernels.get(key) != entry}
    return drivers, kernels


def select_changed(jobs: list[Job], config: Config, main: Path, ref: str) -> list[Job]:
    drivers, kernels = changed_since(config, main, ref)
    return [j for j in jobs if (j.driver.name, j.driver.version) in drivers or j.kernel.ident in kernels]
