"""Read and validate ``kernels.yaml`` (plus the files it includes) into a :class:`Config`.

Every error names the file, the line and the field, and all errors are reported in one go so a
maintainer fixes a pull request in one round. A well-formed file is read by the fast path
(:mod:`repogen.config_fast`: plain data, the same checks, a cheap line map); any file it does not
accept whole is parsed here with line numbers from PyYAML's composed node tree (libyaml when
available), which locates every error. The validated result is cached by the content of every file
read, so a no-op ``repogen plan`` over a matrix of thousands of kernels does not re-parse YAML.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import operator
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from repogen import __version__, config_fast, distro
from repogen import arch as arch_mod
from repogen import mirrors as mirrors_mod
from repogen.config_fast import FastFile
from repogen.errors import ConfigError, ConfigErrors
from repogen.model import (
    BuildLimits,
    Config,
    Driver,
    Header,
    Kernel,
    Kind,
    PackagesConfig,
    SigningConfig,
    Source,
)

if TYPE_CHECKING:
    import yaml
else:
    class _Lazy:
        """PyYAML, imported on first use: a file the fast path reads whole never needs it."""

        def __getattr__(self, name: str) -> Any:
            import yaml as module

            globals()["yaml"] = module
            return getattr(module, name)

    yaml = _Lazy()

#: A value that becomes a path component: no '/', no '..', no whitespace, NUL or control characters.
PATH_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_ERRORS = 50

T = TypeVar("T")


@dataclass
class _Node:
    """A composed YAML node with the file it came from, for located error messages.

    ``key_line`` is the line of the key holding this value: errors about the field itself (unknown,
    duplicate) point there, not at a block value starting on the next line.
    """

    node: yaml.Node
    file: str
    key_line: int | None = None

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    @property
    def field_line(self) -> int:
        return self.key_line or self.line


class _Collector:
    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, at: _Node | tuple[str, int], field: str, message: str, *, at_key: bool = False) -> None:
        if isinstance(at, _Node):
            file, line = at.file, (at.field_line if at_key else at.line)
        else:
            file, line = at
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(ConfigError(file, line, field, message))


def _mapping(n: _Node, field: str, errs: _Collector) -> dict[str, _Node] | None:
    """A mapping's items by key, refusing duplicate keys (which YAML loaders silently drop)."""
    if not isinstance(n.node, yaml.MappingNode):
        errs.add(n, field, f"expected a mapping, found {_kind(n.node)}")
        return None
    out: dict[str, _Node] = {}
    for key_node, value_node in n.node.value:
        key = str(key_node.value)
        if key in out:
            errs.add(_Node(key_node, n.file), f"{field}.{key}" if field else key,
                     f"duplicate key (first at line {out[key].field_line})")
            continue
        out[key] = _Node(value_node, n.file, key_node.start_mark.line + 1)
    return out


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == "tag:yaml.org,2002:null":
        return "nothing"
    return f"{node.value!r}"


def _sequence(n: _Node, field: str, errs: _Collector) -> list[_Node]:
    if not isinstance(n.node, yaml.SequenceNode):
        errs.add(n, field, f"expected a list, found {_kind(n.node)}")
        return []
    return [_Node(item, n.file) for item in n.node.value]


def _scalar(n: _Node, field: str, errs: _Collector) -> str | None:
    if not isinstance(n.node, yaml.ScalarNode) or n.node.tag == "tag:yaml.org,2002:null":
        errs.add(n, field, f"expected a value, found {_kind(n.node)}")
        return None
    return str(n.node.value)


def _int(n: _Node, field: str, errs: _Collector, minimum: int = 0) -> int | None:
    text = _scalar(n, field, errs)
    if text is None:
        return None
    if not re.fullmatch(r"\d+", text) or int(text) < minimum:
        errs.add(n, field, f"expected a whole number >= {minimum}, found {text!r}")
        return None
    return int(text)


_STR_TAG = "tag:yaml.org,2002:str"


def _string(n: _Node, field: str, errs: _Collector) -> str | None:
    """A value Falco's clients compare as a string: YAML must not read it as a number or a boolean
    (``kernelversion: 1.0`` is the float 1.0, which some tools write back as ``1``)."""
    value = _scalar(n, field, errs)
    if value is None or n.node.tag == _STR_TAG:
        return value
    kind = n.node.tag.rsplit(":", 1)[-1]
    name = field.rsplit(".", 1)[-1]
    errs.add(n, field, f"{value} is read by YAML as a {kind}, but Falco's clients compare it as a string: "
             f"quote it ({name}: \"{value}\")")
    return None


