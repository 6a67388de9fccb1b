"""The HTTP app: feeds, pages and OPML (Starlette, served by uvicorn; the only module importing
either).

Requests are answered from the publisher's cache without touching the database: a background
task reads the revision counter once a second, and a document is rebuilt (in a worker thread)
only when that moved and the document's entries changed. Conditional requests follow RFC 9110:
`If-None-Match` (weak comparison, `*` too) wins over `If-Modified-Since`; gzip is a separate
representation with its own strong ETag, and a tag matches only the representation it names.
Bad input is a 400 and unknown addresses a 404, each a small HTML page; only a real fault is a
500 (or 503 while the database is away).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aggregator.digest.subscriptions import Subscriptions
from aggregator.exceptions import BadRequestError, NotPublishedError, StorageError
from aggregator.metrics import CONTENT_TYPE as METRICS_TYPE
from aggregator.metrics import Metrics
from aggregator.publish import pages
from aggregator.publish.catalog import MEDIA_TYPES, Kind
from aggregator.publish.publisher import HTML, Document, Publisher
from aggregator.status import StatusAccess, StatusBoard

log = logging.getLogger("aggregator.web")

FORMATS = tuple(MEDIA_TYPES)
KINDS = {kind.value for kind in Kind}


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
    access = access or StatusAccess()

    def page(
        status: int, heading: str, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        return _uncached(publisher.error(status, heading, message), status, headers)

    async def serve(
        request: Request, key: tuple[str, ...], build: Callable[[], Document]
    ) -> Response:
        document = publisher.cached(*key)
        if document is None:
            try:
                document = await run_in_threadpool(build)
            except NotPublishedError as exc:
                return page(404, "Not found", f"{exc}.")
            except BadRequestError as exc:
                return page(400, "Bad request", f"{exc}.")
            except (StorageError, SQLAlchemyError):
                log.exception("cannot read the database for %s", request.url.path)
                return page(
                    503, "Temporarily unavailable", "The database cannot be read; try again soon."
                )
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

    def notice(
        status: int, heading: str, message: str, form: str = "", action: str = ""
    ) -> Response:
        body = pages.notice(
            heading,
            message,
            publisher.base,
            publisher.site_title,
            form,
            action,
            publisher.templates,
        )
        return _uncached(body.encode(), status)

    async def digest_page(request: Request) -> Response:
        digest_id: str = request.path_params["digest"]
        action: str = request.path_params["action"]
        if subscriptions is None or action not in ("subscribe", "confirm", "unsubscribe"):
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
                    "Get it by e-mail: enter your address.",
                    "subscribe",
                    here,
                )
            try:
                form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
            except ClientDisconnect:
                return Response(status_code=400)
            address = (form.get("email") or [""])[0]
            try:
                email = await run_in_threadpool(subscriptions.sign_up, digest.id, address)
            except BadRequestError as exc:
                return notice(400, f"Subscribe to {digest.title}", f"{exc}.", "subscribe", here)
            return notice(
                200,
                "Check your inbox",
                f"We sent a link to {email}; follow it to start receiving {digest.title}. "
                "Nothing there? Look in your spam folder; a new link can be sent once an hour.",
            )
        asking = request.method in ("GET", "HEAD")  # links are followed by scanners too
        again = f"{here}?{urlencode({'token': token})}"
        if action == "confirm":  # GET and HEAD ask; the button (POST) confirms
            check = subscriptions.check_confirm if asking else subscriptions.confirm
            claim = await run_in_threadpool(check, digest.id, token)
            if claim is None:
                return notice(
                    400,
                    "This link does not work",
                    "It is not valid or has expired. Subscribe again to get a new one.",
                    "subscribe",
                    f"{publisher.base}digests/{digest.id}/subscribe",
                )
            if asking:
                return notice(
                    200,
                    f"Confirm your subscription to {digest.title}",
                    f"{claim.email} will get {digest.title}.",
                    "confirm",
                    again,
                )
            return notice(200, "You are subscribed", f"{claim.email} will get {digest.title}.")
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
        except (StorageError, SQLAlchemyError):
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
        Route("/{kind}/{name}", published),
        Route("/digests/{digest}/{action}", digest_page, methods=["GET", "HEAD", "POST"]),
    ]
    handlers: dict[int | type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
        404: not_found,
        HTTPException: refused,
        Exception: failed,
    }
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)


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
    return Starlette(routes=routes, exception_handlers={404: not_found})


async def _watch(publisher: Publisher, every: float) -> None:
    """Read the revision counter on a timer, so requests never wait for the database."""
    while True:
        try:
            await run_in_threadpool(publisher.check)
        except Exception:
            log.warning("cannot read the revision counter; serving cached documents", exc_info=True)
        await asyncio.sleep(every)


class WebServer:
    """uvicorn on a socket of our own, so tests and `aggregator run` can start and stop it."""

    def __init__(self, app: Starlette, host: str, port: int, *, access_log: bool = False) -> None:
        self.socket = socket.create_server((host, port), reuse_port=False)
        self.config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=access_log,
            http="httptools",
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
