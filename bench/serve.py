"""HTTP serving of a published 50-item Atom feed: `aggregator web` against nginx on the export.

    python3 tasks.py bench serve [--duration 10] [--connections 32] [--rounds 3]

A temporary feeds.yaml (one section, one source, one output `all` of 50 entries) and a SQLite
database of `--items` stored items (a few hundred words each, so the Atom document is 50-100 KB)
are made; then `aggregator web` runs as its own process, and the same output, written by
`aggregator export`, is served by nginx (`etag on`; `--nginx-workers` processes) twice: with
`gzip on` (each answer compressed anew), and with `gzip_static` (a .gz file beside the Atom file,
as a static deployment would have). Each answers `/feeds/all.atom` on 127.0.0.1 to `wrk`
(`-t2 -c<connections> -d<duration>`) in two measurements: plain GETs with `Accept-Encoding: gzip`
(200s), and the same with the validator of a first response (304s: `If-None-Match` with its ETag,
or `If-Modified-Since` with its Last-Modified when the server does not honour the ETag). Each
measurement runs `--rounds` times, interleaved, and the median is shown. Statuses are checked: one
request of each kind first, then wrk's count of non-2xx/3xx answers and the bytes read per answer
(a 304 has no body).

wrk and nginx are Debian packages; when either is missing and this runs as root, they are
installed with apt-get (said so on the way). Without wrk, a small asyncio load generator in a
child process (fixed duration) is used instead, and the table says so; it is slower than wrk, so
its rates are a floor. Client and servers share the machine's cores, as in any loopback test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import grp
import gzip
import http.client
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT / "tests" / "data" / "eval" / "items.jsonl"
PATH = "/feeds/all.atom"
WRK_DONE = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d bytes=%d duration_us=%d status=%d connect=%d read=%d write=%d timeout=%d\\n",
    summary.requests, summary.bytes, summary.duration,
    e.status, e.connect, e.read, e.write, e.timeout))
end
"""
WRK_LINE = re.compile(
    r"BENCH requests=(\d+) bytes=(\d+) duration_us=(\d+) status=(\d+) "
    r"connect=(\d+) read=(\d+) write=(\d+) timeout=(\d+)"
)


def say(message: str) -> None:
    print(f"bench serve: {message}", file=sys.stderr, flush=True)


# -- the data ---------------------------------------------------------------------------------


class Writer:
    """News-like HTML: sentences of words drawn (Zipf) from the labelled set's vocabulary, so
    the text gzips about as well as real news (3-4x with the markup)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        counts: Counter[str] = Counter()
        self.titles: list[str] = []
        for line in EVAL.read_text(encoding="utf-8").splitlines():
            data = json.loads(line)
            self.titles.append(data["title"])
            counts.update(re.findall(r"[A-Za-z][A-Za-z'\u2019-]+", data["summary"]))
        self.words = [word for word, _ in counts.most_common()]
        self.weights = [1 / (rank + 1) for rank in range(len(self.words))]

    def sentence(self) -> str:
        words = self.rng.choices(self.words, self.weights, k=self.rng.randint(10, 20))
        return " ".join(words).capitalize() + "."

    def paragraph(self) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randint(3, 5)))

    def html(self, paragraphs: int) -> str:
        return "".join(f"<p>{self.paragraph()}</p>" for _ in range(paragraphs))


def build(directory: Path, port: int, items: int, seed: int) -> Path:
    """feeds.yaml and a filled SQLite database in `directory`; the config's path."""
    from aggregator.config import load_config
    from aggregator.process.pipeline import Processor
    from aggregator.storage import Storage
    from aggregator.types import Entry

    config_path = directory / "feeds.yaml"
    config_path.write_text(
        f"""\
sections:
  - id: world
    title: World
sources:
  - id: wire
    title: The Wire
    url: https://wire.example/feed.xml
    section: world
outputs:
  - id: all
    title: Everything
    limit: 50
server:
  host: 127.0.0.1
  port: {port}
storage:
  url: sqlite:///{directory / "aggregator.db"}
""",
        encoding="utf-8",
    )
    config = load_config(config_path)
    storage = Storage.open(config.storage.url)
    try:
        storage.sync_sources(config.sources)
        processor = Processor(config)
        writer = Writer(seed)
        titles = writer.rng.sample(writer.titles, items)
        now = datetime.now(UTC).replace(microsecond=0)
        entries = [
            Entry(
                key=f"wire-{n}",
                title=titles[n],
                link=f"https://wire.example/news/{n}",
                canonical_link=f"https://wire.example/news/{n}",
                summary=writer.paragraph(),
                content=writer.html(writer.rng.randint(2, 3)),
                authors=("Wire staff",),
                categories=("World",),
                published=now - timedelta(minutes=7 * n),
            )
            for n in range(items)
        ]
        for start in range(0, items, 25):  # a poll's worth at a time
            storage.save_entries("wire", entries[start : start + 25], processor)
    finally:
        storage.close()
    return config_path