def _path_safe(n: _Node, field: str, errs: _Collector) -> str | None:
    value = _string(n, field, errs)
    if value is None:
        return None
    if not PATH_SAFE.fullmatch(value) or ".." in value:
        bad = next((c for c in value if not re.fullmatch(r"[A-Za-z0-9._+~-]", c)), None)
        why = (f"character {bad!r} is not allowed" if bad is not None else
               "'..' is not allowed" if ".." in value else "must start with a letter or digit")
        errs.add(n, field, f"{value!r} becomes part of a published path: {why} "
                 "(allowed: letters, digits and . _ + ~ -)")
        return None
    return value


def _check_fields(
    items: dict[str, _Node], where: _Node, field: str, required: set[str], optional: set[str],
    errs: _Collector,
) -> None:
    for key, node in items.items():
        if key not in required | optional:
            allowed = ", ".join(sorted(required | optional))
            errs.add(node, f"{field}.{key}", f"unknown field (allowed: {allowed})", at_key=True)
    for key in sorted(required - items.keys()):
        errs.add(where, f"{field}.{key}", "missing required field")


def _url_or_path(value: str) -> bool:
    return bool(re.match(r"(https?|file)://\S+$", value))


def _parse_source(n: _Node, field: str, base: Path, errs: _Collector) -> Source | None:
    items = _mapping(n, field, errs)
    if items is None:
        return None
    _check_fields(items, n, field, set(), {"url", "path", "sha256"}, errs)
    url = _scalar(items["url"], f"{field}.url", errs) if "url" in items else None
    path = _scalar(items["path"], f"{field}.path", errs) if "path" in items else None
    sha = _scalar(items["sha256"], f"{field}.sha256", errs) if "sha256" in items else None
    if (url is None) == (path is None):
        errs.add(n, field, "give exactly one of 'url' or 'path'")
        return None
    if url is not None and not _url_or_path(url):
        errs.add(items["url"], f"{field}.url", f"not an http(s):// or file:// URL: {url!r}")
        return None
    if sha is not None and not _SHA256.fullmatch(sha.lower()):
        errs.add(items["sha256"], f"{field}.sha256", "expected 64 hexadecimal digits")
        return None
    if path is not None:
        path = str((base / path).resolve())
        if not Path(path).exists():
            errs.add(items["path"], f"{field}.path", f"no such file or directory: {path}")
            return None
    return Source(url=url, path=path, sha256=sha.lower() if sha else None)


def _parse_driver(n: _Node, index: int, base: Path, errs: _Collector) -> Driver | None:
    field = f"drivers[{index}]"
    items = _mapping(n, field, errs)
    if items is None:
        return None
    _check_fields(items, n, field, {"name", "version", "source"}, {"recipe", "kinds"}, errs)
    if not {"name", "version", "source"} <= items.keys():
        return None
    name = _path_safe(items["name"], f"{field}.name", errs)
    version = _path_safe(items["version"], f"{field}.version", errs)
    source = _parse_source(items["source"], f"{field}.source", base, errs)
    from repogen.recipes import known_recipes  # late: recipes import the build machinery

    recipe = "falcosecurity-libs"
    if "recipe" in items:
        recipe = _scalar(items["recipe"], f"{field}.recipe", errs) or recipe
        if recipe not in known_recipes():
            errs.add(items["recipe"], f"{field}.recipe",
                     f"unknown recipe {recipe!r} (known: {', '.join(known_recipes())})")
            return None
    from repogen.recipes import get as get_recipe

    recipe_cls = get_recipe(recipe)
    possible = recipe_cls.kinds_for(version) if version else None
    kinds: list[Kind] = list(possible or (Kind.kmod, Kind.ebpf))
    if "kinds" in items:
        kinds = []
        for kind_node in _sequence(items["kinds"], f"{field}.kinds", errs):
            value = _scalar(kind_node, f"{field}.kinds", errs)
            if value is None:
                continue
            if value not in Kind.__members__:
                errs.add(kind_node, f"{field}.kinds", f"unknown kind {value!r} (known: kmod, ebpf)")
                continue
            if Kind(value) in kinds:
                errs.add(kind_node, f"{field}.kinds", f"{value!r} listed twice")
                continue
            if possible is not None and Kind(value) not in possible:
                errs.add(kind_node, f"{field}.kinds",
                         f"{recipe} {version} has no {value} (it builds: {', '.join(k.value for k in possible)}"
                         f"{'; ' + recipe_cls.kinds_note if recipe_cls.kinds_note else ''})")
                continue
            kinds.append(Kind(value))
        if not kinds:
            errs.add(items["kinds"], f"{field}.kinds", "give at least one kind")
    if name is None or version is None or source is None or not kinds:
        return None
    return Driver(name=name, version=version, source=source, recipe=recipe, kinds=tuple(kinds),
                  file=n.file, line=n.line)


