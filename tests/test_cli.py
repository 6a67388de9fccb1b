"""The `aggregator` command as an editor uses it: real processes, real files, a real database."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from aggregator.cli import EXIT_ALL_FAILED, cli
from aggregator.config import load_config
from aggregator.opml import read_opml
from aggregator.storage import Storage, migrate
from tests.conftest import DATA, ROOT
from tests.feedserver import FeedServer, feed_file
from tests.support import rss

EXAMPLE = ROOT / "config" / "feeds.yaml"


def aggregator(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_summarises_a_valid_file_without_touching_the_database(tmp_path: Path) -> None:
    result = aggregator("check", str(EXAMPLE), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].strip() == (
        "11 sources (10 enabled), 4 sections, 4 topics, 3 outputs, 2 digests"
    )
    assert not (tmp_path / "data").exists()
    one = tmp_path / "one.yaml"
    one.write_text(
        "sections: [{id: world, title: World}]\n"
        "topics: [{id: gaza, title: Gaza, keywords: [Gaza]}]\n"
        "sources: [{id: wire, url: 'https://wire.example/feed', section: world}]\n"
        "outputs: [{id: all, title: Everything}]\n"
    )
    single = aggregator("check", str(one), cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    assert single.stdout.splitlines()[1].strip() == (
        "1 source (1 enabled), 1 section, 1 topic, 1 output, 0 digests"
    )


def test_config_may_come_before_the_command_as_other_global_options_do(tmp_path: Path) -> None:
    """`aggregator --config X COMMAND` as git and kubectl take global options, for nested
    commands too; a command's own --config wins; the environment is the fallback."""
    runner = CliRunner()
    before = runner.invoke(cli, ["--config", str(EXAMPLE), "check"], env={})
    assert before.exit_code == 0, before.output
    assert before.stdout.startswith(f"{EXAMPLE}: OK")
    missing = tmp_path / "missing.yaml"
    own = runner.invoke(cli, ["-c", str(missing), "check", "-c", str(EXAMPLE)], env={})
    assert own.exit_code == 0 and own.stdout.startswith(f"{EXAMPLE}: OK")
    wrong = runner.invoke(cli, ["-c", str(missing), "check"], env={"AGGREGATOR_CONFIG": "x"})
    assert wrong.exit_code == 2 and str(missing) in wrong.stderr
    out = tmp_path / "out.opml"
    nested = runner.invoke(cli, ["-c", str(EXAMPLE), "opml", "export", "-o", str(out)], env={})
    assert nested.exit_code == 0, nested.output
    assert len(read_opml(out.read_bytes())) == 11
    from_env = runner.invoke(cli, ["check"], env={"AGGREGATOR_CONFIG": str(EXAMPLE)})
    assert from_env.exit_code == 0 and from_env.stdout.startswith(f"{EXAMPLE}: OK")


def test_check_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    broken = DATA / "config" / "unknown_reference.yaml"
    result = aggregator("check", "--config", str(broken), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"{broken}:12:14: sources[0].section: section 'wrold' does not exist "
        "(did you mean 'world'?)"
    )
    assert lines[-1] == "4 problems found; nothing was changed."
    assert not (tmp_path / "data").exists()


def test_the_console_script_is_installed() -> None:
    script = shutil.which("aggregator", path=str(Path(sys.executable).parent))
    assert script is not None
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("aggregator, version ")


def test_db_upgrade_and_status(tmp_path: Path) -> None:
    env = {"AGGREGATOR_DATABASE_URL": f"sqlite:///{tmp_path / 'db' / 'agg.db'}"}
    first = aggregator("db", "upgrade", "-c", str(EXAMPLE), cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    head = migrate.head()
    assert f"upgraded from empty to {head}" in first.stdout
    again = aggregator("db", "upgrade", "-c", str(EXAMPLE), cwd=tmp_path, env=env)
    assert f"already at revision {head}" in again.stdout
    status = aggregator("db", "status", "-c", str(EXAMPLE), cwd=tmp_path, env=env)
    assert f"revision {head}, newest {head}: up to date" in status.stdout


def test_an_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    env = {"AGGREGATOR_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    result = aggregator("db", "upgrade", "-c", str(EXAMPLE), cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot open the database")
    assert "Traceback" not in result.stderr


def test_sources_lists_stored_state(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agg.db'}"
    config = load_config(EXAMPLE, env={})
    store = Storage.open(url)
    store.sync_sources(config.sources)
    store.close()
    result = CliRunner().invoke(
        cli, ["sources", "-c", str(EXAMPLE)], env={"AGGREGATOR_DATABASE_URL": url}
    )
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1] for line in result.output.splitlines()[1:]}
    assert rows["bbc-world"] == "new" and rows["inside-climate-news"] == "paused"


