"""The HTTP app: feeds, pages and OPML (Starlette, served by uvicorn; the only module importing
either).

Requests are answered from the publisher's cache without touching the database: a background
task reads the revision counter once a second, and a document is rebuilt (in a worker thread)
only when that moved and the document's entries changed. Conditional requests follow RFC 9110:
`If-None-Match` (weak comparison, `*` too) wins over `If-Modified-Since`; gzip is a separate
representation with its own strong ETag, and a tag matches only the representation it names.
Bad input is a 400 and unknown addresses a 404, each a small HTML page; only a real fault is a
500 (or 503 while the database is away).

What a client can make the process do is bounded: a request body is read up to FORM_BYTES (none
where none is taken) and refused with 413 past it, before the rest is read (`BodyLimit`, the one
middleware of every app); a request line and headers up to HEAD_BYTES, else 431
(`BoundedHttpTools`); and archive pages (`?before=`, any cursor a new document) are made
ARCHIVE_RENDERS at a time with ARCHIVE_WAITING in line, the rest answered 503 (`Gate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gzip
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aggregator.config import Digest
from aggregator.digest.choosing import Shown, offer, read_form, shown
from aggregator.digest.dispatch import choice_text
from aggregator.digest.subscriptions import Subscriptions
from aggregator.exceptions import (
    BadRequestError,
    ListenError,
    NotPublishedError,
    SearchRefusedError,
    StorageError,
)
from aggregator.metrics import CONTENT_TYPE as METRICS_TYPE
from aggregator.metrics import Metrics
from aggregator.publish import pages
from aggregator.publish import search as searching
from aggregator.publish.catalog import MEDIA_TYPES, Kind
from aggregator.publish.publisher import HTML, Document, Publisher
from aggregator.status import StatusAccess, StatusBoard
from aggregator.types import Choice, SubscriberStatus

log = logging.getLogger("aggregator.web")

FORMATS = tuple(MEDIA_TYPES)
KINDS = {kind.value for kind in Kind}
FORM_BYTES = 16 * 1024  # largest request body read (a sign-up or one-click unsubscribe form)
HEAD_BYTES = 64 * 1024  # largest request line and headers read, all told
ARCHIVE_RENDERS = 2  # archive pages (`?before=`) made at once when not cached
ARCHIVE_WAITING = 32  # archive pages waiting for a turn; past that, 503 with Retry-After
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # every other method takes no body


class BodyLimit:
    """ASGI middleware: no request body is read past its limit (FORM_BYTES for methods that
    carry a form, 0 for the rest), so a client cannot make the process hold what it sends.

    A declared Content-Length past the limit is answered 413 before any of the body is read; a
    chunked body is counted as it arrives and cut off with 413 as soon as it passes. A body within
    the limit is read whole here, before the app runs, and handed on; a 413 closes the connection,
    so the rest of the body is never read.
    """

    def __init__(self, app: ASGIApp, page: Callable[[int, str, str], bytes] | None = None) -> None:
        self.app = app
        self.page = page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = FORM_BYTES if scope["method"] in _BODY_METHODS else 0
        declared, chunked = _framing(scope["headers"])
        if declared is None and not chunked:  # no body at all (RFC 9112 6.3)
            await self.app(scope, receive, send)
            return
        if (limit == 0) if declared is None else (declared > limit):  # refused unread
            await self._refuse(send, limit)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > limit:
                await self._refuse(send, limit)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _refuse(self, send: Send, limit: int) -> None:
        message = f"This address takes a request body of at most {limit:,} bytes."
        if self.page is not None:
            body, media = self.page(413, "Request too large", message), HTML
        else:
            body, media = (message + "\n").encode(), "text/plain; charset=utf-8"
        headers = [
            (b"content-type", media.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"date", _http_date()[1].encode()),
            (b"cache-control", b"no-store"),
            (b"connection", b"close"),  # the unread rest of the body must not be read
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """The declared Content-Length (an unreadable one counts as too long; uvicorn's parser lets
    none through anyway) and whether the body is sent chunked, its length unknown."""
    declared: int | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            declared = int(value) if value.strip().isdigit() else FORM_BYTES + 1
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read, then whatever the client does next."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on a request's line and headers: httptools
    keeps a header being received in memory with no limit (uvicorn's `h11_max_incomplete_event_
    size` bounds only its h11 protocol, slower). Counted per socket read, so a head is refused
    with 431 once more than HEAD_BYTES arrived without its end (held: at most one read past it)."""

    _head_bytes = 0
    _in_head = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > HEAD_BYTES:
                self._refuse_head()

    def _refuse_head(self) -> None:
        self._in_head = False
        message = f"Request line and headers may take at most {HEAD_BYTES:,} bytes.\n".encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(message)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + message
        )
        self.transport.close()


