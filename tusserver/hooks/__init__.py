"""tusd-compatible hooks: file scripts, HTTP endpoints, Python plugins, in-process subscribers.

`core.hooks` (a `Hooks`) is the dispatcher the handlers call; see dispatch.py for the flow
and model.py for the event table and tusd's JSON schema.
"""

from tusserver.hooks.dispatch import Hooks, Progress, apply_response, http_request_of
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
    EventSpec,
    FileInfoChanges,
    HookEvent,
    HookFailed,
    HookRequest,
    HookResponse,
    HookResponseError,
    HTTPRequest,
    HTTPResponse,
    Upload,
)

__all__ = [
    "EVENTS",
    "POST_CREATE",
    "POST_FINISH",
    "POST_RECEIVE",
    "POST_TERMINATE",
    "PRE_ACCESS",
    "PRE_CREATE",
    "PRE_FINISH",
    "PRE_TERMINATE",
    "EventSpec",
    "FileInfoChanges",
    "HTTPRequest",
    "HTTPResponse",
    "HookEvent",
    "HookFailed",
    "HookRequest",
    "HookResponse",
    "HookResponseError",
    "Hooks",
    "Progress",
    "Upload",
    "apply_response",
    "http_request_of",
]
