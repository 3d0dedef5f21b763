"""The fast path of config parsing: plain data from a C-speed YAML parser, checked entry by entry.

PyYAML's composer (needed for the line and field of each error) costs about 0.3 ms per kernel, 3 s
for a 10,000-kernel matrix: the common case, a well-formed file in a pull request, paid it in full.
Here a file is loaded by ``yaml_rs`` (Rust, ~20x faster) into plain data and every entry is checked
with the same rules as :mod:`repogen.config`. The fast path only ever *accepts*: anything it does not
recognise as well-formed and unambiguous (a wrong value, a number, a null, a flow-style list of
kernels, a merge key, an include that matches nothing) makes :func:`load_file` return None, and the
caller parses that file with the located slow path, which reports every error with file, line and
field exactly as before.

Line numbers of drivers and kernels (kept in the model for later messages) come from a cheap line
map: the lines starting each item of the block sequence, checked against the item count and each
item's first key; when the map does not fit, the file goes to the slow path.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repogen import distro
from repogen.model import Driver, Header, Kernel, Kind, Source

#: The parser module, imported on first use (a warm config cache never needs it); None switches the
#: fast path off (tests and the benchmark's baseline do), as does a missing ``yaml_rs``.
yaml_rs: Any = True


def _parser() -> Any:
    global yaml_rs
    if yaml_rs is True:
        try:
            import yaml_rs as module

            yaml_rs = module
        except ImportError:  # pragma: no cover - yaml_rs is a declared dependency
            yaml_rs = None
    return yaml_rs

_PATH_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]*")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_URL = re.compile(r"(https?|file)://\S+$")
_URL_LINE = re.compile(r"(?:https?|file)://\S+")
# Plain scalars that PyYAML (YAML 1.1) reads as a boolean, number or date while YAML 1.2 reads text:
# yaml_rs cannot say whether such a value was quoted, and the slow path refuses it unquoted.
_YAML11_ONLY = re.compile(r"^(?:yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF|[-+]?0b[0-1_]+"
                          r"|[-+]?[0-9][0-9_]*_[0-9_]*(?:\.[0-9_]*)?|[-+]?[0-9_]*\.[0-9_]*_[0-9_]*"
                          r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}.*)$",
                          re.MULTILINE)
# Merge keys and tags are resolved differently by YAML 1.1 (PyYAML) and 1.2 (yaml_rs): slow path.
_AMBIGUOUS = re.compile(r"<<\s*:|(?:^|[\s\[{,:-])!")
_KERNEL_REQUIRED = frozenset({"target", "kernelrelease", "kernelversion", "architecture", "headers"})
_KERNEL_FIELDS = _KERNEL_REQUIRED | {"kernelconfigdata", "builder", "image"}
_DRIVER_REQUIRED = frozenset({"name", "version", "source"})
_DRIVER_FIELDS = _DRIVER_REQUIRED | {"recipe", "kinds"}
_MAIN_KEYS = frozenset({"drivers", "kernels", "include", "build", "packages", "signing", "cache"})
_INCLUDED_KEYS = frozenset({"drivers", "kernels"})
_SETTINGS = ("build", "packages", "signing")


@dataclass
class FastFile:
    """One file's validated content, with the line each driver and kernel starts on."""

    path: str
    drivers: list[Driver] = field(default_factory=list)
    kernels: list[Kernel] = field(default_factory=list)
    includes: list[str] = field(default_factory=list)
    #: Raw settings sections (build/packages/signing) of the main file, checked by the caller.
    settings: dict[str, Any] = field(default_factory=dict)
    text: str = ""


def load_file(path: Path, text: str, *, is_main: bool, architectures: dict[str, str],
              known_recipes: list[str]) -> FastFile | None:
    """The file's drivers and kernels when every entry is well-formed; None for the slow path."""
    parser = _parser()
    if parser is None or (("!" in text or "<<" in text) and _AMBIGUOUS.search(text)):
        return None
    try:
        data = parser.loads(text, parse_datetime=False)
    except Exception:  # any parse problem is reported, located, by the slow path
        return None
    if type(data) is not dict or not data.keys() <= (_MAIN_KEYS if is_main else _INCLUDED_KEYS):
        return None
    out = FastFile(path=str(path), text=text)
    drivers = data.get("drivers", [])
    kernels = data.get("kernels", [])
    if type(drivers) is not list or type(kernels) is not list:
        return None
    driver_lines = _item_lines(text, "drivers", drivers) if drivers else []
    kernel_lines = _item_lines(text, "kernels", kernels) if kernels else []
    if driver_lines is None or kernel_lines is None:
        return None
    base = path.parent
    for item, line in zip(drivers, driver_lines, strict=True):
        driver = _driver(item, base, known_recipes, out.path, line)
        if driver is None:
            return None
        out.drivers.append(driver)
    found = _kernels(kernels, kernel_lines, architectures, out.path)
    if found is None:
        return None
    out.kernels = found
    if "include" in data:
        includes = data["include"]
        if type(includes) is not list or any(type(p) is not str or not p for p in includes):
            return None
        out.includes = includes
    if "cache" in data:
        if type(data["cache"]) is not str or _YAML11_ONLY.search(data["cache"]):
            return None
        out.settings["cache"] = data["cache"]  # checked by the caller, as the sections are
    for key in _SETTINGS:
        if key in data:
            section = _plain_settings(data[key], key, text)
            if section is None:
                return None
            out.settings[key] = section
    return out