class Gate:
    """At most `running` holders at once and `waiting` more in line: `enter()` gives False when
    the line is full (the caller answers 503), so slow work asked for by clients cannot pile up."""

    def __init__(self, running: int, waiting: int) -> None:
        self._slots = asyncio.Semaphore(running)
        self._waiting = 0
        self._max_waiting = waiting

    @contextlib.asynccontextmanager
    async def enter(self) -> AsyncIterator[bool]:
        if self._waiting >= self._max_waiting:
            yield False
            return
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield True
        finally:
            self._slots.release()


def _accepts_gzip(request: Request) -> bool:
    for part in request.headers.get("accept-encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            quality = params.strip().lower()
            return not (quality.startswith("q=") and _q(quality[2:]) == 0.0)
    return False


def _q(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 1.0


def _etags(header: str) -> list[str]:
    tags = []
    for part in header.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag:
            tags.append(tag)
    return tags


def _not_modified(request: Request, document: Document, etag: str) -> bool:
    """`etag` is the tag of the representation this request would get (RFC 9110 13.1.2)."""
    match = request.headers.get("if-none-match")
    if match is not None:
        tags = _etags(match)
        return "*" in tags or etag in tags
    since = request.headers.get("if-modified-since")
    if since and document.last_modified is not None:
        try:
            moment = parsedate_to_datetime(since)
        except (TypeError, ValueError, IndexError):
            return False
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return document.last_modified.replace(microsecond=0) <= moment
    return False


_DATE: list[Any] = [0, ""]  # the current second and its HTTP date, made once a second


def _http_date() -> tuple[int, str]:
    now = int(time.time())
    if _DATE[0] != now:
        _DATE[:] = [now, formatdate(now, usegmt=True)]
    return now, _DATE[1]


def _uncached(body: bytes, status: int, headers: dict[str, str] | None = None) -> Response:
    """An HTML page nobody should cache: errors, sign-up and unsubscribe outcomes."""
    headers = {"Date": _http_date()[1], "Cache-Control": "no-store", **(headers or {})}
    return Response(body, status_code=status, media_type=HTML, headers=headers)


def respond(request: Request, document: Document, max_age: int) -> Response:
    gz = _accepts_gzip(request)
    etag = document.gzip_etag if gz else document.etag
    now, date = _http_date()
    headers = {
        "Date": date,
        "ETag": etag,
        "Cache-Control": f"public, max-age={max_age}",
        "Vary": "Accept-Encoding",
    }
    if document.last_modified is not None:  # never later than Date (RFC 9110 8.8.2.1)
        late = document.last_modified.timestamp() > now
        headers["Last-Modified"] = date if late else document.http_last_modified
    if _not_modified(request, document, etag):
        return Response(status_code=304, headers=headers)
    if gz:
        headers["Content-Encoding"] = "gzip"
        return Response(document.gzipped, headers=headers, media_type=document.media_type)
    return Response(document.body, headers=headers, media_type=document.media_type)


def create_app(
    publisher: Publisher,
    *,
    refresh: float = 1.0,
    subscriptions: Subscriptions | None = None,
    scheduler_running: Callable[[], bool] | None = None,
    metrics: Metrics | None = None,
    status: StatusBoard | None = None,
    access: StatusAccess | None = None,
) -> Starlette:
    """The app for one publisher; `refresh` is how often the revision counter is read;
    `subscriptions` answers the digest sign-up and unsubscribe pages (404 without it);
    `status` the editors' page and `metrics` /metrics, both behind `access`."""
    publisher.signups = subscriptions is not None
    publisher.searchable = True
    access = access or StatusAccess()

    def page(
        status: int, heading: str, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        return _uncached(publisher.error(status, heading, message), status, headers)

    archive = Gate(ARCHIVE_RENDERS, ARCHIVE_WAITING)

    async def make(request: Request, build: Callable[[], Document]) -> Document | Response:
        try:
            return await run_in_threadpool(build)
        except NotPublishedError as exc:
            return page(404, "Not found", f"{exc}.")
        except BadRequestError as exc:
            return page(400, "Bad request", f"{exc}.")
        except StorageError:
            log.exception("cannot read the database for %s", request.url.path)
            return page(
                503, "Temporarily unavailable", "The database cannot be read; try again soon."
            )

    async def make_archive(request: Request, build: Callable[[], Document]) -> Document | Response:
        """An archive page: any cursor is a new document, so few are made at once."""
        async with archive.enter() as admitted:
            if admitted:
                return await make(request, build)
        return page(
            503,
            "Busy",
            "Too many archive pages are being made at once; try again in a moment.",
            {"Retry-After": "2"},
        )

    async def serve(
        request: Request,
        key: tuple[str, ...],
        build: Callable[[], Document],
        max_age: int | None = None,
    ) -> Response:
        document = publisher.cached(*key)
        if document is None:
            archived = len(key) == 3 and bool(key[2])
            made = await (make_archive if archived else make)(request, build)
            if isinstance(made, Response):
                return made
            document = made
        if max_age is None:
            max_age = int(publisher.config.publishing.cache_max_age.total_seconds())  # reloadable
        return respond(request, document, max_age)

    async def index(request: Request) -> Response:
        return await serve(request, ("index",), publisher.index)

    async def opml(request: Request) -> Response:
        return await serve(request, ("opml",), publisher.opml)

    async def published(request: Request) -> Response:
        kind = request.path_params["kind"]
        name: str = request.path_params["name"]
        if kind not in KINDS:
            return page(404, "Not found", f"nothing is published at {request.url.path}.")
        before = request.query_params.get("before") or None
        stem, dot, fmt = name.rpartition(".")
        if dot and fmt in FORMATS:
            return await serve(
                request,
                (f"{kind}/{stem}", fmt, before or ""),
                lambda: publisher.feed(kind, stem, fmt, before),
            )
        if dot and fmt == "html":
            name = stem
        elif dot:
            return page(
                404,
                "Not found",
                f"{fmt!r} is not a format published here; use .atom, .rss or .json.",
            )
        return await serve(
            request,
            (f"{kind}/{name}", "html", before or ""),
            lambda: publisher.page(kind, name, before),
        )

    async def search(request: Request) -> Response:
        fmt = request.path_params.get("fmt", "html")
        if fmt != "html" and fmt not in searching.FORMATS:
            return page(404, "Not found", "search results are published as .atom, .rss or .json.")
        text = request.query_params.get("q", "")
        number = request.query_params.get("page")
        section = request.query_params.get("section") or None
        topic = request.query_params.get("topic") or None
        if not text.strip() and fmt == "html":
            return _uncached(publisher.search_form(), 200)
        refused: list[str] = []
        try:
            asked = searching.asked(publisher.catalog, text, number, section, topic)
        except SearchRefusedError as exc:
            refused.append(str(exc))
        if refused:
            if fmt == "html":
                return _uncached(publisher.search_form(text, refused[0]), 400)
            return page(400, "Bad request", f"This search cannot be run: {refused[0]}.")

        def build() -> Document:
            try:
                return publisher.search(asked, fmt)
            except SearchRefusedError as exc:  # the database's deadline passed
                refused.append(str(exc))
                raise

        max_age = int(searching.CACHE_FOR.total_seconds())
        answer = await serve(request, asked.key(fmt), build, max_age)
        if refused and fmt == "html":
            return _uncached(publisher.search_form(text, refused[0]), answer.status_code)
        return answer

    def notice(
        status: int,
        heading: str,
        message: str,
        form: str = "",
        action: str = "",
        offered: Shown | None = None,
    ) -> Response:
        body = pages.notice(
            heading,
            message,
            publisher.base,
            publisher.site_title,
            form,
            action,
            publisher.templates,
            offered,
        )
        return _uncached(body.encode(), status)

    async def digest_page(request: Request) -> Response:
        digest_id: str = request.path_params["digest"]
        action: str = request.path_params["action"]
        if subscriptions is None or action not in ("subscribe", "confirm", "unsubscribe", "choose"):
            return page(404, "Not found", f"nothing is published at {request.url.path}.")
        try:
            digest = subscriptions.digest(digest_id)
        except NotPublishedError as exc:
            return page(404, "Not found", f"{exc}.")
        here = f"{publisher.base}digests/{digest.id}/{action}"
        token = request.query_params.get("token", "")
        if action == "subscribe":
            if request.method in ("GET", "HEAD"):
                return notice(
                    200,
                    f"Subscribe to {digest.title}",
                    f"{digest.title} comes {publisher.digest_schedule(digest.id)}, with "
                    f"{publisher.digest_holds(digest.id)}. Get it by e-mail: enter your address.",
                    "subscribe",
                    here,
                    offered_to(digest, None),
                )
            try:
                form = parse_qs((await request.body())[:16384].decode("utf-8", "replace"))
            except ClientDisconnect:
                return Response(status_code=400)
            address = (form.get("email") or [""])[0]
            try:
                choice = read_form(form, offer(publisher.config, digest))
                email = await run_in_threadpool(subscriptions.sign_up, digest.id, address, choice)
            except BadRequestError as exc:
                return notice(
                    400,
                    f"Subscribe to {digest.title}",
                    f"{exc}.",
                    "subscribe",
                    here,
                    offered_to(digest, None),
                )
            return notice(
                200,
                "Check your inbox",
                f"We sent a link to {email}; follow it to start receiving {digest.title}. "
                "Nothing there? Look in your spam folder; a new link can be sent once an hour.",
            )
        asking = request.method in ("GET", "HEAD")  # links are followed by scanners too
        again = f"{here}?{urlencode({'token': token})}"
        if action == "confirm":  # GET and HEAD ask; the button (POST) confirms
            signup = f"{publisher.base}digests/{digest.id}/subscribe"
            carried = request.query_params.get("choice", "")  # what the sign-up form ticked
            if carried:
                again += "&" + urlencode({"choice": carried})
            found = await run_in_threadpool(
                subscriptions.confirmation, digest.id, token, not asking, carried
            )
            if found is None:
                return notice(
                    400,
                    "This link does not work",
                    "It is not valid or has expired. Subscribe again to get a new one.",
                    "subscribe",
                    signup,
                )
            if found.left:  # an old link must not sign them up again, nor say it did
                return notice(
                    200 if asking else 409,
                    f"{found.email} is unsubscribed",
                    f"{found.email} left {digest.title} after this link was sent, so it no "
                    "longer confirms anything and nothing will be sent. To get "
                    f"{digest.title} again, sign up here; we will send a new link.",
                    "subscribe",
                    signup,
                )
            if found.asks:
                ticked = subscriptions.carried_choice(digest.id, found.email, carried)
                return notice(
                    200,
                    f"Confirm your subscription to {digest.title}",
                    will_get(found.email, digest, ticked),
                    "confirm",
                    again,
                )
            chosen = await run_in_threadpool(subscriptions.storage.choice, digest.id, found.email)
            return notice(
                200,
                "You are subscribed",
                will_get(found.email, digest, chosen),
                "choose",
                subscriptions.choose_link(digest.id, found.email),
            )
        if action == "choose":  # GET shows the choices, POST (the Save button) keeps them
            return await choose_page(request, digest, token, again, asking)
        # unsubscribe: GET asks (mail scanners follow links), POST does it (RFC 8058 one-click)
        check = subscriptions.check if asking else subscriptions.unsubscribe
        claim = await run_in_threadpool(check, digest.id, token)
        if claim is None:
            return notice(400, "This link does not work", "It is not a valid unsubscribe link.")
        if asking:
            return notice(
                200,
                f"Unsubscribe from {digest.title}?",
                f"{claim.email} will not get {digest.title} again.",
                "unsubscribe",
                again,
            )
        return notice(
            200, "You are unsubscribed", f"{claim.email} will not get {digest.title} again."
        )

    def will_get(email: str, digest: Digest, choice: Choice | None) -> str:
        """`ann@example.org will get Daily: World; only stories on Climate.`"""
        words = choice_text(publisher.config, choice)
        return f"{email} will get {digest.title}" + (f": {words}." if words else ".")

    def offered_to(digest: Digest, choice: Choice | None) -> Shown:
        """The choices a form shows for `digest`, ticked as `choice` says."""
        from aggregator.cronwords import describe  # cron-descriptor: only where a page needs it

        zone = digest.timezone or publisher.config.defaults.timezone
        weekly = describe(digest.weekly, zone) if digest.weekly else ""
        offered = offer(publisher.config, digest)
        return shown(offered, choice, publisher.digest_schedule(digest.id), weekly)

    async def choose_page(
        request: Request, digest: Digest, token: str, here: str, asking: bool
    ) -> Response:
        assert subscriptions is not None
        known = await run_in_threadpool(subscriptions.chosen, digest.id, token)
        if known is None:
            return notice(
                400,
                "This link does not work",
                "It is not a valid link to choose what you get; use the one in your latest copy.",
            )
        claim, choice = known
        standing = await run_in_threadpool(subscriptions.storage.subscriber, digest.id, claim.email)
        if standing is not None and standing.status is SubscriberStatus.UNSUBSCRIBED:
            return notice(  # choosing would change nothing they get: say so, offer to return
                200,
                f"{claim.email} is unsubscribed",
                f"{claim.email} left {digest.title}, so nothing is sent to it. To get "
                f"{digest.title} again, sign up here; we will send a link to confirm.",
                "subscribe",
                f"{publisher.base}digests/{digest.id}/subscribe",
                offered_to(digest, None),
            )
        saved = problem = ""
        status = 200
        if not asking:
            try:
                body = (await request.body())[:16384].decode("utf-8", "replace")
            except ClientDisconnect:
                return Response(status_code=400)
            try:
                made = await run_in_threadpool(
                    subscriptions.choose, digest.id, token, parse_qs(body)
                )
            except BadRequestError as exc:
                problem, status = str(exc), 400
            else:
                if made is not None:
                    choice = made[1]
                    words = choice_text(publisher.config, choice)
                    saved = f"{words}." if words else "the whole digest."
        body_text = pages.choose(
            publisher.templates,
            site_title=publisher.site_title,
            home=publisher.base,
            title=digest.title,
            email=claim.email,
            schedule=publisher.digest_schedule(digest.id),
            holds=publisher.digest_holds(digest.id),
            offer=offered_to(digest, choice),
            action=here,
            unsubscribe=f"{publisher.base}digests/{digest.id}/unsubscribe?"
            + urlencode({"token": token}),
            saved=saved,
            problem=problem,
        )
        return _uncached(body_text.encode(), status)

    async def not_found(request: Request, _exc: Exception) -> Response:
        return page(404, "Not found", f"nothing is published at {request.url.path}.")

    async def refused(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 400)
        if status == 404:
            return await not_found(request, exc)
        headers = dict(getattr(exc, "headers", None) or {})  # `Allow` for a 405
        return page(status, "Not allowed", f"{request.method} is not answered here.", headers)

    async def failed(request: Request, _exc: Exception) -> Response:
        log.exception("error answering %s", request.url.path)
        return page(500, "Something went wrong", "The error was logged; try again later.")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(_watch(publisher, refresh))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def status_page(request: Request) -> Response:
        if status is None:
            return page(404, "Not found", f"nothing is published at {request.url.path}.")
        refused = _refused(request, access)
        if refused is not None:
            return refused
        as_json = request.url.path.endswith(".json")
        try:
            body = await run_in_threadpool(status.json if as_json else status.html)
        except StorageError:
            log.exception("cannot read the database for the status page")
            return page(503, "Temporarily unavailable", "The database cannot be read.")
        media = "application/json" if as_json else HTML
        headers = {**_PRIVATE, "Vary": "Accept-Encoding"}
        if _accepts_gzip(request):  # 2,000 sources make 800 KB of HTML, 60 KB gzipped
            body = await run_in_threadpool(gzip.compress, body, 6)
            headers["Content-Encoding"] = "gzip"
        response = Response(body, media_type=media, headers=headers)
        token = request.query_params.get("token")
        if token and access.token is not None and access.allows(None, token):
            # the links on the page then work without it in the address
            secure = request.url.scheme == "https" or publisher.base.startswith("https:")
            response.set_cookie(
                COOKIE,
                token,
                httponly=True,
                samesite="strict",
                secure=secure,
                path="/",
                max_age=86400,
            )
        return response

    routes = [
        *_ops_routes(publisher.check, scheduler_running, metrics, access),
        Route("/status", status_page),
        Route("/status.json", status_page),
        Route("/", index),
        Route("/opml", opml),
        Route("/opml.xml", opml),
        Route("/search", search),
        Route("/search.{fmt}", search),
        Route("/{kind}/{name}", published),
        Route("/digests/{digest}/{action}", digest_page, methods=["GET", "HEAD", "POST"]),
    ]
    handlers: dict[int | type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
        404: not_found,
        HTTPException: refused,
        Exception: failed,
    }
    return Starlette(
        routes=routes,
        exception_handlers=handlers,
        lifespan=lifespan,
        middleware=[Middleware(BodyLimit, page=publisher.error)],
    )


_PRIVATE = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}
COOKIE = "aggregator_status"


def _refused(request: Request, access: StatusAccess) -> Response | None:
    """A 401 (asking for the password or token) unless the request may see operators' pages."""
    token = request.query_params.get("token") or request.cookies.get(COOKIE)
    if access.allows(request.headers.get("authorization"), token):
        return None
    return Response(
        "This page needs the status token or password.\n",
        status_code=401,
        media_type="text/plain",
        headers={**_PRIVATE, "WWW-Authenticate": access.challenge},
    )


def _ops_routes(
    database_check: Callable[[], object],
    scheduler_running: Callable[[], bool] | None,
    metrics: Metrics | None,
    access: StatusAccess,
) -> list[Route]:
    """/healthz, /readyz and /metrics: what every process answers, web or worker."""

    async def healthz(_request: Request) -> Response:
        """The process answers: for a liveness probe."""
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    async def readyz(_request: Request) -> Response:
        """The database answers (and, in a process that polls, the scheduler runs): for a
        readiness probe, so a load balancer sends no traffic to a replica that cannot serve."""
        checks: dict[str, str] = {}
        try:
            await run_in_threadpool(database_check)
            checks["database"] = "ok"
        except Exception as exc:  # any failure means not ready; say which
            checks["database"] = f"unreachable: {type(exc).__name__}"
        if scheduler_running is not None:
            checks["scheduler"] = "ok" if scheduler_running() else "stopped"
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
            headers={"Cache-Control": "no-store"},
        )

    async def metrics_page(request: Request) -> Response:
        if metrics is None:
            return Response("no metrics here\n", status_code=404, media_type="text/plain")
        refused = _refused(request, access)
        if refused is not None:
            return refused
        body = await run_in_threadpool(metrics.render)  # the queue lag reads the database
        return Response(body, media_type=METRICS_TYPE, headers={"Cache-Control": "no-store"})

    return [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics_page)]


