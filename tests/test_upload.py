"""`repogen upload` and `repogen gc s3://...` against moto's S3 server on 127.0.0.1.

The trees are made by the real `repogen publish` (stand-in driver bytes, real .deb/.rpm packages in
real APT/RPM repositories); every upload runs the real command as a subprocess; the server records
every request it answers, in order, so the tests assert what was really sent: how many requests a
no-op takes, which keys a change PUTs, and that no index ever reached the bucket before the files
it names. Plain HTTP GETs fetch the exact URLs falcoctl and falco-driver-loader build.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gpgkeys import export_secret_key, make_test_key, stop_agent
from pkgfactory import make_deb, make_rpm
from s3server import CountingMotoServer, moto_server
from sitefactory import DRIVER_VERSION, publish, seed_store, write_matrix

from repogen.bucket import LOCK, MANIFEST
from repogen.upload import IMMUTABLE, LONG, SHORT, Stage, classify

pytestmark = pytest.mark.timeout(300)

PREFIX = "falco"


# -- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moto() -> Iterator[CountingMotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """publish's arguments: a real .deb and .rpm, and a signing key (InRelease, Release.gpg, .asc files)."""
    out = tmp_path_factory.mktemp("packages")
    maker = out / "gnupg"
    fingerprint = make_test_key(maker)
    try:
        key_file = export_secret_key(maker, fingerprint, out / "signing-key.asc")
    finally:
        stop_agent(maker)
    yield ["--deb", str(make_deb(out, "falco", "0.40.0")), "--rpm", str(make_rpm(out, "falco", "0.40.0")),
           "--sign-key-file", str(key_file)]


@dataclass
class Tree:
    root: Path
    packages: list[str]

    @property
    def site(self) -> Path:
        return self.root / "site"

    def publish(self, kernels: int, start: int = 0) -> None:
        config = write_matrix(self.root, kernels, self.root / "driver-src", start=start)
        seed_store(self.root / "home", config)
        publish(self.root / "home", config, self.site, *self.packages)

    def files(self) -> dict[str, bytes]:
        """Every file of the live tree, following its links into the shared package pool (as any reader does)."""
        root = self.site.resolve()
        found = [Path(directory, name) for directory, _dirs, names in os.walk(root, followlinks=True) for name in names]
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(found)}


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, packages: list[str]) -> Tree:
    tree = Tree(tmp_path_factory.mktemp("published"), packages)
    tree.publish(3)
    return tree


@pytest.fixture
def tree(tmp_path: Path, published: Tree) -> Tree:
    """A copy of a published tree (3 kernels, signed APT and RPM repositories) a test may republish."""
    root = tmp_path / "tree"
    shutil.copytree(published.root, root, symlinks=True)
    return Tree(root, published.packages)


@pytest.fixture
def bucket(moto: CountingMotoServer) -> str:
    name = f"repo-{uuid.uuid4().hex[:12]}"
    moto.make_public_bucket(name)
    moto.reset()
    return name


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


def repogen(*args: str, env: dict[str, str], timeout: float = 120) -> Run:
    proc = subprocess.run([sys.executable, "-m", "repogen", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})
    return Run(proc.returncode, proc.stdout, proc.stderr)


def upload(moto: CountingMotoServer, site: Path, bucket: str, *args: str, env: dict[str, str] | None = None) -> Run:
    return repogen("upload", "--site", str(site), f"s3://{bucket}/{PREFIX}", "--json", *args,
                   env={**moto.env, **(env or {})})


def bucket_objects(moto: CountingMotoServer, bucket: str) -> dict[str, bytes]:
    s3 = moto.client()
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def under_prefix(objects: dict[str, bytes]) -> dict[str, bytes]:
    return {k[len(PREFIX) + 1:]: v for k, v in objects.items()
            if k.startswith(PREFIX + "/") and not k.startswith(f"{PREFIX}/.repogen/")}


def object_puts(moto: CountingMotoServer, bucket: str) -> list[str]:
    """Paths under the prefix PUT at the server, in the order it received them (lock/manifest apart)."""
    head = f"/{bucket}/{PREFIX}/"
    return [path[len(head):] for method, path, _ in moto.requests if method == "PUT" and path.startswith(head)]


