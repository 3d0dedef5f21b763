"""Builder images: one per toolchain, chosen per kernel by version, built from ``templates/builders``.

On a host with no registry reachable, ``bootstrap`` makes the Debian base image with debootstrap and
``docker import``; ``build`` then installs each toolchain on it with the host's own Debian mirror.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from repogen.errors import RepogenError
from repogen.model import Kernel
from repogen.proc import OnLine, run_logged

if TYPE_CHECKING:  # the Docker SDK is imported where it is used: `plan` and `validate` never load it
    import docker

    from repogen.store import Store

BASE_REPOSITORY = "repogen/base"
BUILDER_REPOSITORY = "repogen/builder"
#: A second tag on each builder image, naming its toolchain id, so it is computed once per image.
TOOLCHAIN_REPOSITORY = "repogen/toolchain"
#: What every package of an image is, one line each: the part of the toolchain id a machine adds.
_PACKAGES_QUERY = ["dpkg-query", "--show", "--showformat", "${binary:Package} ${Version}\\n"]


@dataclass(frozen=True)
class Toolchain:
    name: str
    suite: str
    gcc: str
    clang: str
    kernels: str  # e.g. ">=5.15,<6.10": the guess by kernel version before its headers were read

    @property
    def base_tag(self) -> str:
        return f"{BASE_REPOSITORY}:{self.suite}"

    def holds(self, version: tuple[int, ...]) -> bool:
        for clause in self.kernels.split(","):
            m = re.fullmatch(r"\s*(>=|<)\s*(\d+(?:\.\d+)*)\s*", clause)
            if not m:
                continue
            bound = tuple(int(x) for x in m.group(2).split("."))
            if (m.group(1) == ">=" and version < bound) or (m.group(1) == "<" and version >= bound):
                return False
        return True


def _templates() -> resources.abc.Traversable:
    return resources.files("repogen") / "templates" / "builders"


@cache
def toolchains() -> dict[str, Toolchain]:
    import yaml_rs  # our own plain file: yaml_rs loads in a tenth of PyYAML's import time (`plan` reads it)

    data = yaml_rs.loads((_templates() / "toolchains.yaml").read_text())
    assert isinstance(data, dict)
    return {name: Toolchain(name=name, **{k: str(v) for k, v in spec.items()})
            for name, spec in data["toolchains"].items()}


_MAJOR_MINOR = re.compile(r"(\d+)\.(\d+)")


def kernel_version(release: str) -> tuple[int, ...]:
    m = _MAJOR_MINOR.match(release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def choose(kernel: Kernel, gcc: int | None = None) -> Toolchain:
    """The toolchain for a kernel: its ``builder:`` override, else the one with the gcc that built it
    (read from its headers: a module built by another major gcc is a known source of breakage), else,
    before the headers were read, the first whose kernel range holds its version."""
    chains = toolchains()
    if kernel.builder:
        if kernel.builder not in chains:
            raise RepogenError(f"{kernel.file}:{kernel.line}: builder: unknown toolchain "
                               f"{kernel.builder!r} (known: {', '.join(chains)})")
        return chains[kernel.builder]
    if gcc is not None:
        by_gcc = sorted(chains.values(), key=lambda c: int(c.gcc))
        exact = [c for c in by_gcc if int(c.gcc) == gcc]
        newer = [c for c in by_gcc if int(c.gcc) > gcc]
        return (exact or newer or by_gcc[-1:])[0]
    version = kernel_version(kernel.kernelrelease)
    for chain in chains.values():
        if chain.holds(version):
            return chain
    raise RepogenError(f"{kernel.file}:{kernel.line}: no builder toolchain for kernel "
                       f"{kernel.kernelrelease}; set `builder:` to one of {', '.join(chains)}")


def dockerfile(chain: Toolchain, base_image: str) -> str:
    import jinja2  # only `images build` renders templates: keep it off every other command's start-up

    template = jinja2.Template((_templates() / "Dockerfile.j2").read_text(), undefined=jinja2.StrictUndefined)
    return template.render(name=chain.name, suite=chain.suite, gcc=chain.gcc, clang=chain.clang,
                           base_image=base_image)


def content_tag(chain: Toolchain, base_id: str) -> str:
    """The builder's tag, named by what it is made of (its Dockerfile and the base image's id), so two
    checkouts or versions of repogen never retag each other's image under a running build."""
    digest = hashlib.sha256(f"{dockerfile(chain, base_id)}\0{base_id}".encode()).hexdigest()[:12]
    return f"{BUILDER_REPOSITORY}:{chain.name}-{digest}"


