"""The schema of feeds.yaml, declared once: types, defaults and the help text the README documents.

The config types are plain frozen dataclasses, validated by pydantic (the only module that
imports it): pydantic collects every problem of a document in one pass and gives each a path, which
the loader turns into file:line:column. Cross-references (a source naming a section that does not
exist) are checked by the loader, not here, so that they are reported even when other parts are
malformed.

pydantic is imported only when a document is validated, never to use a config: its import and
the validators it builds cost a poll of 1,000 sources 0.2 s and about 15 MiB, which a config
loaded from the cache of validated configs (config/cache.py) does without. So the declarations
here say what pydantic needs in its own plain terms: each field's help text, alias and bounds in
the dataclass field's metadata (which pydantic reads), checks as `_After`/`_Before` markers,
and each class's pydantic settings as `__pydantic_config__`.
"""

from __future__ import annotations

import dataclasses
import re
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass
from datetime import timedelta
from difflib import get_close_matches
from functools import cache
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    ClassVar,
    Literal,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)
from urllib.parse import urlsplit

from aggregator.process.terms import path_problem, term_problem

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler, TypeAdapter
    from pydantic_core import CoreSchema

# pydantic's settings of each class (a ConfigDict, which is a plain dict)
_FROZEN: dict[str, Any] = {"extra": "forbid", "str_strip_whitespace": True}
# for types with an aliased key (`from`), so that the loader can fill in defaults by field name
_FROZEN_ALIASED: dict[str, Any] = {**_FROZEN, "populate_by_name": True}


class CheckError(ValueError):
    """What a check found wrong, as pydantic reports it: a kind, a message template with `{name}`
    places, and the values for them. Raised by the checks below, which run only inside pydantic's
    validation; made into pydantic's own error there (`_After`, `_Before`)."""

    def __init__(self, kind: str, template: str, context: dict[str, Any]) -> None:
        super().__init__(template.format(**context))
        self.kind, self.template, self.context = kind, template, context


