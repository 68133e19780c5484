"""Hook events and their data, in tusd's JSON schema (tusd v2 pkg/hooks HookRequest/HookResponse).

File and HTTP hooks see the JSON form (`to_json` / `parse_response`), Python plugins the typed
dataclasses. Field names in JSON are exactly tusd's, so hook scripts written for tusd work
unchanged. The `EVENTS` table is the single list of event types: adding an event is one line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tusserver.protocol import TusError


@dataclass(frozen=True)
class EventSpec:
    """How an event type behaves.

    blocking: the request waits for the hook and its answer can change or reject the request.
    durable: deliveries are recorded in the registry and retried until they succeed (post-*).
    default: enabled when --hooks-enabled-events is left empty (tusd's default set).
    """

    blocking: bool
    durable: bool = False
    default: bool = False


PRE_CREATE = "pre-create"
POST_CREATE = "post-create"
POST_RECEIVE = "post-receive"
PRE_FINISH = "pre-finish"
POST_FINISH = "post-finish"
PRE_TERMINATE = "pre-terminate"
POST_TERMINATE = "post-terminate"
PRE_ACCESS = "pre-access"
POST_PROCESS = "post-process"  # processing job ended; Event.Processing holds the result

# The event types. To add one (e.g. "post-process"): one line here, then emit it with
# `await core.hooks.notify(event, request)` (post-*) or `await core.hooks.invoke(...)` (pre-*).
EVENTS: dict[str, EventSpec] = {
    PRE_CREATE: EventSpec(blocking=True, default=True),
    POST_CREATE: EventSpec(blocking=False, default=True),
    POST_RECEIVE: EventSpec(blocking=False, default=True),
    PRE_FINISH: EventSpec(blocking=True),
    POST_FINISH: EventSpec(blocking=False, durable=True, default=True),
    PRE_TERMINATE: EventSpec(blocking=True),
    POST_TERMINATE: EventSpec(blocking=False, default=True),
    PRE_ACCESS: EventSpec(blocking=True),  # beyond tusd: authorise HEAD/PATCH/GET/DELETE
    POST_PROCESS: EventSpec(blocking=False, durable=True),  # beyond tusd: tusserver.processing
}


def default_events() -> list[str]:
    """tusd's default --hooks-enabled-events."""
    return [name for name, spec in EVENTS.items() if spec.default]


class HookFailed(Exception):
    """A hook could not run or answered garbage (exit code, timeout, HTTP error, bad JSON)."""

    def __init__(self, message: str, outcome: str = "error"):
        super().__init__(message)
        self.outcome = outcome  # metric label: "error" or "timeout"


class HookResponseError(TusError):
    """A request refused by a hook: tusd's error body, overridden by the hook's HTTPResponse."""

    def __init__(self, status: int, code: str, message: str, override: HTTPResponse):
        body = f"{code}: {message}\n"
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        merged = HTTPResponse(status, body, headers).merge(override)
        super().__init__(merged.status_code, merged.body, merged.header)
        self.http = merged


# -- request -------------------------------------------------------------------------------


@dataclass
class Upload:
    """tusd's FileInfo: the upload a hook is about (ID is empty in pre-create)."""

    id: str = ""
    size: int = 0
    size_is_deferred: bool = False
    offset: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    is_partial: bool = False
    is_final: bool = False
    partial_uploads: list[str] | None = None
    storage: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Size": self.size,
            "SizeIsDeferred": self.size_is_deferred,
            "Offset": self.offset,
            "MetaData": dict(self.metadata),
            "IsPartial": self.is_partial,
            "IsFinal": self.is_final,
            "PartialUploads": list(self.partial_uploads) if self.partial_uploads else None,
            "Storage": dict(self.storage) if self.storage is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Upload:
        return cls(
            id=str(data.get("ID") or ""),
            size=int(data.get("Size") or 0),
            size_is_deferred=bool(data.get("SizeIsDeferred")),
            offset=int(data.get("Offset") or 0),
            metadata={str(k): str(v) for k, v in (data.get("MetaData") or {}).items()},
            is_partial=bool(data.get("IsPartial")),
            is_final=bool(data.get("IsFinal")),
            partial_uploads=list(data["PartialUploads"]) if data.get("PartialUploads") else None,
            storage=dict(data["Storage"]) if data.get("Storage") is not None else None,
        )


@dataclass
class HTTPRequest:
    """The client request that caused the event; Header keys are Go-canonical, values lists."""

    method: str = ""
    uri: str = ""
    remote_addr: str = ""
    header: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "Method": self.method,
            "URI": self.uri,
            "RemoteAddr": self.remote_addr,
            "Header": {k: list(v) for k, v in self.header.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HTTPRequest:
        return cls(
            method=str(data.get("Method") or ""),
            uri=str(data.get("URI") or ""),
            remote_addr=str(data.get("RemoteAddr") or ""),
            header={str(k): [str(x) for x in v] for k, v in (data.get("Header") or {}).items()},
        )


@dataclass
class HookEvent:
    upload: Upload
    http_request: HTTPRequest
    processing: dict[str, Any] | None = None  # post-process only: the job's status and results

    def to_json(self) -> dict[str, Any]:
        data = {"Upload": self.upload.to_json(), "HTTPRequest": self.http_request.to_json()}
        if self.processing is not None:
            data["Processing"] = self.processing
        return data


@dataclass
class HookRequest:
    """What every hook receives: `{"Type": ..., "Event": {"Upload": ..., "HTTPRequest": ...}}`."""

    type: str
    event: HookEvent

    def to_json(self) -> dict[str, Any]:
        return {"Type": self.type, "Event": self.event.to_json()}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> HookRequest:
        data = json.loads(text)
        event = data.get("Event") or {}
        return cls(
            type=str(data["Type"]),
            event=HookEvent(
                Upload.from_json(event.get("Upload") or {}),
                HTTPRequest.from_json(event.get("HTTPRequest") or {}),
                event.get("Processing"),
            ),
        )


# -- response ------------------------------------------------------------------------------


@dataclass
class HTTPResponse:
    """Changes a hook asks for in the HTTP response (zero values mean "leave as is")."""

    status_code: int = 0
    body: str = ""
    header: dict[str, str] = field(default_factory=dict)

    def merge(self, other: HTTPResponse) -> HTTPResponse:
        """tusd's MergeWith: non-zero values of `other` win, headers are combined."""
        return HTTPResponse(
            other.status_code or self.status_code,
            other.body or self.body,
            {**self.header, **other.header},
        )

    def __bool__(self) -> bool:
        return bool(self.status_code or self.body or self.header)


@dataclass
class FileInfoChanges:
    """pre-create's ChangeFileInfo: a custom upload ID and/or replacement metadata."""

    id: str = ""
    metadata: dict[str, str] | None = None
    storage: dict[str, str] | None = None


@dataclass
class HookResponse:
    """A hook's answer; every field is optional (an empty answer means "carry on")."""

    http_response: HTTPResponse = field(default_factory=HTTPResponse)
    reject_upload: bool = False
    reject_termination: bool = False
    reject_access: bool = False
    change_file_info: FileInfoChanges = field(default_factory=FileInfoChanges)
    stop_upload: bool = False

    def merge(self, other: HookResponse) -> HookResponse:
        """Answers of several hook kinds for one event: any rejection wins, later values win."""
        changes = FileInfoChanges(
            other.change_file_info.id or self.change_file_info.id,
            other.change_file_info.metadata
            if other.change_file_info.metadata is not None
            else self.change_file_info.metadata,
            other.change_file_info.storage or self.change_file_info.storage,
        )
        return HookResponse(
            self.http_response.merge(other.http_response),
            self.reject_upload or other.reject_upload,
            self.reject_termination or other.reject_termination,
            self.reject_access or other.reject_access,
            changes,
            self.stop_upload or other.stop_upload,
        )


def parse_response(text: str | bytes) -> HookResponse:
    """A hook's stdout / HTTP body in tusd's JSON schema; empty output is an empty answer."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not text.strip():
        return HookResponse()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise HookFailed(f"hook response is not JSON: {exc}") from None
    return response_from_json(data)


def response_from_json(data: Any) -> HookResponse:
    """Validate and convert a decoded hook response (also accepts plugin dicts)."""
    if not isinstance(data, dict):
        raise HookFailed("hook response must be a JSON object")
    try:
        http = data.get("HTTPResponse") or {}
        header = http.get("Header") or http.get("Headers") or {}  # tusd v1 said "Headers"
        changes = data.get("ChangeFileInfo") or {}
        metadata = changes.get("MetaData")
        storage = changes.get("Storage")
        status = int(http.get("StatusCode") or 0)
        if status and not 200 <= status <= 599:
            raise HookFailed(f"HTTPResponse.StatusCode {status} is not a final HTTP status")
        return HookResponse(
            http_response=HTTPResponse(
                status_code=status,
                body=str(http.get("Body") or ""),
                header=_safe_headers(dict(header)),
            ),
            reject_upload=_flag(data, "RejectUpload"),
            reject_termination=_flag(data, "RejectTermination"),
            reject_access=_flag(data, "RejectAccess"),
            change_file_info=FileInfoChanges(
                id=str(changes.get("ID") or ""),
                metadata=None
                if metadata is None
                else {str(k): str(v) for k, v in dict(metadata).items()},
                storage=None if storage is None else {str(k): str(v) for k, v in storage.items()},
            ),
            stop_upload=_flag(data, "StopUpload"),
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise HookFailed(f"malformed hook response: {exc}") from None


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _safe_headers(header: dict[Any, Any]) -> dict[str, str]:
    """Headers a hook wants to send, refused if they could split or corrupt the response."""
    safe = {}
    for key, value in header.items():
        name, text = str(key), str(value)
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(text):
            raise HookFailed(f"HTTPResponse header {name!r} is not a valid HTTP header")
        safe[name] = text
    return safe


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise HookFailed(f"{name} must be true or false")
    return value


def canonical_header(name: str) -> str:
    """Go's http.CanonicalHeaderKey: 'content-type' -> 'Content-Type' (tusd's Header keys)."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))