class _Mirrors:
    """Mirror names for ``{mirror: NAME, path: ...}``: the main file's ``mirrors:`` map, then defaults.

    Defaults used are remembered (name -> URL) so the cached result is dropped when they change.
    """

    def __init__(self) -> None:
        self.given: dict[str, str] = {}
        self.defaults_used: dict[str, str] = {}

    def url(self, name: str) -> str | None:
        if name in self.given:
            return self.given[name]
        if name not in self.defaults_used:
            found = mirrors_mod.default(name)
            if found is None:
                return None
            self.defaults_used[name] = found
        return self.defaults_used[name]


def _parse_mirrors(n: _Node, errs: _Collector) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, node in (_mapping(n, "mirrors", errs) or {}).items():
        value = _scalar(node, f"mirrors.{name}", errs)
        if value is None:
            continue
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
            errs.add(node, f"mirrors.{name}", "a mirror name is lowercase letters, digits and . _ -", at_key=True)
        elif not re.match(r"(https?|file)://[^\s]+$", value):
            errs.add(node, f"mirrors.{name}", f"not an http(s):// or file:// URL: {value!r}")
        else:
            out[name] = value.rstrip("/")
    return out


def _parse_header(n: _Node, field: str, errs: _Collector, mirrors: _Mirrors | None = None) -> Header | None:
    url: str | None
    if isinstance(n.node, yaml.MappingNode):
        items = _mapping(n, field, errs) or {}
        if "mirror" in items or "path" in items:
            _check_fields(items, n, field, {"mirror", "path"}, {"sha256"}, errs)
            name = _scalar(items["mirror"], f"{field}.mirror", errs) if "mirror" in items else None
            path = _scalar(items["path"], f"{field}.path", errs) if "path" in items else None
            if name is None or path is None:
                return None
            base = (mirrors or _Mirrors()).url(name)
            if base is None:
                given = sorted({*(mirrors.given if mirrors else {}), *mirrors_mod.PUBLIC, "debian", "debian-security"})
                errs.add(items["mirror"], f"{field}.mirror", f"unknown mirror {name!r} (no URL for it): define it "
                         f"under mirrors: (names with a default: {', '.join(given)})")
                return None
            if path.startswith("/") or ".." in path.split("/") or re.search(r"\s", path):
                errs.add(items["path"], f"{field}.path", f"expected a path inside the mirror, found {path!r}")
                return None
            url = mirrors_mod.join(base, path)
        else:
            _check_fields(items, n, field, {"url"}, {"sha256"}, errs)
            url = _scalar(items["url"], f"{field}.url", errs) if "url" in items else None
        sha = _scalar(items["sha256"], f"{field}.sha256", errs) if "sha256" in items else None
        if sha is not None and not _SHA256.fullmatch(sha.lower()):
            errs.add(items["sha256"], f"{field}.sha256", "expected 64 hexadecimal digits")
            return None
    else:
        url, sha = _scalar(n, field, errs), None
    if url is None:
        return None
    if not _url_or_path(url):
        errs.add(n, field, f"not an http(s):// or file:// URL: {url!r}")
        return None
    return Header(url=url, sha256=sha.lower() if sha else None)


_KERNEL_REQUIRED = {"target", "kernelrelease", "kernelversion", "architecture", "headers"}
_KERNEL_OPTIONAL = {"kernelconfigdata", "builder", "image"}


