"""Shared fixtures: a real Docker engine, the builder image, real Debian kernel headers on 127.0.0.1.

The headers come from this machine's apt configuration (`apt-get download`) into a persistent
cache (``$REPOGEN_TEST_CACHE``, default ``~/.cache/repogen-tests``) and are served by a local HTTP
server for the whole session, so builds fetch them over HTTP exactly as in production.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.matrixfiles import driver_yaml, kernels_yaml, write_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "drivers"
CACHE = Path(os.environ.get("REPOGEN_TEST_CACHE", Path.home() / ".cache" / "repogen-tests"))
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "scripts"))

__all__ = ["driver_yaml", "kernels_yaml", "write_config"]  # re-exported for the tests


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Whatever needs the Docker engine (directly or through a fixture) is marked ``docker``, so
    ``pytest -m "not docker"`` runs no Docker at all."""
    for item in items:
        if {"docker_client", "builder_image"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)


@dataclass
class Mirror:
    base_url: str
    directory: Path
    kernels: list[dict[str, Any]]  # kernels.yaml entries (with sha256), newest first


@pytest.fixture(scope="session")
def docker_client() -> Any:
    subprocess.run([str(ROOT / "scripts" / "ensure-docker.sh")], check=True, timeout=120)
    from repogen import container

    return container.connect()


@pytest.fixture(scope="session")
def builder_image(docker_client: Any) -> str:
    """The gcc12 builder image id, bootstrapping and building it when missing (a minute or two)."""
    from repogen import images

    return images.ensure(docker_client, images.toolchains()["gcc12"], CACHE / "image-logs")


@pytest.fixture(scope="session")
def debian() -> Any:
    """Debian's kernel packages on the machine's mirror, bullseye to trixie, amd64 and arm64 (a private apt)."""
    import debian_headers

    apt = debian_headers.archive(CACHE / "apt")
    apt.update()
    return debian_headers.Catalog(apt)


@pytest.fixture(scope="session")
def mirror_server() -> Iterator[tuple[Path, str]]:
    """The local mirror directory, served on 127.0.0.1 for the whole session."""
    from repogen.serve import serve_in_thread

    directory = CACHE / "mirror"
    directory.mkdir(parents=True, exist_ok=True)
    server, base_url = serve_in_thread(directory)
    yield directory, base_url
    server.shutdown()


@pytest.fixture(scope="session")
def mirror(debian: Any, mirror_server: tuple[Path, str]) -> Mirror:
    """Three real Debian 12 kernels (the newest two amd64, then a cloud-amd64), headers only."""
    import debian_headers

    directory, base_url = mirror_server
    kernels = debian_headers.fetch(debian.apt, debian.newest("bookworm", "amd64", 3), directory, base_url)
    for k in kernels:
        k.pop("uname_r", None)
        k.pop("suite", None)
    return Mirror(base_url, directory, kernels)


@pytest.fixture(scope="session")
def release_kernels(debian: Any, mirror_server: tuple[Path, str]) -> dict[str, dict[str, Any]]:
    """The newest real kernel of Debian 11, 12 and 13 on x86_64 and of Debian 12 on aarch64 (cross-built),
    each with its image for the boot check, as kernels.yaml entries (plus ``uname_r`` and ``suite``)."""
    import debian_headers

    directory, base_url = mirror_server
    picked = {f"{suite}-amd64": debian.find(suite, "amd64", image=True)[0]
              for suite in ("bullseye", "bookworm", "trixie")}
    picked["bookworm-arm64"] = debian.find("bookworm", "arm64", image=True)[0]
    entries = debian_headers.fetch(debian.apt, list(picked.values()), directory, base_url)
    return dict(zip(picked, entries, strict=True))


LIBS_MINI = EXAMPLES / "falco-libs-mini"
HELLO_KBUILD = EXAMPLES / "hello-kbuild"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


class Repogen:
    """Runs the real ``repogen`` command (a subprocess) with its own state directory."""

    def __init__(self, home: Path, config: Path | None = None) -> None:
        self.home = home
        self.config = config

    def __call__(self, *args: str, timeout: float = 900, env: dict[str, str] | None = None) -> Result:
        cmd = [sys.executable, "-m", "repogen", "--home", str(self.home)]
        if self.config is not None:
            cmd += ["-c", str(self.config)]
        proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A ``site`` directory (not created yet) and the base URL it is served at on 127.0.0.1."""
    from repogen.serve import serve_in_thread

    site = tmp_path / "site"
    server, base_url = serve_in_thread(site)
    yield site, base_url
    server.shutdown()


@pytest.fixture
def repogen(tmp_path: Path) -> Repogen:
    return Repogen(tmp_path / "home")


@pytest.fixture(scope="session")
def warm_cache(tmp_path_factory: pytest.TempPathFactory, mirror: Mirror, builder_image: str) -> Path:
    """A home whose download and headers caches hold mirror.kernels[0], built once per session."""
    root = tmp_path_factory.mktemp("warm")
    config = write_config(root, [driver_yaml("hello_repogen", "0.1.0", HELLO_KBUILD, "kbuild", "[kmod]")],
                          mirror.kernels[:1])
    result = Repogen(root / "home", config)("build", timeout=600)
    assert result.code == 0, result.err + result.out
    return root / "home" / "cache"


@pytest.fixture
def home(tmp_path: Path, warm_cache: Path) -> Path:
    """A fresh state directory starting from a warm copy (hard links) of the headers cache."""
    home = tmp_path / "home"
    for part in ("downloads", "kernels"):
        shutil.copytree(warm_cache / part, home / "cache" / part, copy_function=os.link, symlinks=True,
                        ignore=shutil.ignore_patterns(".locks"))
    return home
