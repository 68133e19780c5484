"""The hook dispatcher: fans events out to hook kinds and in-process subscribers.

Blocking events (pre-*) run inside the request and may reject it. Notifications (post-*) run
as background tasks and never slow or fail the request. Durable events (post-finish) are first
recorded in the registry, then delivered; failed or interrupted deliveries are retried with
exponential backoff (also after a crash or restart, by whichever worker of whichever instance
claims them first) until they succeed or --hooks-max-attempts is reached (outbox.py). The
post-finish deliveries themselves are not lost either when recording them fails after the
last byte was recorded: the registry marks the finish pending together with the last byte,
`finished` clears the mark, and upkeep.repair_finishes finishes what is still marked.

With no hook configured and no subscriber, `wants()` is False for every event, so call sites
skip building payloads and the hot path costs one set lookup (a finished upload also one
registry write: clearing its pending finish).

In-process subscribers (e.g. the processing pipeline) register with
`core.hooks.subscribe("post-finish", "processing", callback)`; the callback gets the typed
HookRequest and may return a HookResponse. Subscribers are called for their event whatever
--hooks-enabled-events says (that flag selects what reaches the configured hook kinds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from starlette.requests import Request
from starlette.responses import Response

from tusserver.config import Settings
from tusserver.coordination import Liveness
from tusserver.hooks import metrics
from tusserver.hooks.model import (
    EVENTS,
    POST_CREATE,
    POST_FINISH,
    POST_RECEIVE,
    POST_TERMINATE,
    PRE_ACCESS,
    PRE_CREATE,
    PRE_FINISH,
    PRE_TERMINATE,
    HookEvent,
    HookFailed,
    HookRequest,
    HookResponse,
    HookResponseError,
    HTTPRequest,
    HTTPResponse,
    Upload,
    canonical_header,
    default_events,
)
from tusserver.hooks.outbox import Outbox
from tusserver.protocol import (
    TusError,
    check_upload_length,
    encode_metadata,
    is_valid_upload_id,
)
from tusserver.registry import GONE_STATES, Registry, UploadInfo
from tusserver.storage import Store

log = logging.getLogger("tusserver.hooks")

Subscriber = Callable[[HookRequest], Awaitable[HookResponse | None]]

MAX_BACKGROUND = 32  # concurrent post-* hook runs per process; more wait their turn
# Seconds after an upload's last byte before the finish repair may take over its finish (plus
# the time its pre-finish hooks may take): see Hooks.finish_grace.
FINISH_GRACE = 60.0


class Backend(Protocol):
    """A hook kind (file, http, plugin)."""

    kind: str

    def handles(self, event: str) -> bool: ...

    async def invoke(self, request: HookRequest) -> HookResponse: ...


@dataclass
class Target:
    """One receiver of an event: a configured hook kind or an in-process subscriber."""

    name: str  # "file", "http", "plugin" or "subscriber:<name>" (stored with deliveries)
    kind: str  # metric label
    call: Callable[[HookRequest], Awaitable[HookResponse]]
    lease: float  # seconds one delivery may take before another worker or instance retries it


def http_request_of(request: Request) -> HTTPRequest:
    """tusd's HTTPRequest: method, request URI, peer address, Go-canonical multi-value headers."""
    scope = request.scope
    raw_path = scope.get("raw_path") or scope.get("path", "").encode()
    uri = raw_path.decode("latin-1")
    if scope.get("query_string"):
        uri += "?" + scope["query_string"].decode("latin-1")
    client = scope.get("client")
    header: dict[str, list[str]] = {}
    for key, value in scope.get("headers", []):
        header.setdefault(canonical_header(key.decode("latin-1")), []).append(
            value.decode("latin-1")
        )
    return HTTPRequest(
        method=request.method,
        uri=uri,
        remote_addr=f"{client[0]}:{client[1]}" if client else "",
        header=header,
    )