def image_id(client: docker.DockerClient, tag: str) -> str | None:
    import docker.errors

    try:
        return str(client.images.get(tag).id)
    except docker.errors.ImageNotFound:
        return None


def base_ids(client: docker.DockerClient) -> dict[str, str]:
    """Suite -> id of every base image present."""
    out: dict[str, str] = {}
    for image in client.images.list(name=BASE_REPOSITORY):
        for tag in image.tags:
            out[tag.partition(":")[2]] = str(image.id)
    return out


def resolve_ids(client: docker.DockerClient) -> dict[str, str]:
    """Toolchain name -> id of its builder image, for the images made from today's templates and bases."""
    bases = base_ids(client)
    present: dict[str, str] = {}
    for image in client.images.list(name=BUILDER_REPOSITORY):
        for tag in image.tags:
            present[tag] = str(image.id)
    out: dict[str, str] = {}
    for chain in toolchains().values():
        base = bases.get(chain.suite)
        if base and (found := present.get(content_tag(chain, base))):
            out[chain.name] = found
    return out


def toolchain_id(chain: Toolchain, packages: str) -> str:
    """What builds depend on, the same on every machine with the same toolchain: the Dockerfile as
    the template renders it (naming the base by its tag, not by this machine's image id) and the exact
    version of every package installed in the image. Two machines that debootstrapped and built their
    own images from the same mirror state get the same id, so they share remote-cache entries; an
    image whose gcc, clang or libc moved gets a new one."""
    lines = sorted(line.strip() for line in packages.splitlines() if line.strip())
    text = dockerfile(chain, chain.base_tag) + "\0" + "\n".join(lines)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def image_packages(client: docker.DockerClient, image: str) -> str:
    """``dpkg-query --show`` inside ``image`` (no network, removed afterwards)."""
    import docker.errors

    try:
        output = client.containers.run(image, _PACKAGES_QUERY, network_mode="none", remove=True,
                                       stdout=True, stderr=False)
    except docker.errors.DockerException as exc:
        raise RepogenError(f"cannot list the packages of builder image {image[:19]}: {exc}") from None
    return bytes(output).decode(errors="replace")


def toolchain_ids(client: docker.DockerClient, ids: dict[str, str]) -> dict[str, str]:
    """Toolchain name -> toolchain id of each image in ``ids`` (name -> image id). Read from the
    image's ``repogen/toolchain:<name>-<hex>`` tag; an image without one is asked for its packages
    once (a second's container run) and tagged."""
    import docker.errors

    chains = toolchains()
    out: dict[str, str] = {}
    for name, image_ref in ids.items():
        chain = chains.get(name)
        if chain is None:
            continue
        try:
            image = client.images.get(image_ref)
        except docker.errors.ImageNotFound:
            continue
        prefix = f"{TOOLCHAIN_REPOSITORY}:{name}-"
        tagged = [t.removeprefix(prefix) for t in image.tags if t.startswith(prefix)]
        if tagged:
            out[name] = "sha256:" + tagged[0]
            continue
        found = toolchain_id(chain, image_packages(client, image_ref))
        image.tag(TOOLCHAIN_REPOSITORY, f"{name}-{found.removeprefix('sha256:')}")
        out[name] = found
    return out


def record(client: docker.DockerClient, store: Store) -> tuple[dict[str, str], dict[str, str]]:
    """The builder images present (toolchain name -> image id) and their toolchain ids, recorded in
    ``store`` so that `plan` needs no Docker engine."""
    ids = resolve_ids(client)
    found = toolchain_ids(client, ids)
    store.record_images(ids, found)
    return ids, found


