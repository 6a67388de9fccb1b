#!/usr/bin/env python3
"""Set up and run the project with nothing but Python 3.11+: the README's two commands.

    python3 tasks.py run  [ARGS]   create .venv, install the service, start it (SQLite by default)
    python3 tasks.py test [ARGS]   create .venv-test, install the service and its test tools, run
                                   pytest
    python3 tasks.py lint          ruff (lint and format check) and mypy
    python3 tasks.py bench [NAME] [ARGS]
                                   a benchmark in bench/ (on demand, never in CI): ingest
                                   (the default), poll, dedupe, quality, serve, digest, soak,
                                   startup or search

Each virtual environment is reinstalled only when pyproject.toml changes, so the second run starts
at once. The service has one of its own, holding nothing but what it needs: in one shared with
the test tools, httpcore and httpx imported what those brought (selenium's trio, pytest's
pygments), 14 MiB in every service process. Standard library only: this runs before anything is
installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv as venv_module
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"  # the service
TEST_VENV = ROOT / ".venv-test"  # the service with the test, lint and benchmark tools


def python_of(venv: Path) -> Path:
    return (
        venv
        / ("Scripts" if os.name == "nt" else "bin")
        / ("python.exe" if os.name == "nt" else "python")
    )


# bench: aiosmtpd (digest) from test, and reader (ingest's peer) from bench
EXTRAS = {
    "run": "",
    "test": "[test,deploy-check]",
    "lint": "[test,lint]",  # mypy reads the tests too
    "bench": "[test,bench]",
}
BENCHES = ("ingest", "dedupe", "quality", "serve", "digest", "soak", "startup", "search", "poll")


def _say(message: str) -> None:
    print(f"tasks.py: {message}", file=sys.stderr, flush=True)


def ensure_venv(extras: str, venv: Path | None = None) -> Path:
    """Create the virtual environment (`.venv` for the service alone, `.venv-test` where extras
    are asked for, unless `venv` says which) and install the project (editable) unless it is
    already up to date; its Python."""
    venv = venv or (TEST_VENV if extras else VENV)
    python = python_of(venv)
    if sys.version_info < (3, 11):  # noqa: UP036 (this file runs before any check of the version)
        sys.exit(f"tasks.py: Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    wanted = {name for name in extras.strip("[]").split(",") if name}
    for done in venv.glob(f".installed-{digest}*"):  # an install with these extras or more
        had = {name for name in done.name.removeprefix(f".installed-{digest}").split(",") if name}
        if wanted <= {name.lstrip("-") for name in had}:
            return python
        wanted |= {name.lstrip("-") for name in had}  # keep what is there (tests, then lint)
    extras = f"[{','.join(sorted(wanted))}]" if wanted else ""
    stamp = venv / f".installed-{digest}{'-' + ','.join(sorted(wanted)) if wanted else ''}"
    if not python.exists():
        _say(f"creating {venv.relative_to(ROOT)}")
        venv_module.EnvBuilder(with_pip=True).create(venv)
    _say("installing the project and its dependencies (first run only)")
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "--editable", f"{ROOT}{extras}"], check=True)
    for old in venv.glob(".installed-*"):
        old.unlink()
    stamp.touch()
    return python


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
    python = ensure_venv(EXTRAS[task])
    if task == "run":
        return _replace_process([str(python), "-m", "aggregator", "run", *rest])
    if task == "test":
        # One pytest worker per core (pytest-xdist) unless told otherwise: `-n 0` runs in one.
        spread = [] if any(a.startswith(("-n", "--numprocesses")) for a in rest) else ["-n", "auto"]
        return _replace_process([str(python), "-m", "pytest", *spread, *rest])
    if task == "bench":
        name = rest.pop(0) if rest and rest[0] in BENCHES else "ingest"
        # The service is measured as a user runs it: from its own environment (AGGREGATOR_PYTHON
        # tells the benchmarks which), its modules compiled as the peer's come from their wheels,
        # and kept (a shell that sets PYTHONDONTWRITEBYTECODE would otherwise make every run of
        # ours compile its modules from source, about 0.4 s).
        # the service's own environment, with PostgreSQL's driver where a benchmark uses it
        postgres = any("postgresql" in arg for arg in rest)
        service = ensure_venv("[postgres]" if postgres else EXTRAS["run"], VENV)
        os.environ["AGGREGATOR_PYTHON"] = str(service)
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        _exec([str(service), "-m", "compileall", "-q", str(ROOT / "aggregator")])
        return _replace_process([str(python), str(ROOT / "bench" / f"{name}.py"), *rest])
    for command in (
        [str(python), "-m", "ruff", "check", "."],
        [str(python), "-m", "ruff", "format", "--check", "."],
        [str(python), "-m", "mypy"],
    ):
        _say(" ".join(command[2:]))
        if code := _exec(command):
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
