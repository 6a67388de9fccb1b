"""A digest as e-mail clients need it: HTML with every style inlined, and the same in plain text.

Gmail and Outlook drop or ignore `<style>` in many cases, so the CSS is moved into `style`
attributes by css-inline (the only module that imports it; a Rust inliner, fast enough to render
once per digest); the `<style>` block stays too, for the dark-mode rules clients that read it
apply. No scripts, no external CSS, no images needed to read it. Rendering is done once per
period; only the recipient's unsubscribe link differs between copies, and it is filled in last.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import css_inline

from aggregator.digest.compose import DigestView
from aggregator.digest.periods import zone
from aggregator.templating import render

UNSUBSCRIBE = "https://unsubscribe.invalid/TOKEN"  # replaced per recipient
CHOOSE = "https://choose.invalid/TOKEN"  # the recipient's page to choose what they get
_INLINER = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str
    # what stands for the recipient's links until each copy fills them in (a run draws its own)
    unsubscribe_mark: str = UNSUBSCRIBE
    choose_mark: str = CHOOSE

    def for_recipient(self, unsubscribe_url: str, choose_url: str) -> Rendered:
        def filled(body: str) -> str:
            return body.replace(self.unsubscribe_mark, unsubscribe_url).replace(
                self.choose_mark, choose_url
            )

        return Rendered(self.subject, filled(self.html), filled(self.text))


def _day(moment: datetime, reference: datetime) -> str:
    """`Tuesday 24 November`, with the year where it is not the reference's."""
    text = f"{moment:%A} {moment.day} {moment:%B}"
    return text if moment.year == reference.year else f"{text} {moment.year}"


def period_words(view: DigestView) -> tuple[str, str]:
    """The period as people say it, in the digest's zone, and the word that leads into it:
    ("the day to 07:00 GMT on Tuesday 24 November", "in") for a day (23 or 25 hours where the
    clocks change), "the week to ..." for a week, ("Monday 23 November, 07:00 to Wednesday 25
    November, 07:00 GMT", "from") for anything else (a catch-up after downtime). The year shows
    where it is not the year the period ends in, which is the year the digest is sent."""
    tz = zone(view.digest)
    start = view.period.start.astimezone(tz)
    end = view.period.end.astimezone(tz)
    same_time = (start.hour, start.minute) == (end.hour, end.minute)
    days = (end.date() - start.date()).days
    clock = f"{end:%H:%M} {end.tzname()}"
    # the start's zone too where the clocks changed in between (01:00 BST to 01:00 GMT)
    begun = f"{start:%H:%M}" + (f" {start.tzname()}" if start.tzname() != end.tzname() else "")
    if same_time and days in (1, 7):
        span = "the day" if days == 1 else "the week"
        return f"{span} to {clock} on {_day(end, end)}", "in"
    if days == 0:
        return f"{begun} to {clock} on {_day(end, end)}", "from"
    return f"{_day(start, end)}, {begun} to {_day(end, end)}, {clock}", "from"


def period_text(view: DigestView) -> str:
    """The period as a digest's header shows it: `The day to 07:00 GMT on Tuesday 24
    November`."""
    words, _ = period_words(view)
    return words[:1].upper() + words[1:]


def subject(view: DigestView) -> str:
    end = view.period.end.astimezone(zone(view.digest))
    text = view.digest.subject.format_map(
        _Fields(title=view.digest.title, count=view.count, date=f"{end:%d %b %Y}")
    )
    return " ".join(text.split())  # no line breaks: a subject is one header line


class _Fields(dict[str, object]):
    """Unknown `{names}` in an editor's subject stay as written instead of failing the send."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render_digest(
    view: DigestView,
    reason: str,
    overrides: str | None = None,
    unsubscribe_url: str = UNSUBSCRIBE,
    choice_text: str = "",
    choose_url: str = CHOOSE,
) -> Rendered:
    """`choice_text`: what the recipient chose, in words ("World; only Climate"), or ''."""
    title = subject(view)
    context = {
        "choice_text": choice_text,
        "choose_url": choose_url,
        "view": view,
        "subject": title,
        "period_text": period_text(view),
        "period_in": " ".join(reversed(period_words(view))),
        "zone": str(zone(view.digest)),
        "reason": reason,
        "unsubscribe_url": unsubscribe_url,
        "preheader": ", ".join(e.title for e in view.entries[:3]),
    }
    html = _INLINER.inline(render("digest.html", overrides, **context))
    text = render("digest.txt", overrides, **context)
    return Rendered(title, html, _tidy(text), unsubscribe_url, choose_url)


def _tidy(text: str) -> str:
    """At most one blank line in a row, and a final newline."""
    lines: list[str] = []
    for line in text.splitlines():
        if line.strip() or (lines and lines[-1].strip()):
            lines.append(line.rstrip())
    return "\n".join(lines).strip() + "\n"
