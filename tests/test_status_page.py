"""The editors' status page as a person sees it: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium, against `aggregator web` serving 2,000 stored sources.

Skipped with the reason where Chromium or its driver is not installed, except under CI (or
AGGREGATOR_REQUIRE_BROWSER=1), where that is a failure. AGGREGATOR_SCREENSHOT=PATH also saves
the page as the README's picture.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import statusdata
from tests.test_service import Running, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
REQUIRED = os.environ.get("CI") == "true" or os.environ.get("AGGREGATOR_REQUIRE_BROWSER") == "1"

if not (CHROMIUM and DRIVER):
    reason = "Chromium and chromedriver are needed (Debian: chromium, chromium-driver)"
    if REQUIRED:
        raise RuntimeError(f"browser tests must run here: {reason}")
    pytest.skip(reason, allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402

SOURCES = 2000


@pytest.fixture
def newsroom(tmp_path: Path) -> Iterator[str]:
    """`aggregator web` over 2,000 stored sources; yields its address."""
    port = free_port()
    config = tmp_path / "feeds.yaml"
    statusdata.write_config(config, SOURCES, port)
    (tmp_path / "data").mkdir()
    statusdata.seed(config, f"sqlite:///{tmp_path / 'data' / 'aggregator.db'}")
    service = Running(["web", "--config", str(config)], cwd=tmp_path)
    try:
        service.wait_for("ready", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        assert service.stop(signal.SIGTERM) == 0


def visible_rows(driver: WebDriver) -> list[WebElement]:
    """The rows a person sees (offsetParent is null for what is not rendered), asked of the
    page in one call rather than 2,000 round trips."""
    rows: list[WebElement] = driver.execute_script(
        "return Array.from(document.querySelectorAll('#source-table tbody tr'))"
        ".filter((row) => row.offsetParent !== null)"
    )
    return rows


def test_status_page_shows_what_needs_an_editor_first(
    browser: WebDriver, newsroom: str, tmp_path: Path
) -> None:
    browser.get(f"{newsroom}/status")
    assert browser.title == "Status · Newsroom"
    picture = Path(os.environ.get("AGGREGATOR_SCREENSHOT") or tmp_path / "status.png")
    assert browser.save_screenshot(str(picture))
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    statuses = browser.find_elements(By.CSS_SELECTOR, ".summary button .badge")
    assert [b.text for b in statuses] == ["unhealthy", "failing", "gone", "moved", "warning", "ok"]
    # the alert counts sources needing an editor: failing, gone, moved, malformed
    attention = browser.find_element(By.ID, "attention").text
    needing = (
        len(statusdata.UNHEALTHY)
        + len(statusdata.FAILING)
        + len(statusdata.GONE)
        + len(statusdata.MOVED)
        + len(statusdata.WARNING)
    )
    assert f"{needing} sources need an editor" in attention
    rows = browser.find_elements(By.CSS_SELECTOR, "#source-table tbody tr")
    assert len(rows) == SOURCES
    # failing first: the unhealthy ones, then failing, gone, moved, malformed, then the rest
    order = [row.get_attribute("data-status") for row in rows[: needing + 1]]
    assert order == [
        "unhealthy",
        "unhealthy",
        "failing",
        "gone",
        "moved",
        "moved",
        "warning",
        "ok",
    ]
    first = rows[0].text
    assert "bbc-arabic" in first
    assert "6 failures in a row: HTTP 503 Service Unavailable" in first
    # the URL changes to copy into feeds.yaml
    moved = browser.find_element(By.CSS_SELECTOR, "#moved pre").text
    assert "- id: dw-english\n  url: https://feeds.dw-english.example/rss" in moved
    # typing in the filter narrows 2,000 rows to the one asked for
    box = browser.find_element(By.ID, "filter")
    box.send_keys("outlet-1500")
    assert [row.find_element(By.TAG_NAME, "strong").text for row in visible_rows(browser)] == [
        "outlet-1500"
    ]
    assert browser.find_element(By.ID, "shown").text == "1 shown"
    box.clear()
    box.send_keys("timed out")
    assert [r.get_attribute("data-status") for r in visible_rows(browser)] == [
        "unhealthy",  # reuters-africa
        "failing",  # le-monde-international
    ]
    box.clear()
    box.send_keys(" ")  # `clear()` fires no input event; a keystroke does
    # a status button shows that status only
    browser.find_element(By.CSS_SELECTOR, '.summary button[data-status="gone"]').click()
    gone = visible_rows(browser)
    assert len(gone) == 1
    assert "polling stopped" in gone[0].text
    assert "not polled" in gone[0].text
    browser.find_element(By.CSS_SELECTOR, '.summary button[data-status=""]').click()
    assert len(visible_rows(browser)) == SOURCES
    # outputs: entries and last change; digests: the one with a refusal first
    output = browser.find_element(By.CSS_SELECTOR, "#output-table tbody tr").text
    assert "Front page" in output
    assert "50 / 50" in output
    digests = browser.find_elements(By.CSS_SELECTOR, "#digest-table tbody tr[data-failing]")
    assert [d.get_attribute("data-failing") for d in digests] == ["yes", "no"]
    assert "Climate weekly" in digests[0].text
    failures = browser.find_element(By.CSS_SELECTOR, "#digest-table tr.failures").text
    assert "gone@example.org (refused): 550 5.1.1 no such mailbox" in failures
    assert "in " in digests[1].text  # next run, in words
