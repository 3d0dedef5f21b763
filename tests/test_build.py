"""Real builds: Docker, real Debian headers over HTTP, the shipped example drivers, ELF-verified."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import HELLO_KBUILD, LIBS_MINI, Repogen, driver_yaml, write_config
from elftools.elf.elffile import ELFFile

from repogen.verify import modinfo

pytestmark = pytest.mark.timeout(900)  # tests needing Docker are marked by their fixtures (conftest.py)


def _artifacts(home: Path) -> list[Path]:
    return sorted(p for p in (home / "store" / "sha256").rglob("*") if p.is_file())


def test_builds_both_recipes_both_kinds_and_second_run_builds_nothing(
        tmp_path: Path, mirror, builder_image: str) -> None:
    config = write_config(tmp_path, [driver_yaml("falco", "1.2.3+driver", LIBS_MINI, "falcosecurity-libs"),
                                     driver_yaml("hello_repogen", "0.1.0", HELLO_KBUILD, "kbuild")],
                          mirror.kernels[:2])
    repogen = Repogen(tmp_path / "home", config)
    first = repogen("build", "-j", "2", "--json")
    assert first.code == 0, first.err + first.out
    report = first.json
    assert report["built"] == 8 and report["failed"] == 0
    # Shared inputs are fetched and prepared once, however many jobs use them.
    assert report["counters"]["header_downloads"] == len({h["url"] for k in mirror.kernels[:2] for h in k["headers"]})
    assert report["counters"]["prepares"] == 1  # libs cmake once; kbuild needs none
    assert report["counters"]["kernels_unpacked"] == 2

    store = tmp_path / "home" / "store" / "sha256"
    for result in report["results"]:
        data = (store / result["sha256"][:2] / result["sha256"]).read_bytes()
        path = tmp_path / "artifact"
        path.write_bytes(data)
        with path.open("rb") as fh:
            elf = ELFFile(fh)
            if result["kind"] == "ebpf":
                assert elf["e_machine"] == "EM_BPF"
            else:
                assert elf["e_machine"] == "EM_X86_64"
                info = modinfo(elf)
                assert info["name"] == result["name"]
                # vermagic carries the headers' own release (6.1.0-N-amd64), not the config label.
                assert info["vermagic"].startswith("6.1.0-")
                assert result["kernelrelease"] not in info["vermagic"]

    # The prepared cache (written by the prepare container as its own user) is sealed: ours, read-only.
    prepared = [p for p in (tmp_path / "home" / "cache" / "prepared").rglob("*") if not p.is_symlink()]
    assert prepared
    loose = [p for p in prepared if p.lstat().st_mode & 0o222 or p.lstat().st_uid != os.getuid()]
    assert loose == [], loose[:5]

    second = repogen("build")
    assert second.code == 0
    assert "nothing to build" in second.out
    plan = repogen("plan", "--json")
    assert plan.json["counts"] == {"built": 8}


def test_changed_source_rebuilds_only_that_driver(tmp_path: Path, mirror, builder_image: str) -> None:
    source = tmp_path / "hello"
    shutil.copytree(HELLO_KBUILD, source)
    config = write_config(tmp_path, [driver_yaml("hello_repogen", "main", source, "kbuild", "[kmod]")],
                          mirror.kernels[:1])
    repogen = Repogen(tmp_path / "home", config)
    assert repogen("build").code == 0
    before = _artifacts(tmp_path / "home")
    (source / "hello_repogen.c").write_text((source / "hello_repogen.c").read_text()
                                          + '\nMODULE_INFO(repogen_test, "changed");\n')
    plan = repogen("plan", "--json").json
    assert plan["counts"] == {"changed": 1}
    rebuilt = repogen("build", "--json")
    assert rebuilt.json["built"] == 1
    assert len(_artifacts(tmp_path / "home")) == len(before) + 1
    changed_sha = rebuilt.json["results"][0]["sha256"]

    # Reverting the source brings back the first artifact without compiling, and publish serves it.
    shutil.copy(HELLO_KBUILD / "hello_repogen.c", source / "hello_repogen.c")
    assert repogen("plan", "--json").json["counts"] == {"changed": 1}
    reverted = repogen("build", "--json").json
    assert reverted["built"] == 0 and reverted["up_to_date"] == 1
    assert repogen("plan", "--json").json["counts"] == {"built": 1}
    assert repogen("publish", "--site", str(tmp_path / "site")).code == 0
    index = json.loads((tmp_path / "site" / "index.json").read_text())
    assert [a["sha256"] for a in index["artifacts"]] == [before[0].name] != [changed_sha]


def test_rebuild_selector_forces_a_rebuild(tmp_path: Path, mirror, builder_image: str) -> None:
    config = write_config(tmp_path, [driver_yaml("hello_repogen", "0.1.0", HELLO_KBUILD, "kbuild")],
                          mirror.kernels[:1])
    repogen = Repogen(tmp_path / "home", config)
    assert repogen("build").code == 0
    forced = repogen("build", "--rebuild", "kind=kmod", "--json")
    assert forced.code == 0
    statuses = {r["kind"]: r["status"] for r in forced.json["results"]}
    assert statuses == {"kmod": "built", "ebpf": "up-to-date"}


def test_unpinned_tarball_is_refetched_and_rebuilt_when_its_content_changes(
        tmp_path: Path, mirror, builder_image: str) -> None:
    """A branch name as driver version: the source URL has no sha256, so each build re-checks it."""
    import tarfile

    from repogen.serve import serve_in_thread

    served = tmp_path / "served"
    served.mkdir()

    def pack(marker: str) -> None:
        tree = tmp_path / "src" / "hello-main"
        shutil.rmtree(tree.parent, ignore_errors=True)
        shutil.copytree(HELLO_KBUILD, tree)
        (tree / "hello_repogen.c").write_text((tree / "hello_repogen.c").read_text()
                                        + f'\nMODULE_INFO(repogen_test, "{marker}");\n')
        with tarfile.open(served / "main.tar.gz", "w:gz") as tar:
            tar.add(tree, arcname="hello-main")

    pack("one")
    server, base = serve_in_thread(served)
    try:
        config = write_config(tmp_path, [
            f"- name: hello_repogen\n  version: main\n  source: {{url: {base}/main.tar.gz}}\n  recipe: kbuild\n"
            "  kinds: [kmod]\n"], mirror.kernels[:1])
        repogen = Repogen(tmp_path / "home", config)
        assert repogen("build", "--json").json["built"] == 1
        again = repogen("build", "--json").json
        assert again["built"] == 0 and again["up_to_date"] == 1
        pack("two")
        changed = repogen("build", "--json").json
        assert changed["built"] == 1
    finally:
        server.shutdown()


def test_only_and_shard_select_jobs(tmp_path: Path, mirror) -> None:
    config = write_config(tmp_path, [driver_yaml("hello_repogen", "0.1.0", HELLO_KBUILD, "kbuild")], mirror.kernels)
    repogen = Repogen(tmp_path / "home", config)
    only = repogen("plan", "--json", "--only", f"kernelrelease={mirror.kernels[0]['kernelrelease']},kind=kmod").json
    assert only["total"] == 1
    shards = [repogen("plan", "--json", "--shard", f"{i}/2").json for i in (1, 2)]
    ids = [{(j["kernelrelease"], j["kind"]) for j in s["jobs"]} for s in shards]
    assert ids[0].isdisjoint(ids[1]) and len(ids[0] | ids[1]) == 6
    # A kernel's jobs stay in one shard, so its headers are fetched by one shard only.
    for s in ids:
        for kr, _ in s:
            assert (kr, "kmod") in s and (kr, "ebpf") in s
    again = repogen("plan", "--json", "--shard", "1/2").json
    assert {(j["kernelrelease"], j["kind"]) for j in again["jobs"]} == ids[0]
    bad = repogen("plan", "--shard", "3/2")
    assert bad.code != 0 and "--shard" in bad.err


def test_artifact_checksums_in_store_match_and_links_in_a_source_never_change_host_files(
        tmp_path: Path, mirror, builder_image: str) -> None:
    # A `path:` source holding links to a private host file and directory: handing the work copy to
    # the container's user must not chmod/chown through them (it once made a 0600 file 0666).
    host = tmp_path / "host"
    host.mkdir(mode=0o700)
    secret = host / "secret"
    secret.write_text("secret\n")
    secret.chmod(0o600)
    before = [(p.stat().st_mode, p.stat().st_uid, p.stat().st_gid) for p in (host, secret)]
    source = tmp_path / "hello"
    shutil.copytree(HELLO_KBUILD, source)
    (source / "secret-link").symlink_to(secret)
    (source / "host-link").symlink_to(host)
    config = write_config(tmp_path, [driver_yaml("hello_repogen", "0.1.0", source, "kbuild", "[kmod]")],
                          mirror.kernels[:1])
    repogen = Repogen(tmp_path / "home", config)
    result = repogen("build", "--json")
    assert result.code == 0, result.err + result.out
    assert [(p.stat().st_mode, p.stat().st_uid, p.stat().st_gid) for p in (host, secret)] == before
    artifacts = _artifacts(tmp_path / "home")
    for path in artifacts:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
    [built] = result.json["results"]
    assert [p.name for p in artifacts] == [built["sha256"]]  # the report names the stored object
    log = Path(built["log"]).read_text()
    assert "network none" in log and "verified hello_repogen.ko" in log


def test_build_container_is_hermetic(tmp_path: Path, mirror, builder_image: str) -> None:
    """The build runs as non-root, with no capabilities, no network but loopback, read-only headers
    and root filesystem, and limits: the driver's own Kbuild reports what it sees into the log."""
    source = tmp_path / "probe"
    shutil.copytree(HELLO_KBUILD, source)
    probes = (
        "$(info HERMETIC uid=$(shell id -u))"
        "$(info HERMETIC capeff=$(shell grep CapEff /proc/self/status | cut -f2))"
        "$(info HERMETIC nonewprivs=$(shell grep NoNewPrivs /proc/self/status | cut -f2))"
        "$(info HERMETIC ifaces=$(shell ls /sys/class/net | tr '\\n' ' '))"
        "$(info HERMETIC headers=$(shell touch $(KERNELDIR)/x 2>&1 | grep -o 'Read-only file system'))"
        "$(info HERMETIC root=$(shell touch /etc/x 2>&1 | grep -o 'Read-only file system'))"
        "$(info HERMETIC pids=$(shell cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max 2>/dev/null))"
    )
    (source / "Kbuild").write_text((source / "Kbuild").read_text() + probes + "\n")
    config = write_config(tmp_path, [driver_yaml("hello_repogen", "0.1.0", source, "kbuild", "[kmod]")],
                          mirror.kernels[:1], "build: {pids: 512}\n")
    result = Repogen(tmp_path / "home", config)("build", "--json")
    assert result.code == 0, result.err + result.out
    log = Path(result.json["results"][0]["log"]).read_text()
    seen = dict(line.split("HERMETIC ", 1)[1].split("=", 1) for line in log.splitlines() if "HERMETIC " in line)
    assert seen["uid"].strip() == "1000"
    assert int(seen["capeff"].strip(), 16) == 0
    assert seen["nonewprivs"].strip() == "1"
    assert seen["ifaces"].split() == ["lo"]
    assert seen["headers"].strip() == "Read-only file system"
    assert seen["root"].strip() == "Read-only file system"
    assert seen["pids"].strip() == "512"
