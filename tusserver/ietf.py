"""Pure rules of the IETF "Resumable Uploads for HTTP" draft (draft-ietf-httpbis-resumable-upload),
interop versions 3 to 8 (9 provisional), beside tus 1.0 on the same endpoint.

Nothing here does I/O (like protocol.py): the HTTP front classifies a request with `classify`,
checks it against the stored upload, and answers with the header builders and `IetfError.render`.
Every difference between interop versions is a field of `Interop`, one row per version, so a new
interop version is a new row. Docstrings cite the draft that a rule comes from ("draft-03 §6" is
section 6 of draft-ietf-httpbis-resumable-upload-03, RFC-rendered numbering) and the decisions
on ambiguous points cite the research note's pitfalls (P1-P24, notes/ietf-versions.md).

Interop versions and drafts: 3 = -01, 4 = -02, 5 = -03, 6 = -04/-05, 7 = -06/-07/-08,
8 = -09/-10/-11, 9 = -12 (provisional: rebuilt from the editor's copy, not the published text).
Where one number covers several drafts, the row implements the union (P1).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from tusserver.protocol import TusError, parse_metadata, safe_mime_type

INTEROP_HEADER = "Upload-Draft-Interop-Version"
PARTIAL_UPLOAD = "application/partial-upload"
PROBLEM_JSON = "application/problem+json"

# Problem types (RFC 9457), exactly as the drafts spell them (-04 §10, -06 §6, -09 §7).
PROBLEM_BASE = "https://iana.org/assignments/http-problem-types#"
MISMATCHING_OFFSET = "mismatching-upload-offset"
COMPLETED_UPLOAD = "completed-upload"
INCONSISTENT_LENGTH = "inconsistent-upload-length"
PROBLEM_TITLES = {
    MISMATCHING_OFFSET: "offset from request does not match offset of resource",
    COMPLETED_UPLOAD: "upload is already completed",
    INCONSISTENT_LENGTH: "inconsistent length values for upload",
}

# Every field any version defines: CORS has to allow and expose all of them.
REQUEST_HEADERS = (
    "Upload-Complete",
    "Upload-Incomplete",
    INTEROP_HEADER,
    "Upload-Length",
    "Upload-Offset",
)
RESPONSE_HEADERS = (*REQUEST_HEADERS, "Upload-Limit", "Location", "Accept-Patch")

# Media types that say how a request body is framed, never what the file is (P11).
TRANSFER_MEDIA_TYPES = frozenset({PARTIAL_UPLOAD, "application/offset+octet-stream"})


@dataclass(frozen=True)
class Interop:
    """What one interop version of the draft requires of a server (one row of the table)."""

    version: int
    drafts: tuple[str, ...]
    # Completeness field: "Upload-Incomplete" whose true means NOT complete (draft-01 §9.2), or
    # "Upload-Complete" whose true means complete (draft-02 §8.2 onwards).
    complete_field: str
    complete_inverted: bool
    # An append without the completeness field: True = it is the last part (draft-01 §6, -02…-05
    # §6 "If the end of the request content is not the end of the upload, [it] MUST be set to
    # false"); None = 400, because -06 §4.4.1 on says "The request MUST include" it (P2).
    absent_complete_on_append: bool | None
    partial_upload_required: bool  # PATCH needs application/partial-upload (-04 §6, P12)
    defines_upload_length: bool  # Upload-Length exists (-05 §8.4, -06 §4.1.3)
    defines_upload_limit: bool  # Upload-Limit exists (-04 §8.2, -06 §4.1.4)
    limit_age_key: str | None  # "expires" (-04/-05 §8.2), "max-age" (-06 §4.1.4 on) (P10)
    progress_interims: bool  # 104s with Upload-Offset while a body arrives (-03 §4/§6 on)
    append_status: int  # a successful append: 201 (-01…-05 §6), 204 (-06 on: "2xx") (P4)
    problem_documents: bool  # the draft speaks RFC 9457 problem details (-04 §10 on) (P6)
    problem_types: frozenset[str]  # problem types the version defines (P6, P7)
    head_forbidden: tuple[str, ...]  # fields that make a HEAD a 400 (-01…-05 §5) (P13)
    delete_forbidden: tuple[str, ...]  # fields that make a DELETE a 400 (-01…-05 §7) (P13)
    invalid_fields_ignored: bool  # "Other values MUST cause the entire header field to be
    # ignored" (-09 §4.1.1-4.1.3) instead of a 400 (P17)
    options_upload_limit: bool  # OPTIONS carries Upload-Limit (-05 §8.2, -06/-09 §4.1.4)
    options_accept_patch: bool  # OPTIONS carries Accept-Patch (-10/-11 §4.1.4) (P1)
    get_retrieves_offset: bool  # GET also retrieves the offset (v9* §4.3.2) (P24)
    replay_completed: bool  # a valid append to a completed upload replays success (v9* §4.4.2)
    nonempty_completed_is_inconsistent: bool  # -10/-11 §4.4.2 (P7)
    append_errors_incomplete: bool  # "any response, successful or not, MUST include the
    # Upload-Complete header field with a false value" (-06 §4.4.2) (P7)
    zero_length_creation_completes: bool  # tus-js-client compatibility, see `classify` (P8)
    sections: Mapping[str, str] = field(hash=False, compare=False)
    provisional: bool = False  # rebuilt from an unpublished text: off unless asked for (P24)
    creation_status: int = 201  # "201 (Created)" (MUST -01…-05 §4, RECOMMENDED -06 §4.2.2)
    head_status: int = 204  # 204 is the one status every version accepts (P15)
    # An upload no longer active (deleted, expired) is 404, not 410: "If the server does not
    # consider the upload resource to be active, it MUST respond with a 404 (Not Found)"
    # (draft-01…-05 §5, §6, §7); -06 on name no status, and -10 §4.4.2 mentions 410.
    inactive_not_found: bool = False

    def cite(self, key: str) -> str:
        """The draft section for `key` ("creation", "append", ...), for error details."""
        return self.sections[key]

    def complete_value(self, complete: bool) -> str:
        """The completeness field's sf-boolean for a state (inverted in interop 3)."""
        return "?1" if complete != self.complete_inverted else "?0"


_V3_V5_FORBIDDEN = ("Upload-Offset", "Upload-Complete")


def _early_sections(draft: str, fields: str, **more: str) -> dict[str, str]:
    """Section numbers of drafts -01 to -05 (one section per procedure)."""
    numbered = {"creation": "4", "offset": "5", "append": "6", "cancel": "7", "interop": "4.2"}
    numbered.update(fields=fields, **more)
    return {key: f"{draft} §{number}" for key, number in numbered.items()}


