"""In-process checks of the hook model and dispatcher: tusd JSON parsing edge cases, metrics,
durable deliveries with in-process subscribers, and adding an event type."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

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
from tusserver.registry import Registry
from tusserver.storage import FileStore


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


def make_hooks(tmp_path: Path, backend: FakeBackend | None, **settings: object) -> Hooks:
    values = {"upload_dir": tmp_path, "hooks_retry_delay": 0.01, **settings}
    config = Settings(**values)  # type: ignore[arg-type]
    return Hooks(
        config,
        Registry(config.db_path),
        FileStore(tmp_path),
        backends=[backend] if backend else [],
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def request_for(event: str, upload_id: str = "u1") -> HookRequest:
    return HookRequest(event, HookEvent(Upload(upload_id, 1, offset=1), HTTPRequest("PATCH")))


def wait(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async def poll() -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "condition not reached"
            await asyncio.sleep(0.01)

    return poll()  # type: ignore[return-value]


def test_no_hooks_wants_nothing(tmp_path):
    """Without hook kinds or subscribers every event is off: call sites skip all work."""
    hooks = make_hooks(tmp_path, None)
    assert not any(hooks.wants(event) for event in EVENTS)


def test_invocation_metrics(tmp_path):
    """tusserver_hook_invocations_total counts ok, rejected and error outcomes."""
    backend = FakeBackend(
        [HookResponse(), HookResponse(reject_upload=True), HookFailed("boom", "timeout")]
    )
    hooks = make_hooks(tmp_path, backend)
    name = "tusserver_hook_invocations_total"
    labels = {"event": "pre-create", "kind": "plugin"}
    before = {o: sample(name, **labels, outcome=o) for o in ("ok", "rejected", "timeout")}

    async def run() -> None:
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
    hooks = make_hooks(tmp_path, backend, hooks_max_attempts=5)
    before = sample(
        "tusserver_hook_deliveries_total", event="post-finish", kind="plugin", outcome="retried"
    )

    async def run() -> None:
        hooks.start()
        hooks.notify("post-finish", request_for("post-finish"))
        await wait(lambda: hooks.registry.deliveries()[0]["state"] == "done")
        await hooks.stop()

    asyncio.run(run())
    [row] = hooks.registry.deliveries()
    assert row["attempts"] == 3 and row["target"] == "plugin" and len(backend.calls) == 3
    after = sample(
        "tusserver_hook_deliveries_total", event="post-finish", kind="plugin", outcome="retried"
    )
    assert after == before + 2


def test_subscriber_and_new_event_type(tmp_path, monkeypatch):
    """In-process subscribers get typed requests whatever --hooks-enabled-events says; a new
    event type (e.g. the processing pipeline's post-process) is one EVENTS entry."""
    monkeypatch.setitem(EVENTS, "post-process", EventSpec(blocking=False, durable=True))
    hooks = make_hooks(tmp_path, None, hooks_enabled_events=["pre-create"])
    seen: list[HookRequest] = []

    async def on_finish(request: HookRequest) -> None:
        seen.append(request)

    hooks.subscribe("post-finish", "processing", on_finish)
    hooks.subscribe("post-process", "audit", on_finish)
    assert hooks.wants("post-finish") and hooks.wants("post-process")
    assert not hooks.wants("pre-create")  # enabled, but nothing configured handles it

    async def run() -> None:
        hooks.notify("post-finish", request_for("post-finish", "a"))
        hooks.notify("post-process", request_for("post-process", "b"))
        await wait(lambda: len(seen) == 2)
        await wait(lambda: all(r["state"] == "done" for r in hooks.registry.deliveries()))

    asyncio.run(run())
    assert sorted((r.type, r.event.upload.id) for r in seen) == [
        ("post-finish", "a"),
        ("post-process", "b"),
    ]
    targets = sorted(r["target"] for r in hooks.registry.deliveries())
    assert targets == ["subscriber:audit", "subscriber:processing"]
