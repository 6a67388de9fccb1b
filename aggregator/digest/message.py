"""One digest e-mail for one recipient: multipart/alternative (text, then HTML) with the headers
mailbox providers expect of a list: Message-ID, Date, List-Id, List-Unsubscribe (https and
mailto) and List-Unsubscribe-Post for one-click unsubscribe (RFC 8058).

Headers are set through the `email` package's modern policy, which encodes non-ASCII names and
subjects (RFC 2047) and refuses a header value with a line break, so nothing that came from a
feed or from YAML can add a header.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from aggregator.digest.render import Rendered


@dataclass(frozen=True)
class Envelope:
    """Who a digest is from and how to leave it: the same for every copy of one run."""

    sender: str
    sender_name: str
    digest_id: str
    digest_title: str
    reply_to: str | None = None

    @property
    def domain(self) -> str:
        return self.sender.rpartition("@")[2] or "localhost"


def build(
    envelope: Envelope,
    rendered: Rendered,
    to: str,
    unsubscribe_url: str,
    date: datetime,
) -> EmailMessage:
    message = EmailMessage(policy=policy.SMTP)
    local, _, domain = envelope.sender.rpartition("@")
    message["From"] = Address(display_name=envelope.sender_name, username=local, domain=domain)
    message["To"] = to
    if envelope.reply_to:
        message["Reply-To"] = envelope.reply_to
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = make_msgid(idstring=envelope.digest_id, domain=envelope.domain)
    message["List-Id"] = (
        f"{_phrase(envelope.digest_title)} <{envelope.digest_id}.{envelope.domain}>"
    )
    mailto = (
        f"mailto:{envelope.reply_to or envelope.sender}?subject=unsubscribe%20{envelope.digest_id}"
    )
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>, <{mailto}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text, subtype="plain", cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    return message


def _phrase(text: str) -> str:
    """A display phrase for List-Id: one line, quoted where it has specials."""
    flat = " ".join(text.split()).replace("\\", "").replace('"', "'")
    return f'"{flat}"'