# -- OPML -----------------------------------------------------------------------------------


def test_opml_import_prints_sources_to_paste(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["opml", "import", str(DATA / "opml" / "subscriptions.opml"), "-c", str(EXAMPLE)],
        env={},
    )
    assert result.exit_code == 0, result.output
    assert (
        "skipped https://feeds.bbci.co.uk/news/world/rss.xml: already configured" in result.stderr
    )
    assert "skipped gopher://example.org/feed: not an http(s) URL" in result.stderr
    printed = result.stdout
    assert "- id: le-monde-international\n" in printed
    assert "section: world\n" in printed  # the OPML folder "World" is the existing section
    assert "- id: middle-east-eye\n" in printed
    assert "section: middle-east\n" in printed  # category="/Middle East" is an existing section
    assert "- id: hacker-news-2\n" in printed  # two feeds with one title get distinct ids
    assert "carbonbrief" not in printed


def test_opml_import_says_when_there_is_nothing_to_add_and_why(tmp_path: Path) -> None:
    """An OPML file whose feeds are all configured says there is nothing to add (not `{}`),
    and an outline with no feed address is reported, not dropped."""
    opml = tmp_path / "again.opml"
    opml.write_text(
        '<opml version="2.0"><body><outline text="World">'
        '<outline text="BBC" xmlUrl="https://feeds.bbci.co.uk/news/world/rss.xml"/>'
        '<outline text="A web page" htmlUrl="https://page.example/"/>'
        "</outline></body></opml>"
    )
    config = tmp_path / "feeds.yaml"  # a copy: --write must leave it as it is
    config.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    for write in ([], ["--write"]):
        result = CliRunner().invoke(
            cli, ["opml", "import", str(opml), "-c", str(config), *write], env={}
        )
        assert result.exit_code == 0, result.output
        assert result.stdout == f"nothing to add to {config}: 2 feeds skipped\n"
        assert config.read_text(encoding="utf-8") == EXAMPLE.read_text(encoding="utf-8")
        assert "skipped https://feeds.bbci.co.uk/news/world/rss.xml: already configured" in (
            result.stderr
        )
        assert "skipped 'A web page': the outline has no feed address (xmlUrl)" in result.stderr


def test_opml_import_without_a_config_creates_sections_from_folders(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["opml", "import", str(DATA / "opml" / "subscriptions.opml"), "-c", str(tmp_path / "no")],
        env={},
    )
    assert result.exit_code == 0, result.output
    printed = result.stdout
    sections = printed.split("sources:")[0]
    for section_id, title in [
        ("world", "World"),
        ("science-climate", "Science & Climate"),
        ("middle-east", "Middle East"),
        ("general", "General"),
    ]:
        assert f"- id: {section_id}\n    title: {title}\n" in sections
    assert "url: https://www.carbonbrief.org/feed/\n    section: science-climate\n" in printed


def test_opml_import_write_merges_and_keeps_comments(tmp_path: Path) -> None:
    config_path = tmp_path / "feeds.yaml"
    shutil.copy(EXAMPLE, config_path)
    before = load_config(config_path, env={})
    result = CliRunner().invoke(
        cli,
        [
            "opml",
            "import",
            str(DATA / "opml" / "subscriptions.opml"),
            "-c",
            str(config_path),
            "--write",
            "--section",
            "world",
        ],
        env={},
    )
    assert result.exit_code == 0, result.output
    text = config_path.read_text(encoding="utf-8")
    assert "# feeds.yaml: everything the aggregator polls" in text
    assert "# when outlets carry the same story, the BBC's item leads" in text
    after = load_config(config_path, env={})
    added = {s.url: s for s in after.sources[len(before.sources) :]}
    assert set(added) == {
        "https://www.lemonde.fr/en/international/rss_full.xml",
        "https://www.carbonbrief.org/feed/",
        "https://www.middleeasteye.net/rss",
        "https://news.ycombinator.com/rss",
        "https://hnrss.org/frontpage",
    } - {s.url for s in before.sources}
    assert added["https://news.ycombinator.com/rss"].section == "world"
    assert [s.id for s in after.sections] == [s.id for s in before.sections]  # none needed


