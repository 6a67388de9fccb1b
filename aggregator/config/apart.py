"""Validating a config in a short-lived process of its own, for the long-running ones.

pydantic's import and the validators it builds stay in whatever process validates (about 9 MiB
at the peak of a first poll of 1,000 sources, which has a memory target of 120 MB, and the same
for as long as `run` or a worker lives), and a process that polls or serves has no other use for
them. So where a kept config (config/cache.py) is missing, the polling and serving commands hand
the file's bytes to `python -m aggregator.config.apart`, which validates them exactly as
`load_config` does (its problems come back with their file:line:column), keeps the config for
the next start, and sends it back pickled. The child runs while the parent goes on importing
what it needs (a `Validation` starts it at once and is waited for when needed), so on two cores
the validation costs little wall time. If the child cannot run or answer (no interpreter to
start, a crash), the parent validates itself, as before.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

from aggregator.config import cache
from aggregator.config.schema import Config
from aggregator.exceptions import ConfigError

log = logging.getLogger(__name__)

TIMEOUT = 120.0  # seconds; the file is bounded (8 MiB, aliases), so this is never met but by a bug
_ROOT = str(Path(__file__).resolve().parent.parent.parent)  # where `aggregator` is imported from


class Validation:
    """A config being validated in a child process; `result` waits for it."""

    def __init__(self, raw: bytes, name: str) -> None:
        """Start the child at once (its answer waits in its pipe); `name` is how its problems
        refer to the file."""
        self.raw = raw
        self._child: subprocess.Popen[bytes] | None = None
        if not sys.executable:  # an embedded interpreter may not know its own
            return
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        try:
            self._child = subprocess.Popen(
                # -P: nothing imported from the working folder (a `pickle.py` there would run)
                [sys.executable, "-P", "-m", "aggregator.config.apart", name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
        except (OSError, ValueError, TypeError) as exc:
            log.debug("could not start a process to validate the config (%s)", exc)

    def result(self) -> Config | None:
        """The validated config (not yet resolved: `defaults` not filled in); ConfigError with
        its problems; None when the child could not tell (the caller validates itself)."""
        if self._child is None:
            return None
        try:
            out, err = self._child.communicate(self.raw, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.communicate()
            log.warning("validating the config in a child process took over %.0f s", TIMEOUT)
            return None
        if self._child.returncode != 0:
            log.warning(
                "validating the config in a child process failed (exit %s): %s",
                self._child.returncode,
                err.decode(errors="replace").strip()[-500:],
            )
            return None
        try:
            code, kind, value = pickle.loads(out)  # our own child's answer
        except Exception as exc:  # a damaged answer: validating here is the answer
            log.warning("the child process validating the config answered badly (%s)", exc)
            return None
        if code != cache.code():  # the project changed on the disk since this process started
            return None
        if kind == "problems":
            raise ConfigError(value)
        return value if isinstance(value, Config) else None


def main() -> None:
    """The child: the file's bytes on stdin, its name as the argument; a pickled (code,
    "config", config) or (code, "problems", [ConfigProblem, ...]) on stdout, `code` saying which
    code validated."""
    from aggregator.config import loader, schema

    schema.validator()  # made while the parent imports what it needs, before its bytes come
    raw = sys.stdin.buffer.read()  # UTF-8: the parent read it as such (`loader._read`)
    name = sys.argv[1]
    watched = cache.Watched(os.environ)
    answer: tuple[str, object]
    try:
        config = loader.validated(raw.decode("utf-8"), name, watched)
    except ConfigError as exc:
        answer = ("problems", list(exc.problems))
    else:
        if not watched.used:  # values from the environment are not written to the disk
            cache.store(cache.folder(os.environ), cache.key(raw), config)
        answer = ("config", config)
    reply = (cache.code(), *answer)
    sys.stdout.buffer.write(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))


if __name__ == "__main__":
    main()
