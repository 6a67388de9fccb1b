"""Reading and editing YAML with positions and comments kept (only this module imports ruamel).

ruamel.yaml's round-trip loader records the line and column of every key and value, which is what
turns a validation failure into `feeds.yaml:12:15: ...`, and it writes a document back with the
editor's comments in place, which `opml import --write` needs. It is safe: the round-trip loader
never constructs Python objects from tags, and any tag beyond plain YAML is reported as an error.

It is also bounded. Before anything is built, one pass over the parser's events (which neither
recurses nor expands aliases) measures the document: nesting deeper than MAX_DEPTH, or aliases that
would repeat more than MAX_ALIAS_VALUES values in all (nine lines of `&b [*a, *a, ...]` expand to
billions), are refused at the line and column where they happen; the loader never sees them.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    Event,
    NodeEvent,
)

Loc = tuple[str | int, ...]

MAX_BYTES = 8 * 1024 * 1024  # about 50,000 sources written out in full
MAX_DEPTH = 64  # the schema needs 5
MAX_ALIAS_VALUES = 250_000  # values that aliases may add, in all, to what the file spells out
TOO_LARGE = f"the file is larger than {MAX_BYTES // (1024 * 1024)} MiB; split it or trim it"

_STANDARD_TAG = re.compile(r"tag:yaml\.org,2002:(str|int|float|bool|null|map|seq|omap|timestamp)$")
_ENV = re.compile(r"\$\$|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class YamlProblem:
    """A problem found while reading, before any schema is applied."""

    loc: Loc
    line: int
    column: int
    message: str


@dataclass(frozen=True)
class YamlDocument:
    """A parsed document: plain Python data, and where each part of it stands in the file."""

    data: Any
    root: Any

    def position(self, loc: Loc, *, key: bool = False) -> tuple[int, int]:
        """1-based (line, column) of the value at `loc`, or of its key with `key=True`.

        A location that does not exist in the file (a missing key) falls back to the nearest
        enclosing node that does, which is where the editor has to add it.
        """
        node = self.root
        best = _start(node) if isinstance(node, CommentedMap | CommentedSeq) else (0, 0)
        for depth, part in enumerate(loc):
            last = depth == len(loc) - 1
            if isinstance(node, CommentedMap) and part in node:
                best = node.lc.key(part) if (key and last) else node.lc.value(part)
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                best = node.lc.item(part)
                node = node[part]
            else:
                break
        return best[0] + 1, best[1] + 1


def _start(node: CommentedMap | CommentedSeq) -> tuple[int, int]:
    return int(node.lc.line), int(node.lc.col)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    return yaml


def _events(text: str) -> Iterator[Event]:
    """The document's events, from libyaml where ruamel.yaml.clib is installed (seventeen times
    faster than the pure parser on a 1,000-source file), else from the pure parser. Either pulls
    one event at a time, so `_measure` stops a deep or bombing document early."""
    try:
        return iter(YAML(typ="safe", pure=False).parse(text))
    except ImportError:  # pragma: no cover (a platform without the C extension)
        return iter(_yaml().parse(text))


def parse(
    text: str, env: Mapping[str, str] | None = None
) -> tuple[YamlDocument, list[YamlProblem]]:
    """Parse a document, substituting `${NAME}` from `env`; syntax errors come back as problems."""
    refused = _measure(text)
    if refused is not None:
        return YamlDocument(None, None), [refused]
    try:
        root = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = " ".join(str(part) for part in (exc.problem, exc.context) if part)
        start = exc.context_mark
        if (
            exc.context
            and start
            and mark
            and (start.line, start.column) != (mark.line, mark.column)
        ):
            what += f" that starts at line {start.line + 1}, column {start.column + 1}"
        if "duplicate key" in (exc.problem or ""):
            what = exc.problem.replace("found duplicate key", "duplicate key").split(" with value")[
                0
            ]
            what += " (each key may appear once in a mapping)"
        return YamlDocument(None, None), [YamlProblem((), line, col, f"YAML syntax: {what}")]
    except YAMLError as exc:
        return YamlDocument(None, None), [YamlProblem((), 1, 1, f"YAML syntax: {exc}")]
    problems: list[YamlProblem] = []
    doc = YamlDocument(None, root)
    data = _plain(root, (), doc, os.environ if env is None else env, problems)
    return YamlDocument(data, root), problems


def _measure(text: str) -> YamlProblem | None:
    """Refuse a document too large, too deep or whose aliases expand too far, before loading it."""
    if len(text) > MAX_BYTES // 4 and len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        return YamlProblem((), 1, 1, TOO_LARGE)
    sizes: dict[str, int] = {}  # values under each anchor, aliases counted in full
    open_: list[list[Any]] = []  # [values so far, anchor] of each collection being read
    added = 0
    try:
        for event in _events(text):
            if not isinstance(event, NodeEvent | CollectionEndEvent):
                continue
            mark = event.start_mark
            where = (mark.line + 1, mark.column + 1)
            if isinstance(event, CollectionStartEvent):
                open_.append([1, event.anchor])
                if len(open_) > MAX_DEPTH:
                    return YamlProblem((), *where, f"nested more than {MAX_DEPTH} levels deep")
                continue
            if isinstance(event, CollectionEndEvent):
                count, anchor = open_.pop()
            elif isinstance(event, AliasEvent):
                if event.anchor not in sizes:
                    return YamlProblem(
                        (), *where, f"the alias *{event.anchor} refers to a collection it is in"
                    )
                count, anchor = sizes[event.anchor], None
                added += count
                if added > MAX_ALIAS_VALUES:
                    return YamlProblem(
                        (),
                        *where,
                        f"aliases repeat more than {MAX_ALIAS_VALUES:,} values in all "
                        f"(*{event.anchor} alone holds {count:,}); write the values out instead",
                    )
            else:
                count, anchor = 1, event.anchor
            if anchor:
                sizes[anchor] = count
            if open_:
                open_[-1][0] += count
    except YAMLError:
        return None  # a syntax error: the loader reports it with its position
    return None


def _plain(
    node: Any, loc: Loc, doc: YamlDocument, env: Mapping[str, str], out: list[YamlProblem]
) -> Any:
    tag = getattr(getattr(node, "tag", None), "value", None)
    if tag and not _STANDARD_TAG.match(tag):
        line, col = doc.position(loc)
        out.append(YamlProblem(loc, line, col, f"the tag {tag!r} is not allowed (plain YAML only)"))
        return None
    if isinstance(node, CommentedMap):
        return {str(k): _plain(v, (*loc, str(k)), doc, env, out) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(v, (*loc, i), doc, env, out) for i, v in enumerate(node)]
    if isinstance(node, str):
        return _substitute(str(node), loc, doc, env, out)
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _substitute(
    text: str, loc: Loc, doc: YamlDocument, env: Mapping[str, str], out: list[YamlProblem]
) -> str:
    """Replace `${NAME}` by the environment variable; `$$` writes a literal `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        line, col = doc.position(loc)
        if not _ENV_NAME.fullmatch(name):
            out.append(YamlProblem(loc, line, col, f"'${{{name}}}' is not a valid variable name"))
            return ""
        if name not in env:
            out.append(
                YamlProblem(
                    loc, line, col, f"environment variable {name} is not set (used as ${{{name}}})"
                )
            )
            return ""
        return env[name]

    return _ENV.sub(replace, text) if "$" in text else text


def dump(data: Any) -> str:
    """YAML text of plain data, in the block style editors write by hand."""
    buffer = io.StringIO()
    _yaml().dump(data, buffer)
    return buffer.getvalue()


def append_to_lists(text: str, additions: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Append entries to top-level lists of a YAML document, keeping its comments and layout."""
    yaml = _yaml()
    root = yaml.load(text)
    if root is None:
        root = CommentedMap()
    for key, entries in additions.items():
        if not entries:
            continue
        if not isinstance(root.get(key), CommentedSeq):
            root[key] = CommentedSeq()
        for entry in entries:
            root[key].append(CommentedMap(entry))
    buffer = io.StringIO()
    yaml.dump(root, buffer)
    return buffer.getvalue()