def test_opml_export_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "sources.opml"
    result = CliRunner().invoke(cli, ["opml", "export", "-c", str(EXAMPLE), "-o", str(out)], env={})
    assert result.exit_code == 0, result.output
    config = load_config(EXAMPLE, env={})
    feeds = read_opml(out.read_bytes())
    assert [f.url for f in feeds] == [
        s.url for section in config.sections for s in config.sources if s.section == section.id
    ]
    titles = {s.id: s.title for s in config.sections}
    by_url = {s.url: titles[s.section] for s in config.sources}
    assert all(f.categories == (by_url[f.url],) for f in feeds)


def test_opml_export_titles_a_source_as_its_feed_does(tmp_path: Path) -> None:
    """A source with no title in feeds.yaml is exported under the title its feed gives itself
    once polled (not its id); before any poll, and with no database, by its id."""
    from tests.feedserver import feed_file
    from tests.support import rss

    feed = rss("lemonde", 2).replace(b"<title>lemonde</title>", b"<title>Le Monde</title>", 1)
    with FeedServer() as server:
        server.routes["/lm.xml"] = feed_file(feed)
        config = tmp_path / "feeds.yaml"
        config.write_text(
            "sections: [{id: world, title: World}]\nsources:\n"
            f"  - {{id: lm, url: '{server.url('/lm.xml')}', section: world}}\n"
            f"storage: {{url: 'sqlite:///{tmp_path / 'agg.db'}'}}\n"
        )
        out = tmp_path / "out.opml"
        runner = CliRunner()
        before = runner.invoke(cli, ["opml", "export", "-c", str(config), "-o", str(out)], env={})
        assert before.exit_code == 0, before.output
        assert [f.title for f in read_opml(out.read_bytes())] == ["lm"]
        assert not (tmp_path / "agg.db").exists()  # exporting creates no database
        polled = aggregator("poll", "-c", str(config), cwd=tmp_path, env={})
        assert polled.returncode == 0, polled.stderr
        after = runner.invoke(cli, ["opml", "export", "-c", str(config), "-o", str(out)], env={})
        assert after.exit_code == 0, after.output
        assert [f.title for f in read_opml(out.read_bytes())] == ["Le Monde"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bomb.opml", "not a well-formed OPML file: limit on input amplification"),
    ],
)
def test_hostile_or_broken_opml_is_a_clear_error(name: str, message: str) -> None:
    result = CliRunner().invoke(
        cli, ["opml", "import", str(DATA / "opml" / name), "-c", str(EXAMPLE)], env={}
    )
    assert result.exit_code == 1
    assert message in str(result.exception)


def _good_and_bad(server: FeedServer, tmp_path: Path, settings: str) -> Path:
    """A config of two sources on `server`: one serving three items (with an ETag), one
    answering 500; `settings` follow the sources."""
    from tests.feedserver import Reply, feed_file
    from tests.support import rss

    server.routes["/good.xml"] = feed_file(rss("good", 3), etag='"v1"')
    server.routes["/bad.xml"] = lambda r: Reply(500, b"oops")
    config = tmp_path / "feeds.yaml"
    config.write_text(
        "sections: [{id: world, title: World}]\nsources:\n"
        f"  - {{id: good, url: '{server.url('/good.xml')}', section: world}}\n"
        f"  - {{id: bad, url: '{server.url('/bad.xml')}', section: world}}\n" + settings
    )
    return config


