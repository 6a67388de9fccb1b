"""Sending digests exactly once: claim the period, render once, deliver to each recipient once.

- A period is claimed in the database with a lease (`digest_runs`, unique per digest and period
  start), so of several workers one sends it and the others skip it.
- Each copy is recorded sent, in its own transaction, as the first thing after the server's
  "250 OK", so a run cut off mid-send (a crash, SIGKILL) resumes with only the recipients not yet
  recorded. The window between that 250 and the commit cannot be closed (a crash there cannot be
  told from one just before the server took the copy, and a copy must never be skipped): a copy
  in flight at the cut, at most one per connection, goes again, with the same Message-ID,
  derived from digest, period and recipient, so mail clients that hold the first show one.
- A permanent refusal (5xx) is recorded against the recipient and not tried again. A temporary one
  (4xx, a dropped connection), after the mailer's retries, leaves the run open: the next tick
  resumes it for those recipients only, so nobody is silently skipped.
- Unsubscribed addresses are left out, YAML recipients included; an empty period is recorded
  as done without mail unless `skip_empty: false`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from aggregator.config import Config, Digest
from aggregator.config.schema import recipient_parts
from aggregator.digest.choosing import current, offer
from aggregator.digest.compose import DigestView, compose, narrowed
from aggregator.digest.message import Batch, Envelope, message_id_for
from aggregator.digest.periods import Period, due, edition_schedule, editions, run_key
from aggregator.digest.render import Rendered, render_digest
from aggregator.digest.send import Mailer
from aggregator.poll import is_dead
from aggregator.storage import Storage, utcnow
from aggregator.tokens import UNSUBSCRIBE, Signer, load_secret
from aggregator.types import WEEKLY, Choice, DeliveryStatus, SubscriberStatus

log = logging.getLogger("aggregator.digest")

LEASE = timedelta(minutes=5)  # renewed every third of it while a run sends
GIVE_UP = timedelta(days=1)  # a copy refused "for now" for longer is refused for good
RENDERINGS_KEPT = 64  # distinct copies of one run kept rendered at once
# how far back a recipient's copy may reach to where their last one ended (after switching
# between a digest and its weekly edition): a week and a day
LOOKBACK = timedelta(days=8)


@dataclass(frozen=True)
class RunReport:
    digest_id: str
    period: Period
    stories: int
    recipients: int
    sent: int = 0
    failed: int = 0  # refused for good
    pending: int = 0  # refused for now: the run stays open
    nothing: int = 0  # recipients whose choices left nothing new: no copy
    empty: bool = False


def envelope_for(config: Config, digest: Digest) -> Envelope | None:
    """Who a digest comes from; None when neither it nor `smtp` names a sender."""
    sender = digest.sender or config.smtp.sender
    if sender is None:
        return None
    return Envelope(sender, config.publishing.title, digest.id, digest.title, digest.reply_to)


def unsubscribe_url(base: str, digest_id: str, token: str) -> str:
    return f"{base}digests/{digest_id}/unsubscribe?token={token}"


def choose_url(base: str, digest_id: str, token: str) -> str:
    """The recipient's page to choose what they get (the unsubscribe token stands for them)."""
    return f"{base}digests/{digest_id}/choose?token={token}"


def choice_text(config: Config, choice: Choice | None) -> str:
    """A recipient's choice in words, for the foot of their copy: '' for the whole digest."""
    if choice is None:
        return ""
    parts = []
    if choice.sections is not None:
        titles = {s.id: s.title for s in config.sections}
        named = [titles.get(s, s) for s in choice.sections]
        parts.append(", ".join(named) if named else "no section")
    if choice.topics:
        titles = {t.id: t.title for t in config.topics}
        parts.append("only stories on " + ", ".join(titles.get(t, t) for t in choice.topics))
    if choice.frequency == WEEKLY:
        parts.append("once a week")
    return "; ".join(parts)


Copy = tuple[Rendered, Batch, int]  # a rendering, its batch (one per subject), its stories


