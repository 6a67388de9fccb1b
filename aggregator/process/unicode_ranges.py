"""Code point ranges of the Unicode categories that folding and word splitting need.

Finding them means asking `unicodedata` about 130,000 code points, which took about 100 ms at
the import of `text` in every process (each CLI command, each helper). `TABLES` holds them
written out for one Unicode version; under any other, `ranges` computes them as before. A test
holds `TABLES` to what `ranges` computes (`python3 -m aggregator.process.unicode_ranges`
rewrites it).
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

Ranges = tuple[tuple[int, int], ...]

CATEGORIES: dict[str, Callable[[str], bool]] = {
    "marks": lambda category: category in ("Mn", "Mc", "Me"),
    "symbols": lambda category: category.startswith("S"),
}


def ranges(name: str) -> Ranges:
    """The ranges of non-ASCII code points below U+20000 in the categories called `name`."""
    test = CATEGORIES[name]
    found: list[tuple[int, int]] = []
    for code in range(0x80, min(sys.maxunicode, 0x20000)):
        if test(unicodedata.category(chr(code))):
            if found and found[-1][1] == code - 1:
                found[-1] = (found[-1][0], code)
            else:
                found.append((code, code))
    return tuple(found)


def table(name: str) -> Ranges:
    """`ranges(name)`, from the written-out table when it is for this Unicode version."""
    from aggregator.process import unicode_tables

    if unicodedata.unidata_version != unicode_tables.UNIDATA_VERSION:
        return ranges(name)  # pragma: no cover (another Python's Unicode version)
    return tuple(
        (int(first, 16), int(last or first, 16))
        for first, _, last in (pair.partition("-") for pair in unicode_tables.TABLES[name].split())
    )


def render() -> str:
    """The text of `unicode_tables.py` for this Python's Unicode version."""
    lines = [
        '"""Written by `python3 -m aggregator.process.unicode_ranges`; do not edit."""',
        "",
        f'UNIDATA_VERSION = "{unicodedata.unidata_version}"',
        "TABLES = {",
    ]
    for name in CATEGORIES:
        lines.append(f'    "{name}": (')
        pairs = [f"{a:X}" if a == b else f"{a:X}-{b:X}" for a, b in ranges(name)]
        row = ""
        for pair in pairs:
            if len(row) + len(pair) + 1 > 88:
                lines.append(f'        "{row}"')
                row = ""
            row += pair + " "
        lines += [f'        "{row.rstrip()}"', "    ),"]
    lines.append("}")
    return "\n".join(lines) + "\n"


TABLES_FILE = Path(__file__).with_name("unicode_tables.py")

if __name__ == "__main__":
    TABLES_FILE.write_text(render(), encoding="utf-8")
