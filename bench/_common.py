"""Shared helpers for the build-pipeline benchmarks: local servers, the headers mirror, running repogen."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.matrixfiles import driver_yaml, kernels_yaml, write_config  # noqa: E402  (shared with the tests)

__all__ = ["driver_yaml", "kernels_yaml", "write_config"]

EXAMPLES = ROOT / "examples" / "drivers"
HELLO_KBUILD = EXAMPLES / "hello-kbuild"
LIBS_MINI = EXAMPLES / "falco-libs-mini"
CACHE = Path(os.environ.get("REPOGEN_TEST_CACHE", Path.home() / ".cache" / "repogen-tests"))
MIRROR = CACHE / "mirror"


def builder_image(toolchain: str = "gcc12") -> str:
    """The id of a toolchain's builder image (images are tagged by content: ask repogen which)."""
    sys.path.insert(0, str(ROOT))
    from repogen import container, images

    found = images.resolve_ids(container.connect()).get(toolchain)
    if not found:
        raise SystemExit(f"builder image {toolchain} not found (or Docker is not running): "
                         f"run scripts/setup.sh or `repogen images build {toolchain}`")
    return found


# -- local HTTP servers (127.0.0.1 only) ---------------------------------------------------------------

class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files, quiet, HTTP/1.1 keep-alive, counting requests per (method, path)."""

    protocol_version = "HTTP/1.1"

    def __init__(self, *args: Any, counts: Counter[tuple[str, str]], lock: threading.Lock, directory: str,
                 **kwargs: Any) -> None:
        self._counts = counts
        self._lock = lock
        super().__init__(*args, directory=directory, **kwargs)

    def _count(self) -> None:
        with self._lock:
            self._counts[(self.command, self.path.split("?", 1)[0])] += 1

    def do_GET(self) -> None:
        self._count()
        super().do_GET()

    def do_HEAD(self) -> None:
        self._count()
        super().do_HEAD()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LocalServer:
    """A threaded static file server on 127.0.0.1 (``port``, default a free one) that counts requests per path."""

    def __init__(self, directory: Path, port: int = 0) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        handler = functools.partial(_Handler, counts=self.counts, lock=self._lock, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="bench-http", daemon=True)
        self.thread.start()
        self.port = int(self.server.server_address[1])
        self.base_url = f"http://127.0.0.1:{self.port}"

    def gets(self) -> dict[str, int]:
        """GET count per path."""
        with self._lock:
            return {path: n for (method, path), n in self.counts.items() if method == "GET"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the mirror of real Debian headers ------------------------------------------------------------------

def mirror_kernels(base_url: str, count: int = 3) -> list[dict[str, Any]]:
    """kernels.yaml entries (headers URLs at ``base_url``, with sha256) for the newest ``count`` kernels.

    Uses ``scripts/debian_headers.py`` (apt's own configuration; files already in the mirror are not
    downloaded again); its answer is cached next to the mirror, keyed by the mirror's file list.
    """
    MIRROR.mkdir(parents=True, exist_ok=True)
    listing = sorted(f"{p.name}:{p.stat().st_size}" for p in MIRROR.glob("*.deb"))
    memo = CACHE / f"bench-kernels-{count}.json"
    placeholder = "http://127.0.0.1:0"
    kernels: list[dict[str, Any]] | None = None
    if memo.exists():
        saved = json.loads(memo.read_text())
        if saved.get("listing") == listing:
            kernels = saved["kernels"]
    if kernels is None:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "debian_headers.py"), "--count", str(count),
             "--dest", str(MIRROR), "--base-url", placeholder, "--json"],
            capture_output=True, text=True, timeout=900)
        if proc.returncode:
            raise SystemExit(f"scripts/debian_headers.py failed: {proc.stderr.strip()}")
        kernels = json.loads(proc.stdout)
        listing = sorted(f"{p.name}:{p.stat().st_size}" for p in MIRROR.glob("*.deb"))
        memo.write_text(json.dumps({"listing": listing, "kernels": kernels}))
    out = json.loads(json.dumps(kernels).replace(placeholder, base_url.rstrip("/")))
    for k in out:
        k.pop("uname_r", None)
        k.pop("suite", None)
    return out


# -- kernels.yaml ---------------------------------------------------------------------------------------

# -- running repogen ------------------------------------------------------------------------------------

@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def json(self) -> Any:
        return json.loads(self.out)


def repogen(home: Path, config: Path, *args: str, timeout: float = 1800) -> Run:
    """The real ``repogen`` command as a subprocess (cold interpreter start included), wall-clock timed."""
    cmd = [sys.executable, "-m", "repogen", "--home", str(home), "-c", str(config), *args]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - started)


def must(run: Run, what: str) -> Run:
    if run.code != 0:
        raise SystemExit(f"{what} failed (exit {run.code}):\n{run.err[-3000:]}\n{run.out[-2000:]}")
    return run


def unpacked_trees(home: Path, target: str = "debian") -> list[Any]:
    """The kernel trees (``repogen.headers.KernelTree``) repogen unpacked into ``home``."""
    sys.path.insert(0, str(ROOT))
    from repogen.headers import KernelTree, _find_kernel_dir, read_release

    trees = []
    for p in sorted((home / "cache" / "kernels").iterdir()):
        if (p / ".complete").exists():
            kernel_dir = _find_kernel_dir(p / "root", target)
            trees.append(KernelTree(p / "root", kernel_dir, read_release(kernel_dir) or "", None))
    if not trees:
        raise SystemExit(f"no unpacked kernel in {home}")
    return trees


def falco_sized_driver(dest: Path, name: str = "falco", files: int = 40, functions: int = 40) -> Path:
    """A kbuild module about the size of Falco's kernel module (falcosecurity/libs ``driver/``: some
    30-40 C files, each including a good part of the kernel headers), so a build takes as long as a
    real one and the fixed cost of the command is measured against a realistic job."""
    dest.mkdir(parents=True, exist_ok=True)
    objects = []
    for i in range(files):
        body = ["#include <linux/module.h>", "#include <linux/sched.h>", "#include <linux/fs.h>",
                "#include <linux/net.h>", "#include <linux/slab.h>", "#include <linux/uaccess.h>", ""]
        for j in range(functions):
            body += [f"u64 {name}_f{i}_{j}(const u8 *buf, size_t len, u64 seed)", "{",
                     "\tu64 acc = seed; size_t k;",
                     "\tfor (k = 0; k < len; k++) {",
                     f"\t\tswitch ((buf[k] + {j}) % 7) {{",
                     "\t\tcase 0: acc = acc * 31 + buf[k]; break;",
                     "\t\tcase 1: acc ^= (acc << 7) | buf[k]; break;",
                     "\t\tcase 2: acc += current->pid * k; break;",
                     f"\t\tcase 3: acc = (acc >> 3) + {i * functions + j}; break;",
                     "\t\tdefault: acc -= buf[k] * (k + 1); break;", "\t\t}", "\t}", "\treturn acc;", "}",
                     f"EXPORT_SYMBOL({name}_f{i}_{j});", ""]
        (dest / f"part{i}.c").write_text("\n".join(body))
        objects.append(f"part{i}.o")
    (dest / "main.c").write_text(
        "#include <linux/module.h>\nMODULE_LICENSE(\"GPL\");\n"
        "static int __init m_init(void) { return 0; }\nstatic void __exit m_exit(void) {}\n"
        "module_init(m_init);\nmodule_exit(m_exit);\n")
    (dest / "Kbuild").write_text(f"obj-m += {name}.o\n{name}-y := main.o {' '.join(objects)}\n")
    return dest


def bare_build(tree: Any, kind: str, scratch: Path, source: Path = HELLO_KBUILD,
               module: str = "hello_repogen") -> float:
    """A fresh copy of the driver source, then a bare ``docker run`` of the recipe's make with the
    same mounts, user and container settings repogen uses; returns the wall-clock seconds of both."""
    started = time.perf_counter()
    work = scratch / "work"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(source, work, symlinks=True)
    for dirpath, _, filenames in os.walk(work):
        os.chmod(dirpath, 0o777)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o666)
    kdir = tree.container_kernel_dir
    cmd = ["docker", "run", "--rm", "--network", "none", "--user", "1000:1000", "--cap-drop", "ALL",
           "--security-opt", "no-new-privileges", "--memory", "4g", "--memory-swap", "4g", "--pids-limit", "4096",
           "--read-only", "--tmpfs", "/tmp:rw,exec,size=1g", "-w", "/work", "-e", f"KERNELDIR={kdir}"]
    for source, target in tree.mounts():
        cmd += ["--mount", f"type=bind,source={source},target={target},readonly"]
    cmd += ["--mount", f"type=bind,source={work},target=/work", builder_image()]
    if kind == "kmod":
        cmd += ["make", "-C", kdir, "M=/work", "modules"]
        artifact = work / f"{module}.ko"
    else:
        cmd += ["make", "-C", "/work/bpf", f"KERNELDIR={kdir}", "CLANG=clang", "LLC=llc"]
        artifact = work / "bpf" / "probe.o"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    if proc.returncode or not artifact.is_file():
        raise SystemExit(f"bare docker run ({kind}) failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def docker_ready() -> None:
    """Exit with a clear message when the engine or the builder image is missing."""
    builder_image()


# -- reporting ------------------------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def load_note() -> str:
    """The 1-minute load average, flagged when other work shares the CPUs (timings are then noisy)."""
    load = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    flag = " -- BUSY: other processes share the CPUs, timings are inflated" if load > 0.5 * cpus else ""
    return f"load average {load:.2f} on {cpus} CPUs{flag}"


class Goals:
    """Collects PASS/FAIL lines; ``exit_code`` is non-zero when any goal is missed."""

    def __init__(self) -> None:
        self.failed = 0

    def check(self, name: str, ok: bool, detail: str) -> None:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
        self.failed += not ok

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def serve_subprocess(directory: Path) -> tuple[subprocess.Popen[str], str]:
    """The same counting server in its own process (so a client in this one does not share a GIL)."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "serve", str(directory)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("http://127.0.0.1:"):
        proc.kill()
        raise SystemExit(f"the local server did not start: {line!r}")
    return proc, line


def stop(proc: subprocess.Popen[str]) -> None:
    """Stop a server started by :func:`serve_subprocess` (this process's own child, by pid)."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "serve":
    _server = LocalServer(Path(sys.argv[2]))
    print(_server.base_url, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        _server.thread.join(timeout=3600)  # bounded: the parent stops it long before
    _server.close()