def _needs_sources(items: dict[str, _Node]) -> bool:
    """A config-only kernel (bottlerocket, talos, ...): known by its kernelconfigdata, no headers."""
    target = items.get("target")
    family = distro.for_target(str(target.node.value)) if target and isinstance(target.node, yaml.ScalarNode) else None
    return bool(family and family.needs_sources)


def _parse_kernel(n: _Node, index: int, errs: _Collector, mirrors: _Mirrors | None = None) -> Kernel | None:
    field = f"kernels[{index}]"
    items = _mapping(n, field, errs)
    if items is None:
        return None
    config_only = _needs_sources(items)
    required = _KERNEL_REQUIRED - {"headers"} | {"kernelconfigdata"} if config_only else _KERNEL_REQUIRED
    _check_fields(items, n, field, required, _KERNEL_OPTIONAL | {"headers"}, errs)
    if not items.keys() >= required:
        return None
    before = len(errs.errors)
    target = _path_safe(items["target"], f"{field}.target", errs)
    if target is not None and distro.for_target(target) is None:
        errs.add(items["target"], f"{field}.target",
                 f"unknown target {target!r} (known: {', '.join(distro.known_targets())})")
    release = _path_safe(items["kernelrelease"], f"{field}.kernelrelease", errs)
    version = _path_safe(items["kernelversion"], f"{field}.kernelversion", errs)
    arch_raw = _scalar(items["architecture"], f"{field}.architecture", errs)
    arch = arch_mod.ALIASES.get(arch_raw or "")
    if arch_raw is not None and arch is None:
        errs.add(items["architecture"], f"{field}.architecture",
                 f"unknown architecture {arch_raw!r} (known: {', '.join(sorted(arch_mod.ALIASES))})")
    headers = []
    if "headers" in items:
        for i, h in enumerate(_sequence(items["headers"], f"{field}.headers", errs)):
            header = _parse_header(h, f"{field}.headers[{i}]", errs, mirrors)
            if header:
                headers.append(header)
        if not headers and not config_only and isinstance(items["headers"].node, yaml.SequenceNode):
            errs.add(items["headers"], f"{field}.headers", "give at least one headers URL")
    config_data = None
    if "kernelconfigdata" in items:
        config_data = _scalar(items["kernelconfigdata"], f"{field}.kernelconfigdata", errs)
        if config_data is not None:
            import base64
            import binascii

            try:
                base64.b64decode(config_data, validate=False)
            except binascii.Error as exc:
                errs.add(items["kernelconfigdata"], f"{field}.kernelconfigdata", f"not base64: {exc}")
    builder = _path_safe(items["builder"], f"{field}.builder", errs) if "builder" in items else None
    image = _parse_header(items["image"], f"{field}.image", errs, mirrors) if "image" in items else None
    if len(errs.errors) > before or None in (target, release, version, arch):
        return None
    assert target and release and version and arch
    return Kernel(target=target, kernelrelease=release, kernelversion=version, architecture=arch,
                  headers=tuple(headers), kernelconfigdata=config_data, builder=builder,
                  image=image, file=n.file, line=n.line)


def _parse_section(
    items: dict[str, _Node], key: str, errs: _Collector, fields: dict[str, Callable[[_Node, str], Any]],
) -> dict[str, Any]:
    if key not in items:
        return {}
    section = _mapping(items[key], key, errs)
    if section is None:
        return {}
    out: dict[str, Any] = {}
    for name, node in section.items():
        if name not in fields:
            errs.add(node, f"{key}.{name}", f"unknown field (allowed: {', '.join(sorted(fields))})", at_key=True)
            continue
        value = fields[name](node, f"{key}.{name}")
        if value is not None:
            out[name.replace("-", "_")] = value
    return out


_DURATION = re.compile(r"(\d+)\s*([smhd]?)")


def parse_duration(text: str) -> int | None:
    """Seconds of ``600``, ``30m``, ``2h``, ``3d`` (None when it is not one)."""
    m = _DURATION.fullmatch(text.strip())
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)] if m else None


def _duration(n: _Node, field: str, errs: _Collector) -> int | None:
    text = _scalar(n, field, errs)
    seconds = parse_duration(text or "")
    if seconds is None and text is not None:
        errs.add(n, field, f"expected a duration such as 600, 30m, 2h or 3d, found {text!r}")
    return seconds