def _late_sections(draft: str, media: str, problems: str, interop: str) -> dict[str, str]:
    """Section numbers of drafts -06 on (procedures under §4, fields under §4.1)."""
    return {
        "fields": f"{draft} §4.1",
        "length": f"{draft} §4.1.3",
        "limit": f"{draft} §4.1.4",
        "creation": f"{draft} §4.2.2",
        "offset": f"{draft} §4.3.2",
        "append": f"{draft} §4.4.2",
        "cancel": f"{draft} §4.5.2",
        "media-type": f"{draft} §{media}",
        "problems": f"{draft} §{problems}",
        "interop": f"{draft} {interop}",
    }


# Each row after the first names only what changed from the version before.
_V3 = Interop(
    version=3,
    drafts=("-01",),
    complete_field="Upload-Incomplete",
    complete_inverted=True,
    absent_complete_on_append=True,
    partial_upload_required=False,
    defines_upload_length=False,
    defines_upload_limit=False,
    limit_age_key=None,
    progress_interims=False,
    append_status=201,
    problem_documents=False,
    problem_types=frozenset(),
    head_forbidden=("Upload-Offset", "Upload-Incomplete"),
    delete_forbidden=("Upload-Offset", "Upload-Incomplete"),
    invalid_fields_ignored=False,
    options_upload_limit=False,
    options_accept_patch=False,
    get_retrieves_offset=False,
    replay_completed=False,
    nonempty_completed_is_inconsistent=False,
    append_errors_incomplete=False,
    zero_length_creation_completes=False,
    sections=_early_sections("draft-01", fields="9"),
    inactive_not_found=True,
)
_V4 = replace(
    _V3,
    version=4,
    drafts=("-02",),
    complete_field="Upload-Complete",
    complete_inverted=False,
    head_forbidden=_V3_V5_FORBIDDEN,
    delete_forbidden=_V3_V5_FORBIDDEN,
    sections=_early_sections("draft-02", fields="8"),
)
_V5 = replace(
    _V4,
    version=5,
    drafts=("-03",),
    progress_interims=True,
    zero_length_creation_completes=True,
    sections=_early_sections("draft-03", fields="8"),
)
_V6 = replace(
    _V5,
    version=6,
    drafts=("-04", "-05"),
    partial_upload_required=True,
    defines_upload_length=True,
    defines_upload_limit=True,
    limit_age_key="expires",
    problem_documents=True,
    problem_types=frozenset({MISMATCHING_OFFSET, COMPLETED_UPLOAD}),
    head_forbidden=(*_V3_V5_FORBIDDEN, "Upload-Length"),
    options_upload_limit=True,
    sections=_early_sections(
        "draft-05", fields="8", limit="8.2", length="8.4", **{"media-type": "9", "problems": "10"}
    ),
)
_V7 = replace(
    _V6,
    version=7,
    drafts=("-06", "-07", "-08"),
    absent_complete_on_append=None,
    limit_age_key="max-age",
    append_status=204,
    problem_types=frozenset({MISMATCHING_OFFSET, COMPLETED_UPLOAD, INCONSISTENT_LENGTH}),
    head_forbidden=(),
    delete_forbidden=(),
    append_errors_incomplete=True,
    zero_length_creation_completes=False,
    inactive_not_found=False,
    sections=_late_sections("draft-06", media="5", problems="6", interop="§4.2.3"),
)
_V8 = replace(
    _V7,
    version=8,
    drafts=("-09", "-10", "-11"),
    invalid_fields_ignored=True,
    options_accept_patch=True,
    nonempty_completed_is_inconsistent=True,
    sections=_late_sections("draft-09", media="6", problems="7", interop="Appendix B"),
)
_V9 = replace(
    _V8,
    version=9,
    drafts=("-12",),
    problem_types=frozenset({MISMATCHING_OFFSET, INCONSISTENT_LENGTH}),
    options_accept_patch=False,
    get_retrieves_offset=True,
    replay_completed=True,
    provisional=True,
    sections=_late_sections("draft-12", media="6", problems="7", interop="Appendix B"),
)
INTEROP_VERSIONS: dict[int, Interop] = {
    row.version: row for row in (_V3, _V4, _V5, _V6, _V7, _V8, _V9)
}

# The versions served by default: every row whose draft text was read (9 is opt-in, P24).
SUPPORTED: dict[int, Interop] = {
    number: row for number, row in INTEROP_VERSIONS.items() if not row.provisional
}


# --- Structured fields (RFC 9651, which obsoletes RFC 8941) -------------------------------


class StructuredFieldError(ValueError):
    """A field value that is not valid structured-field syntax (or not the expected type)."""


class Token(str):
    """An sf-token (RFC 9651 §3.3.4), kept apart from sf-strings."""

    __slots__ = ()


@dataclass(frozen=True)
class Date:
    """An sf-date (RFC 9651 §3.3.7): seconds since the epoch."""

    seconds: int


@dataclass(frozen=True)
class DisplayString:
    """An sf-displaystring (RFC 9651 §3.3.8): Unicode text."""

    value: str


BareItem = int | bool | Decimal | str | Token | bytes | Date | DisplayString
Parameters = dict[str, BareItem]


@dataclass(frozen=True)
class Item:
    """An sf-item: a bare item with its parameters (RFC 9651 §3.3)."""

    value: BareItem
    params: Parameters


@dataclass(frozen=True)
class InnerList:
    """An sf-inner-list (RFC 9651 §3.1.1)."""

    items: tuple[Item, ...]
    params: Parameters


MAX_SF_INTEGER = 999_999_999_999_999  # "at most 15 digits" (RFC 9651 §3.3.1)
_LCALPHA = "abcdefghijklmnopqrstuvwxyz"
_DIGIT = "0123456789"
_ALPHA = _LCALPHA + _LCALPHA.upper()
_TCHAR = _ALPHA + _DIGIT + "!#$%&'*+-.^_`|~"
_KEY_CHARS = _LCALPHA + _DIGIT + "_-.*"
_BASE64_CHARS = _ALPHA + _DIGIT + "+/="
_LCHEX = "0123456789abcdef"


