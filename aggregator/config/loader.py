"""Load feeds.yaml: every problem in one pass, each as `file:line:column: where: what to do`.

Three kinds of check run independently so that one kind of mistake never hides another: YAML
syntax and `${ENV}` substitution (yamlfile), the schema (schema), and the ids and references between
entries (here, over the raw data, so a typo in a section id is reported even when a source
elsewhere has a malformed interval).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from difflib import get_close_matches
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator.config import schema
from aggregator.config.limits import MAX_BYTES, TOO_LARGE
from aggregator.config.schema import Config
from aggregator.exceptions import ConfigError, ConfigProblem

if TYPE_CHECKING:  # ruamel.yaml is imported only to read a file afresh (a kept config needs none)
    from aggregator.config.yamlfile import Loc

DATABASE_URL_ENV = "AGGREGATOR_DATABASE_URL"
_LISTS = ("sections", "topics", "sources", "outputs", "digests")

# (where the reference stands, which list it names); "*" is every item of a list.
_REFERENCES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("sources", "*", "section"), "sections"),
    (("sources", "*", "topics", "*"), "topics"),
    (("outputs", "*", "filter", "sections", "*"), "sections"),
    (("outputs", "*", "filter", "topics", "*"), "topics"),
    (("outputs", "*", "filter", "sources", "*"), "sources"),
    (("digests", "*", "filter", "sections", "*"), "sections"),
    (("digests", "*", "filter", "topics", "*"), "topics"),
    (("digests", "*", "filter", "sources", "*"), "sources"),
    (("digests", "*", "output"), "outputs"),
)


Listen = tuple[str | None, int | None]  # host and port from the command line, or None


def load_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    listen: Listen = (None, None),
    *,
    cached: bool = False,
) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem. `cached`: as
    the long-running commands load it (`begin_loading`)."""
    if cached:
        return begin_loading(path, env, listen)()
    return load_text(_read(Path(path))[1], str(path), env, listen)


def begin_loading(
    path: str | Path, env: Mapping[str, str] | None = None, listen: Listen = (None, None)
) -> Callable[[], Config]:
    """Start loading a config as the polling and serving commands do, and return what gives it
    (raising ConfigError with every problem): the config validated at an earlier start when the
    file and the code are the same (config/cache.py), else validated in a child process that
    runs meanwhile and keeps it for the next start (config/apart.py), so that the caller's own
    process never holds pydantic."""
    from aggregator.config import apart, cache

    path = Path(path)
    raw, text = _read(path)
    env = os.environ if env is None else env
    where, name = cache.folder(env), cache.key(raw)
    kept = cache.load(where, name)
    if kept is not None:
        return lambda: _resolve(kept, env, listen)
    # a child sees the process's own environment only
    child = apart.Validation(raw, str(path)) if env is os.environ else None

    def finish() -> Config:
        config = child.result() if child is not None else None
        if config is None:
            watched = cache.Watched(env)
            config = validated(text, str(path), watched)
            if not watched.used:  # values from the environment are not written to the disk
                cache.store(where, name, config)
        return _resolve(config, env, listen)

    return finish


def _read(path: Path) -> tuple[bytes, str]:
    """The file's bytes (at most the bound) and its text."""
    try:
        with path.open("rb") as file:  # never more than the bound, however large the file
            raw = file.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:  # refused whole: a cut file could parse, minus sources
            raise ConfigError([ConfigProblem(str(path), 1, 1, "", TOO_LARGE)])
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            [ConfigProblem(str(path), 1, 1, "", f"cannot read the file: {reason}")]
        ) from None
    return raw, text


def load_text(
    text: str, name: str, env: Mapping[str, str] | None = None, listen: Listen = (None, None)
) -> Config:
    """Validate config text; `name` is how problems refer to the file."""
    env = os.environ if env is None else env
    return _resolve(validated(text, name, env), env, listen)