class _Copies:
    """The renderings of one run, one per distinct (web subscriber or not, choice, start), made
    when a lane first needs one: most recipients share the digest as composed. Each is made
    under its own lock (lanes needing others go on), and only the last RENDERINGS_KEPT are
    kept, so thousands of distinct choices cost time, not memory. Links are filled in through
    placeholders drawn afresh for the run: no feed text can hold them."""

    def __init__(self, dispatcher: Dispatcher, digest: Digest, view: DigestView) -> None:
        self._dispatcher = dispatcher
        self._digest = digest
        self._view = view
        self._lock = threading.Lock()
        self._keys: dict[object, threading.Lock] = {}
        self._made: OrderedDict[object, Copy] = OrderedDict()
        self._offer = offer(dispatcher.config, digest)
        token = secrets.token_hex(12)
        self._marks = (f"https://unsubscribe.invalid/{token}", f"https://choose.invalid/{token}")

    def get(self, subscribed: bool, choice: Choice | None, start: datetime | None = None) -> Copy:
        choice = current(choice, self._offer)  # ids the digest still offers
        if choice is not None and not choice.narrows and choice.frequency is None:
            choice = None  # the whole digest, like everyone who chose nothing
        start = start if start is not None and start != self._view.period.start else None
        key = (subscribed, choice, start)
        with self._lock:
            found = self._made.get(key)
            if found is not None:
                self._made.move_to_end(key)
                return found
            lock = self._keys.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                found = self._made.get(key)
            if found is None:
                found = self._render(subscribed, choice, start)
            with self._lock:
                self._made[key] = found
                self._made.move_to_end(key)
                while len(self._made) > RENDERINGS_KEPT:
                    self._made.popitem(last=False)
                self._keys.pop(key, None)
            return found

    def _render(self, subscribed: bool, choice: Choice | None, start: datetime | None) -> Copy:
        config = self._dispatcher.config
        view = narrowed(self._view, choice, start)
        unsubscribe, choose = self._marks
        rendered = render_digest(
            view,
            reason(self._digest, subscribed, view.base),
            config.publishing.templates,
            unsubscribe_url=unsubscribe,
            choice_text=choice_text(config, choice),
            choose_url=choose,
        )
        envelope = self._dispatcher.envelope(self._digest)
        assert envelope is not None
        return rendered, Batch(envelope, rendered.subject, self._dispatcher.clock()), view.count


def reason(digest: Digest, subscribed: bool, base: str) -> str:
    if subscribed:
        return f"you subscribed to {digest.title} at {base}"
    return f"your address is on the list of recipients of {digest.title}"