def _reported(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`check`, its `CheckError` turned into pydantic's PydanticCustomError."""
    from pydantic_core import PydanticCustomError

    def run(value: Any) -> Any:
        try:
            return check(value)
        except CheckError as problem:
            raise PydanticCustomError(problem.kind, problem.template, problem.context) from None

    return run


@dataclass(frozen=True)
class _After:
    """Annotated metadata: `check` runs on the value after its type is validated."""

    check: Callable[[Any], Any]
    _WRAP: ClassVar[str] = "no_info_after_validator_function"  # pydantic_core's wrapper

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        from pydantic_core import core_schema

        wrap = getattr(core_schema, self._WRAP)
        schema: CoreSchema = wrap(_reported(self.check), handler(source))
        return schema


class _Before(_After):
    """Annotated metadata: `check` runs on the value as written, before its type is validated
    (and may convert it: `15m` to a timedelta)."""

    _WRAP: ClassVar[str] = "no_info_before_validator_function"


FORMATS = ("atom", "rss", "json")
EXTRA_KEY = ("extra_forbidden", "unexpected_keyword_argument")
TOPIC_FIELDS = ("title", "summary", "content", "categories", "publisher")

# -- value types an editor writes -------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+)\s*([smhd])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> timedelta:
    """`30s`, `15m`, `2h`, `1d` or a sum such as `1h30m`; a bare number is refused (which unit?)."""
    if isinstance(value, timedelta):
        return value
    text = str(value).strip().lower().replace(" ", "")
    if not isinstance(value, bool) and text and _DURATION_PART.sub("", text) == "":
        seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
        return timedelta(seconds=seconds)
    raise CheckError(
        "duration", "{value} is not a duration (use 30s, 15m, 2h)", {"value": _show(value)}
    )


_SIZE = re.compile(r"(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?")
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size(value: object) -> int:
    """A number of bytes: `10MiB`, `500KB`, or a plain number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(str(value).strip().lower().replace(" ", ""))
    if not match or isinstance(value, bool):
        raise CheckError(
            "size",
            "{value} is not a size (use 500KB, 10MiB or a number of bytes)",
            {"value": _show(value)},
        )
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def format_duration(value: timedelta) -> str:
    """The shortest spelling `parse_duration` reads back, for messages and OPML import."""
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def _at_least(minimum: timedelta) -> _After:
    def check(value: timedelta) -> timedelta:
        if value < minimum:
            raise CheckError(
                "duration_too_short",
                "{value} is too short (at least {minimum})",
                {"value": format_duration(value), "minimum": format_duration(minimum)},
            )
        return value

    return _After(check)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _show(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)


_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def _check_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise CheckError(
            "id",
            "{value} is not a valid id (use lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit)",
            {"value": _show(value)},
        )
    return value


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
        raise CheckError(
            "url",
            "{value} is not a valid URL (expected http:// or https:// and a host name)",
            {"value": _show(value)},
        )
    return value


def email_problem(value: str) -> tuple[str | None, str]:
    """(what is wrong, None when nothing) and the address in its normal form."""
    import email_validator  # 40 ms and 17 modules, for configs that name an address only

    try:
        return None, email_validator.validate_email(value, check_deliverability=False).normalized
    except email_validator.EmailNotValidError as exc:
        return _lower_first(str(exc).rstrip(".")), value


def _check_email(value: str, written: str | None = None) -> str:
    """`value` if it is an address; the error shows it as `written` (a recipient with its name)."""
    import email_validator

    try:
        email_validator.validate_email(value, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        raise CheckError(
            "email",
            "{value} is not a valid e-mail address ({reason})",
            {"value": _show(written or value), "reason": _lower_first(str(exc).rstrip("."))},
        ) from None
    return value


_NAMED = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^"<>]*?))\s*<([^<>]*)>\s*')


def recipient_parts(value: str) -> tuple[str, str]:
    """(display name, address) of a recipient written `Zoë <zoe@example.org>` (or with the name
    quoted, `"Doe, Jane" <jane@example.org>`), the way every mail tool takes one, or ("", the
    address) of a bare address; ("", "") when it is neither."""
    if "<" not in value and ">" not in value:
        return "", value.strip()
    match = _NAMED.fullmatch(value)
    if match is None:
        return "", ""
    quoted, bare, address = match.groups()
    name = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
    return name.strip(), address.strip()


def _check_recipient(value: str) -> str:
    value = value.strip()
    address = recipient_parts(value)[1]
    if not address:
        raise CheckError(
            "email",
            "{value} is neither an address nor a name and an address (`Zoë <zoe@example.org>`)",
            {"value": _show(value)},
        )
    _check_email(address, value)
    return value


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = get_close_matches(value, _zone_names(), n=1, cutoff=0.6)
        hint = (
            f" (did you mean {close[0]!r}?)"
            if close
            else " (use an IANA name such as Europe/London)"
        )
        raise CheckError(
            "timezone", "{value} is not a time zone{hint}", {"value": _show(value), "hint": hint}
        ) from None
    return value


def _check_cron(value: str) -> str:
    # here, not at the top: APScheduler costs 14 MiB and 60 ms, and only cron fields need it
    from aggregator import scheduling

    problem = scheduling.cron_problem(value)
    if problem:
        raise CheckError(
            "cron",
            "{value} is not a cron schedule: {problem} "
            "(five fields: minute hour day-of-month month day-of-week, e.g. '0 7 * * *')",
            {"value": _show(value), "problem": problem.replace("Error validating expression ", "")},
        )
    return value


def _check_term(value: str) -> str:
    """A matching term: a word or phrase, `word*` for a prefix, or `/regex/` for experts."""
    problem = term_problem(value)
    if problem:
        raise CheckError("term", "{problem}", {"problem": problem})
    return value


def _check_path(value: str) -> str:
    problem = path_problem(value)
    if problem:
        raise CheckError("path", "{problem}", {"problem": problem})
    return value


def _check_selector(value: str) -> str:
    """A CSS selector, compiled here so `aggregator check` rejects one that cannot be (the HTML
    reader loads only for a config that has page sources)."""
    from aggregator.feed.webpage import selector_problem

    problem = (
        selector_problem(value)
        if value.strip()
        else "an empty selector (write one, or leave the key out)"
    )
    if problem:
        raise CheckError("selector", "{problem}", {"problem": problem})
    return value.strip()


_LANGUAGE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,8})*")


def _check_language(value: str) -> str:
    if not _LANGUAGE.fullmatch(value.lower()):
        raise CheckError(
            "language",
            "{value} is not a language code (use one such as en, fr, ar or pt-br)",
            {"value": _show(value)},
        )
    return value.lower()


Id = Annotated[str, _After(_check_id)]
Url = Annotated[str, _After(_check_url)]
Email = Annotated[str, _After(_check_email)]
Recipient = Annotated[str, _After(_check_recipient)]
TimeZone = Annotated[str, _After(_check_timezone)]
Cron = Annotated[str, _After(_check_cron)]
Term = Annotated[str, _After(_check_term)]
PathPattern = Annotated[str, _After(_check_path)]
Language = Annotated[str, _After(_check_language)]
Selector = Annotated[str, _After(_check_selector)]
Duration = Annotated[timedelta, _Before(parse_duration)]
Interval = Annotated[timedelta, _Before(parse_duration), _at_least(timedelta(seconds=30))]
Size = Annotated[int, _Before(parse_size)]
Format = Literal["atom", "rss", "json"]


def _doc(
    text: str, default: Any = dataclasses.MISSING, *, default_factory: Any = None, **bounds: Any
) -> Any:
    """A field with its help text (the README must document every field: tests check), and
    pydantic's `alias`, `ge` or `le` where given: pydantic reads them from the field's metadata."""
    metadata = {"description": text, **bounds}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# -- the sections of feeds.yaml ---------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """A part of the publication every item is filed under exactly once (World, Opinion, ...)."""

    __pydantic_config__ = _FROZEN

    id: Id = _doc("Short lowercase name, used in URLs such as /sections/world.atom.")
    title: str = _doc("Name shown to readers.")
    description: str = _doc("One sentence for feed readers and the index page.", "")
    paths: tuple[PathPattern, ...] = _doc(
        "Items whose link has one of these in its path go here, whatever their source: "
        "`/opinion/`, or with a host, `theguardian.com/commentisfree/`; `*` stands for any "
        "characters but `/`. The first section (in file order) with a matching rule wins.",
        (),
    )
    categories: tuple[Term, ...] = _doc(
        "Items the feed itself files under one of these categories go here (when no path "
        "rule matched): a category must equal the term, ignoring case and accents.",
        (),
    )


@dataclass(frozen=True)
class Topic:
    """A subject an item can be about (zero or more per item), found by matching terms."""

    __pydantic_config__ = _FROZEN

    id: Id = _doc("Short lowercase name, used in URLs such as /topics/climate.atom.")
    title: str = _doc("Name shown to readers.")
    description: str = _doc("One sentence for feed readers and the index page.", "")
    keywords: tuple[Term, ...] = _doc(
        "Terms that file an item under this topic: words or phrases (matched on word "
        "boundaries, ignoring case and accents), `word*` for a prefix, `/regex/` for experts.",
        (),
    )
    exclude: tuple[Term, ...] = _doc("Terms that keep an item out of this topic.", ())
    fields: tuple[Literal["title", "summary", "content", "categories", "publisher"], ...] = _doc(
        "Which parts of an item the terms are looked for in; `publisher` is the publisher's own "
        "filing read off the article page (full_text sources): breadcrumb, section, keywords, "
        "tags and labels.",
        TOPIC_FIELDS,
    )
    min_matches: int = _doc("How many keyword hits an item needs.", 1, ge=1)


@dataclass(frozen=True)
class PageRules:
    """How to read articles off a web page that has no feed: CSS selectors."""

    __pydantic_config__ = _FROZEN

    items: Selector = _doc("Each article on the page, e.g. `article`, `ul.news li`.")
    link: Selector | None = _doc(
        "The article's link, inside an item; the item itself if it is a link, else its first "
        "`a[href]`, when not given.",
        None,
    )
    title: Selector | None = _doc(
        "The headline, inside an item; the link's text when not given.", None
    )
    date: Selector | None = _doc(
        "The date, inside an item: an element with a `datetime` or `content` attribute (such as "
        "`time`), or text such as `29 Nov 2026 14:05`; the time first seen when not given.",
        None,
    )
    summary: Selector | None = _doc("The lead or teaser, inside an item.", None)


@dataclass(frozen=True, slots=True)
class Source:
    """One feed to poll."""

    __pydantic_config__ = _FROZEN

    id: Id = _doc("Short lowercase name; stays the same when the URL changes.")
    url: Url = _doc(
        "Address of the RSS, Atom or JSON feed, or of a web page that names its feed "
        '(found through the page\'s `<link rel="alternate">`).'
    )
    section: Id = _doc("The section its items are filed under unless a rule says otherwise.")
    title: str = _doc("Name shown to readers; the feed's own title when empty.", "")
    topics: tuple[Id, ...] = _doc("Topics every item of this source gets.", ())
    interval: Interval | None = _doc(
        "How often to poll, e.g. 30s, 15m, 2h; `defaults.interval` when not given.", None
    )
    enabled: bool = _doc("`false` stops polling but keeps the source's items.", True)
    headers: Mapping[str, str] = _doc(
        'Extra HTTP request headers, e.g. an API key: `{Authorization: "Bearer ${TOKEN}"}`.',
        default_factory=dict,
    )
    include: tuple[Term, ...] = _doc("Keep only items matching at least one of these terms.", ())
    exclude: tuple[Term, ...] = _doc("Drop items matching any of these terms.", ())
    min_words: int = _doc("Drop items shorter than this many words (title and text).", 0, ge=0)
    languages: tuple[Language, ...] = _doc(
        "Keep only items in these languages (`en` also takes `en-GB`); items whose feed "
        "gives no language are kept.",
        (),
    )
    priority: int = _doc(
        "When several sources carry one story, the highest priority source's item leads.", 0
    )
    adaptive: bool | None = _doc(
        "Poll as often as the feed really publishes; `polling.adaptive` when not given.", None
    )
    page: PageRules | None = _doc(
        "Read `url` as a web page listing articles, for an outlet with no feed: CSS selectors "
        "for each article and its link, title, date and summary.",
        None,
    )
    full_text: bool = _doc(
        "Fetch each new item's article page and keep its main text as the item's content (the "
        "feed's teaser stays the summary); for feeds that carry only a teaser.",
        False,
    )


@dataclass(frozen=True)
class Filter:
    """Which items an output or digest takes; empty lists mean no restriction."""

    __pydantic_config__ = _FROZEN

    sections: tuple[Id, ...] = _doc("Only items in these sections.", ())
    topics: tuple[Id, ...] = _doc("Only items with at least one of these topics.", ())
    sources: tuple[Id, ...] = _doc("Only items from these sources.", ())
    include: tuple[Term, ...] = _doc("Only items matching at least one of these terms.", ())
    exclude: tuple[Term, ...] = _doc("Leave out items matching any of these terms.", ())
    min_words: int = _doc("Only items of at least this many words.", 0, ge=0)
    languages: tuple[Language, ...] = _doc(
        "Only items in these languages (or whose feed gives none).", ()
    )
    every_item: bool = _doc(
        "`true` lists every item; by default a story told by several sources appears once, "
        "as its leading item.",
        False,
    )
    max_age: Duration | None = _doc(
        "Only items published within this long, e.g. 2d; older ones drop out of the feed.", None
    )


@dataclass(frozen=True)
class Output:
    """A feed the service publishes."""

    __pydantic_config__ = _FROZEN

    id: Id = _doc("Short lowercase name, used in URLs such as /feeds/ID.atom.")
    title: str = _doc("Title of the published feed.")
    description: str = _doc("Subtitle of the published feed.", "")
    filter: Filter = _doc("Which items go in.", default_factory=Filter)
    formats: tuple[Format, ...] | None = _doc(
        "Which of atom, rss, json to publish; `defaults.formats` when not given.", None
    )
    limit: int | None = _doc(
        "How many entries the feed holds; `defaults.limit` when not given.", None, ge=1, le=1000
    )


@dataclass(frozen=True)
class Digest:
    """An e-mail sent on a schedule with what is new since the last one."""

    __pydantic_config__ = _FROZEN_ALIASED

    id: Id = _doc("Short lowercase name, used in unsubscribe links and `aggregator digest`.")
    title: str = _doc("Name of the digest, shown in the e-mail.")
    schedule: Cron = _doc("When to send, as cron: minute hour day-of-month month day-of-week.")
    weekly: Cron | None = _doc(
        "Offer recipients a weekly edition too, sent on this schedule (say `0 7 * * 1`): each "
        "chooses on the page every copy links to.",
        None,
    )
    timezone: TimeZone | None = _doc(
        "Time zone of the schedule and of times in the e-mail; `defaults.timezone` when not given.",
        None,
    )
    output: Id | None = _doc("Take the items of this output (give `output` or `filter`).", None)
    filter: Filter | None = _doc("Or choose the items here.", None)
    recipients: tuple[Recipient, ...] = _doc(
        "Addresses that always get this digest, bare or with a name (`Zoë <zoe@example.org>`).",
        (),
    )
    max_items: int = _doc("Most stories in one e-mail (the newest are kept).", 50, ge=1, le=500)
    group_by: Literal["section", "topic", "source", "none"] = _doc(
        "How stories are grouped under headings.", "section"
    )
    subject: str = _doc(
        "Subject line; {title}, {count} (stories) and {date} (the period's end) are filled in.",
        "{title}: {count} new, {date}",
    )
    sender: Email | None = _doc(
        "Address it comes from; `smtp.from` when not given.", None, alias="from"
    )
    reply_to: Email | None = _doc("Address replies go to.", None)
    skip_empty: bool = _doc("`false` sends an e-mail even when nothing is new.", True)

    def __post_init__(self) -> None:
        if (self.output is None) == (self.filter is None):
            # pydantic runs this inside its validation and reports only its own errors from here
            from pydantic_core import PydanticCustomError

            raise PydanticCustomError(
                "digest_items", "give exactly one of 'output' or 'filter' to choose the items", {}
            )


@dataclass(frozen=True)
class Smtp:
    """The mail server digests are sent through."""

    __pydantic_config__ = _FROZEN_ALIASED

    host: str = _doc("Host name of the SMTP server.", "localhost")
    port: int = _doc(
        "Port: usually 587 with starttls, 465 with tls, 25 with none.", 587, ge=1, le=65535
    )
    security: Literal["starttls", "tls", "none"] = _doc(
        "How the connection is encrypted.", "starttls"
    )
    username: str = _doc("Login name; no login when empty.", "")
    password: str = _doc("Password; write `${SMTP_PASSWORD}` to take it from the environment.", "")
    sender: Email | None = _doc("Address digests come from.", None, alias="from")
    timeout: Duration = _doc("How long to wait for the server.", timedelta(seconds=30))
    rate: float = _doc(
        "Most messages sent per second (0: as fast as the server takes them).", 10, ge=0
    )
    connections: int = _doc(
        "Connections sending at once, so that the next copy is made while the server takes one.",
        2,
        ge=1,
        le=16,
    )
    retries: int = _doc(
        "How often a message the server refused for now (4xx, a dropped connection) is tried "
        "again, waiting longer each time, before the next run takes it up.",
        3,
        ge=0,
        le=10,
    )


@dataclass(frozen=True)
class Server:
    """Where the web service listens and how the world reaches it."""

    __pydantic_config__ = _FROZEN

    host: str = _doc("Address to listen on; 0.0.0.0 for every interface.", "127.0.0.1")
    port: int = _doc("Port to listen on.", 8080, ge=1, le=65535)
    base_url: Url | None = _doc(
        "Public address used in feeds and e-mails; http://HOST:PORT/ when not given.", None
    )


@dataclass(frozen=True)
class Storage:
    """The database."""

    __pydantic_config__ = _FROZEN

    url: str = _doc(
        "SQLAlchemy database URL: sqlite:///data/aggregator.db (relative to the working "
        "directory) or postgresql://user@host/db. AGGREGATOR_DATABASE_URL overrides it.",
        "sqlite:///data/aggregator.db",
    )


@dataclass(frozen=True)
class Defaults:
    """Values used wherever a source, output or digest does not set its own."""

    __pydantic_config__ = _FROZEN

    interval: Interval = _doc("Poll interval of sources.", timedelta(minutes=15))
    timezone: TimeZone = _doc("Time zone of digests.", "UTC")
    limit: int = _doc("Entries per published feed.", 50, ge=1, le=1000)
    formats: tuple[Format, ...] = _doc("Formats of published feeds.", FORMATS)


@dataclass(frozen=True)
class Polling:
    """How sources are fetched: limits that keep the service polite and safe."""

    __pydantic_config__ = _FROZEN

    timeout: Duration = _doc("Longest time one fetch may take, all told.", timedelta(seconds=20))
    max_size: Size = _doc("Largest feed body accepted (decompressed): 500KB, 10MiB.", 10 * 1024**2)
    max_redirects: int = _doc("Redirects followed before giving up.", 5, ge=0, le=20)
    articles_per_poll: int = _doc(
        "Article pages fetched in one poll of a `full_text` source, all within `timeout`; the "
        "rest are fetched at the next polls.",
        10,
        ge=1,
        le=1000,
    )
    max_entries: int = _doc(
        "Entries taken from one feed document, the newest; the rest are left out and the source "
        "shows a warning saying so.",
        1000,
        ge=1,
        le=1_000_000,
    )
    concurrency: int = _doc("Fetches in flight at once, in all.", 8, ge=1, le=256)
    processes: int = _doc(
        "Processes that parse and file fetched documents: 1 does it in the polling threads; "
        "N uses N-1 helper processes beside them; 0 (auto) uses one helper where two cores are "
        "usable, once a poll has 50 sources or more.",
        0,
        ge=0,
        le=16,
    )
    per_host: int = _doc("Fetches in flight at once to one host.", 2, ge=1, le=64)
    host_gap: Duration = _doc("Pause between two requests to one host.", timedelta(seconds=1))
    max_backoff: Duration = _doc(
        "Longest wait before retrying a failing source (backoff doubles up to this).",
        timedelta(hours=24),
    )
    first_retry: Duration = _doc(
        "First wait after a failure that often passes (network, timeout, 5xx), doubling from "
        "there; other failures wait the source's interval.",
        timedelta(minutes=2),
    )
    unhealthy_after: int = _doc(
        "Consecutive failures after which a source shows as unhealthy.", 3, ge=1
    )
    adaptive: bool = _doc(
        "Poll each source as often as it really publishes, within min_interval and max_interval.",
        False,
    )
    min_interval: Interval = _doc("Shortest adaptive interval.", timedelta(minutes=5))
    max_interval: Interval = _doc("Longest adaptive interval.", timedelta(hours=6))
    retention: Duration = _doc(
        "How long items are kept after they were last seen in their feed; pruned items never "
        "come back.",
        timedelta(days=90),
    )


@dataclass(frozen=True)
class Dedupe:
    """How the same story from several sources is recognised."""

    __pydantic_config__ = _FROZEN

    enabled: bool = _doc("`false` files every item as its own story.", True)
    threshold: float = _doc(
        "How alike two items' words must be (0 to 1, Jaccard similarity of their word pairs) "
        "to count as one story; higher merges less.",
        0.5,
        ge=0.1,
        le=1.0,
    )
    window: Duration = _doc(
        "Items further apart in time than this are never merged.", timedelta(hours=72)
    )


@dataclass(frozen=True)
class Publishing:
    """How the published feeds and pages are served."""

    __pydantic_config__ = _FROZEN

    title: str = _doc(
        "Name of the site: the title of the index page and the author of every feed.",
        "Aggregator",
    )
    section_feeds: bool = _doc(
        "Publish a feed for every section (/sections/ID.atom, .rss, .json).", True
    )
    topic_feeds: bool = _doc("Publish a feed for every topic (/topics/ID.atom, .rss, .json).", True)
    cache_max_age: Duration = _doc(
        "How long readers and proxies may reuse a feed before asking again (Cache-Control).",
        timedelta(minutes=5),
    )
    hub: Url | None = _doc(
        "A WebSub hub: feeds name it as rel=hub, and it is told when a feed gains items.", None
    )
    templates: str | None = _doc(
        "A folder of your own templates: any of digest.html, digest.txt, base.html, index.html, "
        "feed.html, error.html and notice.html there replace the built-in ones (copy them from "
        "aggregator/templates/ to start). Relative to the working folder.",
        None,
    )


@dataclass(frozen=True)
class Config:
    """The whole of feeds.yaml."""

    __pydantic_config__ = _FROZEN

    sections: tuple[Section, ...] = _doc("Sections items are filed under.", ())
    topics: tuple[Topic, ...] = _doc("Topics items can be about.", ())
    sources: tuple[Source, ...] = _doc("Feeds to poll.", ())
    outputs: tuple[Output, ...] = _doc("Feeds to publish.", ())
    digests: tuple[Digest, ...] = _doc("E-mail digests to send.", ())
    smtp: Smtp = _doc("Mail server settings.", default_factory=Smtp)
    server: Server = _doc("Web server settings.", default_factory=Server)
    storage: Storage = _doc("Database settings.", default_factory=Storage)
    defaults: Defaults = _doc("Default values.", default_factory=Defaults)
    polling: Polling = _doc("Fetching settings.", default_factory=Polling)
    dedupe: Dedupe = _doc("Duplicate story settings.", default_factory=Dedupe)
    publishing: Publishing = _doc("Published feeds and pages.", default_factory=Publishing)


@cache
def validator() -> TypeAdapter[Config]:
    """pydantic's validator of a whole config, made at the first call (importing pydantic)."""
    from pydantic import TypeAdapter

    return TypeAdapter(Config)


@dataclass(frozen=True)
class SchemaProblem:
    """One validation failure, located by its path in the document."""

    loc: tuple[str | int, ...]
    kind: str
    message: str
    value: object


def validate(data: object) -> tuple[Config | None, list[SchemaProblem]]:
    """Validate plain data; return the config, or every problem found."""
    from pydantic import ValidationError

    try:
        return validator().validate_python(data), []
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            loc = tuple(part for part in error["loc"] if not _is_wrapper(part))
            problems.append(
                SchemaProblem(loc, error["type"], _message(error, loc), error.get("input"))
            )
        return None, problems


def _is_wrapper(part: object) -> bool:
    # pydantic adds validator names (e.g. "function-after[...]") to some locations.
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


_TYPE_NAMES = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping of keys to values",
    "dataclass_type": "a mapping of keys to values",
    "dataclass_args_type": "a mapping of keys to values",
    "model_type": "a mapping of keys to values",
}