def _memory(n: _Node, field: str, errs: _Collector) -> str | None:
    text = _scalar(n, field, errs)
    if text is not None and not re.fullmatch(r"\d+[bkmg]?", text.lower()):
        errs.add(n, field, f"expected a size such as 512m or 4g, found {text!r}")
        return None
    return text.lower() if text else None


def _globs(n: _Node, field: str, errs: _Collector, base: Path) -> tuple[str, ...]:
    values = [_scalar(x, field, errs) for x in _sequence(n, field, errs)]
    return tuple(str(base / v) if not os.path.isabs(v) else v for v in values if v)


def _relative_path(n: _Node, field: str, errs: _Collector, base: Path) -> str | None:
    value = _scalar(n, field, errs)
    return str(base / os.path.expanduser(value)) if value else None


def _read_text(path: Path, errs: _Collector) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        errs.add((str(path), 0), "", "no such file (give the matrix with -c/--config)")
    except (OSError, UnicodeDecodeError) as exc:
        errs.add((str(path), 0), "", f"cannot read: {exc}")
    return None


def _compose(path: Path, text: str, errs: _Collector) -> _Node | None:
    """The located slow path: PyYAML's node tree, every node with its line."""
    try:
        node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml if there
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        errs.add((str(path), line), "", f"malformed YAML: {exc.problem or exc.context}")
        return None
    except yaml.YAMLError as exc:
        errs.add((str(path), 0), "", f"malformed YAML: {exc}")
        return None
    if node is None:
        errs.add((str(path), 1), "", "the file is empty")
        return None
    return _Node(node, str(path))


@dataclass
class _Fast:
    """A file the fast path accepted whole (see :mod:`repogen.config_fast`)."""

    content: FastFile
    settings: dict[str, dict[str, Any]]


def _read_document(path: Path, errs: _Collector, *, is_main: bool) -> _Node | _Fast | None:
    """The file through the fast path when it is well-formed, else composed with line numbers."""
    text = _read_text(path, errs)
    if text is None:
        return None
    from repogen.recipes import known_recipes  # late: recipes import the build machinery

    fast = config_fast.load_file(path, text, is_main=is_main, architectures=arch_mod.ALIASES,
                                 known_recipes=known_recipes())
    if fast is not None:
        check = _Collector()
        settings = _parse_settings({key: _Node(_plain_node(value), str(path)) for key, value in fast.settings.items()},
                                   path.parent, check) if is_main else {}
        includes_match = all(glob.glob(str(path.parent / pattern)) for pattern in fast.includes)
        if not check.errors and includes_match:
            return _Fast(fast, settings)
    return _compose(path, text, errs)


def _plain_node(value: Any) -> yaml.Node:
    """A YAML node for plain data the fast path loaded, so the settings share the slow path's checks."""
    nowhere = yaml.Mark("", 0, -1, 0, None, None)  # only read for an error, and then the slow path runs
    if isinstance(value, dict):
        return yaml.MappingNode("tag:yaml.org,2002:map",
                                [(_plain_node(k), _plain_node(v)) for k, v in value.items()], nowhere, nowhere)
    if isinstance(value, list):
        return yaml.SequenceNode("tag:yaml.org,2002:seq", [_plain_node(v) for v in value], nowhere, nowhere)
    tag = "tag:yaml.org,2002:int" if type(value) is int else "tag:yaml.org,2002:str"  # as PyYAML tags them
    return yaml.ScalarNode(tag, str(value), nowhere, nowhere)


def _iter_files(root: Path, errs: _Collector, patterns: list[str]) -> Iterator[tuple[Path, _Node | _Fast]]:
    """The main file, then each file its ``include:`` globs name (sorted), each once."""
    main = _read_document(root, errs, is_main=True)
    if main is None:
        return
    yield root, main
    includes: list[tuple[str, _Node | None]] = []
    if isinstance(main, _Fast):
        includes = [(pattern, None) for pattern in main.content.includes]
    else:
        items = _mapping(main, "", _Collector()) or {}  # parse() reports this mapping's own errors
        for pattern_node in _sequence(items["include"], "include", errs) if "include" in items else []:
            pattern = _scalar(pattern_node, "include", errs)
            if pattern is not None:
                includes.append((pattern, pattern_node))
    seen = {root.resolve()}
    for pattern, located in includes:
        patterns.append(pattern)
        matches = sorted(glob.glob(str(root.parent / pattern)))
        if not matches and located is not None:
            errs.add(located, "include", f"{pattern!r} matches no file")
        for match in matches:
            path = Path(match)
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            document = _read_document(path, errs, is_main=False)
            if document is not None:
                yield path, document


