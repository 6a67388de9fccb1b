"""A real HTTP server on 127.0.0.1 for tests: scripted replies per path, every request logged."""

from __future__ import annotations

import gzip
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Reply:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line is sent


@dataclass(frozen=True)
class Logged:
    path: str
    headers: dict[str, str]
    at: float
    method: str = "GET"
    body: bytes = b""
    peer: int = 0  # the client's port: one per connection


Route = Callable[["Request"], Reply]


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def feed_file(
    body: bytes,
    content_type: str = "application/rss+xml",
    etag: str | None = None,
    last_modified: str | None = None,
    gzipped: bool = False,
) -> Route:
    """A static feed with validators: 304 when the client sends them back."""

    def route(request: Request) -> Reply:
        headers = {"Content-Type": content_type}
        if etag:
            headers["ETag"] = etag
        if last_modified:
            headers["Last-Modified"] = last_modified
        if (etag and request.header("if-none-match") == etag) or (
            last_modified and not etag and request.header("if-modified-since") == last_modified
        ):
            return Reply(304, b"", headers)
        payload = body
        if gzipped and "gzip" in (request.header("accept-encoding") or ""):
            payload = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return Reply(200, payload, headers)

    return route


class FeedServer:
    """Start with `with FeedServer() as server:`; `server.url(path)` is an address on it."""

    def __init__(self, host: str = "127.0.0.1", *, tls: tuple[Path, Path] | None = None) -> None:
        """`tls`: a certificate and its key, to serve HTTPS."""
        self.routes: dict[str, Route] = {}
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                return

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server._lock:
                    server.log.append(
                        Logged(self.path, headers, time.monotonic(), peer=self.client_address[1])
                    )
                route = server.routes.get(self.path)
                reply = route(Request(self.path, headers)) if route else Reply(404, b"not found")
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self._send(reply)
                except (BrokenPipeError, ConnectionResetError):
                    return

            def do_POST(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                length = int(headers.get("content-length") or 0)
                body = self.rfile.read(min(length, 1024 * 1024))
                with server._lock:
                    server.log.append(Logged(self.path, headers, time.monotonic(), "POST", body))
                route = server.routes.get(self.path)
                reply = route(Request(self.path, headers)) if route else Reply(404, b"not found")
                self._send(reply)

            def _send(self, reply: Reply) -> None:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if isinstance(reply.body, bytes):
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in reply.body:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self.port = self._server.server_address[1]
        self.host = host
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def requests_to(self, path: str) -> list[Logged]:
        with self._lock:
            return [entry for entry in self.log if entry.path == path]

    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def endless(chunk: bytes = b"<item>" * 10_000, limit: int = 64 * 1024 * 1024) -> Iterator[bytes]:
    """A body that goes on and on (bounded, so a broken client cannot hang a test)."""
    sent = 0
    while sent < limit:
        yield chunk
        sent += len(chunk)


def read(path: Path) -> bytes:
    return path.read_bytes()


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by openssl."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert
