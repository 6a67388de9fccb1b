"""HTML from Jinja2 templates shipped in the package (the only module that imports Jinja2).

Autoescaping is on for every template: feed titles are text, and only HTML that went through the
sanitiser is marked safe (`|safe` in a template), so a hostile title can never become markup.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


def _when(moment: datetime | None) -> str:
    return moment.strftime("%d %b %Y, %H:%M UTC") if moment else ""


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("aggregator", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["when"] = _when
    env.filters["iso"] = lambda moment: moment.isoformat() if moment else ""
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