def build(client: docker.DockerClient, chain: Toolchain, log_path: Path,
          on_line: OnLine | None = None) -> str:
    """Build one builder image (host network, so apt reaches the mirror); returns its id."""
    import docker.errors

    base = base_ids(client).get(chain.suite)
    if base is None:
        raise RepogenError(f"base image {chain.base_tag} is missing",
                           hint=f"run `repogen images bootstrap --suite {chain.suite}` first")
    text = dockerfile(chain, base)
    tag = content_tag(chain, base)
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(text.encode())
        tar.addfile(info, io.BytesIO(text.encode()))
    context.seek(0)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    labels = {"org.repogen.template-sha256": hashlib.sha256(text.encode()).hexdigest()}
    with log_path.open("w", encoding="utf-8") as log:
        try:
            for chunk in client.api.build(fileobj=context, custom_context=True, tag=tag, rm=True,
                                          network_mode="host", labels=labels, decode=True):
                if "stream" in chunk:
                    log.write(chunk["stream"])
                    if on_line and chunk["stream"].strip():
                        on_line(chunk["stream"].strip())
                if "error" in chunk:
                    log.write(chunk["error"] + "\n")
                    raise RepogenError(f"building {tag} failed: {chunk['error'].strip()}",
                                       hint=f"full log: {log_path}")
        except docker.errors.APIError as exc:
            raise RepogenError(f"building {tag} failed: {exc}", hint=f"full log: {log_path}") from None
    found = image_id(client, tag)
    if found is None:
        raise RepogenError(f"building {tag} produced no image", hint=f"full log: {log_path}")
    return found


def ensure(client: docker.DockerClient, chain: Toolchain, logs: Path, *, mirror: str | None = None,
           on_line: OnLine | None = None) -> str:
    """The builder image of ``chain``, bootstrapping its base and building it first when missing.

    A file lock per toolchain makes two processes wanting the same image build it once."""
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f".{chain.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (found := resolve_ids(client).get(chain.name)) is not None:
            return found
        if chain.suite not in base_ids(client):
            if on_line:
                on_line(f"debootstrap {chain.suite} (base image of {chain.name})")
            bootstrap(client, chain.suite, mirror, logs / f"bootstrap-{chain.suite}.log", on_line)
        if on_line:
            on_line(f"building builder image {chain.name} (Debian {chain.suite}, gcc {chain.gcc}, clang {chain.clang})")
        return build(client, chain, logs / f"{chain.name}.log", on_line)


def host_debian_mirror() -> str | None:
    """The Debian archive URI from this machine's own apt configuration (deb822 or one-line)."""
    from debian import deb822

    sources_dir = Path("/etc/apt/sources.list.d")
    candidates: list[str] = []
    for path in sorted(sources_dir.glob("*.sources")) if sources_dir.is_dir() else []:
        with path.open(encoding="utf-8") as fh:
            for para in deb822.Deb822.iter_paragraphs(fh):
                candidates.extend(para.get("URIs", "").split())
    for path in [Path("/etc/apt/sources.list"), *sorted(sources_dir.glob("*.list"))]:
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)", line)
                if m:
                    candidates.append(m.group(1))
    for uri in candidates:
        if uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    return candidates[0].rstrip("/") if candidates else None


def bootstrap(client: docker.DockerClient, suite: str, mirror: str | None, log_path: Path,
              on_line: OnLine | None = None) -> str:
    """debootstrap a minimal Debian ``suite`` and ``docker import`` it as the base image."""
    if os.geteuid() != 0:
        raise RepogenError("images bootstrap runs debootstrap, which needs root")
    if not shutil.which("debootstrap"):
        raise RepogenError("debootstrap is not installed", hint="apt-get install debootstrap")
    mirror = mirror or host_debian_mirror()
    if not mirror:
        raise RepogenError("no Debian mirror found in /etc/apt/sources.list*", hint="pass --mirror URL")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="repogen-bootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        status = run_logged(["debootstrap", "--variant=minbase", suite, str(rootfs), mirror], log_path, on_line)
        if status:
            raise RepogenError(f"debootstrap {suite} failed (exit {status})", hint=f"log: {log_path}")
        if on_line:
            on_line(f"importing {BASE_REPOSITORY}:{suite} into Docker")
        (rootfs / "etc/apt/sources.list").write_text(f"deb {mirror} {suite} main\n")
        tar_path = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tar_path), "."], check=True)
        repository, tag = f"{BASE_REPOSITORY}:{suite}".split(":")
        with tar_path.open("rb") as fh:
            client.api.import_image_from_data(fh.read(), repository=repository, tag=tag)
    found = image_id(client, f"{BASE_REPOSITORY}:{suite}")
    if found is None:
        raise RepogenError(f"docker import of {BASE_REPOSITORY}:{suite} produced no image")
    return found