def assert_consistent(objects: dict[str, bytes]) -> None:
    """Every index in the bucket names only files that are there (what a client could fetch now)."""
    files = under_prefix(objects)
    for name, data in files.items():
        named: list[str] = []
        base = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
        if name == "index.json":
            for artifact in json.loads(data)["artifacts"]:
                named += [artifact["path"], artifact["v1_path"]]
        elif name == "SHA256SUMS":
            named += [line.split("  ", 1)[1] for line in data.decode().splitlines()]
        elif name.endswith(("/Release", "/InRelease")):
            text = data.decode()
            sha256 = text.split("SHA256:", 1)[1].split("\n", 1)[1]
            for line in sha256.splitlines():
                if not line.startswith(" "):
                    break
                named.append(base + line.split()[2])
        elif re.search(r"/Packages(\.gz)?$", name):
            text = gzip.decompress(data).decode() if name.endswith(".gz") else data.decode()
            root = name.split("/dists/", 1)[0] + "/"
            named += [root + m for m in re.findall(r"^Filename: (.+)$", text, re.M)]
        elif name.endswith("repodata/repomd.xml"):
            root = name[: -len("repodata/repomd.xml")]
            named += [root + m for m in re.findall(r'<location href="([^"]+)"', data.decode())]
        for target in named:
            assert target in files, f"{name} names {target}, which is not in the bucket"


def assert_manifest_true(moto: CountingMotoServer, bucket: str, objects: dict[str, bytes]) -> dict[str, Any]:
    """The manifest's invariant: every key it lists holds exactly the bytes it says."""
    manifest = json.loads(gzip.decompress(objects[f"{PREFIX}/{MANIFEST}"]))
    for key, (sha, size) in manifest["files"].items():
        data = objects.get(f"{PREFIX}/{key}")
        assert data is not None, f"manifest lists {key}, which is not in the bucket"
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (sha, size), key
    return manifest


# -- the tests --------------------------------------------------------------------------------------

def test_first_upload_stores_the_tree_with_literal_plus_keys_and_headers(
        moto: CountingMotoServer, tree: Tree, bucket: str) -> None:
    result = upload(moto, tree.site, bucket)
    assert result.code == 0, result.err
    local = tree.files()
    assert result.json["uploaded"] == len(local) and not result.json["noop"]
    objects = bucket_objects(moto, bucket)
    # Raw keys: the literal '+' (what falcoctl's %2B decodes to on S3); nothing else, no lock left.
    assert under_prefix(objects) == local
    assert set(objects) - {f"{PREFIX}/{k}" for k in local} == {f"{PREFIX}/{MANIFEST}"}
    assert f"{PREFIX}/{LOCK}" not in objects
    plus_keys = [k for k in objects if "+" in k]
    assert plus_keys and all(f"/{DRIVER_VERSION}/" in k for k in plus_keys)
    assert not any(" " in k or "%2B" in k for k in objects)
    # botocore sent the '+' escaped (%2B): real S3 would have turned a raw '+' into a space.
    driver_puts = [u for (m, p, _), u in zip(moto.requests, moto.raw_uris, strict=True)
                   if m == "PUT" and "/driver/" in p]
    assert driver_puts and all("%2B" in u and "+" not in u for u in driver_puts)
    # Every file went with its sha256 for S3 to verify (moto stores it; real S3 refuses a mismatch).
    for key, data in local.items():
        sent = moto.put_checksums[f"/{bucket}/{PREFIX}/{key}"]
        assert base64.b64decode(sent) == hashlib.sha256(data).digest(), key
    assert_manifest_true(moto, bucket, objects)
    assert_consistent(objects)

    # Headers per file class.
    s3 = moto.client()
    index = json.loads(local["index.json"])
    kmod = next(a for a in index["artifacts"] if a["kind"] == "kmod")
    expected = {
        kmod["path"]: (LONG, "application/octet-stream"),
        "index.json": (SHORT, "application/json"),
        "SHA256SUMS": (SHORT, "text/plain; charset=utf-8"),
        "deb/dists/stable/Release": (SHORT, "text/plain; charset=utf-8"),
        "deb/dists/stable/main/binary-amd64/Packages.gz": (SHORT, "application/gzip"),
        "deb/pool/main/f/falco/falco_0.40.0_amd64.deb": (IMMUTABLE, "application/vnd.debian.binary-package"),
        "rpm/packages/x86_64/falco-0.40.0-1.x86_64.rpm": (IMMUTABLE, "application/x-rpm"),
        "rpm/repodata/repomd.xml": (SHORT, "application/xml"),
    }
    by_hash = [k for k in local if "/by-hash/SHA256/" in k]
    repodata = [k for k in local if re.search(r"repodata/[0-9a-f]{64}-primary\.xml\.gz$", k)]
    assert by_hash and repodata
    expected[repodata[0]] = (IMMUTABLE, "application/gzip")
    for key in by_hash:
        kind = "application/gzip" if local[key][:2] == b"\x1f\x8b" else (
            "application/x-xz" if local[key][:6] == b"\xfd7zXZ\x00" else "text/plain; charset=utf-8")
        expected[key] = (IMMUTABLE, kind)
    for key, (cache, kind) in expected.items():
        head = s3.head_object(Bucket=bucket, Key=f"{PREFIX}/{key}")
        assert (head["CacheControl"], head["ContentType"]) == (cache, kind), key
        assert head["Metadata"]["sha256"] == hashlib.sha256(local[key]).hexdigest()

    # The exact URLs clients build, as plain unauthenticated GETs.
    base = f"{moto.url}/{bucket}/{PREFIX}/driver"
    falcoctl = f"{base}/{urllib.parse.quote_plus(DRIVER_VERSION)}/x86_64/{kmod['path'].rsplit('/', 1)[1]}"
    loader = f"{base}/{DRIVER_VERSION}/x86_64/{kmod['path'].rsplit('/', 1)[1]}".replace("+", "%2B")
    assert "%2B" in falcoctl and "+" not in falcoctl and "+" not in loader
    for url in {falcoctl, loader}:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read()
        assert hashlib.sha256(body).hexdigest() == kmod["sha256"]


