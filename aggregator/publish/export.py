"""Static export: every document written to a directory, swapped in whole.

The export is built in a new directory beside the target and then exchanged with it in one
`renameat2(RENAME_EXCHANGE)` call on Linux, so a web server reading the target sees the old export
or the new one, never a mixture; elsewhere, or on filesystems without the call, two renames leave
a gap of microseconds. A failed export removes its own work and leaves the previous one in place.
Archive pages (`?before=`) cannot exist as files, so exported feeds carry no paging links.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aggregator.exceptions import ExportError
from aggregator.publish.publisher import Publisher

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@dataclass(frozen=True)
class ExportReport:
    files: int
    bytes: int
    out: Path


def count(publisher: Publisher) -> int:
    """How many files an export writes (for a progress bar)."""
    return 2 + sum(1 + len(p.formats) for p in publisher.catalog)


def export(
    publisher: Publisher, out: Path, progress: Callable[[str], None] | None = None
) -> ExportReport:
    out = out.absolute()
    if out.is_symlink():  # a deploy link (public -> releases/N): update what it points at
        out = out.resolve()
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    except OSError as exc:
        raise ExportError(f"cannot write beside {out}: {exc.strerror or exc}") from None
    files = size = 0
    try:
        staging.chmod(0o755)
        for relative, document in publisher.every_document():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(document.body)
            files += 1
            size += len(document.body)
            if progress is not None:
                progress(relative)
        _swap(staging, out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(f"cannot export to {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportReport(files, size, out)


def _swap(new: Path, out: Path) -> None:
    if not out.exists():
        new.rename(out)
        return
    if _exchange(new, out):
        shutil.rmtree(new, ignore_errors=True)  # it holds the previous export now
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()
    out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2); False where that is not possible."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), ctypes.c_uint(_RENAME_EXCHANGE)
    )
    return bool(result == 0)