def test_poll_prints_a_table_and_sources_json_reports_health(tmp_path: Path) -> None:
    with FeedServer() as server:
        config = _good_and_bad(server, tmp_path, "polling: {host_gap: 0s, unhealthy_after: 1}\n")
        env = {"AGGREGATOR_DATABASE_URL": f"sqlite:///{tmp_path / 'agg.db'}"}
        result = aggregator("poll", "-c", str(config), cwd=tmp_path, env=env)
        assert result.returncode == 3, result.stderr  # one of the two failed
        lines = result.stdout.splitlines()
        assert lines[0].split() == ["SOURCE", "STATUS", "NEW", "UPDATED", "UNCHANGED", "RESULT"]
        assert lines[1].split()[:5] == ["bad", "500", "-", "-", "-"]
        assert lines[1].endswith("failed: HTTP 500 Internal Server Error")
        assert lines[2].split() == ["good", "200", "3", "0", "0", "ok"]
        assert lines[-1] == "2 polled, 3 new items, 1 failed"
        assert "polling" in result.stderr  # the progress bar

        again = aggregator("poll", "-c", str(config), cwd=tmp_path, env=env)
        assert "nothing is due" in again.stdout
        forced = aggregator("poll", "--source", "good", "-c", str(config), cwd=tmp_path, env=env)
        assert forced.stdout.splitlines()[-1] == "1 polled, 0 new items, 0 failed"
        row = forced.stdout.splitlines()[1]
        assert row.split()[:5] == ["good", "304", "-", "-", "-"]
        assert row.endswith("ok, not modified since the last poll")
        assert forced.returncode == 0

        listing = aggregator("sources", "--json", "-c", str(config), cwd=tmp_path, env=env)
        rows = json.loads(listing.stdout)
        assert [r["id"] for r in rows] == ["bad", "good"]  # failing first
        bad, good = rows
        assert (
            bad["status"] == "unhealthy" and bad["last_error"] == "HTTP 500 Internal Server Error"
        )
        assert bad["consecutive_failures"] == 1 and bad["last_http_status"] == 500
        assert good["status"] == "ok" and good["stored_items"] == 3
        assert good["url_in_use"] == server.url("/good.xml") and good["last_success"]

        unknown = aggregator("poll", "--source", "nope", "-c", str(config), cwd=tmp_path, env=env)
        assert unknown.returncode == 2 and "not in" in unknown.stderr
        down = aggregator("poll", "--source", "bad", "-c", str(config), cwd=tmp_path, env=env)
        assert down.stdout.splitlines()[-1] == "1 polled, 0 new items, 1 failed"
        assert down.returncode == 4  # every source polled failed
        scripted = aggregator("poll", "--once", "--json", "-c", str(config), cwd=tmp_path, env=env)
        assert scripted.returncode == 3  # the same exit codes
        got = {r["source"]: r for r in json.loads(scripted.stdout)}
        assert got["good"]["ok"] and got["good"]["not_modified"] and got["good"]["new"] is None
        assert got["bad"]["status"] == 500 and got["bad"]["kind"] == "http_error"
        assert got["bad"]["error"] == "HTTP 500 Internal Server Error"


