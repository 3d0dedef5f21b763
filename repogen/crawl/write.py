"""Merge crawled kernels into kernels.yaml as a reviewable diff: new entries appended as text.

The files are never round-tripped through a YAML dumper: every byte of what is there (comments, order,
hand-made entries, quoting) stays, and the new entries are inserted after the last entry of the file's
``kernels:`` list, so a pull request shows only what is new. Nothing is ever removed: a target whose
mirror failed keeps its previous entries.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from repogen import config as config_mod
from repogen.crawl import Found, MirrorFile
from repogen.errors import ConfigErrors, RepogenError
from repogen.model import Config

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/+~-]*")


def _value(text: str) -> str:
    """A YAML scalar: plain when unambiguous, else a JSON (= YAML double-quoted) string."""
    if _PLAIN.fullmatch(text) and not re.fullmatch(r"[0-9.+-]+|true|false|yes|no|on|off|null|~", text, re.I):
        return text
    return json.dumps(text)


def _file(f: MirrorFile | str) -> str:
    if isinstance(f, str):
        return _value(f)
    parts = [f"mirror: {_value(f.mirror)}", f"path: {_value(f.path)}"]
    if f.sha256:
        parts.append(f"sha256: {f.sha256}")
    return "{" + ", ".join(parts) + "}"


def render(found: list[Found], indent: int = 2) -> str:
    """The entries as ``kernels:`` list items, dash at column ``indent``."""
    pad, lines = " " * indent, []
    for k in found:
        note = f"  # {k.note}" if k.note else ""
        lines += [f"{pad}- target: {_value(k.target)}{note}",
                  f"{pad}  kernelrelease: {_value(k.kernelrelease)}",
                  f"{pad}  kernelversion: {json.dumps(k.kernelversion)}",
                  f"{pad}  architecture: {k.architecture}"]
        if k.headers:
            lines.append(f"{pad}  headers:")
            lines += [f"{pad}    - {_file(h)}" for h in k.headers]
        if k.image is not None:
            lines.append(f"{pad}  image: {_file(k.image)}")
        if k.kernelconfigdata:
            lines.append(f"{pad}  kernelconfigdata: {json.dumps(k.kernelconfigdata)}")
    return "\n".join(lines) + "\n" if lines else ""


def _last_leaf_end(node: yaml.Node) -> int:
    """Where the text of a block node's last value ends (comments after it are not part of it)."""
    while True:
        if isinstance(node, yaml.MappingNode) and node.value and not node.flow_style:
            node = node.value[-1][1]
        elif isinstance(node, yaml.SequenceNode) and node.value and not node.flow_style:
            node = node.value[-1]
        else:
            return int(node.end_mark.index)


def insert_entries(text: str, found: list[Found], where: str) -> str:
    """``text`` with the entries added at the end of its ``kernels:`` list (or a new one at the end)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise RepogenError(f"{where}: malformed YAML: {exc}") from None
    if root is None:
        return text + ("" if not text or text.endswith("\n") else "\n") + "kernels:\n" + render(found)
    if not isinstance(root, yaml.MappingNode):
        raise RepogenError(f"{where}: expected a mapping at the top")
    kernels = next(((k, v) for k, v in root.value if k.value == "kernels"), None)
    if kernels is None:
        return text + ("" if text.endswith("\n") else "\n") + "kernels:\n" + render(found)
    key, value = kernels
    if isinstance(value, yaml.SequenceNode) and value.flow_style and not value.value:  # kernels: []
        text = text[:value.start_mark.index].rstrip(" ") + text[value.end_mark.index:]
        return insert_entries(text, found, where)
    if isinstance(value, yaml.SequenceNode) and value.flow_style:
        raise RepogenError(f"{where}:{value.start_mark.line + 1}: kernels: write it as a block list "
                           "(one '- target: ...' per entry) so new entries can be appended")
    if isinstance(value, yaml.SequenceNode) and value.value:
        indent = max(value.value[0].start_mark.column - 2, 0)
        end = _last_leaf_end(value)
    elif isinstance(value, yaml.ScalarNode) and value.tag == "tag:yaml.org,2002:null":
        indent, end = 2, int(key.end_mark.index)
    else:
        raise RepogenError(f"{where}:{value.start_mark.line + 1}: kernels: expected a list")
    newline = text.find("\n", end)
    if newline == -1:
        return text + "\n" + render(found, indent)
    return text[:newline + 1] + render(found, indent) + text[newline + 1:]


@dataclass
class Written:
    file: Path
    entries: int


def destination(config: Config, config_path: Path, target: str) -> Path:
    """``kernels.d/<target>.yaml`` when the matrix includes it (or could), else the main file."""
    main = Path(config_path)
    for f in config.files[1:]:
        if Path(f).stem == target:
            return Path(f)
    candidate = f"kernels.d/{target}.yaml"
    if any(fnmatch.fnmatch(candidate, pattern) for pattern in config.includes):
        return main.parent / candidate
    return main


def merge(config: Config, config_path: Path, found: list[Found]) -> list[Written]:
    """Append the entries the matrix does not have yet; each file written atomically."""
    existing = {k.ident for k in config.kernels}
    new = [f for f in found if f.ident not in existing]
    by_file: dict[Path, list[Found]] = {}
    for f in new:
        by_file.setdefault(destination(config, config_path, f.target), []).append(f)
    originals: dict[Path, str | None] = {}
    updated: dict[Path, str] = {}
    for path, entries in by_file.items():
        originals[path] = path.read_text(encoding="utf-8") if path.exists() else None
        text = originals[path] or f"# Kernels found by `repogen crawl {entries[0].target} --write`.\n"
        updated[path] = insert_entries(text, entries, str(path))
    for path, text in updated.items():
        _replace(path, text)
    try:  # the result must validate; if not, every file goes back to what it was
        config_mod.parse(config_path)
    except ConfigErrors as exc:
        for path, original in originals.items():
            if original is None:
                path.unlink(missing_ok=True)
            else:
                _replace(path, original)
        raise RepogenError(f"the merged matrix would not validate, nothing written:\n{exc}") from None
    return [Written(path, len(entries)) for path, entries in by_file.items()]


def _replace(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
