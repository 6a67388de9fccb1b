"""Signing up for a digest on the web (double opt-in) and leaving it (one click, RFC 8058).

A sign-up is pending until the address owner follows the link mailed to it (signed, valid for
`CONFIRM_FOR`); leaving takes a signed unsubscribe link from any digest e-mail and works for
YAML recipients too. A forged, altered or expired token changes nothing, and neither does a
confirmation link sent before its address left: it would sign up again someone who just said
no, so its page says the address is unsubscribed and offers to sign up afresh.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from enum import StrEnum

from aggregator.config import Config, Digest
from aggregator.config.schema import email_problem
from aggregator.digest.choosing import decode, encode, offer, read_form
from aggregator.digest.dispatch import choose_url, envelope_for
from aggregator.digest.send import Mailer
from aggregator.exceptions import BadRequestError, NotPublishedError
from aggregator.publish.publisher import base_url
from aggregator.storage import Storage
from aggregator.tokens import CHOICE, CONFIRM, UNSUBSCRIBE, Claim, Signer
from aggregator.types import Choice, Subscriber, SubscriberStatus

log = logging.getLogger("aggregator.digest")

CONFIRM_FOR = timedelta(days=3)
CONFIRM_AGAIN_AFTER = timedelta(hours=1)  # at most one confirmation an hour to one address


class ConfirmState(StrEnum):
    ASK = "ask"  # a pending sign-up: the page offers the Confirm button
    SUBSCRIBED = "subscribed"
    LEFT = "left"  # unsubscribed after the link was sent: it confirms nothing


@dataclass(frozen=True)
class Confirmation:
    """Where a confirmation link's address stands, for the page that answers it."""

    email: str
    state: ConfirmState

    @property
    def asks(self) -> bool:
        return self.state is ConfirmState.ASK

    @property
    def left(self) -> bool:
        return self.state is ConfirmState.LEFT


