"""A hostile HTTP server on 127.0.0.1: it writes raw bytes on the socket, as slowly as it likes.

Each path maps to a script that gets the connection and writes whatever it wants (a status line
trickled a byte at a time, a body that never ends, a compression bomb). Every loop is bounded by a
count, so a client that never hangs up still cannot keep a test running for ever; `sent[path]`
counts the bytes each script managed to write before the client went away.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

Script = Callable[[socket.socket], None]


def _read_request(conn: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    return parts[1] if len(parts) > 1 else "/"


class HostileServer:
    """`with HostileServer() as server:`; `server.scripts[path] = script`; `server.url(path)`."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.sent: dict[str, int] = {}
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, path: str, sent: int) -> None:
        with self._lock:
            self.sent[path] = self.sent.get(path, 0) + sent

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                path = _read_request(conn)
                with self._lock:
                    self.requests.append(path)
                script = self.scripts.get(path)
                if script is None:
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    return
                script(conn)
            except OSError:
                return

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        self._listener.close()


def trickle_body(
    server: HostileServer, path: str, *, every: float = 0.05, most: int = 2_000
) -> Script:
    """200 with a Content-Length of 100,000, then a byte every `every` seconds (at most `most`)."""

    def script(conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        for _ in range(most):
            conn.sendall(b"<")
            server.count(path, 1)
            time.sleep(every)

    return script


def trickle_headers(
    server: HostileServer, path: str, *, every: float = 0.05, most: int = 2_000
) -> Script:
    """A status line and then header bytes one at a time, never finishing the head."""

    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(most):
            conn.sendall(b"a")
            server.count(path, 1)
            time.sleep(every)

    return script


def body(payload: bytes, headers: dict[str, str] | None = None, status: str = "200 OK") -> Script:
    """A whole response at once: the plain case, and bombs (`Content-Encoding` in `headers`)."""

    def script(conn: socket.socket) -> None:
        head = [f"HTTP/1.1 {status}", f"Content-Length: {len(payload)}", "Connection: close"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)

    return script
