"""HTML and text from Jinja2 templates shipped in the package (the only module importing Jinja2).

Autoescaping is on for every HTML template: feed titles are text, and only HTML that went through
the sanitiser is marked safe (`|safe` in a template), so a hostile title can never become markup.
Templates an editor puts in a folder of their own (`templates` below) are found first.
"""

from __future__ import annotations

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


def _when(moment: datetime | None) -> str:
    return moment.strftime("%d %b %Y, %H:%M UTC") if moment else ""


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
    return env


def render(template: str, overrides: str | None = None, **context: Any) -> str:
    return environment(overrides).get_template(template).render(**context)
