"""The `aggregator` command (click is imported here only).

Exit codes: 0 success, 1 a runtime failure (database unreachable, unreadable file), 2 an invalid
config or wrong usage, so scripts and CI can tell an editor's mistake from an outage.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from aggregator import __version__, logs, malloc, warmup
from aggregator.exceptions import AggregatorError, ConfigError

if TYPE_CHECKING:  # the config schema (pydantic) and storage (SQLAlchemy) load when a command
    from aggregator.config import (  # needs them, so `--version` and `--help` start at once
        Config,
        Digest,
    )
    from aggregator.feed.discover import Report as DiscoveryReport
    from aggregator.poll import PollResult, Preview
    from aggregator.storage import Storage

DEFAULT_CONFIG = "config/feeds.yaml"
CONFIG_ENV = "AGGREGATOR_CONFIG"

_GLOBAL_CONFIG = "aggregator.config"  # where `aggregator --config X COMMAND` leaves X


def _default_config() -> str:
    """The config a command uses when not given its own `--config`: the one given before the
    command (`aggregator --config X sources`, as git and kubectl take global options), else
    $AGGREGATOR_CONFIG, else config/feeds.yaml."""
    ctx = click.get_current_context(silent=True)
    chosen = ctx.meta.get(_GLOBAL_CONFIG) if ctx is not None else None
    return str(chosen) if chosen else os.environ.get(CONFIG_ENV, DEFAULT_CONFIG)


config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=_default_config,
    show_default=f"--config before the command, ${CONFIG_ENV} or {DEFAULT_CONFIG}",
    help="The feeds.yaml to use.",
)


def _count(number: int, noun: str, plural: str = "") -> str:
    """'1 source', '2 sources', '1 story', '3 stories': a count with its noun agreeing."""
    return f"{number} {noun}" if number == 1 else f"{number} {plural or noun + 's'}"


@contextmanager
def _progress(length: int, label: str, **options: Any) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr that log lines pass above (one owner of the terminal's last
    line); yields `advance(steps=1, item=None)`, safe to call from any thread."""
    bar = click.progressbar(length=length, label=label, file=sys.stderr, **options)

    def redraw() -> None:
        bar._last_line = None  # click skips drawing the line it drew last
        bar.render_progress()

    with bar, logs.beneath_progress(redraw if sys.stderr.isatty() else None) as lock:

        def advance(steps: int = 1, item: Any = None) -> None:
            with lock:
                bar.update(steps, item)

        yield advance


def _load(path: Path, *, cached: bool = True) -> Config:
    """The config; validated afresh only when the file (or the code) changed since it was last
    validated (config/cache.py), and then in a child process (config/apart.py), unless `cached`
    is False."""
    if not cached:
        from aggregator.config import load_config

        config = _reported(lambda: load_config(path))
        warmup.resume()
        return config
    return _begin(path)()


def _begin(path: Path) -> Callable[[], Config]:
    """`_load` in two steps: the file is read and, where it must be validated, a child process
    started to do it; the call returned waits for it. A command imports what it needs between
    the two, on the other core."""
    from aggregator.config.loader import begin_loading

    finish = _reported(lambda: begin_loading(path))

    def finished() -> Config:
        config = _reported(finish)
        warmup.resume()  # the command's imports are done by now (warmup.py)
        return config

    return finished


_T = TypeVar("_T")


def _reported(load: Callable[[], _T]) -> _T:
    """`load()`, its config problems printed (exit status 2)."""
    try:
        return load()
    except ConfigError as exc:
        _report_config_error(exc)
        raise SystemExit(2) from None


def _open_storage(url: str, *, upgrade: bool = True) -> Storage:
    from aggregator.storage import Storage

    return Storage.open(url, upgrade=upgrade)