def validated(text: str, name: str, env: Mapping[str, str]) -> Config:
    """The config as written, validated (`defaults` not yet filled in)."""
    from aggregator.config import yamlfile

    doc, yaml_problems = yamlfile.parse(text, env)
    problems = [
        ConfigProblem(name, p.line, p.column, _where(p.loc), p.message) for p in yaml_problems
    ]
    if doc.root is None and problems:
        raise ConfigError(problems)
    data = {} if doc.data is None else doc.data
    if not isinstance(data, dict):
        raise ConfigError(
            [
                *problems,
                ConfigProblem(
                    name,
                    1,
                    1,
                    "",
                    "the file must be a mapping with keys such as sections:, topics:, sources:",
                ),
            ]
        )
    config, schema_problems = schema.validate(data)
    # A value already reported (a refused tag, a missing variable) is not reported again by type.
    reported = [p.loc for p in yaml_problems]
    for sp in schema_problems:
        if any(loc and sp.loc[: len(loc)] == loc for loc in reported):
            continue
        line, col = doc.position(sp.loc, key=sp.kind in schema.EXTRA_KEY)
        problems.append(ConfigProblem(name, line, col, _where(sp.loc), sp.message))
    for loc, message, key in _cross_checks(data):
        line, col = doc.position(loc, key=key)
        problems.append(ConfigProblem(name, line, col, _where(loc), message))
    if problems or config is None:
        raise ConfigError(_unique(problems))
    return config


def _where(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _unique(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    return list(dict.fromkeys(problems))


def _cross_checks(data: dict[str, Any]) -> Iterator[tuple[Loc, str, bool]]:
    """Duplicate ids and references to ids that do not exist: (loc, message, point at key?)."""
    known: dict[str, list[str]] = {}
    for kind in _LISTS:
        seen: dict[str, int] = {}
        for loc, value in _select(data, (kind, "*", "id")):
            if not isinstance(value, str):
                continue
            if value in seen:
                yield loc, f"duplicate id {value!r}: {kind}[{seen[value]}] has it already", False
            else:
                seen[value] = int(loc[1])
        known[kind] = list(seen)
    for pattern, kind in _REFERENCES:
        for loc, value in _select(data, pattern):
            if isinstance(value, str) and value not in known[kind]:
                yield loc, _unknown_reference(value, kind, known[kind]), False


def _unknown_reference(value: str, kind: str, ids: list[str]) -> str:
    noun = kind[:-1]
    close = get_close_matches(value, ids, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean {close[0]!r}?"
    elif ids:
        hint = f"defined {kind}: {', '.join(ids[:10])}{', ...' if len(ids) > 10 else ''}"
    else:
        hint = f"no {kind} are defined; add one under {kind}:"
    return f"{noun} {value!r} does not exist ({hint})"


def _select(node: Any, pattern: tuple[str, ...], loc: Loc = ()) -> Iterator[tuple[Loc, Any]]:
    """Values at a path pattern in raw data, skipping whatever is malformed on the way."""
    if not pattern:
        yield loc, node
        return
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        if isinstance(node, list):
            for index, item in enumerate(node):
                yield from _select(item, rest, (*loc, index))
    elif isinstance(node, dict) and head in node:
        yield from _select(node[head], rest, (*loc, head))


def _resolve(config: Config, env: Mapping[str, str], listen: Listen) -> Config:
    """Fill what an entry leaves to `defaults`, so the rest of the code never looks there."""
    d = config.defaults
    adaptive = config.polling.adaptive
    sources = tuple(
        dataclasses.replace(
            s,
            interval=s.interval or d.interval,
            adaptive=adaptive if s.adaptive is None else s.adaptive,
        )
        for s in config.sources
    )
    outputs = tuple(
        dataclasses.replace(o, formats=o.formats or d.formats, limit=o.limit or d.limit)
        for o in config.outputs
    )
    digests = tuple(
        g if g.timezone else dataclasses.replace(g, timezone=d.timezone) for g in config.digests
    )
    server = config.server
    host, port = listen  # `--host`/`--port` win, and the default base_url follows them
    if host is not None:  # stripped as the schema strips what the file says
        server = dataclasses.replace(server, host=host.strip())
    if port is not None:
        server = dataclasses.replace(server, port=port)
    if server.base_url is None:
        host = "localhost" if server.host in ("0.0.0.0", "::", "") else server.host
        server = dataclasses.replace(server, base_url=f"http://{host}:{server.port}/")
    storage = config.storage
    if env.get(DATABASE_URL_ENV, "").strip():
        storage = dataclasses.replace(storage, url=env[DATABASE_URL_ENV].strip())
    return dataclasses.replace(
        config, sources=sources, outputs=outputs, digests=digests, server=server, storage=storage
    )
