"""The ``repogen`` command line: validate, plan, build, crawl, publish, upload, gc, serve, images."""

from __future__ import annotations

import errno
import functools
import glob
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from repogen import config as config_mod
from repogen.bulk import paused_gc
from repogen.errors import ConfigErrors, RepogenError
from repogen.model import Config

if TYPE_CHECKING:  # rich is imported on first use (40 ms): `plan --json` and the like never print through it
    from rich.console import Console
    from rich.text import Text


class LazyConsole:
    """A rich Console made on first use; ``.rich`` is the Console itself (for rich's own widgets)."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def rich(self) -> Console:
        if self._console is None:
            from rich.console import Console

            stream = sys.stderr if self._stderr else sys.stdout
            # No markup: messages carry make output and config values ("[...]" is data, not style), and
            # lines are never wrapped, so `file:line: field: message` stays one greppable line. Colour
            # comes from Text styles.
            self._console = Console(stderr=self._stderr, highlight=False, markup=False, soft_wrap=True,
                                    width=None if stream.isatty() else 200)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rich, name)


err = LazyConsole(stderr=True)
out = LazyConsole(stderr=False)


def emit_json(data: Any) -> None:
    """Machine output: JSON on stdout, indented by two (rich's highlighter is far too slow for 40,000 rows,
    and the json module's indenting encoder takes a second: orjson writes the same in a tenth of that)."""
    import orjson

    try:
        text = orjson.dumps(data, option=orjson.OPT_INDENT_2)
    except TypeError:  # what orjson does not encode (an integer over 64 bits, a key that is not a string)
        text = json.dumps(data, indent=2).encode()
    sys.stdout.flush()
    sys.stdout.buffer.write(text + b"\n")
    sys.stdout.buffer.flush()


def styled(*parts: str | tuple[str, str]) -> Text:
    from rich.text import Text

    return Text.assemble(*parts)


def cells(*values: object) -> list[Text]:
    from rich.text import Text

    return [v if isinstance(v, Text) else Text(str(v)) for v in values]

HOME_ENV = "REPOGEN_HOME"
DEFAULT_CONFIG = "kernels.yaml"


class Ctx:
    """What every command shares: where the matrix is and where the state lives, resolved late so
    ``-c``/``--home`` may come before or after the subcommand."""

    def __init__(self, config_option: Path | None = None, home_option: Path | None = None) -> None:
        self.config_option = config_option
        self.home_option = home_option
        #: Read-only commands (validate, plan, lists) never create the state directory.
        self.readonly = False
        #: Set by a command that built a big heap and has nothing left to close: see _exit_now.
        self.exit_at_once = False
        self._home: Any = None

    @property
    def config_path(self) -> Path:
        """``-c FILE``, or ``-c DIR`` meaning ``DIR/kernels.yaml``; default ``./kernels.yaml``."""
        path = self.config_option or Path(DEFAULT_CONFIG)
        return path / DEFAULT_CONFIG if path.is_dir() else path

    @property
    def home_path(self) -> Path:
        """``--home``, else ``$REPOGEN_HOME``, else ``.repogen`` beside the config file: the state
        follows the matrix, not the directory the command happens to run in."""
        if self.home_option is not None:
            return self.home_option
        if os.environ.get(HOME_ENV):
            return Path(os.environ[HOME_ENV])
        return self.config_path.absolute().parent / ".repogen"

    @property
    def home(self) -> Any:
        if self._home is None:
            from repogen.home import Home

            self._home = Home(self.home_path, create=not self.readonly)
        return self._home

    def config(self) -> Config:
        # A read-only command never creates the home; in one that exists, the validated-config cache
        # (a cache, not state) is kept fresh so the next no-op plan is fast.
        if self.readonly and not self.home_path.is_dir():
            return config_mod.parse(self.config_path, naming_rules=False)  # (validate reports them)
        return config_mod.load(self.config_path, self.home_path.absolute() / "cache" / "config")


pass_ctx = click.make_pass_decorator(Ctx)
_current: Ctx | None = None  # for the crash log's location


def read_only(fn: Any) -> Any:
    """Mark a command as read-only: it creates no state directory and writes no cache."""

    @functools.wraps(fn)
    def wrapper(ctx: Ctx, *args: Any, **kwargs: Any) -> Any:
        ctx.readonly = True
        return fn(ctx, *args, **kwargs)

    return wrapper


_CONFIG_HELP = "The matrix file, or a directory holding kernels.yaml (it may include kernels.d/*.yaml)."
_HOME_HELP = f"State directory: database, artifact store, caches, logs (env {HOME_ENV}; default .repogen beside " \
             "the config file)."


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path), default=None,
              help=_CONFIG_HELP + "  [default: kernels.yaml]")
@click.option("--home", type=click.Path(path_type=Path), default=None, help=_HOME_HELP)
@click.version_option(package_name="repogen")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, home: Path | None) -> None:
    """Build Falco's kernel module and eBPF probe for every kernel in kernels.yaml, and publish them
    (with APT and RPM repositories) as a static tree that clients just GET.

    -c/--config and --home are accepted before or after the subcommand."""
    global _current
    ctx.obj = _current = Ctx(config_path, home)