# -- tools and processes ----------------------------------------------------------------------


@dataclass
class Tools:
    wrk: str | None
    nginx: str | None
    installed: list[str] = field(default_factory=list)


def _nginx_path() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def find_tools(client: str) -> Tools:
    """wrk and nginx, installed once with apt-get when missing and this runs as root."""
    wrk = shutil.which("wrk") if client != "python" else None
    nginx = _nginx_path()
    wanted = [name for name, path in (("wrk", wrk), ("nginx", nginx)) if path is None]
    if client == "python":
        wanted = [w for w in wanted if w != "wrk"]
    if not wanted:
        return Tools(wrk, nginx)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        say(
            f"{' and '.join(wanted)} not found, and cannot install them (needs root and apt-get):"
            " `apt-get install wrk nginx-light` as root enables the full comparison"
        )
        return Tools(wrk, nginx)
    packages = ["wrk" if w == "wrk" else "nginx-light" for w in wanted]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in (packages, [p.replace("nginx-light", "nginx") for p in packages]):
        command = ["apt-get", "install", "-y", "--no-install-recommends", *attempt]
        say(f"{' and '.join(wanted)} not found; installing: {' '.join(command)}")
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0 and "Unable to locate" in done.stderr + done.stdout:
            say("package lists out of date; running apt-get update")
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
            done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode == 0:
            break
        say(f"apt-get failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    now = Tools(shutil.which("wrk") if client != "python" else None, _nginx_path())
    now.installed = [
        name
        for name, before, after in (("wrk", wrk, now.wrk), ("nginx", nginx, now.nginx))
        if before is None and after is not None
    ]
    return now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def running(command: list[str], log: Path, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, its output to `log`; terminated (then killed) however the block ends."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                say(f"{name} did not stop on SIGTERM; killing it")
                process.kill()
                process.wait()


def wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"bench serve: {url} exited with {process.returncode}:\n{tail}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if _raw_get(url, {}, timeout=2).status == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"bench serve: {url} did not answer within {timeout:.0f} s")


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
{user}pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    types {{
        application/atom+xml atom;
        application/rss+xml rss;
        application/feed+json json;
        text/html html;
        text/x-opml xml;
    }}
    default_type application/octet-stream;
    access_log {tmp}/nginx-access.log combined buffer=256k flush=2s;
    client_body_temp_path {tmp}/nginx-temp/body;
    proxy_temp_path {tmp}/nginx-temp/proxy;
    fastcgi_temp_path {tmp}/nginx-temp/fastcgi;
    uwsgi_temp_path {tmp}/nginx-temp/uwsgi;
    scgi_temp_path {tmp}/nginx-temp/scgi;
    sendfile on;
    keepalive_requests 1000000;
    gzip on;
    gzip_types application/atom+xml;
    etag on;
    server {{
        listen 127.0.0.1:{port};
        root {site};
    }}
    server {{
        listen 127.0.0.1:{static_port};
        root {site};
        gzip_static on;
    }}
}}
"""


def nginx_conf(tmp: Path, site: Path, ports: tuple[int, int], workers: int) -> Path:
    """Two servers of the export: `gzip on` (compressing each answer), and `gzip_static` (the
    .gz files written here beside the Atom files, as a deployment would, at our gzip level)."""
    for atom in site.rglob("*.atom"):
        packed = atom.with_name(atom.name + ".gz")
        packed.write_bytes(gzip.compress(atom.read_bytes(), compresslevel=6, mtime=0))
        stat = atom.stat()
        os.utime(packed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    user = ""
    if os.geteuid() == 0:  # workers drop to nobody, who must be able to read the files
        nobody = pwd.getpwnam("nobody")
        user = f"user {nobody.pw_name} {grp.getgrgid(nobody.pw_gid).gr_name};\n"
        for path in (tmp, site, *site.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
    (tmp / "nginx-temp").mkdir(exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            tmp=tmp, site=site, port=ports[0], static_port=ports[1], workers=workers, user=user
        ),
        encoding="utf-8",
    )
    return conf


# -- probing and measuring --------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    gzip_bytes: int = 0  # the gzip body as sent
    identity_bytes: int = 0
    validator: tuple[str, str] = ("", "")  # the header that gets a 304
    headers: dict[str, str] = field(default_factory=dict)  # of the first gzip response
    rates: dict[str, list[float]] = field(default_factory=lambda: {"200": [], "304": []})
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: dict[str, str]  # names in lower case


def _raw_get(url: str, headers: dict[str, str], timeout: float = 10) -> _Answer:
    """One GET on a connection of its own; the body's size as sent (nothing is decoded)."""
    return _raw_get_sized(url, headers, timeout)[0]