class Subscriptions:
    def __init__(
        self,
        storage: Storage,
        config: Config,
        signer: Signer,
        mailer: Callable[[], Mailer],
        clock: Callable[[], datetime],
    ) -> None:
        self.storage = storage
        self.signer = signer
        self.mailer = mailer
        self.clock = clock
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Take a reloaded config: digests added, removed or renamed."""
        self.config = config
        self.base = base_url(config)

    def digest(self, digest_id: str) -> Digest:
        found = next((d for d in self.config.digests if d.id == digest_id), None)
        if found is None:
            raise NotPublishedError(f"there is no digest {digest_id!r}")
        return found

    def sign_up(self, digest_id: str, address: str, choice: Choice | None = None) -> str:
        """Record a pending sign-up and mail the confirmation link; the normalised address.
        `choice` (what the form ticked) travels signed in the link and is kept only when the
        owner confirms: a stranger's sign-up can change nobody's digest."""
        digest = self.digest(digest_id)
        problem, email = email_problem(address.strip()[:320])
        if problem is not None:
            raise BadRequestError(f"{address[:80]!r} is not an e-mail address: {problem}")
        subscriber = self.storage.add_subscriber(digest.id, email)
        email = subscriber.email  # the one form storage keeps
        if subscriber.status is SubscriberStatus.CONFIRMED:
            return email  # already in: no second mail, and nothing told to a stranger
        envelope = envelope_for(self.config, digest)
        if envelope is None:
            raise BadRequestError("this digest has no sender address configured yet")
        now = self.clock()
        if not self.storage.claim_confirmation(digest.id, email, now, CONFIRM_AGAIN_AFTER):
            # the same answer as a send, so the form tells a stranger nothing; the earlier link
            # still works
            log.info("confirmation for %s to %s sent within the hour; not again", digest.id, email)
            return email
        token = self.signer.sign(CONFIRM, digest.id, email)
        link = f"{self.base}digests/{digest.id}/confirm?token={token}"
        if choice is not None and (choice.narrows or choice.frequency is not None):
            carried = self.signer.sign(CHOICE, digest.id, f"{email}\n{encode(choice)}")
            link += f"&choice={carried}"
        message = EmailMessage(policy=policy.SMTP)
        message["From"] = envelope.sender
        message["To"] = email
        message["Subject"] = f"Confirm your subscription to {' '.join(digest.title.split())}"
        message["Date"] = format_datetime(self.clock())
        message["Message-ID"] = make_msgid(idstring="confirm", domain=envelope.domain)
        message["Auto-Submitted"] = "auto-replied"
        message.set_content(
            f"Someone, probably you, asked to receive {digest.title} at this address.\n\n"
            f"To confirm, open this link within {CONFIRM_FOR.days} days:\n{link}\n\n"
            "If it was not you, ignore this e-mail: nothing will be sent.\n"
        )
        with self.mailer() as mailer:
            outcome = mailer.send(message, envelope.sender, email)
        if not outcome.sent:
            self.storage.forget_confirmation(digest.id, email)
            log.warning("confirmation for %s to %s refused: %s", digest.id, email, outcome.error)
            raise BadRequestError(f"the confirmation e-mail could not be sent: {outcome.error}")
        return email

    def check_confirm(self, digest_id: str, token: str) -> Claim | None:
        """Whose confirmation link this is, if it is genuine and recent."""
        claim = self.signer.verify(CONFIRM, token, CONFIRM_FOR)
        return claim if claim is not None and claim.digest_id == digest_id else None

    def carried_choice(self, digest_id: str, email: str, token: str) -> Choice | None:
        """The choice a confirmation link carries for this address, if genuine."""
        claim = self.signer.verify(CHOICE, token, CONFIRM_FOR) if token else None
        if claim is None or claim.digest_id != digest_id:
            return None
        owner, _, encoded = claim.email.partition("\n")
        if owner.lower() != email.lower():
            return None
        return decode(encoded, offer(self.config, self.digest(digest_id)))

    def confirmation(
        self, digest_id: str, token: str, confirm: bool = False, choice_token: str = ""
    ) -> Confirmation | None:
        """What a confirmation link finds (None: forged, expired, or nobody signed up); with
        `confirm` (the button), a pending sign-up is confirmed unless the address left after
        the link was sent."""
        claim = self.check_confirm(digest_id, token)
        if claim is None:
            return None
        found = self.storage.subscriber(claim.digest_id, claim.email)
        if found is None:
            return None
        state = _standing(found, claim.issued_at)
        if state is ConfirmState.ASK and confirm:
            if self.storage.confirm_subscriber(claim.digest_id, claim.email):
                # what they ticked when they signed up; else the whole digest, whatever an
                # earlier subscription of the address had chosen
                choice = self.carried_choice(claim.digest_id, found.email, choice_token)
                self.storage.choose(claim.digest_id, found.email, choice or Choice())
                return Confirmation(found.email, ConfirmState.SUBSCRIBED)
            # it changed meanwhile (only from pending): say what it is now
            found = self.storage.subscriber(claim.digest_id, claim.email)
            if found is None:
                return None
            state = _standing(found, claim.issued_at)
        return Confirmation(found.email, state)

    def check(self, digest_id: str, token: str) -> Claim | None:
        """Whose unsubscribe link this is, if it is genuine."""
        claim = self.signer.verify(UNSUBSCRIBE, token)
        return claim if claim is not None and claim.digest_id == digest_id else None

    def choose_link(self, digest_id: str, email: str) -> str:
        """The address's own page to choose what they get (as every copy links to it)."""
        return choose_url(self.base, digest_id, self.signer.sign(UNSUBSCRIBE, digest_id, email))

    def chosen(self, digest_id: str, token: str) -> tuple[Claim, Choice | None] | None:
        """Whose link to choose what they get this is (the unsubscribe token of any copy), with
        what they chose so far; None for a link that is not genuine."""
        claim = self.check(digest_id, token)
        if claim is None:
            return None
        return claim, self.storage.choice(claim.digest_id, claim.email)

    def choose(
        self, digest_id: str, token: str, form: Mapping[str, Sequence[str]]
    ) -> tuple[Claim, Choice] | None:
        """Keep what the form chose (BadRequestError for a choice of nothing); None for a link
        that is not genuine. Takes effect from the next copy sent."""
        claim = self.check(digest_id, token)
        if claim is None:
            return None
        choice = read_form(form, offer(self.config, self.digest(digest_id)))
        self.storage.choose(claim.digest_id, claim.email, choice)
        return claim, choice

    def unsubscribe(self, digest_id: str, token: str) -> Claim | None:
        claim = self.check(digest_id, token)
        if claim is not None:
            self.storage.suppress(claim.digest_id, claim.email)
        return claim


def _standing(subscriber: Subscriber, issued_at: datetime | None) -> ConfirmState:
    """A link signed no later than the address left (links carry whole seconds: a tie counts as
    earlier) belongs to the sign-up that was left, and confirms nothing."""
    if subscriber.status is SubscriberStatus.CONFIRMED:
        return ConfirmState.SUBSCRIBED
    left = subscriber.unsubscribed_at
    if subscriber.status is SubscriberStatus.UNSUBSCRIBED or (
        left is not None and (issued_at is None or issued_at <= left)
    ):
        return ConfirmState.LEFT
    return ConfirmState.ASK