def _remember_option(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is not None and param.name:
        setattr(ctx.ensure_object(Ctx), param.name, value)


def _accept_global_options(group: click.Group) -> None:
    """Give every subcommand -c/--config and --home too (`repogen build -c x.yaml` is how people type it)."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _accept_global_options(command)
            continue
        command.params.extend([
            click.Option(["-c", "--config", "config_option"], type=click.Path(path_type=Path), default=None,
                         expose_value=False, callback=_remember_option, help=_CONFIG_HELP),
            click.Option(["--home", "home_option"], type=click.Path(path_type=Path), default=None,
                         expose_value=False, callback=_remember_option, help=_HOME_HELP),
        ])


def warn(message: str) -> None:
    err.print(styled(("warning:", "yellow"), f" {message}"))


def note(message: str) -> None:
    err.print(styled(("note:", "yellow"), f" {message}"))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@pass_ctx
@read_only
def validate(ctx: Ctx, as_json: bool) -> None:
    """Check kernels.yaml; on error print file:line: field: message and exit 2."""
    try:
        config = config_mod.parse(ctx.config_path)
    except ConfigErrors as exc:
        if as_json:
            emit_json({"ok": False, "errors": [
                {"file": e.file, "line": e.line, "field": e.field, "message": e.detail} for e in exc.errors]})
            sys.exit(2)
        raise
    per_kernel = sum(len(d.kinds) for d in config.drivers)
    summary = {"ok": True, "files": list(config.files), "drivers": len(config.drivers),
               "kernels": len(config.kernels), "jobs": per_kernel * len(config.kernels)}
    if config.warnings:
        summary["warnings"] = list(config.warnings)
    if as_json:
        emit_json(summary)
        return
    for warning in config.warnings:
        warn(warning)
    kinds = sorted({k.value for d in config.drivers for k in d.kinds})
    out.print(f"{ctx.config_path}: ok: {len(config.drivers)} driver versions x {len(config.kernels)} kernels"
              f" = {summary['jobs']} builds ({per_kernel} per kernel: {'+'.join(kinds) or 'none'}; "
              f"{len(config.files)} files)"
              + (f"; packages: {len(config.packages.deb)} deb, {len(config.packages.rpm)} rpm globs"
                 if config.packages.deb or config.packages.rpm else ""))


def _image_ids(ctx: Ctx, required: bool) -> tuple[Any, dict[str, str] | None, dict[str, str]]:
    """Builder image ids and their toolchain ids from the Docker engine (None and {} when it cannot be
    asked), recorded for `plan`."""
    from repogen import container, images

    try:
        client = container.connect()
    except RepogenError:
        if required:
            raise
        return None, None, {}
    ids, toolchain_ids = images.record(client, ctx.home.store)
    return client, ids, toolchain_ids


def _select(config: Config, only: tuple[str, ...], shard: str | None, changed_since: str | None = None,
            config_path: Path | None = None) -> list[Any]:
    from repogen.matrix import expand, parse_shard

    notes: list[str] = []
    jobs = expand(config, only, parse_shard(shard) if shard else None, notes=notes)
    for note in notes:
        warn(note)
    if changed_since:
        from repogen.changes import select_changed

        jobs = select_changed(jobs, config, config_path or Path("kernels.yaml"), changed_since)
    return jobs


_selector_options = [
    click.option("--only", multiple=True, metavar="SELECTOR",
                 help="Only jobs matching FIELD=GLOB[,FIELD=GLOB...] (fields: name, driverversion, target, "
                      "kernelrelease, kernelversion, arch, kind); repeatable. Matching nothing is an error."),
    click.option("--shard", metavar="I/N",
                 help="Only shard I of N: the kernels in sorted order, dealt round-robin (a kernel's jobs stay "
                      "together; every machine computes the same split from kernels.yaml)."),
    click.option("--changed-since", metavar="REF",
                 help="Only jobs whose driver or kernel entry is new or different since git REF (a pull request's "
                      "base), compared entry by entry with `git show REF:kernels.yaml` and its includes."),
]


def selector_options(fn: Any) -> Any:
    for option in reversed(_selector_options):
        fn = option(fn)
    return fn


def _first_line(text: str | None, width: int = 100) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[:width - 1] + "…"


cache_option = click.option(
    "--cache", "cache_url", metavar="s3://BUCKET/PREFIX", envvar="REPOGEN_CACHE",
    help="Shared remote build cache (default: `cache:` in kernels.yaml; env REPOGEN_CACHE). "
         "The endpoint and credentials come from boto3's usual chain (AWS_ENDPOINT_URL, AWS_PROFILE, ...).")


def _remote_cache(ctx: Ctx, config: Config, cache_url: str | None, *, check: bool = True) -> Any:
    """The remote cache named on the command line or in kernels.yaml, checked reachable; or None.
    Copies of its index are kept in the home when there is one (a cache, as the config cache)."""
    url = cache_url or config.cache
    if not url:
        return None
    from repogen.remote_cache import RemoteCache

    local = ctx.home.remote_index if ctx.home_path.is_dir() else None
    remote = RemoteCache.from_url(url, warn=lambda m: err.print(styled(("warning:", "yellow"), f" {m}")),
                                  local=local)
    if check:
        remote.check()
    return remote


@cli.command()
@selector_options
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: counts, total, and the jobs (with state, reason, error).")
@click.option("--all", "show_all", is_flag=True, help="List built (and cached) jobs too, not only the work to do.")
@click.option("--why", is_flag=True, help="Say why each job would be built (e.g. 'builder image gcc12 changed').")
@click.option("--check-images", is_flag=True,
              help="Ask the Docker engine for the builder image ids (default: those recorded by the last "
                   "`images build` or `build`; Docker is asked only when none are recorded).")
@cache_option
@pass_ctx
@read_only
@paused_gc()  # the matrix and the plan: a million small records, no cycles
def plan(ctx: Ctx, only: tuple[str, ...], shard: str | None, changed_since: str | None, as_json: bool,
         show_all: bool, why: bool, check_images: bool, cache_url: str | None) -> None:
    """What would be built and why, what is already built, what failed last time (no Docker needed)."""
    from repogen.plan import plan as make_plan

    config = ctx.config()
    jobs = _select(config, only, shard, changed_since, ctx.config_path)
    ids: dict[str, str] | None = {} if check_images else ctx.home.store.toolchain_ids()
    if not ids:
        _, found, ids = _image_ids(ctx, required=False)
        if found is None:
            ids = None  # Docker could not be asked: said below
    remote = _remote_cache(ctx, config, cache_url, check=False)  # reading the index says what is wrong
    remote_keys = remote.built_keys({(j.driver.name, j.driver.version) for j in jobs}) if remote else set()
    planned = make_plan(ctx.home, jobs, ids or {}, remote_keys)
    counts = Counter(p.state for p in planned)
    todo = [p for p in planned if show_all or p.state not in ("built", "cached")]  # cached: no compile
    if as_json:
        boots = _boot_summaries(ctx, [p.job for p in todo])  # only the rows shown
        rows = [{**p.job.fields, "state": p.state, "toolchain": p.toolchain, "toolchain_id": p.toolchain_id,
                 "build_key": p.key, "reason": p.reason, "error": p.error, "boot": _boot_field(boots, p.job.job_id)}
                for p in todo]
        emit_json({"counts": dict(counts), "total": len(planned), "jobs": rows})
        ctx.exit_at_once = True
        return
    if todo:
        boots = _boot_summaries(ctx, [p.job for p in todo[:200]])
        from rich.table import Table
        from rich.text import Text

        table = Table("state", "driver", "version", "kind", "kernel", "toolchain", "boot", "detail", box=None)
        for p in todo[:200]:
            detail = Text(_first_line(p.error), style="red") if p.state == "failed" and p.error else Text("")
            if why and p.reason and not (p.state == "failed" and p.error):
                detail = Text(p.reason)
            boot = boots.get(p.job.job_id)
            table.add_row(*cells(p.state, p.job.driver.name, p.job.driver.version, p.job.kind.value,
                                 p.job.kernel.label, p.toolchain, boot.status.value if boot else "-", detail))
        out.print(table)
        if len(todo) > 200:
            out.print(f"... and {len(todo) - 200} more (use --json for all)")
    if counts.get("needs-sources"):
        err.print(styled(("note:", "yellow"), f" {counts['needs-sources']} jobs are for config-only kernels "
                         "(bottlerocket, talos, minikube, flatcar): building them needs kernel sources, a later step"))
    if ids is None:
        err.print(styled(("note:", "yellow"), " no builder image recorded and Docker is not running (or not "
                         "reachable): build keys cannot be computed yet"))
    elif not ids:
        err.print(styled(("note:", "yellow"), " no builder image found: build keys cannot be computed yet "
                         "(run `repogen images build`)"))
    shown = [s for s in ("built", "cached", "missing", "changed", "failed", "unknown", "needs-sources")
             if counts.get(s) or s not in ("unknown", "needs-sources", "cached")]
    out.print(", ".join(f"{counts.get(s, 0)} {s}" for s in shown)
              + f" of {len(planned)} jobs")
    if why and not as_json:
        reasons = Counter(p.reason for p in planned if p.reason)
        for reason, count in reasons.most_common(10):
            out.print(f"  {count} x {reason}")
    ctx.exit_at_once = True


@cli.command()
@selector_options
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=os.cpu_count() or 1, show_default=True,
              help="Builds in parallel.")
@click.option("--rebuild", multiple=True, metavar="SELECTOR",
              help="Force a rebuild of the matching jobs (a corrupted or suspect artifact); matching nothing "
                   "is an error.")
@click.option("--keep-work", is_flag=True, help="Keep each build's work directory (debugging).")
@click.option("--logs", "show_logs", is_flag=True, help="Show each build's log path in the summary table.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@click.option("--boot", is_flag=True, help="Then boot-check what was built (see `repogen verify --boot`).")
@click.option("--boot-timeout", type=click.FloatRange(0.1), default=120.0, show_default=True,
              help="Seconds per boot before the VM is killed.")
@cache_option
@click.option("--dask", "dask_scheduler", metavar="tcp://SCHEDULER:8786",
              help="Run the jobs on a Dask cluster's workers (each with its own Docker engine and "
                   "REPOGEN_HOME); results go to the shared --cache.")
@pass_ctx
def build(ctx: Ctx, only: tuple[str, ...], shard: str | None, changed_since: str | None, jobs: int,
          rebuild: tuple[str, ...], keep_work: bool, show_logs: bool, as_json: bool, boot: bool,
          boot_timeout: float, cache_url: str | None, dask_scheduler: str | None) -> None:
    """Build every missing (driver, kernel, kind) in its own hermetic container and verify it; say why
    each one is (re)built."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from repogen.build import Builder, Result, select_work
    from repogen.errors import UsageError
    from repogen.matrix import Selector
    from repogen.plan import plan as make_plan

    config = ctx.config()
    selected = _select(config, only, shard, changed_since, ctx.config_path)
    rebuild_selectors = [Selector(s) for s in rebuild]
    missed = [s.text for s in rebuild_selectors if not any(s.matches(j) for j in selected)]
    if missed and len(missed) == len(rebuild_selectors):
        raise UsageError(f"--rebuild {' '.join(repr(m) for m in missed)} matches no job"
                         + (" of this shard/selection" if only or shard else ""),
                         hint="`repogen plan --all` lists every job with its fields")
    for text in missed:
        warn(f"--rebuild {text!r} matches no job")
    remote = _remote_cache(ctx, config, cache_url)
    if dask_scheduler and remote is None:
        raise UsageError("--dask needs a shared build cache (--cache s3://BUCKET/PREFIX or `cache:` in "
                         "kernels.yaml): the workers' artifacts go there")
    client, ids, toolchain_ids = _image_ids(ctx, required=not dask_scheduler)
    planned = make_plan(ctx.home, selected, toolchain_ids)
    builder = Builder(ctx.home, config, client, image_ids=ids or {}, toolchain_ids=toolchain_ids,
                      keep_work=keep_work, remote=remote, on_event=note)
    work, forced = select_work(planned, rebuild_selectors)
    todo = len(work)
    if todo and not as_json:
        from repogen.reasons import FORCED

        why = Counter(FORCED if p.job.job_id in forced else (p.reason or "re-checked") for p in work)
        err.print(f"{todo} to build: " + ", ".join(f"{n} {reason}" for reason, n in why.most_common(5))
                  + (f", {sum(n for _, n in why.most_common()[5:])} other" if len(why) > 5 else ""))
    if todo == 0:
        message = f"nothing to build: all {len(planned)} artifacts are up to date"
        if as_json:
            emit_json({"built": 0, "cached": 0, "failed": 0, "up_to_date": len(planned), "results": []})
        else:
            out.print(message)
        return
    progress = Progress(TextColumn("[bold]building"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=err.rich, transient=False)

    def done(result: Result) -> None:
        progress.advance(task)
        progress.update(task, description=f"{result.job.label}: {result.status}")
        if result.status == "failed":
            progress.console.print(styled(("FAILED", "red"), f" {result.job.label}: {_first_line(result.error, 300)}"
                                          + (f"\n  log: {result.log}" if result.log else "")))
        elif result.status == "built":
            progress.console.print(styled(("built", "green"), f"  {result.job.label} ({result.seconds:.1f}s)"
                                          + (f": {result.reason}" if result.reason else "")))

    from repogen import locks

    locks.notify_waits(lambda message: progress.console.print(styled(("note:", "yellow"), f" {message}")))
    with progress:
        task = progress.add_task("", total=todo)
        if dask_scheduler:
            from repogen.distributed import run_on_dask

            results = run_on_dask(dask_scheduler, builder, planned, rebuild=rebuild_selectors, on_done=done)
        else:
            results = builder.run(planned, jobs=jobs, rebuild=rebuild_selectors, on_done=done)
    boots = _boot_built(ctx, results, jobs, boot_timeout) if boot else {}
    if builder.reaped or builder.swept:
        err.print(f"cleaned up after a killed run: {builder.reaped} build containers removed, "
                  f"{builder.swept} partial files and directories swept")
    counts = Counter(r.status for r in results)
    c = builder.counters
    if as_json:
        emit_json({
            "built": counts["built"], "cached": counts["cached"], "failed": counts["failed"],
            "up_to_date": counts["up-to-date"],
            "counters": {"header_downloads": c.header_downloads, "source_fetches": c.source_fetches,
                         "prepares": c.prepares, "kernels_unpacked": c.kernels_unpacked, "containers": c.containers},
            "results": [{**r.job.fields, "status": r.status, "seconds": round(r.seconds, 2), "build_key": r.key,
                         "sha256": r.artifact_sha256, "reason": r.reason, "error": r.error, "log": r.log,
                         **({"boot": _boot_field(boots, r.job.job_id)} if boot else {})}
                        for r in results]})
    else:
        columns = ["status", "driver", "version", "kind", "kernel", "seconds", "why / error"]
        from rich.table import Table
        from rich.text import Text

        table = Table(*columns, *(["log"] if show_logs else []), box=None)
        for r in results:
            if r.status == "up-to-date" and len(results) > 50:
                continue
            colour = {"built": "green", "cached": "cyan", "failed": "red"}.get(r.status, "dim")
            detail = _first_line(r.error, 80) if r.status == "failed" else (r.reason or "")
            table.add_row(*cells(Text(r.status, style=colour), r.job.driver.name, r.job.driver.version,
                                 r.job.kind.value, r.job.kernel.label, f"{r.seconds:.1f}", detail,
                                 *([r.log or ""] if show_logs else [])))
        err.print(table)
        out.print(f"{counts['built']} built, " + (f"{counts['cached']} from the cache, " if remote else "")
                  + f"{counts['failed']} failed, {counts['up-to-date']} up to date "
                  f"(headers downloaded: {c.header_downloads}, sources prepared: {c.prepares}, "
                  f"kernels unpacked: {c.kernels_unpacked})")
    if counts["failed"]:
        sys.exit(1)


@cli.command()
@click.argument("targets", nargs=-1, metavar="TARGET[:RELEASE,...]... | FILE...")
@click.option("--mirror", "mirror_overrides", multiple=True, metavar="NAME=URL",
              help="Use URL for mirror NAME (debian, debian-security, ubuntu, rocky, ...); repeatable.")
@click.option("--arch", "arches", multiple=True, type=click.Choice(["x86_64", "aarch64"]),
              help="Only these architectures (default: both); with --from, the architecture of the list.")
@click.option("--since", metavar="DATE", help="Only kernels published since DATE (YYYY-MM-DD): RPM build "
              "times; for APT, suites whose Release changed since.")
@click.option("--from", "from_format", type=click.Choice(["kernel-crawler"]),
              help="Import kernel-crawler JSON files (given as arguments) instead of crawling.")
@click.option("--write", is_flag=True, help="Append the new entries to kernels.yaml (or kernels.d/<target>.yaml).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@pass_ctx
def crawl(ctx: Ctx, targets: tuple[str, ...], mirror_overrides: tuple[str, ...], arches: tuple[str, ...],
          since: str | None, from_format: str | None, write: bool, as_json: bool) -> None:
    """Find kernels in distributions' package indexes, named exactly as Falco's clients request them.

    TARGET is a distribution (debian, ubuntu, centos, rocky, almalinux, fedora, rhel, ol, amazonlinux2,
    amazonlinux2023), optionally with the releases to read (debian:bookworm,bookworm-security). A target
    whose mirror fails is reported (exit 1) and keeps its entries; the others complete."""
    import datetime as dt

    from repogen import distro
    from repogen.crawl import CrawlContext, TargetResult, crawl_target
    from repogen.crawl.write import merge, render

    names = ", ".join(sorted(distro.crawlable()))
    if not targets:
        raise click.UsageError(f"name at least one target to crawl (targets: {names}), or files with --from")
    unknown = [t for t in targets if not from_format and t.partition(":")[0] not in distro.crawlable()]
    if unknown:
        raise click.BadParameter(f"unknown target(s) {', '.join(unknown)} (known: {names})", param_hint="TARGET")
    given: dict[str, str] = {}
    config = None
    if ctx.config_path.exists():
        config = config_mod.parse(ctx.config_path)
        given.update(dict(config.mirrors))
    elif write:
        raise RepogenError(f"{ctx.config_path} does not exist", hint="give the matrix with -c/--config")
    for item in mirror_overrides:
        name, sep, url = item.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://", "file://")):
            raise click.BadParameter(f"{item!r}: expected NAME=URL, e.g. debian=http://127.0.0.1:8080/debian",
                                     param_hint="--mirror")
        if config is not None and write and dict(config.mirrors).get(name, url) != url:
            err.print(styled(("note:", "yellow"), f" {ctx.config_path} maps mirror {name} to "
                             f"{dict(config.mirrors)[name]}; the written entries will resolve there"))
        given[name] = url.rstrip("/")
    since_date = None
    if since:
        try:
            since_date = dt.datetime.fromisoformat(since).replace(tzinfo=dt.UTC)
        except ValueError:
            raise click.BadParameter(f"{since!r}: expected a date such as 2026-01-31", param_hint="--since") from None
    results: list[TargetResult] = []
    if from_format:
        from repogen.crawl import kernelcrawler

        if len(arches) > 1:
            raise RepogenError("--from takes one --arch (a kernel-crawler list is per architecture)")
        for file in targets:
            results.append(kernelcrawler.load(Path(file), arches[0] if arches else "x86_64"))
    else:
        for spec in targets:
            name, _, releases = spec.partition(":")
            context = CrawlContext(given, tuple(arches), since_date, tuple(r for r in releases.split(",") if r))
            with err.status(f"crawling {name}") as status:
                context.on_progress = functools.partial(_crawl_progress, status, name)
                results.append(crawl_target(name, context))
    existing = {k.ident for k in config.kernels} if config else set()
    written = []
    if write and config is not None:
        written = merge(config, ctx.config_path, [f for r in results if not r.error for f in r.found])
    failed = [r for r in results if r.error]
    if as_json:
        emit_json({"targets": [{"name": r.name, "error": r.error, "warnings": r.warnings, "requests": r.requests,
                                "seconds": round(r.seconds, 2), "found": len(r.found),
                                "new": sum(f.ident not in existing for f in r.found),
                                "kernels": [f.as_dict() for f in r.found]} for r in results],
                   "written": [{"file": str(w.file), "entries": w.entries} for w in written]})
    else:
        if not write:
            found = [f for r in results for f in r.found]
            if found:
                out.print("kernels:\n" + render(found), end="")
        for r in results:
            for warning in r.warnings:
                err.print(styled(("warning:", "yellow"), f" {r.name}: {warning}"))
            if r.error:
                err.print(styled(("FAILED", "red"), f" {r.name}: {r.error}"))
                err.print(f"  {r.name}: its previous entries in {ctx.config_path} are kept as they are")
            else:
                new = sum(f.ident not in existing for f in r.found)
                err.print(f"{r.name}: {len(r.found)} kernels, {new} not in {ctx.config_path} "
                          f"({r.requests} requests, {r.seconds:.1f}s)")
        for w in written:
            err.print(f"wrote {w.entries} new entries to {w.file}")
    if failed:
        sys.exit(1)


def _boot_summaries(ctx: Ctx, jobs: list[Any]) -> dict[str, Any]:
    if not jobs:
        return {}
    from repogen.boot import summaries

    return summaries(ctx.home, jobs)


def _boot_field(boots: dict[str, Any], job_id: str) -> dict[str, object] | None:
    result = boots.get(job_id)
    return result.summary() if result is not None else None


def _boot_run(ctx: Ctx, jobs: list[Any], parallel: int, timeout: float, recheck: bool,
              quiet: bool = False) -> list[tuple[Any, Any]]:
    """Boot-check the artifacts of ``jobs`` in parallel, with progress on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from repogen.boot import BootChecker, targets

    todo = targets(ctx.home, jobs)
    if not todo:
        return []
    checker = BootChecker(ctx.home, timeout=timeout, recheck=recheck)
    progress = Progress(TextColumn("[bold]boot check"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=err.rich, transient=False, disable=quiet)

    def done(target: Any, result: Any) -> None:
        progress.advance(task)
        progress.update(task, description=f"{target.job.label}: {result.status.value}")
        colour = "green" if result.status.passed else "yellow" if result.status.value == "not checked" else "red"
        progress.console.print(styled((result.status.value, colour), f" {target.job.label}: {result.describe()}"))

    with progress:
        task = progress.add_task("", total=len(todo))
        return checker.run(todo, jobs=parallel, on_done=done)


def _boot_built(ctx: Ctx, results: list[Any], parallel: int, timeout: float) -> dict[str, Any]:
    """`build --boot`: check what this run built; a module that fails is a failed build."""
    checked = _boot_run(ctx, [r.job for r in results if r.status in ("built", "cached")], parallel, timeout,
                        recheck=False)
    boots = {target.job.job_id: result for target, result in checked}
    for r in results:
        result = boots.get(r.job.job_id)
        if result is not None and result.status.fails_build:
            r.status = "failed"
            r.error = f"boot check: {result.describe()}"
    return boots


@cli.command()
@click.argument("selectors", nargs=-1, metavar="[SELECTOR...]")
@click.option("--boot", is_flag=True,
              help="Boot each module's own kernel (its image:) under QEMU and insmod the module; eBPF probes get "
                   "an ELF-level check, and are loaded through the kernel's verifier when REPOGEN_BPFTOOL names a "
                   "bpftool that reads legacy maps (Debian 11's).")
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=os.cpu_count() or 1, show_default=True,
              help="Checks in parallel.")
@click.option("--timeout", type=click.FloatRange(0.1), default=120.0, show_default=True,
              help="Seconds per boot before the VM is killed.")
@click.option("--recheck", is_flag=True, help="Boot again even where a result is recorded.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@pass_ctx
def verify(ctx: Ctx, selectors: tuple[str, ...], boot: bool, jobs: int, timeout: float, recheck: bool,
           as_json: bool) -> None:
    """Check built artifacts matching SELECTORs (FIELD=GLOB[,...], as --only; default: all).

    A module that fails the boot check (refused, timed out, QEMU failed) becomes a failed build:
    `plan` shows the reason, and publish leaves it out. Exit 1 when any check failed.
    """
    if not boot:
        raise click.UsageError("say what to check: --boot (the only check here; builds verify ELF and vermagic)")
    config = ctx.config()
    selected = _select(config, selectors, None)
    checked = _boot_run(ctx, selected, jobs, timeout, recheck, quiet=as_json)
    bad = [r for _, r in checked if not r.status.passed and r.status.value != "not checked"]
    if as_json:
        emit_json({"checked": len(checked), "failed": len(bad), "results": [
            {**t.job.fields, "sha256": t.artifact_sha256, **r.summary(), "cached": r.cached, "console": r.console}
            for t, r in checked]})
    elif not checked:
        out.print("nothing to check: no built artifact matches")
    else:
        counts = Counter(r.status.value for _, r in checked)
        seconds = [r.seconds for _, r in checked if r.console and not r.cached]
        out.print(", ".join(f"{n} {s}" for s, n in counts.items())
                  + (f" (boots: {len(seconds)}, {sum(seconds) / len(seconds):.1f}s each)" if seconds else ""))
    if bad:
        sys.exit(1)


def _crawl_progress(status: Any, name: str, message: str) -> None:
    status.update(f"crawling {name}: {message}")


def _packages(patterns: list[str], option: str, from_config: int) -> list[Path]:
    """The package files the patterns name (globs, files, directories).

    The first ``from_config`` patterns come from kernels.yaml: one matching nothing is a warning
    (the packages may not be built yet). A pattern given on the command line matching nothing is a
    warning too, and an error when none of them matched anything.
    """
    found: list[Path] = []
    given_missed = given = 0
    for index, pattern in enumerate(patterns):
        matches = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else [pattern]
        files: list[Path] = []
        for match in matches:
            path = Path(match)
            if path.is_dir():
                files.extend(sorted(p for p in path.iterdir() if p.suffix in (".deb", ".rpm")))
            elif path.exists():
                files.append(path)
            else:
                raise RepogenError(f"no such package file: {match}")
        if index >= from_config:
            given += 1
            given_missed += not files
        if not files:
            where = f"packages.{option}" if index < from_config else f"--{option}"
            warn(f"{where} {pattern!r} matches no package file")
        found.extend(files)
    if given and given_missed == given:
        from repogen.errors import UsageError

        raise UsageError(f"no package file matched --{option} "
                         + " ".join(repr(p) for p in patterns[from_config:]))
    return found


def _run_publish(ctx: Ctx, site: Path, debs: tuple[str, ...], rpms: tuple[str, ...], sign_key: str | None,
                 sign_key_file: Path | None, base_url: str | None, as_json: bool,
                 remove: tuple[tuple[str, str | None], ...] = (), require_boot: bool = False,
                 cache_url: str | None = None, adopt: bool = False) -> Any:
    """One publish: what `publish` does, and `packages remove` with the packages to leave out."""
    from repogen import locks
    from repogen.publish import live_tree
    from repogen.publish import publish as do_publish

    config = ctx.config()
    packages = config.packages
    deb_files = _packages([*packages.deb, *debs], "deb", len(packages.deb))
    rpm_files = _packages([*packages.rpm, *rpms], "rpm", len(packages.rpm))
    signer = _signer(ctx, config, sign_key, sign_key_file)
    options = None
    live = live_tree(site.absolute())
    has_repos = live is not None and any((live / d).is_dir() for d in ("deb", "rpm"))
    if deb_files or rpm_files or remove or has_repos:
        from repogen.repos import RepoOptions

        options = RepoOptions(suite=packages.suite, component=packages.component, origin=packages.origin,
                              label=packages.label, valid_until_days=packages.valid_until_days,
                              keep_versions=packages.keep_versions, grace_seconds=packages.grace_seconds,
                              rpm_compression=packages.rpm_compression)  # type: ignore[arg-type]
        options.remove = list(remove)
        if base_url or packages.base_url:
            options.base_url = (base_url or packages.base_url or "").rstrip("/")
    if signer is None:
        err.print(styled(("note:", "yellow"), " no signing key configured: SHA256SUMS and the repositories are "
                         "unsigned (apt needs [trusted=yes], dnf gpgcheck=0 to accept them)"))
    remote = _remote_cache(ctx, config, cache_url)
    if remote is not None and not ctx.home.store.toolchain_ids():
        _image_ids(ctx, required=False)  # build keys of what was built elsewhere need the toolchain ids
    locks.notify_waits(note)
    with err.status("publishing"):
        report = do_publish(ctx.home, config, site, signer=signer, debs=deb_files, rpms=rpm_files,
                            repo_options=options, require_boot=require_boot, remote=remote, adopt=adopt)
    failed_jobs = ctx.home.store.failed_jobs()
    failed = [j for j in report.missing if j in failed_jobs]
    result: dict[str, Any] = {
        "site": str(site), "generation": str(report.generation), "artifacts": report.artifacts,
        "missing": len(report.missing) - len(failed), "failed": len(failed), "signed": report.signed,
        "debs": len(deb_files), "rpms": len(rpm_files), "from_cache": report.from_cache,
        "skipped": [{"job": job_id, "reason": reason} for job_id, reason in report.skipped]}
    if report.repos is not None:
        for name in ("deb", "rpm"):
            stats = getattr(report.repos, name)
            if stats is not None:
                result[f"{name}_repository"] = {"packages": stats.packages, "read": stats.read,
                                                "cached": stats.cached, "added": stats.added,
                                                "removed": stats.removed}
    if as_json:
        emit_json(result)
    else:
        not_built = len(report.missing) - len(failed)
        missing = [f"{not_built} jobs not built yet"] if not_built else []
        missing += [f"{len(failed)} failed (see `repogen plan`)"] if failed else []
        out.print(f"published {report.artifacts} artifacts to {site} -> {report.generation.name}"
                  + (f" ({', '.join(missing)})" if missing else "")
                  + (f", {len(deb_files)} .deb, {len(rpm_files)} .rpm" if deb_files or rpm_files else "")
                  + (", signed" if report.signed else ", unsigned"))
        for job_id, reason in report.skipped:
            err.print(styled(("skipped", "yellow"), f" {job_id}: {reason}"))
        if report.repos is not None:
            out.print(report.repos.summary())
    return report


_site_option = click.option("--site", type=click.Path(path_type=Path), default="site", show_default=True,
                            help="Where the static tree is published (a symlink to the live generation).")
_signing_options = [
    click.option("--sign-key", metavar="ID", help="GnuPG key id or fingerprint to sign with."),
    click.option("--sign-key-file", type=click.Path(path_type=Path), help="An exported secret key to sign with."),
    click.option("--base-url", metavar="URL",
                 help="Where the tree will be served, written into the ready .sources/.repo snippets "
                      "(packages.base-url)."),
]


def signing_options(fn: Any) -> Any:
    for option in reversed(_signing_options):
        fn = option(fn)
    return fn


@cli.command()
@_site_option
@click.option("--deb", "debs", multiple=True, metavar="GLOB", help="Extra .deb files or directories.")
@click.option("--rpm", "rpms", multiple=True, metavar="GLOB", help="Extra .rpm files or directories.")
@signing_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--require-boot", is_flag=True,
              help="Publish only modules that loaded in their kernel (probes: passed their check).")
@cache_option
@click.option("--adopt", is_flag=True,
              help="Take over a --site directory repogen did not make: its content is moved to "
                   ".<site>.generations/adopted-<time> (kept, never pruned).")
@pass_ctx
def publish(ctx: Ctx, site: Path, debs: tuple[str, ...], rpms: tuple[str, ...], sign_key: str | None,
            sign_key_file: Path | None, base_url: str | None, as_json: bool, require_boot: bool,
            cache_url: str | None, adopt: bool) -> None:
    """Write the static tree (drivers, index.json, SHA256SUMS, APT and RPM repositories), atomically; with
    a --cache, artifacts this home lacks come from it."""
    _run_publish(ctx, site, debs, rpms, sign_key, sign_key_file, base_url, as_json, require_boot=require_boot,
                 cache_url=cache_url, adopt=adopt)


def _signer(ctx: Ctx, config: Config, key: str | None, key_file: Path | None) -> Any:
    signing = config.signing
    key = key or signing.key
    key_file_str = str(key_file) if key_file else signing.key_file
    if not key and not key_file_str:
        return None
    from repogen.signing import Signer

    return Signer(key=key, key_file=Path(key_file_str) if key_file_str else None,
                  homedir=Path(signing.homedir) if signing.homedir else None,
                  passphrase_env=signing.passphrase_env, cache_dir=ctx.home.path / "cache" / "gnupg")


@cli.command()
@click.option("--site", type=click.Path(path_type=Path), default="site", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; the tree is public data).")
@click.option("--port", type=click.IntRange(0, 65535), default=8093, show_default=True)
def serve(site: Path, host: str, port: int) -> None:
    """Serve the published tree over HTTP (what a CDN or S3 website endpoint would do)."""
    from repogen.serve import make_server

    if not site.exists():
        raise RepogenError(f"{site} does not exist", hint="run `repogen publish` first")
    try:
        server = make_server(site, host, port, quiet=False)
    except OSError as exc:
        busy = exc.errno == errno.EADDRINUSE
        raise RepogenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                           hint="another server uses that port: stop it or pick another with --port" if busy
                           else "check --host (an address of this machine) and --port") from None
    err.print(f"serving {site} on http://{host}:{server.server_address[1]}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)")
_DEBOOTSTRAP_PHASES = {"Retrieving": "downloading packages", "Validating": "downloading packages",
                       "Extracting": "extracting", "Installing": "installing", "Unpacking": "installing",
                       "Configuring": "configuring", "Base": "base system installed"}


def milestone(line: str) -> str | None:
    """The step a long command's output line starts, if any: a Dockerfile step, a debootstrap phase,
    repogen's own 'importing'/'building' announcements."""
    if m := _STEP.match(line):
        return f"step {m.group(1)}/{m.group(2)}: {_first_line(m.group(3), 70)}"
    if line.startswith("I: "):
        return _DEBOOTSTRAP_PHASES.get(line[3:].split(" ", 1)[0])
    if line.startswith(("importing ", "building ", "debootstrap ")):
        return line
    return None


class LineProgress:
    """Progress of a long step (debootstrap, a builder image build) from its output lines.

    On a terminal: a spinner with the elapsed time, the current milestone and the latest line. In a
    log (CI, a pipe): one line per milestone, so minutes of apt output become a dozen lines. Pass the
    object as the ``on_line`` callback."""

    def __init__(self, title: str, console: Console | None = None) -> None:
        self.title = title
        self.console = console or err.rich
        self.started = 0.0
        self.current: str | None = None
        self.lines = 0
        self._status: Any = None

    def __enter__(self) -> LineProgress:
        import time

        self.started = time.monotonic()
        if self.console.is_terminal:
            self._status = self.console.status(self.title)
            self._status.__enter__()
        else:
            self.console.print(f"{self.title} ...")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)

    def __call__(self, line: str) -> None:
        import time

        self.lines += 1
        step = milestone(line)
        changed = step is not None and step != self.current
        if step is not None:
            self.current = step
        if self._status is not None:
            elapsed = int(time.monotonic() - self.started)
            self._status.update(f"{self.title} [{elapsed // 60}:{elapsed % 60:02d}] {self.current or ''}"
                                f"  {_first_line(line, 60)}")
        elif changed:
            self.console.print(f"  {self.title}: {self.current}")


def _s3_target(target: str) -> Any:
    from repogen import s3

    return s3.location(target)


def _endpoint_option(f: Any) -> Any:
    return click.option("--endpoint-url", metavar="URL",
                        help="An S3-compatible endpoint (default: AWS, or $AWS_ENDPOINT_URL).")(f)


def _lock_wait_option(f: Any) -> Any:
    return click.option("--lock-wait", type=click.FloatRange(0, 86400), default=120, show_default=True,
                        metavar="SECONDS", help="How long to wait for another publisher's lock on the bucket.")(f)


@cli.command()
@click.argument("target", metavar="s3://BUCKET/PREFIX")
@click.option("--site", type=click.Path(path_type=Path), default="site", show_default=True,
              help="The published tree (the link `repogen publish` made).")
@_endpoint_option
@click.option("--cdn-invalidate", "distribution", metavar="DISTRIBUTION_ID",
              help="Invalidate the overwritten paths in this CloudFront distribution after the upload.")
@click.option("--dry-run", is_flag=True, help="Say what would be uploaded; write nothing.")
@_lock_wait_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def upload(target: str, site: Path, endpoint_url: str | None, distribution: str | None, dry_run: bool,
           lock_wait: float, as_json: bool) -> None:
    """Upload the published tree to S3: only what changed, content before the indexes naming it,
    under a lock; nothing is deleted (see `repogen gc s3://...`)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from repogen import s3
    from repogen.upload import upload as do_upload

    where = _s3_target(target)
    client = s3.client(endpoint_url)
    progress = Progress(TextColumn("[bold]uploading"), BarColumn(), MofNCompleteColumn(), console=err.rich,
                        transient=True, disable=as_json or not err.is_terminal)
    task = progress.add_task("", total=None)

    def notify(message: str) -> None:
        progress.console.print(styled(("note:", "yellow"), f" {message}"))

    def stage(name: str, files: int) -> None:
        """One line per stage where no progress bar is drawn (CI logs)."""
        if not as_json and not err.is_terminal:
            err.print(f"uploading {files} {name} file{'s' if files != 1 else ''}")

    with progress, s3.errors(where, "uploading to"):
        report = do_upload(site, where, client, dry_run=dry_run, lock_wait=lock_wait, notify=notify,
                           distribution=distribution,
                           cloudfront=s3.cloudfront_client,
                           progress=lambda done, total: progress.update(task, completed=done, total=total),
                           on_stage=stage)
    if as_json:
        emit_json(report.as_json())
        return
    if report.noop:
        out.print(f"{where}: up to date ({report.files} files, {report.requests} request"
                  f"{'s' if report.requests != 1 else ''})")
        return
    verb = "would upload" if dry_run else "uploaded"
    out.print(f"{where}: {verb} {len(report.uploaded)} of {report.files} files ({report.bytes_uploaded} bytes) "
              f"from {report.generation}; {report.unchanged} unchanged, {len(report.overwritten)} overwritten"
              + (f", {report.requests} requests" if not dry_run else ""))
    if report.invalidation:
        out.print(f"CDN invalidation {report.invalidation['id']}: {len(report.invalidation['paths'])} paths")


@cli.group()
def images() -> None:
    """Builder images: one per toolchain (gcc for modules, clang/llvm for probes)."""


@images.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the toolchains as a JSON list.")
@pass_ctx
@read_only
def images_list(ctx: Ctx, as_json: bool) -> None:
    """The toolchains (one per Debian release), the kernels each serves, and whether its image is built."""
    from repogen import images as images_mod

    client, found, toolchain_ids = _image_ids(ctx, required=False)
    ids = found or {}
    bases = images_mod.base_ids(client) if client is not None else {}
    rows: list[dict[str, Any]] = [
        {"toolchain": t.name, "suite": t.suite, "gcc": t.gcc, "clang": t.clang, "kernels": t.kernels,
         "image": images_mod.content_tag(t, bases[t.suite]) if t.suite in bases else None,
         "id": ids.get(t.name), "toolchain_id": toolchain_ids.get(t.name), "docker": found is not None}
        for t in images_mod.toolchains().values()]
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table
    from rich.text import Text

    table = Table("toolchain", "suite", "gcc", "clang", "image", "id", box=None)
    for r in rows:
        state = (Text(r["id"][:19]) if r["id"] else
                 Text("unknown (Docker is not running)" if not r["docker"] else
                      "not built" if r["image"] else "no base image yet", style="yellow"))
        table.add_row(*cells(r["toolchain"], r["suite"], r["gcc"], r["clang"], r["image"] or "-", state))
    out.print(table)
    if found is None:
        err.print(styled(("note:", "yellow"), " Docker is not reachable: which images are built is unknown"))


@images.command("build")
@click.argument("toolchains", nargs=-1)
@click.option("--all", "build_all", is_flag=True, help="Every toolchain, not only those the matrix needs.")
@click.option("--force", is_flag=True, help="Rebuild images that exist.")
@click.option("--mirror", help="Debian mirror URL for a missing base image (default: this machine's apt sources).")
@pass_ctx
def images_build(ctx: Ctx, toolchains: tuple[str, ...], build_all: bool, force: bool, mirror: str | None) -> None:
    """Build the builder images the matrix needs (or the named TOOLCHAINS), bootstrapping bases as needed."""
    from repogen import container
    from repogen import images as images_mod

    chains = images_mod.toolchains()
    unknown = [t for t in toolchains if t not in chains]
    if unknown:
        raise RepogenError(f"unknown toolchain(s) {', '.join(unknown)} (known: {', '.join(chains)})")
    if toolchains:
        wanted = list(toolchains)
    elif build_all:
        wanted = list(chains)
    else:
        from repogen.matrix import expand
        from repogen.plan import plan as make_plan

        wanted = sorted({p.toolchain for p in make_plan(ctx.home, expand(ctx.config()), {})})
    client = container.connect()
    logs = ctx.home.logs / "images"
    for name in wanted:
        chain = chains[name]
        existing = images_mod.resolve_ids(client).get(name)
        if existing and not force:
            out.print(f"{name}: present ({existing[:19]})")
            continue
        with LineProgress(f"building builder image {name} (Debian {chain.suite})") as progress:
            if force and existing:
                image = images_mod.build(client, chain, logs / f"{name}.log", on_line=progress)
            else:
                image = images_mod.ensure(client, chain, logs, mirror=mirror, on_line=progress)
        out.print(f"{name}: built ({image[:19]}, log {logs / f'{name}.log'})")
    images_mod.record(client, ctx.home.store)


@images.command("bootstrap")
@click.option("--suite", default="bookworm", show_default=True, help="Debian suite of the base image.")
@click.option("--mirror", help="Debian mirror URL (default: the one in this machine's apt sources).")
@click.option("--force", is_flag=True, help="Bootstrap again even if the base image exists.")
@pass_ctx
def images_bootstrap(ctx: Ctx, suite: str, mirror: str | None, force: bool) -> None:
    """Make the Debian base image with debootstrap + docker import (no registry needed)."""
    from repogen import container
    from repogen import images as images_mod

    client = container.connect()
    tag = f"{images_mod.BASE_REPOSITORY}:{suite}"
    existing = images_mod.image_id(client, tag)
    if existing and not force:
        out.print(f"{tag}: present ({existing[:19]})")
        return
    log = ctx.home.logs / "images" / f"bootstrap-{suite}.log"
    with LineProgress(f"debootstrap {suite}") as progress:
        image = images_mod.bootstrap(client, suite, mirror, log, on_line=progress)
    out.print(f"{tag}: imported ({image[:19]})")


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def _bucket_gc(target: str, grace: str, endpoint_url: str | None, dry_run: bool, lock_wait: float,
               as_json: bool) -> None:
    from repogen import s3
    from repogen.bucket import collect_garbage
    from repogen.config import parse_duration
    from repogen.errors import UsageError

    grace_seconds = parse_duration(grace)
    if grace_seconds is None:
        raise UsageError(f"--grace: expected a duration such as 600, 30m, 2h or 3d, found {grace!r}")
    where = _s3_target(target)
    client = s3.client(endpoint_url)
    with s3.errors(where, "collecting garbage in"), err.status("collecting garbage"):
        report = collect_garbage(client, where, grace_seconds=grace_seconds, dry_run=dry_run, lock_wait=lock_wait,
                                 notify=lambda m: err.print(styled(("note:", "yellow"), f" {m}")))
    if as_json:
        emit_json({"location": report.location, "dry_run": dry_run, "deleted": report.deleted,
                   "bytes_deleted": report.bytes_deleted, "waiting": report.waiting,
                   "referenced": report.referenced, "requests": report.requests})
        return
    verb = "would delete" if dry_run else "deleted"
    out.print(f"{where}: {verb} {len(report.deleted)} objects ({_size(report.bytes_deleted)}); "
              f"{report.referenced} referenced, {report.waiting} unreferenced but within the grace period")


@cli.command()
@click.argument("target", required=False, metavar="[s3://BUCKET/PREFIX]")
@_site_option
@click.option("--dry-run", is_flag=True, help="Say what would be removed and how much space it frees; remove nothing.")
@click.option("--keep-generations", type=click.IntRange(0, 1000), default=2, show_default=True,
              help="Published generations kept besides the live one (for `repogen rollback`).")
@click.option("--grace", default="3d", show_default=True, metavar="DURATION",
              help="With s3://: how long an object stays after no upload references it any more (600, 30m, 2h, 3d).")
@_endpoint_option
@_lock_wait_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def gc(ctx: Ctx, target: str | None, site: Path, dry_run: bool, keep_generations: int, grace: str,
       endpoint_url: str | None, lock_wait: float, as_json: bool) -> None:
    """Remove what nothing references: superseded artifacts, caches the matrix no longer names, old
    logs and scratch, old generations of the published tree; report the space freed.

    With s3://BUCKET/PREFIX: the bucket's objects that no upload references any more, once unreferenced
    for the grace period (--grace, --endpoint-url, --lock-wait apply).

    Run it when no build or publish is running (scratch younger than an hour is kept anyway)."""
    from repogen import gc as gc_mod

    if target is not None:
        _bucket_gc(target, grace, endpoint_url, dry_run, lock_wait, as_json)
        return
    if dry_run:
        ctx.readonly = True
    config = ctx.config()
    if ctx.readonly and not ctx.home_path.is_dir():
        report = gc_mod.GcReport(dry_run=True)
        if site.exists() or site.is_symlink():
            report.removals = gc_mod.find_garbage(ctx.home, config, site, keep_generations=keep_generations)
    else:
        from repogen import locks

        locks.notify_waits(note)
        report = gc_mod.collect(ctx.home, config, site if (site.exists() or site.is_symlink()) else None,
                                dry_run=dry_run, keep_generations=keep_generations)
    kinds = report.by_kind()
    if as_json:
        emit_json({"dry_run": dry_run, "freed": report.freed,
                   "removed": {what: {"count": n, "bytes": b} for what, (n, b) in sorted(kinds.items())},
                   "paths": [str(r.path) for r in report.removals]})
        return
    if kinds:
        from rich.table import Table

        table = Table("kind", "count", "size", box=None)
        for what, (count, size) in sorted(kinds.items()):
            table.add_row(*cells(what, count, _size(size)))
        out.print(table)
    verb = "would free" if dry_run else "freed"
    out.print(f"{verb} {_size(report.freed)} ({len(report.removals)} items)"
              + (" (dry run: nothing removed)" if dry_run else ""))


@cli.command()
@_site_option
@click.option("--json", "as_json", is_flag=True, help="Print the generations as a JSON list.")
@pass_ctx
@read_only
def generations(ctx: Ctx, site: Path, as_json: bool) -> None:
    """The published generations kept beside SITE: when each was made, what it holds, which is live."""
    from repogen.generations import generations as list_generations

    found = list_generations(site)
    if as_json:
        emit_json([g.as_json() for g in found])
        return
    if not found:
        out.print(f"{site}: no published generation")
        return
    from rich.table import Table
    from rich.text import Text

    table = Table("", "generation", "created", "artifacts", "deb", "rpm", "signed", box=None)
    for g in found:
        created = Text(str(g.as_json()["created"]))
        table.add_row(*cells(Text("live", style="green") if g.live else "", g.name, created,
                             "?" if g.artifacts is None else g.artifacts, g.debs, g.rpms, "yes" if g.signed else "no"))
    out.print(table)


@cli.command()
@click.argument("generation", required=False)
@_site_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def rollback(ctx: Ctx, generation: str | None, site: Path, as_json: bool) -> None:
    """Point SITE back at GENERATION (default: the one published before the live one), atomically."""
    from repogen import locks
    from repogen.generations import rollback as do_rollback

    locks.notify_waits(note)
    target, previous = do_rollback(site, generation)
    if as_json:
        emit_json({"live": target.as_json(), "previous": previous.as_json() if previous else None})
        return
    if previous is not None and previous.name == target.name:
        out.print(f"{site} already serves {target.name}")
    else:
        out.print(f"{site} -> {target.name} (was {previous.name if previous else 'unknown'}): "
                  f"{target.artifacts} artifacts, {target.debs} .deb, {target.rpms} .rpm")


@cli.group()
def packages() -> None:
    """The packages the published APT and RPM repositories hold."""


def _live_or_fail(site: Path) -> Path:
    from repogen.publish import live_tree

    tree = live_tree(site.absolute())
    if tree is None:
        raise RepogenError(f"{site} does not exist", hint="run `repogen publish` first")
    return tree


@packages.command("list")
@_site_option
@click.option("--json", "as_json", is_flag=True, help="Print the packages as a JSON list.")
@pass_ctx
@read_only
def packages_list(ctx: Ctx, site: Path, as_json: bool) -> None:
    """Every package in the live tree's APT and RPM repositories."""
    from repogen.publish import live_tree
    from repogen.repos.listing import published_packages

    tree = live_tree(site.absolute())
    found = published_packages(tree) if tree is not None else []
    if as_json:
        emit_json([p.__dict__ for p in found])
        return
    if not found:
        out.print(f"{site}: no packages published")
        return
    from rich.table import Table

    table = Table("repo", "name", "version", "arch", "size", "path", box=None)
    for p in found:
        table.add_row(*cells(p.kind, p.name, p.version, p.arch, _size(p.size), p.path))
    out.print(table)
    out.print(f"{sum(p.kind == 'deb' for p in found)} .deb, {sum(p.kind == 'rpm' for p in found)} .rpm")


@packages.command("remove")
@click.argument("specs", nargs=-1, required=True, metavar="NAME[=VERSION]...")
@_site_option
@signing_options
@click.option("--json", "as_json", is_flag=True, help="Print the publish result as JSON.")
@pass_ctx
def packages_remove(ctx: Ctx, specs: tuple[str, ...], site: Path, sign_key: str | None,
                    sign_key_file: Path | None, base_url: str | None, as_json: bool) -> None:
    """Publish a new generation without the named packages (every version, or just VERSION).

    The repositories otherwise keep every package ever published; this is the explicit way out.
    A package still matched by packages.deb/rpm in kernels.yaml is left out as well: remove it there
    too, or the next publish brings it back. `repogen rollback` undoes a removal."""
    from repogen.errors import UsageError
    from repogen.repos.listing import published_packages

    wanted: list[tuple[str, str | None]] = []
    for spec in specs:
        name, sep, version = spec.partition("=")
        if not name or (sep and not version):
            raise UsageError(f"bad package {spec!r}: expected NAME or NAME=VERSION")
        wanted.append((name, version or None))
    present = published_packages(_live_or_fail(site))
    missing = [f"{n}={v}" if v else n for n, v in wanted if not any(p.matches(n, v) for p in present)]
    if missing:
        raise RepogenError(f"not published in {site}: {', '.join(missing)}",
                           hint="`repogen packages list` shows what is")
    report = _run_publish(ctx, site, (), (), sign_key, sign_key_file, base_url, as_json, remove=tuple(wanted))
    if not as_json and report.repos is not None:
        dropped = [*(report.repos.deb.dropped if report.repos.deb else []),
                   *(report.repos.rpm.dropped if report.repos.rpm else [])]
        out.print(f"removed {len(dropped)} package files: {', '.join(dropped)}")


def _crash_log() -> Path:
    """Where an unexpected error's traceback goes: the home's logs when it exists, else the temp dir."""
    import tempfile
    import time
    import traceback

    name = f"crash-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    directories = []
    if _current is not None:
        try:
            if _current.home_path.is_dir():
                directories.append(_current.home_path / "logs")
        except OSError:
            pass
    directories.append(Path(tempfile.gettempdir()))
    for directory in directories:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / name
            path.write_text(f"repogen {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
            return path
        except OSError:
            continue
    return Path("(could not be written)")


_accept_global_options(cli)


def _exit_now() -> None:
    """Exit without tearing the interpreter down: freeing a 40,000-job plan's million objects one by one
    is a tenth of the run and does nothing the kernel does not do when the process ends. Only after a
    command that wrote everything it writes (output flushed here; the database commits as it goes)."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: nothing more to say
        os._exit(1)
    os._exit(0)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
        if _current is not None and _current.exit_at_once:
            _exit_now()
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigErrors as exc:
        for e in exc.errors:
            err.print(styled(("error:", "red"), f" {e.message}"))
        err.print(f"{len(exc.errors)} error(s)")
        sys.exit(exc.exit_code)
    except RepogenError as exc:
        err.print(styled(("error:", "red"), f" {exc.message}"))
        if exc.hint:
            err.print(f"  hint: {exc.hint}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # no traceback reaches a user: one line, and where the whole story is
        log = _crash_log()
        what = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.filename else str(exc)
        err.print(styled(("error:", "red"), f" {type(exc).__name__}: {_first_line(what, 300)}"))
        err.print(f"  (unexpected: the full traceback is in {log})")
        sys.exit(1)