class _Parser:
    """RFC 9651 §4.2 parsing algorithms over one field value (a cursor over the text)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        char = self.peek()
        self.pos += 1
        return char

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def skip(self, chars: str) -> None:
        while not self.at_end() and self.text[self.pos] in chars:
            self.pos += 1

    def fail(self, why: str) -> StructuredFieldError:
        return StructuredFieldError(f"{why} at position {self.pos} of {self.text!r}")

    def item(self) -> Item:
        """§4.2.3: a bare item, then parameters."""
        value = self.bare_item()
        return Item(value, self.parameters())

    def bare_item(self) -> BareItem:
        """§4.2.3.1: the first character picks the type."""
        char = self.peek()
        if char == "-" or (char and char in _DIGIT):
            return self.number()
        if char == '"':
            return self.string()
        if char == "*" or (char and char in _ALPHA):
            return self.token()
        if char == ":":
            return self.byte_sequence()
        if char == "?":
            return self.boolean()
        if char == "@":
            return self.date()
        if char == "%":
            return self.display_string()
        raise self.fail("expected a bare item")

    def parameters(self) -> Parameters:
        """§4.2.3.2: `;key[=value]`, later duplicates win; a bare key means true."""
        params: Parameters = {}
        while self.peek() == ";":
            self.take()
            self.skip(" ")
            key = self.key()
            value: BareItem = True
            if self.peek() == "=":
                self.take()
                value = self.bare_item()
            params[key] = value
        return params

    def key(self) -> str:
        """§4.2.3.3: lcalpha or "*", then lcalpha / DIGIT / "_" / "-" / "." / "*"."""
        char = self.peek()
        if not char or char not in _LCALPHA + "*":
            raise self.fail("expected a key")
        start = self.pos
        self.skip(_KEY_CHARS)
        return self.text[start : self.pos]

    def number(self) -> int | Decimal:
        """§4.2.4: Integer (at most 15 digits) or Decimal (12 + 3 digits)."""
        start = self.pos
        if self.peek() == "-":
            self.take()
        if not self.peek() or self.peek() not in _DIGIT:
            raise self.fail("expected a digit")
        digits_start = self.pos
        self.skip(_DIGIT)
        whole = self.pos - digits_start
        if self.peek() != ".":
            if whole > 15:
                raise self.fail("integer has more than 15 digits")
            return int(self.text[start : self.pos])
        if whole > 12:
            raise self.fail("decimal has more than 12 integer digits")
        self.take()
        fraction_start = self.pos
        self.skip(_DIGIT)
        if not 1 <= self.pos - fraction_start <= 3:
            raise self.fail("decimal needs 1 to 3 fractional digits")
        return Decimal(self.text[start : self.pos])

    def string(self) -> str:
        """§4.2.5: printable ASCII between quotes; only \\" and \\\\ escapes."""
        self.take()
        out: list[str] = []
        while not self.at_end():
            char = self.take()
            if char == "\\":
                escaped = self.take()
                if escaped not in ('"', "\\"):
                    raise self.fail("bad escape in string")
                out.append(escaped)
            elif char == '"':
                return "".join(out)
            elif not " " <= char <= "~":
                raise self.fail("non-printable character in string")
            else:
                out.append(char)
        raise self.fail("unterminated string")

    def token(self) -> Token:
        """§4.2.6: ALPHA or "*", then tchar / ":" / "/"."""
        start = self.pos
        self.take()
        self.skip(_TCHAR + ":/")
        return Token(self.text[start : self.pos])

    def byte_sequence(self) -> bytes:
        """§4.2.7: base64 between colons (missing padding tolerated, as it SHOULD be)."""
        self.take()
        end = self.text.find(":", self.pos)
        if end < 0:
            raise self.fail("unterminated byte sequence")
        encoded = self.text[self.pos : end]
        if any(char not in _BASE64_CHARS for char in encoded):
            raise self.fail("bad character in byte sequence")
        self.pos = end + 1
        try:
            return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise self.fail("bad base64 in byte sequence") from None

    def boolean(self) -> bool:
        """§4.2.8: exactly `?1` or `?0`."""
        self.take()
        char = self.take()
        if char == "1":
            return True
        if char == "0":
            return False
        raise self.fail("boolean must be ?0 or ?1")

    def date(self) -> Date:
        """§4.2.9: `@` and an Integer."""
        self.take()
        value = self.number()
        if not isinstance(value, int):
            raise self.fail("date must be an integer")
        return Date(value)

    def display_string(self) -> DisplayString:
        """§4.2.10: `%"`, printable ASCII and lowercase %xx escapes of UTF-8 bytes."""
        self.take()
        if self.take() != '"':
            raise self.fail('display string must start with %"')
        out = bytearray()
        while not self.at_end():
            char = self.take()
            if char == "%":
                pair = self.text[self.pos : self.pos + 2]
                if len(pair) != 2 or any(c not in _LCHEX for c in pair):
                    raise self.fail("bad escape in display string")
                self.pos += 2
                out.append(int(pair, 16))
            elif char == '"':
                try:
                    return DisplayString(out.decode("utf-8"))
                except UnicodeDecodeError:
                    raise self.fail("display string is not UTF-8") from None
            elif not " " <= char <= "~":
                raise self.fail("non-printable character in display string")
            else:
                out.append(ord(char))
        raise self.fail("unterminated display string")

    def item_or_inner_list(self) -> Item | InnerList:
        """§4.2.1.1."""
        return self.inner_list() if self.peek() == "(" else self.item()

    def inner_list(self) -> InnerList:
        """§4.2.1.2: `(` items separated by SP `)` then parameters."""
        self.take()
        items: list[Item] = []
        while not self.at_end():
            self.skip(" ")
            if self.peek() == ")":
                self.take()
                return InnerList(tuple(items), self.parameters())
            items.append(self.item())
            if self.peek() not in (" ", ")"):
                raise self.fail("inner list items must be separated by spaces")
        raise self.fail("unterminated inner list")

    def dictionary(self) -> dict[str, Item | InnerList]:
        """§4.2.2: `key[=member]` separated by commas; later duplicates win."""
        members: dict[str, Item | InnerList] = {}
        while not self.at_end():
            key = self.key()
            if self.peek() == "=":
                self.take()
                members[key] = self.item_or_inner_list()
            else:
                members[key] = Item(True, self.parameters())
            self.skip(" \t")
            if self.at_end():
                return members
            if self.take() != ",":
                raise self.fail("expected a comma")
            self.skip(" \t")
            if self.at_end():
                raise self.fail("trailing comma")
        return members


def _field_text(value: str) -> str:
    """Surrounding whitespace is not part of a field value (RFC 9651 §4.2 steps 2 and 4)."""
    return value.strip(" \t")


def parse_item(value: str) -> Item:
    """An Item structured field (RFC 9651 §4.2 with type "item")."""
    parser = _Parser(_field_text(value))
    if parser.at_end():
        raise StructuredFieldError("empty field value")
    item = parser.item()
    if not parser.at_end():
        raise parser.fail("unexpected text after the item")
    return item


def parse_dictionary(value: str) -> dict[str, Item | InnerList]:
    """A Dictionary structured field (RFC 9651 §4.2 with type "dictionary")."""
    return _Parser(_field_text(value)).dictionary()