def _expand(root: Path, patterns: tuple[str, ...]) -> list[str]:
    files = [str(root)]
    for pattern in patterns:
        files.extend(m for m in sorted(glob.glob(str(root.parent / pattern))) if m not in files)
    return files


def parse(path: Path, *, naming_rules: bool = True) -> Config:
    """Parse and validate without any cache; raises :class:`ConfigErrors` listing every problem.

    ``naming_rules``: also check each entry against its distribution's naming rule (the warnings
    `validate` prints; a tenth of a cold parse of 10,000 kernels, and no other command shows them).
    """
    errs = _Collector()
    drivers: list[Driver] = []
    kernels: list[Kernel] = []
    files: list[str] = []
    settings: dict[str, dict[str, Any]] = {}
    first_kernel_line: dict[tuple[str, str, str, str], tuple[str, int]] = {}
    first_driver_line: dict[tuple[str, str], tuple[str, int]] = {}
    patterns: list[str] = []
    mirrors = _Mirrors()
    warnings: list[str] = []

    def add_driver(driver: Driver, field: str) -> None:
        driver_key = (driver.name, driver.version)
        if driver_key in first_driver_line:
            f, line = first_driver_line[driver_key]
            errs.add((driver.file, driver.line), field, f"duplicate driver {driver.name} {driver.version} "
                     f"(first at {f}:{line})")
            return
        first_driver_line[driver_key] = (driver.file, driver.line)
        drivers.append(driver)

    families: dict[str, Any] = {}

    def add_kernel(kernel: Kernel, field: str) -> None:
        if naming_rules:
            family = families.get(kernel.target, False)
            if family is False:
                family = families[kernel.target] = distro.for_target(kernel.target)
            for problem in family.rule_problems(kernel) if family else ():
                warnings.append(f"{kernel.file}:{kernel.line}: {field}: {problem}")
        if kernel.ident in first_kernel_line:
            f, line = first_kernel_line[kernel.ident]
            errs.add((kernel.file, kernel.line), field, f"duplicate kernel {kernel.label} (first at {f}:{line})")
            return
        first_kernel_line[kernel.ident] = (kernel.file, kernel.line)
        kernels.append(kernel)

    for file_path, document in _iter_files(path, errs, patterns):
        files.append(str(file_path))
        base = file_path.parent
        is_main = file_path == path
        if isinstance(document, _Fast):
            for i, checked_driver in enumerate(document.content.drivers):
                add_driver(checked_driver, f"drivers[{i}]")
            for i, checked_kernel in enumerate(document.content.kernels):
                add_kernel(checked_kernel, f"kernels[{i}]")
            if is_main:
                settings = document.settings
            continue
        items = _mapping(document, "", errs)
        if items is None:
            continue
        main_only = {"include", "build", "packages", "signing", "mirrors", "cache"}
        allowed = {"drivers", "kernels"} | (main_only if is_main else set())
        if is_main and "mirrors" in items:
            mirrors.given = _parse_mirrors(items["mirrors"], errs)
        for key, node in items.items():
            if key not in allowed:
                errs.add(node, key, f"unknown top-level field (allowed here: {', '.join(sorted(allowed))})",
                         at_key=True)
        for i, d in enumerate(_sequence(items["drivers"], "drivers", errs) if "drivers" in items else []):
            driver = _parse_driver(d, i, base, errs)
            if driver is not None:
                add_driver(driver, f"drivers[{i}]")
        for i, k in enumerate(_sequence(items["kernels"], "kernels", errs) if "kernels" in items else []):
            kernel = _parse_kernel(k, i, errs, mirrors)
            if kernel is not None:
                add_kernel(kernel, f"kernels[{i}]")
        if is_main:
            settings = _parse_settings(items, base, errs)
    packages_given = bool(settings.get("packages", {}).get("deb") or settings.get("packages", {}).get("rpm"))
    if not errs.errors and not drivers and not packages_given:
        # A packages-only tree (just Falco's APT and RPM repositories) is fine; an empty one is a mistake.
        errs.add((str(path), 1), "drivers", "no driver is defined (and no packages: deb/rpm to publish)")
    if errs.errors:
        raise ConfigErrors(errs.errors)
    build = settings.get("build", {})
    limits = BuildLimits(
        timeout_seconds=build.get("timeout", BuildLimits.timeout_seconds),
        memory=build.get("memory", BuildLimits.memory),
        pids=build.get("pids", BuildLimits.pids),
    )
    packages = dict(settings.get("packages", {}))
    if "grace_period" in packages:
        packages["grace_seconds"] = packages.pop("grace_period")
    return Config(files=tuple(files), includes=tuple(patterns), drivers=tuple(drivers), kernels=tuple(kernels),
                  limits=limits, warnings=tuple(warnings), mirrors=tuple(sorted(mirrors.given.items())),
                  mirror_defaults=tuple(sorted(mirrors.defaults_used.items())),
                  packages=PackagesConfig(**packages), signing=SigningConfig(**settings.get("signing", {})),
                  cache=settings.get("cache", {}).get("url"))


