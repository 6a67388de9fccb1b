"""Validated configs kept between runs, so that a command using a config it has seen before does
not parse and validate it again.

Parsing feeds.yaml and validating it with pydantic cost `poll --once` of 1,000 sources a fifth
of a second and about 15 MiB before its first fetch (pydantic's import and the validators it
builds), on every run from cron and at every worker start, for a file that rarely changes. A
valid config is kept here, pickled, under a key made of everything its value depends on: the
file's bytes and the code that reads it (the config package and the term rules it checks with,
hashed). Any change to either is a new key. A config with any problem is never kept, so its
problems are reported at every run; nor is one that takes a value from the environment
(`${NAME}`): such values are often secrets kept off the disk on purpose, so that config is
validated at every start. `aggregator check` always validates afresh. What is applied after
validation (`AGGREGATOR_DATABASE_URL`, `--host`/`--port`) is applied to a kept config as to a new
one.

The folder is `$AGGREGATOR_CACHE_DIR`, else `$XDG_CACHE_HOME/aggregator`, else
`~/.cache/aggregator`; `AGGREGATOR_CACHE_DIR=` (empty) turns the cache off. A pickle runs code when
loaded, so a kept config is read only from a folder and a file that this user owns and nobody else
may write to (the folder is made private, the file written private, atomically). Any failure to
read or write the cache (a read-only home, a corrupt file) only costs the validation it would have
saved.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from aggregator import __version__
from aggregator.config import yamlfile
from aggregator.config.schema import Config

log = logging.getLogger(__name__)

CACHE_ENV = "AGGREGATOR_CACHE_DIR"
KEPT = 16  # configs kept in the folder, the most recently used
_READ_LIMIT = 16 * yamlfile.MAX_BYTES  # a kept config is far smaller than this
# the code a kept config's value depends on: the config package and the term rules it checks with
_CODE = (
    Path(__file__).with_name("schema.py"),
    Path(__file__).with_name("loader.py"),
    Path(__file__).with_name("yamlfile.py"),
    Path(__file__).parent.parent / "process" / "terms.py",
)


def folder(env: Mapping[str, str]) -> Path | None:
    """Where kept configs go; None when the cache is off."""
    if CACHE_ENV in env:
        return Path(env[CACHE_ENV]) if env[CACHE_ENV] else None
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aggregator"


class Watched(Mapping[str, str]):
    """The environment, noting whether the config looked anything up in it."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.used = False

    def __getitem__(self, name: str) -> str:
        self.used = True
        return self._env[name]

    def __contains__(self, name: object) -> bool:
        self.used = True
        return name in self._env

    def __iter__(self) -> Iterator[str]:
        self.used = True
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


def key(raw: bytes) -> str:
    """The name a config is kept under: a hash of the file and of the code that validates it."""
    digest = hashlib.sha256()
    digest.update(f"{__version__}\0".encode())
    for path in _CODE:
        try:
            digest.update(path.read_bytes())
        except OSError:  # source not shipped (a zipped install): only the version tells
            digest.update(b"?")
    digest.update(b"\0" + raw)
    return digest.hexdigest()


def _private(path: Path, *, directory: bool) -> bool:
    """Whether only this user can have written `path` (a folder, or a file in one)."""
    try:
        info = path.stat()
    except OSError:
        return False
    kind_ok = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    mine = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    return kind_ok and mine and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def load(where: Path | None, name: str) -> Config | None:
    """The config kept under `name`; None when there is none, or it cannot be trusted or read."""
    if where is None or not _private(where, directory=True):
        return None
    path = where / f"{name}.pickle"
    if not _private(path, directory=False):
        return None
    try:
        with path.open("rb") as file:
            data = file.read(_READ_LIMIT + 1)
        if len(data) > _READ_LIMIT:
            return None
        kept = pickle.loads(data)
        os.utime(path)  # recently used: pruned last
    except Exception as exc:  # whatever a bad file raises, validating it is the answer
        log.debug("the kept config %s is unusable (%s); validating the file", path, exc)
        return None
    return kept if isinstance(kept, Config) else None


def store(where: Path | None, name: str, config: Config) -> None:
    """Keep a valid config under `name`, and only the KEPT most recently used ones."""
    if where is None:
        return
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(where, directory=True):
            log.debug("not keeping configs in %s: others may write there", where)
            return
        data = pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
        handle, temporary = tempfile.mkstemp(dir=where, prefix=".config-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:  # mkstemp made it readable by this user only
                file.write(data)
            Path(temporary).replace(where / f"{name}.pickle")
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        kept = sorted(where.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[KEPT:]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        log.debug("could not keep the validated config in %s (%s)", where, exc)
