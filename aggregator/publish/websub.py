"""WebSub publishing: tell the hub when a feed's first page changes, so subscribers get it now.

Workers run this after items change. Which worker pings is settled in the database (the output's
last announced fingerprint is swapped in one statement), so several workers ping once per change,
and a restart does not ping again for what was already announced. A hub that is down is logged
and the change stays unannounced until the next one; subscribers still poll.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from aggregator.feed.fetch import FetchResult
from aggregator.publish.publisher import Publisher
from aggregator.publish.view import Links

log = logging.getLogger("aggregator.websub")

Post = Callable[[str, Mapping[str, str]], FetchResult]


class Announcer:
    def __init__(self, publisher: Publisher, hub: str, post: Post) -> None:
        self._publisher = publisher
        self.hub = hub
        self._post = post
        self._seen_revision = -1

    def run_once(self) -> list[str]:
        """Ping the hub for every feed whose first page changed; the URLs pinged."""
        publisher = self._publisher
        revision = publisher.check()
        if revision == self._seen_revision:
            return []
        pinged = []
        for publication in publisher.catalog:
            first = publisher.feed(publication.kind, publication.id, publication.formats[0])
            if not publisher.storage.announce_output(
                publication.key, first.fingerprint, first.entries
            ):
                continue
            links = Links(publisher.base, publication)
            for fmt in publication.formats:
                url = links.feed(fmt)
                result = self._post(self.hub, {"hub.mode": "publish", "hub.url": url})
                if result.error is not None or not (200 <= (result.status or 0) < 300):
                    log.warning(
                        "WebSub hub %s refused the ping for %s: %s",
                        self.hub,
                        url,
                        result.message or f"HTTP {result.status}",
                    )
                else:
                    pinged.append(url)
        self._seen_revision = revision
        return pinged