def _cache_url(n: _Node, field: str, errs: _Collector) -> str | None:
    from repogen.s3 import parse_url

    value = _scalar(n, field, errs)
    if value is None:
        return None
    try:
        return str(parse_url(value))
    except ValueError as exc:
        errs.add(n, field, str(exc))
        return None


def _parse_settings(items: dict[str, _Node], base: Path, errs: _Collector) -> dict[str, dict[str, Any]]:
    """The main file's build, packages and signing sections."""
    return {
        "build": _parse_section(items, "build", errs, {
            "timeout": lambda n, f: _duration(n, f, errs),
            "memory": lambda n, f: _memory(n, f, errs),
            "pids": lambda n, f: _int(n, f, errs, minimum=16),
        }),
        "packages": _parse_section(items, "packages", errs, {
            "deb": functools.partial(_globs, errs=errs, base=base),
            "rpm": functools.partial(_globs, errs=errs, base=base),
            "suite": lambda n, f: _path_safe(n, f, errs),
            "component": lambda n, f: _path_safe(n, f, errs),
            "origin": lambda n, f: _scalar(n, f, errs),
            "label": lambda n, f: _scalar(n, f, errs),
            "keep-versions": lambda n, f: _int(n, f, errs, minimum=1),
            "valid-until-days": lambda n, f: _int(n, f, errs, minimum=1),
            "grace-period": lambda n, f: _duration(n, f, errs),
            "rpm-compression": lambda n, f: _choice(n, f, errs, ("gz", "zstd")),
            "base-url": lambda n, f: _scalar(n, f, errs),
        }),
        **({"cache": {"url": _cache_url(items["cache"], "cache", errs)}} if "cache" in items else {}),
        "signing": _parse_section(items, "signing", errs, {
            "key": lambda n, f: _scalar(n, f, errs),
            "key-file": functools.partial(_relative_path, errs=errs, base=base),
            "homedir": functools.partial(_relative_path, errs=errs, base=base),
            "passphrase-env": lambda n, f: _scalar(n, f, errs),
        }),
    }


def _choice(n: _Node, field: str, errs: _Collector, choices: tuple[str, ...]) -> str | None:
    value = _scalar(n, field, errs)
    if value is not None and value not in choices:
        errs.add(n, field, f"expected one of {', '.join(choices)}, found {value!r}")
        return None
    return value