def _message(error: Any, loc: tuple[str | int, ...]) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "missing":
        return f"required key {loc[-1]!r} is missing"
    if kind in EXTRA_KEY:
        known = [f.alias for f in field_docs(_owner_of(loc))]
        close = get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"
        return f"unknown key {loc[-1]!r}{hint}"
    if kind in _TYPE_NAMES:
        return f"expected {_TYPE_NAMES[kind]}, got {_describe(value)}"
    if kind == "literal_error":
        return f"{_show(value)} is not one of: {error['ctx']['expected'].replace(chr(39), '')}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{_show(value)}: {error['msg'].lower().replace('input should be', 'must be')}"
    return str(error["msg"])


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bool):
        return str(value).lower()
    return _show(value)


# -- introspection, for error hints and the documentation test --------------------------------


@dataclass(frozen=True)
class FieldDoc:
    """A key of feeds.yaml with its help text."""

    alias: str
    help: str
    type: Any


def field_docs(cls: type | None) -> list[FieldDoc]:
    """The keys a config dataclass accepts, in declaration order."""
    if cls is None or not is_dataclass(cls):
        return []
    hints = get_type_hints(cls, include_extras=True)
    out = []
    for f in fields(cls):
        alias = f.metadata.get("alias") or f.name
        out.append(FieldDoc(alias, f.metadata.get("description", ""), hints[f.name]))
    return out


