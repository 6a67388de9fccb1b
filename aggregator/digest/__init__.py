"""E-mail digests: which period is due, what goes in, and how it looks."""