def test_noop_upload_takes_one_request(moto: CountingMotoServer, tree: Tree, bucket: str) -> None:
    assert upload(moto, tree.site, bucket).code == 0
    moto.reset()
    result = upload(moto, tree.site, bucket)
    assert result.code == 0, result.err
    assert result.json["noop"] and result.json["uploaded"] == 0
    assert len(moto.requests) <= 2
    assert [m for m, _, _ in moto.requests] == ["GET"]
    assert result.json["requests"] == len(moto.requests)


def test_puts_follow_the_order_content_indexes_release_entry_points(
        moto: CountingMotoServer, tree: Tree, bucket: str) -> None:
    assert upload(moto, tree.site, bucket).code == 0
    puts = object_puts(moto, bucket)
    objects = [p for p in puts if not p.startswith(".repogen/")]
    stages = [classify(p).stage for p in objects]
    assert stages == sorted(stages), "an object of an earlier stage was PUT after a later one"
    assert set(stages) == set(Stage)
    names = [p.rsplit("/", 1)[-1] for p in objects]
    assert set(names[-3:]) == {"InRelease", "repomd.xml", "repomd.xml.asc"}  # the entry points last
    assert names.index("SHA256SUMS.asc") > names.index("SHA256SUMS")
    assert names.index("Release.gpg") > max(i for i, n in enumerate(names) if n.startswith("Packages"))
    assert puts.index("index.json") > max(i for i, p in enumerate(puts) if p.startswith(("driver/", "v1/")))
    assert puts.index("rpm/repodata/repomd.xml") > max(i for i, p in enumerate(puts) if "-primary.xml" in p)
    assert puts.index("deb/dists/stable/Release") > max(i for i, p in enumerate(puts) if "/Packages" in p)
    assert puts[-1] == MANIFEST  # the manifest last: it may only name what is there
    assert puts[0] == LOCK