def apply_response(response: Response, override: HTTPResponse | None) -> Response:
    """Merge a hook's HTTPResponse into a success response (tusd's MergeWith)."""
    if not override:
        return response
    status = override.status_code or response.status_code
    if not override.body and not override.status_code:
        response.headers.update(override.header)
        return response
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    headers.update(override.header)
    body: bytes = override.body.encode() if override.body else bytes(response.body)
    if status in (204, 304):  # no body allowed (Go's net/http drops it too)
        body = b""
    return Response(body, status_code=status, headers=headers)


class Progress:
    """Counts the bytes of one request body (a Sink observer) and carries a StopUpload."""

    def __init__(self, start: int = 0):
        self.start = start
        self.received = 0
        self.reported = start
        self.stopped: HTTPResponse | None = None
        self.scope: anyio.CancelScope | None = None
        self.busy = False
        self.done = False

    def update(self, data: bytes, /) -> None:
        self.received += len(data)

    @property
    def offset(self) -> int:
        return self.start + self.received


class Hooks:
    """Per-process dispatcher attached to TusCore as `core.hooks`."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        store: Store,
        liveness: Liveness,
        backends: list[Backend] | None = None,
    ):
        self.settings = settings
        self.registry = registry
        self.store = store
        self.backends: list[Backend] = (
            backends if backends is not None else build_backends(settings)
        )
        enabled = settings.hooks_enabled_events or default_events()
        unknown = [name for name in enabled if name not in EVENTS]
        if unknown:
            raise ValueError(f"unknown hook event(s) in --hooks-enabled-events: {unknown}")
        self.enabled = frozenset(enabled)
        self.interval = settings.progress_hooks_interval
        self.subscribers: dict[str, dict[str, tuple[Subscriber, float]]] = {}
        self._wanted: frozenset[str] = frozenset()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._last_progress: dict[str, float] = {}
        self._retry_task: asyncio.Task[None] | None = None
        self.outbox = Outbox(
            registry,
            liveness,
            max_attempts=settings.hooks_max_attempts,
            retry_delay=settings.hooks_retry_delay,
            call=self._call,
            spawn=self.spawn,
            targets=self._durable_targets,
        )
        self._refresh()

    # -- configuration ---------------------------------------------------------------------

    def _refresh(self) -> None:
        wanted = {e for e in self.enabled if self.backends} | set(self.subscribers)
        self._wanted = frozenset(e for e in wanted if self._targets(e))

    def wants(self, event: str) -> bool:
        """Whether anything listens to `event` (call sites skip all work otherwise)."""
        return event in self._wanted

    def subscribe(
        self, event: str, name: str, callback: Subscriber, *, lease: float = 600.0
    ) -> None:
        """Register an in-process receiver of `event` (durable events: retried until it returns).

        `name` identifies it in recorded deliveries, so it must stay the same across restarts.
        `lease` is how long one call may run before a retry elsewhere is allowed.
        """
        if event not in EVENTS:
            raise ValueError(f"unknown hook event {event!r}")
        self.subscribers.setdefault(event, {})[name] = (callback, lease)
        self._refresh()

    def _targets(self, event: str) -> list[Target]:
        targets: list[Target] = []
        if event in self.enabled:
            for backend in self.backends:
                if backend.handles(event):
                    targets.append(
                        Target(backend.kind, backend.kind, backend.invoke, self._lease(backend))
                    )
        for name, (callback, lease) in self.subscribers.get(event, {}).items():
            targets.append(Target(f"subscriber:{name}", "subscriber", _wrap(callback), lease))
        return targets

    def _lease(self, backend: Backend) -> float:
        budget = getattr(backend, "attempt_budget", None)
        seconds = budget() if callable(budget) else self.settings.hooks_timeout
        return (float(seconds) or 3600.0) + 5.0

    # -- payloads --------------------------------------------------------------------------

    def upload_of(self, info: UploadInfo, *, stored: bool = True) -> Upload:
        """tusd's FileInfo for an upload (Storage only once it exists)."""
        return Upload(
            id=info.id if stored else "",
            size=info.length or 0,
            size_is_deferred=info.length is None,
            offset=info.offset,
            metadata=dict(info.metadata),
            is_partial=info.is_partial,
            is_final=info.is_final,
            partial_uploads=list(info.partials) or None,
            storage=self.store.storage_info(info.id) if stored else None,
        )

    def request_for(
        self, event: str, info: UploadInfo, http: HTTPRequest | Request, *, stored: bool = True
    ) -> HookRequest:
        if isinstance(http, Request):
            http = http_request_of(http)
        return HookRequest(event, HookEvent(self.upload_of(info, stored=stored), http))

    # -- invoking --------------------------------------------------------------------------

    async def invoke(self, event: str, request: HookRequest) -> HookResponse:
        """Run every receiver of a blocking event in turn; merged answer. HookFailed escapes."""
        answer = HookResponse()
        for target in self._targets(event):
            answer = answer.merge(await self._call(target, request))
            if answer.reject_upload or answer.reject_termination or answer.reject_access:
                break
        return answer

    async def _blocking(self, event: str, request: HookRequest) -> HookResponse:
        """A pre-* hook: its failure fails the request with a generic 500 (details logged)."""
        try:
            return await self.invoke(event, request)
        except HookFailed:
            raise TusError(500, f"ERR_INTERNAL_SERVER_ERROR: {event} hook failed") from None

    async def _call(self, target: Target, request: HookRequest) -> HookResponse:
        """One receiver, measured and logged; HookFailed for any failure."""
        started = time.monotonic()
        upload_id = request.event.upload.id
        try:
            answer = await target.call(request)
        except HookFailed as exc:
            metrics.INVOCATIONS.labels(request.type, target.kind, exc.outcome).inc()
            log.error(
                "%s hook (%s) for upload %r failed: %s", request.type, target.name, upload_id, exc
            )
            raise
        except Exception as exc:
            metrics.INVOCATIONS.labels(request.type, target.kind, "error").inc()
            log.exception(
                "%s hook (%s) for upload %r crashed", request.type, target.name, upload_id
            )
            raise HookFailed(repr(exc)) from exc
        finally:
            metrics.DURATION.labels(request.type, target.kind).observe(time.monotonic() - started)
        rejected = (
            answer.reject_upload
            or answer.reject_termination
            or answer.reject_access
            or answer.stop_upload
        )
        metrics.INVOCATIONS.labels(
            request.type, target.kind, "rejected" if rejected else "ok"
        ).inc()
        log.debug(
            "%s hook (%s) for upload %r answered %s", request.type, target.name, upload_id, answer
        )
        return answer

    async def notify(
        self,
        event: str,
        request: HookRequest,
        on_answer: Callable[[HookResponse], None] | None = None,
    ) -> None:
        """Deliver a notification in the background; a durable event is recorded first, so
        it survives a crash once this returns."""
        targets = self._targets(event)
        if not targets:
            return
        if EVENTS[event].durable:
            await self.outbox.record(event, request, targets)
            return
        for target in targets:
            self.spawn(self._notify_one(target, request, on_answer))

    async def _notify_one(
        self,
        target: Target,
        request: HookRequest,
        on_answer: Callable[[HookResponse], None] | None,
    ) -> None:
        with contextlib.suppress(HookFailed):
            answer = await self._call(target, request)
            if on_answer is not None:
                on_answer(answer)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` in the background, at most MAX_BACKGROUND at a time; errors are logged."""

        async def limited() -> None:
            if self._slots is None:
                self._slots = asyncio.Semaphore(MAX_BACKGROUND)
            try:
                async with self._slots:
                    await work
            except Exception:
                log.exception("background hook task failed")
            finally:
                work.close()  # cancelled while waiting for a slot: never started, no warning

        task = asyncio.get_running_loop().create_task(limited())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # cancelled before it ever ran (shutdown), `limited` never reaches its finally
        task.add_done_callback(lambda _: work.close())

    def _durable_targets(self) -> dict[str, Target]:
        found: dict[str, Target] = {}
        for event, spec in EVENTS.items():
            if spec.durable:
                for target in self._targets(event):
                    found[f"{event}/{target.name}"] = target
        return found

    def start(self) -> None:
        """Start the retry loop (from TusCore.start; needs a running loop)."""
        if self._retry_task is None:
            self._retry_task = asyncio.get_running_loop().create_task(self.outbox.retry_forever())

    async def stop(self) -> None:
        """Stop the retry loop and cancel running hooks (durable ones are released, so the
        next start or another instance delivers them again)."""
        tasks = [t for t in (self._retry_task, *self._tasks) if t is not None]
        self._retry_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for backend in self.backends:
            close = getattr(backend, "aclose", None)
            if close is not None:
                await close()

    # -- call sites: creation ----------------------------------------------------------------

    async def pre_create(self, request: Request, info: UploadInfo) -> HTTPResponse:
        """pre-create: may reject, or change the new upload's ID and metadata (in `info`)."""
        if not self.wants(PRE_CREATE):
            return HTTPResponse()
        if info.length is not None:  # like tusd: a too-large upload never reaches the hook
            check_upload_length(info.length, self.settings.max_size)
        hook = self.request_for(PRE_CREATE, info, request, stored=False)
        answer = await self._blocking(PRE_CREATE, hook)
        if answer.reject_upload:
            raise HookResponseError(
                400,
                "ERR_UPLOAD_REJECTED",
                "upload creation has been rejected by server",
                answer.http_response,
            )
        changes = answer.change_file_info
        if changes.id:
            if not is_valid_upload_id(changes.id):
                log.error("pre-create hook chose an invalid upload ID %r", changes.id)
                raise TusError(500, "ERR_INTERNAL_SERVER_ERROR: pre-create hook failed")
            if await self.registry.get(changes.id) is not None:
                raise TusError(409, "upload ID chosen by the pre-create hook is already in use")
            info.id = changes.id
        if changes.metadata is not None:
            info.metadata = dict(changes.metadata)
            info.metadata_raw = encode_metadata(info.metadata) or None
        if changes.storage:
            log.warning("pre-create ChangeFileInfo.Storage is not supported; ignored")
        return answer.http_response

    async def post_create(self, request: Request, info: UploadInfo) -> None:
        if self.wants(POST_CREATE):
            await self.notify(POST_CREATE, self.request_for(POST_CREATE, info, request))

    # -- call sites: receiving ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def receiving(self, request: Request, info: UploadInfo) -> AsyncIterator[Progress]:
        """post-receive during a request body, at most every --progress-hooks-interval.

        Yields a Progress to pass to core.receive as an observer. A StopUpload answer cancels
        the body transfer; the caller then finds `progress.stopped` set and must terminate.
        """
        progress = Progress(info.offset)
        if not self.wants(POST_RECEIVE):
            yield progress
            return
        http = http_request_of(request)
        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            progress.scope = tg.cancel_scope
            tg.start_soon(self._tick, progress, info, http)
            try:
                yield progress
            except Exception as exc:  # re-raised as is below, not as an ExceptionGroup
                error = exc
            finally:
                progress.done = True
                if progress.stopped is None:
                    tg.cancel_scope.cancel()
        if error is not None:
            raise error
        if progress.stopped is None and progress.offset != progress.reported:
            self.spawn(self._final_progress(progress, info, http))

    async def stop_upload(
        self,
        request: Request,
        info: UploadInfo,
        progress: Progress,
        terminate: Callable[[UploadInfo], Awaitable[None]],
    ) -> None:
        """After a StopUpload: terminate the upload (post-terminate fires) and raise tusd's
        400 ERR_UPLOAD_STOPPED, merged with the hook's HTTPResponse. Call with the lock held."""
        hook = self.before_terminate(request, info)
        await terminate(info)
        await self.terminated(hook)
        raise HookResponseError(
            400,
            "ERR_UPLOAD_STOPPED",
            "upload has been stopped by server",
            progress.stopped or HTTPResponse(),
        )

    def _progress_wait(self, upload_id: str) -> float:
        """Seconds until this upload may get its next post-receive."""
        last = self._last_progress.get(upload_id)
        return 0.0 if last is None else last + self.interval - time.monotonic()

    def _progress_fired(self, upload_id: str) -> None:
        now = time.monotonic()
        if len(self._last_progress) > 10000:
            self._last_progress = {
                k: v for k, v in self._last_progress.items() if now - v < self.interval
            }
        self._last_progress[upload_id] = now

    async def _tick(self, progress: Progress, info: UploadInfo, http: HTTPRequest) -> None:
        while True:
            await anyio.sleep(max(self.interval, self._progress_wait(info.id), 0.01))
            if progress.busy or progress.offset == progress.reported:
                continue
            if self._progress_wait(info.id) > 0:
                continue
            progress.busy = True
            self._emit_progress(progress, info, http)

    def _emit_progress(self, progress: Progress, info: UploadInfo, http: HTTPRequest) -> None:
        progress.reported = progress.offset
        self._progress_fired(info.id)
        hook = self.request_for(POST_RECEIVE, info, http)
        hook.event.upload.offset = progress.reported

        def on_answer(answer: HookResponse) -> None:
            progress.busy = False
            if answer.stop_upload and not progress.done and progress.stopped is None:
                log.info("post-receive hook stopped upload %s", info.id)
                progress.stopped = answer.http_response
                if progress.scope is not None:
                    progress.scope.cancel()

        targets = self._targets(POST_RECEIVE)
        if not targets:
            progress.busy = False
            return

        async def run() -> None:
            answer = HookResponse()
            try:
                for target in targets:
                    with contextlib.suppress(HookFailed):
                        answer = answer.merge(await self._call(target, hook))
            finally:
                on_answer(answer)

        self.spawn(run())

    async def _final_progress(
        self, progress: Progress, info: UploadInfo, http: HTTPRequest
    ) -> None:
        """The last offset of a request, still respecting the per-upload interval."""
        while (wait := self._progress_wait(info.id)) > 0:
            await anyio.sleep(wait)
        self._emit_progress(progress, info, http)

    # -- call sites: finishing ---------------------------------------------------------------

    async def finished(
        self, request: Request | HTTPRequest | None, info: UploadInfo
    ) -> HTTPResponse:
        """The last byte is stored: pre-finish (blocking, may add to the response), then
        post-finish (recorded durably, delivered after the response).

        Once per upload: a second call (e.g. a concatenated final completed on two paths, or
        the core's finish repair) records no second post-finish. Without a client request
        (background completion, the repair) HTTPRequest is empty.

        The registry marked the upload's finish pending when it recorded the last byte; the
        mark is cleared once the post-finish deliveries are recorded (or nothing wants
        them). If recording fails (the registry is unreachable: the request answers 503) or
        the process dies first, the mark stays and upkeep.repair_finishes calls this again.
        """
        if not (self.wants(PRE_FINISH) or self.wants(POST_FINISH)):
            await self.registry.finish_recorded(info.id)
            return HTTPResponse()
        if self.wants(POST_FINISH) and await self.registry.has_delivery(info.id, POST_FINISH):
            await self.registry.finish_recorded(info.id)
            return HTTPResponse()
        http = request if request is not None else HTTPRequest()
        answer = HTTPResponse()
        try:
            if self.wants(PRE_FINISH):
                hook = self.request_for(PRE_FINISH, info, http)
                answer = (await self._blocking(PRE_FINISH, hook)).http_response
        finally:
            # recorded even if pre-finish failed: the upload is complete either way
            if self.wants(POST_FINISH):
                await self.notify(POST_FINISH, self.request_for(POST_FINISH, info, http))
            await self.registry.finish_recorded(info.id)
        return answer

    def finish_grace(self) -> float:
        """Seconds a request may still be finishing an upload after its last byte was
        recorded (its pre-finish hooks run before post-finish is recorded): the finish
        repair leaves uploads younger than this alone, so it does not race their request."""
        budget = sum(target.lease for target in self._targets(PRE_FINISH))
        return FINISH_GRACE + budget

    # -- call sites: termination -------------------------------------------------------------

    async def pre_terminate(self, request: Request, info: UploadInfo) -> HTTPResponse:
        """pre-terminate: RejectTermination refuses the DELETE (400, like tusd)."""
        if not self.wants(PRE_TERMINATE):
            return HTTPResponse()
        answer = await self._blocking(PRE_TERMINATE, self.request_for(PRE_TERMINATE, info, request))
        if answer.reject_termination:
            raise HookResponseError(
                400,
                "ERR_UPLOAD_TERMINATION_REJECTED",
                "upload termination has been rejected by server",
                answer.http_response,
            )
        return answer.http_response

    def before_terminate(self, request: Request, info: UploadInfo) -> HookRequest | None:
        """Capture the post-terminate payload while the upload still exists."""
        if not self.wants(POST_TERMINATE):
            return None
        return self.request_for(POST_TERMINATE, info, request)

    async def terminated(self, hook_request: HookRequest | None) -> None:
        """post-terminate, with the payload captured by `before_terminate`."""
        if hook_request is not None:
            await self.notify(POST_TERMINATE, hook_request)

    # -- call sites: access control ------------------------------------------------------------

    async def authorize(self, request: Request) -> HTTPResponse | None:
        """pre-access for HEAD/PATCH/GET/DELETE on an existing upload (opt-in, beyond tusd).

        RejectAccess answers 403 (or the hook's HTTPResponse); unknown or removed uploads are
        left to the handler's own 404/410.
        """
        if not self.wants(PRE_ACCESS) or request.method not in ("HEAD", "PATCH", "GET", "DELETE"):
            return None
        upload_id = str(request.path_params.get("upload_id", ""))
        if not is_valid_upload_id(upload_id):
            return None
        info = await self.registry.get(upload_id)
        if info is None or info.state in GONE_STATES:
            return None
        answer = await self._blocking(PRE_ACCESS, self.request_for(PRE_ACCESS, info, request))
        if answer.reject_access:
            raise HookResponseError(
                403,
                "ERR_ACCESS_REJECTED",
                "access to the upload has been rejected by server",
                answer.http_response,
            )
        return HTTPResponse(header=answer.http_response.header)  # granted: extra headers only


def _wrap(callback: Subscriber) -> Callable[[HookRequest], Awaitable[HookResponse]]:
    async def call(request: HookRequest) -> HookResponse:
        return (await callback(request)) or HookResponse()

    return call


def build_backends(settings: Settings) -> list[Backend]:
    """The hook kinds the settings configure, in the order they are consulted."""
    backends: list[Backend] = []
    if settings.hooks_dir:
        from tusserver.hooks.file import FileHooks

        backends.append(FileHooks(settings.hooks_dir, settings.hooks_timeout))
    if settings.hooks_http:
        from tusserver.hooks.http import HttpHooks

        backends.append(
            HttpHooks(
                settings.hooks_http,
                timeout=settings.hooks_timeout,
                retries=settings.hooks_http_retry,
                backoff=settings.hooks_http_backoff,
                forward_headers=list(settings.hooks_http_forward_headers),
            )
        )
    if settings.hooks_plugin:
        from tusserver.hooks.plugin import PluginHooks

        backends.append(PluginHooks(settings.hooks_plugin, settings.hooks_timeout))
    return backends
