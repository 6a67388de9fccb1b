"""Shared fixtures: a settable clock, and a storage on real SQLite and real PostgreSQL.

PostgreSQL tests skip where no server answers, except under CI (CI=true) or with
AGGREGATOR_REQUIRE_POSTGRES=1, where an unreachable server fails them: a skipped check must never
pass for a green run.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from aggregator.config import Config
from aggregator.storage import Storage
from tests.support import Build, Clock, Harness

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
# validated configs are kept in a folder of the test run's own, never in the user's home (the
# commands the tests start inherit it), removed when the run ends
os.environ["AGGREGATOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="aggregator-cache-")
atexit.register(shutil.rmtree, os.environ["AGGREGATOR_CACHE_DIR"], ignore_errors=True)
POSTGRES_ADMIN_URL = os.environ.get(
    "AGGREGATOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


REQUIRE_POSTGRES = _truthy(os.environ.get("CI")) or _truthy(
    os.environ.get("AGGREGATOR_REQUIRE_POSTGRES")
)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway database on the local PostgreSQL server, dropped at the end of the session."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"aggregator_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        message = f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc.orig}"
        if REQUIRE_POSTGRES:
            pytest.fail(message + " (required under CI / AGGREGATOR_REQUIRE_POSTGRES)")
        pytest.skip(message)
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind, in turn: every storage test runs on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    url: str = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    return url


@pytest.fixture
def storage(database_url: str, clock: Clock) -> Iterator[Storage]:
    store = Storage.open(database_url, clock=clock)
    yield store
    store.close()


@pytest.fixture
def harness_for(storage: Storage) -> Iterator[Build]:
    """Pollers over configs on the test's storage, closed at the end."""
    made: list[Harness] = []

    def build(config: Config) -> Harness:
        made.append(Harness(storage, config))
        return made[-1]

    yield build
    for harness in made:
        harness.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium driven by Selenium (the browser tests skip or fail, before this runs,
    where Chromium and its driver are missing: tests/test_status_page.py)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for drivers
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()
