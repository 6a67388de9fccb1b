"""Republishing: feeds (Atom, RSS, JSON Feed), pages, OPML and static export of stored items."""