def create_ops_app(
    database_check: Callable[[], object],
    *,
    scheduler_running: Callable[[], bool] | None = None,
    metrics: Metrics | None = None,
    access: StatusAccess | None = None,
) -> Starlette:
    """A worker's small app: probes and metrics, nothing published."""

    async def not_found(request: Request, _exc: Exception) -> Response:
        return Response(
            f"nothing at {request.url.path}\n", status_code=404, media_type="text/plain"
        )

    routes = _ops_routes(database_check, scheduler_running, metrics, access or StatusAccess())
    return Starlette(
        routes=routes, exception_handlers={404: not_found}, middleware=[Middleware(BodyLimit)]
    )


async def _watch(publisher: Publisher, every: float) -> None:
    """Read the revision counter on a timer, so requests never wait for the database."""
    while True:
        try:
            await run_in_threadpool(publisher.check)
        except Exception:
            log.warning("cannot read the revision counter; serving cached documents", exc_info=True)
        await asyncio.sleep(every)


_LISTEN_WORDS = {
    errno.EADDRINUSE: "the port is already in use (another aggregator, or another program); "
    "choose another with --port or `server.port`, or stop what holds it",
    errno.EACCES: "this user may not listen on that port (below 1024 needs privileges); "
    "choose one above 1023 with --port or `server.port`",
    errno.EADDRNOTAVAIL: "this machine has no such address; use 127.0.0.1, 0.0.0.0 or one of "
    "its own with --host or `server.host`",
}


