"""Write kernels.yaml files for tests and benchmarks (one place, so both speak the same format)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any


def kernels_yaml(kernels: list[dict[str, Any]]) -> str:
    """A ``kernels:`` section; each header is a URL string or ``{url, sha256}``."""
    lines = ["kernels:"]
    for k in kernels:
        lines += [f"  - target: {k['target']}", f"    kernelrelease: {k['kernelrelease']}",
                  f"    kernelversion: \"{k['kernelversion']}\"", f"    architecture: {k['architecture']}",
                  "    headers:"]
        for h in k["headers"]:
            if isinstance(h, str):
                lines.append(f"      - {h}")
                continue
            lines.append(f"      - url: {h['url']}")
            if h.get("sha256"):
                lines.append(f"        sha256: {h['sha256']}")
        if k.get("image"):
            lines.append(f"    image: {{url: {k['image']['url']}, sha256: {k['image']['sha256']}}}")
    return "\n".join(lines) + "\n"


def driver_yaml(name: str, version: str, path: Path, recipe: str, kinds: str = "[kmod, ebpf]") -> str:
    return textwrap.dedent(f"""\
        - name: {name}
          version: {version}
          source: {{path: {path}}}
          recipe: {recipe}
          kinds: {kinds}
    """)


def write_config(directory: Path, drivers: list[str], kernels: list[dict[str, Any]], extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    body = "drivers:\n" + "".join(textwrap.indent(d, "  ") for d in drivers) + kernels_yaml(kernels) + extra
    path = directory / "kernels.yaml"
    path.write_text(body)
    return path
