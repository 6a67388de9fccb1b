"""Signed tokens in links (confirm a sign-up, unsubscribe), by itsdangerous (the only importer).

A token names its purpose, the digest and the address, and is signed with a secret from the
environment (AGGREGATOR_SECRET); a forged or altered token does not verify, and a confirmation
token stops working after `max_age`. Unsubscribe tokens do not expire: an unsubscribe link in an
old e-mail must keep working. Without AGGREGATOR_SECRET, a random secret is made once and kept in
a file beside the SQLite database, so a newcomer's links work across restarts; deployments with
several processes must set the variable.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer

SECRET_ENV = "AGGREGATOR_SECRET"
CONFIRM = "confirm"
UNSUBSCRIBE = "unsubscribe"
CHOICE = "choice"  # what a sign-up form ticked, carried in the confirmation link


@dataclass(frozen=True)
class Claim:
    digest_id: str
    email: str
    issued_at: datetime | None = None  # when the link was signed (whole seconds, UTC)


class Signer:
    def __init__(self, secret: str) -> None:
        if len(secret) < 16:
            raise ValueError(f"{SECRET_ENV} must be at least 16 characters")
        self._secret = secret

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self._secret, salt=f"aggregator-{purpose}")

    def sign(self, purpose: str, digest_id: str, email: str) -> str:
        return str(self._serializer(purpose).dumps([digest_id, email]))

    def verify(self, purpose: str, token: str, max_age: timedelta | None = None) -> Claim | None:
        """The claim a token makes, or None when it is forged, altered, or too old."""
        try:
            seconds = int(max_age.total_seconds()) if max_age is not None else None
            data, issued_at = self._serializer(purpose).loads(
                token, max_age=seconds, return_timestamp=True
            )
        except BadSignature:  # SignatureExpired is a BadSignature too
            return None
        if (
            not isinstance(data, list)
            or len(data) != 2
            or not all(isinstance(part, str) for part in data)
        ):
            return None
        return Claim(data[0], data[1], issued_at)


def load_secret(fallback: Path | None) -> str:
    """AGGREGATOR_SECRET, else a secret kept in `fallback` (made on first use, mode 0600)."""
    configured = os.environ.get(SECRET_ENV, "").strip()
    if configured:
        return configured
    if fallback is None:
        raise ValueError(f"set {SECRET_ENV} (a long random string) to sign links in e-mails")
    if fallback.exists():
        return fallback.read_text(encoding="utf-8").strip()
    fallback.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    descriptor = os.open(fallback, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    return secret