def _dataclass_in(tp: Any) -> type | None:
    """The config dataclass inside a type such as `tuple[Source, ...]` or `Filter | None`."""
    if isinstance(tp, type) and is_dataclass(tp):
        return tp
    for arg in get_args(tp):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None


def _owner_of(loc: tuple[str | int, ...]) -> type | None:
    """The dataclass whose key `loc[-1]` is (for 'did you mean' over its siblings)."""
    cls: type | None = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        by_alias = {d.alias: d for d in field_docs(cls)}
        if part not in by_alias:
            return None
        cls = _dataclass_in(by_alias[part].type)
    return cls


def walk_keys(cls: type = Config, prefix: str = "") -> Iterator[tuple[str, FieldDoc]]:
    """Every key of the schema as a dotted path (`sources[].interval`), for documentation."""
    for doc in field_docs(cls):
        path = f"{prefix}{doc.alias}"
        yield path, doc
        inner = _dataclass_in(doc.type)
        if inner is not None:
            many = get_origin(_strip(doc.type)) is tuple
            yield from walk_keys(inner, f"{path}[]." if many else f"{path}.")


def _strip(tp: Any) -> Any:
    """`X | None` -> X, for telling lists of objects from single objects."""
    if get_origin(tp) is Union or type(tp).__name__ == "UnionType":
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp
