"""Processing: pure functions between parsing and storage (filter, categorise, fingerprint).

Nothing here touches the network or the database; state (stories, the similarity index's
contents) lives in storage, and these functions decide.
"""