def _safe(value: object) -> bool:
    return type(value) is str and _PATH_SAFE.fullmatch(value) is not None and ".." not in value


def _header(value: object) -> Header | None:
    if type(value) is str:
        return Header(value) if _URL.match(value) else None
    if type(value) is not dict:
        return None
    url, sha = value.get("url"), value.get("sha256")
    if len(value) != (1 if sha is None else 2) or type(url) is not str or not _URL.match(url):
        return None  # extra keys, a null sha256, no url
    if sha is None:
        return Header(url)
    if type(sha) is not str or not _SHA256.fullmatch(sha):
        return None
    return Header(url, sha.lower())


def _kernels(items: list[Any], lines: list[int], architectures: dict[str, str], file: str) -> list[Kernel] | None:
    """Every kernel entry, or None if any is not plainly well-formed.

    Per entry only the structure is looked at; the strings are then checked in a few batches (one
    regular expression over all of them joined by newlines), which is what makes this path cheap.
    """
    safe: list[str] = []
    urls: list[str] = []
    shas: list[str] = []
    kernels: list[Kernel] = []
    targets: dict[str, bool] = {}
    try:
        for item, line in zip(items, lines, strict=True):
            keys = item.keys()
            if not _KERNEL_REQUIRED <= keys <= _KERNEL_FIELDS:
                return None
            target = item["target"]
            known = targets.get(target)
            if known is None:
                family = distro.for_target(target) if type(target) is str else None
                # Config-only targets (no headers, kernelconfigdata required) take the slow path.
                known = targets[target] = family is not None and not family.needs_sources
            arch = architectures.get(item["architecture"])
            raw_headers = item["headers"]
            if not known or arch is None or type(raw_headers) is not list or not raw_headers:
                return None
            headers = []
            for raw in raw_headers:
                if type(raw) is str:
                    urls.append(raw)
                    headers.append(Header(raw))
                    continue
                url, sha = raw["url"], raw.get("sha256")
                if len(raw) != (1 if sha is None else 2):
                    return None  # an unknown key, or a null sha256
                urls.append(url)
                if sha is None:
                    headers.append(Header(url))
                else:
                    shas.append(sha)
                    headers.append(Header(url, sha.lower()))
            release, version = item["kernelrelease"], item["kernelversion"]
            safe += (target, release, version)
            config_data = builder = image = None
            if len(keys) > 5:
                config_data = item.get("kernelconfigdata")
                if config_data is not None:
                    base64.b64decode(config_data, validate=False)
                builder = item.get("builder")
                if builder is not None:
                    safe.append(builder)
                if "image" in item:
                    image = _header(item["image"])
                    if image is None:
                        return None
            # Positional: ten keyword arguments cost twice the call (10,000 kernels).
            kernels.append(Kernel(target, release, version, arch, tuple(headers), config_data, builder, image, file,
                                  line))
        if not (_all_match(_PATH_SAFE, safe) and _all_match(_URL_LINE, urls) and _all_match(_SHA256, shas)):
            return None
        if _YAML11_ONLY.search("\n".join(safe)):
            return None
    except (TypeError, AttributeError, KeyError, ValueError, binascii.Error):
        return None  # a value of the wrong type somewhere: the slow path says where
    return kernels


def _all_match(pattern: re.Pattern[str], values: list[str]) -> bool:
    """Every value is a string matching ``pattern`` whole (one regular expression call for all)."""
    if not values:
        return True
    joined = "\n".join(values)  # TypeError for a value that is not a string
    if joined.count("\n") != len(values) - 1 or (".." in joined and pattern is _PATH_SAFE):
        return False
    return re.fullmatch(f"(?:{pattern.pattern})(?:\n(?:{pattern.pattern}))*", joined) is not None


