"""feeds.yaml: the schema editors write and the loader that checks it."""

from aggregator.config.loader import DATABASE_URL_ENV, load_config, load_text
from aggregator.config.schema import (
    Config,
    Dedupe,
    Defaults,
    Digest,
    Filter,
    Output,
    Publishing,
    Section,
    Server,
    Smtp,
    Source,
    Storage,
    Topic,
    format_duration,
    parse_duration,
)

__all__ = [
    "DATABASE_URL_ENV",
    "Config",
    "Dedupe",
    "Defaults",
    "Digest",
    "Filter",
    "Output",
    "Publishing",
    "Section",
    "Server",
    "Smtp",
    "Source",
    "Storage",
    "Topic",
    "format_duration",
    "load_config",
    "load_text",
    "parse_duration",
]
