"""A small asyncio HTTP/1.1 server for benchmarks: serves a directory of feeds from memory with
ETags and 304s, keep-alive, and nothing else. Not for tests (they use tests/feedserver.py)."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path
from typing import ClassVar, cast


def load(directory: Path) -> dict[bytes, tuple[bytes, bytes]]:
    files = {}
    for path in directory.glob("*.xml"):
        body = path.read_bytes()
        etag = b'"' + hashlib.sha1(body).hexdigest()[:16].encode() + b'"'
        files[b"/" + path.name.encode()] = (etag, body)
    return files


class Feeds(asyncio.Protocol):
    files: ClassVar[dict[bytes, tuple[bytes, bytes]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream's transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            path = lines[0].split(b" ")[1]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            found = self.files.get(path)
            if found is None:
                self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            elif headers.get(b"if-none-match") == found[0]:
                self.transport.write(
                    b"HTTP/1.1 304 Not Modified\r\nETag: " + found[0] + b"\r\n\r\n"
                )
            else:
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml; charset=utf-8\r\n"
                    b"ETag: "
                    + found[0]
                    + b"\r\nContent-Length: "
                    + str(len(found[1])).encode()
                    + b"\r\n\r\n"
                    + found[1]
                )


async def main(directory: Path, port: int) -> None:
    Feeds.files = load(directory)
    server = await asyncio.get_running_loop().create_server(Feeds, "127.0.0.1", port, backlog=1024)
    print(
        f"serving {len(Feeds.files)} feeds on 127.0.0.1:{server.sockets[0].getsockname()[1]}",
        flush=True,
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))