def _raw_get_sized(url: str, headers: dict[str, str], timeout: float = 10) -> tuple[_Answer, int]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), None, headers)
        response = conn.getresponse()
        size = len(response.read())
        found = {name.lower(): value for name, value in response.getheaders()}
        return _Answer(response.status, found), size
    finally:
        conn.close()


def probe(target: Target) -> None:
    """One request of each kind: sizes, headers, and which validator gets a 304."""
    gz = {"Accept-Encoding": "gzip"}
    first, target.gzip_bytes = _raw_get_sized(target.url, gz)
    plain, target.identity_bytes = _raw_get_sized(target.url, {"Accept-Encoding": "identity"})
    target.headers = dict(first.headers)
    if first.status != 200 or first.headers.get("content-encoding") != "gzip":
        target.problems.append(
            f"GET with gzip: {first.status}, "
            f"Content-Encoding {first.headers.get('content-encoding')!r}"
        )
    if plain.status != 200 or "content-encoding" in plain.headers:
        target.problems.append(f"GET without gzip: {plain.status}")
    candidates = []
    if etag := first.headers.get("etag"):
        candidates.append(("If-None-Match", etag))
    if modified := first.headers.get("last-modified"):
        candidates.append(("If-Modified-Since", modified))
    for name, value in candidates:
        answer, size = _raw_get_sized(target.url, {**gz, name: value})
        if answer.status == 304 and size == 0:
            target.validator = (name, value)
            weak = answer.headers.get("etag", "").removeprefix("W/")
            if weak != (etag or "").removeprefix("W/"):
                target.problems.append(
                    f"304 ETag {answer.headers.get('etag')!r} differs from the 200's {etag!r}"
                )
            break
        say(f"{target.name}: {name}: {value} gave {answer.status}, not 304")
    else:
        target.problems.append("no validator of the first response gave a 304")


@dataclass(frozen=True)
class Run:
    rate: float
    requests: int
    bytes_each: float
    bad_status: int
    socket_errors: int