def _in_a_terminal(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """What a command writes to a terminal (a pseudo-terminal, stdout and stderr both)."""
    import pty
    import select

    leader, follower = pty.openpty()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AGGREGATOR_", "NO_"))}
    environment.update(env, TERM="xterm", COLUMNS="120")
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", *args],
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    out = b""
    while True:  # bounded: the command ends, and with it the terminal's output
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the command closed the terminal
            break
        if not chunk:
            break
        out += chunk
    process.wait(timeout=60)
    os.close(leader)
    return out.decode("utf-8", "replace")


def test_in_a_terminal_log_lines_pass_above_the_progress_bar_and_warnings_are_coloured(
    tmp_path: Path,
) -> None:
    """`poll` in a terminal: every log line clears the bar's line before it is written, and the
    bar is drawn again below it, so no line holds both; warnings in colour. In a pipe (every
    other test), no escape codes at all."""
    import re

    with FeedServer() as server:
        config = _good_and_bad(
            server, tmp_path, "polling: {host_gap: 0s}\ndefaults: {timezone: Europe/Paris}\n"
        )
        env = {"AGGREGATOR_DATABASE_URL": f"sqlite:///{tmp_path / 'agg.db'}"}
        shown = _in_a_terminal(["poll", "-c", str(config)], tmp_path, env)
        piped = aggregator("poll", "-c", str(config), "--once", cwd=tmp_path, env=env)
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
    logged = re.findall(stamp, shown)
    assert len(logged) >= 3  # the index, the good source, the bad one
    assert len(re.findall(r"\r\x1b\[K(?:\x1b\[33m)?" + stamp, shown)) == len(logged), shown
    assert re.search(r"polling +\[#+\] +2/2", shown)  # the bar, drawn to its end
    for line in shown.split("\n"):  # what stays on screen: each line's text after its last \r
        visible = line.rsplit("\r\x1b[K", 1)[-1]
        assert not ("polling" in visible and re.search(stamp, visible)), repr(line)
    assert "\x1b[33m" in shown and "source bad: failed" in shown  # the warning, yellow
    assert "source bad: failed" in piped.stderr and "\x1b[" not in piped.stderr + piped.stdout
    listed = aggregator("sources", "-c", str(config), cwd=tmp_path, env=env).stdout
    bad = next(line for line in listed.splitlines() if line.startswith("bad "))
    assert "2 failures in a row: HTTP 500 Internal Server Error" in bad
    assert re.search(r"\d\d:\d\d CES?T ", bad)  # next poll, in the config's time zone, named


STORY_CONFIG = """
sections:
  - {id: world, title: World}
  - {id: opinion, title: Opinion, paths: [/opinion/]}
topics:
  - {id: palestine, title: Palestine, keywords: [Gaza, Palestin*]}
  - {id: climate, title: Climate, keywords: [climate], min_matches: 2}
sources:
  - {id: wire, url: "https://wire.example/feed", section: world, priority: 10}
  - {id: paper, url: "https://paper.example/feed", section: world}
storage:
  url: sqlite:///news.db
"""


def test_explain_unmerge_and_recategorise(tmp_path: Path) -> None:
    from aggregator.process.pipeline import Processor
    from aggregator.types import Entry

    (tmp_path / "feeds.yaml").write_text(STORY_CONFIG)
    config = load_config(tmp_path / "feeds.yaml")
    text = (
        "Indirect talks between Israel and Hamas on the next phase of the Gaza ceasefire "
        "stalled on Wednesday over the mandate of an international force, officials said."
    )
    storage = Storage.open(f"sqlite:///{tmp_path}/news.db")
    try:
        storage.sync_sources(config.sources)
        processor = Processor(config)
        link = "https://wire.example/gaza-talks"
        storage.save_entries(
            "wire", [Entry("w1", "Gaza talks stall", link, link, summary=text)], processor
        )
        storage.save_entries(
            "paper",
            [Entry("p1", "Gaza truce talks stall", "https://paper.example/p1", summary=text)],
            processor,
        )
    finally:
        storage.close()

    by_link = aggregator(
        "explain", "https://WIRE.example/gaza-talks", "-c", "feeds.yaml", cwd=tmp_path
    )
    assert by_link.returncode == 0, by_link.stderr
    lines = by_link.stdout.splitlines()
    assert lines[0] == "Item 1: Gaza talks stall"
    assert "Section: world" in lines and "  because its source's section" in lines
    assert "  palestine: matched 'Gaza' ('Gaza' in title), 'Gaza' ('Gaza' in summary)" in lines
    assert "Story: 2 items" in lines
    assert any("wire" in line and "(leads the story)" in line for line in lines)
    assert any("alike text: similarity" in line and "to item 1" in line for line in lines)
    assert "  climate: no keyword matched" not in lines  # only near misses are listed
    explained = json.loads(
        aggregator("explain", "1", "--json", "-c", "feeds.yaml", cwd=tmp_path).stdout
    )
    assert explained["section"] == {
        "id": "world",
        "rule": "source",
        "pattern": "",
        "matched": "",
        "because": "its source's section",
    }
    (palestine,) = explained["topics"]
    assert palestine["id"] == "palestine" and palestine["matches"] == 2
    assert palestine["hits"] == [
        {"term": "Gaza", "field": "title", "text": "Gaza"},
        {"term": "Gaza", "field": "summary", "text": "Gaza"},
    ]
    assert [m["id"] for m in explained["story"]] == [1, 2] and explained["story"][0]["leads"]
    assert explained["current_rules"] == {
        "section": "world",
        "topics": ["palestine"],
        "differ": False,
    }

    split = aggregator("unmerge", "2", "-c", "feeds.yaml", cwd=tmp_path)
    assert split.returncode == 0, split.stderr
    assert "item 2 now stands alone" in split.stdout
    after = aggregator("explain", "2", "-c", "feeds.yaml", cwd=tmp_path)
    assert "split off by an editor (never merged again)" in after.stdout

    (tmp_path / "feeds.yaml").write_text(
        STORY_CONFIG.replace("keywords: [Gaza, Palestin*]", "keywords: [Palestin*]")
    )
    dry = aggregator("recategorise", "--dry-run", "-c", "feeds.yaml", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "2 items checked, 2 would move" in dry.stdout
    assert any(
        line.split()[:4] == ["topic", "palestine", "0", "2"] for line in dry.stdout.splitlines()
    )
    assert "nothing was changed (--dry-run)" in dry.stdout
    assert (
        "The current rules would file it under world with topics none"
        in aggregator("explain", "1", "-c", "feeds.yaml", cwd=tmp_path).stdout
    )
    done = aggregator("recategorise", "-c", "feeds.yaml", cwd=tmp_path)
    assert "2 items checked, 2 moved" in done.stdout
    assert "Topics: none" in aggregator("explain", "1", "-c", "feeds.yaml", cwd=tmp_path).stdout
    missing = aggregator("explain", "https://nowhere.example/x", "-c", "feeds.yaml", cwd=tmp_path)
    assert missing.returncode == 1 and "no stored item has the link" in missing.stderr


def test_a_digest_preview_in_a_terminal_goes_to_a_file_and_in_a_pipe_as_it_is(
    tmp_path: Path,
) -> None:
    """Pages of HTML are no use in a terminal: there the preview is written to a file, whose
    address is printed; a pipe (a redirect, a browser opener) gets the HTML itself."""
    import re

    env = {"AGGREGATOR_DATABASE_URL": f"sqlite:///{tmp_path / 'agg.db'}"}
    args = ["digest", "preview", "morning-briefing", "-c", str(EXAMPLE)]
    shown = _in_a_terminal(args, tmp_path, env)
    assert "<html" not in shown.lower()
    found = re.search(r"open it in a browser: file://(\S+\.html)", shown)
    assert found is not None, shown
    written = Path(found.group(1))
    try:
        assert written.read_text().lower().lstrip().startswith("<!doctype html")
    finally:
        written.unlink()
    piped = aggregator(*args, cwd=tmp_path, env=env)
    assert piped.returncode == 0 and piped.stdout.lower().lstrip().startswith("<!doctype html")


def test_a_port_in_use_is_one_line_saying_so_not_a_traceback(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"AGGREGATOR_DATABASE_URL": f"sqlite:///{tmp_path / 'agg.db'}"}
        result = aggregator("run", "--port", str(port), "-c", str(EXAMPLE), cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot listen on 127.0.0.1:{port}: the port is already in use")


def test_postgresql_without_its_driver_says_how_to_install_it(tmp_path: Path) -> None:
    """The default install leaves psycopg out (SQLite needs nothing); a PostgreSQL URL then gets
    one line naming the extra. The driver is installed here, so the child process is made to
    lack it (an import of psycopg fails, as it would where it is not installed)."""
    code = (
        "import sys; sys.modules['psycopg'] = None; "
        "from aggregator.cli import main; sys.argv = ['aggregator', 'sources', '-c', sys.argv[1]]; "
        "main()"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    environment["AGGREGATOR_DATABASE_URL"] = "postgresql://postgres@127.0.0.1/test"
    result = subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLE)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "pip install 'aggregator[postgres]'" in result.stderr.strip().splitlines()[-1]


def test_a_poll_on_sqlite_loads_no_postgresql_dialect_and_no_address_checker(
    tmp_path: Path,
) -> None:
    """What a poll on SQLite of a config without e-mail addresses never needs stays unloaded:
    PostgreSQL's dialect (asyncio with it) and email_validator cost 90 ms and 3 MiB in every
    process. The poll itself runs, against a real feed, so the check covers its whole path."""
    with FeedServer() as server:
        server.routes["/f.xml"] = feed_file(rss("f", 3))
        (tmp_path / "feeds.yaml").write_text(
            "sections: [{id: news, title: News}]\n"
            f"sources: [{{id: one, url: '{server.url('/f.xml')}', section: news}}]\n"
            f"storage: {{url: 'sqlite:///{tmp_path / 'agg.db'}'}}\n"
        )
        code = (
            "import sys; from aggregator.cli import main\n"
            "sys.argv = ['aggregator', 'poll', '--once', '-c', 'feeds.yaml']\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "loaded = [m for m in ('sqlalchemy.dialects.postgresql', 'email_validator')"
            " if m in sys.modules]\n"
            "assert not loaded, loaded\n"
        )
        environment = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 polled" in result.stdout


def test_a_poll_with_nothing_due_ends_cleanly(tmp_path: Path) -> None:
    """Such a poll ends within milliseconds, while the fetcher's trust store is still being read
    on a thread of its own: OpenSSL's clean-up at exit freed the store under that thread (a crash
    in about half such runs). The thread is waited for."""
    (tmp_path / "feeds.yaml").write_text(
        f"storage: {{url: 'sqlite:///{tmp_path / 'a.db'}'}}\n"
        "sections: [{id: world, title: World}]\n"
        "sources: [{id: wire, url: 'http://127.0.0.1:9/feed', section: world}]\n"
    )
    first = aggregator("poll", "-c", "feeds.yaml", cwd=tmp_path)  # fails: nothing listens
    assert first.returncode == EXIT_ALL_FAILED, first.stderr
    runs = [aggregator("poll", "-c", "feeds.yaml", cwd=tmp_path) for _ in range(6)]
    assert [run.returncode for run in runs] == [0] * 6, runs[-1].stderr
    assert all("nothing is due" in run.stdout for run in runs)
