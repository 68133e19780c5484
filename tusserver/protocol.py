"""Pure rules of the tus 1.0.0 protocol: header parsing, validation and error statuses.

Nothing here does I/O, so every rule can be unit-tested and reused by the handlers, the
hooks and the conformance suite alike. Section names in docstrings refer to protocol.md.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

TUS_VERSION = "1.0.0"
SUPPORTED_VERSIONS = (TUS_VERSION,)
OFFSET_OCTET_STREAM = "application/offset+octet-stream"

# Values fit in a signed 64-bit integer, as every tus client and store expects.
MAX_INT64 = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")


class TusError(Exception):
    """A request the server refuses: carries the HTTP status, a short reason and headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> TusError:
    """400: the request is malformed (the usual answer to a header that breaks the spec)."""
    return TusError(400, message)


def parse_non_negative(name: str, value: str) -> int:
    """Upload-Offset / Upload-Length: "The value MUST be a non-negative integer." (Core)."""
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        raise bad_request(f"{name} must be a non-negative integer")
    number = int(text)
    if number > MAX_INT64:
        raise bad_request(f"{name} is too large")
    return number


def check_version(value: str | None) -> None:
    """Tus-Resumable: a missing or unsupported version gets 412 with Tus-Version (Core)."""
    if value is None:
        raise TusError(412, "Tus-Resumable header missing", {"Tus-Version": TUS_VERSION})
    if value.strip() not in SUPPORTED_VERSIONS:
        raise TusError(412, "unsupported tus version", {"Tus-Version": TUS_VERSION})


def check_offset_content_type(value: str | None) -> None:
    """PATCH: "All PATCH requests MUST use Content-Type: application/offset+octet-stream,
    otherwise the server SHOULD return a 415 Unsupported Media Type status." (Core)."""
    if not is_offset_stream(value):
        raise TusError(415, f"Content-Type must be {OFFSET_OCTET_STREAM}")


def is_offset_stream(value: str | None) -> bool:
    """True when a Content-Type names the tus chunk media type (parameters ignored)."""
    if value is None:
        return False
    return value.split(";", 1)[0].strip().lower() == OFFSET_OCTET_STREAM


def parse_defer_length(value: str) -> bool:
    """Upload-Defer-Length: "Its value MUST be 1"; any other value gets 400 (Creation)."""
    if value.strip() != "1":
        raise bad_request("Upload-Defer-Length must be 1")
    return True


@dataclass(frozen=True)
class Metadata:
    """Upload-Metadata as sent (echoed verbatim on HEAD) and decoded per key."""

    raw: str
    values: dict[str, bytes | None]

    def text(self) -> dict[str, str]:
        """Decoded values as text (tusd's MetaData shape): absent values become ""."""
        return {k: (v or b"").decode("utf-8", "replace") for k, v in self.values.items()}

    def get(self, key: str) -> str | None:
        """One decoded value as text, or None when the key is absent."""
        value = self.values.get(key)
        return None if value is None else value.decode("utf-8", "replace")


def parse_metadata(value: str) -> Metadata | None:
    """Upload-Metadata (Creation): comma-separated "key base64value" pairs.

    "The key MUST NOT contain spaces and commas and MUST NOT be empty", "the value MUST be
    Base64 encoded", "All keys MUST be unique", "The value MAY be empty" (space may be left
    out). An empty header means no metadata.
    """
    raw = value.strip()
    if not raw:
        return None
    if len(raw) > 64 * 1024:
        raise bad_request("Upload-Metadata is too long")
    values: dict[str, bytes | None] = {}
    for pair in raw.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not parts[0]:
            raise bad_request("Upload-Metadata pairs must be 'key base64value'")
        key = parts[0]
        if not key.isascii() or not key.isprintable():
            raise bad_request("Upload-Metadata keys must be printable ASCII")
        if key in values:
            raise bad_request(f"Upload-Metadata key {key!r} is repeated")
        encoded = parts[1] if len(parts) == 2 else ""
        values[key] = _decode_base64(key, encoded) if encoded else None
    return Metadata(raw=raw, values=values)