def _digest_files(paths: list[str]) -> str | None:
    h = hashlib.sha256(__version__.encode())
    for p in paths:
        try:
            data = Path(p).read_bytes()
        except OSError:
            return None
        h.update(p.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


# What the cache stores is the validated Config as JSON (a data format: loading it runs no code),
# decoded by this table of nested records; the model's field names are part of the cache key.
_NESTED: dict[type, dict[str, Any]] = {
    Config: {"drivers": Driver, "kernels": Kernel, "limits": BuildLimits, "packages": PackagesConfig,
             "signing": SigningConfig},
    Driver: {"source": Source, "kinds": Kind},
    Kernel: {"headers": Header, "image": Header},
}
_CACHE_SCHEMA = hashlib.sha256(repr(["kernel rows", *[(cls.__name__, [f.name for f in dataclasses.fields(cls)])
                                     for cls in (Config, Driver, Source, Kernel, Header, BuildLimits,
                                                 PackagesConfig, SigningConfig)]]).encode()).hexdigest()
# The kernels (nearly all of a big matrix) go as rows of their fields in order, headers as [url, sha256]:
# dataclasses.asdict and the generic decoder cost more than parsing the YAML again.
_KERNEL_FIELDS = [f.name for f in dataclasses.fields(Kernel)]
_kernel_values = operator.attrgetter(*_KERNEL_FIELDS)
_HEADERS_AT = _KERNEL_FIELDS.index("headers")
_IMAGE_AT = _KERNEL_FIELDS.index("image")


def _kernel_row(kernel: Kernel) -> list[Any]:
    row = list(_kernel_values(kernel))
    row[_HEADERS_AT] = [(h.url, h.sha256) for h in kernel.headers]
    if kernel.image is not None:
        row[_IMAGE_AT] = (kernel.image.url, kernel.image.sha256)
    return row


def _kernel_from_row(row: list[Any]) -> Kernel:
    if len(row) != len(_KERNEL_FIELDS):
        raise ValueError("kernel row of another shape")
    row[_HEADERS_AT] = tuple(Header(url, sha) for url, sha in row[_HEADERS_AT])
    if row[_IMAGE_AT] is not None:
        row[_IMAGE_AT] = Header(*row[_IMAGE_AT])
    return Kernel(*row)


def _encode(config: Config) -> dict[str, Any]:
    data = dataclasses.asdict(dataclasses.replace(config, kernels=()))
    data["kernels"] = [_kernel_row(k) for k in config.kernels]
    return data


def _decode_config(data: dict[str, Any]) -> Config:
    rows = data["kernels"]
    data["kernels"] = []
    return dataclasses.replace(_decode(Config, data), kernels=tuple(_kernel_from_row(row) for row in rows))


def _decode(cls: Any, data: dict[str, Any]) -> Any:
    nested = _NESTED.get(cls, {})
    values: dict[str, Any] = {}
    for key, value in data.items():
        inner = nested.get(key)
        if isinstance(value, list):
            value = _tuples(value) if inner is None else tuple(inner(v) if inner is Kind else _decode(inner, v)
                                                                for v in value)
        elif isinstance(value, dict) and inner is not None:
            value = _decode(inner, value)
        values[key] = value
    return cls(**values)


def _tuples(value: list[Any]) -> tuple[Any, ...]:
    return tuple(_tuples(v) if isinstance(v, list) else v for v in value)


def _source_paths(config: Config) -> list[str]:
    """Paths the validation checked exist: they may be gone when the YAML files are not."""
    return [d.source.path for d in config.drivers if d.source.path]


def load(path: Path, cache_dir: Path | None = None) -> Config:
    """Load the matrix, from the validated cache when no file it was read from has changed and every
    ``source.path`` it names still exists (else parse again: errors then name file and line).

    The naming rules are not checked here (`validate` parses to report their warnings).
    """
    path = Path(path)
    if cache_dir is None:
        return parse(path, naming_rules=False)
    absolute = Path(os.path.abspath(path))
    index_file = cache_dir / (hashlib.sha256(str(absolute).encode()).hexdigest()[:32] + ".json")
    try:
        cached = json.loads(index_file.read_bytes())
        # Re-expand the include globs so a file added to kernels.d/ is noticed; a changed main
        # file (and so changed globs) shows in the digest.
        if (cached["schema"] == _CACHE_SCHEMA
                and cached["files"] == _expand(absolute, tuple(cached["config"]["includes"]))
                and _digest_files(cached["files"]) == cached["digest"]
                and all(os.path.exists(p) for p in cached["paths"])):
            config = _decode_config(cached["config"])
            if all(mirrors_mod.default(name) == url for name, url in config.mirror_defaults):
                return config
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    config = parse(path, naming_rules=False)
    files = [os.path.abspath(f) for f in config.files]
    digest = _digest_files(files)
    if digest is not None:
        import orjson  # the same JSON as the json module's, written in a fifth of the time

        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = index_file.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(orjson.dumps({"schema": _CACHE_SCHEMA, "files": files, "digest": digest,
                                          "paths": _source_paths(config), "config": _encode(config)}))
            tmp.replace(index_file)
        except OSError:
            pass
    return config
