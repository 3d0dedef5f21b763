"""Run the builds: one hermetic container per missing (driver, kernel, kind).

Shared inputs are resolved once however many jobs need them (each headers URL downloaded once,
each kernel's headers unpacked once, each driver version fetched and prepared once), jobs run in a
thread pool, and a failed job is recorded and never stops the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from repogen import arch, atomic, container, images, locks, ownership, reasons, recipes
from repogen.errors import BuildError, FetchError, RepogenError
from repogen.fetch import Download
from repogen.headers import HeadersCache, KernelTree
from repogen.home import KEEP_MARK, Home
from repogen.locks import KeyLocks
from repogen.matrix import Selector
from repogen.model import Config, Driver, Job
from repogen.plan import Planned, job_key, script_digest
from repogen.remote_cache import RemoteCache
from repogen.sources import SourceTree
from repogen.store import BuildRecord, build_key
from repogen.verify import VerificationError, Verified, verify


@dataclass
class Result:
    job: Job
    status: str  # "built" | "cached" (from the remote cache) | "up-to-date" | "failed"
    seconds: float = 0.0
    key: str | None = None
    artifact_sha256: str | None = None
    error: str | None = None
    log: str | None = None
    reason: str | None = None  # why it was (re)built: see repogen.reasons


@dataclass
class Counters:
    """What the pipeline did, for the summary and the benchmarks (counted, not timed)."""

    header_downloads: int = 0
    source_fetches: int = 0
    prepares: int = 0
    kernels_unpacked: int = 0
    containers: int = 0


def _failure_reason(exc: BaseException) -> str:
    """A failed job's reason, one line: our own errors say it all; others are named by their type."""
    if isinstance(exc, (RepogenError, VerificationError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def select_work(planned: list[Planned], rebuild: list[Selector]) -> tuple[list[Planned], set[str]]:
    """The jobs a build runs (not built from these inputs, forced by ``--rebuild``, or an unpinned
    source to re-check) and the ids of the forced ones."""
    forced = {p.job.job_id for p in planned if any(s.matches(p.job) for s in rebuild)}
    todo = [p for p in planned if p.state != "needs-sources"
            and (p.state != "built" or p.job.job_id in forced or not p.job.driver.source.pinned)]
    return todo, forced


def prepared_key(source_digest: str, recipe: str, driver: Driver, image_id: str) -> str:
    """The directory name of a driver version prepared once (e.g. cmake run) in one builder image."""
    return build_key({"source": source_digest, "recipe": recipe, "name": driver.name, "version": driver.version,
                      "image": image_id, "script": script_digest(recipe)})[:32]


class Builder:
    """Runs planned jobs; owns the per-run memory of shared steps (done once, failed once)."""

    def __init__(self, home: Home, config: Config, client: docker.DockerClient, *,
                 image_ids: dict[str, str], toolchain_ids: dict[str, str], keep_work: bool = False,
                 remote: RemoteCache | None = None, on_event: Callable[[str], None] | None = None) -> None:
        self.home = home
        self.remote = remote
        self.config = config
        self.client = client
        self.image_ids = dict(image_ids)  # toolchain name -> builder image id (what containers run)
        self.toolchain_ids = dict(toolchain_ids)  # toolchain name -> toolchain id (what keys hold)
        self.keep_work = keep_work
        self.on_event = on_event
        self.make_jobs = os.cpu_count() or 1
        self._image_locks: dict[str, threading.Lock] = {}
        self._locks = KeyLocks(home.path / "locks")
        self.labels = container.owner_labels(home.path)
        self._prepare_failures: dict[str, BuildError] = {}
        self._source_failures: dict[tuple[str, str], RepogenError] = {}
        self._guard = threading.Lock()
        self.counters = Counters()
        #: Dask workers push entries and leave the index log to the client, which sees every result.
        self.log_pushes = True
        #: Who holds this builder's cache leases (None: this process); a Dask run shares one name.
        self.lease_owner: str | None = None
        self.reaped = 0  # containers of runs killed mid-build, removed by this run
        self.swept = 0  # their scratch files and directories

    # shared, once-only steps --------------------------------------------------------------------
    def _source(self, driver: Driver) -> SourceTree:
        key = (driver.source.location, driver.version)
        if key in self._source_failures:
            raise self._source_failures[key]
        try:
            tree = self.home.sources.resolve(driver)
        except (RepogenError, OSError) as exc:
            error = exc if isinstance(exc, RepogenError) else FetchError(f"{driver.source.location}: {exc}")
            self._source_failures[key] = error
            raise error from None
        if not driver.source.pinned:
            self.home.store.record_source(driver.source.location, driver.version, tree.digest)
        return tree

    def _headers(self, job: Job) -> list[Download]:
        return [self.home.downloads.get(h.url, h.sha256) for h in job.kernel.headers]

    def _tree(self, job: Job, files: list[Download]) -> KernelTree:
        try:
            return self.home.headers.tree(job.kernel.target, files)
        except FetchError as exc:
            # A corrupt download must not poison the cache: forget it so a rerun re-fetches.
            for f in files:
                if f.url == exc.url:
                    self.home.downloads.forget(f.url, f.sha256)
            raise

    def _recipe_script(self, recipe: type[recipes.Recipe]) -> Path:
        text = recipe.script()
        path = self.home.path / "cache" / "recipes" / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.sh"
        if not path.exists():
            atomic.write_file(path, text.encode(), mode=0o555)
        return path

    def _prepared(self, job: Job, source: SourceTree, image_id: str) -> Path:
        recipe = recipes.get(job.driver.recipe)
        if not recipe.needs_prepare:
            return source.root
        key = prepared_key(source.digest, recipe.name, job.driver, image_id)
        with self._locks.hold(f"prepare-{key}", f"preparing {job.driver.name} {job.driver.version}"):
            if key in self._prepare_failures:
                raise self._prepare_failures[key]
            final = self.home.prepared / key
            if atomic.completed(final) is not None:
                return final
            log = self.home.logs / "prepare" / f"{job.driver.name}-{job.driver.version}-{key[:12]}.log"
            log.unlink(missing_ok=True)

            def fill(staging: Path) -> None:
                ownership.hand_over(staging, *ownership.container_user())  # 0700, the container's user only
                result = container.run(
                    self.client, image_id, ["bash", "/repogen/recipe.sh", "prepare"],
                    readonly=[(source.root / "src", "/src"), (self._recipe_script(recipe), "/repogen/recipe.sh")],
                    writable=[(staging, "/out")],
                    environment={"DRIVER_NAME": job.driver.name, "DRIVER_VERSION": job.driver.version},
                    workdir="/out", timeout=self.config.limits.timeout_seconds, memory=self.config.limits.memory,
                    pids=self.config.limits.pids, log_path=log, labels=self.labels)
                with self._guard:
                    self.counters.containers += 1
                if not result.ok:
                    limits = self.config.limits
                    error = BuildError(f"preparing {job.driver.name} {job.driver.version} "
                                       f"{result.describe(limits.timeout_seconds, limits.memory)}",
                                       hint=f"log: {log}")
                    self._prepare_failures[key] = error
                    raise error

            # A shared cache: sealed read-only, owned by us, whatever the recipe wrote.
            atomic.install_dir(final, fill, finish=ownership.seal)
            with self._guard:
                self.counters.prepares += 1
            return final

    @staticmethod
    def _mkdir(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _image(self, chain: images.Toolchain) -> tuple[str, str]:
        """The builder image of a toolchain and its toolchain id, the image made on first use
        (debootstrap + build) when missing."""
        with self._guard:
            lock = self._image_locks.setdefault(chain.name, threading.Lock())
        with lock:
            found = self.image_ids.get(chain.name)
            if found is None:
                if self.on_event:
                    self.on_event(f"builder image {chain.name} is missing: making it (a few minutes, once)")
                found = images.ensure(self.client, chain, self.home.logs / "images")
                self.image_ids[chain.name] = found
            if (toolchain_id := self.toolchain_ids.get(chain.name)) is None:
                toolchain_id = images.toolchain_ids(self.client, {chain.name: found})[chain.name]
                self.toolchain_ids[chain.name] = toolchain_id
                self.home.store.record_images(dict(self.image_ids), dict(self.toolchain_ids))
            return found, toolchain_id

    def _kernel(self, job: Job, files: list[Download]) -> tuple[images.Toolchain, KernelTree | None]:
        """The toolchain that matches the kernel's own gcc: from the recorded facts of its headers, else
        by unpacking them (the tree is returned then, so it is not looked up twice)."""
        key = HeadersCache.key([f.sha256 for f in files])
        known, gcc = self.home.store.kernel_gcc(key)
        if known:
            return images.choose(job.kernel, gcc), None
        tree = self._tree(job, files)
        self.home.store.record_kernel(key, tree.release, tree.gcc, tree.config_sha256)
        return images.choose(job.kernel, tree.gcc), tree

    # one job ------------------------------------------------------------------------------------
    def run_job(self, planned: Planned, force: bool) -> Result:
        job = planned.job
        started = time.time()
        key: str | None = None
        inputs = ""
        log_path: Path | None = None
        image_id: str | None = None
        toolchain = planned.toolchain
        leased = False
        try:
            early_key = planned.key if job.driver.source.pinned else None  # a branch may have moved
            if (cached := self._from_cache(planned, early_key, force, started)) is not None:
                return cached  # found by the key plan knew: not even the headers are downloaded
            source = self._source(job.driver)
            files = self._headers(job)
            chain, tree = self._kernel(job, files)
            toolchain = chain.name
            image_id, toolchain_id = self._image(chain)
            key = job_key(job, source.digest, [f.sha256 for f in files], toolchain_id)
            # What went into the key, kept with the build: "why was this rebuilt?" is a diff away.
            inputs_record = reasons.build_inputs(
                source=source.digest, headers={f.url: f.sha256 for f in files}, image=toolchain_id,
                recipe=job.driver.recipe, recipe_script=script_digest(job.driver.recipe))
            inputs_record["toolchain"] = chain.name
            inputs = json.dumps(inputs_record, sort_keys=True)
            # Another run on this home may be building this very artifact: wait for it, then use it.
            with self._locks.hold(f"build-{key}", f"building {job.label}"):
                if self.home.store.is_ok(key) and (not force or self._built_since(key, started)):
                    # Built before from these very inputs (e.g. a source reverted to an earlier state,
                    # or by a concurrent run): make it the job's current artifact, without compiling.
                    self.home.store.set_good(job.job_id, key)
                    return Result(job, "up-to-date", key=key)
                if key != early_key and (cached := self._from_cache(planned, key, force, started)) is not None:
                    return cached
                if self.remote is not None and not force:  # another machine compiling this key: wait for it
                    ttl = self.config.limits.timeout_seconds + 600
                    if (waited := self.remote.claim_or_wait(job, key, self.home.store, ttl=ttl,
                                                            owner=self.lease_owner)) is not None:
                        return Result(job, "cached", time.time() - started, key, waited.artifact_sha256)
                    leased = True
                reason = self._reason(planned, force, inputs_record, chain.name)
                log_path = self._log_path(job, key)
                tree = tree or self._tree(job, files)
                prepared = self._prepared(job, source, image_id)
                scratch, artifact, info = self._compile(job, key, tree, prepared, image_id, chain, log_path)
                digest, size = self.home.store.put_object(artifact)
                if not self.keep_work:
                    shutil.rmtree(scratch, ignore_errors=True)
                record = self._record(job, key, "ok", started, image_id, chain.name, log_path, digest=digest,
                                      size=size, vermagic=info.vermagic, tree=tree, inputs=inputs)
                if self.remote is not None:  # the artifact first, then the entry naming it
                    self.remote.push(job, record, self.home.store.object_path(digest), log_it=self.log_pushes)
                return Result(job, "built", time.time() - started, key, digest, log=str(log_path), reason=reason)
        except Exception as exc:  # whatever went wrong, it is this job's failure alone
            message = _failure_reason(exc)
            if force and (good_key := self.home.store.good_keys().get(job.job_id)):
                # A suspect artifact (--rebuild) is not published again unless its rebuild succeeds.
                self.home.store.forget_build(good_key)
            # Before the key is known (a download failed), record under the key plan computes from the
            # pinned digests, so `plan` shows this job as failed; else under a key of its own.
            failed_key = key or planned.key or build_key({"job": job.job_id, "unresolved": message})
            self._record(job, failed_key, "failed", started, image_id, toolchain, log_path, error=message,
                         inputs=inputs)
            return Result(job, "failed", time.time() - started, failed_key, error=message,
                          log=str(log_path) if log_path else None)
        finally:
            if leased and self.remote is not None and key:
                self.remote.release(job, key)

    def _reason(self, planned: Planned, force: bool, inputs: dict[str, Any], toolchain: str) -> str | None:
        """Why this job compiles, from the inputs it really has against its current artifact's."""
        good_key = self.home.store.good_keys_of([planned.job.job_id]).get(planned.job.job_id)
        record = self.home.store.builds([good_key]).get(good_key) if good_key else None
        return reasons.explain(
            state=planned.state, forced=force, pinned=planned.job.driver.source.pinned, inputs=inputs,
            toolchain=toolchain, previous_inputs=record.inputs if record else None,
            previous_toolchain=record.toolchain if record else None) or planned.reason

    def _from_cache(self, planned: Planned, key: str | None, force: bool, started: float) -> Result | None:
        if self.remote is None or force or key is None:
            return None
        record = self.remote.restore(planned.job, key, self.home.store)
        if record is None:
            return None
        return Result(planned.job, "cached", time.time() - started, key, record.artifact_sha256)

    def _built_since(self, key: str, started: float) -> bool:
        record = self.home.store.builds([key]).get(key)
        return record is not None and (record.finished_at or 0) >= started

    def _log_path(self, job: Job, key: str) -> Path:
        k = job.kernel
        name = f"{k.target}_{k.kernelrelease}_{k.kernelversion}_{k.architecture}.{job.kind.value}.{key[:12]}.log"
        path = self.home.logs / job.driver.name / job.driver.version / name
        path.unlink(missing_ok=True)
        return path

    def _compile(self, job: Job, key: str, tree: KernelTree, prepared: Path, image_id: str,
                 chain: images.Toolchain, log_path: Path) -> tuple[Path, Path, Verified]:
        recipe = recipes.get(job.driver.recipe)
        scratch = Path(tempfile.mkdtemp(prefix=locks.owned(key[:12]) + "~", dir=self._mkdir(self.home.work)))
        if self.keep_work:
            (scratch / KEEP_MARK).touch()  # kept for debugging: not a leftover for the next run to sweep
        work = scratch / "work"
        kbuild_dir = prepared / recipe.kbuild_dirs[job.kind]
        if not kbuild_dir.is_dir():
            raise BuildError(f"{job.driver.name} {job.driver.version} has no {job.kind.value} "
                             f"({recipe.kbuild_dirs[job.kind]} is missing after prepare)")
        shutil.copytree(kbuild_dir, work, symlinks=True)
        ownership.hand_over(work, *ownership.container_user())  # never through a link in the copy
        limits = self.config.limits
        target = arch.get(job.kernel.architecture)
        readonly = [*tree.mounts(), (self._recipe_script(recipe), "/repogen/recipe.sh")]
        result = container.run(
            self.client, image_id, ["bash", "/repogen/recipe.sh", job.kind.value],
            readonly=readonly, writable=[(work, "/work")],
            environment={"KERNELDIR": tree.container_kernel_dir, "DRIVER_NAME": job.driver.name,
                         "DRIVER_VERSION": job.driver.version, "KARCH": target.kbuild,
                         "CROSS_COMPILE": target.cross_compile, "MAKE_JOBS": str(self.make_jobs)},
            workdir="/work", timeout=limits.timeout_seconds, memory=limits.memory, pids=limits.pids,
            log_path=log_path, labels=self.labels)
        with self._guard:
            self.counters.containers += 1
        if not result.ok:
            if not self.keep_work:
                shutil.rmtree(scratch, ignore_errors=True)
            raise BuildError(result.describe(limits.timeout_seconds, limits.memory), hint=f"log: {log_path}")
        artifact = work / recipe.output(job.driver, job.kind)
        try:
            info = verify(artifact, job.kind, name=job.driver.name, kernel_release=tree.release,
                          architecture=job.kernel.architecture, symvers=tree.symvers)
        except VerificationError as exc:
            with log_path.open("a") as log:
                log.write(f"# verification failed: {exc}\n")
            if not self.keep_work:
                shutil.rmtree(scratch, ignore_errors=True)
            raise BuildError(f"verification failed: {exc}", hint=f"log: {log_path}") from None
        with log_path.open("a") as log:
            log.write(f"# built with {chain.name} (Debian {chain.suite}, gcc {chain.gcc}, clang {chain.clang}); "
                      f"the kernel was built by gcc {tree.gcc or 'unknown'}\n# verified {artifact.name}: "
                      f"{info.describe()}\n")
        return scratch, artifact, info

    def _record(self, job: Job, key: str, status: str, started: float, image_id: str | None, toolchain: str,
                log_path: Path | None, *, digest: str | None = None, size: int | None = None,
                vermagic: str | None = None, tree: KernelTree | None = None, error: str | None = None,
                inputs: str = "") -> BuildRecord:
        finished = time.time()
        config_sha = tree.config_sha256 if tree is not None else None  # the headers' own .config
        record = BuildRecord(
            build_key=key, job_id=job.job_id, status=status, artifact_sha256=digest, size=size,
            image_id=image_id, toolchain=toolchain, vermagic=vermagic,
            kernel_release=tree.release if tree else None, kernel_config_sha256=config_sha,
            inputs=inputs, started_at=started, finished_at=finished, seconds=finished - started,
            log_path=str(log_path) if log_path else None, error=error)
        self.home.store.record_build(record)
        return record

    # the whole run ------------------------------------------------------------------------------
    def run(self, planned: list[Planned], *, jobs: int, rebuild: list[Selector],
            on_done: Callable[[Result], None] | None = None) -> list[Result]:
        todo, forced = select_work(planned, rebuild)
        self.reaped = container.reap(self.client, self.home.path)
        self.swept = self.home.sweep()
        # The cores are shared between parallel builds: each make gets its part.
        self.make_jobs = max(1, (os.cpu_count() or 1) // max(1, min(jobs, len(todo) or 1)))
        running = {p.job.job_id for p in todo}
        results = [Result(p.job, "up-to-date", key=p.key) for p in planned if p.job.job_id not in running]
        before = (self.home.downloads.downloads, self.home.headers.unpacked)
        # Kernel-major order keeps one kernel's jobs together, so its headers are unpacked once early.
        with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="build") as pool:
            futures = {pool.submit(self.run_job, p, p.job.job_id in forced): p for p in todo}
            for future in as_completed(futures):
                try:
                    result = future.result()
                except Exception as exc:  # even recording the failure failed (a full disk)
                    result = Result(futures[future].job, "failed", error=_failure_reason(exc))
                results.append(result)
                if on_done:
                    on_done(result)
        if self.remote is not None:
            self.remote.close()
        self.counters.header_downloads = self.home.downloads.downloads - before[0]
        self.counters.kernels_unpacked = self.home.headers.unpacked - before[1]
        self.counters.source_fetches = self.home.sources.fetches
        order = {p.job.job_id: i for i, p in enumerate(planned)}
        results.sort(key=lambda r: order[r.job.job_id])
        return results
