"""Content-Encoding decoding that can never produce more than it is asked for at once.

HTTP clients decode a whole network chunk in one call, so 3 KB of brotli becomes 2 GiB before
anyone can count it. Here every decoder yields pieces of about `PIECE` bytes (zlib's `max_length`,
brotli's `output_buffer_limit`), lazily, so the caller stops a bomb after `max_bytes` of output,
however small its input was. The only module that imports brotli.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator

import brotli

from aggregator.exceptions import AggregatorError

PIECE = 64 * 1024
ACCEPT_ENCODING = "gzip, deflate, br"


class DecodingError(AggregatorError, ValueError):
    """The body does not decode with the encoding the server named, or names one we never asked."""


def _inflate(chunks: Iterable[bytes], wbits: int, name: str) -> Iterator[bytes]:
    gzip = wbits > zlib.MAX_WBITS
    decoder = zlib.decompressobj(wbits)
    received = ended = False
    try:
        for chunk in chunks:
            data = chunk
            received = received or bool(chunk)
            if ended:  # the stream ended at a chunk's edge: another gzip member, or the end
                if not (gzip and data.startswith(b"\x1f\x8b")):
                    return  # trailing bytes after the stream: ignored, as browsers do
                decoder, ended = zlib.decompressobj(wbits), False
            while data:
                out = decoder.decompress(data, PIECE)
                data = decoder.unconsumed_tail
                if out:
                    yield out
                while len(out) == PIECE and not data and not decoder.eof:
                    out = decoder.decompress(b"", PIECE)  # output still pending inside zlib
                    if out:
                        yield out
                if decoder.eof:
                    rest = decoder.unused_data + data
                    if not rest:
                        ended = True
                        break
                    if not (gzip and rest.startswith(b"\x1f\x8b")):
                        return
                    decoder, data = zlib.decompressobj(wbits), rest  # another gzip member
        tail = decoder.flush(PIECE)
        if tail:
            yield tail
    except zlib.error as exc:
        raise DecodingError(f"the body does not decode as {name}: {exc}") from exc
    if received and not (ended or decoder.eof):
        raise DecodingError(f"the body ends before its {name} stream does (cut off?)")


def _gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    return _inflate(chunks, 16 + zlib.MAX_WBITS, "gzip")


def _deflate(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """HTTP `deflate` is meant to be zlib-wrapped; some servers send it raw, so look first."""
    source = iter(chunks)
    first = b""
    for chunk in source:
        first += chunk
        if len(first) >= 2:
            break

    def replay() -> Iterator[bytes]:
        yield first
        yield from source

    wrapped = len(first) >= 2 and (first[0] & 0x0F) == 8 and (first[0] << 8 | first[1]) % 31 == 0
    return _inflate(replay(), zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS, "deflate")


def _unbrotli(chunks: Iterable[bytes]) -> Iterator[bytes]:
    decoder = brotli.Decompressor()
    received = False
    try:
        for chunk in chunks:
            received = received or bool(chunk)
            out = decoder.process(chunk, output_buffer_limit=PIECE)
            if out:
                yield out
            while out or not decoder.can_accept_more_data():  # drain what is still pending
                out = decoder.process(b"", output_buffer_limit=PIECE)
                if out:
                    yield out
    except brotli.error as exc:
        raise DecodingError(f"the body does not decode as brotli: {exc}") from exc
    if received and not decoder.is_finished():
        raise DecodingError("the body ends before its brotli stream does (cut off?)")


_DECODERS: dict[str, Callable[[Iterable[bytes]], Iterator[bytes]]] = {
    "gzip": _gunzip,
    "x-gzip": _gunzip,
    "deflate": _deflate,
    "br": _unbrotli,
}


def decoded(chunks: Iterable[bytes], content_encoding: str | None) -> Iterator[bytes]:
    """The body with every listed encoding undone (last applied, first undone), piece by piece."""
    names = [n.strip().lower() for n in (content_encoding or "").split(",")]
    stream: Iterable[bytes] = chunks
    for name in reversed([n for n in names if n and n != "identity"]):
        decoder = _DECODERS.get(name)
        if decoder is None:
            raise DecodingError(f"the server used Content-Encoding '{name}', which was not asked")
        stream = decoder(stream)
    return iter(stream)
