#!/usr/bin/env python3
"""Set up and run the project with nothing but Python 3.11+: the README's two commands.

    python3 tasks.py run  [ARGS]   create .venv, install the service, start it (SQLite by default)
    python3 tasks.py test [ARGS]   create .venv, install the service and its test tools, run pytest
    python3 tasks.py lint          ruff (lint and format check) and mypy
    python3 tasks.py bench [NAME] [ARGS]
                                   a benchmark in bench/ (on demand, never in CI): ingest
                                   (the default), dedupe, quality, serve, digest, soak, or startup

The virtual environment is reinstalled only when pyproject.toml changes, so the second run starts
at once. Standard library only: this runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
# bench: aiosmtpd (digest) from test, and reader (ingest's peer) from bench
EXTRAS = {
    "run": "",
    "test": "[test,deploy-check]",
    "lint": "[test,lint]",  # mypy reads the tests too
    "bench": "[test,bench]",
}
BENCHES = ("ingest", "dedupe", "quality", "serve", "digest", "soak", "startup")


def _say(message: str) -> None:
    print(f"tasks.py: {message}", file=sys.stderr, flush=True)


def ensure_venv(extras: str) -> None:
    """Create .venv and install the project (editable) unless it is already up to date."""
    if sys.version_info < (3, 11):  # noqa: UP036 (this file runs before any check of the version)
        sys.exit(f"tasks.py: Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    wanted = {name for name in extras.strip("[]").split(",") if name}
    for done in VENV.glob(f".installed-{digest}*"):  # an install with these extras or more
        had = {name for name in done.name.removeprefix(f".installed-{digest}").split(",") if name}
        if wanted <= {name.lstrip("-") for name in had}:
            return
        wanted |= {name.lstrip("-") for name in had}  # keep what is there (tests, then lint)
    extras = f"[{','.join(sorted(wanted))}]" if wanted else ""
    stamp = VENV / f".installed-{digest}{'-' + ','.join(sorted(wanted)) if wanted else ''}"
    if not PYTHON.exists():
        _say(f"creating {VENV.relative_to(ROOT)}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    _say("installing the project and its dependencies (first run only)")
    pip = [str(PYTHON), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "--editable", f"{ROOT}{extras}"], check=True)
    for old in VENV.glob(".installed-*"):
        old.unlink()
    stamp.touch()


def _exec(args: list[str]) -> int:
    return subprocess.run(args, cwd=ROOT).returncode


def _replace_process(args: list[str]) -> int:
    """Become the command, so Ctrl-C and SIGTERM reach it directly (POSIX); else run it."""
    if os.name == "nt":
        return _exec(args)
    os.chdir(ROOT)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(args[0], args)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in EXTRAS:
        print(__doc__, file=sys.stderr)
        return 2
    task, rest = argv[0], argv[1:]
    ensure_venv(EXTRAS[task])
    if task == "run":
        return _replace_process([str(PYTHON), "-m", "aggregator", "run", *rest])
    if task == "test":
        # One pytest worker per core (pytest-xdist) unless told otherwise: `-n 0` runs in one.
        spread = [] if any(a.startswith(("-n", "--numprocesses")) for a in rest) else ["-n", "auto"]
        return _replace_process([str(PYTHON), "-m", "pytest", *spread, *rest])
    if task == "bench":
        name = rest.pop(0) if rest and rest[0] in BENCHES else "ingest"
        # Measured as installed: the peer's modules come compiled from their wheels, so ours are
        # compiled too, and kept (a shell that sets PYTHONDONTWRITEBYTECODE would otherwise make
        # every run of ours compile its modules from source, about 0.4 s).
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        _exec([str(PYTHON), "-m", "compileall", "-q", str(ROOT / "aggregator")])
        return _replace_process([str(PYTHON), str(ROOT / "bench" / f"{name}.py"), *rest])
    for command in (
        [str(PYTHON), "-m", "ruff", "check", "."],
        [str(PYTHON), "-m", "ruff", "format", "--check", "."],
        [str(PYTHON), "-m", "mypy"],
    ):
        _say(" ".join(command[2:]))
        if code := _exec(command):
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
