"""Content decoding at its edges: bodies cut short, gzip members split across chunks, and
JSON nesting cut without a quadratic scan."""

from __future__ import annotations

import gzip
import subprocess
import sys
import zlib

import brotli
import pytest

from aggregator.feed.decoding import DecodingError, decoded

TEXT = b"<rss>" + b"word " * 20_000 + b"</rss>"


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("br", brotli.compress)],
)
def test_a_body_cut_short_is_an_error_not_half_a_feed(encoding: str, encode: object) -> None:
    whole = encode(TEXT)  # type: ignore[operator]
    assert b"".join(decoded(_chunks(whole, 100), encoding)) == TEXT
    with pytest.raises(DecodingError, match="ends before its"):
        b"".join(decoded(_chunks(whole[: len(whole) // 2], 100), encoding))


def test_gzip_members_split_at_a_chunk_edge_are_all_read() -> None:
    first, second = gzip.compress(b"a" * 100), gzip.compress(b"b" * 100)
    assert b"".join(decoded([first, second], "gzip")) == b"a" * 100 + b"b" * 100
    assert b"".join(decoded([first + b"trailing junk"], "gzip")) == b"a" * 100


def test_an_empty_encoded_body_stays_empty() -> None:
    assert b"".join(decoded([], "gzip")) == b""
    assert b"".join(decoded([b""], "br")) == b""


def test_cutting_deep_json_takes_one_pass_over_hostile_quotes() -> None:
    # Deep brackets force the fallback; thousands of `"\` pairs made the old string pattern scan
    # to the end from every quote (45 KB took 5 s, 10 MB would take days). A child process with a
    # 60 s limit stands guard.
    script = (
        "from aggregator.feed.jsonfeed import _shallow\n"
        "text = '[' * 100 + '\"\\\\' * 2_000_000\n"
        "assert _shallow(text) == text  # never closed, so nothing to cut\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