@pytest.fixture
def distribution(moto: CountingMotoServer) -> str:
    cloudfront = __import__("boto3").client("cloudfront", endpoint_url=moto.url, region_name="us-east-1",
                                           aws_access_key_id="testing", aws_secret_access_key="testing")
    created = cloudfront.create_distribution(DistributionConfig={
        "CallerReference": uuid.uuid4().hex, "Comment": "", "Enabled": True,
        "Origins": {"Quantity": 1, "Items": [{"Id": "s3", "DomainName": "repo.s3.amazonaws.com",
                                              "S3OriginConfig": {"OriginAccessIdentity": ""}}]},
        "DefaultCacheBehavior": {"TargetOriginId": "s3", "ViewerProtocolPolicy": "allow-all", "MinTTL": 0,
                                 "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}}}})
    return str(created["Distribution"]["Id"])


def test_one_kernel_added_uploads_its_files_and_the_indexes_and_invalidates_only_those(
        moto: CountingMotoServer, tree: Tree, bucket: str, distribution: str) -> None:
    assert upload(moto, tree.site, bucket).code == 0
    before = tree.files()
    tree.publish(4)
    after = tree.files()
    new_drivers = {k for k in after if k.startswith(("driver/", "v1/")) and k not in before}
    assert len(new_drivers) == 4  # kmod + ebpf, in both layouts
    moto.reset()
    result = upload(moto, tree.site, bucket, "--cdn-invalidate", distribution)
    assert result.code == 0, result.err
    uploaded = set(result.json["uploaded_keys"])
    changed = {k for k in after if before.get(k) != after[k]}
    assert uploaded == changed  # exactly what differs: nothing unchanged is sent again
    assert new_drivers <= uploaded and {"index.json", "SHA256SUMS"} <= uploaded
    assert all(k in new_drivers or (classify(k).mutable and not k.startswith(("driver/", "v1/"))) for k in uploaded)
    assert not any("/pool/" in k or k.endswith(".rpm") for k in uploaded)
    # The server saw those PUTs and no more: lock, manifest (intent, final), the files.
    assert sorted(p for p in object_puts(moto, bucket) if not p.startswith(".repogen/")) == sorted(uploaded)
    objects = bucket_objects(moto, bucket)
    assert under_prefix(objects) == after
    assert_consistent(objects)
    assert_manifest_true(moto, bucket, objects)

    # Only overwritten (mutable) paths are invalidated; new driver files were never cached.
    invalidation = result.json["invalidation"]
    assert invalidation and invalidation["id"]
    overwritten = {k for k in uploaded if k in before}
    assert set(invalidation["paths"]) == {f"/{PREFIX}/{k}" for k in overwritten}
    cloudfront = __import__("boto3").client("cloudfront", endpoint_url=moto.url, region_name="us-east-1",
                                           aws_access_key_id="testing", aws_secret_access_key="testing")
    batch = cloudfront.get_invalidation(DistributionId=distribution, Id=invalidation["id"])
    assert set(batch["Invalidation"]["InvalidationBatch"]["Paths"]["Items"]) == set(invalidation["paths"])


def test_invalidation_paths_cover_both_spellings_of_plus() -> None:
    from repogen.s3 import S3Location
    from repogen.upload import INVALIDATION_MAX_PATHS, invalidation_paths

    where = S3Location("bucket", "falco")
    paths = invalidation_paths(where, ["index.json", f"driver/{DRIVER_VERSION}/x86_64/falco_x.ko"])
    assert paths == sorted(["/falco/index.json", "/falco/driver/8.0.0+driver/x86_64/falco_x.ko",
                            "/falco/driver/8.0.0%2Bdriver/x86_64/falco_x.ko"])
    many = invalidation_paths(where, [f"f{i}" for i in range(INVALIDATION_MAX_PATHS + 1)])
    assert many == ["/falco/*"]


def test_kill_9_mid_upload_leaves_the_bucket_consistent_and_the_next_run_completes(
        moto: CountingMotoServer, tree: Tree, bucket: str) -> None:
    assert upload(moto, tree.site, bucket).code == 0
    old = bucket_objects(moto, bucket)
    tree.publish(40)  # 37 new kernels: 148 new driver files, new indexes
    moto.reset()
    moto.put_delay = 0.02
    try:
        proc = subprocess.Popen([sys.executable, "-m", "repogen", "upload", "--site", str(tree.site),
                                 f"s3://{bucket}/{PREFIX}"], env={**os.environ, **moto.env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(object_puts(moto, bucket)) < 40 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, "the upload finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        moto.put_delay = 0.0
    midway = bucket_objects(moto, bucket)
    assert f"{PREFIX}/{LOCK}" in midway  # the dead publisher's lock is still there
    assert len(under_prefix(midway)) > len(under_prefix(old))  # it was killed partway, not before
    assert_consistent(midway)
    for name in ("index.json", "SHA256SUMS", "deb/dists/stable/Release", "rpm/repodata/repomd.xml"):
        assert midway[f"{PREFIX}/{name}"] == old[f"{PREFIX}/{name}"]  # no index ahead of its files
    assert_manifest_true(moto, bucket, midway)

    result = upload(moto, tree.site, bucket)  # its process is gone: the lock is taken over at once
    assert result.code == 0, result.err
    assert "took over the lock" in result.err
    final = bucket_objects(moto, bucket)
    assert under_prefix(final) == tree.files()
    assert f"{PREFIX}/{LOCK}" not in final
    assert_consistent(final)
    assert_manifest_true(moto, bucket, final)


def test_an_s3_error_mid_upload_stops_cleanly_and_the_next_run_completes(
        moto: CountingMotoServer, tree: Tree, bucket: str) -> None:
    assert upload(moto, tree.site, bucket).code == 0
    tree.publish(12)
    moto.deny_puts = {"6.1.108-1-amd64"}  # one new kernel's files are refused
    try:
        result = upload(moto, tree.site, bucket)
    finally:
        moto.deny_puts = set()
    assert result.code == 1
    assert "access denied" in result.err and "Traceback" not in result.err
    midway = bucket_objects(moto, bucket)
    assert f"{PREFIX}/{LOCK}" not in midway  # released on the way out
    assert_consistent(midway)
    assert_manifest_true(moto, bucket, midway)
    for name in ("index.json", "SHA256SUMS", "deb/dists/stable/InRelease"):
        assert midway[f"{PREFIX}/{name}"] != tree.files()[name]  # no index went up ahead of its files
    result = repogen("upload", "--site", str(tree.site), f"s3://{bucket}/{PREFIX}", env=moto.env)
    assert result.code == 0, result.err
    # Without a terminal (CI logs), one line per stage says what is going on.
    stages = re.findall(r"^uploading \d+ (\w+) files?$", result.err, re.M)
    assert stages[0] == "content" and stages[-1] == "entry" and stages == sorted(stages, key=lambda n: Stage[n])
    assert "uploaded" in result.out
    assert under_prefix(bucket_objects(moto, bucket)) == tree.files()


def _write_lock(moto: CountingMotoServer, bucket: str, ttl: float) -> None:
    moto.client().put_object(Bucket=bucket, Key=f"{PREFIX}/{LOCK}", Body=json.dumps(
        {"owner": "builder-7:4242:feedbeef", "host": "builder-7", "pid": 4242, "ttl": ttl}).encode())


def test_a_held_lock_makes_the_upload_wait_then_fail_clearly_writing_nothing(
        moto: CountingMotoServer, tree: Tree, bucket: str) -> None:
    _write_lock(moto, bucket, ttl=600)
    moto.reset()
    result = repogen("upload", "--site", str(tree.site), f"s3://{bucket}/{PREFIX}", "--lock-wait", "1",
                     env=moto.env)
    assert result.code == 1
    assert "waiting for the lock held by builder-7:4242:feedbeef" in result.err
    assert "is locked by builder-7:4242:feedbeef" in result.err and "Traceback" not in result.err
    assert set(object_puts(moto, bucket)) == {LOCK}  # only refused conditional PUTs of the lock
    objects = bucket_objects(moto, bucket)
    assert set(objects) == {f"{PREFIX}/{LOCK}"} and b"builder-7" in objects[f"{PREFIX}/{LOCK}"]


def test_an_expired_lock_is_taken_over(moto: CountingMotoServer, tree: Tree, bucket: str) -> None:
    _write_lock(moto, bucket, ttl=1)
    time.sleep(2.1)  # S3's LastModified has a one-second resolution
    result = upload(moto, tree.site, bucket, "--lock-wait", "0")
    assert result.code == 0, result.err
    assert "took over the lock of builder-7:4242:feedbeef" in result.err and "expired" in result.err
    assert under_prefix(bucket_objects(moto, bucket)) == tree.files()


def test_two_concurrent_uploads_one_waits_and_finds_nothing_left_to_do(
        moto: CountingMotoServer, tree: Tree, bucket: str) -> None:
    tree.publish(20)
    moto.put_delay = 0.01
    try:
        procs = [subprocess.Popen([sys.executable, "-m", "repogen", "upload", "--site", str(tree.site),
                                   f"s3://{bucket}/{PREFIX}", "--json"], env={**os.environ, **moto.env},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        moto.put_delay = 0.0
    assert [p.returncode for p in procs] == [0, 0], results
    reports = [json.loads(out) for out, _ in results]
    files = tree.files()
    assert sorted(r["uploaded"] for r in reports) == [0, len(files)]
    waiter = next(err for (_, err), r in zip(results, reports, strict=True) if r["uploaded"] == 0)
    assert "waiting for the lock held by" in waiter
    puts = [p for p in object_puts(moto, bucket) if not p.startswith(".repogen/")]
    assert sorted(puts) == sorted(files)  # every file PUT exactly once: the two never interleaved
    assert under_prefix(bucket_objects(moto, bucket)) == files


# -- bad input --------------------------------------------------------------------------------------

def test_no_credentials_is_one_clear_line_and_nothing_is_sent(
        moto: CountingMotoServer, tree: Tree, bucket: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=moto.url, AWS_EC2_METADATA_DISABLED="true", HOME=str(tmp_path),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    proc = subprocess.run([sys.executable, "-m", "repogen", "upload", "--site", str(tree.site),
                           f"s3://{bucket}/{PREFIX}"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert "no AWS credentials found" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[0].startswith("error: uploading to s3://")
    assert moto.requests == []


def test_wrong_endpoint_is_one_clear_line(tree: Tree, moto: CountingMotoServer) -> None:
    result = repogen("upload", "--site", str(tree.site), "s3://repo-nowhere/x", "--endpoint-url",
                     "http://127.0.0.1:9", env=moto.env)
    assert result.code == 1
    assert "cannot reach the S3 endpoint" in result.err and "Traceback" not in result.err


def test_a_bucket_that_does_not_exist(moto: CountingMotoServer, tree: Tree) -> None:
    result = upload(moto, tree.site, "repo-does-not-exist")
    assert result.code == 1
    assert "bucket does not exist" in result.err and "Traceback" not in result.err
    gc = repogen("gc", "s3://repo-does-not-exist/x", env=moto.env)
    assert gc.code == 1 and "bucket does not exist" in gc.err


@pytest.mark.parametrize("case", ["missing", "empty-dir", "foreign-index", "link-inside", "relative-link-out",
                                  "bad-sums"])
def test_a_site_that_is_not_a_published_tree_is_refused_before_any_request(
        moto: CountingMotoServer, tree: Tree, bucket: str, tmp_path: Path, case: str) -> None:
    site = tmp_path / "not-a-site"
    if case == "empty-dir":
        site.mkdir()
    elif case == "foreign-index":
        site.mkdir()
        (site / "index.json").write_text('{"generator": "something else"}')
        (site / "SHA256SUMS").write_text("")
    elif case in ("link-inside", "relative-link-out", "bad-sums"):
        shutil.copytree(tree.site.resolve(), site)
        if case == "link-inside":
            (site / "driver" / "escape").symlink_to("/etc")
        elif case == "relative-link-out":  # relative, like the shared pool's links, but leaving the site's parent
            (site / "driver" / "escape").symlink_to(os.path.relpath("/etc", site / "driver"))
        else:
            (site / "SHA256SUMS").write_text("not a checksum line\n")
    moto.reset()
    result = upload(moto, site, bucket)
    assert result.code == 2, result.err
    assert "Traceback" not in result.err and str(site) in result.err
    assert moto.requests == []


@pytest.mark.parametrize("damage", ["garbage", "edited"])
def test_a_corrupt_manifest_is_detected_and_never_trusted(
        moto: CountingMotoServer, tree: Tree, bucket: str, damage: str) -> None:
    assert upload(moto, tree.site, bucket).code == 0
    s3 = moto.client()
    key = f"{PREFIX}/{MANIFEST}"
    manifest = json.loads(gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    victim = "index.json"
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}/{victim}", Body=b"tampered")  # the bucket no longer matches
    if damage == "garbage":
        body = b"\x00{not json"
    else:  # plausible JSON claiming everything is fine, with the self-digest left as it was
        manifest["files"][victim] = [hashlib.sha256(b"whatever").hexdigest(), 8]
        body = gzip.compress(json.dumps(manifest).encode())
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    gc = repogen("gc", f"s3://{bucket}/{PREFIX}", "--grace", "0", env=moto.env)
    assert gc.code == 1 and "corrupt" in gc.err and "nothing deleted" in gc.err
    result = upload(moto, tree.site, bucket)
    assert result.code == 0, result.err
    assert "corrupt" in result.err
    assert result.json["uploaded"] == len(tree.files())  # a full re-upload, nothing trusted
    objects = bucket_objects(moto, bucket)
    assert under_prefix(objects) == tree.files()
    assert_manifest_true(moto, bucket, objects)


def test_a_bad_s3_url_is_a_usage_error(moto: CountingMotoServer, tree: Tree) -> None:
    for url in ("s3://Bad_Bucket/x", "s3://bucket/a//b", "http://bucket/x"):
        result = repogen("upload", "--site", str(tree.site), url, env=moto.env)
        assert result.code == 2 and "Traceback" not in result.err, (url, result.err)


def test_dry_run_writes_nothing(moto: CountingMotoServer, tree: Tree, bucket: str) -> None:
    result = upload(moto, tree.site, bucket, "--dry-run")
    assert result.code == 0, result.err
    assert result.json["uploaded"] == len(tree.files()) and result.json["dry_run"]
    assert [m for m, _, _ in moto.requests] == ["GET"]
    assert bucket_objects(moto, bucket) == {}


# -- gc ---------------------------------------------------------------------------------------------

def test_gc_removes_only_unreferenced_objects_after_the_grace_period(
        moto: CountingMotoServer, tree: Tree, bucket: str) -> None:
    assert upload(moto, tree.site, bucket).code == 0
    before = tree.files()
    tree.publish(2, start=1)  # kernel 0 leaves the matrix, kernel 1 and 2 stay
    assert upload(moto, tree.site, bucket).code == 0
    after = tree.files()
    gone = set(before) - set(after)
    assert len([k for k in gone if k.startswith(("driver/", "v1/"))]) == 4
    s3 = moto.client()
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}/driver/stray.ko", Body=b"left by a killed upload")
    outside = f"other/{uuid.uuid4().hex}"
    s3.put_object(Bucket=bucket, Key=outside, Body=b"not ours")

    waiting = repogen("gc", f"s3://{bucket}/{PREFIX}", "--grace", "1h", "--json", env=moto.env)
    assert waiting.code == 0, waiting.err
    assert waiting.json["deleted"] == [] and waiting.json["waiting"] == len(gone) + 1
    dry = repogen("gc", f"s3://{bucket}/{PREFIX}", "--grace", "0", "--dry-run", "--json", env=moto.env)
    assert set(dry.json["deleted"]) == gone | {"driver/stray.ko"}
    assert set(under_prefix(bucket_objects(moto, bucket))) == set(after) | gone | {"driver/stray.ko"}

    done = repogen("gc", f"s3://{bucket}/{PREFIX}", "--grace", "0", "--json", env=moto.env)
    assert done.code == 0, done.err
    assert set(done.json["deleted"]) == gone | {"driver/stray.ko"}
    objects = bucket_objects(moto, bucket)
    assert under_prefix(objects) == after
    assert outside in objects  # outside the prefix: never touched
    assert_consistent(objects)
    manifest = assert_manifest_true(moto, bucket, objects)
    assert manifest["retired"] == {}
    again = repogen("gc", f"s3://{bucket}/{PREFIX}", "--grace", "0", "--json", env=moto.env)
    assert again.json["deleted"] == []


def test_gc_bad_grace_is_a_usage_error(moto: CountingMotoServer, bucket: str) -> None:
    result = repogen("gc", f"s3://{bucket}/{PREFIX}", "--grace", "soon", env=moto.env)
    assert result.code == 2 and "--grace" in result.err and "Traceback" not in result.err
    assert moto.requests == []


def test_the_manifest_is_reread_under_the_lock_without_its_body_when_unchanged(
        moto: CountingMotoServer, bucket: str) -> None:
    from repogen.bucket import Manifest, read_manifest, write_manifest
    from repogen.s3 import S3Location

    s3, where = moto.client(), S3Location(bucket, PREFIX)
    write_manifest(s3, where, Manifest({f"driver/f{i}.ko": (hashlib.sha256(b"%d" % i).hexdigest(), i)
                                        for i in range(2000)}))
    first = read_manifest(s3, where)
    moto.reset()
    again = read_manifest(s3, where, first)
    assert again is first and moto.bytes_out < 1000  # 304: no body
    write_manifest(s3, where, Manifest({"index.json": (hashlib.sha256(b"x").hexdigest(), 1)}))
    changed = read_manifest(s3, where, first)
    assert list(changed.manifest.files) == ["index.json"]
