"""In-process checks of the hook model and dispatcher: tusd JSON parsing edge cases, metrics,
durable deliveries with in-process subscribers, fencing of stale delivery attempts, and adding
an event type."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tusserver.backends import build
from tusserver.config import Settings
from tusserver.hooks import (
    EVENTS,
    EventSpec,
    HookEvent,
    HookFailed,
    HookRequest,
    HookResponse,
    Hooks,
    HTTPRequest,
    Upload,
)
from tusserver.hooks.model import canonical_header, parse_response
from tusserver.registry import NewDelivery
from tusserver.registry.base import DONE, FAILED, PENDING
from tusserver.registry.sqlite import SqliteRegistry


def test_parse_response_tusd_schema():
    """Empty output is an empty answer; tusd v1's "Headers" spelling is accepted too."""
    assert parse_response(b"  \n") == HookResponse()
    answer = parse_response(
        '{"HTTPResponse": {"StatusCode": 403, "Body": "no", "Headers": {"X-A": "1"}},'
        ' "RejectUpload": true, "ChangeFileInfo": {"ID": "abc", "MetaData": {}}}'
    )
    assert answer.reject_upload and not answer.stop_upload
    assert answer.http_response.status_code == 403 and answer.http_response.header == {"X-A": "1"}
    assert answer.change_file_info.id == "abc" and answer.change_file_info.metadata == {}


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",
        "{",
        '{"RejectUpload": "yes"}',
        '{"HTTPResponse": {"StatusCode": 99}}',
        '{"HTTPResponse": {"Header": {"X-Evil": "a\\r\\nSet-Cookie: s=1"}}}',
        '{"HTTPResponse": {"Header": {"Bad Name": "x"}}}',
    ],
)
def test_parse_response_refuses_garbage(text):
    """Malformed answers are hook failures, never half-applied or header-splitting."""
    with pytest.raises(HookFailed):
        parse_response(text)


def test_canonical_header_and_request_roundtrip():
    assert canonical_header("x-forwarded-for") == "X-Forwarded-For"
    assert canonical_header("UPLOAD-LENGTH") == "Upload-Length"
    request = HookRequest(
        "post-finish",
        HookEvent(
            Upload("id1", 5, False, 5, {"k": "v"}, storage={"Type": "filestore", "Path": "/p"}),
            HTTPRequest("PATCH", "/files/id1", "127.0.0.1:1", {"Host": ["h"]}),
        ),
    )
    assert HookRequest.loads(request.dumps()) == request


class FakeBackend:
    """A hook kind whose answers are scripted: HookResponse or an exception per call."""

    kind = "plugin"

    def __init__(self, script: list[HookResponse | Exception]):
        self.script = script
        self.calls: list[HookRequest] = []

    def handles(self, event: str) -> bool:
        return True

    async def invoke(self, request: HookRequest) -> HookResponse:
        self.calls.append(request)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return step


@contextlib.asynccontextmanager
async def running_hooks(
    tmp_path: Path, backend: FakeBackend | None, **settings: object
) -> AsyncIterator[Hooks]:
    """A dispatcher on the default backends (SQLite, flock liveness) of `tmp_path`; several
    at once on one directory behave like instances sharing a database."""
    values = {"upload_dir": tmp_path, "hooks_retry_delay": 0.01, **settings}
    config = Settings(**values)  # type: ignore[arg-type]
    backends = build(config)
    await backends.start()
    hooks = Hooks(
        config,
        backends.registry,
        backends.store,
        backends.liveness,
        backends=[backend] if backend else [],
    )
    try:
        yield hooks
    finally:
        await hooks.stop()
        await backends.close()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def request_for(event: str, upload_id: str = "u1") -> HookRequest:
    return HookRequest(event, HookEvent(Upload(upload_id, 1, offset=1), HTTPRequest("PATCH")))


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_no_hooks_wants_nothing(tmp_path):
    """Without hook kinds or subscribers every event is off: call sites skip all work."""

    async def run() -> None:
        async with running_hooks(tmp_path, None) as hooks:
            assert not any(hooks.wants(event) for event in EVENTS)

    asyncio.run(run())


def test_invocation_metrics(tmp_path):
    """tusserver_hook_invocations_total counts ok, rejected and error outcomes."""
    backend = FakeBackend(
        [HookResponse(), HookResponse(reject_upload=True), HookFailed("boom", "timeout")]
    )
    name = "tusserver_hook_invocations_total"
    labels = {"event": "pre-create", "kind": "plugin"}
    before = {o: sample(name, **labels, outcome=o) for o in ("ok", "rejected", "timeout")}

    async def run() -> None:
        async with running_hooks(tmp_path, backend) as hooks:
            await hooks.invoke("pre-create", request_for("pre-create"))
            assert (await hooks.invoke("pre-create", request_for("pre-create"))).reject_upload
            with pytest.raises(HookFailed):
                await hooks.invoke("pre-create", request_for("pre-create"))

    asyncio.run(run())
    for outcome in ("ok", "rejected", "timeout"):
        assert sample(name, **labels, outcome=outcome) == before[outcome] + 1


