"""HTML and text from Jinja2 templates shipped in the package (the only module importing Jinja2).

Autoescaping is on for every HTML template: feed titles are text, and only HTML that went through
the sanitiser is marked safe (`|safe` in a template), so a hostile title can never become markup.
Templates an editor puts in a folder of their own (`templates` below) are found first.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    select_autoescape,
)
from markupsafe import Markup


def _when(moment: datetime | None) -> str:
    return moment.strftime("%d %b %Y, %H:%M UTC") if moment else ""


# Languages written right to left, by primary subtag (Arabic, Hebrew, Persian, Urdu, Pashto,
# Yiddish, Dhivehi, Sorani, Sindhi, Uyghur, Syriac, N'Ko); any tag with the Arab script subtag too.
_RTL = frozenset(["ar", "he", "iw", "fa", "ur", "ps", "yi", "dv", "ckb", "sd", "ug", "syr", "nqo"])


def _lang(language: str | None) -> str:
    """`lang` and `dir` attributes for an element holding text in `language` (none when the
    feed gave none: the text then takes the page's, and `dir="auto"` finds its direction)."""
    code = (language or "").strip().lower().replace("_", "-")  # "ar_EG", as some feeds write
    if not _TAG.fullmatch(code):  # none, or no language tag ("Arabic"): the text decides
        return ' dir="auto"'
    rtl = code.split("-", 1)[0] in _RTL or "-arab" in code
    return f' lang="{code}" dir="{"rtl" if rtl else "ltr"}"'


_TAG = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})*")  # BCP 47, as far as a page needs


def _dated(moment: datetime | None, zone: str, reference: datetime) -> str:
    """A time in a zone, with the year only when it is not the year of `reference` (a digest's
    period): "24 Nov, 07:00 GMT", "30 Dec 2025, 18:10 GMT"."""
    if moment is None:
        return ""
    here, then = moment.astimezone(ZoneInfo(zone)), reference.astimezone(ZoneInfo(zone))
    fmt = "%d %b, %H:%M" if here.year == then.year else "%d %b %Y, %H:%M"
    return f"{here.strftime(fmt)} {here.tzname()}"


def _local(moment: datetime | None, zone: str, fmt: str = "%d %b %Y, %H:%M") -> str:
    """A time in a zone, as people there read it (the zone's abbreviation appended)."""
    if moment is None:
        return ""
    here = moment.astimezone(ZoneInfo(zone))
    return f"{here.strftime(fmt)} {here.tzname()}"


@cache
def environment(overrides: str | None = None) -> Environment:
    """The template environment; with `overrides`, templates in that folder win over ours."""
    package = PackageLoader("aggregator", "templates")
    loader: BaseLoader = (
        ChoiceLoader([FileSystemLoader(overrides), package]) if overrides else package
    )
    env = Environment(
        loader=loader,
        # HTML is escaped; plain-text templates (.txt, e-mail text parts) are not
        autoescape=select_autoescape(
            enabled_extensions=("html", "xml"), default=False, default_for_string=True
        ),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["when"] = _when
    env.filters["iso"] = lambda moment: moment.isoformat() if moment else ""
    env.filters["local"] = _local
    env.filters["dated"] = _dated
    env.filters["lang"] = lambda language: Markup(_lang(language))
    return env


def render(template: str, overrides: str | None = None, **context: Any) -> str:
    return environment(overrides).get_template(template).render(**context)
