"""Recipes: how a driver's source becomes a kbuild directory, and how that becomes artifacts.

Each recipe is one module here plus one build script under ``templates/recipes/`` that runs inside
the builder container, with the same phases for every recipe:

- ``prepare``: once per driver version, ``/src`` (read-only) to ``/out`` (kernel-independent);
- ``kmod`` / ``ebpf``: once per kernel, in ``/work``, a fresh writable copy of the prepared kbuild
  directory, with ``KERNELDIR`` pointing at the read-only headers.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib import resources
from typing import ClassVar

from repogen.model import Driver, Kind


class Recipe:
    registry: ClassVar[dict[str, type[Recipe]]] = {}
    name: ClassVar[str]
    #: Directory, relative to the prepared tree, holding the kbuild directory of each kind.
    kbuild_dirs: ClassVar[dict[Kind, str]]
    #: Whether ``prepare`` must run in a container (cmake); otherwise the source is used as is.
    needs_prepare: ClassVar[bool] = True
    #: Whether the loaded module must create ``/dev/<name>*`` or ``/sys/class/<name>`` (the boot check).
    boot_device: ClassVar[bool] = False
    #: Why some versions lack a kind, for the config error.
    kinds_note: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "name", None):
            Recipe.registry[cls.name] = cls

    @classmethod
    def script(cls) -> str:
        """The build script's text; part of every build key, so editing it rebuilds."""
        return (resources.files("repogen") / "templates" / "recipes" / f"{cls.name}.sh").read_text()

    @classmethod
    def kinds_for(cls, version: str) -> tuple[Kind, ...] | None:
        """The kinds a driver version can build, when the version says (None: cannot tell, allow all)."""
        return None

    @classmethod
    def output(cls, driver: Driver, kind: Kind) -> str:
        """Where the artifact is left, relative to the work directory."""
        raise NotImplementedError


def _load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def get(name: str) -> type[Recipe]:
    if not Recipe.registry:
        _load_all()
    return Recipe.registry[name]


def known_recipes() -> list[str]:
    if not Recipe.registry:
        _load_all()
    return sorted(Recipe.registry)