def wrk(
    binary: str, script: Path, url: str, headers: dict[str, str], seconds: float, connections: int
) -> Run:
    command = [binary, f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds:g}s"]
    command += ["--timeout", "5s", "-s", str(script)]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run(
        [*command, url], capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    found = WRK_LINE.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(
            f"bench serve: wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    requests, size, micros, status, *errors = (int(g) for g in found.groups())
    return Run(requests / (micros / 1e6), requests, size / max(requests, 1), status, sum(errors))


def python_load(url: str, headers: dict[str, str], seconds: float, connections: int) -> Run:
    command = [sys.executable, __file__, "_load", url, f"{seconds:g}", str(connections)]
    for name, value in headers.items():
        command.append(f"{name}: {value}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise SystemExit(f"bench serve: the load generator failed:\n{done.stderr}")
    r = json.loads(done.stdout)
    return Run(
        r["requests"] / r["seconds"],
        r["requests"],
        r["bytes"] / max(r["requests"], 1),
        r["bad_status"],
        r["errors"],
    )


def check(target: Target, kind: str, run: Run) -> None:
    """wrk counts a 304 as a success: the bytes read per answer tell a 304 from a 200."""
    bad = []
    if run.bad_status or run.socket_errors:
        bad.append(f"{run.bad_status} non-2xx/3xx answers, {run.socket_errors} socket errors")
    if kind == "200" and run.bytes_each < target.gzip_bytes:
        bad.append(f"{run.bytes_each:.0f} bytes per answer, less than the gzip body")
    if kind == "304" and run.bytes_each > 1024:
        bad.append(f"{run.bytes_each:.0f} bytes per answer: not 304s")
    if bad:
        target.problems.append(f"{kind} run: {'; '.join(bad)}")


# -- the load generator used without wrk ------------------------------------------------------


async def _connection(
    host: str, port: int, request: bytes, deadline: float, stats: Counter[str]
) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        stats["errors"] += 1
        return
    try:
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, chunked = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
            size = len(head)
            if status != 304 and chunked:
                while True:
                    line = await reader.readuntil(b"\r\n")
                    chunk = int(line.split(b";")[0], 16)
                    size += len(line) + len(await reader.readexactly(chunk + 2))
                    if chunk == 0:
                        break
            elif status != 304:
                size += len(await reader.readexactly(length))
            stats["requests"] += 1
            stats["bytes"] += size
            stats["bad_status"] += not 200 <= status < 400
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        stats["errors"] += 1
    finally:
        writer.close()


async def _load(url: str, seconds: float, connections: int, headers: list[str]) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"GET {parts.path} HTTP/1.1", f"Host: {parts.netloc}", *headers]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    stats: Counter[str] = Counter()
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(
        *(_connection(host, port, request, deadline, stats) for _ in range(connections))
    )
    return {**stats, "seconds": time.monotonic() - started}


def load_main(argv: list[str]) -> int:
    """`serve.py _load URL SECONDS CONNECTIONS [HEADER...]`: a bounded run, JSON on stdout."""
    url, seconds, connections, *headers = argv
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    result = asyncio.run(_load(url, float(seconds), int(connections), headers))
    for key in ("requests", "bytes", "bad_status", "errors"):
        result.setdefault(key, 0)
    print(json.dumps(result))
    return 0


# -- the benchmark ----------------------------------------------------------------------------


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so the `finally` blocks stop the servers


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_load"]:
        return load_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="rounds (the median is shown)")
    parser.add_argument("--items", type=int, default=60, help="items stored (>= 50)")
    parser.add_argument("--nginx-workers", type=int, default=1)
    parser.add_argument(
        "--client", choices=("auto", "wrk", "python"), default="auto", help="load generator"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)

    tools = find_tools(args.client)
    if args.client == "wrk" and tools.wrk is None:
        raise SystemExit("bench serve: --client wrk, but wrk is not installed")
    client = "wrk" if tools.wrk else "python"
    if client == "python" and args.client == "auto":
        say("wrk is not available: using the Python load generator (rates are a floor)")
    if tools.nginx is None:
        say("nginx is not available: measuring `aggregator web` alone")
    python = sys.executable
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serve-")))
        port = free_port()
        say(f"storing {args.items} items in {tmp}")
        config = build(tmp, port, args.items, args.seed)
        web_log = tmp / "web.log"
        web = stack.enter_context(
            running([python, "-m", "aggregator", "web", "-c", str(config)], web_log, "aggregator")
        )
        wait_until_up(f"http://127.0.0.1:{port}/", web, web_log, 60)
        targets = [Target("aggregator web", f"http://127.0.0.1:{port}{PATH}")]
        site = tmp / "site"
        exported = subprocess.run(
            [python, "-m", "aggregator", "export", "--out", str(site), "-c", str(config)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if exported.returncode != 0:
            raise SystemExit(f"bench serve: export failed:\n{exported.stderr}")
        say(exported.stdout.strip())
        if tools.nginx is not None:
            ports = free_port(), free_port()
            conf = nginx_conf(tmp, site, ports, args.nginx_workers)
            command = [tools.nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx.err")]
            nginx = stack.enter_context(running(command, tmp / "nginx.out", "nginx"))
            for name, nginx_port in zip(("nginx gzip on", "nginx gzip_static"), ports, strict=True):
                wait_until_up(f"http://127.0.0.1:{nginx_port}{PATH}", nginx, tmp / "nginx.out", 20)
                targets.append(Target(name, f"http://127.0.0.1:{nginx_port}{PATH}"))
        for target in targets:
            probe(target)
        script = tmp / "done.lua"
        script.write_text(WRK_DONE, encoding="utf-8")

        def measure(target: Target, kind: str, seconds: float) -> Run:
            headers = {"Accept-Encoding": "gzip"}
            if kind == "304":
                headers[target.validator[0]] = target.validator[1]
            if tools.wrk is not None:
                return wrk(tools.wrk, script, target.url, headers, seconds, args.connections)
            return python_load(target.url, headers, seconds, args.connections)

        kinds = [("200", t) for t in targets] + [("304", t) for t in targets if t.validator[0]]
        for kind, target in kinds:  # warm-up: connections, caches, the gzip of our document
            measure(target, kind, min(2.0, args.duration))
        for round_ in range(args.rounds):
            for kind, target in kinds:
                run = measure(target, kind, args.duration)
                check(target, kind, run)
                target.rates[kind].append(run.rate)
                say(f"round {round_ + 1}: {target.name} {kind}s: {run.rate:,.0f}/s")
                with contextlib.suppress(FileNotFoundError):
                    os.truncate(tmp / "nginx-access.log", 0)  # it grows by ~100 MB a minute
        if web.poll() is not None:
            targets[0].problems.append(f"the web process exited with {web.returncode}")
        log = web_log.read_text(errors="replace")
        noisy = [
            line for line in log.splitlines() if re.search(r" (WARNING|ERROR|CRITICAL) ", line)
        ]
        if noisy or "Traceback" in log:
            targets[0].problems.append(f"{len(noisy)} warnings/errors logged, e.g. {noisy[:1]}")
        report(targets, args, client, tools)
    return 0


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _cell(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.0f}{unit}"


def report(targets: list[Target], args: argparse.Namespace, client: str, tools: Tools) -> None:
    print(
        f"GET {PATH} (50 entries), Accept-Encoding: gzip; {client}"
        + (f" -t{min(2, args.connections)}" if client == "wrk" else "")
        + f" -c{args.connections}, {args.duration:g} s x {args.rounds} rounds (median); "
        f"{os.cpu_count()} cores shared by client and server"
    )
    print(
        f"{'server':<17} {'200 req/s':>10} {'304 req/s':>10} {'gzip B':>8} {'plain B':>8}  304 via"
    )
    for t in targets:
        print(
            f"{t.name:<17} {_cell(_median(t.rates['200'])):>10} "
            f"{_cell(_median(t.rates['304'])):>10} {t.gzip_bytes:>8,} {t.identity_bytes:>8,}  "
            f"{t.validator[0] or 'none'}"
        )
    ours = targets[0]
    for theirs, label in zip(targets[1:], ("ours / gzip on", "ours / static"), strict=False):
        ratios = []
        for kind in ("200", "304"):
            a, b = _median(ours.rates[kind]), _median(theirs.rates[kind])
            ratios.append(f"{a / b:.2f}" if a and b else "-")
        print(f"{label:<17} {ratios[0]:>10} {ratios[1]:>10}")
    for kind, goal in (("200", 2000), ("304", 4000)):
        rate = _median(ours.rates[kind])
        verdict = "met" if rate is not None and rate >= goal else "NOT met"
        print(f"target: aggregator web >= {goal:,} {kind}s/s: {verdict}")
    print(
        f"(aggregator web: one uvicorn process, gzip level 6 cached; nginx: {args.nginx_workers} "
        "worker(s), `gzip on` compresses each answer (level 1), `gzip_static` sends a .gz file "
        "(level 6); "
        f"installed now: {', '.join(tools.installed) or 'nothing'})"
    )
    for t in targets:
        for problem in t.problems:
            print(f"problem: {t.name}: {problem}")
        if not t.problems:
            print(f"{t.name}: every status checked (200s, 304s)")


if __name__ == "__main__":
    sys.exit(main())
