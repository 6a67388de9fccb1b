"""One digest e-mail for one recipient: multipart/alternative (text, then HTML) with the headers
mailbox providers expect of a list: Message-ID, Date, List-Id, List-Unsubscribe (https and
mailto) and List-Unsubscribe-Post for one-click unsubscribe (RFC 8058).

Headers are set through the `email` package's modern policy, which encodes non-ASCII names and
subjects (RFC 2047) and refuses a header value with a line break, so nothing that came from a
feed or from YAML can add a header.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from aggregator.digest.render import UNSUBSCRIBE, Rendered


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
    # base64: the email package encodes it in C; quoted-printable is pure Python, 10x slower
    message.add_alternative(rendered.html, subtype="html", cte="base64")
    return message


class Batch:
    """The copies of one digest run: everything they share (headers, the MIME frame) is encoded
    once by the `email` package; each copy adds its recipient, Message-ID and unsubscribe link,
    and its two parts are base64-encoded in C. Building every copy with `EmailMessage` cost
    about 10 ms a message, most of a 10,000-recipient run."""

    def __init__(self, envelope: Envelope, subject: str, date: datetime) -> None:
        self.envelope = envelope
        self.subject = subject
        self.date = date
        head = EmailMessage(policy=policy.SMTP)
        local, _, domain = envelope.sender.rpartition("@")
        head["From"] = Address(display_name=envelope.sender_name, username=local, domain=domain)
        if envelope.reply_to:
            head["Reply-To"] = envelope.reply_to
        head["Subject"] = subject
        head["Date"] = format_datetime(date)
        head["List-Id"] = (
            f"{_phrase(envelope.digest_title)} <{envelope.digest_id}.{envelope.domain}>"
        )
        head["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        head["Auto-Submitted"] = "auto-generated"
        head["MIME-Version"] = "1.0"
        self._head = head.as_bytes().rstrip(b"\r\n") + b"\r\n"
        self._boundary = f"=_aggregator_{uuid.uuid4().hex}".encode()
        self._parts: dict[tuple[str, bool], tuple[bytes, bytes]] = {}
        self._mailto = (
            f"mailto:{envelope.reply_to or envelope.sender}"
            f"?subject=unsubscribe%20{envelope.digest_id}"
        )

    def message(
        self, rendered: Rendered, to: str, unsubscribe_url: str, eight_bit: bool = False
    ) -> tuple[bytes, str]:
        """The bytes of one copy of `rendered` (still holding the UNSUBSCRIBE placeholder) for
        `to`, and its Message-ID; with `eight_bit` (the server takes 8BITMIME) parts whose
        lines are short enough go unencoded, a third smaller and quicker to handle."""
        if (
            not to.isascii()
            or not unsubscribe_url.isascii()
            or any(c in to + unsubscribe_url for c in "\r\n<> ")
        ):
            personal = rendered.for_recipient(unsubscribe_url)
            slow = build(self.envelope, personal, to, unsubscribe_url, self.date)
            return slow.as_bytes(), str(slow["Message-ID"])
        message_id = make_msgid(idstring=self.envelope.digest_id, domain=self.envelope.domain)
        boundary = self._boundary
        lines = [
            self._head,
            f"To: {to}\r\n".encode(),
            f"Message-ID: {message_id}\r\n".encode(),
            f"List-Unsubscribe: <{unsubscribe_url}>,\r\n <{self._mailto}>\r\n".encode(),
            b'Content-Type: multipart/alternative; boundary="' + boundary + b'"\r\n\r\n',
        ]
        url = unsubscribe_url.encode("ascii")
        for subtype, body in (("plain", rendered.text), ("html", rendered.html)):
            encoding, data = self._part(body, eight_bit)
            if encoding != b"base64" and _MAX_LINE + len(url) - len(_PLACEHOLDER) > 998:
                encoding = b"base64"  # an unusually long link could overrun a line
            if encoding == b"base64":  # encoded per copy (in C); 8-bit parts are filled in
                data = _encode(body.replace(UNSUBSCRIBE, unsubscribe_url), False)[1]
            else:
                data = data.replace(_PLACEHOLDER, url)
            lines += [
                b"--" + boundary + b"\r\n",
                f'Content-Type: text/{subtype}; charset="utf-8"\r\n'.encode(),
                b"Content-Transfer-Encoding: " + encoding + b"\r\n\r\n",
                data,
            ]
        lines.append(b"--" + boundary + b"--\r\n")
        return b"".join(lines), message_id

    def _part(self, body: str, eight_bit: bool) -> tuple[bytes, bytes]:
        """A body encoded once (placeholder and all), for every copy."""
        key = (body, eight_bit)
        if key not in self._parts:
            self._parts[key] = _encode(body, eight_bit)
        return self._parts[key]


_PLACEHOLDER = UNSUBSCRIBE.encode("ascii")
_MAX_LINE = 760  # SMTP allows 998 octets a line: room for a link put in later


def _fold(line: bytes) -> list[bytes]:
    """A long line cut at spaces (for HTML and text alike, a line break is a space)."""
    out = []
    while len(line) > _MAX_LINE:
        cut = line.rfind(b" ", 0, _MAX_LINE)
        if cut <= 0:
            break
        out.append(line[:cut])
        line = line[cut + 1 :]
    out.append(line)
    return out


def _encode(body: str, eight_bit: bool) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, the encoded body with CRLF line ends)."""
    data = body.encode("utf-8")
    lines = [part for line in data.replace(b"\r\n", b"\n").split(b"\n") for part in _fold(line)]
    if eight_bit and max(map(len, lines)) <= _MAX_LINE:
        encoding = b"8bit" if not data.isascii() else b"7bit"
        return encoding, b"\r\n".join(lines).rstrip(b"\r\n") + b"\r\n"
    return b"base64", base64.encodebytes(data).replace(b"\n", b"\r\n")


def _phrase(text: str) -> str:
    """A display phrase for List-Id: one line, quoted where it has specials."""
    flat = " ".join(text.split()).replace("\\", "").replace('"', "'")
    return f'"{flat}"'