class Dispatcher:
    def __init__(
        self,
        storage: Storage,
        config: Config,
        signer: Signer,
        mailer: Callable[[], Mailer],
        owner: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.storage = storage
        self.config = config
        self.signer = signer
        self.mailer = mailer
        self.owner = owner
        self.clock = clock

    def envelope(self, digest: Digest) -> Envelope | None:
        return envelope_for(self.config, digest)

    def recipients(self, digest: Digest, edition: str | None = None) -> list[tuple[str, bool]]:
        """(address, signed up on the web) for everyone who should get it, each once: of the
        weekly edition (`edition` WEEKLY) those who chose it, of the digest everyone else."""
        everyone = self._everyone(digest)
        if digest.weekly is None:
            return [] if edition is not None else everyone
        weekly = {
            address
            for address, choice in self.storage.choices(digest.id).items()
            if choice.frequency == WEEKLY
        }
        return [r for r in everyone if (r[0].lower() in weekly) == (edition == WEEKLY)]

    def _everyone(self, digest: Digest) -> list[tuple[str, bool]]:
        gone = {  # unsubscribed, or signed up again but not yet confirmed by the owner
            s.email.lower()
            for s in self.storage.subscribers(digest.id)
            if s.status is SubscriberStatus.UNSUBSCRIBED
            or (s.status is SubscriberStatus.PENDING and s.unsubscribed_at is not None)
        }
        found: dict[str, tuple[str, bool]] = {}
        for written in digest.recipients:
            address = recipient_parts(written)[1]
            found.setdefault(address.lower(), (address, False))
        for subscriber in self.storage.subscribers(digest.id, SubscriberStatus.CONFIRMED):
            found.setdefault(subscriber.email.lower(), (subscriber.email, True))
        return [entry for key, entry in found.items() if key not in gone]

    def run_due(self, on_error: Callable[[Digest], None] | None = None) -> list[RunReport]:
        """Every digest whose period is due (or was cut off): the scheduler's tick; a digest
        whose run fails is logged and told to `on_error` (metrics), and the others go on."""
        reports = []
        for digest in self.config.digests:
            for edition in editions(digest):
                try:
                    report = self.run(digest, edition=edition)
                except Exception:
                    log.exception(
                        "digest %s: the run failed; it is taken up again next time",
                        run_key(digest, edition),
                    )
                    if on_error is not None:
                        on_error(digest)
                    continue
                if report is not None:
                    reports.append(report)
        return reports

    def run(
        self, digest: Digest, period: Period | None = None, edition: str | None = None
    ) -> RunReport | None:
        """Send one period of a digest (the due one by default), or of its weekly edition
        (`edition` WEEKLY: its own schedule, runs and recipients); None when nothing is due or
        another worker holds it."""
        envelope = self.envelope(digest)
        if envelope is None:
            log.error("digest %s: no sender; set `from` on it or `smtp.from`", digest.id)
            return None
        key = run_key(digest, edition)
        if period is None:
            runs = self.storage.digest_runs(key, limit=1)
            timed = edition_schedule(digest, edition)
            period = due(timed, self.clock(), runs[0] if runs else None)
            if period is None:
                return None
        run = self.storage.claim_digest_run(key, period.start, period.end, self.owner, LEASE)
        if run is None:  # held by another worker: taken over only if it died on this host
            held = next(
                (r for r in self.storage.digest_runs(key, 3) if r.period_start == period.start),
                None,
            )
            if held is None or held.claimed_by is None or not is_dead(held.claimed_by):
                return None
            log.warning("digest %s: taking over from %s, which died", key, held.claimed_by)
            period = replace(period, resumed=True)
            run = self.storage.claim_digest_run(
                key, period.start, period.end, self.owner, LEASE, dead=held.claimed_by
            )
            if run is None:
                return None
        recipients = self.recipients(digest, edition)
        if edition is not None and not recipients:  # nobody chose the weekly edition (yet)
            self.storage.finish_digest_run(run.id)
            return RunReport(key, period, 0, 0, empty=True)
        starts = self._starts(digest, edition, period, recipients)
        earliest = min(starts.values(), default=period.start)
        view = compose(self.storage, self.config, digest, period, earliest)
        if view.count == 0 and digest.skip_empty and earliest >= period.start:
            self.storage.finish_digest_run(run.id)
            log.info("digest %s: nothing new from %s to %s", key, period.start, period.end)
            return RunReport(key, period, 0, len(recipients), empty=True)
        if self.clock() - run.created_at > GIVE_UP:
            self._give_up(run.id)
        if period.resumed:
            log.warning(
                "digest %s: resuming a run that was cut off; a copy in flight at the cut goes "
                "again with the same Message-ID, so mail clients show it once",
                digest.id,
            )
        report = self._deliver(digest, envelope, view, run.id, recipients, edition, starts)
        if report.pending == 0:
            self.storage.finish_digest_run(run.id)
        log.info(
            "digest %s: %d stories; %d sent, %d refused, %d to retry (%s to %s)",
            key,
            view.count,
            report.sent,
            report.failed,
            report.pending,
            period.start,
            period.end,
        )
        return report

    def send_test(self, digest: Digest, view: DigestView, address: str) -> bool:
        """One copy to one address, recording nothing (an editor checking how it looks)."""
        envelope = self.envelope(digest)
        if envelope is None:
            log.error("digest %s: no sender; set `from` on it or `smtp.from`", digest.id)
            return False
        token = self.signer.sign(UNSUBSCRIBE, digest.id, address)
        url = unsubscribe_url(view.base, digest.id, token)
        rendered = render_digest(
            view, f"you asked for a test copy of {digest.title}", self.config.publishing.templates
        )
        batch = Batch(envelope, rendered.subject, self.clock())
        with self.mailer() as mailer:
            eight_bit = mailer.eight_bit
            try:
                data, _ = batch.message(
                    rendered,
                    address,
                    url,
                    eight_bit,
                    choose_url=choose_url(view.base, digest.id, token),
                )
            except (ValueError, UnicodeError) as exc:
                log.error("digest %s: %s cannot be written: %s", digest.id, address, exc)
                return False
            outcome = mailer.send(data, envelope.sender, address, eight_bit)
        if not outcome.sent:
            log.error("digest %s: test copy to %s refused: %s", digest.id, address, outcome.error)
        return outcome.sent

    def _starts(
        self,
        digest: Digest,
        edition: str | None,
        period: Period,
        recipients: Sequence[tuple[str, bool]],
    ) -> dict[str, datetime]:
        """Where each recipient's copy starts, where a digest has a weekly edition to switch
        to and from: where their last copy of either ended (so a switch neither loses the days
        between the two schedules nor sends a week twice), at most LOOKBACK before the period
        ends; the period's start for someone never served. A start at or after the period's
        end means they have had it all already. Empty for a digest without one."""
        if digest.weekly is None:
            return {}
        covered = self.storage.covered_until([run_key(digest, None), run_key(digest, WEEKLY)])
        floor = period.end - LOOKBACK
        starts: dict[str, datetime] = {}
        for address, _ in recipients:
            last = covered.get(address.lower())
            start = period.start if last is None else last
            if last is not None or edition is not None:
                start = max(start, floor)
            starts[address.lower()] = start
        return starts

    def _give_up(self, run_id: int) -> None:
        """A run open for more than GIVE_UP: whoever is still refused "for now" is refused for
        good, so that one unreachable mailbox cannot hold every later period back."""
        with self.storage.delivery_log(run_id) as record:
            for delivery in self.storage.deliveries(run_id):
                if delivery.status is DeliveryStatus.FAILED:
                    record(
                        delivery.recipient,
                        DeliveryStatus.REFUSED,
                        f"still refused after {GIVE_UP}: {delivery.error}",
                    )

    def _deliver(
        self,
        digest: Digest,
        envelope: Envelope,
        view: DigestView,
        run_id: int,
        recipients: Sequence[tuple[str, bool]],
        edition: str | None = None,
        starts: dict[str, datetime] | None = None,
    ) -> RunReport:
        """Send to everyone not yet served, over `smtp.connections` connections at once (the
        server works on one copy while we prepare and record the next)."""
        done = {
            d.recipient
            for d in self.storage.deliveries(run_id)
            if d.status in (DeliveryStatus.SENT, DeliveryStatus.REFUSED, DeliveryStatus.NOTHING)
        }
        todo = [(address, sub) for address, sub in recipients if address not in done]
        copies = _Copies(self, digest, view)
        chosen = self.storage.choices(digest.id) if todo else {}
        state = _Progress(time.monotonic())
        if todo:
            lanes = max(1, min(self.config.smtp.connections, len(todo)))
            with ThreadPoolExecutor(lanes, thread_name_prefix=f"digest-{digest.id}") as pool:
                work = [
                    pool.submit(
                        self._lane,
                        digest,
                        envelope,
                        view,
                        run_id,
                        copies,
                        chosen,
                        todo[lane::lanes],
                        state,
                        edition,
                        starts or {},
                    )
                    for lane in range(lanes)
                ]
                for future in work:
                    future.result()
        return RunReport(
            run_key(digest, edition),
            view.period,
            view.count,
            len(recipients),
            state.sent,
            state.failed,
            state.pending,
            state.nothing,
        )

    def _lane(
        self,
        digest: Digest,
        envelope: Envelope,
        view: DigestView,
        run_id: int,
        copies: _Copies,
        chosen: dict[str, Choice],
        share: Sequence[tuple[str, bool]],
        state: _Progress,
        edition: str | None = None,
        starts: dict[str, datetime] | None = None,
    ) -> None:
        names = {  # the names editors gave recipients, for the To header
            address.lower(): name
            for name, address in map(recipient_parts, digest.recipients)
            if name
        }
        with self.mailer() as mailer, self.storage.delivery_log(run_id) as record:
            eight_bit = mailer.eight_bit
            for address, subscribed in share:
                if state.stopped:
                    state.count("pending")
                    continue
                start = (starts or {}).get(address.lower())
                if start is not None and start >= view.period.end:
                    record(address, DeliveryStatus.NOTHING, "had it all in the other edition")
                    state.count("nothing")
                    continue
                rendered, batch, count = copies.get(subscribed, chosen.get(address.lower()), start)
                if count == 0 and digest.skip_empty:
                    record(address, DeliveryStatus.NOTHING, "nothing new in what they chose")
                    state.count("nothing")
                    continue
                token = self.signer.sign(UNSUBSCRIBE, digest.id, address)
                url = unsubscribe_url(view.base, digest.id, token)
                message_id = message_id_for(envelope, view.period.start, address, edition)
                try:
                    data, _ = batch.message(
                        rendered,
                        address,
                        url,
                        eight_bit,
                        message_id,
                        name=names.get(address.lower(), ""),
                        choose_url=choose_url(view.base, digest.id, token),
                    )
                except (ValueError, UnicodeError) as exc:  # an address no header can carry
                    log.warning("digest %s: %s cannot be written: %s", digest.id, address, exc)
                    record(address, DeliveryStatus.REFUSED, f"cannot be written: {exc}")
                    state.count("failed")
                    continue
                outcome = mailer.send(data, envelope.sender, address, eight_bit)
                if outcome.sent:  # first thing after the 250: the window a kill can double
                    record(address, DeliveryStatus.SENT, None, message_id)
                    state.count("sent")
                elif outcome.server_down:  # nobody can be served now: the next tick tries again
                    log.error("digest %s: %s; the run stays open", digest.id, outcome.error)
                    state.count("pending")
                    state.stopped = True
                    continue
                elif outcome.permanent:
                    record(address, DeliveryStatus.REFUSED, outcome.error, message_id)
                    state.count("failed")
                else:
                    log.warning("digest %s: %s refused: %s", digest.id, address, outcome.error)
                    record(address, DeliveryStatus.FAILED, outcome.error, message_id)
                    state.count("pending")
                if state.renew_due(LEASE.total_seconds() / 3) and not (
                    self.storage.claim_digest_run(
                        run_key(digest, edition),
                        view.period.start,
                        view.period.end,
                        self.owner,
                        LEASE,
                    )
                ):
                    log.error("digest %s: lost the claim on its run; stopping", digest.id)
                    state.stopped = True


class _Progress:
    """Counts shared by the sending lanes of one run."""

    def __init__(self, started: float) -> None:
        self._lock = threading.Lock()
        self._renewed = started
        self.sent = self.failed = self.pending = self.nothing = 0
        self.stopped = False

    def count(self, kind: str) -> None:
        with self._lock:
            setattr(self, kind, getattr(self, kind) + 1)

    def renew_due(self, every: float) -> bool:
        """True for one caller once `every` seconds have passed since the last renewal."""
        with self._lock:
            now = time.monotonic()
            if now - self._renewed < every:
                return False
            self._renewed = now
            return True


def secret_file(config: Config) -> Path | None:
    """Where the SQLite default keeps a generated secret: beside the database file."""
    url = config.storage.url
    if not url.startswith("sqlite:///"):
        return None
    database = Path(url.removeprefix("sqlite:///"))
    return database.parent / "secret.key"


def signer_for(config: Config) -> Signer:
    return Signer(load_secret(secret_file(config)))
