"""Import kernel-crawler's JSON (``{distro: [{kernelversion, kernelrelease, target, headers,
kernelconfigdata}]}``), so users of the current grid switch in one command."""

from __future__ import annotations

import json
from pathlib import Path

from repogen import distro
from repogen.crawl import Found, TargetResult
from repogen.errors import RepogenError


def load(path: Path, architecture: str) -> TargetResult:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RepogenError(f"{path}: not kernel-crawler JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RepogenError(f"{path}: not kernel-crawler JSON: expected an object of distributions")
    result = TargetResult(f"kernel-crawler:{path.name}", [])
    for group, entries in data.items():
        if not isinstance(entries, list):
            raise RepogenError(f"{path}: {group}: expected a list of kernels")
        for i, e in enumerate(entries):
            where = f"{path}: {group}[{i}]"
            if not isinstance(e, dict) or not all(k in e for k in ("target", "kernelrelease", "kernelversion")):
                raise RepogenError(f"{where}: expected target, kernelrelease and kernelversion")
            target = str(e["target"])
            family = distro.for_target(target)
            headers = e.get("headers") or []
            if family is None:
                result.warnings.append(f"{where}: target {target!r} is not known to repogen: left out")
                continue
            if not isinstance(headers, list) or not all(isinstance(h, str) for h in headers):
                raise RepogenError(f"{where}: headers: expected a list of URLs")
            if not headers and not family.needs_sources:
                result.warnings.append(f"{where}: {target} {e['kernelrelease']} has no headers: left out")
                continue
            config = e.get("kernelconfigdata") or None
            result.found.append(Found(target, str(e["kernelrelease"]), str(e["kernelversion"]), architecture,
                                      tuple(headers), kernelconfigdata=str(config) if config else None,
                                      note=f"kernel-crawler {group}"))
    return result
