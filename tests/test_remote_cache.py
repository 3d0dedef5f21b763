"""The shared remote build cache, against moto's S3 server on 127.0.0.1 and real builds.

Two homes share one cache (the second builds nothing and publishes the same bytes), corrupt
entries are caught by digest and rebuilt, and ``plan`` answers from the index in a bounded number
of requests, counted at the server.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import HELLO_KBUILD, Repogen, driver_yaml, write_config
from s3server import CountingMotoServer, moto_server

from repogen import remote_cache

NAME = "hello_repogen"
VERSION = "0.2.0+driver"


@pytest.fixture(scope="module")
def s3() -> Iterator[CountingMotoServer]:
    with moto_server() as server:
        yield server


_buckets = iter(range(1000))


@pytest.fixture
def bucket(s3: CountingMotoServer) -> str:
    name = f"cache-{next(_buckets)}"
    s3.client().create_bucket(Bucket=name)
    return name


def _run(repogen: Repogen, s3: CountingMotoServer, *args: str) -> Any:
    result = repogen(*args, env=s3.env)
    assert "Traceback" not in result.err, result.err
    return result


def _objects(s3: CountingMotoServer, bucket: str, prefix: str = "") -> dict[str, bytes]:
    client = s3.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _site_drivers(site: Path) -> dict[str, str]:
    root = site.resolve() / "driver"
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _first_home_builds(tmp_path: Path, mirror: Any, s3: CountingMotoServer, cache: str) -> tuple[Path, Repogen, Any]:
    """A matrix (hello-kbuild, kmod + ebpf, one real kernel) naming ``cache``, built by a first home: the
    config, that home, and its build's result (both jobs built)."""
    config = write_config(tmp_path, [driver_yaml(NAME, VERSION, HELLO_KBUILD, "kbuild")], mirror.kernels[:1],
                          extra=f"cache: {cache}\n")
    first = Repogen(tmp_path / "first", config)
    built = _run(first, s3, "build", "-j", "2", "--json")
    assert built.code == 0, built.err
    assert built.json["built"] == 2
    return config, first, built


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_second_home_builds_nothing_and_publishes_the_same_artifacts(
        tmp_path: Path, mirror: Any, builder_image: str, s3: CountingMotoServer, bucket: str) -> None:
    config, first, built = _first_home_builds(tmp_path, mirror, s3, f"s3://{bucket}/team/cache")
    assert built.json["cached"] == 0

    # Bazel's layout: every artifact in the content-addressed store under its own sha256, and an
    # action-cache entry per build key naming it.
    objects = _objects(s3, bucket, "team/cache/")
    for result in built.json["results"]:
        blob = objects[f"team/cache/cas/sha256/{result['sha256'][:2]}/{result['sha256']}"]
        assert hashlib.sha256(blob).hexdigest() == result["sha256"]
        entry = json.loads(objects[f"team/cache/ac/{NAME}/{VERSION}/{result['build_key']}.json"])
        assert entry["artifact"] == {"sha256": result["sha256"], "size": len(blob)}

    # A fresh home on "another machine": plan answers from the cache in a few requests...
    second = Repogen(tmp_path / "second", config)
    s3.reset()
    plan = _run(second, s3, "plan", "--json")
    assert plan.code == 0, plan.err
    assert plan.json["counts"] == {"cached": 2}
    assert len(s3.requests) <= 4, s3.requests  # list gen/, list log/, a GET per log object (1 or 2)

    # ... and build downloads both artifacts: no compile, no headers download, nothing pushed.
    s3.reset()
    again = _run(second, s3, "build", "--json")
    assert again.code == 0, again.err
    assert again.json["built"] == 0 and again.json["cached"] == 2
    assert again.json["counters"]["containers"] == 0
    assert again.json["counters"]["header_downloads"] == 0
    assert not [r for r in s3.requests if r[0] in ("PUT", "POST", "DELETE")], s3.requests
    assert _run(second, s3, "plan", "--json").json["counts"] == {"built": 2}
    assert "nothing to build" in _run(second, s3, "build").out

    # Both publish the very same driver files; a third home publishes straight from the cache.
    for repogen, site in ((first, tmp_path / "site1"), (second, tmp_path / "site2")):
        published = _run(repogen, s3, "publish", "--site", str(site), "--json")
        assert published.code == 0, published.err
        assert published.json["artifacts"] == 2
    third = Repogen(tmp_path / "third", config)
    published = _run(third, s3, "publish", "--site", str(tmp_path / "site3"), "--json")
    assert published.code == 0, published.err
    assert published.json["from_cache"] == 2 and published.json["artifacts"] == 2
    drivers = _site_drivers(tmp_path / "site1")
    assert len(drivers) == 2
    assert drivers == _site_drivers(tmp_path / "site2") == _site_drivers(tmp_path / "site3")
    assert set(drivers.values()) == {r["sha256"] for r in built.json["results"]}


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_a_machine_with_its_own_builder_image_shares_the_cache(
        tmp_path: Path, mirror: Any, builder_image: str, docker_client: Any, s3: CountingMotoServer,
        bucket: str) -> None:
    """Every machine debootstraps and builds its own builder images, and no two get the same image id.
    Build keys hold the toolchain id (the template and every installed package's version) instead, so
    a machine whose gcc12 image has another id but the same packages builds nothing."""
    from repogen import images

    config, _, _ = _first_home_builds(tmp_path, mirror, s3, f"s3://{bucket}/team/cache")

    chain = images.toolchains()["gcc12"]
    tag = images.content_tag(chain, images.base_ids(docker_client)[chain.suite])
    assert images.image_id(docker_client, tag) == builder_image
    # "Another machine's" image: same packages, another id (a commit of the image with one more label).
    box = docker_client.containers.create(builder_image, ["true"])
    try:
        other = str(box.commit(changes=["LABEL org.repogen.test=another-machine"]).id)
    finally:
        box.remove(force=True)
    assert other != builder_image
    try:
        docker_client.images.get(other).tag(tag)  # now `repogen/builder:gcc12-...` is the other image
        second = Repogen(tmp_path / "second", config)
        plan = _run(second, s3, "plan", "--json", "--check-images")
        assert plan.code == 0, plan.err
        assert plan.json["counts"] == {"cached": 2}
        again = _run(second, s3, "build", "--json")
        assert again.code == 0, again.err
        assert again.json["built"] == 0 and again.json["cached"] == 2
        assert again.json["counters"]["containers"] == 0
        listed = _run(second, s3, "images", "list", "--json").json
        gcc12 = next(row for row in listed if row["toolchain"] == "gcc12")
        assert gcc12["id"] == other
        ours = images.toolchain_ids(docker_client, {"gcc12": builder_image})["gcc12"]
        assert gcc12["toolchain_id"] == ours
    finally:
        docker_client.images.get(builder_image).tag(tag)
        docker_client.images.remove(other, force=True)


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_corrupt_cache_entries_are_never_served_and_are_rebuilt(
        tmp_path: Path, mirror: Any, builder_image: str, s3: CountingMotoServer, bucket: str) -> None:
    cache = f"s3://{bucket}/c"
    config = write_config(tmp_path, [driver_yaml(NAME, VERSION, HELLO_KBUILD, "kbuild", "[kmod]")],
                          mirror.kernels[:1])
    built = _run(Repogen(tmp_path / "origin", config), s3, "build", "--cache", cache, "--json")
    assert built.code == 0, built.err
    result = built.json["results"][0]
    digest, key = result["sha256"], result["build_key"]
    cas_key = f"c/cas/sha256/{digest[:2]}/{digest}"
    ac_key = f"c/ac/{NAME}/{VERSION}/{key}.json"
    client = s3.client()
    good_blob = client.get_object(Bucket=bucket, Key=cas_key)["Body"].read()

    # 1. An artifact whose bytes do not match its digest (same size, one byte flipped).
    bad = bytearray(good_blob)
    bad[len(bad) // 2] ^= 0xFF
    client.put_object(Bucket=bucket, Key=cas_key, Body=bytes(bad))
    home = tmp_path / "one"
    one = _run(Repogen(home, config), s3, "build", "--cache", cache, "--json")
    assert one.code == 0, one.err
    assert one.json["built"] == 1 and one.json["cached"] == 0
    assert "does not match its digest" in one.err
    stored = home / "store" / "sha256" / digest[:2] / digest
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest  # the rebuilt artifact, not the bad one
    assert hashlib.sha256(client.get_object(Bucket=bucket, Key=cas_key)["Body"].read()).hexdigest() == digest

    # 2. An action-cache entry that is not JSON, and one that names another key: both rebuilt, overwritten.
    for damage in (b'{"format": 1, "artifact": {"sha2', json.dumps(
            {"format": 1, "build_key": "0" * 64, "artifact": {"sha256": digest, "size": len(good_blob)},
             "record": {}}).encode()):
        client.put_object(Bucket=bucket, Key=ac_key, Body=damage)
        again = _run(Repogen(tmp_path / f"home-{len(damage)}", config), s3, "build", "--cache", cache, "--json")
        assert again.code == 0, again.err
        assert again.json["built"] == 1 and again.json["cached"] == 0
        assert "corrupt build cache entry" in again.err
        entry = json.loads(client.get_object(Bucket=bucket, Key=ac_key)["Body"].read())
        assert entry["build_key"] == key and entry["artifact"]["sha256"] == again.json["results"][0]["sha256"]

    # 3. A corrupt index: plan says so, rebuilds it from a listing of the entries, and still answers.
    for k in [k for k in _objects(s3, bucket, f"c/index/{NAME}/{VERSION}/log/")]:
        client.put_object(Bucket=bucket, Key=k, Body=b"not json")
    plan = _run(Repogen(tmp_path / "planner", config), s3, "plan", "--cache", cache, "--json")
    assert plan.code == 0, plan.err
    assert "corrupt build cache index" in plan.err
    assert plan.json["counts"] == {"cached": 1}
    generations = _objects(s3, bucket, f"c/index/{NAME}/{VERSION}/gen/")
    assert generations, "the rebuilt index was not written"
    newest = json.loads(gzip.decompress(generations[max(generations)]))
    assert key in newest["keys"]
    client.put_object(Bucket=bucket, Key=max(generations), Body=b"\x1f\x8b garbage")
    plan = _run(Repogen(tmp_path / "planner", config), s3, "plan", "--cache", cache, "--json")
    assert plan.json["counts"] == {"cached": 1}, plan.err


def _fake_matrix(tmp_path: Path, kernels: int) -> Path:
    """A matrix of ``kernels`` kernels with pinned (made-up) header digests: plan needs no network."""
    entries = [{"target": "debian", "kernelrelease": f"6.1.{i}-1-amd64", "kernelversion": "1",
                "architecture": "x86_64",
                "headers": [{"url": f"http://127.0.0.1:9/linux-headers-{i}.deb",
                             "sha256": hashlib.sha256(str(i).encode()).hexdigest()}]} for i in range(kernels)]
    return write_config(tmp_path, [driver_yaml(NAME, VERSION, HELLO_KBUILD, "kbuild")], entries)


def _seed(home: Path, config: Path, s3: CountingMotoServer, cache: str, logs: int, *, close: bool = False) -> int:
    """Put every job of the matrix in the cache's index, spread over ``logs`` log objects (then, with
    ``close``, end as a build ends)."""
    from repogen import config as config_mod
    from repogen import images
    from repogen import s3 as s3_mod
    from repogen.home import Home
    from repogen.matrix import expand
    from repogen.plan import plan

    cfg = config_mod.parse(config)
    state = Home(home)
    ids = {images.choose(k).name: "sha256:" + "ab" * 32 for k in cfg.kernels}
    state.store.record_images(ids, ids)  # image ids and toolchain ids alike
    planned = plan(state, expand(cfg), state.store.toolchain_ids())
    cache_obj = remote_cache.RemoteCache(s3_mod.parse_url(cache), s3.client())
    for i, p in enumerate(planned):
        assert p.key
        cache_obj.note(p.job, p.key)
        if (i + 1) % max(1, len(planned) // logs) == 0:
            cache_obj.flush()
    cache_obj.flush()
    if close:
        cache_obj.close()
    return len(planned)


def test_a_long_run_compacts_the_log_it_wrote_in_batches(
        tmp_path: Path, s3: CountingMotoServer, bucket: str) -> None:
    """A build that flushed its log many times during the run (every LOG_BATCH results) still compacts
    it when it closes, so the next reader lists one generation, not dozens of log objects."""
    cache = f"s3://{bucket}/p"
    jobs = _seed(tmp_path / "home", _fake_matrix(tmp_path, 200), s3, cache,
                 logs=remote_cache.COMPACT_AFTER + 8, close=True)
    index = _objects(s3, bucket, "p/index/")
    assert [k for k in index if "/gen/" in k] and not [k for k in index if "/log/" in k], sorted(index)
    from repogen import s3 as s3_mod

    reader = remote_cache.RemoteCache(s3_mod.parse_url(cache), s3.client())
    assert len(reader.built_keys({(NAME, VERSION)})) == jobs


def test_plan_answers_from_the_cache_in_a_few_requests(
        tmp_path: Path, s3: CountingMotoServer, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote_cache, "LOG_BATCH", 10**9)
    cache = f"s3://{bucket}/p"
    config = _fake_matrix(tmp_path, 500)
    home = tmp_path / "home"
    jobs = _seed(home, config, s3, cache, logs=remote_cache.COMPACT_AFTER + 8)
    repogen = Repogen(home, config)

    # More log objects than a reader accepts: this plan reads them all, then compacts them.
    s3.reset()
    first = _run(repogen, s3, "plan", "--cache", cache, "--json")
    assert first.code == 0, first.err
    assert first.json["counts"] == {"cached": jobs}
    assert any(method == "PUT" and "/gen/" in path for method, path, _ in s3.requests), s3.requests

    # Now one generation, and this home keeps a copy of it (it wrote it): one listing, whatever the
    # job count. A home without a copy lists and downloads the generation once, then only lists.
    s3.reset()
    second = _run(repogen, s3, "plan", "--cache", cache, "--json")
    assert second.json["counts"] == {"cached": jobs}
    assert s3.requests == [("GET", f"/{bucket}", s3.requests[0][2])], s3.requests
    assert "list-type=2" in s3.requests[0][2]
    other = Repogen(tmp_path / "other", config)
    from repogen.home import Home

    # Another home with the same builder images (so the same build keys) and no copy of the index.
    seeded = Home(home).store
    Home(tmp_path / "other").store.record_images(seeded.image_ids(), seeded.toolchain_ids())
    for expected in (2, 1):
        s3.reset()
        assert _run(other, s3, "plan", "--cache", cache, "--json").json["counts"] == {"cached": jobs}
        assert len(s3.requests) == expected, s3.requests
        assert all(method == "GET" for method, _, _ in s3.requests)

    # A damaged local copy is detected by its digest, dropped and downloaded again.
    copies = sorted((tmp_path / "other" / "cache" / "remote-index").iterdir())
    assert len(copies) == 1
    damaged = bytearray(copies[0].read_bytes())
    damaged[-10] ^= 0x01
    copies[0].write_bytes(bytes(damaged))
    s3.reset()
    assert _run(other, s3, "plan", "--cache", cache, "--json").json["counts"] == {"cached": jobs}
    assert len(s3.requests) == 2, s3.requests
    assert copies[0].read_bytes() != bytes(damaged)

    # A new push lands in a small log object that the next plan reads: one request more.
    from repogen import s3 as s3_mod
    from repogen.store import BuildRecord

    cfg_jobs = json.loads(_run(repogen, s3, "plan", "--json", "--all").out)["jobs"]
    assert all(j["state"] == "missing" for j in cfg_jobs)  # without the cache, this home knows nothing
    extra = _fake_matrix(tmp_path / "more", 501)
    added = Repogen(home, extra)
    cache_obj = remote_cache.RemoteCache(s3_mod.parse_url(cache), s3.client())
    from repogen import config as config_mod
    from repogen.home import Home
    from repogen.matrix import expand
    from repogen.plan import plan

    state = Home(home)
    new = [p for p in plan(state, expand(config_mod.parse(extra)), state.store.toolchain_ids())
           if p.job.kernel.kernelrelease == "6.1.500-1-amd64"]
    artifact = tmp_path / "artifact.ko"
    artifact.write_bytes(b"\x7fELF pretend")
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    for p in new:
        assert p.key
        assert cache_obj.push(p.job, BuildRecord(
            build_key=p.key, job_id=p.job.job_id, status="ok", artifact_sha256=digest, size=12, image_id=None,
            toolchain=None, vermagic=None, kernel_release=None, kernel_config_sha256=None, inputs="",
            started_at=None, finished_at=None, seconds=None, log_path=None, error=None), artifact)
    cache_obj.close()
    s3.reset()
    third = _run(added, s3, "plan", "--cache", cache, "--json")
    assert third.json["counts"] == {"cached": jobs + len(new)}
    assert len(s3.requests) == 2, s3.requests  # the listing, the new log object

    # The generation replaced in the bucket by garbage: its new ETag means the home's copy of the old
    # bytes is not used, and the garbage is reported, never served. The index is rebuilt from the
    # action-cache entries, and only the pushed jobs have one (the seed wrote index keys only).
    client = s3.client()
    generation = max(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="p/index/")["Contents"]
                     if "/gen/" in o["Key"])
    client.put_object(Bucket=bucket, Key=generation, Body=b"\x1f\x8b garbage")
    broken = _run(added, s3, "plan", "--cache", cache, "--json")
    assert broken.code == 0, broken.err
    assert "corrupt build cache index" in broken.err
    assert broken.json["counts"] == {"cached": len(new), "missing": jobs}, broken.json["counts"]


def test_plan_reads_the_index_without_boto3s_client(tmp_path: Path, s3: CountingMotoServer, bucket: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The signed reader (botocore's signer, no service model) answers plan; errors fall back to boto3."""
    from repogen import s3 as s3_mod

    cache = f"s3://{bucket}/lean"
    config = _fake_matrix(tmp_path, 20)
    jobs = _seed(tmp_path / "seed", config, s3, cache, logs=2)
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    reader = remote_cache.RemoteCache(s3_mod.parse_url(cache), local=tmp_path / "copies")
    keys = reader.built_keys({(NAME, VERSION)})
    assert len(keys) == jobs
    assert reader._client is None and reader._reader is not None  # no boto3 client was made
    assert len(list((tmp_path / "copies").iterdir())) == 2  # the two log objects, parsed

    # Keys as S3 spells them in a listing (encoding-type=url) and as a GET names them: the same as boto3's.
    client = s3.client()
    odd = ["lean/odd/a b+c.json", "lean/odd/%41~é.json", "lean/odd/x&y=z?.json"]
    for key in odd:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    signed = s3_mod.SignedReader.create()
    assert signed is not None
    listed = signed.list(bucket, "lean/odd/")
    assert sorted(o.key for o in listed) == sorted(odd)
    assert {o.key: o.etag for o in listed} == {o["Key"]: o["ETag"] for o in client.list_objects_v2(
        Bucket=bucket, Prefix="lean/odd/")["Contents"]}
    for key in odd:
        got = signed.get(bucket, key)
        assert got is not None and got[0] == key.encode()
    assert signed.get(bucket, "lean/odd/none") is None

    missing = remote_cache.RemoteCache(s3_mod.parse_url("s3://no-such-bucket-here/x"))
    with pytest.raises(s3_mod.S3Error, match="the bucket does not exist"):
        missing.built_keys({(NAME, VERSION)})
    assert missing._client is not None  # the 404 NoSuchBucket went to boto3, which explained it


def test_a_reader_racing_a_compaction_lists_again(tmp_path: Path, s3: CountingMotoServer, bucket: str) -> None:
    """A compaction deletes the log objects it absorbed at once (listings stay short); a reader that
    listed them just before finds one gone, lists again and reads the new generation instead."""
    from repogen import s3 as s3_mod

    cache = f"s3://{bucket}/race"
    config = _fake_matrix(tmp_path, 30)
    jobs = _seed(tmp_path / "seed", config, s3, cache, logs=3)
    reader = remote_cache.RemoteCache(s3_mod.parse_url(cache), s3.client())
    base = reader.location.key("index", NAME, VERSION) + "/"
    before = reader._list_objects(base)
    assert len([o for o in before if "/log/" in o.key]) >= 3
    compactor = remote_cache.RemoteCache(s3_mod.parse_url(cache), s3.client())
    compactor._compact(compactor._read(NAME, VERSION))
    after = reader._list_objects(base)
    assert [o.key for o in after if "/log/" in o.key] == []  # absorbed and deleted
    s3.reset()
    part = reader._read(NAME, VERSION, listing=before)
    assert len(part.keys) == jobs and part.generation == 1 and not part.unreadable
    assert sum(1 for _, _, query in s3.requests if "list-type=2" in query) == 1  # the second listing


def test_signed_reader_takes_only_what_it_can_sign(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from repogen import s3 as s3_mod

    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_USE_FIPS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    reader = s3_mod.SignedReader.create()
    assert reader is not None and (reader.endpoint, reader.region) == ("https://s3.eu-west-3.amazonaws.com",
                                                                       "eu-west-3")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000/")
    reader = s3_mod.SignedReader.create()
    assert reader is not None and reader.endpoint == "http://127.0.0.1:9000"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    for region in ("cn-north-1", "us-gov-west-1"):  # other partitions, other host names: boto3 knows them
        monkeypatch.setenv("AWS_DEFAULT_REGION", region)
        assert s3_mod.SignedReader.create() is None
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_USE_FIPS_ENDPOINT", "true")
    assert s3_mod.SignedReader.create() is None
    monkeypatch.delenv("AWS_USE_FIPS_ENDPOINT")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert s3_mod.SignedReader.create() is None  # no credentials: boto3 says so in its own words


def test_cache_errors_are_one_clean_line(tmp_path: Path, s3: CountingMotoServer, bucket: str) -> None:
    config = _fake_matrix(tmp_path, 1)
    repogen = Repogen(tmp_path / "home", config)
    missing = repogen("plan", "--cache", "s3://no-such-bucket-here/x", env=s3.env)
    assert missing.code == 1 and "the bucket does not exist" in missing.err and "Traceback" not in missing.err
    unreachable = repogen("plan", "--cache", f"s3://{bucket}/x",
                          env={**s3.env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert unreachable.code == 1 and "cannot reach the S3 endpoint" in unreachable.err
    assert "Traceback" not in unreachable.err
    bad_url = repogen("plan", "--cache", "s3://A_Bucket/x", env=s3.env)
    assert bad_url.code == 2 and "not a valid S3 bucket name" in bad_url.err

    text = config.read_text() + "cache: https://example.invalid/cache\n"
    config.write_text(text)
    line = text.count("\n")
    invalid = repogen("validate")
    assert invalid.code == 2
    assert f"{config}:{line}: cache: expected s3://BUCKET/PREFIX" in invalid.err


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_two_machines_building_the_same_job_at_once_compile_it_once(
        tmp_path: Path, mirror: Any, builder_image: str, s3: CountingMotoServer, bucket: str) -> None:
    cache = f"s3://{bucket}/race"
    config = write_config(tmp_path, [driver_yaml(NAME, "0.4.0", HELLO_KBUILD, "kbuild", "[kmod]")],
                          mirror.kernels[:1])
    runs = [subprocess.Popen([sys.executable, "-m", "repogen", "--home", str(tmp_path / f"machine{i}"), "-c",
                              str(config), "build", "--cache", cache, "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **s3.env})
            for i in range(2)]
    reports = []
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err.decode()
        reports.append(json.loads(out))
    # One compiled it; the other waited on its lease and took the result from the cache.
    assert sorted(r["results"][0]["status"] for r in reports) == ["built", "cached"]
    assert sum(r["counters"]["containers"] for r in reports) == 1
    assert reports[0]["results"][0]["sha256"] == reports[1]["results"][0]["sha256"]
    assert not _objects(s3, bucket, "race/lease/"), "the lease was not released"
