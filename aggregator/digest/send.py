"""Sending through SMTP (smtplib, the only importer): one reused connection, a rate, retries.

The outcome of each message is data, never an exception: sent (the server accepted it), refused
for good (5xx: recorded per recipient and not tried again), or refused for now (4xx, a dropped
connection, a timeout: retried here with a growing wait, then left for the next run).

An address outside ASCII goes with SMTPUTF8 (RFC 6531); a server without it refuses that address
for good, and the others go on.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType

from aggregator.config import Smtp


@dataclass(frozen=True)
class Outcome:
    sent: bool
    permanent: bool = False  # this recipient was refused for good
    error: str | None = None
    attempts: int = 1
    server_down: bool = False  # no connection, login or TLS: nobody can be served now


class Mailer:
    """A connection to the mail server, opened on first use and opened again after a drop."""

    def __init__(
        self,
        settings: Smtp,
        *,
        backoff: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._settings = settings
        self._tls = tls  # the system's trusted CAs unless given (tests bring their own CA)
        self._backoff = backoff
        self._sleep = sleep
        self._clock = clock
        self._smtp: smtplib.SMTP | None = None
        self._next_at = 0.0

    def __enter__(self) -> Mailer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is None:
            s = self._settings
            timeout = s.timeout.total_seconds()
            smtp: smtplib.SMTP
            if s.security == "tls":
                smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=timeout, context=self._context())
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=timeout)
                if s.security == "starttls":
                    smtp.starttls(context=self._context())
            if s.username:
                smtp.login(s.username, s.password)
            self._smtp = smtp
        return self._smtp

    @property
    def eight_bit(self) -> bool:
        """Whether the server takes 8-bit bodies (8BITMIME); connects if need be."""
        try:
            connection = self._connection()
            connection.ehlo_or_helo_if_needed()
            return bool(connection.has_extn("8bitmime"))
        except (smtplib.SMTPException, OSError):
            return False

    def _context(self) -> ssl.SSLContext:
        return self._tls or ssl.create_default_context()

    def _pace(self) -> None:
        """`smtp.rate` is for all connections together: each takes its share."""
        if self._settings.rate <= 0:
            return
        now = self._clock()
        if now < self._next_at:
            self._sleep(self._next_at - now)
        self._next_at = max(now, self._next_at) + self._settings.connections / self._settings.rate

    def send(
        self,
        message: EmailMessage | bytes,
        sender: str,
        to: str,
        eight_bit: bool = False,
    ) -> Outcome:
        """Send one message (bytes as they are; `eight_bit`: they hold 8-bit parts)."""
        error = ""
        attempts = 0
        utf8 = not (sender.isascii() and to.isascii())
        for attempt in range(self._settings.retries + 1):
            if attempt:
                self._sleep(self._backoff * 2 ** (attempt - 1))
            attempts += 1
            self._pace()
            try:
                self._connection()
            except (smtplib.SMTPException, OSError) as exc:  # connect, STARTTLS, login
                error = f"mail server: {_describe(exc)}"
                self._drop()
                if attempt == self._settings.retries:
                    return Outcome(False, False, error, attempts, server_down=True)
                continue
            try:
                if isinstance(message, bytes):
                    options = ["BODY=8BITMIME"] if eight_bit else []
                    options += ["SMTPUTF8"] if utf8 else []
                    self._connection().sendmail(sender, [to], message, mail_options=options)
                else:
                    self._connection().send_message(message, from_addr=sender, to_addrs=[to])
                return Outcome(True, attempts=attempts)
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = exc.recipients.get(to, (450, b"refused"))
                error = _reply(code, reply)
                if code >= 500:
                    return Outcome(False, True, error, attempts)
            except smtplib.SMTPResponseException as exc:
                error = _reply(exc.smtp_code, exc.smtp_error)
                if exc.smtp_code >= 500:
                    return Outcome(False, True, error, attempts)
                self._reset()
            except smtplib.SMTPNotSupportedError:  # an address outside ASCII, no SMTPUTF8
                error = "the mail server does not take addresses outside ASCII (no SMTPUTF8)"
                return Outcome(False, True, f"cannot be sent: {error}", attempts)
            except UnicodeEncodeError as exc:  # an address the server cannot be given in ASCII
                return Outcome(False, True, f"cannot be sent: {exc.reason}", attempts)
            except (smtplib.SMTPException, OSError) as exc:
                error = f"connection: {_describe(exc)}"
                self._drop()
        return Outcome(False, False, error, attempts)

    def _reset(self) -> None:
        """After a refused transaction the connection is fine; RSET clears its state."""
        if self._smtp is not None:
            try:
                self._smtp.rset()
            except (smtplib.SMTPException, OSError):
                self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply(exc.smtp_code, exc.smtp_error)
    return str(exc) or type(exc).__name__


def _reply(code: int, text: bytes | str) -> str:
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(message.split())}"
