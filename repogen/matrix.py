"""The matrix: drivers x kernels x kinds, filtered by selectors and split into shards."""

from __future__ import annotations

import fnmatch
import re

from repogen.errors import RepogenError
from repogen.model import Config, Job

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
                raise RepogenError(f"bad selector {part!r} in {text!r}: expected FIELD=PATTERN with FIELD one of "
                                   f"{', '.join(SELECTOR_FIELDS)}")
            self.clauses.append((field, pattern))
        if not self.clauses:
            raise RepogenError(f"empty selector {text!r}")

    def matches(self, job: Job) -> bool:
        fields = job.fields
        return all(fnmatch.fnmatchcase(fields[f], p) for f, p in self.clauses)


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise RepogenError(f"bad --shard {text!r}: expected I/N with 1 <= I <= N, e.g. 2/8")
    return int(m.group(1)), int(m.group(2))


def expand(config: Config, only: tuple[str, ...] = (), shard: tuple[int, int] | None = None) -> list[Job]:
    """Every job of the matrix in a stable order, filtered by ``--only`` and ``--shard``.

    Several ``--only`` selectors add up (a job matching any is kept); the clauses of one selector
    must all match. Shards split by kernel (a stable hash of its identifiers), so one kernel's headers are fetched
    and unpacked by one shard only, and adding a kernel never moves the others between shards.
    """
    selectors = [Selector(s) for s in only]
    jobs: list[Job] = []
    for kernel in config.kernels:
        if shard and kernel.shard_hash % shard[1] != shard[0] - 1:
            continue
        for driver in config.drivers:
            for kind in driver.kinds:
                job = Job(driver, kernel, kind)
                if not selectors or any(s.matches(job) for s in selectors):
                    jobs.append(job)
    return jobs