def parse_integer(value: str, *, non_negative: bool = True) -> int:
    """An Item whose bare item is an Integer (≤ 15 digits, RFC 9651 §3.3.1); parameters are
    allowed and ignored. Upload-Offset and Upload-Length are non-negative (-09 §4.1.1, §4.1.3,
    and every earlier draft in substance: an offset "counted in bytes", draft-01 §9.1)."""
    bare = parse_item(value).value
    if type(bare) is not int:  # bool is an int subclass; ?1 is not an Integer
        raise StructuredFieldError(f"{value!r} is not an sf-integer")
    if non_negative and bare < 0:
        raise StructuredFieldError(f"{value!r} is negative")
    return bare


def parse_boolean(value: str) -> bool:
    """An Item whose bare item is a Boolean (`?1`/`?0`); parameters such as `?1;a=b` are valid
    SF and ignored, where a string compare would reject them (P17)."""
    bare = parse_item(value).value
    if not isinstance(bare, bool):
        raise StructuredFieldError(f"{value!r} is not an sf-boolean")
    return bare


def parse_interop_version(value: str) -> int | None:
    """Upload-Draft-Interop-Version: "an Integer" (-01 §4.2 ABNF sf-integer; -02 on). None when
    the value is not one, which `classify` treats like any version it does not implement."""
    try:
        return parse_integer(value, non_negative=False)
    except StructuredFieldError:
        return None


def serialize_bare_item(value: int | bool | Token) -> str:
    """RFC 9651 §4.1.3 for the types the draft's responses use: Integer, Boolean, Token."""
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, Token):
        if not value or value[0] not in _ALPHA + "*" or any(c not in _TCHAR + ":/" for c in value):
            raise StructuredFieldError(f"{value!r} is not a token")
        return str(value)
    if abs(value) > MAX_SF_INTEGER:
        raise StructuredFieldError(f"{value} does not fit in an sf-integer")
    return str(value)


def serialize_dictionary(members: Mapping[str, int | bool | Token]) -> str:
    """RFC 9651 §4.1.2: `key=value` joined by ", "; a true Boolean is the bare key."""
    parts = []
    for key, value in members.items():
        if not key or key[0] not in _LCALPHA + "*" or any(c not in _KEY_CHARS for c in key):
            raise StructuredFieldError(f"{key!r} is not a dictionary key")
        parts.append(key if value is True else f"{key}={serialize_bare_item(value)}")
    return ", ".join(parts)


# --- Errors and problem documents (RFC 9457) -------------------------------------------------


class Rendered(NamedTuple):
    """A final response ready to send: status, headers (Content-Type included), body."""

    status: int
    headers: dict[str, str]
    body: bytes


_REASONS = {400: "Bad Request", 409: "Conflict", 410: "Gone", 415: "Unsupported Media Type"}