def _decode_base64(key: str, encoded: str) -> bytes:
    """Strict base64 (standard alphabet, padded) so garbage never reaches hooks or headers."""
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"Upload-Metadata value for {key!r} is not valid base64") from None


def encode_metadata(values: dict[str, str]) -> str:
    """Inverse of parse_metadata for text values (used when a hook rewrites metadata)."""
    pairs = []
    for key, value in values.items():
        encoded = base64.b64encode(value.encode()).decode() if value else ""
        pairs.append(f"{key} {encoded}" if encoded else key)
    return ",".join(pairs)


def is_valid_upload_id(upload_id: str) -> bool:
    """Ids are URL-safe tokens; anything else (``..``, ``/``, NUL) never reaches the store."""
    return bool(_UPLOAD_ID.fullmatch(upload_id))


def http_date(timestamp: float) -> str:
    """RFC 9110 IMF-fixdate, the format Upload-Expires requires (Expiration)."""
    return format_datetime(datetime.fromtimestamp(timestamp, UTC), usegmt=True)


def safe_mime_type(value: str | None) -> str | None:
    """A metadata-supplied media type, only if it is a syntactically plain type/subtype."""
    if value and _MIME.fullmatch(value.strip()):
        return value.strip().lower()
    return None


def check_upload_length(length: int, max_size: int) -> None:
    """ "If the length of the upload exceeds the maximum ... the Server MUST respond with the
    413 Request Entity Too Large status." (Creation)."""
    if max_size and length > max_size:
        raise TusError(413, f"upload length exceeds the maximum of {max_size} bytes")


def method_override(method: str, header: str | None) -> str:
    """X-HTTP-Method-Override "MUST be interpreted as the request's method" (Core)."""
    if header and header.strip():
        return header.strip().upper()
    return method


_CHECKSUM_ALGORITHM = re.compile(r"[!-@\[-~]{1,32}")  # printable ASCII without uppercase
MAX_PARTIALS = 1000


def parse_checksum(value: str) -> tuple[str, bytes]:
    """Upload-Checksum: "MUST consist of the name of the used checksum algorithm and the Base64
    encoded checksum separated by a space" (Checksum); names have no uppercase characters."""
    parts = value.strip().split(" ")
    if len(parts) != 2 or not _CHECKSUM_ALGORITHM.fullmatch(parts[0]) or not parts[1]:
        raise bad_request("Upload-Checksum must be '<algorithm> <base64 digest>'")
    try:
        digest = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("Upload-Checksum digest is not valid base64") from None
    return parts[0], digest


@dataclass(frozen=True)
class Concat:
    """Upload-Concat (Concatenation): `partial`, or `final;<url> <url>...` (urls verbatim)."""

    raw: str
    partial: bool
    urls: tuple[str, ...] = ()


def parse_concat(value: str) -> Concat:
    """ "If the upload is a partial one, the header value MUST be partial. In the case of a
    final upload, its value MUST be final followed by a semicolon and a space-separated list of
    partial upload URLs" which "MAY be absolute or relative and MUST NOT contain spaces"."""
    raw = value.strip()
    if raw == "partial":
        return Concat(raw=raw, partial=True)
    kind, sep, rest = raw.partition(";")
    if kind.strip() != "final" or not sep:
        raise bad_request("Upload-Concat must be 'partial' or 'final;<url> <url> ...'")
    urls = tuple(rest.split())
    if not urls:
        raise bad_request("Upload-Concat final lists no partial uploads")
    if len(urls) > MAX_PARTIALS:
        raise bad_request(f"Upload-Concat final lists more than {MAX_PARTIALS} partial uploads")
    return Concat(raw=raw, partial=False, urls=urls)
