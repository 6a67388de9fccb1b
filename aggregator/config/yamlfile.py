"""Reading and editing YAML with positions and comments kept (only this module imports ruamel).

ruamel.yaml's round-trip loader records the line and column of every key and value, which is what
turns a validation failure into `feeds.yaml:12:15: ...`, and it writes a document back with the
editor's comments in place, which `opml import --write` needs. It is safe: the round-trip loader
never constructs Python objects from tags, and any tag beyond plain YAML is reported as an error.

It is also bounded. Before anything is built, one pass over the parser's events (which neither
recurses nor expands aliases) measures the document: nesting deeper than MAX_DEPTH, or aliases that
would repeat more than MAX_ALIAS_VALUES values in all (nine lines of `&b [*a, *a, ...]` expand to
billions), are refused at the line and column where they happen; the loader never sees them.

Reading is fast where the document is plain (`_fast`): data and positions come straight from
libyaml's events, and only what is unusual (aliases, tags, errors) goes through the loader.
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
    DocumentStartEvent,
    Event,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver

from aggregator.config.limits import MAX_ALIAS_VALUES, MAX_BYTES, MAX_DEPTH, TOO_LARGE

Loc = tuple[str | int, ...]


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


Place = tuple[int, int, int, int]  # 0-based line and column of a key (or item), then of its value


@dataclass(frozen=True)
class YamlDocument:
    """A parsed document: plain Python data, and where each part of it stands in the file.

    `root` is what the document was read into: the round-trip loader's tree, or for a document
    read by the fast path (see `_fast`), the table of places by location.
    """

    data: Any
    root: Any

    def position(self, loc: Loc, *, key: bool = False) -> tuple[int, int]:
        """1-based (line, column) of the value at `loc`, or of its key with `key=True`.

        A location that does not exist in the file (a missing key) falls back to the nearest
        enclosing node that does, which is where the editor has to add it.
        """
        if isinstance(self.root, _Places):
            return self.root.position(loc, key)
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


class _Places(dict[Loc, Place]):
    """Where each key, item and value of a document read by the fast path stands."""

    def position(self, loc: Loc, key: bool) -> tuple[int, int]:
        best = self.get((), (0, 0, 0, 0))[2:]
        for depth in range(1, len(loc) + 1):
            place = self.get(loc[:depth])
            if place is None:
                break
            best = place[:2] if (key and depth == len(loc)) else place[2:]
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
    text: str, env: Mapping[str, str] | None = None, *, fast: bool = True
) -> tuple[YamlDocument, list[YamlProblem]]:
    """Parse a document, substituting `${NAME}` from `env`; syntax errors come back as problems.

    `fast=False` reads with the round-trip loader alone (the reference the fast path is held to).
    """
    if _too_large(text):
        return YamlDocument(None, None), [YamlProblem((), 1, 1, TOO_LARGE)]
    read = _fast(text) if fast else None  # no alias and no deep nesting if it reads at all
    if read is not None:
        data, places = read
        doc = YamlDocument(None, places)
        problems: list[YamlProblem] = []
        data = _plain(data, (), doc, os.environ if env is None else env, problems)
        return YamlDocument(data, places), problems
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
    problems = []
    doc = YamlDocument(None, root)
    data = _plain(root, (), doc, os.environ if env is None else env, problems)
    return YamlDocument(data, root), problems


class _UnusualError(Exception):
    """The fast path met something only the round-trip loader handles as it should."""


_RESOLVER = VersionedResolver()  # YAML 1.2, as the round-trip loader resolves plain scalars
_STR = "tag:yaml.org,2002:str"


def _fast(text: str) -> tuple[Any, _Places] | None:
    """The document's data and places, built straight from libyaml's events; None where the
    round-trip loader must read it instead.

    Building from events in one pass is about eight times faster than ruamel.yaml's pure
    round-trip loader (0.12-0.16 s against 1.2 s for 1,000 sources, measured; the loader was
    most of `aggregator check` and of the start of every poll). It takes only the plain shape
    every config has: anything else (a syntax error, an alias or merge key, a tag, a directive,
    a duplicate key, a key that is no text) goes to the loader, so its results and messages stay
    the loader's. A test holds the two equal, data and every position, on every config the tests
    know; the one difference is where an empty value stands (just after its colon here). A
    document it reads has no alias and no nesting beyond MAX_DEPTH, so `_measure`'s pass is
    needed only where it declines.
    """
    try:
        events = YAML(typ="safe", pure=False).parse(text)
    except ImportError:  # pragma: no cover (a platform without the C extension)
        return None
    places = _Places()
    constructor: Any = None
    # Each open collection: [the collection, its location, the pending key and its mark].
    stack: list[list[Any]] = []
    root: Any = None
    try:
        for event in events:
            kind = type(event)
            if kind is ScalarEvent:
                if event.tag is not None or event.anchor is not None:
                    raise _UnusualError
                value: Any = event.value
                if not event.style and event.implicit[0]:
                    tag = _RESOLVER.resolve(ScalarNode, value, (True, False))
                    if tag != _STR:
                        if stack and type(stack[-1][0]) is dict and stack[-1][2] is None:
                            raise _UnusualError  # a key that is a number, a boolean, null, `<<`
                        if constructor is None:
                            constructor = YAML(typ="rt").constructor
                        value = constructor.construct_object(ScalarNode(tag, value))
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                if event.tag is not None:
                    raise _UnusualError
                value = {} if kind is MappingStartEvent else []
            elif kind is StreamStartEvent or kind is StreamEndEvent:
                continue
            elif kind is DocumentStartEvent:
                if event.version or event.tags or root is not None:
                    raise _UnusualError  # a directive, or a second document
                continue
            elif isinstance(event, CollectionEndEvent):
                stack.pop()
                continue
            elif isinstance(event, AliasEvent):
                raise _UnusualError
            else:  # DocumentEndEvent
                continue
            mark = event.start_mark
            if not stack:
                root = value
                places[()] = (mark.line, mark.column, mark.line, mark.column)
                loc: Loc = ()
            else:
                top = stack[-1]
                parent = top[0]
                if type(parent) is list:
                    loc = (*top[1], len(parent))
                    places[loc] = (mark.line, mark.column, mark.line, mark.column)
                    parent.append(value)
                elif top[2] is None:  # a key
                    if kind is not ScalarEvent:
                        raise _UnusualError
                    if value in parent:
                        raise _UnusualError
                    top[2] = (value, mark.line, mark.column)
                    continue
                else:
                    name, line, column = top[2]
                    top[2] = None
                    loc = (*top[1], name)
                    places[loc] = (line, column, mark.line, mark.column)
                    parent[name] = value
            if kind is not ScalarEvent:
                if len(stack) >= MAX_DEPTH:
                    raise _UnusualError  # `_measure` says where, and refuses it
                stack.append([value, loc, None])
    except (YAMLError, _UnusualError):
        return None
    return root, places


def _too_large(text: str) -> bool:
    return len(text) > MAX_BYTES // 4 and len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES


def _measure(text: str) -> YamlProblem | None:
    """Refuse a document too large, too deep or whose aliases expand too far, before loading it."""
    if _too_large(text):
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
    if isinstance(node, dict):  # a CommentedMap, or a mapping read by the fast path
        return {str(k): _plain(v, (*loc, str(k)), doc, env, out) for k, v in node.items()}
    if isinstance(node, list):
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
