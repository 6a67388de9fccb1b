"""Prometheus metrics (prometheus_client, the only module importing it): what operators graph
and alert on.

Each process counts what it did itself (a worker its fetches and digests, a web process nothing
but the shared gauges), in a registry of its own rather than the library's global one, so that
several services in one test process never mix their counts. The queue lag is read from the
database at scrape time: it is the same for every process, and any of them can answer it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from aggregator.digest.dispatch import RunReport
from aggregator.poll import PollResult

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# `_created` series would double the page, and no dashboard reads them
disable_created_metrics()  # type: ignore[no-untyped-call]

# Fetch outcomes: one word each, so a dashboard can stack them.
OUTCOMES = (
    "ok",
    "not_modified",
    "http_error",
    "network_error",
    "timeout",
    "too_large",
    "too_many_redirects",
    "invalid_url",
    "parse_error",
    "gone",
    "lost_lease",
    "internal_error",
)
DIGEST_OUTCOMES = ("sent", "empty", "incomplete", "error")
DELIVERY_OUTCOMES = ("sent", "refused", "retry", "nothing")
# Fetches take from a few milliseconds (304 on loopback) to the timeout (30 s by default).
FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def outcome(result: PollResult) -> str:
    """One word for how a fetch went."""
    if result.lost_lease:
        return "lost_lease"
    if result.ok:
        return "not_modified" if result.status == 304 else "ok"
    if result.status == 410:
        return "gone"
    if result.kind in OUTCOMES:
        return result.kind
    return "http_error" if result.status is not None else "network_error"


class _Lag(Collector):
    def __init__(self, read: Callable[[], float | None]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "aggregator_queue_lag_seconds",
            "Now minus the due time of the most overdue source not yet claimed (0 when none is "
            "waiting).",
        )
        try:
            lag = self._read()
        except Exception:  # the database is away: leave the gauge out rather than lie
            return
        if lag is not None:
            family.add_metric([], lag)
            yield family


class Metrics:
    """The counters one process keeps; `render()` is the /metrics body."""

    def __init__(self, queue_lag: Callable[[], float | None] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.fetches = Counter(
            "aggregator_fetches", "Source fetches, by outcome.", ["outcome"], registry=r
        )
        self.fetch_seconds = Histogram(
            "aggregator_fetch_duration_seconds",
            "Time from request to the last byte of a source's response (or its failure).",
            buckets=FETCH_BUCKETS,
            registry=r,
        )
        self.items = Counter("aggregator_items_ingested", "New items stored.", registry=r)
        self.updated = Counter(
            "aggregator_items_updated", "Stored items changed by their publisher.", registry=r
        )
        self.merged = Counter(
            "aggregator_duplicates_merged",
            "New items that joined another item's story (same link or alike text).",
            registry=r,
        )
        self.digests = Counter(
            "aggregator_digest_runs", "Digest periods sent, by outcome.", ["outcome"], registry=r
        )
        self.deliveries = Counter(
            "aggregator_deliveries", "Digest copies, by outcome.", ["outcome"], registry=r
        )
        for name in OUTCOMES:  # every series exists from the start, so rate() sees the first one
            self.fetches.labels(name)
        for name in DIGEST_OUTCOMES:
            self.digests.labels(name)
        for name in DELIVERY_OUTCOMES:
            self.deliveries.labels(name)
        if queue_lag is not None:
            r.register(_Lag(queue_lag))

    def fetched(self, result: PollResult) -> None:
        self.fetches.labels(outcome(result)).inc()
        self.fetch_seconds.observe(result.seconds)
        if not result.lost_lease:
            self.items.inc(result.new)
            self.updated.inc(result.updated)
            self.merged.inc(result.merged)

    def digest_run(self, report: RunReport) -> None:
        if report.empty:
            kind = "empty"
        elif report.pending:
            kind = "incomplete"
        else:
            kind = "sent"
        self.digests.labels(kind).inc()
        self.deliveries.labels("sent").inc(report.sent)
        self.deliveries.labels("refused").inc(report.failed)
        self.deliveries.labels("retry").inc(report.pending)
        self.deliveries.labels("nothing").inc(report.nothing)  # their choice left nothing new

    def digest_failed(self) -> None:
        self.digests.labels("error").inc()

    def render(self) -> bytes:
        body: bytes = generate_latest(self.registry)
        return body
