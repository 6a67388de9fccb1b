"""The README documents every key of feeds.yaml, and nothing that is not one."""

from __future__ import annotations

import re

from aggregator.config.schema import walk_keys
from tests.conftest import ROOT


def reference_keys() -> list[str]:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    section = text.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_\[\].]+)` \|", section, flags=re.MULTILINE)


def test_every_config_key_is_documented() -> None:
    documented = set(reference_keys())
    missing = [path for path, _ in walk_keys() if path not in documented]
    assert missing == [], f"add these keys to README.md's Configuration reference: {missing}"


def test_no_documented_key_is_unknown_to_the_schema() -> None:
    known = {path for path, _ in walk_keys()}
    stale = [key for key in reference_keys() if key not in known]
    assert stale == []


def test_every_key_has_help_text_in_the_schema() -> None:
    assert [path for path, doc in walk_keys() if not doc.help] == []
