"""Request sizes are bounded before they are read: `aggregator web` as its own process, spoken to
over raw sockets, answers 413 to a body past the limit (a declared Content-Length at once, a
chunked body as soon as it passes the limit) and 431 to a request head past its limit, closes the
connection, keeps its memory (VmRSS and its peak, VmHWM, from /proc) and goes on serving."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aggregator.web import FORM_BYTES, HEAD_BYTES
from tests.test_service import Running, free_port

YAML = """\
sections: [{id: world, title: World}]
sources: [{id: herald, url: 'https://herald.example/rss', section: world, title: Herald}]
outputs: [{id: all, title: Everything}]
digests: [{id: daily, title: Daily, schedule: '0 7 * * *', output: all}]
smtp: {host: 127.0.0.1, port: 9, security: none, from: news@example.org}
server: {host: 127.0.0.1, port: PORT, base_url: 'http://news.test/'}
storage: {url: 'sqlite:///DB'}
"""
SUBSCRIBE = "/digests/daily/subscribe"
MIB = 1024 * 1024
GROWTH = 8 * MIB  # "a few MB": what the process may gain while refusing a request
ANSWER_WITHIN = 20.0  # seconds: generous; the old server never answered at all


@dataclass
class Server:
    port: int
    pid: int

    def memory(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in bytes: the resident size now and its peak so far."""
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
        return fields["VmRSS"], fields["VmHWM"]

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=ANSWER_WITHIN)

    def get(self, path: str) -> int:
        with self.connect() as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: news.test\r\nConnection: close\r\n\r\n".encode()
            )
            return read_answer(sock).status


@dataclass
class Answer:
    status: int
    raw: bytes
    closed: bool  # the server closed the connection after answering


def read_answer(sock: socket.socket) -> Answer:
    """Everything the server sends until it closes (or resets) the connection."""
    data = bytearray()
    closed = False
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            data += chunk
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        pass  # still open: reported by the caller
    assert data, f"no answer within {ANSWER_WITHIN:.0f} s"
    return Answer(int(data.split(b" ", 2)[1]), bytes(data), closed)


class Sender:
    """Writes `piece` again and again on a thread until `cap` bytes or the server stops taking
    them; `sent` is how much the socket accepted."""

    def __init__(self, sock: socket.socket, piece: bytes, cap: int) -> None:
        self.sock, self.piece, self.cap = sock, piece, cap
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while self.sent < self.cap:
                self.sock.sendall(self.piece)
                self.sent += len(self.piece)
        except OSError:
            pass

    def join(self) -> None:
        self.thread.join(timeout=ANSWER_WITHIN)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("bounds")
    port = free_port()
    config = root / "feeds.yaml"
    config.write_text(YAML.replace("PORT", str(port)).replace("DB", str(root / "a.db")))
    service = Running(["web", "-c", str(config)], cwd=root)
    try:
        up = Server(port, service.process.pid)
        deadline = time.monotonic() + 30
        while True:
            assert service.process.poll() is None, "\n".join(service.seen)
            try:
                if up.get("/healthz") == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "aggregator web did not start"
            time.sleep(0.1)
        # warm every path the tests take, so that what they measure is the request alone
        assert up.get(SUBSCRIBE) == 200 and up.get("/feeds/all.atom") == 200
        assert post(up, SUBSCRIBE, b"email=not-an-address").status == 400
        yield up
    finally:
        assert service.stop(signal.SIGTERM) == 0, "\n".join(service.seen)


def post(server: Server, path: str, body: bytes) -> Answer:
    with server.connect() as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: news.test\r\nConnection: close\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        return read_answer(sock)


def still_serving(server: Server) -> None:
    assert server.get("/feeds/all.atom") == 200
    assert server.get("/healthz") == 200


def test_a_declared_length_past_the_limit_is_refused_before_its_body_is_read(
    server: Server,
) -> None:
    before = server.memory()
    with server.connect() as sock:
        sock.sendall(
            f"POST {SUBSCRIBE} HTTP/1.1\r\nHost: news.test\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {1536 * MIB}\r\n\r\n".encode()
        )
        sender = Sender(sock, b"email=" + b"a" * (MIB - 6), 96 * MIB)
        answer = read_answer(sock)
        sender.join()
    after = server.memory()
    assert answer.status == 413 and answer.closed, answer.raw[:300]
    assert b"connection: close" in answer.raw.lower()
    assert after[0] - before[0] < GROWTH and after[1] - before[1] < GROWTH, (before, after)
    still_serving(server)


def test_a_chunked_body_that_keeps_coming_is_cut_off_past_the_limit(server: Server) -> None:
    before = server.memory()
    piece = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"  # 64 KiB chunks, never a last one
    with server.connect() as sock:
        sock.sendall(
            f"POST {SUBSCRIBE} HTTP/1.1\r\nHost: news.test\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        sender = Sender(sock, piece, 96 * MIB)
        answer = read_answer(sock)
        sender.join()
    after = server.memory()
    assert answer.status == 413 and answer.closed, answer.raw[:300]
    assert sender.sent < 48 * MIB  # refused early: only what the sockets' buffers held went out
    assert after[0] - before[0] < GROWTH and after[1] - before[1] < GROWTH, (before, after)
    still_serving(server)


@pytest.mark.parametrize("where", ["request line", "header"])
def test_a_request_head_past_its_limit_is_refused_with_431(server: Server, where: str) -> None:
    before = server.memory()
    start = "GET /feeds/all.atom?q=" if where == "request line" else "GET / HTTP/1.1\r\nX-Big: "
    with server.connect() as sock:
        sock.sendall(start.encode())
        sender = Sender(sock, b"a" * 0x10000, 96 * MIB)
        answer = read_answer(sock)
        sender.join()
    after = server.memory()
    assert answer.status == 431 and answer.closed, answer.raw[:300]
    assert after[0] - before[0] < GROWTH and after[1] - before[1] < GROWTH, (before, after)
    still_serving(server)


def test_forms_up_to_the_limit_are_read_and_no_body_is_taken_where_none_is_expected(
    server: Server,
) -> None:
    at_limit = b"email=not-an-address&pad=" + b"x" * (FORM_BYTES - 25)
    assert len(at_limit) == FORM_BYTES
    assert post(server, SUBSCRIBE, at_limit).status == 400  # read, and the address refused
    assert post(server, SUBSCRIBE, at_limit + b"x").status == 413
    one_click = post(server, "/digests/daily/unsubscribe?token=nope", b"List-Unsubscribe=One-Click")
    assert one_click.status == 400  # RFC 8058's body is read; the token is what is wrong
    with server.connect() as sock:
        sock.sendall(
            b"GET /feeds/all.atom HTTP/1.1\r\nHost: news.test\r\nContent-Length: 5\r\n\r\n"
        )
        assert read_answer(sock).status == 413
    assert len("GET /" + "a" * (HEAD_BYTES // 2)) < HEAD_BYTES
    assert server.get("/feeds/all.atom?q=" + "a" * (HEAD_BYTES // 2)) == 200
    still_serving(server)
