"""Search: the query syntax, the index on SQLite and PostgreSQL, and the pages and feeds.

Items are stored the real way (the processor files them); the index is brought up to date by the
same job the service runs; the web side is the real app under the real server on 127.0.0.1.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import text

from aggregator.config import Config, load_config
from aggregator.exceptions import SearchRefusedError
from aggregator.process.pipeline import Processor
from aggregator.publish.publisher import Publisher
from aggregator.search import query as search_query
from aggregator.search.index import catch_up
from aggregator.search.index import document as index_document
from aggregator.search.query import parse
from aggregator.storage import Storage, migrate
from aggregator.storage import search as storage_search
from aggregator.storage.engine import make_engine
from aggregator.web import create_app
from tests import statusdata
from tests.feedchecks import atom_problems, json_feed_problems
from tests.publishing import START, WIRE, entry, newsroom, serving
from tests.support import Clock
from tests.test_service import Running, free_port
from tests.test_web import Client

ATOM = "{http://www.w3.org/2005/Atom}"

STORIES = [
    # (source, key, title, summary)
    ("wire", "w1", "Gaza ceasefire talks stall", "<p>Negotiators in Cairo paused the talks.</p>"),
    ("wire", "w2", "Markets steady", "<p>The ceasefire in Gaza held as markets rose.</p>"),
    ("herald", "h1", "Türkiye hosts summit", "<p>Leaders met in Ankara on energy.</p>"),
    ("herald", "h2", "Protesters gather", "<p>Protests over the press release grew.</p>"),
    ("herald", "h3", "A press conference", "<p>The minister said a press and a release.</p>"),
    ("blog", "b1", "غزة تحت الحصار", "<p>مقال عن غزة والحصار.</p>"),
    ("blog", "b2", "Climate plans fail", "<p>Emissions rose again; protesting is growing.</p>"),
    ("blog", "b3", "हिंदी समाचार", "<p>आज की खबर।</p>"),
]


@pytest.fixture
def config() -> Config:
    return newsroom()


@pytest.fixture
def processor(storage: Storage, config: Config) -> Processor:
    storage.sync_sources(config.sources)
    return Processor(config)


def store(storage: Storage, processor: Processor, stories: list[tuple[str, str, str, str]]) -> None:
    for n, (source, key, title, summary) in enumerate(stories):
        published = START + timedelta(hours=n)
        storage.save_entries(source, [entry(key, title, summary, published=published)], processor)


@pytest.fixture
def stored(storage: Storage, processor: Processor) -> Storage:
    store(storage, processor, STORIES)
    catch_up(storage)
    return storage


def keys(storage: Storage, written: str, limit: int = 50) -> list[str]:
    query = parse(written)
    found = storage.search(query.fts5(), query.tsquery(), limit)
    return [selected.item.entry.key for selected in found]


# -- the query syntax ----------------------------------------------------------------------


def test_a_query_is_words_phrases_prefixes_and_minus_terms_folded_like_the_index() -> None:
    query = parse('  Gaza  "West Bank" prot* -"press release" -Türkiye ')
    assert query.text == 'Gaza "West Bank" prot* -"press release" -Türkiye'
    assert [(t.words, t.prefix, t.excluded) for t in query.terms] == [
        (("gaza",), False, False),
        (("west", "bank"), False, False),
        (("prot",), True, False),
        (("press", "release"), False, True),
        (("turkiye",), False, True),
    ]
    # every word quoted: a reader's AND, OR, NEAR or column name is a word, never an operator
    assert parse("Gaza OR NEAR title:x").fts5() == '"gaza" AND "or" AND "near" AND "title x"'
    assert parse('"abc def*" -ghi').tsquery() == "('abc' <-> 'def':*) & !('ghi')"


@pytest.mark.parametrize(
    ("written", "says"),
    [
        ("", "type a word or two"),
        ("  ", "type a word or two"),
        ("— …", "punctuation alone"),
        ("-gaza -israel", "as well as what to leave out"),
        ("ga*", "write at least 3 letters"),
        ("x" * (search_query.MAX_CHARS + 1), "at most 200 are searched for"),
        (" ".join(f"w{n}" for n in range(search_query.MAX_TERMS + 1)), "terms; at most 8"),
        ('"' + " ".join(f"w{n}" for n in range(17)) + '"', "words; at most 16"),
        ("abc* def* ghi*", "at most 2 words may end in *"),
    ],
)
def test_a_query_too_long_too_broad_or_only_exclusions_is_refused_saying_why(
    written: str, says: str
) -> None:
    with pytest.raises(SearchRefusedError, match=says.replace("*", r"\*")):
        parse(written)


# -- the index, on both databases ----------------------------------------------------------


def test_words_phrases_prefixes_and_minus_words_find_the_same_items_on_both_databases(
    stored: Storage,
) -> None:
    assert sorted(keys(stored, "gaza ceasefire")) == ["w1", "w2"]
    assert keys(stored, '"gaza ceasefire"') == ["w1"]  # the words together, in order
    assert sorted(keys(stored, "protest*")) == ["b2", "h2"]  # protesters, protests, protesting
    assert keys(stored, "protest") == []  # no stemming: a word is a word
    assert keys(stored, 'press -"press release"') == ["h3"]
    assert sorted(keys(stored, "press release")) == ["h2", "h3"]
    assert keys(stored, "gaza -markets") == ["w1"]
    assert keys(stored, "nothing-like-this") == []


def test_accents_case_and_arabic_letter_variants_are_folded_on_both_sides(
    stored: Storage,
) -> None:
    assert keys(stored, "turkiye") == ["h1"]
    assert keys(stored, "TÜRKIYE") == ["h1"]
    assert keys(stored, "غزه") == ["b1"]  # ta marbuta written as ha
    assert keys(stored, "غزّة") == ["b1"]  # with a shadda
    assert keys(stored, "हिंदी") == ["b3"]  # its vowel signs are part of the word


def test_results_are_ranked_a_title_match_first(stored: Storage) -> None:
    # w1 has "ceasefire" in its title, w2 in its body only, and w2 is newer
    assert keys(stored, "ceasefire") == ["w1", "w2"]


def test_an_edited_item_is_searched_as_it_is_now_and_a_pruned_one_is_gone(
    stored: Storage, processor: Processor, clock: Clock
) -> None:
    stored.save_entries(
        "wire",
        [entry("w1", "Gaza truce collapses", "<p>Shelling resumed.</p>", published=START)],
        processor,
    )
    assert stored.search_pending() == 1
    assert catch_up(stored) == 1
    assert stored.search_pending() == 0
    assert keys(stored, "shelling") == ["w1"]
    assert keys(stored, "negotiators") == []
    clock.advance(days=400)
    assert stored.prune_items(timedelta(days=30)) == len(STORIES)
    assert keys(stored, "gaza") == []
    with stored._tx(write=False) as conn:
        table = storage_search.INDEX_TABLE
        column = "item_id" if stored.backend == "postgresql" else "rowid"
        assert conn.execute(text(f"SELECT count({column}) FROM {table}")).scalar_one() == 0


def test_new_items_wait_for_the_index_and_paging_goes_past_the_first_page(
    storage: Storage, processor: Processor
) -> None:
    many = [("herald", f"k{n:02}", f"Flood report {n}", "<p>Rivers rose.</p>") for n in range(45)]
    store(storage, processor, many)
    assert keys(storage, "flood") == []  # not indexed yet: saving never indexes
    assert storage.search_pending() == 45
    assert catch_up(storage) == 45
    query = parse("flood")
    pages = [storage.search(query.fts5(), query.tsquery(), 20, offset) for offset in (0, 20, 40)]
    found = [s.item.entry.key for page in pages for s in page]
    assert [len(page) for page in pages] == [20, 20, 5]
    assert sorted(found) == sorted(k for _, k, _, _ in many)  # each once, none lost


def test_items_stored_before_the_search_migration_become_searchable(
    database_url: str, clock: Clock
) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine, "0010", create_new=False)
    engine.dispose()
    config = newsroom()
    storage = Storage(make_engine(database_url), clock)
    storage.sync_sources(config.sources)
    store(storage, Processor(config), STORIES[:2])
    storage.upgrade()  # 0011: the index, every stored item marked for it
    assert storage.search_pending() == 2
    catch_up(storage)
    assert sorted(keys(storage, "gaza")) == ["w1", "w2"]
    storage.close()


def test_a_search_past_its_deadline_is_stopped_and_refused(stored: Storage) -> None:
    with (
        pytest.raises(SearchRefusedError, match="took longer than"),
        stored._tx(write=False) as conn,
        storage_search.deadline(conn, 0.05),
    ):
        if stored.backend == "postgresql":
            conn.execute(text("SELECT pg_sleep(2)"))
        else:  # a statement that runs until interrupted
            conn.execute(
                text(
                    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
                    "SELECT count(*) FROM n"
                )
            )
    query = parse("gaza")  # and the connection is fine afterwards
    assert len(stored.search(query.fts5(), query.tsquery(), 10)) == 2


# -- pages and feeds -----------------------------------------------------------------------


@pytest.fixture
def client(stored: Storage, config: Config, clock: Clock) -> Iterator[Client]:
    publisher = Publisher(stored, config, clock=clock)
    with serving(create_app(publisher, refresh=0.1)) as port:
        yield Client(port)


def test_the_search_page_lists_matches_with_feed_links_and_the_query_in_its_box(
    client: Client,
) -> None:
    answer = client.request("/search?q=gaza+-markets")
    assert answer.status == 200
    page = etree.fromstring(answer.body, etree.HTMLParser())
    titles = [a.text for a in page.iterfind(".//li/h2/a")]
    assert titles == ["Gaza ceasefire talks stall"]
    assert page.find(".//input[@id='q']").get("value") == "gaza -markets"
    assert page.find(".//label[@for='q']") is not None
    feeds = {link.get("type"): link.get("href") for link in page.iterfind(".//head/link")}
    assert feeds["application/atom+xml"] == "http://news.test/search.atom?q=gaza+-markets"
    assert set(feeds) == {"application/atom+xml", "application/rss+xml", "application/feed+json"}
    empty = client.request("/search")
    assert empty.status == 200 and b'id="q"' in empty.body
    front = client.request("/")
    assert b'action="http://news.test/search"' in front.body  # the box on the front page


def test_search_feeds_are_valid_carry_etags_and_answer_304(client: Client) -> None:
    atom = client.request("/search.atom?q=ceasefire")
    assert atom.status == 200
    assert atom.headers["content-type"].startswith("application/atom+xml")
    document = etree.fromstring(atom.body)
    assert atom_problems(document) == []
    titles = [e.findtext(f"{ATOM}title") for e in document.iter(f"{ATOM}entry")]
    assert titles == ["Gaza ceasefire talks stall", "Markets steady"]
    self_link = document.find(f"{ATOM}link[@rel='self']").get("href")
    assert self_link == "http://news.test/search.atom?q=ceasefire"
    again = client.request("/search.atom?q=ceasefire", if_none_match=atom.headers["etag"])
    assert again.status == 304
    # no Last-Modified: a newly matching older item changes the results, not their newest date
    assert "last-modified" not in atom.headers
    assert atom.headers["cache-control"] == "public, max-age=30"  # as long as results are kept
    feed = client.request("/search.json?q=ceasefire")
    assert json_feed_problems(json.loads(feed.body)) == []
    assert [i["title"] for i in json.loads(feed.body)["items"]] == titles
    rss = etree.fromstring(client.request("/search.rss?q=ceasefire").body)
    assert [i.findtext("title") for i in rss.iter("item")] == titles
    assert client.request("/search.xml?q=ceasefire").status == 404


def test_search_results_page_on_with_next_and_previous_links(
    client: Client, stored: Storage, processor: Processor
) -> None:
    store(stored, processor, [("herald", f"f{n}", f"Flood {n}", "<p>x</p>") for n in range(25)])
    catch_up(stored)
    first = etree.fromstring(client.request("/search?q=flood").body, etree.HTMLParser())
    assert len(first.findall(".//ul/li/h2")) == 20
    older = first.find(".//a[@rel='next']").get("href")
    assert older == "http://news.test/search?q=flood&page=2"
    second = etree.fromstring(client.request("/search?q=flood&page=2").body, etree.HTMLParser())
    assert len(second.findall(".//ul/li/h2")) == 5
    assert second.find(".//a[@rel='prev']").get("href") == "http://news.test/search?q=flood"
    assert second.find(".//a[@rel='next']") is None
    atom = etree.fromstring(client.request("/search.atom?q=flood&page=2").body)
    assert len(list(atom.iter(f"{ATOM}entry"))) == 5
    previous = atom.find(f"{ATOM}link[@rel='previous']").get("href")
    assert previous == "http://news.test/search.atom?q=flood"


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/search?q=-gaza", b"as well as what to leave out"),
        ("/search?q=" + "x" * 201, b"at most 200 are searched for"),
        ("/search?q=ga*", b"at least 3 letters"),
        ("/search?q=gaza&page=26", b"up to page 25"),
        ("/search?q=gaza&page=two", b"not a page number"),
        ("/search?q=gaza&page=%C2%B2", b"not a page number"),  # a digit to str.isdigit
        ("/search?q=gaza&page=%D9%A3", b"not a page number"),  # an Arabic-Indic three
        ("/search?q=gaza&page=" + "9" * 5000, b"not a page number"),  # int() would raise
        ("/search.json?q=gaza&page=%E2%91%A0", b"not a page number"),
        ("/search.atom?q=", b"type a word or two"),
    ],
)
def test_a_refused_search_is_a_clear_400_page_that_keeps_the_form(
    client: Client, path: str, says: bytes
) -> None:
    answer = client.request(path)
    assert answer.status == 400
    assert says in answer.body
    assert answer.headers["cache-control"] == "no-store"
    if path.startswith("/search?"):
        assert b'id="q"' in answer.body  # the reader can fix the query where it is


# -- the service keeps the index -----------------------------------------------------------


def test_the_web_service_indexes_what_a_separate_poll_stored(tmp_path: Path) -> None:
    """`poll --once` from cron stores items; `aggregator web` makes them searchable by itself."""
    port = free_port()
    config = tmp_path / "feeds.yaml"
    statusdata.write_config(config, 8, port)
    (tmp_path / "data").mkdir()
    database = f"sqlite:///{tmp_path / 'data' / 'aggregator.db'}"
    storage = Storage.open(database)
    loaded = load_config(config)
    storage.sync_sources(loaded.sources)
    storage.save_entries(
        loaded.sources[0].id,
        [entry("q1", "Quarantine lifted in the harbour", "<p>Ships sail again.</p>")],
    )
    storage.close()
    service = Running(["web", "--config", str(config)], cwd=tmp_path)
    try:
        service.wait_for("ready", timeout=60)
        client = Client(port)
        deadline = time.monotonic() + 30
        while True:  # the job's first tick is at start; bounded to 30 s
            answer = client.request("/search?q=quarantine")
            if b"Quarantine lifted" in answer.body or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert answer.status == 200
        assert b"Quarantine lifted in the harbour" in answer.body
        assert b"not searchable yet" not in answer.body
    finally:
        assert service.stop(signal.SIGTERM) == 0


def test_the_databases_agree_on_characters_their_own_parsers_would_split_or_drop(
    stored: Storage,
) -> None:
    """PostgreSQL's parser drops a lone mark or a fraction digit that the folding keeps: given
    literals, it sees the same words as FTS5, and a query that is all exclusions in disguise
    finds nothing rather than everything."""
    assert keys(stored, "\u09f4 -gaza") == []  # a Bengali fraction sign, a word to the folding
    assert keys(stored, "\u094d gaza") == []  # a lone virama
    assert keys(stored, "a\u09f4\u09f4*") == []
    assert keys(stored, "1e5x*") == []
    # no phrase runs from the title into the body
    assert keys(stored, '"talks stall negotiators"') == []
    assert keys(stored, '"talks stall"') == ["w1"]


def test_a_long_article_is_indexed_up_to_its_word_bound_on_both(
    storage: Storage, processor: Processor
) -> None:
    filler = " ".join(f"filler{n % 50}" for n in range(storage_search.MAX_WORDS + 200))
    store(storage, processor, [("blog", "long", "A long one", f"<p>lead {filler} needle</p>")])
    catch_up(storage)
    assert keys(storage, "lead") == ["long"]
    assert keys(storage, "needle") == []  # past the bound on both databases alike


def test_copies_of_one_story_are_one_result_with_the_others_as_also_reported(
    storage: Storage, processor: Processor
) -> None:
    store(
        storage,
        processor,
        [
            ("herald", "hw", "Gaza truce talks stall", f"<p>{WIRE}</p>"),
            ("wire", "w9", "Gaza ceasefire talks hit snag", f"<p>{WIRE} More to follow.</p>"),
        ],
    )
    catch_up(storage)
    query = parse("stabilisation")
    [found] = storage.search(query.fts5(), query.tsquery(), 10)
    assert len(found.also) == 1
    assert {found.item.entry.key, found.also[0].entry.key} == {"hw", "w9"}


def test_an_edit_saved_while_its_item_is_indexed_is_indexed_too(
    stored: Storage, processor: Processor
) -> None:
    """The indexer reads a batch, folds it, writes it: an edit committed meanwhile must leave
    its item marked (PostgreSQL: the batch is locked as read; SQLite: writers take turns)."""
    edits: list[threading.Thread] = []

    def save_edit() -> None:
        stored.save_entries(
            "wire",
            [entry("w2", "Stocks tumble", "<p>Shelling resumed overnight.</p>", published=START)],
            processor,
        )

    def document(title: str, summary: str, content: str, article: str | None) -> tuple[str, str]:
        if not edits:  # once, in the middle of the batch
            edits.append(threading.Thread(target=save_edit))
            edits[0].start()
            time.sleep(0.3)  # the edit is waiting on the batch's transaction now
        return index_document(title, summary, content, article)

    stored.save_entries(  # a first edit: w2 is in the next batch
        "wire",
        [entry("w2", "Markets steady", "<p>Prices held.</p>", published=START)],
        processor,
    )
    assert stored.index_for_search(document, 200) == 1
    edits[0].join(timeout=30)
    assert stored.search_pending() == 1  # the edited item waits to be read again
    catch_up(stored)
    assert keys(stored, "shelling") == ["w2"]
    assert keys(stored, "markets") == []


def test_pages_carry_the_search_box_only_where_a_server_answers_searches(
    stored: Storage, config: Config, clock: Clock
) -> None:
    exported = Publisher(stored, config, clock=clock, paged=False)  # as `aggregator export`
    assert b'role="search"' not in exported.index().body
    assert b'role="search"' not in exported.page("sections", "world").body
    served = Publisher(stored, config, clock=clock)
    create_app(served)  # the web app says it answers searches
    assert b'role="search"' in served.index().body
    assert b'role="search"' in served.page("sections", "world").body


def test_a_search_can_be_narrowed_to_a_section_or_a_topic_on_both_databases(
    stored: Storage,
) -> None:
    query = parse("protest*")

    def found(**scope: tuple[str, ...]) -> list[str]:
        return sorted(
            s.item.entry.key
            for s in stored.search(query.fts5(), query.tsquery(), 10, **scope)  # type: ignore[arg-type]
        )

    assert found() == ["b2", "h2"]
    assert found(sections=("opinion",)) == ["b2"]
    assert found(sections=("world",)) == ["h2"]
    assert found(topics=("climate",)) == ["b2"]  # "Emissions rose again"
    assert found(sections=("world",), topics=("climate",)) == []


def test_the_search_page_offers_sections_and_topics_and_keeps_them_in_its_links(
    client: Client,
) -> None:
    answer = client.request("/search?q=protest*&section=opinion")
    assert answer.status == 200
    page = etree.fromstring(answer.body, etree.HTMLParser())
    assert page.findtext(".//h1") == "Search: protest* in Opinion"
    assert [a.text for a in page.iterfind(".//li/h2/a")] == ["Climate plans fail"]
    chosen = page.find(".//select[@id='section']/option[@selected]")
    assert chosen is not None and chosen.get("value") == "opinion"
    assert page.find(".//label[@for='section']") is not None
    feeds = {link.get("type"): link.get("href") for link in page.iterfind(".//head/link")}
    assert (
        feeds["application/atom+xml"] == "http://news.test/search.atom?q=protest%2A&section=opinion"
    )
    atom = client.request("/search.atom?q=protest*&topic=climate")
    titles = [e.findtext(f"{ATOM}title") for e in etree.fromstring(atom.body).iter(f"{ATOM}entry")]
    assert titles == ["Climate plans fail"]
    everywhere = client.request("/search.atom?q=protest*")
    assert everywhere.headers["etag"] != atom.headers["etag"]
    unknown = client.request("/search?q=protest*&section=sport")
    assert unknown.status == 400 and b"there is no section" in unknown.body
