"""The one exception root of the aggregator and its narrow subclasses.

Each subclass also inherits the builtin it refines, so callers that only know
Python's own exceptions still catch it::

    AggregatorError
    ├── ConfigError (ValueError)        feeds.yaml is unreadable or invalid; carries every problem
    ├── OpmlError (ValueError)          an OPML file cannot be read
    ├── ParseError (ValueError)         a fetched document is not a feed we can read
    ├── StorageError (RuntimeError)     the database cannot be opened or migrated
    ├── NotPublishedError (LookupError)      no published feed or page has this address (HTTP 404)
    ├── BadRequestError (ValueError)         a request's parameters make no sense (HTTP 400)
    │   └── SearchRefusedError                a search too long or too costly to run
    ├── ExportError (OSError)           a static export could not be written
    ├── ListenError (OSError)           the web server cannot listen where it is told to
    └── EnvironmentSettingError (ValueError)  an environment variable is set wrongly
"""

from __future__ import annotations

from dataclasses import dataclass


class AggregatorError(Exception):
    """Root of every error the aggregator raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One mistake in a config file, located so an editor can jump to it."""

    path: str
    line: int
    column: int
    where: str
    message: str

    def __str__(self) -> str:
        prefix = f"{self.path}:{self.line}:{self.column}: "
        return prefix + (f"{self.where}: {self.message}" if self.where else self.message)


class ConfigError(AggregatorError, ValueError):
    """The config has problems; all of them are listed, in file order."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.path, p.line, p.column))
        super().__init__("\n".join(str(p) for p in self.problems))


class OpmlError(AggregatorError, ValueError):
    """An OPML document is not well-formed or has no outlines to import."""


class ParseError(AggregatorError, ValueError):
    """A fetched document yields no entries and is not a well-formed feed."""


class StorageError(AggregatorError, RuntimeError):
    """The database is unreachable, or its schema cannot be brought up to date."""


class NotPublishedError(AggregatorError, LookupError):
    """Nothing is published under this kind, id or format."""


class BadRequestError(AggregatorError, ValueError):
    """A query parameter is malformed (a paging cursor, say)."""


class SearchRefusedError(BadRequestError):
    """A search that is empty, only leaves things out, or is too long or costly to run (the
    database's deadline passed)."""


class ExportError(AggregatorError, OSError):
    """A static export could not be written; the previous export is left as it was."""


class ListenError(AggregatorError, OSError):
    """The web server cannot listen on its host and port (in use, not ours to take, no such
    address)."""


class EnvironmentSettingError(AggregatorError, ValueError):
    """An environment variable the service reads is set wrongly (not a feeds.yaml problem)."""