def test_durable_delivery_retries_until_success(tmp_path):
    """post-finish is recorded, retried with backoff after failures, then marked done."""
    backend = FakeBackend([HookFailed("down"), HookFailed("still down"), HookResponse()])
    before = sample(
        "tusserver_hook_deliveries_total", event="post-finish", kind="plugin", outcome="retried"
    )

    async def run() -> None:
        async with running_hooks(tmp_path, backend, hooks_max_attempts=5) as hooks:
            hooks.start()
            await hooks.notify("post-finish", request_for("post-finish"))

            async def done() -> bool:
                return (await hooks.registry.deliveries())[0].state == DONE

            await eventually(done)
            [row] = await hooks.registry.deliveries()
            assert row.attempts == 3 and row.target == "plugin"

    asyncio.run(run())
    assert len(backend.calls) == 3
    after = sample(
        "tusserver_hook_deliveries_total", event="post-finish", kind="plugin", outcome="retried"
    )
    assert after == before + 2


def test_subscriber_and_new_event_type(tmp_path, monkeypatch):
    """In-process subscribers get typed requests whatever --hooks-enabled-events says; a new
    event type (e.g. the processing pipeline's post-process) is one EVENTS entry."""
    monkeypatch.setitem(EVENTS, "post-process", EventSpec(blocking=False, durable=True))
    seen: list[HookRequest] = []

    async def on_finish(request: HookRequest) -> None:
        seen.append(request)

    async def run() -> list[str]:
        async with running_hooks(tmp_path, None, hooks_enabled_events=["pre-create"]) as hooks:
            hooks.subscribe("post-finish", "processing", on_finish)
            hooks.subscribe("post-process", "audit", on_finish)
            assert hooks.wants("post-finish") and hooks.wants("post-process")
            assert not hooks.wants("pre-create")  # enabled, but nothing configured handles it
            await hooks.notify("post-finish", request_for("post-finish", "a"))
            await hooks.notify("post-process", request_for("post-process", "b"))

            async def all_done() -> bool:
                rows = await hooks.registry.deliveries()
                return len(seen) == 2 and all(row.state == DONE for row in rows)

            await eventually(all_done)
            return sorted(row.target for row in await hooks.registry.deliveries())

    targets = asyncio.run(run())
    assert sorted((r.type, r.event.upload.id) for r in seen) == [
        ("post-finish", "a"),
        ("post-process", "b"),
    ]
    assert targets == ["subscriber:audit", "subscriber:processing"]


def test_stale_attempt_cannot_settle(tmp_path):
    """A delivery whose lease lapsed is claimed again (attempt 2); the settle of attempt 1
    then changes nothing, whatever it says."""

    async def run() -> None:
        registry = SqliteRegistry(tmp_path / "r.db")
        await registry.open()
        try:
            [delivery_id] = await registry.add_deliveries(
                [NewDelivery("post-finish", "file", "u1", "{}")], "stalled", 0.05
            )
            assert await registry.due_deliveries() == []  # leased by its first attempt
            await asyncio.sleep(0.1)
            assert [d.id for d in await registry.due_deliveries()] == [delivery_id]
            claimed = await registry.claim_delivery(delivery_id, "other", 30.0)
            assert claimed is not None and (claimed.attempts, claimed.owner) == (2, "other")
            assert not await registry.settle_delivery(delivery_id, 1, DONE)
            assert not await registry.settle_delivery(delivery_id, 1, PENDING, retry_in=0)
            [row] = await registry.deliveries()
            assert (row.state, row.attempts, row.owner) == (PENDING, 2, "other")
            assert await registry.settle_delivery(delivery_id, 2, FAILED, error="down")
            [row] = await registry.deliveries()
            assert (row.state, row.last_error) == (FAILED, "down")
        finally:
            await registry.close()

    asyncio.run(run())


def test_stalled_owner_is_fenced_off(tmp_path, caplog):
    """Two instances on one database: the first one's subscriber stalls past its lease, the
    second takes the delivery over (the first is alive, so only the lapsed lease allows it) and
    fails; when the stalled attempt finally succeeds, its settle is refused and the second
    attempt's outcome (pending, retried later) stands.

    Deterministic: neither instance runs its retry loop (running_hooks does not start it),
    so only the explicit retry_once claims; a lease of 0 has lapsed the moment it is taken."""
    release = asyncio.Event()

    async def stalled(request: HookRequest) -> None:
        await release.wait()

    async def failing(request: HookRequest) -> None:
        raise HookFailed("down")

    async def run() -> None:
        retry = {"hooks_retry_delay": 3600.0, "hooks_max_attempts": 5}
        async with (
            running_hooks(tmp_path, None, **retry) as first,
            running_hooks(tmp_path, None, **retry) as second,
        ):
            first.subscribe("post-finish", "proc", stalled, lease=0)
            second.subscribe("post-finish", "proc", failing, lease=0)
            assert first._retry_task is None and second._retry_task is None
            await first.notify("post-finish", request_for("post-finish"))
            assert await second.outbox.retry_once() == 1  # the first attempt's lease lapsed

            async def failed_once() -> bool:
                return (await second.registry.deliveries())[0].last_error is not None

            await eventually(failed_once)
            with caplog.at_level(logging.WARNING, "tusserver.hooks"):
                release.set()

                async def fenced() -> bool:
                    return "outlived its lease" in caplog.text

                await eventually(fenced)
            [row] = await first.registry.deliveries()
            assert (row.state, row.attempts) == (PENDING, 2)
            assert row.last_error is not None and "down" in row.last_error

    asyncio.run(run())
