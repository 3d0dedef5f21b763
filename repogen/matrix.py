"""The matrix: drivers x kernels x kinds, filtered by selectors and split into shards."""

from __future__ import annotations

import fnmatch
import re

from repogen.errors import UsageError
from repogen.model import Config, Job, Kernel

SELECTOR_FIELDS = ("name", "driverversion", "target", "kernelrelease", "kernelversion", "architecture",
                   "arch", "kind")


class Selector:
    """``target=debian,kernelrelease=6.1.*``: every clause must match (shell-style patterns)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.clauses: list[tuple[str, str]] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            field, sep, pattern = part.partition("=")
            if not sep or field not in SELECTOR_FIELDS:
                raise UsageError(f"bad selector {part!r} in {text!r}: expected FIELD=PATTERN with FIELD one of "
                                   f"{', '.join(SELECTOR_FIELDS)}")
            self.clauses.append((field, pattern))
        if not self.clauses:
            raise UsageError(f"empty selector {text!r}")

    def matches(self, job: Job) -> bool:
        fields = job.fields
        return all(fnmatch.fnmatchcase(fields[f], p) for f, p in self.clauses)


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise UsageError(f"bad --shard {text!r}: expected I/N with 1 <= I <= N, e.g. 2/8")
    return int(m.group(1)), int(m.group(2))


def shard_kernels(kernels: list[Kernel], shard: tuple[int, int]) -> set[tuple[str, str, str, str]]:
    """The kernels (by identifiers) of shard ``I/N``: round-robin over the kernels in sorted order.

    Sorted order makes every machine of a CI matrix agree from kernels.yaml alone (no shared state,
    no build times that differ per runner); round-robin makes shard sizes differ by at most one
    kernel, and a kernel's jobs stay in one shard so its headers are fetched and unpacked once.
    """
    index, count = shard
    ordered = sorted({k.ident for k in kernels})
    return {ident for i, ident in enumerate(ordered) if i % count == index - 1}


def expand(config: Config, only: tuple[str, ...] = (), shard: tuple[int, int] | None = None,
           notes: list[str] | None = None) -> list[Job]:
    """Every job of the matrix in a stable order, filtered by ``--only`` and ``--shard``.

    Several ``--only`` selectors add up (a job matching any is kept); the clauses of one selector
    must all match. A selector that matches no job at all is a mistake: a note when others matched
    (appended to ``notes``), a :class:`UsageError` when none did. Shards are taken after ``--only``
    (see :func:`shard_kernels`), so an empty shard is normal when there are more shards than kernels.
    """
    selectors = [Selector(s) for s in only]
    jobs: list[Job] = []
    matched: set[int] = set()
    for kernel in config.kernels:
        for driver in config.drivers:
            for kind in driver.kinds:
                job = Job(driver, kernel, kind)
                if not selectors:
                    jobs.append(job)
                    continue
                hits = [i for i, s in enumerate(selectors) if s.matches(job)]
                if hits:
                    matched.update(hits)
                    jobs.append(job)
    if selectors:
        missed = [s.text for i, s in enumerate(selectors) if i not in matched]
        if not jobs:
            raise UsageError(f"--only {' '.join(repr(m) for m in missed)} matches no job of the matrix "
                             f"({len(config.kernels)} kernels, {len(config.drivers)} driver versions)",
                             hint="`repogen plan --all` lists every job with its fields")
        if notes is not None:
            notes.extend(f"--only {m!r} matches no job" for m in missed)
    if shard:
        wanted = shard_kernels([j.kernel for j in jobs], shard)
        jobs = [j for j in jobs if j.kernel.ident in wanted]
    return jobs
