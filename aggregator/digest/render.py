"""A digest as e-mail clients need it: HTML with every style inlined, and the same in plain text.

Gmail and Outlook drop or ignore `<style>` in many cases, so the CSS is moved into `style`
attributes by css-inline (the only module that imports it; a Rust inliner, fast enough to render
once per digest); the `<style>` block stays too, for the dark-mode rules clients that read it
apply. No scripts, no external CSS, no images needed to read it. Rendering is done once per
period; only the recipient's unsubscribe link differs between copies, and it is filled in last.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

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

    def for_recipient(self, unsubscribe_url: str, choose_url: str) -> Rendered:
        def filled(body: str) -> str:
            return body.replace(UNSUBSCRIBE, unsubscribe_url).replace(CHOOSE, choose_url)

        return Rendered(self.subject, filled(self.html), filled(self.text))


def period_text(view: DigestView) -> str:
    """`24 Nov 07:00 to 25 Nov 07:00 GMT`, in the digest's zone."""
    tz = zone(view.digest)
    start = view.period.start.astimezone(tz)
    end = view.period.end.astimezone(tz)
    if end - start <= timedelta(days=1) and start.date() == end.date():
        return f"{start:%d %b %Y, %H:%M} to {end:%H:%M} {end.tzname()}"
    return f"{start:%d %b %H:%M} to {end:%d %b %Y, %H:%M} {end.tzname()}"


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
        "zone": str(zone(view.digest)),
        "reason": reason,
        "unsubscribe_url": unsubscribe_url,
        "preheader": ", ".join(e.title for e in view.entries[:3]),
    }
    html = _INLINER.inline(render("digest.html", overrides, **context))
    text = render("digest.txt", overrides, **context)
    return Rendered(title, html, _tidy(text))


def _tidy(text: str) -> str:
    """At most one blank line in a row, and a final newline."""
    lines: list[str] = []
    for line in text.splitlines():
        if line.strip() or (lines and lines[-1].strip()):
            lines.append(line.rstrip())
    return "\n".join(lines).strip() + "\n"
