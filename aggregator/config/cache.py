"""Validated configs kept between runs, so that a command using a config it has seen before does
not parse and validate it again.

Parsing feeds.yaml and validating it with pydantic cost `poll --once` of 1,000 sources a fifth
of a second and about 15 MiB before its first fetch (pydantic's import and the validators it
builds), on every run from cron and at every worker start, for a file that rarely changes. A
valid config is kept here, pickled, under a key made of everything its value depends on: the
file's bytes; the project's code as this process loaded it (every module of the package, hashed
when this module is imported); the Python version; every installed distribution with its version
(the names of the `*.dist-info` folders: pydantic, email-validator, APScheduler, tzdata, ...);
and the system's time zone database (its folders' modification times). Any change to one of them
is a new key. A config with any problem is never kept, so its problems are reported at every run;
nor is one that takes a value from the environment (`${NAME}`): such values are often secrets
kept off the disk on purpose, so that config is validated at every start. `aggregator check`
always validates afresh. What is applied after validation (`AGGREGATOR_DATABASE_URL`,
`--host`/`--port`) is applied to a kept config as to a new one.

The folder is `$AGGREGATOR_CACHE_DIR`, else `$XDG_CACHE_HOME/aggregator`, else
`~/.cache/aggregator`; `AGGREGATOR_CACHE_DIR=` (empty) turns the cache off, and so does a system
where ownership cannot be checked (Windows). A pickle runs code when loaded, so a kept config is
read only from a folder and a file that this user owns and nobody else may write to, checked on
the open folder and file themselves (a symlink swapped in between a check and an open proves
nothing), and the folder is made private and its files written private. Any failure to read or
write the cache (a read-only home, a corrupt file) only costs the validation it would have saved.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import stat
import sys
import zoneinfo
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from aggregator import __version__
from aggregator.config.limits import MAX_BYTES
from aggregator.config.schema import Config

log = logging.getLogger(__name__)

CACHE_ENV = "AGGREGATOR_CACHE_DIR"
KEPT = 16  # configs kept in the folder, the most recently used
_READ_LIMIT = 16 * MAX_BYTES  # a kept config is far smaller than this
_SUFFIX = ".pickle"
# ownership and opening relative to an open folder, without following a symlink: where these
# are missing, nothing read can be trusted, and the cache is off
_CHECKABLE = hasattr(os, "getuid") and hasattr(os, "O_NOFOLLOW") and os.open in os.supports_dir_fd


def _code() -> bytes:
    """A hash of what decides whether a config is valid and what it becomes, but the file."""
    digest = hashlib.sha256(f"{__version__}\0{sys.version}\0".encode())
    package = Path(__file__).resolve().parent.parent
    for path in sorted(package.rglob("*.py")):
        with suppress(OSError):
            digest.update(f"{path.relative_to(package)}\0".encode() + path.read_bytes())
    for entry in sys.path:
        with suppress(OSError):
            names = sorted(p.name for p in Path(entry or ".").glob("*.dist-info"))
            digest.update("\0".join(names).encode())
    for folder in zoneinfo.TZPATH:
        with suppress(OSError):
            digest.update(str(Path(folder).stat().st_mtime_ns).encode())
    return digest.digest()


_CODE = _code()  # the code this process runs, not whatever is on the disk later


def code() -> bytes:
    """What `key` hashes besides the file: a child process whose code differs from this one's
    (the project upgraded on the disk under a running service) validated with other rules."""
    return _CODE


def folder(env: Mapping[str, str]) -> Path | None:
    """Where kept configs go; None when the cache is off."""
    if not _CHECKABLE:
        return None
    if CACHE_ENV in env:
        return Path(env[CACHE_ENV]) if env[CACHE_ENV] else None
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "aggregator"
    try:
        return Path.home() / ".cache" / "aggregator"
    except RuntimeError:  # no home (a user with no passwd entry and no HOME): no cache
        return None


def key(raw: bytes) -> str:
    """The name a config is kept under: a hash of the file and of the code that reads it."""
    return hashlib.sha256(_CODE + raw).hexdigest()


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


def _private(info: os.stat_result) -> bool:
    """Whether only this user can have written what `info` describes."""
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


@contextmanager
def _opened(where: Path) -> Iterator[int | None]:
    """The folder, open, if it is a private folder of this user's; else None."""
    try:
        handle = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield None
        return
    try:
        info = os.fstat(handle)
        yield handle if stat.S_ISDIR(info.st_mode) and _private(info) else None
    finally:
        os.close(handle)


def load(where: Path | None, name: str) -> Config | None:
    """The config kept under `name`; None when there is none, or it cannot be trusted or read."""
    if where is None:
        return None
    with _opened(where) as directory:
        if directory is None:
            return None
        try:
            handle = os.open(name + _SUFFIX, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=directory)
        except OSError:
            return None
        try:
            with os.fdopen(handle, "rb") as file:
                info = os.fstat(file.fileno())
                if not (stat.S_ISREG(info.st_mode) and _private(info)):
                    return None
                data = file.read(_READ_LIMIT + 1)
            if len(data) > _READ_LIMIT:
                return None
            kept = pickle.loads(data)
            with suppress(OSError, NotImplementedError):  # recently used: pruned last
                os.utime(name + _SUFFIX, dir_fd=directory, follow_symlinks=False)
        except Exception as exc:  # whatever a bad file raises, validating it is the answer
            log.debug("the kept config %s is unusable (%s); validating the file", name, exc)
            return None
    return kept if isinstance(kept, Config) else None


def _make(where: Path) -> None:
    """The folder, private, and any missing folders above it, but only under a folder this user
    owns (root, run with another user's HOME, must not make their ~/.cache its own)."""
    missing = []
    at = where
    while not at.exists():
        missing.append(at)
        if at.parent == at:
            return
        at = at.parent
    if missing and at.stat().st_uid != os.getuid():
        return
    for path in reversed(missing):
        path.mkdir(mode=0o700)


def store(where: Path | None, name: str, config: Config) -> None:
    """Keep a valid config under `name`, and only the KEPT most recently used ones."""
    if where is None:
        return
    try:
        _make(where)
        with _opened(where) as directory:
            if directory is None:
                log.debug("not keeping configs in %s: not a private folder of this user", where)
                return
            _write(directory, name, pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL))
            _prune(directory)
    except OSError as exc:
        log.debug("could not keep the validated config in %s (%s)", where, exc)


def _write(directory: int, name: str, data: bytes) -> None:
    """Written whole under a passing name, then renamed into place: a reader sees all or none."""
    temporary = f".{name}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    handle = os.open(temporary, flags, 0o600, dir_fd=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, name + _SUFFIX, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary, dir_fd=directory)
        raise


def _prune(directory: int) -> None:
    kept = []
    for entry in os.listdir(directory):
        if entry.endswith(_SUFFIX):
            with suppress(OSError):
                info = os.stat(entry, dir_fd=directory, follow_symlinks=False)
                kept.append((info.st_mtime_ns, entry))
    for _, old in sorted(kept, reverse=True)[KEPT:]:
        with suppress(OSError):
            os.unlink(old, dir_fd=directory)
