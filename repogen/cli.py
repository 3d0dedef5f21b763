"""The ``repogen`` command line: validate, plan, build, crawl, publish, serve, images."""

from __future__ import annotations

import functools
import glob
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from repogen import config as config_mod
from repogen.errors import ConfigErrors, RepogenError
from repogen.model import Config

# No markup: messages carry make output and config values ("[...]" is data, not style), and lines are
# never wrapped, so `file:line: field: message` stays one greppable line. Colour comes from Text styles.
err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True,
              width=None if sys.stderr.isatty() else 200)
out = Console(highlight=False, markup=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def emit_json(data: Any) -> None:
    """Machine output: plain JSON on stdout (rich's highlighter is far too slow for 40,000 rows)."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def styled(*parts: str | tuple[str, str]) -> Text:
    return Text.assemble(*parts)


def cells(*values: object) -> list[Text]:
    return [v if isinstance(v, Text) else Text(str(v)) for v in values]

HOME_ENV = "REPOGEN_HOME"


class Ctx:
    def __init__(self, config_path: Path, home: Path) -> None:
        self.config_path = config_path
        self.home_path = home
        self._home: Any = None

    @property
    def home(self) -> Any:
        if self._home is None:
            from repogen.home import Home

            self._home = Home(self.home_path)
        return self._home

    def config(self) -> Config:
        return config_mod.load(self.config_path, self.home.config_cache)


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path), default="kernels.yaml",
              show_default=True, help="The matrix file (it may include kernels.d/*.yaml).")
@click.option("--home", type=click.Path(path_type=Path), envvar=HOME_ENV, default=".repogen", show_default=True,
              help=f"State directory: database, artifact store, caches, logs (env {HOME_ENV}).")
@click.version_option(package_name="repogen")
@click.pass_context
def cli(ctx: click.Context, config_path: Path, home: Path) -> None:
    """Build Falco's kernel module and eBPF probe for every kernel in kernels.yaml, and publish them
    (with APT and RPM repositories) as a static tree that clients just GET."""
    ctx.obj = Ctx(config_path, home)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@pass_ctx
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
    summary = {"ok": True, "files": list(config.files), "drivers": len(config.drivers),
               "kernels": len(config.kernels),
               "jobs": sum(len(d.kinds) for d in config.drivers) * len(config.kernels)}
    if config.warnings:
        summary["warnings"] = list(config.warnings)
    if as_json:
        emit_json(summary)
    else:
        for warning in config.warnings:
            err.print(styled(("warning:", "yellow"), f" {warning}"))
        out.print(f"{ctx.config_path}: ok: {summary['drivers']} driver versions x {summary['kernels']} kernels "
                  f"= {summary['jobs']} builds ({len(config.files)} files)")


def _image_ids(ctx: Ctx, required: bool) -> tuple[Any, dict[str, str]]:
    """Builder image ids from the Docker engine, recorded in the state for `plan`."""
    from repogen import container, images

    try:
        client = container.connect()
    except RepogenError:
        if required:
            raise
        return None, {}
    ids = images.resolve_ids(client)
    ctx.home.store.record_images(ids)
    return client, ids


def _select(config: Config, only: tuple[str, ...], shard: str | None) -> list[Any]:
    from repogen.matrix import expand, parse_shard

    return expand(config, only, parse_shard(shard) if shard else None)


_selector_options = [
    click.option("--only", multiple=True, metavar="SELECTOR",
                 help="Only jobs matching FIELD=GLOB[,FIELD=GLOB...] (fields: name, driverversion, target, "
                      "kernelrelease, kernelversion, arch, kind); repeatable."),
    click.option("--shard", metavar="I/N", help="Only shard I of N (split by kernel, stable)."),
]


def selector_options(fn: Any) -> Any:
    for option in reversed(_selector_options):
        fn = option(fn)
    return fn


@cli.command()
@selector_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per job.")
@click.option("--all", "show_all", is_flag=True, help="List built jobs too, not only the work to do.")
@click.option("--check-images", is_flag=True,
              help="Ask the Docker engine for the builder image ids (default: those recorded by the last "
                   "`images build` or `build`; Docker is asked only when none are recorded).")
@pass_ctx
def plan(ctx: Ctx, only: tuple[str, ...], shard: str | None, as_json: bool, show_all: bool,
         check_images: bool) -> None:
    """What would be built, what is already built, what failed last time (no Docker needed)."""
    from repogen.plan import plan as make_plan

    config = ctx.config()
    jobs = _select(config, only, shard)
    ids = {} if check_images else ctx.home.store.image_ids()
    if not ids:
        _, ids = _image_ids(ctx, required=False)
    planned = make_plan(ctx.home, jobs, ids)
    counts = Counter(p.state for p in planned)
    if as_json:
        rows = [{**p.job.fields, "state": p.state, "toolchain": p.toolchain, "build_key": p.key,
                 "error": p.error} for p in planned if show_all or p.state != "built"]
        emit_json({"counts": dict(counts), "total": len(planned), "jobs": rows})
        return
    todo = [p for p in planned if show_all or p.state != "built"]
    if todo:
        table = Table("state", "driver", "version", "kind", "target", "kernelrelease", "kernelversion", "arch",
                      "toolchain", box=None)
        for p in todo[:200]:
            f = p.job.fields
            table.add_row(*cells(p.state, f["name"], f["driverversion"], f["kind"], f["target"],
                                 f["kernelrelease"], f["kernelversion"], f["arch"], p.toolchain))
        out.print(table)
        if len(todo) > 200:
            out.print(f"... and {len(todo) - 200} more (use --json for all)")
    if counts.get("needs-sources"):
        err.print(styled(("note:", "yellow"), f" {counts['needs-sources']} jobs are for config-only kernels "
                         "(bottlerocket, talos, minikube, flatcar): building them needs kernel sources, a later step"))
    if not ids:
        err.print(styled(("note:", "yellow"), " no builder image found (or Docker is not running): "
                         "build keys cannot be computed yet"))
    shown = [s for s in ("built", "missing", "changed", "failed", "unknown", "needs-sources")
             if counts.get(s) or s not in ("unknown", "needs-sources")]
    out.print(", ".join(f"{counts.get(s, 0)} {s}" for s in shown)
              + f" of {len(planned)} jobs")


@cli.command()
@selector_options
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=os.cpu_count() or 1, show_default=True,
              help="Builds in parallel.")
@click.option("--rebuild", multiple=True, metavar="SELECTOR",
              help="Force a rebuild of the matching jobs (a corrupted or suspect artifact).")
@click.option("--keep-work", is_flag=True, help="Keep each build's work directory (debugging).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@pass_ctx
def build(ctx: Ctx, only: tuple[str, ...], shard: str | None, jobs: int, rebuild: tuple[str, ...],
          keep_work: bool, as_json: bool) -> None:
    """Build every missing (driver, kernel, kind) in its own hermetic container and verify it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from repogen.build import Builder, Result, select_work
    from repogen.matrix import Selector
    from repogen.plan import plan as make_plan

    config = ctx.config()
    selected = _select(config, only, shard)
    rebuild_selectors = [Selector(s) for s in rebuild]
    client, ids = _image_ids(ctx, required=True)
    planned = make_plan(ctx.home, selected, ids)
    builder = Builder(ctx.home, config, client, image_ids=ids, keep_work=keep_work)
    todo = len(select_work(planned, rebuild_selectors)[0])
    if todo == 0:
        message = f"nothing to build: all {len(planned)} artifacts are up to date"
        if as_json:
            emit_json({"built": 0, "failed": 0, "up_to_date": len(planned), "results": []})
        else:
            out.print(message)
        return
    progress = Progress(TextColumn("[bold]building"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=err, transient=False)

    def done(result: Result) -> None:
        progress.advance(task)
        progress.update(task, description=f"{result.job.label}: {result.status}")
        if result.status == "failed":
            progress.console.print(styled(("FAILED", "red"), f" {result.job.label}: {result.error}"))
        elif result.status == "built":
            progress.console.print(styled(("built", "green"), f"  {result.job.label} ({result.seconds:.1f}s)"))

    with progress:
        task = progress.add_task("", total=todo)
        results = builder.run(planned, jobs=jobs, rebuild=rebuild_selectors, on_done=done)
    counts = Counter(r.status for r in results)
    c = builder.counters
    if as_json:
        emit_json({
            "built": counts["built"], "failed": counts["failed"], "up_to_date": counts["up-to-date"],
            "counters": {"header_downloads": c.header_downloads, "source_fetches": c.source_fetches,
                         "prepares": c.prepares, "kernels_unpacked": c.kernels_unpacked, "containers": c.containers},
            "results": [{**r.job.fields, "status": r.status, "seconds": round(r.seconds, 2), "build_key": r.key,
                         "sha256": r.artifact_sha256, "error": r.error, "log": r.log} for r in results]})
    else:
        table = Table("status", "driver", "version", "kind", "kernel", "seconds", "detail", box=None)
        for r in results:
            if r.status == "up-to-date" and len(results) > 50:
                continue
            colour = {"built": "green", "failed": "red"}.get(r.status, "dim")
            table.add_row(*cells(Text(r.status, style=colour), r.job.driver.name, r.job.driver.version,
                                 r.job.kind.value, r.job.kernel.label, f"{r.seconds:.1f}", r.error or r.log or ""))
        err.print(table)
        out.print(f"{counts['built']} built, {counts['failed']} failed, {counts['up-to-date']} up to date "
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

    if not targets:
        names = ", ".join(sorted(distro.crawlable()))
        raise RepogenError("name at least one target to crawl (or files with --from)", hint=f"targets: {names}")
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
            raise RepogenError(f"bad --mirror {item!r}: expected NAME=URL, e.g. debian=http://127.0.0.1:8080/debian")
        if config is not None and write and dict(config.mirrors).get(name, url) != url:
            err.print(styled(("note:", "yellow"), f" {ctx.config_path} maps mirror {name} to "
                             f"{dict(config.mirrors)[name]}; the written entries will resolve there"))
        given[name] = url.rstrip("/")
    since_date = None
    if since:
        try:
            since_date = dt.datetime.fromisoformat(since).replace(tzinfo=dt.UTC)
        except ValueError:
            raise RepogenError(f"bad --since {since!r}: expected a date such as 2026-01-31") from None
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


def _crawl_progress(status: Any, name: str, message: str) -> None:
    status.update(f"crawling {name}: {message}")


def _packages(patterns: list[str]) -> list[Path]:
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else [pattern]
        for match in matches:
            path = Path(match)
            if path.is_dir():
                found.extend(sorted(p for p in path.iterdir() if p.suffix in (".deb", ".rpm")))
            elif path.exists():
                found.append(path)
            else:
                raise RepogenError(f"no such package file: {match}")
    return found


@cli.command()
@click.option("--site", type=click.Path(path_type=Path), default="site", show_default=True,
              help="Where the static tree is published (a symlink to the live generation).")
@click.option("--deb", "debs", multiple=True, metavar="GLOB", help="Extra .deb files or directories.")
@click.option("--rpm", "rpms", multiple=True, metavar="GLOB", help="Extra .rpm files or directories.")
@click.option("--sign-key", metavar="ID", help="GnuPG key id or fingerprint to sign with.")
@click.option("--sign-key-file", type=click.Path(path_type=Path), help="An exported secret key to sign with.")
@click.option("--base-url", metavar="URL",
              help="Where the tree will be served, for the ready .sources/.repo snippets (packages.base-url).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def publish(ctx: Ctx, site: Path, debs: tuple[str, ...], rpms: tuple[str, ...], sign_key: str | None,
            sign_key_file: Path | None, base_url: str | None, as_json: bool) -> None:
    """Write the static tree (drivers, index.json, SHA256SUMS, APT and RPM repositories), atomically."""
    from repogen.publish import publish as do_publish

    config = ctx.config()
    packages = config.packages
    deb_files = _packages([*packages.deb, *debs])
    rpm_files = _packages([*packages.rpm, *rpms])
    signer = _signer(ctx, config, sign_key, sign_key_file)
    options = None
    if deb_files or rpm_files:
        from repogen.repos import RepoOptions

        options = RepoOptions(suite=packages.suite, component=packages.component, origin=packages.origin,
                              label=packages.label, valid_until_days=packages.valid_until_days,
                              keep_versions=packages.keep_versions, grace_seconds=packages.grace_seconds,
                              rpm_compression=packages.rpm_compression)  # type: ignore[arg-type]
        if base_url or packages.base_url:
            options.base_url = (base_url or packages.base_url or "").rstrip("/")
    if signer is None:
        err.print(styled(("note:", "yellow"), " no signing key configured: SHA256SUMS and the repositories are "
                         "unsigned (apt needs [trusted=yes], dnf gpgcheck=0 to accept them)"))
    with err.status("publishing"):
        report = do_publish(ctx.home, config, site, signer=signer, debs=deb_files, rpms=rpm_files,
                            repo_options=options)
    result = {"site": str(site), "generation": str(report.generation), "artifacts": report.artifacts,
              "missing": len(report.missing), "signed": report.signed,
              "debs": len(deb_files), "rpms": len(rpm_files)}
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
        out.print(f"published {report.artifacts} artifacts to {site} -> {report.generation.name}"
                  + (f" ({len(report.missing)} jobs not built yet)" if report.missing else "")
                  + (f", {len(deb_files)} .deb, {len(rpm_files)} .rpm" if deb_files or rpm_files else "")
                  + (", signed" if report.signed else ", unsigned"))
        if report.repos is not None:
            out.print(report.repos.summary())


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
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8093, show_default=True)
def serve(site: Path, host: str, port: int) -> None:
    """Serve the published tree over HTTP (what a CDN or S3 website endpoint would do)."""
    from repogen.serve import make_server

    if not site.exists():
        raise RepogenError(f"{site} does not exist", hint="run `repogen publish` first")
    server = make_server(site, host, port, quiet=False)
    err.print(f"serving {site} on http://{host}:{server.server_address[1]}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@cli.group()
def images() -> None:
    """Builder images: one per toolchain (gcc for modules, clang/llvm for probes)."""


@images.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def images_list(ctx: Ctx, as_json: bool) -> None:
    """The toolchains, the kernels each serves, and whether its image is built."""
    from repogen import images as images_mod

    _, ids = _image_ids(ctx, required=False)
    rows = [{"toolchain": t.name, "image": t.tag, "suite": t.suite, "gcc": t.gcc, "clang": t.clang,
             "kernels": t.kernels, "id": ids.get(t.tag)} for t in images_mod.toolchains().values()]
    if as_json:
        emit_json(rows)
        return
    table = Table("toolchain", "image", "gcc", "clang", "kernels", "id", box=None)
    for r in rows:
        table.add_row(*cells(r["toolchain"], r["image"], r["gcc"], r["clang"], r["kernels"],
                             Text(r["id"][:19]) if r["id"] else Text("not built", style="yellow")))
    out.print(table)


@images.command("build")
@click.argument("toolchains", nargs=-1)
@click.option("--all", "build_all", is_flag=True, help="Every toolchain, not only those the matrix needs.")
@click.option("--force", is_flag=True, help="Rebuild images that exist.")
@pass_ctx
def images_build(ctx: Ctx, toolchains: tuple[str, ...], build_all: bool, force: bool) -> None:
    """Build the builder images the matrix needs (or the named TOOLCHAINS)."""
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
        wanted = sorted({images_mod.choose(k).name for k in ctx.config().kernels})
    client = container.connect()
    for name in wanted:
        chain = chains[name]
        existing = images_mod.image_id(client, chain.tag)
        if existing and not force:
            out.print(f"{chain.tag}: present ({existing[:19]})")
            continue
        with err.status(f"building {chain.tag}"):
            image = images_mod.build(client, chain, ctx.home.logs / "images" / f"{name}.log")
        out.print(f"{chain.tag}: built ({image[:19]})")
    ctx.home.store.record_images(images_mod.resolve_ids(client))


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
    with err.status(f"debootstrap {suite}"):
        image = images_mod.bootstrap(client, suite, mirror, ctx.home.logs / "images" / f"bootstrap-{suite}.log")
    out.print(f"{tag}: imported ({image[:19]})")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
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
