"""Every page a reader or an editor opens, as a person sees it, in headless Chromium at a phone's
375 px and a laptop's 1,280 px: nothing wider than the screen (measured from the page itself),
headings in order, every form field labelled, and text that keeps WCAG AA contrast in light and
dark mode. Skipped with the reason where Chromium is missing, except under CI."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

import tests.test_status_page  # noqa: F401  (skips this module where Chromium is missing)
from aggregator.config import load_config
from aggregator.process.pipeline import Processor
from aggregator.storage import Storage
from aggregator.tokens import UNSUBSCRIBE, Signer
from aggregator.types import Enclosure, Entry
from tests import statusdata
from tests.test_service import Running, free_port

LONG = "https://news.example/" + "a-very-long-unbroken-path-segment-" * 8 + "end.html"
PAGES = (
    "/",
    "/feeds/front-page",
    "/sections/world",
    "/topics/climate",
    "/status",
    "/search?q=climate",
    "/search?q=-refused",
    "/digests/morning/subscribe",
    "/nothing-here",
)


def _stock(database: str, config_path: Path) -> None:
    """Items that test a layout: an unbroken 300-character link and title word, a right-to-left
    title, an episode with a player and a picture."""
    config = load_config(config_path)
    storage = Storage.open(database)
    now = datetime.now(UTC)
    try:
        long_word = "Supercalifragilisticexpialidocious" * 4
        entries = [
            Entry(
                key="long",
                title=f"{long_word} climate talks",
                link=LONG,
                summary=f"<p>See {LONG} for the whole {long_word} report.</p>",
                published=now - timedelta(hours=1),
            ),
            Entry(
                key="rtl",
                title="غزة: قافلة مساعدات تنتظر عند معبر رفح",
                link="https://news.example/ar/1",
                summary="<p>تنتظر شاحنات المساعدات عند المعبر منذ أيام.</p>",
                language="ar",
                published=now - timedelta(hours=2),
            ),
            Entry(
                key="episode",
                title="Episode 12: the climate summit",
                link="https://pod.example/12",
                summary="<p>Our correspondents on the summit.</p>",
                image="https://pod.example/12.jpg",
                enclosures=(Enclosure("https://pod.example/12.mp3", "audio/mpeg", 24_130_000),),
                published=now - timedelta(hours=3),
            ),
        ]
        storage.save_entries(config.sources[-1].id, entries, Processor(config))
    finally:
        storage.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    """`aggregator web` over a newsroom of 40 sources in every state, with items that test a
    layout; yields its address."""
    port = free_port()
    config = tmp_path / "feeds.yaml"
    statusdata.write_config(config, 40, port)
    # a source with a long unbroken address, as the status table shows it
    text = config.read_text().replace(
        "sources:\n", f"sources:\n  - {{id: long-address, url: '{LONG}', section: world}}\n", 1
    )
    config.write_text(text)
    (tmp_path / "data").mkdir()
    database = f"sqlite:///{tmp_path / 'data' / 'aggregator.db'}"
    statusdata.seed(config, database)
    _stock(database, config)
    service = Running(["web", "--config", str(config)], cwd=tmp_path)
    try:
        service.wait_for("ready", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        assert service.stop(signal.SIGTERM) == 0


# What overflows the screen, measured by the page: the document's own scroll width, and every
# element whose box reaches past the right edge outside a box that scrolls on its own.
_OVERFLOW = """
const width = document.documentElement.clientWidth;
const scrolls = (el) => {
  for (let p = el.parentElement; p; p = p.parentElement) {
    const style = getComputedStyle(p);
    if (["auto", "scroll"].includes(style.overflowX) && p.scrollWidth > p.clientWidth) {
      return true;
    }
  }
  return false;
};
const wide = [];
for (const el of document.body.querySelectorAll("*")) {
  const box = el.getBoundingClientRect();
  if (box.width > 0 && box.right > width + 1 && !scrolls(el)) {
    wide.push(el.tagName.toLowerCase() + (el.className ? "." + el.className : "") +
      " " + Math.round(box.right));
  }
}
return {scroll: document.documentElement.scrollWidth, width: width, wide: wide.slice(0, 5)};
"""

_HEADINGS = (
    "return Array.from(document.querySelectorAll('h1,h2,h3,h4,h5,h6'))"
    ".map((h) => Number(h.tagName[1]))"
)

_UNLABELLED = """
return Array.from(document.querySelectorAll("input, select, textarea"))
  .filter((el) => el.type !== "hidden" && el.type !== "submit")
  .filter((el) => !(el.getAttribute("aria-label") || el.getAttribute("aria-labelledby") ||
    (el.id && document.querySelector(`label[for="${el.id}"]`)) || el.closest("label")))
  .map((el) => el.outerHTML.slice(0, 80));
