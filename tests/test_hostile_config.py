"""Hostile feeds.yaml files: alias bombs, deep nesting and huge files are refused at a position."""

from __future__ import annotations

import re
import resource
from pathlib import Path

import pytest

from aggregator.config import load_config, load_text
from aggregator.config.limits import MAX_ALIAS_VALUES, MAX_BYTES
from aggregator.exceptions import ConfigError
from tests.feedserver import FeedServer, feed_file
from tests.support import rss
from tests.test_cli import aggregator
from tests.test_ops import get, running, write_config
from tests.test_service import free_port

# Nine lines that expand to 9**9 (387 million) strings if anything walks the aliases.
BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text(text, "feeds.yaml", env={})
    return [str(p) for p in caught.value.problems]


def test_an_alias_bomb_is_refused_at_the_alias_that_passes_the_bound() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    [problem] = _problems(BOMB)
    assert re.fullmatch(
        r"feeds\.yaml:6:\d+: aliases repeat more than 250,000 values in all "
        r"\(\*e alone holds [\d,]+\); write the values out instead",
        problem,
    ), problem
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 50 * 1024  # nothing was expanded


def test_aliases_within_the_bound_still_work() -> None:
    text = (
        "sections: [{id: world, title: World}]\n"
        "topics: [{id: gaza, title: Gaza, keywords: [Gaza]}, {id: syria, title: Syria}]\n"
        "sources:\n"
        "  - &common {id: one, url: 'https://one.example/feed', section: world,\n"
        "             topics: &both [gaza, syria], interval: 15m}\n"
        "  - {<<: *common, id: two, url: 'https://two.example/feed'}\n"
        "  - {id: three, url: 'https://three.example/feed', section: world, topics: *both}\n"
    )
    config = load_text(text, "feeds.yaml", env={})
    assert [s.topics for s in config.sources] == [("gaza", "syria")] * 3
    assert [s.url for s in config.sources][1] == "https://two.example/feed"
    assert MAX_ALIAS_VALUES >= 100_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sources: " + "[" * 5000 + "]" * 5000, r"feeds\.yaml:1:\d+: nested more than 64 levels"),
        ("sources:\n" + "".join("  " * i + "- \n" for i in range(1, 200)), r":65:\d+: nested"),
        ("a: &a [1, *a]\n", r"feeds\.yaml:1:11: the alias \*a refers to a collection it is in"),
    ],
)
def test_deep_and_recursive_documents_are_refused(text: str, message: str) -> None:
    [problem] = _problems(text)
    assert re.search(message, problem), problem


def test_a_file_over_the_size_bound_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    with path.open("w") as file:
        file.write("sections: []\n")
        file.truncate(MAX_BYTES * 4)  # sparse: 32 MiB of NUL bytes
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    [problem] = caught.value.problems
    assert str(problem) == f"{path}:1:1: the file is larger than 8 MiB; split it or trim it"


def test_check_refuses_the_bomb_in_a_moment(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(BOMB)
    result = aggregator("check", str(path), cwd=tmp_path)  # 60 s timeout: a hang fails
    assert result.returncode == 2
    assert f"{path}:6:" in result.stderr and "aliases repeat more than" in result.stderr


def test_a_bomb_saved_over_a_running_service_is_refused_and_later_saves_apply(
    tmp_path: Path,
) -> None:
    with FeedServer() as server:
        for name in ("first", "second"):
            server.routes[f"/{name}.xml"] = feed_file(rss(name, 2))
        port = free_port()
        config = tmp_path / "feeds.yaml"
        base = f"http://127.0.0.1:{port}"
        write_config(config, server, ["first"], port)
        good = config.read_text()
        with running(["run", "--config", str(config)], tmp_path) as service:
            service.wait_for("source first: 200")
            config.write_text(good + BOMB)
            problem = service.wait_for("config not reloaded: ")
            assert "aliases repeat more than 250,000 values" in problem
            service.wait_for("still running the previous config")
            assert get(base + "/readyz")[0] == 200
            write_config(config, server, ["first", "second"], port)
            service.wait_for("config reloaded (feeds.yaml changed)")
            service.wait_for("source second: 200")


def test_a_file_over_the_bound_in_bytes_but_not_in_characters_is_refused(tmp_path: Path) -> None:
    # Three bytes a character: fewer characters than the bound, more bytes. Cut at the bound, the
    # file could parse with its last sources missing; it is refused whole instead.
    path = tmp_path / "feeds.yaml"
    line = "# " + "\u00e9" * 40 + "\n"  # a comment of 2-byte characters
    path.write_text("sections: []\n" + line * (MAX_BYTES // len(line.encode()) + 10))
    assert path.stat().st_size > MAX_BYTES > len(path.read_text())
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert [p.message for p in caught.value.problems] == [
        "the file is larger than 8 MiB; split it or trim it"
    ]
