"""Canonical forms of article URLs, so one story reached by several links is recognised as one."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

_TRACKING_PREFIXES = ("utm_", "mtm_", "pk_", "__hs")
_TRACKING = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gclsrc",
        "msclkid",
        "yclid",
        "twclid",
        "igshid",
        "mc_cid",
        "mc_eid",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "oly_anon_id",
        "oly_enc_id",
        "vero_id",
        "wt_mc",
        "cmpid",
        "ito",
        "at_medium",
        "at_campaign",
        "ncid",
        "sr_share",
        "smid",
        "guccounter",
    }
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


# A web URL that is canonical as written but for a trailing dot of its host and an empty path:
# lowercase scheme and host, no user, port, query or fragment, nothing urlsplit would strip.
_PLAIN_WEB = re.compile(r"(https?)://([a-z0-9][a-z0-9.-]*)(/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*)?")


def canonical_url(url: str | None) -> str | None:
    """The URL with tracking parameters and the fragment removed, scheme and host lowercased.

    Query parameters that carry meaning (`?id=123`) are kept in their order; only known trackers
    go. None or a non-http(s) URL gives None: such links never identify an article.
    """
    if not url:
        return None
    plain = _PLAIN_WEB.fullmatch(url.strip())
    if plain is not None:  # most article links: what the rest gives, a twentieth of the cost
        scheme, host, path = plain.groups()
        return f"{scheme}://{host.rstrip('.')}{path or '/'}"
    return _canonical(url)


def _canonical(url: str) -> str | None:
    """`canonical_url` the whole way (and the reference its shortcut is tested against)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    if port and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    query = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key.lower() not in _TRACKING and not key.lower().startswith(_TRACKING_PREFIXES)
    ]
    return urlunsplit((scheme, host, parts.path or "/", urlencode(query, doseq=True), ""))


# A web origin, and a path (with query and fragment) that urljoin would hand back as written: no
# empty segment, dot segment, parameters or empty query or fragment to normalise, nothing urlsplit
# strips. tests/test_urls.py holds `join` to urljoin.
_ORIGIN = re.compile(r"https?://[^/?#@\[\]\\\s]+(?=[/?#]|$)")
_PLAIN_PATH = re.compile(
    r"(?:/(?!\.)[^/?#;\\\s\x00-\x1f\x7f]+)*/?(?:\?[^#\s\x00-\x1f\x7f]+)?(?:#[^\s\x00-\x1f\x7f]+)?"
)


def join(base: str, url: str) -> str:
    """urljoin(base, url), without its cost for the links feeds are full of: a path from the
    root (`/story/1?x=2`) under a web base, or a full web URL that needs no normalising (a feed
    of 25 items resolves some 300 links, and urljoin was a twentieth of a first poll's time)."""
    if url.startswith("/") and not url.startswith("//"):
        origin = _ORIGIN.match(base)
        if origin is not None and _PLAIN_PATH.fullmatch(url):
            return origin.group() + url
    elif url.startswith(("http://", "https://")):
        origin = _ORIGIN.match(url)
        if origin is not None and _PLAIN_PATH.fullmatch(url, origin.end()):
            return url
    return urljoin(base, url)
