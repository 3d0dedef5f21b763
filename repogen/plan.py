"""Plan: which jobs are built, missing, changed or failed, from the database alone.

No network and no Docker: the toolchain ids come from the database (recorded by `repogen images
build` and `repogen build`), so a no-op plan over tens of thousands of jobs is one pass of short
hashes, and a CI planner needs no Docker engine.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from repogen import images, reasons, recipes
from repogen.home import Home
from repogen.model import Driver, Job, Kind
from repogen.sources import tree_digest
from repogen.store import build_key, headers_key

#: Bump when the way artifacts are built changes in a way the other inputs do not capture.
BUILD_FORMAT = 1

#: built: done with these exact inputs; cached: built elsewhere, in the remote cache (build downloads
#: it, no compile); missing: never built; changed: built from other inputs; failed: the last attempt
#: failed; unknown: built before, but the inputs cannot be known yet; needs-sources: a config-only
#: kernel (bottlerocket, talos, ...): building it needs the kernel sources prepared with its
#: kernelconfigdata, which repogen does not do yet.
STATES = ("built", "cached", "missing", "changed", "failed", "unknown", "needs-sources")
CACHED_REASON = "built elsewhere: in the remote cache (downloaded, not compiled)"
NEEDS_SOURCES_ERROR = ("no headers package: building needs the kernel sources prepared with its kernelconfigdata "
                       "(not supported yet)")


@dataclass(slots=True)
class Planned:
    job: Job
    toolchain: str
    #: The builder's toolchain id (the same on every machine with the same packages): part of the key.
    toolchain_id: str | None
    key: str | None
    state: str  # one of STATES
    error: str | None = None
    #: Why it would be built ("builder image gcc12 changed", "never built"); None when it is built.
    reason: str | None = None


@functools.cache
def script_digest(recipe_name: str) -> str:
    return hashlib.sha256(recipes.get(recipe_name).script().encode()).hexdigest()


@functools.cache
def _driver_part(name: str, version: str, kind: str, recipe: str, source_digest: str) -> str:
    return build_key({"format": BUILD_FORMAT, "name": name, "version": version, "kind": kind, "recipe": recipe,
                      "recipe_script": script_digest(recipe), "source": source_digest})


@functools.lru_cache(maxsize=1 << 16)
def _kernel_part(ident: tuple[str, ...], header_digests: tuple[str, ...]) -> str:
    # Fields never hold NUL (validated), so joining on it is unambiguous.
    return hashlib.sha256("\0".join((*ident, "", *header_digests)).encode()).hexdigest()


def job_key(job: Job, source_digest: str, header_digests: list[str], toolchain_id: str) -> str:
    """The build key: a hash of everything that changes a build's output.

    Driver side (name, version, kind, recipe and its script, source digest) and kernel side
    (identifiers, header digests) are hashed once each and combined with the toolchain id, so a
    plan over tens of thousands of jobs costs one short hash per job.
    """
    driver = _driver_part(job.driver.name, job.driver.version, job.kind, job.driver.recipe, source_digest)
    kernel = _kernel_part(job.kernel.ident, tuple(header_digests))
    return _combine(driver, kernel, toolchain_id)


def _combine(driver_part: str, kernel_part: str, toolchain_id: str) -> str:
    return hashlib.sha256(f"{driver_part}:{kernel_part}:{toolchain_id}".encode()).hexdigest()


def _known_source_digest(home: Home, driver: Driver, cache: dict[tuple[str, str], str | None]) -> str | None:
    key = (driver.source.location, driver.version)
    if key not in cache:
        source = driver.source
        if source.path:
            path = Path(source.path)
            cache[key] = tree_digest(path) if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        elif source.sha256:
            cache[key] = source.sha256
        else:
            cache[key] = home.store.source_digest(source.location, driver.version)
    return cache[key]


def plan(home: Home, jobs: list[Job], toolchain_ids: dict[str, str],
         remote_keys: set[str] | frozenset[str] = frozenset()) -> list[Planned]:
    """What each job needs, from the database alone: no network, no Docker call per job.

    ``remote_keys`` are the build keys a remote cache holds (read from its index in a few requests).

    A no-op plan over tens of thousands of jobs costs one short hash and two dict lookups per job:
    whatever depends on the kernel (headers, toolchain, key part, job id part) is worked out once per
    kernel, whatever depends on the driver once per driver version and kind.
    """
    url_digests = home.store.url_digests()
    good = home.store.good_keys()
    failed = home.store.failed_jobs()
    source_digests: dict[tuple[str, str], str | None] = {}
    kernel_gccs = home.store.kernel_gccs()
    chains: dict[tuple[tuple[int, ...], str | None, int | None], images.Toolchain] = {}
    errors = {k: r.error for k, r in home.store.builds(list(failed.values())).items()} if failed else {}
    out: list[Planned] = []
    explaining: list[tuple[Planned, dict[str, object], str | None]] = []
    kernel = None
    kernel_tail = kernel_id = toolchain = ""
    drivers: dict[tuple[int, Kind], _DriverSide] = {}
    for job in jobs:
        if job.kernel is not kernel:  # jobs come kernel by kernel: resolve each kernel once
            kernel = job.kernel
            headers = [h.sha256 or url_digests.get(h.url) for h in kernel.headers]
            known = all(headers)
            # The gcc that built the kernel, once its headers were read (else the guess by version).
            gcc = kernel_gccs.get(headers_key(cast("list[str]", headers))) if known and kernel_gccs else None
            chain_key = (images.kernel_version(kernel.kernelrelease), kernel.builder, gcc)
            chain = chains.get(chain_key)
            if chain is None:
                chain = chains[chain_key] = images.choose(kernel, gcc)
            toolchain = chain.name
            toolchain_id = toolchain_ids.get(toolchain)
            # The key's kernel side and the job id's kernel part (see _combine and Job.job_id).
            kernel_tail = f"{_kernel_part(kernel.ident, tuple(headers))}:{toolchain_id}" if known and toolchain_id \
                else ""
            kernel_id = "|".join(kernel.ident)
        if not kernel.headers:
            out.append(Planned(job, toolchain, toolchain_id, None, "needs-sources", NEEDS_SOURCES_ERROR))
            continue
        side = drivers.get((id(job.driver), job.kind))  # identity: hashing a frozen dataclass is slow
        if side is None:
            side = drivers[(id(job.driver), job.kind)] = _driver_side(home, job, source_digests)
        key = hashlib.sha256((side.key_head + kernel_tail).encode()).hexdigest() if side.key_head and kernel_tail \
            else None
        job_id = side.id_head + kernel_id + side.id_tail
        good_key = good.get(job_id)
        failed_key = failed.get(job_id) if failed else None
        if key and good_key == key:  # what publish would serve is built from these inputs
            state = "built"
        elif failed_key and (key is None or failed_key == key):
            state = "failed"
        elif good_key:
            # Built before: with a computable key the inputs changed; without one (no builder image,
            # headers never fetched), build will tell.
            state = "changed" if key else "unknown"
        else:
            state = "missing"
        if state != "built" and key is not None and key in remote_keys:
            state = "cached"
        error = errors.get(failed_key) if failed_key and state == "failed" else None
        planned = Planned(job, toolchain, toolchain_id, key, state, error)
        if state == "cached":  # nothing to compare: it is built, elsewhere
            planned.reason = CACHED_REASON
        elif state != "built" or not side.pinned:
            inputs = reasons.build_inputs(
                source=source_digests.get((job.driver.source.location, job.driver.version)),
                headers={h.url: d for h, d in zip(kernel.headers, headers, strict=True)}, image=toolchain_id,
                recipe=job.driver.recipe, recipe_script=script_digest(job.driver.recipe))
            explaining.append((planned, inputs, good_key if state != "built" else None))
        out.append(planned)
    _explain(home, explaining)
    return out


@dataclass(frozen=True)
class _DriverSide:
    """What a plan works out once per driver version and kind."""

    key_head: str | None  # "<driver part>:", the start of what _combine hashes; None: source unknown
    id_head: str  # the job id before the kernel's identifiers, and after (Job.job_id)
    id_tail: str
    pinned: bool


def _driver_side(home: Home, job: Job, source_digests: dict[tuple[str, str], str | None]) -> _DriverSide:
    driver = job.driver
    source = _known_source_digest(home, driver, source_digests)
    part = source and _driver_part(driver.name, driver.version, job.kind, driver.recipe, source)
    id_head, id_tail = f"{driver.name}|{driver.version}|", f"|{job.kind}"
    if id_head + "|".join(job.kernel.ident) + id_tail != job.job_id:
        raise AssertionError(f"plan's job id differs from Job.job_id: {job.job_id}")
    return _DriverSide(f"{part}:" if part else None, id_head, id_tail, driver.source.pinned)


def _explain(home: Home, explaining: list[tuple[Planned, dict[str, object], str | None]]) -> None:
    """Fill in each job's reason, comparing with the inputs of the artifact it has (one query)."""
    previous = home.store.builds([k for _, _, k in explaining if k])
    for planned, inputs, good_key in explaining:
        record = previous.get(good_key or "")
        planned.reason = reasons.explain(
            state=planned.state, forced=False, pinned=planned.job.driver.source.pinned, inputs=inputs,
            toolchain=planned.toolchain, previous_inputs=record.inputs if record else None,
            previous_toolchain=record.toolchain if record else None)