def _driver(item: object, base: Path, known_recipes: list[str], file: str, line: int) -> Driver | None:
    if type(item) is not dict or not _DRIVER_REQUIRED <= item.keys() <= _DRIVER_FIELDS:
        return None
    name, version, source = item["name"], item["version"], item["source"]
    if not (_safe(name) and _safe(version)) or type(source) is not dict or _YAML11_ONLY.search(f"{name}\n{version}"):
        return None
    if not source.keys() <= {"url", "path", "sha256"} or ("url" in source) == ("path" in source):
        return None
    url, path, sha = source.get("url"), source.get("path"), source.get("sha256")
    if any(v is not None and (type(v) is not str or not v) for v in (url, path, sha)):
        return None
    if url is not None and not _URL.match(url):
        return None
    if sha is not None and not _SHA256.fullmatch(sha):
        return None
    if path is not None:
        path = str((base / path).resolve())
        if not Path(path).exists():
            return None
    recipe = item.get("recipe", "falcosecurity-libs")
    if type(recipe) is not str or recipe not in known_recipes:
        return None
    from repogen.recipes import get as get_recipe

    possible = get_recipe(recipe).kinds_for(version)  # e.g. libs 10.x has no legacy probe
    kinds_raw = item.get("kinds", [k.value for k in possible or (Kind.kmod, Kind.ebpf)])
    if (type(kinds_raw) is not list or not kinds_raw
            or any(type(k) is not str or k not in Kind.__members__ for k in kinds_raw)
            or len(set(kinds_raw)) != len(kinds_raw)
            or (possible is not None and not set(kinds_raw) <= {k.value for k in possible})):
        return None  # the located slow path says what is wrong
    return Driver(name=name, version=version,
                  source=Source(url=url, path=path, sha256=sha.lower() if sha else None),
                  recipe=recipe, kinds=tuple(Kind(k) for k in kinds_raw), file=file, line=line)


def _plain_settings(section: object, key: str, text: str) -> dict[str, Any] | None:
    """A settings mapping of strings (and whole numbers spelled in decimal), else None."""
    if type(section) is not dict:
        return None
    for name, value in section.items():
        if type(name) is not str:
            return None
        values = value if type(value) is list else [value]
        for v in values:
            if type(v) is int:
                # YAML 1.2 reads 0x10, 0o7, +5 and 007 as numbers; PyYAML's text is what the slow
                # path checks: accept a number only where its decimal spelling is in the file.
                if not re.search(rf"{re.escape(name)}['\"]?\s*:\s*{v}\b(?![.\w])", text):
                    return None
            elif type(v) is not str or _YAML11_ONLY.search(v):
                return None
        if type(value) is list and name not in ("deb", "rpm"):
            return None
    return section


def _item_lines(text: str, key: str, items: list[Any]) -> list[int] | None:
    """1-based line of each item of the top-level block sequence ``key:``; None when unsure.

    The items are the dashes at the column of the section's first dash (deeper ones belong to
    nested lists). They must be as many as the parser found, each written ``- <first key>:`` on its
    line; any other layout (flow style, a bare ``-``) is left to the slow path. (Patterns anchor on
    a newline, not on ``^``: ten times faster over megabytes.)
    """
    padded = "\n" + text
    header = re.compile(rf"\n{re.escape(key)}[ \t]*:[ \t]*(?:#[^\n]*)?(?=\n|$)").search(padded)
    if header is None:
        return None
    start = header.end()
    following = _TOP_LEVEL.search(padded, start)
    end = following.start() if following is not None else len(padded)
    first_dash = _DASH.search(padded, start, end)
    if first_dash is None:
        return None
    indent = len(first_dash.group(1))
    dashes = re.compile(rf"\n {{{indent}}}-(?=\s)").finditer(padded, start, end)
    lines: list[int] = []
    line = padded.count("\n", 0, start)
    previous = start
    offset = 1 + indent + 2
    for dash, item in zip(dashes, items, strict=False):
        first = next(iter(item))
        at = dash.start() + offset
        if (padded[at - 1] != " " or not padded.startswith(first, at)
                or padded[at + len(first):at + len(first) + 1] != ":"):
            return None
        line += padded.count("\n", previous, dash.start() + 1)
        previous = dash.start() + 1
        lines.append(line)
    if len(lines) != len(items) or next(dashes, None) is not None:
        return None
    return lines


_TOP_LEVEL = re.compile(r"\n[^\s#-]")
_DASH = re.compile(r"\n( *)-(?=\s)")
