"""One digest e-mail for one recipient: multipart/alternative (text, then HTML) with the headers
mailbox providers expect of a list: Message-ID, Date, List-Id, List-Unsubscribe (https and
mailto) and List-Unsubscribe-Post for one-click unsubscribe (RFC 8058).

Headers shared by every copy are set through the `email` package's modern policy, which encodes
non-ASCII names and subjects (RFC 2047) and refuses a header value with a line break, so nothing
that came from a feed or from YAML can add a header. The per-copy headers are written here:
List-Unsubscribe must reach mail clients as `<https://...>, <mailto:...>` in plain ASCII, and the
`email` package RFC 2047-encodes any word too long for a line (an unsubscribe token is), which
breaks one-click unsubscribe; links are percent-encoded instead (RFC 3986). An address outside
ASCII is written as UTF-8 and needs a server that takes SMTPUTF8 (RFC 6531, 6532).
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from urllib.parse import quote

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

    @property
    def mailto(self) -> str:
        """The mailto: way to leave (RFC 2369), for mail clients that do not POST."""
        address = header_url(self.reply_to or self.sender)
        return f"mailto:{address}?subject=unsubscribe%20{self.digest_id}"


# RFC 3986 reserved and unreserved characters, and "%" of escapes already made: kept as they are
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"
MAX_LINK = 900  # characters of an unsubscribe link: its header line stays within SMTP's 998
# an address as a To header and RCPT TO carry it: no spaces, controls, brackets or quotes
_ADDRESS = re.compile(r'[^\x00-\x20\x7f<>()\[\],;:\\"@]+@[^\x00-\x20\x7f<>()\[\],;:\\"@]+')


def header_url(url: str) -> str:
    """A link as a header may carry it: printable ASCII, whatever else there is percent-encoded
    as UTF-8 (RFC 3986), so that no header folding can make it an RFC 2047 encoded word."""
    return quote(url, safe=_URL_SAFE)


def message_id_for(
    envelope: Envelope, period_start: datetime, recipient: str, edition: str | None = None
) -> str:
    """The Message-ID of one recipient's copy of one period, the same on every attempt: a copy
    sent again after a crash (the server had it, we had not recorded it) is then the message
    mail clients already hold, and they show one. `edition` ("weekly") keeps a weekly copy
    apart from a daily one that starts at the same moment."""
    start = period_start.astimezone(UTC)
    name = envelope.digest_id if edition is None else f"{envelope.digest_id}.{edition}"
    key = f"{name}\n{start.isoformat()}\n{recipient.strip().lower()}"
    tag = base64.b32encode(hashlib.sha256(key.encode("utf-8")).digest()[:15]).decode().lower()
    return f"<{name}.{start:%Y%m%d%H%M%S}.{tag}@{_id_domain(envelope.domain)}>"


def _id_domain(domain: str) -> str:
    """The right-hand side of a Message-ID, in ASCII."""
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "localhost"


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

    def message(
        self,
        rendered: Rendered,
        to: str,
        unsubscribe_url: str,
        eight_bit: bool = False,
        message_id: str | None = None,
        name: str = "",
        choose_url: str | None = None,
    ) -> tuple[bytes, str]:
        """The bytes of one copy of `rendered` (still holding the UNSUBSCRIBE placeholder) for
        `to`, and its Message-ID (`message_id`, or a new one); with `eight_bit` (the server
        takes 8BITMIME) parts whose lines are short enough go unencoded, a third smaller and
        quicker to handle. ValueError for an address or a link no header can carry."""
        if not _ADDRESS.fullmatch(to):
            raise ValueError(f"{to[:80]!r} cannot stand in a To header")
        link = header_url(unsubscribe_url)
        if len(link) > MAX_LINK:
            raise ValueError(f"the unsubscribe link is longer than {MAX_LINK} characters")
        message_id = message_id or make_msgid(
            idstring=self.envelope.digest_id, domain=_id_domain(self.envelope.domain)
        )
        boundary = self._boundary
        lines = [
            self._head,
            # UTF-8 outside ASCII: sent with SMTPUTF8; a name is quoted or encoded as it needs
            f"To: {formataddr((_one_line(name), to)) if name else to}\r\n".encode(),
            f"Message-ID: {message_id}\r\n".encode("ascii"),
            f"List-Unsubscribe: <{link}>,\r\n <{self.envelope.mailto}>\r\n".encode("ascii"),
            b'Content-Type: multipart/alternative; boundary="' + boundary + b'"\r\n\r\n',
        ]
        url = link.encode("ascii")
        # the page to choose what one gets: the body only (no header names it), same limits
        choose = header_url(choose_url) if choose_url else link
        if len(choose) > MAX_LINK:
            raise ValueError(f"the link to choose what one gets is longer than {MAX_LINK}")
        chosen = choose.encode("ascii")
        marks = (rendered.unsubscribe_mark, rendered.choose_mark)
        placeholders = (marks[0].encode("ascii"), marks[1].encode("ascii"))
        for subtype, body in (("plain", rendered.text), ("html", rendered.html)):
            encoding, data = self._part(body, eight_bit)
            if encoding != b"base64":  # 8-bit parts are filled in, if every line still fits
                data = data.replace(placeholders[0], url).replace(placeholders[1], chosen)
                if max(map(len, data.split(b"\r\n"))) > 998:
                    encoding = b"base64"
            if encoding == b"base64":  # encoded per copy (in C)
                filled = body.replace(marks[0], link).replace(marks[1], choose)
                data = _encode(filled, False)[1]
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


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _phrase(text: str) -> str:
    """A display phrase for List-Id: one line, quoted where it has specials."""
    flat = " ".join(text.split()).replace("\\", "").replace('"', "'")
    return f'"{flat}"'
