"""feeds.yaml loading: the shipped example, and one broken file per kind of mistake.

Each file under tests/data/config/ carries its expected errors in `# expect: LINE:COL: ...`
comments at its top; the loader must report exactly those, in file order.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.config import (
    DATABASE_URL_ENV,
    format_duration,
    load_config,
    load_text,
    parse_duration,
)
from aggregator.exceptions import AggregatorError, ConfigError
from aggregator.scheduling import next_fire_time
from tests.conftest import DATA, ROOT

BROKEN = sorted((DATA / "config").glob("*.yaml"))
NO_ENV: dict[str, str] = {}


def expected_problems(path: Path) -> list[str]:
    return [
        f"{path}:{line.removeprefix('# expect: ').rstrip()}"
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("# expect: ")
    ]


def test_the_shipped_example_is_valid_and_resolved() -> None:
    config = load_config(ROOT / "config" / "feeds.yaml", env=NO_ENV)
    assert len(config.sources) >= 10
    assert len({s.url.split("/")[2] for s in config.sources}) >= 5  # several outlets
    assert {s.section for s in config.sources} <= {s.id for s in config.sections}
    assert all(s.interval is not None for s in config.sources)  # defaults filled in
    assert all(o.formats and o.limit for o in config.outputs)
    assert all(d.timezone for d in config.digests)
    assert config.server.base_url == "http://127.0.0.1:8080/"


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_each_mistake_is_reported_with_line_column_and_advice(path: Path) -> None:
    expected = expected_problems(path)
    assert expected, f"{path} has no '# expect:' line"
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=NO_ENV)
    assert [str(p) for p in caught.value.problems] == expected


def test_config_error_is_an_aggregator_error_and_a_value_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_text("sources: 3\n", "x.yaml", NO_ENV)
    assert isinstance(caught.value, AggregatorError) and isinstance(caught.value, ValueError)
    assert str(caught.value) == "x.yaml:1:10: sources: expected a list, got 3"


def test_all_problems_of_a_file_come_at_once() -> None:
    text = (
        "sources:\n"
        "  - {id: a, url: 'https://a.example/feed', section: nope, interval: 1x}\n"
        "  - {id: B, url: 'https://b.example/feed', section: nope}\n"
        "colour: blue\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_text(text, "f.yaml", NO_ENV)
    assert [(p.line, p.where) for p in caught.value.problems] == [
        (2, "sources[0].section"),
        (2, "sources[0].interval"),
        (3, "sources[1].id"),
        (3, "sources[1].section"),
        (4, "colour"),
    ]


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file: No such file or directory"):
        load_config(tmp_path / "absent.yaml")


def test_an_empty_file_is_a_valid_empty_config() -> None:
    config = load_text("# nothing yet\n", "empty.yaml", NO_ENV)
    assert config.sources == () and config.storage.url == "sqlite:///data/aggregator.db"


def test_environment_variables_are_substituted() -> None:
    text = (
        "smtp:\n"
        "  password: ${SMTP_PASSWORD}\n"
        "  username: 'user-${SMTP_USER}'\n"
        "  host: 'cost$$-${SMTP_USER}.example'\n"
    )
    config = load_text(text, "f.yaml", {"SMTP_PASSWORD": "s3cret", "SMTP_USER": "ed"})
    assert config.smtp.password == "s3cret"
    assert config.smtp.username == "user-ed"
    assert config.smtp.host == "cost$-ed.example"


def test_database_url_comes_from_the_environment_when_set() -> None:
    env = {DATABASE_URL_ENV: "postgresql://agg@db.internal/agg"}
    config = load_text("storage: {url: 'sqlite:///x.db'}\n", "f.yaml", env)
    assert config.storage.url == "postgresql://agg@db.internal/agg"


def test_config_is_frozen() -> None:
    config = load_text("sections: [{id: world, title: World}]\n", "f.yaml", NO_ENV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.sections[0].title = "Changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("2H", 7200)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert parse_duration(format_duration(timedelta(seconds=seconds))) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["15", "5x", "m", "", "1.5h", "-5m", "True"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("schedule", "weekdays"),
    [
        ("0 7 * * 0", {"Sunday"}),
        ("0 7 * * 7", {"Sunday"}),
        ("0 7 * * 1-5", {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}),
        ("0 7 * * */2", {"Sunday", "Tuesday", "Thursday", "Saturday"}),
        ("0 7 * * sat,sun", {"Saturday", "Sunday"}),
    ],
)
def test_cron_weekdays_follow_crontab(schedule: str, weekdays: set[str]) -> None:
    moment = datetime(2026, 11, 24, tzinfo=UTC)
    seen = set()
    for _ in range(14):
        fire = next_fire_time(schedule, "Europe/London", moment)
        assert fire is not None and fire.hour == 7
        seen.add(fire.strftime("%A"))
        moment = fire + timedelta(minutes=1)
    assert seen == weekdays
