"""Prometheus metrics of the upload server, served at --metrics-path (default /metrics).

All metrics live on prometheus_client's default REGISTRY, so counters other modules define
there (hook invocations in tusserver.hooks, processing jobs) are served by the same endpoint.
With several workers (`--workers N`) the CLI sets PROMETHEUS_MULTIPROC_DIR before any worker
starts; every worker then writes its values to files there and the endpoint aggregates them
(gauges of live processes are summed).
"""

from __future__ import annotations

import logging
import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tusserver import logs

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

KNOWN_METHODS = {"GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"}

REQUESTS = Counter(
    "tusserver_requests_total",
    "HTTP requests answered, by method, status and protocol (tus, ietf-draft, http)",
    ["method", "protocol", "status"],
)
REQUEST_DURATION = Histogram(
    "tusserver_request_duration_seconds",
    "Time from request start to the end of the response, by method",
    ["method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
BYTES_RECEIVED = Counter(
    "tusserver_bytes_received_total", "Upload bytes received, made durable and acknowledged"
)
UPLOADS_CREATED = Counter(
    "tusserver_uploads_created_total",
    "Uploads created, by protocol (tus, ietf-draft)",
    ["protocol"],
)
UPLOADS_FINISHED = Counter("tusserver_uploads_finished_total", "Uploads that received all bytes")
UPLOADS_TERMINATED = Counter("tusserver_uploads_terminated_total", "Uploads deleted by clients")
UPLOADS_EXPIRED = Counter("tusserver_uploads_expired_total", "Unfinished uploads expired")
UPLOAD_DURATION = Histogram(
    "tusserver_upload_duration_seconds",
    "Time from creation to the last byte of finished uploads",
    buckets=(0.01, 0.1, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400),
)
ACTIVE_UPLOADS = Gauge(
    "tusserver_active_uploads",
    "Requests receiving upload bytes right now",
    multiprocess_mode="livesum",
)
OPEN_CONNECTIONS = Gauge(
    "tusserver_open_connections", "Open client HTTP connections", multiprocess_mode="livesum"
)
REQUESTS_IN_FLIGHT = Gauge(
    "tusserver_requests_in_flight", "Requests being handled", multiprocess_mode="livesum"
)


def upload_finished(created: float) -> None:
    """Count a finished upload and how long it took from creation."""
    UPLOADS_FINISHED.inc()
    UPLOAD_DURATION.observe(max(0.0, time.time() - created))


def method_label(method: str) -> str:
    """Bounded label values: unknown methods (fuzzers, scanners) share one series."""
    return method if method in KNOWN_METHODS else "OTHER"


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric, aggregated over workers in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def prepare_multiprocess(directory: str) -> None:
    """Called by the CLI before workers start: a fresh directory for the value files."""
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.unlink(os.path.join(directory, name))
    os.environ[MULTIPROC_ENV] = directory


def worker_exit() -> None:
    """Drop this worker's live gauges from the aggregate (lifespan shutdown)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: the Prometheus text exposition."""
    body, content_type = exposition()
    return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


def _method_and_protocol(scope: Scope) -> tuple[str, str]:
    """The method the request is handled as (X-HTTP-Method-Override applied) and the protocol
    it speaks: `tus` (Tus-Resumable), `ietf-draft` (Upload-Draft-Interop-Version without
    Tus-Resumable, as tusserver.draft tells them apart) or `http` (pages, probes, preflights)."""
    method, tus, draft = str(scope["method"]), False, False
    for name, value in scope["headers"]:
        key = name.lower()
        if key == b"x-http-method-override" and value.strip():
            method = str(value.decode("latin-1")).strip().upper()
        elif key == b"tus-resumable":
            tus = True
        elif key == b"upload-draft-interop-version":
            draft = True
    return method, "tus" if tus else "ietf-draft" if draft else "http"


# The labelled children, looked up once per label set (labels() takes a lock and builds a
# key on every call). Label values are bounded: KNOWN_METHODS + OTHER, HTTP status codes.
_COUNTERS: dict[tuple[str, int, str], Counter] = {}
_DURATIONS: dict[str, Histogram] = {}


def _request_counter(method: str, status: int, protocol: str) -> Counter:
    child = _COUNTERS.get((method, status, protocol))
    if child is None:
        child = _COUNTERS[method, status, protocol] = REQUESTS.labels(method, protocol, str(status))
    return child


def _duration_histogram(method: str) -> Histogram:
    child = _DURATIONS.get(method)
    if child is None:
        child = _DURATIONS[method] = REQUEST_DURATION.labels(method)
    return child


class RequestMetricsMiddleware:
    """Outermost ASGI middleware: counts, times and logs every HTTP request.

    The method label is the one the request is handled as (X-HTTP-Method-Override applied, as
    TusMiddleware does); exceptions count as 500.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        REQUESTS_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            REQUESTS_IN_FLIGHT.dec()
            elapsed = time.perf_counter() - started
            method, protocol = _method_and_protocol(scope)
            method = method_label(method)
            _request_counter(method, status, protocol).inc()
            _duration_histogram(method).observe(elapsed)
            if logs.ACCESS.isEnabledFor(logging.INFO):
                client = scope.get("client")
                logs.access(method, scope.get("path", ""), status, elapsed, client and client[0])
