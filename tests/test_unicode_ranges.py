"""The written-out Unicode tables are what `unicodedata` says, so folding never drifts from it."""

from __future__ import annotations

import unicodedata

import pytest

from aggregator.process import unicode_ranges, unicode_tables


@pytest.mark.parametrize("name", sorted(unicode_ranges.CATEGORIES))
def test_the_table_in_use_is_what_unicodedata_says(name: str) -> None:
    found = unicode_ranges.table(name)
    assert found == unicode_ranges.ranges(name)
    assert len(found) > 200  # marks and symbols of every script, not an empty table


def test_the_file_is_current_for_its_unicode_version() -> None:
    if unicodedata.unidata_version != unicode_tables.UNIDATA_VERSION:
        pytest.skip(
            f"this Python has Unicode {unicodedata.unidata_version}, the file "
            f"{unicode_tables.UNIDATA_VERSION}: the tables are computed at import instead"
        )
    assert unicode_ranges.TABLES_FILE.read_text(encoding="utf-8") == unicode_ranges.render()
