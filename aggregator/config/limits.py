"""The bounds on feeds.yaml, apart from the YAML reader (yamlfile.py), so that a command taking a
kept config (cache.py) does not import ruamel.yaml to learn them."""

from __future__ import annotations

MAX_BYTES = 8 * 1024 * 1024  # about 50,000 sources written out in full
MAX_DEPTH = 64  # the schema needs 5
MAX_ALIAS_VALUES = 250_000  # values that aliases may add, in all, to what the file spells out
TOO_LARGE = f"the file is larger than {MAX_BYTES // (1024 * 1024)} MiB; split it or trim it"