class IetfError(Exception):
    """A request the server refuses. `problem` names the draft's problem type, if any; whether
    it is used depends on the request's version (`render`)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        problem: str | None = None,
        extensions: Mapping[str, int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problem = problem
        self.extensions = dict(extensions or {})
        self.headers = dict(headers or {})

    def with_headers(self, headers: Mapping[str, str]) -> IetfError:
        """This error with `headers` added (its own win), e.g. the offset to resume from."""
        self.headers = {**headers, **self.headers}
        return self

    def problem_document(self, interop: Interop | None) -> dict[str, object] | None:
        """The RFC 9457 object for this version, or None for a plain-text body.

        Versions 3-5 define no problem details, so they get text (P6). A version that uses them
        gets the draft's type only when it defines it (-04 §10, -06 §6, -09 §7; `completed-upload`
        is gone in v9*), otherwise "about:blank" (RFC 9457 §4.2.1) without extension members.
        A request of unknown version (interop None) gets an about:blank document."""
        if interop is not None and not interop.problem_documents:
            return None
        typed = interop is not None and self.problem in interop.problem_types
        document: dict[str, object] = {}
        if typed and self.problem is not None:
            document["type"] = PROBLEM_BASE + self.problem
            document["title"] = PROBLEM_TITLES[self.problem]
        else:
            document["type"] = "about:blank"
            document["title"] = _REASONS.get(self.status, "Error")
        document["status"] = self.status
        document["detail"] = self.detail
        if typed:
            document.update(self.extensions)
        return document

    def render(self, interop: Interop | None) -> Rendered:
        """Status, headers and body for a request of this version (None: unknown version)."""
        headers = dict(self.headers)
        document = self.problem_document(interop)
        if document is None:
            headers["Content-Type"] = "text/plain; charset=utf-8"
            return Rendered(self.status, headers, (self.detail + "\n").encode())
        headers["Content-Type"] = PROBLEM_JSON
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        return Rendered(self.status, headers, body)


def sends_problem_type(interop: Interop, problem: str) -> bool:
    """Whether a response to this version carries `problem` as its RFC 9457 type (P6, P7)."""
    return interop.problem_documents and problem in interop.problem_types


def bad_request(detail: str) -> IetfError:
    """400 for a malformed request (RFC 9110 §15.5.1); rendered as about:blank."""
    return IetfError(400, detail)


def unsupported_version(value: str, versions: Iterable[int] = tuple(SUPPORTED)) -> IetfError:
    """400 naming the interop versions this server implements: a request with any other value
    gets no 104 ("MUST NOT send a 104 … when the interop version … is missing or mismatching",
    draft-01 §4.2 … -11 Appendix B) and, unless it is a one-shot upload, no upload (P23)."""
    names = ", ".join(str(number) for number in sorted(versions))
    return IetfError(
        400, f"{INTEROP_HEADER} {value.strip()!r} is not supported; supported versions: {names}"
    )


def unsupported_media_type(interop: Interop) -> IetfError:
    """415 for an append that is not `application/partial-upload` (-04 §6 on: "MUST use the
    PATCH method with the application/partial-upload media type"). The drafts give no status
    (P12); RFC 5789 §2.2 names 415 for an unsupported patch document with Accept-Patch, and
    tus 1.0 answers its own PATCH media type error with 415 too."""
    return IetfError(
        415,
        f"PATCH needs Content-Type: {PARTIAL_UPLOAD} ({interop.cite('append')})",
        headers={"Accept-Patch": PARTIAL_UPLOAD},
    )


def mismatching_offset(interop: Interop, expected: int, provided: int) -> IetfError:
    """409 with the right Upload-Offset: every version ("MUST respond with 409 (Conflict)",
    draft-01 §6; "MUST include the correct offset", -06 §4.4.2). The upload is incomplete, so the
    completeness field says so (v9* §4.4.2: "and the Upload-Complete header field set to false").
    The problem type and its members are used from v6 (-04 §10.1 MAY, -06 §6.1) (P6)."""
    return IetfError(
        409,
        f"Upload-Offset {provided} does not match the upload's offset {expected}"
        f" ({interop.cite('append')})",
        problem=MISMATCHING_OFFSET,
        extensions={"expected-offset": expected, "provided-offset": provided},
        headers={"Upload-Offset": str(expected), **completeness_header(interop, False)},
    )


def inconsistent_length(interop: Interop, detail: str) -> IetfError:
    """400 for length indicators that disagree, within a request or with the recorded length:
    "MUST reject the request … 400 (Bad Request)" (-02 §6, -05 §4), "MUST match" (-06 §4.1.3),
    with the inconsistent-upload-length type from v7 (-06 §6.3) (P16)."""
    section = interop.sections.get("length", interop.cite("append"))
    return IetfError(400, f"{detail} ({section})", problem=INCONSISTENT_LENGTH)


def length_exceeded(interop: Interop, length: int) -> IetfError:
    """400 once an append goes past the recorded length: "stop appending bytes … once the offset
    reaches the final size and reject the request with a 400" (-05 §6), "rejecting the request
    … marking the upload resource invalid" (-08/-10 §4.4.2). Sending more bytes than the length
    announced is an inconsistent length, so v7+ get that problem type (P16)."""
    return inconsistent_length(interop, f"the upload's length is {length} bytes; data went past it")


def completed_upload(
    interop: Interop,
    *,
    offset: int,
    provided_offset: int,
    content_length: int | None,
    complete: bool,
) -> IetfError | None:
    """The answer to an append to an upload that is already complete; None means "replay the
    successful completing response" (v9* only). One answer per version (P7):

    * 3-5: undefined; 400 like v6, plain text.
    * 6: "MUST NOT modify the upload resource and MUST respond with a 400", completed-upload
      MAY (-04 §6).
    * 7: "MUST reject the request" (-06 §4.4.2); 400 + completed-upload as in §6.2's example.
    * 8: non-empty: "MUST treat this as an inconsistent length failure" (-10 §4.4.2), so 400 +
      inconsistent-upload-length; empty: 400 + completed-upload (the -09 MUST reject, and the
      IANA-recommended status of the type; 410 is only "can" in -10 and assumes the upload is
      no longer available, which ours still is).
    * 9*: "can choose to replay the final response … if the request … is valid" (an empty
      `?1` append at the final offset), otherwise as 8 without the removed completed-upload.

    The headers give the offset; the completeness field says complete in 3-6 and false in 7+,
    where "any response, successful or not" to a non-completing request carries
    `Upload-Complete: ?0` (-06 §4.4.2; v9* §4.1.2 "can be false in response to an invalid
    operation performed on a completed upload")."""
    empty = content_length == 0
    if interop.replay_completed and empty and complete and provided_offset == offset:
        return None
    headers = {
        "Upload-Offset": str(offset),
        **completeness_header(interop, not interop.append_errors_incomplete),
    }
    where = interop.cite("append")
    if not empty and interop.nonempty_completed_is_inconsistent:
        detail = f"the upload is complete at {offset} bytes; no data can be appended ({where})"
        return IetfError(400, detail, problem=INCONSISTENT_LENGTH, headers=headers)
    detail = f"the upload is already complete ({where})"
    return IetfError(400, detail, problem=COMPLETED_UPLOAD, headers=headers)


def check_recorded_length(interop: Interop, recorded: int | None, indicated: int | None) -> None:
    """ "If multiple requests include indicators, their indicated values MUST match" (-06
    §4.1.3; -02 §6 "that value MUST match … 400"): a request's length against the stored one."""
    if recorded is not None and indicated is not None and recorded != indicated:
        raise inconsistent_length(
            interop, f"the request says the length is {indicated}, the upload has {recorded}"
        )


# --- Request classification ----------------------------------------------------------------


@dataclass(frozen=True)
class Creation:
    """Upload creation (draft-01 §4 … -06 §4.2): a request with content to the creation URL."""

    interop: Interop
    complete: bool  # the body is the whole upload
    length: int | None  # the declared final length, if any indicator gave one
    content_length: int | None
    metadata: dict[str, str]  # filetype/filename (+ Upload-Metadata keys)


@dataclass(frozen=True)
class Append:
    """Upload append (draft-01 §6 … -06 §4.4): PATCH to an upload URL."""

    interop: Interop
    offset: int  # Upload-Offset as sent; the caller compares it with the upload's offset
    complete: bool
    length: int | None  # the length this request indicates (check_recorded_length)
    content_length: int | None
    complete_implied: bool  # the completeness field was absent (v3-6, P2)


@dataclass(frozen=True)
class OffsetRetrieval:
    """Offset retrieval (draft-01 §5 … -06 §4.3): HEAD (and GET in v9*) on an upload URL."""

    interop: Interop
    method: str


@dataclass(frozen=True)
class Cancellation:
    """Upload cancellation (draft-01 §7 … -06 §4.5): DELETE on an upload URL."""

    interop: Interop


@dataclass(frozen=True)
class Options:
    """OPTIONS with the interop header: discovery (-05 §8.2, -06 §4.1.4, -10 §4.1.4)."""

    interop: Interop
    upload_url: bool


@dataclass(frozen=True)
class UnknownVersion:
    """An IETF-looking request whose interop version is not served: never a 104 (P9). A
    `one_shot` upload (creation that does not say it is incomplete) can still be stored as a
    plain upload (201); anything else gets `error()` (P23)."""

    value: str
    one_shot: bool
    supported: tuple[int, ...]
    content_length: int | None  # a one-shot upload's length, when the request gives it

    def error(self) -> IetfError:
        """400 naming the supported versions."""
        return unsupported_version(self.value, self.supported)


IetfRequest = Creation | Append | OffsetRetrieval | Cancellation | Options | UnknownVersion

# Creation methods: "POST, PUT, and PATCH" (-06 §4.2.1; draft-01 §4 allowed any method with
# content, but no client uses another, and TRACE or CONNECT must never create an upload).
_CREATION_METHODS = frozenset({"POST", "PUT", "PATCH"})


def fold_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased names; repeated fields joined with ", " as RFC 9110 §5.3 combines them (so a
    repeated Item field becomes invalid SF instead of silently picking one)."""
    folded: dict[str, str] = {}
    for name, value in headers.items():  # starlette's Headers lists every line, duplicates too
        key = name.lower()
        folded[key] = f"{folded[key]}, {value}" if key in folded else value
    return folded


def classify(
    method: str,
    *,
    upload_url: bool,
    headers: Mapping[str, str],
    versions: Mapping[int, Interop] = SUPPORTED,
) -> IetfRequest | None:
    """What an IETF request means, or None when it is not one (no interop header, a
    Tus-Resumable header, or no resumable procedure at this URL with this method, which the
    caller serves as plain HTTP). Raises IetfError for a malformed request of a known version.

    The URL is looked at first and the method second (draft-01 §8, P22): at the creation URL
    every method that carries content creates (-01 §4 "all methods … with the exception of GET,
    HEAD, DELETE, and OPTIONS"; -06 §4.2.1 "POST, PUT, and PATCH"); at an upload URL HEAD
    retrieves the offset, DELETE cancels and PATCH appends. The caller applies any
    X-HTTP-Method-Override first (tus-js-client's overridePatchMethod). The version is taken
    from each request, never from the upload (P23)."""
    fields = fold_headers(headers)
    raw = fields.get(INTEROP_HEADER.lower())
    if raw is None or "tus-resumable" in fields:
        return None
    number = parse_interop_version(raw)
    interop = versions.get(number) if number is not None else None
    procedure = _procedure(method.upper(), upload_url, interop)
    if procedure is None:
        return None
    if interop is None:
        if procedure == "options":
            return None
        one_shot = procedure == "creation" and not _says_incomplete(fields)
        return UnknownVersion(raw, one_shot, tuple(sorted(versions)), _content_length(fields))
    if procedure == "options":
        return Options(interop, upload_url)
    if procedure == "creation":
        return _creation(interop, fields)
    if procedure == "offset":
        _reject_fields(interop, fields, interop.head_forbidden, "offset")
        return OffsetRetrieval(interop, method.upper())
    if procedure == "cancel":
        _reject_fields(interop, fields, interop.delete_forbidden, "cancel")
        return Cancellation(interop)
    return _append(interop, fields)


def _procedure(method: str, upload_url: bool, interop: Interop | None) -> str | None:
    """The draft-01 §8 identification algorithm (plus OPTIONS, and GET in v9*)."""
    if method == "OPTIONS":
        return "options"
    if not upload_url:
        return "creation" if method in _CREATION_METHODS else None
    if method == "HEAD" or (
        method == "GET" and interop is not None and interop.get_retrieves_offset
    ):
        return "offset"
    if method == "DELETE":
        return "cancel"
    if method == "PATCH":
        return "append"
    return None


def _says_incomplete(fields: Mapping[str, str]) -> bool:
    """Whether a request of unknown version announces more parts in either spelling: a client
    unsure of support "MUST NOT" do so (draft-01 §4.1, -02 §4.1), so anything else is a
    plain one-shot upload."""
    for name, incomplete in (("upload-complete", False), ("upload-incomplete", True)):
        raw = fields.get(name)
        if raw is None:
            continue
        try:
            if parse_boolean(raw) == incomplete:
                return True
        except StructuredFieldError:
            continue
    return False


def _creation(interop: Interop, fields: Mapping[str, str]) -> Creation:
    """draft-01/-05 §4, -06 §4.2: completeness is required, the length comes from Upload-Length
    and/or Content-Length with `?1`, Upload-Offset is not allowed (0 is tolerated, as Apple's
    reference server does)."""
    complete = _completeness(interop, fields)
    if complete is None:
        raise bad_request(f"{interop.complete_field} is required ({interop.cite('creation')})")
    offset = _integer_field(interop, fields, "Upload-Offset")
    if offset not in (None, 0):
        raise bad_request(f"Upload-Offset is not allowed on creation ({interop.cite('creation')})")
    content_length = _content_length(fields)
    length = _declared_length(interop, fields, 0, complete, content_length)
    if not complete and length == 0 and interop.zero_length_creation_completes:
        # tus-js-client's empty-file flow (`'ietf-draft-03'`/`'-05'`: interop 5 and 6) creates
        # with `?0` + Upload-Length: 0 and then reports success without ever sending `?1`;
        # nothing can follow a zero length, so the creation completes it (P8).
        complete = content_length in (None, 0)
    return Creation(interop, complete, length, content_length, representation_metadata(fields))


def _append(interop: Interop, fields: Mapping[str, str]) -> Append:
    """draft-01 §6 … -06 §4.4: media type (v6+), Upload-Offset required, completeness required
    from v7, absent = last part before (P2), length indicators consistent."""
    if interop.partial_upload_required and not _is_partial_upload(fields.get("content-type")):
        raise unsupported_media_type(interop)
    offset = _integer_field(interop, fields, "Upload-Offset")
    if offset is None:
        raise bad_request(f"Upload-Offset is required ({interop.cite('append')})")
    complete = _completeness(interop, fields)
    implied = complete is None
    if complete is None:
        if interop.absent_complete_on_append is None:
            raise bad_request(f"{interop.complete_field} is required ({interop.cite('append')})")
        complete = interop.absent_complete_on_append
    content_length = _content_length(fields)
    length = _declared_length(interop, fields, offset, complete, content_length)
    return Append(interop, offset, complete, length, content_length, implied)


def _reject_fields(
    interop: Interop, fields: Mapping[str, str], names: tuple[str, ...], procedure: str
) -> None:
    """HEAD/DELETE carrying upload fields: "The server MUST reject requests with either of
    these fields by responding with a 400" (draft-01…-05 §5 and §7; v7+ dropped it, P13)."""
    present = [name for name in names if name.lower() in fields]
    if present:
        listed = ", ".join(present)
        raise bad_request(f"{listed} not allowed here ({interop.cite(procedure)})")


def _completeness(interop: Interop, fields: Mapping[str, str]) -> bool | None:
    """The request's completeness as "is complete" (inverting Upload-Incomplete), None when the
    field is absent, or ignored as invalid in v8+ (-09 §4.1.2)."""
    raw = fields.get(interop.complete_field.lower())
    if raw is None:
        return None
    try:
        value = parse_boolean(raw)
    except StructuredFieldError:
        if interop.invalid_fields_ignored:
            return None
        raise bad_request(
            f"{interop.complete_field} must be ?0 or ?1 ({interop.cite('fields')})"
        ) from None
    return not value if interop.complete_inverted else value


def _integer_field(interop: Interop, fields: Mapping[str, str], name: str) -> int | None:
    """Upload-Offset / Upload-Length as non-negative sf-integers. An invalid value is a 400 up
    to v7 and ignored from v8 ("Other values MUST cause the entire header field to be ignored",
    -09 §4.1.1, §4.1.3, P17). Upload-Length before v6 is not a draft field: tus-js-client sends
    it in the tus sense, which means the same, so it is used when valid and ignored otherwise."""
    raw = fields.get(name.lower())
    if raw is None:
        return None
    try:
        return parse_integer(raw)
    except StructuredFieldError:
        defined = name != "Upload-Length" or interop.defines_upload_length
        if interop.invalid_fields_ignored or not defined:
            return None
        raise bad_request(
            f"{name} must be a non-negative integer of at most 15 digits ({interop.cite('fields')})"
        ) from None


def _content_length(fields: Mapping[str, str]) -> int | None:
    """Content-Length as the HTTP layer accepted it (digits), None when absent (chunked)."""
    raw = fields.get("content-length", "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() else None


def _declared_length(
    interop: Interop,
    fields: Mapping[str, str],
    offset: int,
    complete: bool,
    content_length: int | None,
) -> int | None:
    """The two length indicators (-06 §4.1.3; -02 §4/§6 for the second, -05 §4 for both):
    Upload-Length, and offset + Content-Length when the request completes the upload. "If
    indicators (1) and (2) are both present in the same request, their indicated lengths MUST
    match"; a body running past Upload-Length is inconsistent too."""
    upload_length = _integer_field(interop, fields, "Upload-Length")
    by_content = offset + content_length if complete and content_length is not None else None
    if upload_length is not None and by_content is not None and upload_length != by_content:
        raise inconsistent_length(
            interop,
            f"Upload-Length {upload_length} does not match {offset} + Content-Length"
            f" {content_length}",
        )
    if (
        upload_length is not None
        and content_length is not None
        and offset + content_length > upload_length
    ):
        raise inconsistent_length(
            interop, f"{offset} + Content-Length {content_length} exceeds {upload_length}"
        )
    return upload_length if upload_length is not None else by_content


def _is_partial_upload(value: str | None) -> bool:
    """The media type without parameters, case-insensitively (P12; Apple compares exactly)."""
    return value is not None and value.split(";", 1)[0].strip().lower() == PARTIAL_UPLOAD


# --- Response headers ----------------------------------------------------------------------


def interop_header(interop: Interop) -> dict[str, str]:
    """The request's own interop version, echoed ("MUST also send a header field
    Upload-Draft-Interop-Version with the interop version as its value to the 104", draft-01
    §4.2 … -11 Appendix B)."""
    return {INTEROP_HEADER: str(interop.version)}


def completeness_header(interop: Interop, complete: bool) -> dict[str, str]:
    """`Upload-Complete: ?1/?0` (-02 §8.2 on), or in interop 3 `Upload-Incomplete: ?0/?1`
    (draft-01 §9.2: true means the upload is NOT complete)."""
    return {interop.complete_field: interop.complete_value(complete)}


def upload_limit(
    interop: Interop, *, max_size: int | None = None, expires_in: float | None = None
) -> str | None:
    """The Upload-Limit Dictionary (-04 §8.2, -06 §4.1.4), None before v6 where it does not
    exist. `max-size` from the server's maximum (omitted when unlimited or beyond 15 digits: a
    smaller false limit would be worse than none), `min-size=0` always ("If the server does not
    apply any limits, it MUST use min-size=0", -05 §8.2), and the remaining lifetime in whole
    seconds as `expires` (v6) or `max-age` (v7+) (P10)."""
    if not interop.defines_upload_limit:
        return None
    members: dict[str, int] = {}
    if max_size and max_size <= MAX_SF_INTEGER:
        members["max-size"] = max_size
    members["min-size"] = 0
    if expires_in is not None and interop.limit_age_key is not None:
        members[interop.limit_age_key] = min(max(0, int(expires_in)), MAX_SF_INTEGER)
    return serialize_dictionary(members)


def _with_limit(headers: dict[str, str], limit: str | None) -> dict[str, str]:
    if limit is not None:
        headers["Upload-Limit"] = limit
    return headers


def creation_interim_headers(
    interop: Interop, location: str, limit: str | None = None
) -> dict[str, str]:
    """The 104 (Upload Resumption Supported) sent once the upload exists: Location "MUST be
    set" (draft-01 §4; -10 §4.2.2 "When sent, it MUST include Location"), the echoed interop
    version (P9), and Upload-Limit where the version has it (MAY -04 §4, -06 §4.2.2; MUST if
    limits exist -09 §4.2.2). Use the same absolute Location in the final response (-10 §4.2.2,
    P21)."""
    headers = {"Location": location, **interop_header(interop)}
    return _with_limit(headers, limit if interop.defines_upload_limit else None)


def progress_interim_headers(interop: Interop, offset: int) -> dict[str, str] | None:
    """A progress 104 with the durable offset (-03 §4/§6 MAY; -09 §4.4.2 SHOULD), which "MUST
    NOT include the Location header field"; None where the version defines none (3, 4)."""
    if not interop.progress_interims:
        return None
    return {"Upload-Offset": str(offset), **interop_header(interop)}


def offset_retrieval_headers(
    interop: Interop,
    *,
    offset: int,
    complete: bool,
    length: int | None = None,
    limit: str | None = None,
) -> dict[str, str]:
    """The HEAD response (status `interop.head_status`, 204, P15): Upload-Offset and the
    completeness field (MUST, draft-01 §5 on), Upload-Length when recorded (MUST, -05 §5,
    -06 §4.3.2), Upload-Limit (MAY -04 §5, MUST -09 §4.3.2) and `Cache-Control: no-store`
    (SHOULD, every version).

    Upload-Length goes to every version, also those that do not define it (3-5, whose clients
    ignore an unknown field): tus-js-client's `'ietf-draft-03'` (interop 5) tells a finished
    upload by `Upload-Offset == Upload-Length` and never reads the completeness field, so
    without it, resuming a finished upload appends past the file's end (P8)."""
    headers = {
        "Upload-Offset": str(offset),
        **completeness_header(interop, complete),
        "Cache-Control": "no-store",
    }
    if length is not None:
        headers["Upload-Length"] = str(length)
    return _with_limit(headers, limit if interop.defines_upload_limit else None)


def creation_response_headers(
    interop: Interop,
    *,
    location: str,
    offset: int,
    complete: bool,
    limit: str | None = None,
) -> dict[str, str]:
    """The final response to a creation (status `interop.creation_status`, 201): Location
    (MUST, draft-01 §4, -06 §4.2.2), Upload-Offset (MUST in 3-6 and needed by tus-js-client,
    P5), the completeness field (MUST when incomplete; `?1` on completion, P19) and Upload-Limit
    (SHOULD -06 §4.2.2, MUST -09 §4.2.2)."""
    headers = {
        "Location": location,
        "Upload-Offset": str(offset),
        **completeness_header(interop, complete),
    }
    return _with_limit(headers, limit if interop.defines_upload_limit else None)


def append_response_headers(interop: Interop, *, offset: int, complete: bool) -> dict[str, str]:
    """The final response to an append (status `success_status`): Upload-Offset (MUST in 3-6,
    P5) and the completeness field ("MUST include the Upload-Complete header field with a true
    value" on completion, false otherwise, -06 §4.4.2)."""
    return {"Upload-Offset": str(offset), **completeness_header(interop, complete)}


def success_status(interop: Interop, *, creation: bool) -> int:
    """201 for every creation; for appends 201 in 3-6 (MUST when incomplete, RECOMMENDED when
    complete, draft-01 … -05 §6) and 204 from v7 ("2xx", -06 §4.4.2) (P4)."""
    return interop.creation_status if creation else interop.append_status


def options_headers(interop: Interop, *, max_size: int | None = None) -> dict[str, str]:
    """OPTIONS discovery: Upload-Limit (MUST -05 §8.2, -06 §4.1.4, -09 §4.1.4, v9*; SHOULD
    -10/-11) and Accept-Patch with the full `application/partial-upload` (MUST -10/-11 §4.1.4,
    removed in v9*). v8 spans both, so it gets both (P1). Nothing in 3-5 (none defined)."""
    headers: dict[str, str] = {}
    if interop.options_accept_patch:
        headers["Accept-Patch"] = PARTIAL_UPLOAD
    limit = upload_limit(interop, max_size=max_size) if interop.options_upload_limit else None
    return _with_limit(headers, limit)


# --- Representation metadata ----------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(r'"((?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*)"')
_EXT_VALUE = re.compile(
    r"([!#$%&+\-^_`{}~0-9A-Za-z]+)'([A-Za-z0-9-]*)'((?:%[0-9A-Fa-f]{2}|[!#$&+\-.^_`|~0-9A-Za-z])*)"
)
_EXT_CHARSETS = {"utf-8": "utf-8", "iso-8859-1": "latin-1"}
MAX_FILENAME = 1024


def parse_content_disposition(value: str) -> tuple[str, dict[str, str]] | None:
    """RFC 6266 §4.1: `disposition-type *( ";" disposition-parm )`, parameter values a token or
    quoted-string. Returns the lower-cased type and the raw parameter values by lower-cased
    name; None when malformed or a parameter repeats (§4.1: such headers are invalid)."""
    text = value.strip(" \t")
    match = _TOKEN.match(text)
    if not match:
        return None
    kind, pos = match.group().lower(), match.end()
    params: dict[str, str] = {}
    while True:
        pos = _skip_ows(text, pos)
        if pos >= len(text):
            return kind, params
        if text[pos] != ";":
            return None
        pos = _skip_ows(text, pos + 1)
        if pos >= len(text):
            return kind, params  # a trailing ";" is harmless
        parsed = _parameter(text, pos)
        if parsed is None or parsed[0] in params:
            return None
        name, raw, pos = parsed
        params[name] = raw


def _skip_ows(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _parameter(text: str, pos: int) -> tuple[str, str, int] | None:
    """One `name = (token | quoted-string)` from `pos`: (lower-cased name, value, next pos)."""
    name = _TOKEN.match(text, pos)
    if not name:
        return None
    pos = _skip_ows(text, name.end())
    if pos >= len(text) or text[pos] != "=":
        return None
    pos = _skip_ows(text, pos + 1)
    quoted = _QUOTED.match(text, pos)
    if quoted:
        raw = re.sub(r"\\(.)", r"\1", quoted.group(1), flags=re.DOTALL)
        return name.group().lower(), raw, quoted.end()
    token = _TOKEN.match(text, pos)
    if not token:
        return None
    return name.group().lower(), token.group(), token.end()


def decode_ext_value(value: str) -> str | None:
    """RFC 8187 §3.2.1 `charset'[language]'value-chars`, percent-decoded; UTF-8 and ISO-8859-1
    are the charsets recipients must support (the only ones accepted). None when invalid."""
    match = _EXT_VALUE.fullmatch(value)
    if not match:
        return None
    charset = _EXT_CHARSETS.get(match.group(1).lower())
    if charset is None:
        return None
    try:
        return unquote_to_bytes(match.group(3)).decode(charset)
    except UnicodeDecodeError:
        return None


def disposition_filename(value: str) -> str | None:
    """The filename of a Content-Disposition (RFC 6266 §4.3): `filename*` wins over `filename`
    when both are usable. A quoted `filename` holding raw UTF-8 (common, though not standard)
    arrives as Latin-1 text from the HTTP layer and is re-decoded when it is valid UTF-8."""
    parsed = parse_content_disposition(value)
    if parsed is None:
        return None
    params = parsed[1]
    extended = params.get("filename*")
    name = decode_ext_value(extended) if extended is not None else None
    if name is None and "filename" in params:
        name = _latin1_utf8(params["filename"])
    return sanitize_filename(name) if name is not None else None


def _latin1_utf8(text: str) -> str:
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def sanitize_filename(name: str) -> str | None:
    """ "Recipients SHOULD ignore all but the last path segment" (RFC 6266 §4.3), and no control
    characters ("metadata MUST be validated and/or sanitized", -08 §12). None when nothing
    usable is left or it is longer than MAX_FILENAME."""
    last = re.split(r"[/\\]", name)[-1]
    cleaned = "".join(c for c in last if unicodedata.category(c) != "Cc").strip()
    if cleaned in ("", ".", "..") or len(cleaned) > MAX_FILENAME:
        return None
    return cleaned


def content_type_filetype(value: str | None) -> str | None:
    """The media type of Content-Type (parameters dropped, lower-cased) as `filetype`, unless it
    only frames the request (application/partial-upload, which tus-js-client sends on creation:
    P11) or is not a plain type/subtype."""
    if value is None:
        return None
    media = safe_mime_type(value.split(";", 1)[0])
    return None if media in TRANSFER_MEDIA_TYPES else media


def representation_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """Upload metadata of a creation request, in the tus store's shape.

    The draft's representation metadata (-01 §4, -06 §4.2.1): Content-Type → `filetype`,
    Content-Disposition's filename → `filename`. tus-js-client also sends tus `Upload-Metadata`
    in IETF mode (P11); its keys are taken as well, with the draft's own headers winning for
    `filetype`/`filename`. Invalid metadata is ignored, never a 400: servers "MAY ignore it"
    (-01 §4)."""
    fields = fold_headers(headers)
    metadata: dict[str, str] = {}
    raw = fields.get("upload-metadata")
    if raw is not None:
        try:
            parsed = parse_metadata(raw)
        except TusError:
            parsed = None
        if parsed is not None:
            metadata.update(parsed.text())
    filetype = content_type_filetype(fields.get("content-type"))
    if filetype is not None:
        metadata["filetype"] = filetype
    disposition = fields.get("content-disposition")
    filename = disposition_filename(disposition) if disposition is not None else None
    if filename is not None:
        metadata["filename"] = filename
    return metadata
