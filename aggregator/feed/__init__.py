"""Reading one feed: fetch it (bounded, conditional), decode, parse, normalise and sanitise its
entries, and the politeness policy that says when to come back. `poll` orchestrates these."""
