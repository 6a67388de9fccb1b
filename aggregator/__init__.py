"""Feed aggregator: poll feeds, merge them, republish them as feeds, pages and digests."""

__version__ = "0.1.0"
