"""Small units without Docker or network: the matrix (selectors, shards), the store, and plan's states."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import HELLO_KBUILD

from repogen import images
from repogen.errors import UsageError
from repogen.home import Home
from repogen.matrix import Selector, expand, parse_shard, shard_kernels
from repogen.model import Config, Driver, Header, Kernel, Kind, Source
from repogen.plan import NEEDS_SOURCES_ERROR, job_key, plan
from repogen.sources import tree_digest
from repogen.store import BuildRecord, Store

SHA = "a" * 64


def _kernel(release: str, target: str = "debian", headers: bool = True) -> Kernel:
    return Kernel(target, release, "1", "x86_64", (Header(f"http://127.0.0.1/{release}.deb", SHA),) if headers else ())


def _config(kernels: int = 5, drivers: int = 2) -> Config:
    return Config(files=(), includes=(),
                  drivers=tuple(Driver(f"drv{i}", "1.0", Source(path=str(HELLO_KBUILD)), "kbuild",
                                       (Kind.kmod, Kind.ebpf)) for i in range(drivers)),
                  kernels=tuple(_kernel(f"6.1.{n}-1-amd64") for n in range(kernels)))


# -- matrix --------------------------------------------------------------------------------------------
def test_expand_is_every_driver_kernel_kind_kernel_by_kernel() -> None:
    jobs = expand(_config(3, 2))
    assert len(jobs) == 3 * 2 * 2 and len({j.job_id for j in jobs}) == 12
    assert [j.kernel.kernelrelease for j in jobs[:4]] == ["6.1.0-1-amd64"] * 4


def test_selectors_and_within_one_or_across_several() -> None:
    config = _config()
    assert {j.job_id for j in expand(config, ("name=drv0,kind=kmod",))} == \
        {j.job_id for j in expand(config) if j.driver.name == "drv0" and j.kind is Kind.kmod}
    either = expand(config, ("kernelrelease=6.1.0-*,kind=ebpf", "kernelrelease=6.1.4-*"))
    assert len(either) == 1 * 2 * 1 + 1 * 2 * 2
    notes: list[str] = []
    assert expand(config, ("name=drv1", "name=nope"), notes=notes) and notes == ["--only 'name=nope' matches no job"]
    with pytest.raises(UsageError, match="matches no job"):
        expand(config, ("target=ubuntu-generic",))
    for bad in ("name", "colour=red", ""):
        with pytest.raises(UsageError):
            Selector(bad)


def test_shards_split_by_kernel_cover_everything_once_and_are_balanced() -> None:
    config = _config(kernels=7)
    everything = expand(config)
    shards = [expand(config, shard=(i, 3)) for i in range(1, 4)]
    ids = [j.job_id for shard in shards for j in shard]
    assert sorted(ids) == sorted(j.job_id for j in everything)  # each job exactly once
    kernels_per_shard = [len({j.kernel.ident for j in shard}) for shard in shards]
    assert max(kernels_per_shard) - min(kernels_per_shard) <= 1
    for shard in shards:  # a kernel's jobs stay together
        for ident in {j.kernel.ident for j in shard}:
            assert sum(j.kernel.ident == ident for j in shard) == 4
    assert shard_kernels(list(config.kernels), (1, 1)) == {k.ident for k in config.kernels}
    assert parse_shard("2/8") == (2, 8)
    for bad in ("0/2", "3/2", "1/0", "x/2", "1"):
        with pytest.raises(UsageError):
            parse_shard(bad)


# -- store ---------------------------------------------------------------------------------------------
def _record(key: str, job_id: str, status: str, sha: str | None = None, error: str | None = None) -> BuildRecord:
    return BuildRecord(key, job_id, status, sha, 1 if sha else None, "img", "gcc12", None, None, None, "{}",
                       1.0, 2.0, 1.0, None, error)


def test_store_objects_are_content_addressed_and_read_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    source = tmp_path / "a.ko"
    source.write_bytes(b"module")
    digest, size = store.put_object(source)
    again = store.put_object(source)
    path = store.object_path(digest)
    assert again == (digest, size) == (digest, 6) and path.read_bytes() == b"module"
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert [p.name for p in store.objects.rglob("*") if p.is_file()] == [digest]


def test_store_keeps_the_good_build_through_a_failure_and_forgets_it_on_rebuild(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    store.record_build(_record("k1", "job", "ok", "f" * 64))
    assert store.good_keys() == {"job": "k1"} and store.is_ok("k1") and store.failed_jobs() == {}
    store.record_build(_record("k2", "job", "failed", error="boom"))
    assert store.good_keys() == {"job": "k1"}, "a failure must not unpublish the last good artifact"
    assert store.failed_jobs() == {"job": "k2"} and store.builds(["k2"])["k2"].error == "boom"
    assert store.current_artifacts() == {"f" * 64}
    store.forget_build("k1")
    assert store.good_keys() == {"job": None} and not store.is_ok("k1")
    store.set_good("job", "k1")
    assert store.good_keys() == {"job": "k1"} and store.failed_jobs() == {}


def test_store_url_index_and_read_only_home(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    store.put("http://x/a.deb", SHA, 3)
    assert store.get("http://x/a.deb") == SHA and store.url_digests() == {"http://x/a.deb": SHA}
    store.drop("http://x/a.deb")
    assert store.get("http://x/a.deb") is None
    absent = tmp_path / "absent"
    assert Store(absent, create=False).good_keys() == {} and not absent.exists()


# -- plan ----------------------------------------------------------------------------------------------
def test_plan_states_follow_the_database(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    config = Config(files=(), includes=(), drivers=_config(1, 1).drivers,
                    kernels=(_kernel("6.1.0-1-amd64"), _kernel("6.1.1-1-amd64"),
                             _kernel("6.1.2", target="vanilla", headers=False)))
    jobs = [j for j in expand(config) if j.kind is Kind.kmod]
    tag = images.choose(config.kernels[0]).name
    first = plan(home, jobs, {tag: "img1"})
    assert [p.state for p in first] == ["missing", "missing", "needs-sources"]
    assert first[2].error == NEEDS_SOURCES_ERROR and first[0].key and first[0].reason
    built, failed = first[0], first[1]
    home.store.record_build(_record(built.key or "", built.job.job_id, "ok", "f" * 64))
    home.store.record_build(_record(failed.key or "", failed.job.job_id, "failed", error="compile error"))
    second = plan(home, jobs, {tag: "img1"})
    assert [p.state for p in second[:2]] == ["built", "failed"] and second[1].error == "compile error"
    assert second[0].reason is None
    # A new builder image changes every key: the built job is "changed", with the reason why.
    third = plan(home, jobs, {tag: "img2"})
    assert third[0].state == "changed" and third[0].key != built.key and third[0].reason
    # No image id known (never built, no Docker asked): the key cannot be computed.
    assert [p.state for p in plan(home, jobs, {})[:2]] == ["unknown", "failed"]


def test_toolchain_id_is_the_template_and_the_package_versions() -> None:
    from repogen import images

    chain = images.toolchains()["gcc12"]
    packages = "gcc-12 12.2.0-14+deb12u1\nlibc6:amd64 2.36-9+deb12u10\nmake 4.3-4.1\n"
    same = images.toolchain_id(chain, packages)
    # The order dpkg lists them in and blank lines do not matter; a version, a package or the template does.
    assert same == images.toolchain_id(chain, "\n".join(reversed(packages.splitlines())) + "\n\n")
    assert same != images.toolchain_id(chain, packages.replace("12.2.0-14+deb12u1", "12.2.0-14+deb12u2"))
    assert same != images.toolchain_id(chain, packages + "ccache 4.8+really4.7.5-1\n")
    assert same != images.toolchain_id(images.toolchains()["gcc14"], packages)
    # No machine's image id goes in: the base is named by its tag.
    assert "repogen/base:bookworm" in images.dockerfile(chain, chain.base_tag)


def test_plan_keys_are_job_keys_and_ids_are_job_ids(tmp_path: Path) -> None:
    """plan works the key and the job id out per kernel and per driver: the same as job_key and Job.job_id."""
    home = Home(tmp_path / "home")
    config = _config(kernels=3, drivers=2)
    jobs = expand(config)
    planned = plan(home, jobs, {images.choose(config.kernels[0]).name: "img"})
    source = tree_digest(HELLO_KBUILD)
    assert [p.key for p in planned] == [job_key(j, source, [SHA], "img") for j in jobs]
    for p in planned:
        home.store.record_build(_record(p.key or "", p.job.job_id, "ok", "f" * 64))
    assert {p.state for p in plan(home, jobs, {images.choose(config.kernels[0]).name: "img"})} == {"built"}


def test_job_key_covers_every_input() -> None:
    job = expand(_config(1, 1))[0]
    base = job_key(job, "s" * 64, [SHA], "img")
    assert base == job_key(job, "s" * 64, [SHA], "img")
    others = {job_key(job, "t" * 64, [SHA], "img"), job_key(job, "s" * 64, ["b" * 64], "img"),
              job_key(job, "s" * 64, [SHA], "img2"), job_key(expand(_config(1, 1))[1], "s" * 64, [SHA], "img")}
    assert base not in others and len(others) == 4


def test_paused_gc_restores_the_collector_as_it_was() -> None:
    import gc

    from repogen.bulk import paused_gc

    @paused_gc()
    def inside() -> bool:
        return gc.isenabled()

    assert gc.isenabled()
    with pytest.raises(ValueError), paused_gc():
        assert not gc.isenabled()
        raise ValueError
    assert gc.isenabled() and not inside() and gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled(), "a collector paused by the caller stays paused"
    finally:
        gc.enable()


def test_home_makes_each_cache_once_on_first_use(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    home = Home(tmp_path / "home")
    with ThreadPoolExecutor(max_workers=8) as pool:
        seen = list(pool.map(lambda _: (home.sources, home.downloads, home.headers), range(32)))
    assert all(got == seen[0] for got in seen) and len({id(c) for c in seen[0]}) == 3
    assert all(a is b for got in seen for a, b in zip(got, seen[0], strict=True))
    assert home.sources.downloads is home.downloads and home.downloads.index is home.store


def test_no_home_is_created_by_a_read_only_plan(tmp_path: Path) -> None:
    home = Home(tmp_path / "nothing", create=False)
    assert plan(home, expand(_config(1, 1)), {})
    assert not os.path.exists(tmp_path / "nothing")