"""

# The contrast of every text's colour against the background behind it (WCAG 2 formula).
_CONTRAST = """
const rgb = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
const lum = ([r, g, b]) => {
  const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
};
const background = (el) => {
  for (let p = el; p; p = p.parentElement) {
    const c = rgb(getComputedStyle(p).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
  }
  return rgb(getComputedStyle(document.documentElement).backgroundColor).slice(0, 3);
};
const worst = [];
for (const el of document.body.querySelectorAll("*")) {
  const own = Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!own || el.offsetParent === null) continue;
  const style = getComputedStyle(el);
  const a = lum(rgb(style.color).slice(0, 3)), b = lum(background(el));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  const large = parseFloat(style.fontSize) >= 24 ||
    (parseFloat(style.fontSize) >= 18.66 && Number(style.fontWeight) >= 700);
  if (ratio < (large ? 3 : 4.5)) worst.push([el.tagName, el.className, ratio.toFixed(2)]);
}
return worst.slice(0, 5);
"""


def _dark(browser: WebDriver, on: bool) -> None:
    features = [{"name": "prefers-color-scheme", "value": "dark" if on else "light"}]
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": features})


@pytest.mark.parametrize("width", [375, 1280])
def test_every_page_fits_the_screen_and_reads_well(
    browser: WebDriver, site: str, width: int, tmp_path: Path
) -> None:
    browser.set_window_size(width, 900)
    problems: dict[str, Any] = {}
    # a recipient's page to choose what they get, signed with the secret the service made
    secret = (tmp_path / "data" / "secret.key").read_text().strip()
    token = Signer(secret).sign(UNSUBSCRIBE, "morning", "desk@example.org")
    for path in (*PAGES, f"/digests/morning/choose?token={token}"):
        for dark in (False, True):
            _dark(browser, dark)
            browser.get(site + path)
            where = f"{path} ({'dark' if dark else 'light'})"
            if "/choose?" in path:  # the page itself, not "this link does not work"
                assert "Choose what you get" in browser.execute_script(
                    "return document.querySelector('h1').textContent"
                )
            measured = browser.execute_script(_OVERFLOW)
            if measured["scroll"] > measured["width"] or measured["wide"]:
                problems[f"{where}: wider than {width} px"] = measured
            levels = browser.execute_script(_HEADINGS)
            if levels and (levels[0] != 1 or any(b - a > 1 for a, b in itertools.pairwise(levels))):
                problems[f"{where}: headings out of order"] = levels
            unlabelled = browser.execute_script(_UNLABELLED)
            if unlabelled:
                problems[f"{where}: fields without a label"] = unlabelled
            low = browser.execute_script(_CONTRAST)
            if low:
                problems[f"{where}: contrast below WCAG AA"] = low
    assert problems == {}, "\n".join(f"{k}: {v}" for k, v in problems.items())


def test_the_front_page_in_a_browser_shows_stories_by_section_and_leads_to_search(
    browser: WebDriver, site: str
) -> None:
    """What a reader sees on a phone: each section's latest stories with source and time, the
    sections and topics, the digests with their schedule; and the search box, used as a reader
    uses it, finds a story."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.set_window_size(375, 900)
    _dark(browser, False)
    browser.get(site + "/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Newsroom"
    [world] = browser.find_elements(By.XPATH, "//section[h2/a[text()='World']]")
    stories = world.find_elements(By.CSS_SELECTOR, "li h3 a")
    assert 1 <= len(stories) <= 5 and all(s.is_displayed() and s.text for s in stories)
    first_meta = world.find_element(By.CSS_SELECTOR, "li .meta")
    assert first_meta.find_element(By.TAG_NAME, "time").get_attribute("datetime")
    rtl = browser.find_elements(By.CSS_SELECTOR, "li[lang='ar'][dir='rtl']")
    assert rtl, "the Arabic story keeps its language and direction"
    nav = {a.text for a in browser.find_elements(By.CSS_SELECTOR, "nav.kinds a")}
    assert nav == {"World", "Climate"}
    digests = browser.find_element(By.ID, "digests").find_element(By.XPATH, "following::ul[1]")
    assert "Morning briefing" in digests.text and "every day at 07:00" in digests.text.lower()
    # the search box: type, press Enter, read the results (the service indexes in the
    # background, so the page is loaded again until the story is searchable, for at most 30 s)
    box = browser.find_element(By.ID, "q")
    box.send_keys("climate talks", Keys.ENTER)
    deadline = time.monotonic() + 30

    def page_text() -> str:
        """The page's text; nothing while the browser is still between pages (the body found
        on the last one can go stale before its text is read, and the next may have none yet)."""
        try:
            return str(browser.find_element(By.TAG_NAME, "body").text)
        except (StaleElementReferenceException, NoSuchElementException):
            return ""

    while "Supercalifragilistic" not in page_text():
        assert time.monotonic() < deadline, "the story never became searchable"
        time.sleep(0.5)
        browser.refresh()
    assert browser.find_element(By.TAG_NAME, "h1").text == "Search: climate talks"
    assert browser.current_url.endswith("/search?q=climate+talks")
