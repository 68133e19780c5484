"""The ASGI application: routes, tus-wide middleware and background tasks.

`create_app(settings)` is the Python front door: the returned Starlette app can run on its own
(the `tusserver` command does exactly that) or be mounted under any path of an existing
Starlette/FastAPI app; Location URLs then carry the mount path.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import tusserver.draft
from tusserver import admin, connections, handlers, health, metrics, processing, web
from tusserver.config import SETTINGS_ENV, Settings
from tusserver.core import TusCore, unavailable
from tusserver.cors import cors_middleware
from tusserver.errors import AlreadyExists, BackendUnavailable, StoreFull
from tusserver.hooks import HookResponseError, apply_response
from tusserver.protocol import TusError, check_version, method_override
from tusserver.startup import check

log = logging.getLogger("tusserver")

Handler = Callable[[Request], Awaitable[Response]]


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """Short plain-text errors, as every client and log can show them."""
    return PlainTextResponse(message + "\n", status_code=status, headers=headers)


async def on_backend_unavailable(request: Request, exc: Exception) -> Response:
    """A backend could not be reached: 503 with Retry-After; nothing was lost."""
    assert isinstance(exc, BackendUnavailable)
    answer = unavailable(exc)
    return error_response(answer.status, answer.message, answer.headers)


async def on_store_full(request: Request, exc: Exception) -> Response:
    """No room for more bytes (the store's or the registry's disk): 507, retry later."""
    log.error("storage full on %s %s: %s", request.method, request.url.path, exc)
    return error_response(507, "not enough storage space on the server; retry later")


async def on_already_exists(request: Request, exc: Exception) -> Response:
    """A hook chose an id that another upload took first (a race past its check): 409."""
    return error_response(409, "upload id already in use")


async def on_tus_error(request: Request, exc: Exception) -> Response:
    """Map protocol and operation errors to their status codes."""
    assert isinstance(exc, TusError)
    if isinstance(exc, HookResponseError):  # body chosen by a hook: sent exactly as given
        return Response(exc.http.body, exc.status, exc.headers)
    return error_response(exc.status, exc.message, exc.headers)


def dispatcher(table: Mapping[str, Handler], *, draft: str | None = None) -> Handler:
    """One endpoint per URL that picks the handler by (possibly overridden) method.

    `draft` ("creation" or "upload") makes the URL serve the IETF resumable-upload draft too:
    its requests go to tusserver.draft, which leaves them to the tus handlers only where the
    draft defines nothing (a GET download)."""
    allow = ", ".join(sorted(table))

    async def not_allowed(request: Request) -> Response:
        raise TusError(405, f"method {request.method} not allowed", {"Allow": allow})

    async def endpoint(request: Request) -> Response:
        core: TusCore = request.app.state.core
        ietf = draft is not None and request.scope.get(tusserver.draft.SCOPE_KEY, False)
        handler = table.get(request.method, not_allowed)
        if handler is not_allowed and not ietf:  # before anything starts or a hook runs
            await not_allowed(request)
        if not core.started:  # first use (mounted apps get no lifespan events), or a retry
            await core.start()  # 503 at once while another request's attempt runs
        granted = await core.hooks.authorize(request)  # pre-access hook
        response = None
        if ietf:
            upload = draft == "upload"
            response = await tusserver.draft.serve(request, core.settings, upload_url=upload)
        if response is None:
            response = await handler(request)
        return apply_response(response, granted)

    return endpoint


class TusMiddleware:
    """Tus-wide rules around every request: method override, version check, headers.

    X-HTTP-Method-Override "MUST be interpreted as the request's method" (Core), so it is
    applied before routing. Tus-Resumable is checked on tus requests (not OPTIONS, not GET
    downloads) and added to every response. Starting the backends is the upload routes'
    business (dispatcher): /metrics, /health and /ready never wait for it. Requests that
    `exempt` names (the dashboard and admin API: not tus) pass untouched.
    """

    def __init__(
        self,
        app: ASGIApp,
        exempt: Callable[[Scope], bool] = lambda scope: False,
        *,
        draft: bool = False,
    ):
        self.app = app
        self.exempt = exempt
        self.draft = draft  # IETF draft requests pass without Tus-Resumable (tusserver.draft)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        override = version = None  # the only headers needed here (last one wins)
        interop = False
        for key, value in scope["headers"]:
            name = key.lower()
            if name == b"x-http-method-override":
                override = value.decode("latin-1")
            elif name == b"tus-resumable":
                version = value.decode("latin-1")
            elif name == b"upload-draft-interop-version":
                interop = True
        method = method_override(scope["method"], override)
        # A copy: the server's own scope keeps the method on the wire, or an override to HEAD
        # would make uvicorn drop the body its Content-Length announces (client hangs).
        scope = {**scope, "method": method}
        if self.draft and interop and version is None:  # the draft's, not tus: no Tus-Resumable
            scope[tusserver.draft.SCOPE_KEY] = True  # the one place that tells them apart
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"tus-resumable", b"1.0.0")]
            await send(message)

        if method not in ("OPTIONS", "GET"):
            try:
                check_version(version)
            except TusError as exc:
                response = error_response(exc.status, exc.message, exc.headers)
                await response(scope, receive, send_with_version)
                return
        await self.app(scope, receive, send_with_version)


def create_app(
    settings: Settings | None = None, core: TusCore | None = None, *, checked: bool = False
) -> Starlette:
    """Build the tus ASGI app for `settings` (the Python API's entry point).

    The settings are checked first (tusserver.startup.validate: ValueError listing every
    mistake); `checked=True` skips that when the caller has already validated these very
    settings (the `tusserver` command does, once, in its parent process).
    """
    settings = settings or Settings()
    if not checked:
        check(settings)
    if admin.ensure_token(settings):  # a mounted app; the command generates it before
        log.info(admin.dashboard_line(settings, generated=True))
    core = core or TusCore(settings)
    processing.attach(core)  # post-finish processing jobs, if --plugins are configured
    base = settings.base_path
    collection = {"POST": handlers.handle_post, "OPTIONS": handlers.handle_options}
    resource: dict[str, Handler] = {
        "HEAD": handlers.handle_head,
        "PATCH": handlers.handle_patch,
        "OPTIONS": handlers.handle_options,
    }
    if not settings.disable_download:
        resource["GET"] = handlers.handle_get
    if not settings.disable_termination:
        resource["DELETE"] = handlers.handle_delete
    every_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]
    routes = [
        # before the upload routes: base path "/" would shadow them
        *ops_routes(settings),
        *admin.routes(settings),  # dashboard and /admin/api/
        *web.routes(settings),  # upload page and assets
        Route(base, dispatcher(collection, draft="creation"), methods=every_method),
        Route(base + "{upload_id}", dispatcher(resource, draft="upload"), methods=every_method),
        # processing/upload progress; through dispatcher() so the pre-access hook applies
        Route(base + "{upload_id}/status", dispatcher({"GET": processing.handle_status})),
        Route(base + "{upload_id}/events", dispatcher({"GET": processing.handle_events})),
        Route(base + "{upload_id}/errors.csv", dispatcher({"GET": processing.handle_errors_csv})),
        Route(
            base + "{upload_id}/errors.ndjson",
            dispatcher({"GET": processing.handle_errors_ndjson}),
        ),
    ]
    if base != "/":
        routes.append(
            Route(base.rstrip("/"), dispatcher(collection, draft="creation"), methods=every_method)
        )

    private, browsing = admin.is_private(settings), web.is_page(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await core.start()
        except BackendUnavailable as exc:  # keep serving: requests get 503 until it is back
            log.error(
                "backends unavailable at start-up (retried in the background and by the next"
                " request): %s",
                exc,
            )
        try:
            yield
        finally:
            await core.stop_background()
            metrics.worker_exit()

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(metrics.RequestMetricsMiddleware),  # outermost: sees every request
            *cors_middleware(settings, exempt=private),  # --cors-*, none with --disable-cors
            Middleware(
                TusMiddleware,
                exempt=lambda scope: private(scope) or browsing(scope),
                draft=not settings.disable_ietf_draft,
            ),
        ],
        exception_handlers={
            TusError: on_tus_error,
            BackendUnavailable: on_backend_unavailable,
            StoreFull: on_store_full,
            AlreadyExists: on_already_exists,
        },
        lifespan=lifespan,
    )
    app.state.core = core
    return app


def ops_routes(settings: Settings) -> list[Route]:
    """/metrics, /health and /ready (paths configurable, '' turns one off)."""
    routes = []
    if settings.metrics_path:
        routes.append(Route(settings.metrics_path, metrics.metrics_endpoint, methods=["GET"]))
    if settings.health_path:
        routes.append(Route(settings.health_path, health.health_endpoint, methods=["GET"]))
    if settings.readiness_path:
        routes.append(Route(settings.readiness_path, health.readiness_endpoint, methods=["GET"]))
    return routes


def create_app_from_env() -> Starlette:
    """uvicorn factory for worker processes: settings arrive as JSON in the environment,
    validated by the parent process (without them: the defaults, checked here)."""
    text = os.environ.get(SETTINGS_ENV)
    settings = Settings.from_json(text) if text else Settings()
    connections.configure(settings)  # the connection limits of this worker's protocol
    return create_app(settings, checked=bool(text))


__all__ = ["create_app", "create_app_from_env"]