def _report_config_error(exc: ConfigError) -> None:
    for problem in exc.problems:
        click.echo(str(problem), err=True)
    count = len(exc.problems)
    click.secho(
        f"{count} problem{'s' if count != 1 else ''} found; nothing was changed.",
        err=True,
        fg="red",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aggregator")
@click.option(
    "--log-level",
    default=lambda: os.environ.get("AGGREGATOR_LOG_LEVEL", "INFO"),
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="How much the service logs.",
    show_default="INFO",
)
@click.option(
    "--log-format",
    default=lambda: os.environ.get("AGGREGATOR_LOG_FORMAT", "text"),
    type=click.Choice(logs.FORMATS, case_sensitive=False),
    help="text for people, json for a log pipeline (one object per line).",
    show_default="$AGGREGATOR_LOG_FORMAT or text",
)
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The feeds.yaml every command uses (a command's own --config wins).",
)
@click.pass_context
def cli(ctx: click.Context, log_level: str, log_format: str, config_path: Path | None) -> None:
    """Poll feeds, merge them, and republish them as feeds, pages and e-mail digests."""
    logs.setup(log_level, log_format.lower())
    if config_path is not None:
        ctx.meta[_GLOBAL_CONFIG] = config_path


@cli.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@config_option
def check(path: Path | None, config_path: Path) -> None:
    """Validate feeds.yaml without touching the database; exit 2 listing every problem."""
    config = _load(path or config_path, cached=False)
    enabled = sum(1 for s in config.sources if s.enabled)
    click.echo(f"{path or config_path}: OK")
    click.echo(
        f"  {_count(len(config.sources), 'source')} ({enabled} enabled), "
        f"{_count(len(config.sections), 'section')}, {_count(len(config.topics), 'topic')}, "
        f"{_count(len(config.outputs), 'output')}, {_count(len(config.digests), 'digest')}"
    )


def listen_options(port_help: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def wrap(command: Callable[..., None]) -> Callable[..., None]:
        command = click.option(
            "--port", type=click.IntRange(1, 65535), envvar="AGGREGATOR_PORT", help=port_help
        )(command)
        return click.option(
            "--host",
            envvar="AGGREGATOR_HOST",
            help="Address to listen on ($AGGREGATOR_HOST; default: server.host).",
        )(command)

    return wrap


@cli.command()
@config_option
@listen_options("Port to listen on ($AGGREGATOR_PORT; default: server.port).")
def run(config_path: Path, host: str | None, port: int | None) -> None:
    """Run the whole service in one process (polling and the web server) until SIGTERM or
    Ctrl-C; SIGHUP (or saving feeds.yaml) reloads the config."""
    _serve(config_path, "run", host, port)


@cli.command()
@config_option
@listen_options("Port to listen on ($AGGREGATOR_PORT; default: server.port).")
def web(config_path: Path, host: str | None, port: int | None) -> None:
    """Serve the published feeds, pages, /status and /metrics only (run workers separately)."""
    _serve(config_path, "web", host, port)


@cli.command()
@config_option
@listen_options(
    "Serve /healthz, /readyz and /metrics on this port ($AGGREGATOR_PORT; default: none)."
)
def worker(config_path: Path, host: str | None, port: int | None) -> None:
    """Poll sources and send digests only, sharing the work with other workers through the
    database."""
    malloc.few_arenas()
    _serve(config_path, "worker", host, port)


def _serve(config_path: Path, role: str, host: str | None, port: int | None) -> None:
    from aggregator import service

    warmup.resume()  # the service runs for long: its collector is on
    try:
        service.run_forever(config_path, role, listen=service.Listen(host, port))
    except ConfigError as exc:
        _report_config_error(exc)
        raise SystemExit(2) from None


@cli.command()
@config_option
@click.option(
    "--source",
    "-s",
    "only",
    multiple=True,
    metavar="ID",
    help="Poll this source now, due or not (repeat for several).",
)
@click.option("--once", "every", is_flag=True, help="Poll every enabled source once, due or not.")
@click.option("--json", "as_json", is_flag=True, help="What each source gave as JSON, for scripts.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show the items the named sources give now (a page source's selectors at work) and "
    "how each would be filed; store nothing.",
)
def poll(
    config_path: Path, only: tuple[str, ...], every: bool, as_json: bool, dry_run: bool
) -> None:
    """Fetch the due sources now (or the named ones), then show what each one gave."""
    loading = _begin(config_path)
    from aggregator.feed import fetch
    from aggregator.poll import Poller, make_fetcher

    malloc.few_arenas()  # before the polling threads start
    fetch.prepare()  # while the config and the database are opened

    config = loading()
    unknown = [sid for sid in only if sid not in {s.id for s in config.sources}]
    if unknown:
        raise click.BadParameter(
            f"not in {config_path}: {', '.join(unknown)}", param_hint="--source"
        )
    if dry_run:
        if not only:
            raise click.UsageError("--dry-run shows named sources: add --source ID")
        _dry_run(config, only, as_json)
        return
    storage = _open_storage(config.storage.url)
    try:
        storage.sync_sources(config.sources)
        targets, total = _targets(storage, only, every)
        with (
            make_fetcher(config) as fetcher,
            _progress(total, "polling", show_pos=True) as advance,
        ):
            poller = Poller(storage, config, fetcher)
            try:
                results: list[PollResult] = poller.run_once(
                    only=targets, on_result=lambda _: advance()
                )
            finally:
                poller.close()
    finally:
        storage.close()
    failed = sum(1 for r in results if not r.ok)
    if as_json:
        import json

        click.echo(json.dumps([_poll_json(r) for r in results], indent=2, ensure_ascii=False))
    elif not results:
        click.echo("nothing is due; `aggregator poll --once` polls every source now")
    else:
        _poll_table(results)
    if failed:  # a script or cron job sees it: 3 when some failed, 4 when every one did
        raise SystemExit(EXIT_ALL_FAILED if failed == len(results) else EXIT_SOME_FAILED)


def _targets(storage: Storage, only: Sequence[str], every: bool) -> tuple[list[str] | None, int]:
    """The sources `poll` names (None: whatever is due) and how many it will poll; read for
    this and dropped before the poll (every source's state held through it was 6 MiB of the
    peak at 10,000 sources)."""
    if only:
        return list(only), len(only)
    now = storage.clock()
    pollable = storage.pollable_sources()
    if every:
        return [source_id for source_id, _ in pollable], len(pollable)
    return None, sum(1 for _, due_at in pollable if due_at <= now)


def _dry_run(config: Config, only: Sequence[str], as_json: bool) -> None:
    """`poll --source ID --dry-run`: what each source gives now, stored nowhere."""
    from aggregator.poll import make_fetcher, preview

    wanted = {s.id: s for s in config.sources}
    now = datetime.now(UTC)
    with make_fetcher(config) as fetcher:
        shown: list[Preview] = [preview(config, fetcher, wanted[sid], now) for sid in only]
    if as_json:
        import json

        click.echo(json.dumps([_preview_json(p) for p in shown], indent=2, ensure_ascii=False))
    else:
        for p in shown:
            _preview_text(p, wanted[p.source_id].page is not None, _zone(config))
        click.echo("Nothing was stored (--dry-run).")
    if any(p.error for p in shown):
        raise SystemExit(EXIT_ALL_FAILED if all(p.error for p in shown) else EXIT_SOME_FAILED)


def _preview_items(p: Preview) -> list[dict[str, Any]]:
    if p.prepared is None:
        return []
    filings = p.prepared.filings or {}
    items = []
    for entry in p.prepared.kept.entries:
        filing = filings.get(entry.key)
        items.append(
            {
                "title": entry.title,
                "link": entry.link,
                "published": entry.published.isoformat() if entry.published else None,
                "date_as_written": (p.dates or {}).get(entry.link or ""),
                "summary": _plain(entry.summary)[:300],
                "section": filing.section_id if filing else None,
                "topics": sorted(filing.topics) if filing else [],
            }
        )
    return items


def _plain(html: str) -> str:
    from aggregator.feed.sanitize import html_to_text

    return " ".join(html_to_text(html).split())


def _preview_json(p: Preview) -> dict[str, Any]:
    parsed = p.prepared.parsed if p.prepared else None
    return {
        "source": p.source_id,
        "url": p.url,
        "error": p.error,
        "discovered": p.discovered,
        "format": parsed.format if parsed else None,
        "title": parsed.title if parsed else None,
        "warning": parsed.warning if parsed else None,
        "items": _preview_items(p),
        "left_out": [
            {"title": entry.title, "link": entry.link, "why": str(why)}
            for entry, why in (p.prepared.kept.dropped if p.prepared else ())
        ],
    }


def _preview_text(p: Preview, page: bool, zone: str) -> None:
    if p.error is not None:
        click.echo(f"{p.source_id}: failed: {p.error}")
        return
    assert p.prepared is not None
    parsed, kept = p.prepared.parsed, p.prepared.kept
    what = "page" if page else parsed.format
    found = f" (a web page: its feed is {p.discovered})" if p.discovered else ""
    click.echo(f"{p.source_id}: {_count(len(kept.entries), 'item')} from {p.url} ({what}){found}")
    for n, item in enumerate(_preview_items(p), 1):
        click.echo(f"  {n}. {item['title'] or '(no title)'}")
        click.echo(f"     {item['link'] or '(no link)'}")
        published = p.prepared.kept.entries[n - 1].published
        when = _when(published, zone) if published else "no date (dated when first seen)"
        if page and item["date_as_written"]:
            when += f" (the page says {item['date_as_written']!r})"
        topics = ", ".join(item["topics"]) or "none"
        click.echo(f"     {when} · section {item['section']} · topics: {topics}")
        if item["summary"]:
            summary = item["summary"]
            click.echo(f"     {summary if len(summary) <= 100 else summary[:99] + '…'}")
    for entry, why in kept.dropped:
        click.echo(f"  left out by the source's filters: {entry.title!r} ({why})")
    if parsed.warning:
        click.echo(f"  warning: {parsed.warning}")


def _poll_json(result: PollResult) -> dict[str, Any]:
    read = result.ok and result.status != 304  # nothing was read on a 304 or a failure
    return {
        "source": result.source_id,
        "ok": result.ok,
        "status": result.status,
        "not_modified": result.status == 304,
        "new": result.new if read else None,
        "updated": result.updated if read else None,
        "unchanged": result.unchanged if read else None,
        "merged": result.merged if read else None,
        "error": result.error,
        "kind": result.kind or None,
        "warning": result.warning,
        "moved_to": result.moved_to,
        "discovered": result.discovered,
        "articles": result.articles,
        "article_failures": result.article_failures,
        "seconds": round(result.seconds, 3),
    }


def _poll_table(results: Sequence[PollResult]) -> None:
    rows = [("SOURCE", "STATUS", "NEW", "UPDATED", "UNCHANGED", "RESULT")]
    for r in sorted(results, key=lambda r: (r.ok, r.source_id)):
        outcome = "ok" if r.ok else f"failed: {r.error}"
        if r.ok and r.status == 304:
            outcome = "ok, not modified since the last poll"
        if r.ok and r.warning:
            outcome = f"{outcome}, {r.warning}"
        if r.articles:
            outcome += f"; {r.articles - r.article_failures} of {r.articles} article pages read"
        if r.discovered:
            outcome += f"; a web page: its feed is {r.discovered}, put that in feeds.yaml"
        elif r.moved_to:
            outcome += f"; moved to {r.moved_to}, update feeds.yaml"
        # nothing was read on a 304 or a failure: no counts, rather than zeros that say "none"
        read = r.ok and r.status != 304
        rows.append(
            (
                r.source_id,
                str(r.status or "-"),
                *((str(r.new), str(r.updated), str(r.unchanged)) if read else ("-", "-", "-")),
                outcome,
            )
        )
    _print_table(rows)
    failed = sum(1 for r in results if not r.ok)
    new = sum(r.new for r in results)
    click.echo(f"{len(results)} polled, {_count(new, 'new item')}, {failed} failed")


@cli.command()
@click.argument("url")
@config_option
@click.option("--json", "as_json", is_flag=True, help="The same as JSON, for scripts.")
def discover(url: str, config_path: Path, as_json: bool) -> None:
    """The feeds a web page names (autodiscovery), each fetched and read, and the YAML to use
    the one a source would poll. Exits 1 when the page leads to no feed."""
    from aggregator.feed.discover import look
    from aggregator.poll import make_fetcher

    config = _load(config_path) if config_path.exists() else None
    warmup.resume()  # loaded or not, the imports are done
    with make_fetcher(config) as fetcher:
        report = look(fetcher, url)
    if as_json:
        import json

        click.echo(json.dumps(report.as_json(), indent=2, ensure_ascii=False))
    else:
        _discovery_text(report)
    if report.chosen is None:
        raise SystemExit(1)


def _discovery_text(report: DiscoveryReport) -> None:
    from aggregator.opml import slug

    if report.problem is not None:
        click.echo(f"{report.url}: {report.problem}")
        return
    chosen = report.chosen
    if report.feed is not None:
        f = report.feed
        click.echo(
            f"{report.url} is a feed ({f.format}, {_count(f.entries, 'entry', 'entries')}"
            f"{', ' + repr(f.title) if f.title else ''}): use it as it is."
        )
    else:
        named = len(report.checked) + len(report.unchecked)
        if report.guessed:
            click.echo(
                f"{report.url} is a web page that names no feed"
                ' (no <link rel="alternate"> to RSS, Atom or JSON Feed).'
            )
            if report.checked:
                click.echo("The site answers a feed at a common address:")
        else:
            click.echo(f"{report.url} is a web page naming {_count(named, 'feed')}:")
        for c in report.checked:
            mark = "*" if chosen is not None and c.link.url == chosen.url else " "
            found = {"anchor": " (a link in the page)", "guess": " (a common address)"}
            click.echo(f"  {mark} {c.link.kind:<9} {c.link.url}{found.get(c.link.found, '')}")
            title = c.link.title or c.title
            if c.problem is None:
                said = f"{c.format}, {_count(c.entries, 'entry', 'entries')}"
                click.echo(f"              {repr(title) + ': ' if title else ''}{said}")
            else:
                click.echo(f"              not readable: {c.problem}")
        for link in report.unchecked:
            click.echo(f"    {link.kind:<9} {link.url} (not checked)")
        if chosen is None:
            click.echo("No feed found: this address cannot be a source.")
            return
        click.echo("* the feed a source with this url polls")
    assert chosen is not None
    name = (report.feed.title if report.feed else None) or next(
        (c.link.title or c.title for c in report.checked if c.link.url == chosen.url), None
    )
    from urllib.parse import urlsplit

    ident = slug(name or "") or slug(urlsplit(chosen.url).hostname or "") or "source"
    click.echo(f"In feeds.yaml:\n  - id: {ident}\n    url: {chosen.url}")


@cli.command("sources")
@config_option
@click.option("--json", "as_json", is_flag=True, help="A JSON list, for scripts.")
def list_sources(config_path: Path, as_json: bool) -> None:
    """Every source's health, failing ones first, with URL changes to copy into feeds.yaml."""
    import json

    from aggregator.health import report

    config = _load(config_path)
    storage = _open_storage(config.storage.url)
    try:
        rows = report(storage.sources(), storage.item_counts(), config.polling.unhealthy_after)
    finally:
        storage.close()
    if as_json:
        click.echo(json.dumps([r.as_json() for r in rows], indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("No sources stored yet: `aggregator run` or `aggregator poll` stores them.")
        return
    table = [("SOURCE", "STATUS", "ITEMS", "PER DAY", "LAST SUCCESS", "NEXT POLL", "PROBLEM")]
    for r in rows:
        s = r.state
        problem = s.last_error or s.last_warning or s.last_article_error or ""
        if s.consecutive_failures:
            times = _count(s.consecutive_failures, "failure")
            problem = f"{times} in a row: {problem}"
        table.append(
            (
                s.id,
                r.health.value,
                str(r.counts.stored),
                f"{r.per_day:.1f}",
                _when(s.last_success_at, _zone(config)),
                _when(s.next_due_at, _zone(config)),
                problem if len(problem) <= 100 else problem[:99] + "…",
            )
        )
    _print_table(table)
    for r in rows:
        if r.state.moved and r.state.discovered:
            click.echo(
                f"{r.state.id}: its url is a web page; polling the feed it names. In feeds.yaml:\n"
                f"  - id: {r.state.id}\n    url: {r.state.fetch_url}    # was {r.state.url}"
            )
        elif r.state.moved:
            click.echo(
                f"{r.state.id}: moved permanently; change its url in feeds.yaml to "
                f"{r.state.fetch_url}"
            )


@contextmanager
def _opened(config: Config) -> Iterator[Storage]:
    storage = _open_storage(config.storage.url)
    try:
        yield storage
    finally:
        storage.close()


def _find_item(storage: Storage, ref: str) -> int:
    """An item id, or the link of an item (the newest with that link)."""
    if ref.isdigit():
        return int(ref)
    found = storage.find_items(ref)
    if not found:
        raise click.ClickException(f"no stored item has the link {ref}")
    return found[0]


def _describe_join(reason: Mapping[str, Any]) -> str:
    how = reason.get("by")
    if how == "link":
        return "same link as another item of the story"
    if how == "text":
        return f"alike text: similarity {reason.get('score')} to item {reason.get('item')}"
    if how == "editor":
        return "split off by an editor (never merged again)"
    return "opened the story"


@cli.command()
@config_option
@click.argument("item")
@click.option("--json", "as_json", is_flag=True, help="The same as JSON, for scripts.")
def explain(config_path: Path, item: str, as_json: bool) -> None:
    """Why ITEM (an id or a link) is filed where it is: section, topics, story, and reasons."""
    from aggregator.process.categorise import SectionChoice, TopicVerdict
    from aggregator.process.pipeline import Processor

    config = _load(config_path)
    with _opened(config) as storage:
        details = storage.item_details(_find_item(storage, item))
    if details is None:
        raise click.ClickException(f"no stored item {item}")
    it = details.item
    section = SectionChoice.from_json(it.section_id or "", details.section_reason)
    topics = [
        TopicVerdict.from_json(topic_id, reason)
        for topic_id, reason in details.topic_reasons.items()
    ]
    # what the current rules say, which may differ from when the item was filed
    rules = Processor(config).categoriser
    verdicts = rules.verdicts(it.source_id, it.entry)
    section_now = rules.section(it.source_id, it.entry).section_id
    topics_now = [v.topic_id for v in verdicts if v.assigned]
    near = [v for v in verdicts if not v.assigned and v.hits]
    differs = section_now != (it.section_id or "") or set(topics_now) != set(it.topics)
    if as_json:
        import json

        from aggregator.health import iso

        explained = {
            "id": it.id,
            "title": it.entry.title,
            "source": it.source_id,
            "link": it.entry.link,
            "published": iso(it.published),
            "first_seen": iso(it.first_seen_at),
            "article_error": it.article_error,
            "section": {"id": it.section_id, **section.as_json(), "because": section.describe()},
            "topics": [
                {
                    "id": verdict.topic_id,
                    "because": verdict.describe(),
                    "hits": [hit.as_json() for hit in verdict.distinct()],
                    "matches": verdict.matches,
                }
                for verdict in topics
            ],
            "story": [
                {
                    "id": member.item.id,
                    "source": member.item.source_id,
                    "title": member.item.entry.title,
                    "leads": member.lead,
                    "joined": _describe_join(member.reason),
                }
                for member in details.members
            ],
            "near_misses": [{"id": v.topic_id, "because": v.describe()} for v in near],
            "current_rules": {"section": section_now, "topics": topics_now, "differ": differs},
        }
        click.echo(json.dumps(explained, indent=2, ensure_ascii=False))
        return
    click.secho(f"Item {it.id}: {it.entry.title}", bold=True)
    click.echo(f"  source     {it.source_id}")
    click.echo(f"  link       {it.entry.link or '-'}")
    zone = _zone(config)
    click.echo(
        f"  published  {_when(it.published, zone)} (first seen {_when(it.first_seen_at, zone)})"
    )
    if it.article_error:
        click.echo(f"  article    not read: {it.article_error}")
    click.secho(f"Section: {it.section_id or '-'}", bold=True)
    click.echo(f"  because {section.describe()}")
    click.secho(f"Topics: {', '.join(it.topics) or 'none'}", bold=True)
    for verdict in topics:
        click.echo(f"  {verdict.topic_id}: {verdict.describe()}")
    if details.members:
        click.secho(f"Story: {_count(len(details.members), 'item')}", bold=True)
        for member in details.members:
            mark = ">" if member.item.id == it.id else " "
            lead = " (leads the story)" if member.lead else ""
            click.echo(
                f" {mark} {member.item.id:>7} {member.item.source_id:<20} "
                f"{member.item.entry.title[:60]}{lead}"
            )
            click.echo(f"           {_describe_join(member.reason)}")
        if len(details.members) > 1:
            click.echo(f"  a wrong merge? `aggregator unmerge {it.id}` splits this item off")
    else:
        click.secho("Story: this item alone (no other source carries it)", bold=True)
    if near:
        click.secho("Near misses:", bold=True)
        for verdict in near:
            click.echo(f"  {verdict.topic_id}: {verdict.describe()}")
    if differs:
        click.secho(
            f"The current rules would file it under {section_now} with topics "
            f"{', '.join(topics_now) or 'none'}: `aggregator recategorise` applies them.",
            fg="yellow",
        )


@cli.command()
@config_option
@click.argument("item")
def unmerge(config_path: Path, item: str) -> None:
    """Split ITEM (an id or a link) off its story into one of its own, for good."""
    config = _load(config_path)
    with _opened(config) as storage:
        item_id = _find_item(storage, item)
        story = storage.detach_item(item_id)
    if story is None:
        raise click.ClickException(f"no stored item {item}")
    click.echo(f"item {item_id} now stands alone as story {story}; it will not be merged again")


@cli.command()
@config_option
@click.option("--dry-run", is_flag=True, help="Show what would move; change nothing.")
def recategorise(config_path: Path, dry_run: bool) -> None:
    """Apply the current section and topic rules to every stored item; show what moves."""
    from aggregator.process.pipeline import Processor
    from aggregator.refile import recategorise as refile_all

    config = _load(config_path)
    with _opened(config) as storage:
        storage.sync_sources(config.sources)
        total = storage.count_items()
        with _progress(total, "recategorising", show_pos=True) as advance:
            report = refile_all(storage, Processor(config), dry_run=dry_run, progress=advance)
    verb = "would move" if dry_run else "moved"
    click.echo(f"{_count(report.checked, 'item')} checked, {report.changed} {verb}")
    if report.movements:
        rows = [("", "NAME", "IN", "OUT", "EXAMPLES")]
        for (kind, name), move in sorted(report.movements.items()):
            examples = [f"+{i.id} {i.entry.title[:40]}" for i in move.came_examples]
            examples += [f"-{i.id} {i.entry.title[:40]}" for i in move.left_examples]
            rows.append((kind, name, str(move.came), str(move.left), examples[0]))
            rows.extend(("", "", "", "", example) for example in examples[1:])
        _print_table(rows)
    if dry_run and report.rewritten:
        click.echo("nothing was changed (--dry-run)")


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    """In one write: `click.echo` a line looks at the stream and flushes it each time (a poll of
    1,000 sources printed its table in 25 ms)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    click.echo(
        "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )
    )


def _when(moment: datetime | None, zone: str = "UTC") -> str:
    """A time in the config's (or a digest's) time zone, saying which: `2026-11-30 07:00 CET`."""
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z") if moment else "-"


def _zone(config: Config, digest: Digest | None = None) -> str:
    return (digest.timezone if digest else None) or config.defaults.timezone


@cli.group()
def db() -> None:
    """Database schema."""


@db.command()
@config_option
def upgrade(config_path: Path) -> None:
    """Apply every pending migration (also done on each start)."""
    config = _load(config_path)
    storage = _open_storage(config.storage.url, upgrade=False)
    try:
        before = storage.schema_revision()
        storage.upgrade()
        after = storage.schema_revision()
    finally:
        storage.close()
    if before == after:
        click.echo(f"{storage.url}: already at revision {after}")
    else:
        click.echo(f"{storage.url}: upgraded from {before or 'empty'} to {after}")


@db.command()
@config_option
def status(config_path: Path) -> None:
    """Show the database's schema revision and the newest this version knows."""
    from aggregator.storage import migrate

    config = _load(config_path)
    storage = _open_storage(config.storage.url, upgrade=False)
    try:
        current = storage.schema_revision()
    finally:
        storage.close()
    newest = migrate.head()
    state = "up to date" if current == newest else "needs `aggregator db upgrade`"
    click.echo(f"{storage.url}: revision {current or 'empty'}, newest {newest}: {state}")


@cli.group()
def opml() -> None:
    """Move subscriptions between this service and other feed readers."""


@opml.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option
@click.option(
    "--section",
    default="general",
    show_default=True,
    help="Section for feeds the OPML file puts in no category.",
)
@click.option(
    "--write",
    is_flag=True,
    help="Add the sources to the config file (comments kept) instead of printing them.",
)
def opml_import(file: Path, config_path: Path, section: str, write: bool) -> None:
    """Turn an OPML export of another reader into sources: entries."""
    from aggregator.config import load_text, yamlfile
    from aggregator.opml import plan_import, read_opml

    config = _load(config_path) if config_path.exists() else None
    warmup.resume()  # loaded or not, the imports are done
    plan = plan_import(read_opml(file.read_bytes()), config, section)
    for reason in plan.skipped:
        click.echo(f"skipped {reason}", err=True)
    additions: dict[str, Any] = {"sections": list(plan.sections), "sources": list(plan.sources)}
    if not plan.sources:
        click.echo(f"nothing to add to {config_path}: {_count(len(plan.skipped), 'feed')} skipped")
        return
    if not write:
        click.echo(yamlfile.dump({k: v for k, v in additions.items() if v}), nl=False)
        return
    original = config_path.read_text(encoding="utf-8") if config_path.exists() else ""
    merged = yamlfile.append_to_lists(original, additions)
    try:
        load_text(merged, str(config_path))
    except ConfigError as exc:
        _report_config_error(exc)
        raise SystemExit(2) from None
    temporary = config_path.with_name(f".{config_path.name}.tmp")
    temporary.write_text(merged, encoding="utf-8")
    temporary.replace(config_path)
    click.echo(
        f"added {_count(len(plan.sources), 'source')} and "
        f"{_count(len(plan.sections), 'section')} to {config_path}"
    )


@opml.command("export")
@config_option
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of standard output.",
)
def opml_export(config_path: Path, out: Path | None) -> None:
    """Write the configured sources as OPML 2.0."""
    from aggregator.opml import write_opml

    config = _load(config_path)
    data = write_opml(config, "Aggregator sources", datetime.now(UTC), _feed_titles(config))
    if out:
        out.write_bytes(data)
        click.echo(f"wrote {out}")
    else:
        sys.stdout.buffer.write(data)


def _feed_titles(config: Config) -> dict[str, str]:
    """Source id -> the title its feed gives itself, as polling stored it; none when the
    database cannot be opened (the export goes on with the configured titles and ids)."""
    from aggregator.storage import may_hold_data

    if not may_hold_data(config.storage.url):
        return {}  # never polled here: nothing learned, and no database to create for it
    try:
        storage = _open_storage(config.storage.url)
    except AggregatorError as exc:
        click.echo(f"note: sources are titled as configured, not as their feeds: {exc}", err=True)
        return {}
    try:
        return {s.id: s.feed_title for s in storage.sources() if s.feed_title}
    finally:
        storage.close()


@cli.command("export")
@config_option
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write; it is replaced as a whole once the new export is complete.",
)
def export_command(config_path: Path, out: Path) -> None:
    """Write every published feed, the OPML list and the HTML pages to a directory, for a
    static host or CDN."""
    from aggregator.publish.export import count, export
    from aggregator.publish.publisher import Publisher

    config = _load(config_path)
    with _opened(config) as storage:
        publisher = Publisher(storage, config, paged=False)
        with _progress(count(publisher), "exporting", item_show_func=lambda name: name) as step:
            report = export(publisher, out, lambda name: step(1, name))
    click.echo(f"wrote {_count(report.files, 'file')} ({report.bytes:,} bytes) to {report.out}")


@cli.group()
def digest() -> None:
    """E-mail digests: preview what the next one holds, list their state."""


def _digest(config: Config, digest_id: str) -> Any:
    found = next((d for d in config.digests if d.id == digest_id), None)
    if found is None:
        known = ", ".join(d.id for d in config.digests) or "none"
        raise click.ClickException(f"no digest {digest_id!r} in the config (known: {known})")
    return found


@digest.command("preview")
@config_option
@click.argument("digest_id", metavar="ID")
@click.option(
    "--out",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help=(
        "Write the HTML (or with --text the text) to this file. Without it the output goes to "
        "a pipe as it is, and in a terminal the HTML goes to a temporary file."
    ),
)
@click.option("--text", "as_text", is_flag=True, help="The plain-text part instead of the HTML.")
def digest_preview(config_path: Path, digest_id: str, out: Path | None, as_text: bool) -> None:
    """Render the digest ID from the items stored now, as it would go out, without sending."""
    from aggregator.digest.compose import compose
    from aggregator.digest.periods import current
    from aggregator.digest.render import render_digest

    config = _load(config_path)
    chosen = _digest(config, digest_id)
    with _opened(config) as storage:
        runs = storage.digest_runs(chosen.id, limit=1)
        period = current(chosen, datetime.now(UTC), runs[0] if runs else None)
        view = compose(storage, config, chosen, period)
    rendered = render_digest(
        view,
        f"your address is on the list of recipients of {chosen.title}",
        config.publishing.templates,
    )
    data = (rendered.text if as_text else rendered.html).encode("utf-8")
    if out is None and not as_text and sys.stdout.isatty():
        # pages of HTML are no use in a terminal: a file to open in a browser instead
        import tempfile

        handle, name = tempfile.mkstemp(prefix=f"digest-{chosen.id}-", suffix=".html")
        os.close(handle)
        out = Path(name)
    if out:
        out.write_bytes(data)
        click.echo(
            f"wrote {out}: {rendered.subject!r}, {_count(view.count, 'story', 'stories')} "
            f"({view.total} new since {_when(view.period.start, _zone(config, chosen))})"
        )
        if not as_text:
            click.echo(f"open it in a browser: {out.resolve().as_uri()}")
    else:
        sys.stdout.buffer.write(data)


@digest.command("send")
@config_option
@click.argument("digest_id", metavar="ID")
@click.option("--dry-run", is_flag=True, help="Show what would go to whom; send nothing.")
@click.option(
    "--to",
    "only_to",
    metavar="ADDRESS",
    help="Send one copy to this address only (a test: no period is recorded).",
)
def digest_send(config_path: Path, digest_id: str, dry_run: bool, only_to: str | None) -> None:
    """Send the digest ID now: what is new since its last period (or finish a run that was
    cut off), to every recipient who has not had it."""
    from aggregator.digest.compose import compose
    from aggregator.digest.dispatch import Dispatcher, signer_for
    from aggregator.digest.periods import current
    from aggregator.digest.send import Mailer
    from aggregator.poll import worker_id
    from aggregator.types import RunStatus

    config = _load(config_path)
    chosen = _digest(config, digest_id)
    with _opened(config) as storage:
        dispatcher = Dispatcher(
            storage, config, signer_for(config), lambda: Mailer(config.smtp), worker_id()
        )
        runs = storage.digest_runs(chosen.id, limit=1)
        last = runs[0] if runs else None
        period = current(chosen, datetime.now(UTC), last)
        if last is not None and last.status is RunStatus.SENDING:
            period = replace(period, start=last.period_start, end=last.period_end)
        if dry_run or only_to:
            view = compose(storage, config, chosen, period)
            recipients = dispatcher.recipients(chosen)
            click.echo(
                f"{chosen.id}: {_count(view.count, 'story', 'stories')} from "
                f"{_when(period.start, _zone(config, chosen))} to "
                f"{_when(period.end, _zone(config, chosen))}"
            )
            if only_to:
                if not dispatcher.send_test(chosen, view, only_to):
                    raise click.ClickException(f"the test copy to {only_to} was not sent")
                click.echo(f"sent a test copy to {only_to}")
                return
            done = set()
            if last is not None and last.status is RunStatus.SENDING:
                done = storage.delivered_recipients(last.id)
            for address, subscribed in recipients:
                how = "subscriber" if subscribed else "recipient in feeds.yaml"
                state = "already sent" if address in done else "would be sent"
                click.echo(f"  {address} ({how}): {state}")
            click.echo(f"{_count(len(recipients), 'recipient')}; nothing was sent (--dry-run)")
            return
        report = dispatcher.run(chosen, period)
    if report is None:
        raise click.ClickException(
            f"{chosen.id}: another worker is sending this period, or it has no sender "
            "(set `from` or `smtp.from`)"
        )
    click.echo(
        f"{chosen.id}: {_count(report.stories, 'story', 'stories')}; "
        f"{report.sent} sent, {report.failed} refused, {report.pending} to retry, of "
        f"{_count(report.recipients, 'recipient')}"
    )
    if report.failed or report.pending:
        raise SystemExit(1)


@digest.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="A JSON list, for scripts.")
def digest_list(config_path: Path, as_json: bool) -> None:
    """Every digest: its schedule, last period and how it went, and when it runs next (in the
    same words as /status)."""
    import json

    from aggregator.digest.periods import editions
    from aggregator.status import failure_text, summarise_digest

    config = _load(config_path)
    now = datetime.now(UTC)
    with _opened(config) as storage:
        found = [
            (chosen, summarise_digest(storage, chosen, now, edition))
            for chosen in config.digests
            for edition in editions(chosen)
        ]
    if as_json:
        click.echo(json.dumps([row.as_json() for _, row in found], indent=2, ensure_ascii=False))
        return
    if not found:
        click.echo("No digests in the config: see `digests:` in the README.")
        return
    rows = [
        ("DIGEST", "SCHEDULE", "LAST PERIOD", "STATE", "SENT", "REFUSED", "RETRYING", "NEXT RUN")
    ]
    for chosen, row in found:
        zone = _zone(config, chosen)
        rows.append(
            (
                row.id,
                row.schedule,
                f"{_when(row.period_start, zone)} to {_when(row.period_end, zone)}"
                if row.last
                else "-",
                row.state,
                str(row.sent),
                str(row.refused),
                str(row.retrying),
                _when(row.next_run, zone),
            )
        )
    _print_table(rows)
    for _, row in found:
        for delivery in row.failures:
            click.echo(f"{row.id}: {failure_text(delivery)} ({delivery.attempts} attempts)")


EXIT_SOME_FAILED = 3  # `poll`: some sources failed; what the others gave is stored
EXIT_ALL_FAILED = 4  # `poll`: every source polled failed (offline? a proxy?)


def main() -> None:
    """Entry point: aggregator errors become one clear line and exit 1, not a traceback."""
    malloc.steady()
    try:
        cli.main(standalone_mode=True)
    except AggregatorError as exc:
        click.secho(f"error: {exc}", err=True, fg="red")
        raise SystemExit(1) from None
    finally:
        warmup.resume()  # if the program paused the collector and the command did not resume it
