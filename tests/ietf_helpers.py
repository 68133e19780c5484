"""Shared helpers of the IETF resumable-upload tests (test_ietf_draft, test_ietf_integration):
request headers per interop version, reading the completeness field back, payloads.

Requests go through conformance/draft_client.py, a raw-socket client that shows the 1xx
responses common HTTP clients hide.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

from conformance.draft_client import Head, Reply, request

KiB = 1024
VERSIONS = (3, 4, 5, 6, 7, 8)  # served by default (9 is opt-in)
INTEROP = "Upload-Draft-Interop-Version"
PARTIAL_UPLOAD = "application/partial-upload"
PROBLEM_BASE = "https://iana.org/assignments/http-problem-types#"
SUPPORTED_NAMES = "3, 4, 5, 6, 7, 8"  # how a 400 for an unknown version lists them


def payload(size: int, seed: int) -> bytes:
    """Reproducible bytes that no length or offset mix-up can pass as the right ones."""
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def complete_field(version: int) -> str:
    """`Upload-Incomplete` in interop 3 (draft-01 §9.2), `Upload-Complete` from 4 on."""
    return "Upload-Incomplete" if version == 3 else "Upload-Complete"


def completeness(version: int, complete: bool) -> dict[str, str]:
    """The completeness field for `complete` (inverted in interop 3: ?1 = NOT complete)."""
    value = complete if version != 3 else not complete
    return {complete_field(version): "?1" if value else "?0"}


def says_complete(head: Head, version: int) -> bool | None:
    """What a response's completeness field says (None: absent or not a boolean)."""
    raw = head.get(complete_field(version))
    if raw not in ("?0", "?1"):
        return None
    value = raw == "?1"
    return value if version != 3 else not value


def creation_headers(version: int, complete: bool, **extra: str) -> dict[str, str]:
    """A creation request of this version (POST to the creation URL)."""
    return {INTEROP: str(version), **completeness(version, complete), **extra}


def append_headers(version: int, offset: int, complete: bool, **extra: str) -> dict[str, str]:
    """An append (PATCH): application/partial-upload where the version requires it (-04 §6
    on), the offset, and the completeness field (required from v7, -06 §4.4.1)."""
    headers = {INTEROP: str(version), "Upload-Offset": str(offset)}
    if version >= 6:
        headers["Content-Type"] = PARTIAL_UPLOAD
    return {**headers, **completeness(version, complete), **extra}


def head(location: str, version: int, **extra: str) -> Reply:
    """Offset retrieval (HEAD) with this version's interop header."""
    return request(location, "HEAD", {INTEROP: str(version), **extra})


def problem(reply: Reply) -> dict[str, Any] | None:
    """The RFC 9457 problem document of a reply, None when it is not one."""
    if reply.headers.get("content-type", "").split(";")[0] != "application/problem+json":
        return None
    document = json.loads(reply.body)
    assert isinstance(document, dict)
    return document


def problem_type(reply: Reply) -> str | None:
    """The problem type's fragment (`mismatching-upload-offset`, ...), None without one."""
    document = problem(reply)
    if document is None:
        return None
    kind = str(document.get("type", ""))
    return kind.removeprefix(PROBLEM_BASE) if kind.startswith(PROBLEM_BASE) else kind


def limit_members(value: str | None) -> dict[str, str]:
    """An Upload-Limit Dictionary as key -> raw value (the tests only need integers)."""
    members: dict[str, str] = {}
    for part in (value or "").split(","):
        key, _, raw = part.strip().partition("=")
        if key:
            members[key] = raw
    return members


def check_limit(
    value: str | None, version: int, *, max_size: int | None = None, unfinished: bool = True
) -> None:
    """Upload-Limit as this version defines it (-04 §8.2, -06 §4.1.4): absent before v6;
    `min-size=0`, the remaining lifetime of an unfinished upload as `expires` (v6) or
    `max-age` (v7+), `max-size` exactly when the server has one."""
    if version < 6:
        assert value is None, f"v{version} defines no Upload-Limit, got {value!r}"
        return
    assert value is not None, f"v{version}: Upload-Limit missing"
    members = limit_members(value)
    assert members["min-size"] == "0"
    age = "expires" if version == 6 else "max-age"
    other = "max-age" if version == 6 else "expires"
    assert other not in members, value
    if unfinished:
        assert 0 < int(members[age]) <= 86400, value  # the default 24 h expiration
    if max_size is None:
        assert "max-size" not in members, value
    else:
        assert members["max-size"] == str(max_size), value