def _listen(host: str, port: int) -> socket.socket:
    try:
        return socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        words = _LISTEN_WORDS.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()
        if isinstance(exc, socket.gaierror):
            words = f"the host name {host!r} does not resolve; use an address such as 127.0.0.1"
        raise ListenError(f"cannot listen on {host}:{port}: {words}") from None


class WebServer:
    """uvicorn on a socket of our own, so tests and `aggregator run` can start and stop it."""

    def __init__(self, app: Starlette, host: str, port: int, *, access_log: bool = False) -> None:
        self.socket = _listen(host, port)
        self.config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=access_log,
            http=BoundedHttpTools,
            loop="uvloop",
            lifespan="on",
            server_header=False,
            date_header=False,  # `respond` sends Date, so that Last-Modified is never later
        )
        self.server = uvicorn.Server(self.config)

    @property
    def port(self) -> int:
        port: int = self.socket.getsockname()[1]
        return port

    def run(self) -> None:
        """Serve until `stop()` (or SIGINT/SIGTERM when run in the main thread)."""
        self.server.run(sockets=[self.socket])

    def stop(self) -> None:
        self.server.should_exit = True

    def close(self) -> None:
        """Let the port go (uvicorn closes it after serving; this is for a server never run)."""
        self.socket.close()

    @property
    def started(self) -> bool:
        return bool(self.server.started)
