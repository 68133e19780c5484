"""The "ietf-draft" group: the IETF draft "Resumable Uploads for HTTP"
(draft-ietf-httpbis-resumable-upload), interop versions 3 to 9, checked beside tus.

A request that carries `Upload-Draft-Interop-Version` speaks the draft. Which interop versions
a server answers is found once per run (`detect`): for each of 3..9, a creation with the
version's "incomplete" field and an empty body; the version counts when the server answers it
as the draft says (2xx with a Location, plus the completeness field saying incomplete, a 104
echoing the version, or a HEAD of the new upload that reports its offset and completeness).
`python -m conformance URL --ietf-versions 3,5,6` picks the versions instead. A server that
answers none (a plain tus server, or ours with --disable-ietf-draft) has the group skipped with
that reason.

Each check runs once per interop version it applies to and reports every version's outcome;
a failure names the version and the section of its draft. Each quotes the sentences it
verifies, each followed by [draft and section]. Everything the checks know about a version is
in VERSIONS below (nothing comes from any server's code). "draft-NN" is
draft-ietf-httpbis-resumable-upload-NN with RFC-rendered section numbers. Every interop version
is cited by its latest draft: 3 = -01, 4 = -02, 5 = -03, 6 = -05 (-04 plus Upload-Length and
the OPTIONS rules), 7 = -08 (-06 and -07 number their sections alike), 8 = -11 (-09 and -10
alike), 9 = -12 (provisional: rebuilt from the editor's copy, not the published text).

Every upload a check creates is recorded on the Target, and cancelled at the end (DELETE with
the interop version it was created with).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urljoin

from conformance.draft_client import Head, Reply, request
from conformance.runner import GATES, INTEROP, Skip, Target, check

PARTIAL_UPLOAD = "application/partial-upload"
PROBED = tuple(range(3, 10))  # the interop versions a run looks for


# -- what each interop version requires --------------------------------------------------------


@dataclass(frozen=True)
class Version:
    """One interop version: the fields it names and the server rules the checks depend on."""

    number: int
    drafts: str  # the drafts that carry this interop version
    # "Upload-Incomplete" whose true means NOT complete (-01 §9.2), else "Upload-Complete"
    complete_field: str
    inverted: bool
    # where each rule is, in the version's latest draft (keys: creation, feature, interop,
    # offset, append, cancel, limit, length, accept-patch, http10)
    sections: Mapping[str, str] = field(hash=False, compare=False)
    head_statuses: tuple[int, ...] | None = None  # success statuses of HEAD; None = any 2xx
    strict_responses: bool = False  # -01…-05: 201 + the field on incomplete, Upload-Offset always
    # an incomplete append's answer must say incomplete: -01 (Upload-Incomplete: ?1), -06 on
    # ("any response, successful or not"); -02…-05 §6 say "set to true" there (a typo), so no
    append_says_incomplete: bool = False
    partial_upload: bool = False  # PATCH uses application/partial-upload (-04 §6 on)
    upload_length: bool = False  # the Upload-Length field exists (-05 §8.4 on)
    limit_age_key: str | None = None  # Upload-Limit exists (-04 on); its lifetime key
    options_limit: bool = False  # OPTIONS MUST carry Upload-Limit (-05, -08, -12 §4.1.4)
    options_accept_patch: bool = False  # OPTIONS MUST carry Accept-Patch (-10/-11 §4.1.4)
    head_limit: bool = False  # HEAD MUST carry Upload-Limit (-09 on §4.3.2)
    limit_in_104: bool = False  # the creation 104 MUST carry Upload-Limit if limits exist (-09)
    identical_location: bool = False  # 104 and final Location identical, as text (-10 on)
    forbidden_on_head: tuple[str, ...] = ()  # fields that make a HEAD a 400 (-01…-05 §5)
    forbidden_on_delete: tuple[str, ...] = ()  # fields that make a DELETE a 400 (-01…-05 §7)
    delete_204: bool = False  # DELETE MUST answer 204 (-01…-08)
    conflict_says_incomplete: bool = False  # a 409 carries the field false (-06…-08, -12)
    completed_rejected: bool = False  # appending to a completed upload MUST be rejected (-04…-11)
    completed_status: int | None = None  # ... with this status (400 in -04/-05 §6)
    inconsistent_status: int | None = None  # inconsistent lengths: this status (400, -05 §4)

    def cite(self, key: str) -> str:
        return self.sections[key]


def _sections(draft: str, **numbers: str) -> dict[str, str]:
    return {key.replace("_", "-"): f"{draft} {value}" for key, value in numbers.items()}


_HTTP10 = "RFC 9110 §15.2"
_EARLY = {"creation": "§4", "feature": "§4.1", "interop": "§4.2", "offset": "§5", "append": "§6"}
_LATE = {
    "creation": "§4.2.2",
    "feature": "§4.2.2",
    "offset": "§4.3.2",
    "append": "§4.4.2",
    "cancel": "§4.5.2",
    "limit": "§4.1.4",
    "length": "§4.1.3",
    "accept_patch": "§4.1.4",
}

# Each version after the first names only what changed from the one before.
_V3 = Version(
    3,
    "-01",
    "Upload-Incomplete",
    True,
    {**_sections("draft-01", **_EARLY, cancel="§7"), "http10": _HTTP10},
    head_statuses=(204,),
    strict_responses=True,
    append_says_incomplete=True,
    forbidden_on_head=("Upload-Offset", "Upload-Incomplete"),
    forbidden_on_delete=("Upload-Offset", "Upload-Incomplete"),
    delete_204=True,
)
_V4 = replace(
    _V3,
    number=4,
    drafts="-02",
    complete_field="Upload-Complete",
    inverted=False,
    sections={**_sections("draft-02", **_EARLY, cancel="§7"), "http10": _HTTP10},
    append_says_incomplete=False,
    forbidden_on_head=("Upload-Offset", "Upload-Complete"),
    forbidden_on_delete=("Upload-Offset", "Upload-Complete"),
)
_V5 = replace(
    _V4,
    number=5,
    drafts="-03",
    sections={**_sections("draft-03", **_EARLY, cancel="§7"), "http10": _HTTP10},
    head_statuses=(204, 200),
)
_V6 = replace(
    _V5,
    number=6,
    drafts="-04, -05",
    sections={
        **_sections("draft-05", **_EARLY, cancel="§7", limit="§8.2", length="§4"),
        "http10": _HTTP10,
    },
    partial_upload=True,
    upload_length=True,
    limit_age_key="expires",
    options_limit=True,
    forbidden_on_head=("Upload-Offset", "Upload-Complete", "Upload-Length"),
    completed_rejected=True,
    completed_status=400,
    inconsistent_status=400,
)
_V7 = replace(
    _V6,
    number=7,
    drafts="-06, -07, -08",
    sections={**_sections("draft-08", **_LATE, interop="§4.2.3"), "http10": _HTTP10},
    head_statuses=None,
    strict_responses=False,
    append_says_incomplete=True,
    limit_age_key="max-age",
    forbidden_on_head=(),
    forbidden_on_delete=(),
    conflict_says_incomplete=True,
    completed_status=None,
    inconsistent_status=None,
)
_V8 = replace(
    _V7,
    number=8,
    drafts="-09, -10, -11",
    sections={**_sections("draft-11", **_LATE, interop="App. B"), "http10": _HTTP10},
    options_limit=False,
    options_accept_patch=True,
    head_limit=True,
    limit_in_104=True,
    identical_location=True,
    delete_204=False,
    conflict_says_incomplete=False,
)
_V9 = replace(
    _V8,
    number=9,
    drafts="-12 (provisional)",
    sections={**_sections("draft-12", **_LATE, interop="App. B"), "http10": _HTTP10},
    options_limit=True,
    options_accept_patch=False,
    conflict_says_incomplete=True,
    completed_rejected=False,
)
VERSIONS: dict[int, Version] = {v.number: v for v in (_V3, _V4, _V5, _V6, _V7, _V8, _V9)}
LIMIT_KEYS = ("max-size", "min-size", "max-append-size", "min-append-size")


# -- structured fields (RFC 8941 / RFC 9651), as far as the checks read them ----------------------


class StructuredFieldError(ValueError):
    """Not valid structured-field syntax."""


class _Parser:
    """A recursive-descent parser of RFC 9651 Items and Dictionaries."""

    def __init__(self, text: str) -> None:
        self.text = text.strip(" \t")
        self.pos = 0

    def fail(self, why: str) -> StructuredFieldError:
        return StructuredFieldError(f"{why} at {self.pos} in {self.text!r}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.pos += 1

    def done(self) -> None:
        if self.pos != len(self.text):
            raise self.fail("trailing characters")

    def item(self) -> tuple[object, dict[str, object]]:
        return self.bare_item(), self.parameters()

    def member(self) -> tuple[object, dict[str, object]]:
        if self.peek() != "(":
            return self.item()
        self.pos += 1
        items = []
        while True:
            self.skip(" ")
            if self.peek() == ")":
                self.pos += 1
                return items, self.parameters()
            items.append(self.item())
            if self.peek() not in (" ", ")"):
                raise self.fail("inner list not closed")

    def dictionary(self) -> dict[str, tuple[object, dict[str, object]]]:
        members: dict[str, tuple[object, dict[str, object]]] = {}
        while self.pos < len(self.text):
            key = self.key()
            if self.peek() == "=":
                self.pos += 1
                members[key] = self.member()
            else:
                members[key] = (True, self.parameters())
            self.skip(" \t")
            if self.pos == len(self.text):
                return members
            if self.peek() != ",":
                raise self.fail("expected ','")
            self.pos += 1
            self.skip(" \t")
            if self.pos == len(self.text):
                raise self.fail("trailing comma")
        if not members:
            raise self.fail("empty dictionary")
        return members

    def key(self) -> str:
        match = re.compile(r"[a-z*][a-z0-9_.*-]*").match(self.text, self.pos)
        if not match:
            raise self.fail("expected a key")
        self.pos = match.end()
        return match.group()

    def parameters(self) -> dict[str, object]:
        params: dict[str, object] = {}
        while self.peek() == ";":
            self.pos += 1
            self.skip(" ")
            key = self.key()
            if self.peek() == "=":
                self.pos += 1
                params[key] = self.bare_item()
            else:
                params[key] = True
        return params

    def bare_item(self) -> object:
        char = self.peek()
        patterns = {
            "number": r"-?(\d{1,12}\.\d{1,3}|\d{1,15})(?![\d.])",
            "string": r'"((?:[ !#-\[\]-~]|\\["\\])*)"',
            "token": r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*",
            "bytes": r":([A-Za-z0-9+/=]*):",
            "boolean": r"\?([01])",
            "date": r"@-?\d{1,15}(?![\d.])",
            "display": r'%"((?:[ !#-$&-\[\]-~]|%[0-9a-f]{2}|\\["\\])*)"',
        }
        kind = (
            "number"
            if char == "-" or char.isdigit()
            else {'"': "string", ":": "bytes", "?": "boolean", "@": "date", "%": "display"}.get(
                char, "token"
            )
        )
        match = re.compile(patterns[kind]).match(self.text, self.pos)
        if not match:
            raise self.fail(f"invalid {kind}")
        self.pos = match.end()
        text = match.group()
        if kind == "number":
            return float(text) if "." in text else int(text)
        if kind == "boolean":
            return text == "?1"
        if kind == "date":
            return ("date", int(text[1:]))
        return text


def parse_item(value: str) -> tuple[object, dict[str, object]]:
    parser = _Parser(value)
    parsed = parser.item()
    parser.done()
    return parsed


def parse_dictionary(value: str) -> dict[str, tuple[object, dict[str, object]]]:
    parser = _Parser(value)
    parsed = parser.dictionary()
    parser.done()
    return parsed


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- requests -----------------------------------------------------------------------------------


def interop(v: Version) -> dict[str, str]:
    """ "Client implementations of draft versions of the protocol MUST send a header field
    Upload-Draft-Interop-Version with the interop version as its value to its requests." """
    return {INTEROP: str(v.number)}


def completeness(v: Version, complete: bool) -> dict[str, str]:
    """The request field saying `complete` in this version's spelling."""
    return {v.complete_field: "?1" if complete != v.inverted else "?0"}


def field_text(v: Version, complete: bool) -> str:
    return f"{v.complete_field}: {completeness(v, complete)[v.complete_field]}"


def says_complete(v: Version, head: Head) -> bool | None:
    """What a response says about completeness (None: it does not say). AssertionError when
    the field is not a Boolean ("The Upload-Complete field value is a Boolean", -03 §8.2)."""
    raw = head.get(v.complete_field)
    if raw is None:
        return None
    try:
        value, _ = parse_item(raw)
    except StructuredFieldError:
        value = None
    assert isinstance(value, bool), f"{v.complete_field}: {raw!r} is not an sf-boolean"
    return value != v.inverted


def integer_field(head: Head, name: str) -> int | None:
    """A non-negative sf-integer field (Upload-Offset, Upload-Length); None when absent."""
    raw = head.get(name)
    if raw is None:
        return None
    try:
        value, _ = parse_item(raw)
    except StructuredFieldError:
        value = None
    assert _is_integer(value) and value >= 0, f"{name}: {raw!r} is not a non-negative sf-integer"
    return value  # type: ignore[return-value]


def _timeout(t: Target) -> float:
    return t.http.timeout.read or 30.0


def send(
    t: Target,
    v: Version | int,
    url: str,
    method: str,
    headers: Mapping[str, str],
    body: bytes = b"",
    *,
    http_version: str = "1.1",
) -> Reply:
    """One request through the raw-socket client (which shows 1xx responses). A creation's
    announced uploads (Location of any 104 or of the final response) are recorded for the
    cleanup, with the interop version to cancel them with."""
    reply = request(url, method, headers, body, http_version=http_version, timeout=_timeout(t))
    if url == t.url and method not in ("HEAD", "GET", "DELETE", "OPTIONS"):
        number = v.number if isinstance(v, Version) else v
        if number not in VERSIONS:  # a request with an unknown version: cancel with a known one
            number = (t.ietf_versions or [3])[0]
        for head in [*reply.interims, reply.headers]:
            location = head.get("Location")
            if location:
                t.ietf_created.append((urljoin(url, location), number))
    return reply


def create(
    t: Target,
    v: Version,
    data: bytes = b"",
    *,
    complete: bool = False,
    extra: Mapping[str, str] | None = None,
    http_version: str = "1.1",
) -> tuple[Reply, str | None]:
    """A creation request (POST to the creation URL); the reply and the upload's absolute URL
    (from the final response, else from a 104), or None when nothing named one."""
    headers = {**interop(v), **completeness(v, complete), **(extra or {})}
    reply = send(t, v, t.url, "POST", headers, data, http_version=http_version)
    locations = [reply.headers.get("Location")] + [h.get("Location") for h in reply.interims]
    location = next((loc for loc in locations if loc), None)
    return reply, urljoin(t.url, location) if location else None


def created(
    t: Target,
    v: Version,
    data: bytes = b"",
    *,
    complete: bool = False,
    extra: Mapping[str, str] | None = None,
) -> str:
    """A new upload's URL; AssertionError unless the creation answered 2xx and named one."""
    reply, url = create(t, v, data, complete=complete, extra=extra)
    assert 200 <= reply.status < 300, (
        f"creation ({field_text(v, complete)}, {len(data)} bytes) answered {reply.status}:"
        f" {reply.text[:100]}"
    )
    assert url, f"creation ({field_text(v, complete)}) answered {reply.status} with no Location"
    return url


def head(t: Target, v: Version, url: str, extra: Mapping[str, str] | None = None) -> Reply:
    return send(t, v, url, "HEAD", {**interop(v), **(extra or {})})


def append(
    t: Target,
    v: Version,
    url: str,
    offset: int,
    data: bytes,
    *,
    complete: bool | None,
    content_type: str | None = "",
    extra: Mapping[str, str] | None = None,
) -> Reply:
    """An append (PATCH to the upload). `complete` None leaves the completeness field out;
    `content_type` "" means the version's own (application/partial-upload from v6, none
    before), None no Content-Type."""
    headers = {**interop(v), "Upload-Offset": str(offset)}
    if complete is not None:
        headers.update(completeness(v, complete))
    if content_type == "" and v.partial_upload:
        content_type = PARTIAL_UPLOAD
    if content_type:
        headers["Content-Type"] = content_type
    return send(t, v, url, "PATCH", {**headers, **(extra or {})}, data)


def state(t: Target, v: Version, url: str) -> tuple[int | None, bool | None]:
    """(offset, complete) as a HEAD reports them; AssertionError unless it answers 2xx."""
    reply = head(t, v, url)
    assert 200 <= reply.status < 300, f"HEAD answered {reply.status}: {reply.text[:100]}"
    return integer_field(reply.headers, "Upload-Offset"), says_complete(v, reply.headers)


def limits(v: Version, raw: str, where: str) -> dict[str, int]:
    """The known members of an Upload-Limit value, checked: a Dictionary ("The Upload-Limit
    field value is a Dictionary", -05 §8.2), never empty ("MUST use min-size=0 instead of an
    empty header value"), known keys Integers; unknown keys are ignored ("unrecognized keys
    MUST be ignored")."""
    assert raw.strip(), f"{where}: empty Upload-Limit"
    try:
        members = parse_dictionary(raw)
    except StructuredFieldError as exc:
        raise AssertionError(
            f"{where}: Upload-Limit {raw!r} is not an sf-dictionary: {exc}"
        ) from None
    known = {*LIMIT_KEYS, v.limit_age_key}
    found: dict[str, int] = {}
    for key, (value, _) in members.items():
        if key in known:
            assert _is_integer(value) and value >= 0, (  # type: ignore[operator]
                f"{where}: Upload-Limit {key}={value!r} is not a non-negative Integer"
            )
            found[key] = value  # type: ignore[assignment]
    for low, high in (("min-size", "max-size"), ("min-append-size", "max-append-size")):
        if low in found and high in found:
            assert found[low] <= found[high], f"{where}: Upload-Limit {low} above {high}: {raw!r}"
    return found


# -- which versions, and running a check once per version -------------------------------------


def _probe(t: Target, v: Version) -> str | None:
    """None when the server answers a creation of this version as the draft says (why not,
    otherwise). The creation has an empty body and says incomplete, as a client learning the
    upload URL first does (-03 §4 "An Upload-Complete header field is set to false is also
    valid")."""
    try:
        reply, url = create(t, v)
    except OSError as exc:
        return f"no answer ({type(exc).__name__})"
    if not 200 <= reply.status < 300:
        return str(reply.status)
    if url is None:
        return f"{reply.status} without Location"
    try:
        if says_complete(v, reply.headers) is False:
            return None
    except AssertionError as exc:
        return str(exc)
    if any(h.status == 104 and h.get(INTEROP) == str(v.number) for h in reply.interims):
        return None
    try:
        answer = head(t, v, url)
        offset = integer_field(answer.headers, "Upload-Offset")
        if 200 <= answer.status < 300 and says_complete(v, answer.headers) is False and offset == 0:
            return None
    except (OSError, AssertionError):
        pass
    return f"{reply.status} without {v.complete_field}, 104 or a HEAD that reports the upload"


def detect(t: Target) -> None:
    """Find the interop versions the server answers (see the module docstring)."""
    found, missing = [], {}
    for number in PROBED:
        why = _probe(t, VERSIONS[number])
        if why is None:
            found.append(number)
        else:
            missing[number] = why
    t.ietf_versions = found
    answers = set(missing.values())
    if len(answers) == 1 and len(missing) > 1:
        others = f"every creation answered {answers.pop()}"
    else:
        others = ", ".join(f"{n}: {why}" for n, why in missing.items())
    if found:
        listed = ", ".join(map(str, found))
        t.ietf_detail = f"interop versions {listed} (detected" + (
            f"; not answered as the draft says: {others})" if missing else ")"
        )
    else:
        t.ietf_detail = (
            f"the server answers none of interop versions {PROBED[0]}-{PROBED[-1]} as the draft"
            f" says (to a creation with {INTEROP}: N saying incomplete, {others})"
        )


def gate(t: Target) -> str:
    """The "ietf-draft" gate: the interop versions to check, found once (or as requested)."""
    if t.ietf_versions is None:
        if t.ietf_requested:
            t.ietf_versions = [n for n in t.ietf_requested if n in VERSIONS]
            t.ietf_detail = f"interop versions {', '.join(map(str, t.ietf_versions))} (requested)"
        else:
            detect(t)
    if not t.ietf_versions:
        raise Skip(t.ietf_detail)
    return t.ietf_detail


GATES["ietf-draft"] = gate


def _range(applies: Callable[[Version], bool]) -> str:
    numbers = [n for n, v in VERSIONS.items() if applies(v)]
    if numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 1:
        if numbers[-1] == max(VERSIONS):
            return f"interop {numbers[0]} and later"
        return f"interop {numbers[0]}-{numbers[-1]}"
    return "interop " + ", ".join(map(str, numbers))


def _section_list(key: str, applies: Callable[[Version], bool]) -> str:
    """The versions' sections for `key`, drafts sharing a number grouped: "draft-01/-02 §4"."""
    groups: dict[str, dict[str, None]] = {}
    for v in VERSIONS.values():
        if applies(v):
            source, _, number = v.cite(key).rpartition(" ")
            groups.setdefault(number, {})[source] = None
    parts = []
    for number, sources in groups.items():
        first, *others = sources
        parts.append(first + "".join("/" + s.removeprefix("draft") for s in others) + f" {number}")
    return ", ".join(parts)


def ietf_check(
    key: str,
    quote: str,
    applies: Callable[[Version], bool] = lambda v: True,
    level: str | None = None,
) -> Callable[[Callable[[Target, Version], None]], Callable[[Target], None]]:
    """Register a check of the group that runs once per interop version it `applies` to,
    citing each version's section `key`. Per version: an AssertionError fails it, a Skip skips
    it; the check fails if any version failed (the message names each such version and its
    section), is skipped if every version was, and passes otherwise."""

    def register(func: Callable[[Target, Version], None]) -> Callable[[Target], None]:
        @functools.wraps(func)
        def run(t: Target) -> None:
            checked = t.ietf_versions or []
            chosen = [VERSIONS[n] for n in checked if applies(VERSIONS[n])]
            if not chosen:
                raise Skip(f"applies to {_range(applies)}; checking {', '.join(map(str, checked))}")
            outcomes: dict[int, tuple[str, str]] = {}
            for v in chosen:
                try:
                    func(t, v)
                except Skip as exc:
                    outcomes[v.number] = ("skipped", str(exc))
                except AssertionError as exc:
                    outcomes[v.number] = ("failed", str(exc) or "assertion failed")
                except Exception as exc:  # a transport error is this version's failure
                    outcomes[v.number] = ("failed", f"{type(exc).__name__}: {exc}")
                else:
                    outcomes[v.number] = ("passed", "")
            t.version_results[func.__name__] = outcomes
            failed = [
                f"v{n} ({VERSIONS[n].cite(key)}): {detail}"
                for n, (outcome, detail) in outcomes.items()
                if outcome == "failed"
            ]
            if failed:
                raise AssertionError("; ".join(failed))
            if all(outcome == "skipped" for outcome, _ in outcomes.values()):
                raise Skip("; ".join(f"v{n}: {d}" for n, (_, d) in outcomes.items()))

        section = f"{_section_list(key, applies)} ({_range(applies)})"
        return check("ietf-draft", section, quote, level)(run)

    return register


def expect(problems: list[str]) -> None:
    assert not problems, "; ".join(problems)


# -- creation -----------------------------------------------------------------------------------


@ietf_check(
    "creation",
    "As soon as the upload resource is available, the server MAY send an informational response "
    "with `104 (Upload Resumption Supported)` status to the client while the request body is "
    "being uploaded. In this informational response, the `Location` header field MUST be set to "
    "the upload URL. [draft-01 §4] ... Server implementations of draft versions of the protocol "
    "MUST also send a header field `Upload-Draft-Interop-Version` with the interop version as its "
    "value to the `104 (Upload Resumption Supported)` informational response. [draft-01 §4.2, "
    "draft-08 §4.2.3, draft-11 App. B] ... In subsequent informational responses, the `Location` "
    "header field MUST NOT be set. [draft-03 §4] ... When sent, it MUST include `Location` header "
    "field pointing to the upload resource and MUST include the `Upload-Limit` header field with "
    "the corresponding limits if existing. ... all interim and final response messages for the "
    "same request MUST contain an identical `Location` value. [draft-11 §4.2.2]",
)
def creation_104_announces_upload(t: Target, v: Version) -> None:
    """A creation with part of the upload: the 104s it gets (servers that send none are
    skipped here; creation_104_is_sent is the SHOULD to send one)."""
    reply, _ = create(t, v, b"hello", complete=False)
    interims = [h for h in reply.interims if h.status == 104]
    if not interims:
        raise Skip("no 104 to a creation (sending one is a SHOULD: creation_104_is_sent)")
    first, problems = interims[0], []
    location, final = first.get("Location"), reply.headers.get("Location")
    if not location:
        problems.append("the first 104 has no Location")
    for number, interim in enumerate(interims, 1):
        echoed = interim.get(INTEROP)
        if echoed != str(v.number):
            problems.append(f"104 #{number} carries {INTEROP}: {echoed!r}, not {v.number}")
        if number > 1 and "Location" in interim:
            if not v.identical_location:
                problems.append(f"104 #{number} (not the first) carries Location")
            elif interim.get("Location") != final:
                problems.append(f"104 #{number} Location {interim.get('Location')!r} != {final!r}")
    if not 200 <= reply.status < 300:
        problems.append(f"final response {reply.status} after the 104")
    elif location and final:
        if v.identical_location:
            same = location == final
        else:
            same = t.absolute(location) == t.absolute(final)
        if not same:
            problems.append(f"104 Location {location!r} and final Location {final!r} differ")
    if v.limit_in_104 and "Upload-Limit" in reply.headers and "Upload-Limit" not in first:
        problems.append("the final response has Upload-Limit (limits exist), the 104 has none")
    expect(problems)


@ietf_check(
    "feature",
    "The server SHOULD send the `104 (Upload Resumption Supported)` informational response to "
    "the client, to indicate its support for a resumable upload. [draft-01 §4.1] ... Servers "
    "SHOULD use the `104 (Upload Resumption Supported)` informational response to indicate their "
    "support for a resumable upload request. [draft-03 §4.1, draft-05 §4.1] ... If so, it SHOULD "
    "announce the upload resource by sending an interim response with the `104 (Upload "
    "Resumption Supported)` status code [draft-08 §4.2.2, draft-11 §4.2.2]",
)
def creation_104_is_sent(t: Target, v: Version) -> None:
    reply, _ = create(t, v, b"hello", complete=False)
    statuses = [h.status for h in reply.interims]
    assert 104 in statuses, f"no 104 before the final {reply.status} (interims: {statuses})"


@ietf_check(
    "creation",
    "If the request is valid, the server SHOULD create an upload resource. Then, the server MUST "
    "include the `Location` header field in the response and set its value to the URL of the "
    "upload resource. ... The server MUST send the `Upload-Offset` header field in the response "
    "if it considers the upload active ... If the request completes successfully but the entire "
    "upload is not yet complete, as indicated by an `Upload-Complete` field value of false in "
    "the request, the server MUST acknowledge it by responding with the `201 (Created)` status "
    "code and an `Upload-Complete` header value set to false. [draft-03 §4, draft-05 §4] ... If "
    "the `Upload-Complete` header field is set to false, the client intends to transfer the "
    "representation over multiple requests. If the request content was fully received, the "
    "server MUST announce the upload resource by referencing it in the `Location` response "
    "header field. [draft-08 §4.2.2]",
)
def creation_response_announces_upload(t: Target, v: Version) -> None:
    """An incomplete creation with 5 bytes: Location naming the upload (HEAD there reports
    offset 5); up to -05 also 201, the completeness field false and Upload-Offset 5."""
    reply, _ = create(t, v, b"hello", complete=False)
    problems = []
    if v.strict_responses and reply.status != 201:
        problems.append(f"answered {reply.status}, not 201")
    elif not 200 <= reply.status < 300:
        problems.append(f"answered {reply.status}: {reply.text[:100]}")
    location = reply.headers.get("Location")
    if not location:
        problems.append("no Location")
    state_field = says_complete(v, reply.headers)
    if state_field is True:
        problems.append(f"{v.complete_field} says complete")
    elif state_field is None and v.strict_responses:
        problems.append(f"no {v.complete_field}")
    offset = integer_field(reply.headers, "Upload-Offset")
    if offset is None and v.strict_responses:
        problems.append("no Upload-Offset")
    elif offset is not None and offset != 5:
        problems.append(f"Upload-Offset {offset}, not 5")
    if location and 200 <= reply.status < 300:
        now = state(t, v, t.absolute(location))
        if now != (5, False):
            problems.append(f"HEAD of the Location reports (offset, complete) = {now}")
    expect(problems)


@ietf_check(
    "creation",
    "If the request completes successfully and the entire upload is complete, the server MUST "
    "acknowledge it by responding with a successful status code between 200 and 299 "
    "(inclusive). Server is RECOMMENDED to use `201 (Created)` response if not otherwise "
    "specified. The response MUST NOT include the `Upload-Incomplete` header with the value of "
    "true. [draft-01 §4] ... The `Upload-Offset` field value MUST be equal to the end offset of "
    "the entire upload [draft-03 §4, draft-05 §4] ... If the `Upload-Complete` request header "
    "field is set to true, the client intends to transfer the entire representation data in one "
    "request. If the request content was fully received, no resumable upload is needed and the "
    "resource proceeds to process the request and generate a response. [draft-08 §4.2.2]",
)
def one_shot_creation_completes(t: Target, v: Version) -> None:
    reply, _ = create(t, v, b"hello", complete=True)
    problems = []
    if not 200 <= reply.status < 300:
        problems.append(f"answered {reply.status}: {reply.text[:100]}")
    if says_complete(v, reply.headers) is False:
        problems.append(f"{v.complete_field} says incomplete")
    offset = integer_field(reply.headers, "Upload-Offset")
    if v.strict_responses and offset != 5:
        problems.append(f"Upload-Offset {offset}, not 5")
    expect(problems)


# -- offset retrieval ---------------------------------------------------------------------------


@ietf_check(
    "offset",
    "If the server considers the upload associated with this upload URL active, it MUST send "
    "back a `204 (No Content)` response. The response MUST include the `Upload-Offset` header "
    "set to the current resumption offset for the client. The response MUST include the "
    "`Upload-Incomplete` header which is set to true if and only if the upload is incomplete. "
    "[draft-01 §5] ... it MUST respond with a `204 (No Content)` or `200 (OK)` status code. ... "
    "The response MUST include the `Upload-Length` header field set to the upload's final size "
    "if one was recorded during the upload creation [draft-05 §5] ... A successful response to a "
    "`HEAD` request against an upload resource - MUST include the offset in the `Upload-Offset` "
    "header field, - MUST include the completeness state in the `Upload-Complete` header field, "
    "- MUST include the length in the `Upload-Length` header field, unless the client has not "
    "supplied one, ... - MUST indicate the limits in the `Upload-Limit` header field "
    "[draft-11 §4.3.2]",
)
def head_reports_offset_and_completeness(t: Target, v: Version) -> None:
    """HEAD of an incomplete upload of 5 bytes (of 10 declared with Upload-Length where the
    field exists)."""
    extra = {"Upload-Length": "10"} if v.upload_length else {}
    url = created(t, v, b"hello", complete=False, extra=extra)
    reply = head(t, v, url)
    problems = []
    allowed = v.head_statuses
    if (allowed and reply.status not in allowed) or not 200 <= reply.status < 300:
        problems.append(f"answered {reply.status}, allowed: {allowed or '2xx'}")
    offset = integer_field(reply.headers, "Upload-Offset")
    if offset != 5:
        problems.append(f"Upload-Offset {offset}, not 5")
    complete = says_complete(v, reply.headers)
    if complete is not False:
        problems.append(f"{v.complete_field} {reply.headers.get(v.complete_field)!r}")
    if v.upload_length and integer_field(reply.headers, "Upload-Length") != 10:
        problems.append(f"Upload-Length {reply.headers.get('Upload-Length')!r}, not 10")
    if v.head_limit:
        raw = reply.headers.get("Upload-Limit")
        if raw is None:
            problems.append("no Upload-Limit")
        else:
            limits(v, raw, "HEAD")
    expect(problems)


@ietf_check(
    "offset",
    "The response SHOULD include `Cache-Control: no-store` header to prevent HTTP caching. "
    "[draft-01 §5] ... In order to prevent HTTP caching, the response SHOULD include a "
    "`Cache-Control` header field with the value `no-store`. [draft-03 §5, draft-05 §5] ... "
    "SHOULD include the `Cache-Control` header field with the value `no-store` to prevent HTTP "
    "caching [draft-08 §4.3.2, draft-11 §4.3.2]",
)
def head_is_not_cached(t: Target, v: Version) -> None:
    url = created(t, v, b"hello", complete=False)
    value = head(t, v, url).headers.get("Cache-Control") or ""
    directives = [part.strip().lower() for part in value.split(",")]
    assert "no-store" in directives, f"Cache-Control {value!r}"


@ietf_check(
    "offset",
    "An upload is considered complete if and only if the server completely and successfully "
    "received a corresponding Upload Creation Procedure or Upload Appending Procedure request "
    "with the `Upload-Incomplete` header being omitted or set to false. [draft-01 §5] ... An "
    "upload is considered complete only if the server completely and successfully received a "
    "corresponding creation request or append request with the `Upload-Complete` header value "
    "set to true. [draft-03 §5, draft-05 §5] ... An upload is marked as completed if a request "
    "for creating the upload resource or appending to it included the `Upload-Complete` header "
    "field with a true value and the request content was fully received. [draft-08 §4.1.2, "
    "draft-11 §4.1.2]",
    level="MUST",  # HEAD "MUST include" the completeness (head_reports_offset_and_completeness)
)
def head_of_completed_upload_says_complete(t: Target, v: Version) -> None:
    """Completed by an append, and (where the creation names the upload) by a one-shot
    creation: HEAD says complete at the full offset (and the length, where defined)."""
    problems = []
    url = created(t, v, b"hel", complete=False)
    done = append(t, v, url, 3, b"lo", complete=True)
    assert 200 <= done.status < 300, f"completing append answered {done.status}"
    offset, complete = state(t, v, url)
    if (offset, complete) != (5, True):
        problems.append(f"after a completing append HEAD says offset {offset}, complete {complete}")
    _, one_shot = create(t, v, b"hello", complete=True)
    if one_shot is not None:  # from -06 the response to a one-shot creation may not name one
        reply = head(t, v, one_shot)
        offset = integer_field(reply.headers, "Upload-Offset")
        complete = says_complete(v, reply.headers)
        if not 200 <= reply.status < 300 or (offset, complete) != (5, True):
            problems.append(
                f"after a one-shot creation HEAD answered {reply.status}, offset {offset},"
                f" complete {complete}"
            )
        if v.upload_length and integer_field(reply.headers, "Upload-Length") != 5:
            problems.append(
                f"after a one-shot creation of 5 bytes, Upload-Length"
                f" {reply.headers.get('Upload-Length')!r}"
            )
    expect(problems)


@ietf_check(
    "offset",
    "The request MUST NOT include the `Upload-Offset` header or the `Upload-Incomplete` header. "
    "The server MUST reject the request with the `Upload-Offset` header or the "
    "`Upload-Incomplete` header by sending a `400 (Bad Request)` response. [draft-01 §5] ... The "
    "request MUST NOT include an `Upload-Offset`, `Upload-Complete`, or `Upload-Length` header "
    "field. The server MUST reject requests with either of these fields by responding with a "
    "`400 (Bad Request)` status code. [draft-05 §5]",
    applies=lambda v: bool(v.forbidden_on_head),
)
def head_with_upload_fields_is_400(t: Target, v: Version) -> None:
    url = created(t, v, b"hello", complete=False)
    values = {"Upload-Offset": "5", "Upload-Length": "10", **completeness(v, False)}
    problems = []
    for name in v.forbidden_on_head:
        reply = head(t, v, url, {name: values[name]})
        if reply.status != 400:
            problems.append(f"HEAD with {name}: {values[name]} answered {reply.status}")
    expect(problems)


@ietf_check(
    "offset",
    "If the server does not consider the upload associated with this upload URL active, it MUST "
    "respond with `404 (Not Found)` status code. [draft-01 §5] ... If the server does not "
    "consider the upload resource to be active, it MUST respond with a `404 (Not Found)` status "
    "code. [draft-03 §5, draft-05 §5]",
    applies=lambda v: v.strict_responses,
)
def head_of_unknown_upload_is_404(t: Target, v: Version) -> None:
    url = created(t, v, b"", complete=False)
    unknown = url.rstrip("/") + "0unknown0"
    reply = head(t, v, unknown)
    assert reply.status == 404, f"HEAD of {unknown} answered {reply.status}"


# -- append ----------------------------------------------------------------------------------------


@ietf_check(
    "append",
    "If the offset in the `Upload-Offset` header field does not match the offset provided by "
    "the immediate previous Offset Retrieving Procedure, or the end offset of the immediate "
    "previous incomplete successful transfer, the server MUST respond with `409 (Conflict)` "
    "status code. The server MUST send the `Upload-Offset` header in the response if it "
    "considers the upload active, either when the response is a success (e.g. `201 "
    "(Created)`), or when the response is a failure (e.g. `409 (Conflict)`). [draft-01 §6] ... "
    "If the `Upload-Offset` request header field value does not match the current offset, the "
    "upload resource MUST reject the request with a `409 (Conflict)` status code. The response "
    "MUST include the correct offset in the `Upload-Offset` header field. [draft-08 §4.4.2, "
    "draft-11 §4.4.2] ... If the request didn't complete the upload, any response, successful "
    "or not, MUST include the `Upload-Complete` header field with a false value [draft-08 "
    "§4.4.2]",
)
def append_at_wrong_offset_is_409(t: Target, v: Version) -> None:
    url = created(t, v, b"hello", complete=False)
    problems = []
    for wrong in (2, 9):
        reply = append(t, v, url, wrong, b"xyz", complete=False)
        where = f"PATCH at offset {wrong} (current 5)"
        if reply.status != 409:
            problems.append(f"{where} answered {reply.status}")
            continue
        offset = integer_field(reply.headers, "Upload-Offset")
        if offset != 5:
            problems.append(f"{where}: 409 with Upload-Offset {offset}, not 5")
        if v.conflict_says_incomplete and says_complete(v, reply.headers) is not False:
            field_value = reply.headers.get(v.complete_field)
            problems.append(f"{where}: 409 with {v.complete_field} {field_value!r}, not ?0")
    if state(t, v, url) != (5, False):
        problems.append(f"the upload changed: HEAD says {state(t, v, url)}")
    expect(problems)


@ietf_check(
    "append",
    "If the request completes successfully but the entire upload is not yet complete indicated "
    "by the `Upload-Incomplete` header, the server MUST acknowledge it by responding with the "
    "`201 (Created)` status code, the `Upload-Incomplete` header set to true. [draft-01 §6] ... "
    "If the request completes successfully and the entire upload is complete, the server MUST "
    "acknowledge it by responding with a 2xx (Successful) status code. ... The response MUST NOT "
    "include the `Upload-Complete` header field with the value set to false. [draft-05 §6] ... "
    "However, the response MUST include the `Upload-Complete` header field with a true value "
    "... If the request didn't complete the upload, any response, successful or not, MUST "
    "include the `Upload-Complete` header field with a false value [draft-08 §4.4.2] ... the "
    "upload resource acknowledges the appended data by sending a `2xx (Successful)` response "
    "with the `Upload-Complete` header field set to false. [draft-11 §4.4.2]",
)
def append_then_completion(t: Target, v: Version) -> None:
    """5 bytes at creation, 3 appended (incomplete), 2 appended completing the upload."""
    url = created(t, v, b"hello", complete=False)
    problems = []
    more = append(t, v, url, 5, b"wor", complete=False)
    if v.strict_responses and more.status != 201:
        problems.append(f"incomplete append answered {more.status}, not 201")
    elif not 200 <= more.status < 300:
        problems.append(f"incomplete append answered {more.status}: {more.text[:100]}")
    offset = integer_field(more.headers, "Upload-Offset")
    if (v.strict_responses or offset is not None) and offset != 8:
        problems.append(f"incomplete append: Upload-Offset {offset}, not 8")
    if v.append_says_incomplete and says_complete(v, more.headers) is not False:
        field_value = more.headers.get(v.complete_field)
        problems.append(f"incomplete append: {v.complete_field} {field_value!r}")
    last = append(t, v, url, 8, b"ld", complete=True)
    if not 200 <= last.status < 300:
        problems.append(f"completing append answered {last.status}: {last.text[:100]}")
    complete = says_complete(v, last.headers)
    if complete is False or (complete is None and not v.strict_responses):
        field_value = last.headers.get(v.complete_field)
        problems.append(f"completing append: {v.complete_field} {field_value!r}")
    offset = integer_field(last.headers, "Upload-Offset")
    if (v.strict_responses or offset is not None) and offset != 10:
        problems.append(f"completing append: Upload-Offset {offset}, not 10")
    expect(problems)


@ietf_check(
    "append",
    "The request MUST use the `PATCH` method with the `application/partial-upload` media type "
    "and MUST be sent to the upload resource. [draft-05 §6] ... An upload resource applies a "
    "`PATCH` request with the `application/partial-upload` media type by appending the patch "
    "document in the request content to the upload resource. [draft-08 §4.4.2, draft-11 "
    "§4.4.2]",
    applies=lambda v: v.partial_upload,
    level="SHOULD",
)
def append_needs_partial_upload(t: Target, v: Version) -> None:
    """A PATCH in another media type (or none) is not an append: refused, nothing appended."""
    url = created(t, v, b"hello", complete=False)
    problems = []
    for content_type in (None, "application/octet-stream"):
        reply = append(t, v, url, 5, b"xyz", complete=False, content_type=content_type)
        if not 400 <= reply.status < 500:
            problems.append(f"PATCH with Content-Type {content_type!r} answered {reply.status}")
    if state(t, v, url) != (5, False):
        problems.append(f"the upload changed: HEAD says {state(t, v, url)}")
    expect(problems)


@ietf_check(
    "append",
    "If the upload is already complete, the server MUST NOT modify the upload resource and MUST "
    "respond with a `400 (Bad Request)` status code. [draft-05 §6] ... If the upload is already "
    "complete, the server MUST NOT modify the upload resource and MUST reject the request. "
    "[draft-08 §4.4.2, draft-11 §4.4.2] ... If the client attempted to append a non-zero "
    "length document, the server MUST treat this as an inconsistent length failure. [draft-11 "
    "§4.4.2]",
    applies=lambda v: v.completed_rejected,
)
def append_to_completed_upload_is_rejected(t: Target, v: Version) -> None:
    url = created(t, v, b"hello", complete=False)
    done = append(t, v, url, 5, b"!", complete=True)
    assert 200 <= done.status < 300, f"completing append answered {done.status}"
    problems = []
    for complete in (True, False):
        reply = append(t, v, url, 6, b"more", complete=complete)
        where = f"PATCH with {field_text(v, complete)} after completion"
        if v.completed_status and reply.status != v.completed_status:
            problems.append(f"{where} answered {reply.status}, not {v.completed_status}")
        elif not 400 <= reply.status < 500:
            problems.append(f"{where} answered {reply.status}")
    if state(t, v, url) != (6, True):
        problems.append(f"the upload changed: HEAD says {state(t, v, url)}")
    expect(problems)


# -- lengths -------------------------------------------------------------------------------------


@ietf_check(
    "length",
    "The request can indicate the upload's final size in two different ways. Both indicators "
    "may be present in the same request as long as they convey the same size. If the sizes are "
    "inconsistent, the server MUST reject the request by responding with a `400 (Bad Request)` "
    "status code. [draft-05 §4] ... If the server does have a previous record, that value MUST "
    "match the upload's final size. If they do not match, the server MUST reject the request "
    "with a `400 (Bad Request)` status code. [draft-05 §6] ... If both indicators are present "
    "in the same request, their indicated lengths MUST match. If multiple requests include "
    "indicators, their indicated values MUST match. [draft-08 §4.1.3] ... If indicators (1) and "
    "(2) are both present in the same request, their indicated lengths MUST match. [draft-11 "
    "§4.1.3]",
    applies=lambda v: v.upload_length,
)
def inconsistent_length_is_rejected(t: Target, v: Version) -> None:
    """Upload-Length 10 with a complete 5-byte body (creation), and an upload created with
    Upload-Length 10 completed at 8 bytes (append): refused, the upload left incomplete."""
    wanted = v.inconsistent_status
    problems = []
    reply, url = create(t, v, b"hello", complete=True, extra={"Upload-Length": "10"})
    if (wanted and reply.status != wanted) or not 400 <= reply.status < 500:
        problems.append(f"creation with Upload-Length 10 and 5 bytes (complete): {reply.status}")
    if url is not None and state(t, v, url)[1]:
        problems.append("the inconsistent creation made a complete upload")
    url = created(t, v, b"hello", complete=False, extra={"Upload-Length": "10"})
    reply = append(t, v, url, 5, b"xyz", complete=True)
    if (wanted and reply.status != wanted) or not 400 <= reply.status < 500:
        problems.append(f"append completing at 8 of Upload-Length 10 answered {reply.status}")
    if state(t, v, url)[1] is not False:
        problems.append("the inconsistent append completed the upload")
    expect(problems)


@ietf_check(
    "length",
    "The upload is not automatically completed if the offset reaches the upload's final size. "
    "Instead, a client MUST indicate the completion of an upload through the `Upload-Complete` "
    "header field. [draft-05 §4] ... Note that the length and offset values do not determine "
    "whether an upload is complete. Instead, the client uses the `Upload-Complete` header field "
    "to indicate that a request completes the upload. The offset could match the length, but "
    "the upload can still be incomplete. [draft-08 §4.1.3, draft-11 §4.1.3] ... The request "
    "content MAY be empty. If the `Upload-Complete` field is then set to true, the client wants "
    "to complete the upload without appending additional data. [draft-05 §6]",
    applies=lambda v: v.upload_length,
)
def offset_reaching_length_does_not_complete(t: Target, v: Version) -> None:
    """Upload-Length 10, then all 10 bytes with Upload-Complete: ?0: still incomplete; an empty
    append with ?1 completes it. Likewise a ?0 creation that carries its whole Upload-Length."""
    problems = []
    whole = created(t, v, b"hello", complete=False, extra={"Upload-Length": "5"})
    if state(t, v, whole)[1] is not False:
        problems.append("a creation with ?0 and all of its Upload-Length 5 made a complete upload")
    url = created(t, v, b"hello", complete=False, extra={"Upload-Length": "10"})
    reply = append(t, v, url, 5, b"world", complete=False)
    if not 200 <= reply.status < 300:
        problems.append(f"append of the last 5 bytes with ?0 answered {reply.status}")
    if says_complete(v, reply.headers):
        problems.append(f"the append with {field_text(v, False)} was answered as completing")
    now = state(t, v, url)
    if now != (10, False):
        problems.append(f"after the ?0 append reaching the length HEAD says {now}, not (10, False)")
    done = append(t, v, url, 10, b"", complete=True)
    if not 200 <= done.status < 300:
        problems.append(f"empty append with ?1 answered {done.status}: {done.text[:100]}")
    elif state(t, v, url) != (10, True):
        problems.append(f"after the empty ?1 append HEAD says {state(t, v, url)}")
    expect(problems)


# -- cancellation --------------------------------------------------------------------------------


@ietf_check(
    "cancel",
    "If the server has successfully deactivated this upload URL, it MUST send back a `204 (No "
    "Content)` response. [draft-01 §7] ... If the server does not consider the upload resource "
    "to be active, it MUST respond with a `404 (Not Found)` status code. [draft-03 §5, §6, §7] "
    "... Upon receiving a `DELETE` request, the server SHOULD deactivate the upload resource and "
    "MUST respond with a `204 (No Content)` status code. [draft-08 §4.5.2] ... Upon receiving a "
    "`DELETE` request, the server SHOULD deactivate the upload resource. [draft-11 §4.5.2]",
)
def delete_cancels_upload(t: Target, v: Version) -> None:
    """DELETE answers 204 (2xx from -09); afterwards HEAD and PATCH are not successful."""
    url = created(t, v, b"hello", complete=False)
    reply = send(t, v, url, "DELETE", interop(v))
    problems = []
    if (v.delete_204 and reply.status != 204) or not 200 <= reply.status < 300:
        problems.append(f"DELETE answered {reply.status}")
    later = {
        "HEAD": head(t, v, url).status,
        "PATCH": append(t, v, url, 5, b"xyz", complete=False).status,
    }
    problems += [f"{m} after DELETE answered {s}" for m, s in later.items() if 200 <= s < 300]
    expect(problems)


@ietf_check(
    "cancel",
    "If the server does not consider the upload associated with this upload URL active, it MUST "
    "respond with `404 (Not Found)` status code. [draft-01 §5] ... If the server does not "
    "consider the upload associated with the upload URL active, it MUST respond with `404 (Not "
    "Found)` status code. [draft-01 §6] ... If the server does not consider the upload resource "
    "to be active, it MUST respond with a `404 (Not Found)` status code. [draft-03 §5/§7, "
    "draft-05 §5/§7]",
    applies=lambda v: v.strict_responses,
)
def cancelled_upload_is_404(t: Target, v: Version) -> None:
    """After a DELETE the upload is not active: HEAD, PATCH and DELETE answer 404 (-01…-05;
    later drafts leave the status to HTTP, where delete_cancels_upload only wants no 2xx)."""
    url = created(t, v, b"hello", complete=False)
    cancelled = send(t, v, url, "DELETE", interop(v)).status
    assert 200 <= cancelled < 300, f"DELETE answered {cancelled}"
    later = {
        "HEAD": head(t, v, url).status,
        "PATCH": append(t, v, url, 5, b"xyz", complete=False).status,
        "DELETE": send(t, v, url, "DELETE", interop(v)).status,
    }
    expect([f"{m} after DELETE answered {s}" for m, s in later.items() if s != 404])


@ietf_check(
    "cancel",
    "The request MUST use the `DELETE` method. The request MUST NOT include the `Upload-Offset` "
    "header or the `Upload-Incomplete` header. The server MUST reject the request with the "
    "`Upload-Offset` header or the `Upload-Incomplete` header by sending a `400 (Bad Request)` "
    "response. [draft-01 §7] ... The request MUST NOT include an `Upload-Offset` or "
    "`Upload-Complete` header field. The server MUST reject the request with a `Upload-Offset` "
    "or `Upload-Complete` header field with a `400 (Bad Request)` status code. [draft-03 §7, "
    "draft-05 §7]",
    applies=lambda v: bool(v.forbidden_on_delete),
)
def delete_with_upload_fields_is_400(t: Target, v: Version) -> None:
    url = created(t, v, b"hello", complete=False)
    values = {"Upload-Offset": "5", **completeness(v, False)}
    problems = []
    for name in v.forbidden_on_delete:
        reply = send(t, v, url, "DELETE", {**interop(v), name: values[name]})
        if reply.status != 400:
            problems.append(f"DELETE with {name}: {values[name]} answered {reply.status}")
    if state(t, v, url) != (5, False):
        problems.append("the upload was cancelled anyway")
    expect(problems)


# -- OPTIONS -------------------------------------------------------------------------------------


@ietf_check(
    "limit",
    "The `Upload-Limit` response header field indicates limits applying the upload resource. The "
    "`Upload-Limit` field value is a Dictionary. [draft-05 §8.2] ... A server that supports the "
    "creation of a resumable upload resource under a target URI MUST include the `Upload-Limit` "
    "header field with the corresponding limits in a response to an `OPTIONS` request sent to "
    "this target URI. ... If the server does not apply any limits, it MUST use `min-size=0` "
    "instead of an empty header value. [draft-05 §8.2, draft-08 §4.1.4] ... The `Upload-Limit` "
    "header field SHOULD be included in the response to an `OPTIONS` request if limits apply. "
    "[draft-11 §4.1.4]",
    applies=lambda v: v.limit_age_key is not None,
)
def options_upload_limit(t: Target, v: Version) -> None:
    """OPTIONS on the creation URL: Upload-Limit present (where a MUST) and a valid Dictionary
    whose known limits are non-negative Integers."""
    reply = send(t, v, t.url, "OPTIONS", interop(v))
    assert 200 <= reply.status < 300, f"OPTIONS answered {reply.status}"
    raw = reply.headers.get("Upload-Limit")
    if raw is None:
        assert not v.options_limit, "OPTIONS answered without Upload-Limit"
        raise Skip("no Upload-Limit in OPTIONS (a SHOULD in draft-11 when limits apply)")
    limits(v, raw, "OPTIONS")


@ietf_check(
    "accept-patch",
    "A server that supports the creation of a resumable upload resource for a target URI MUST "
    "include the `Accept-Patch` header field in response to an `OPTIONS` request for the "
    "target URI. ... The value of the `Accept-Patch` header field MUST include the full "
    "`application/partial-upload` media type, even if it already contains `*/*` or "
    "`application/*`. [draft-11 §4.1.4]",
    applies=lambda v: v.options_accept_patch,
)
def options_accept_patch(t: Target, v: Version) -> None:
    reply = send(t, v, t.url, "OPTIONS", interop(v))
    assert 200 <= reply.status < 300, f"OPTIONS answered {reply.status}"
    value = reply.headers.get("Accept-Patch") or ""
    types = [part.split(";")[0].strip().lower() for part in value.split(",")]
    assert PARTIAL_UPLOAD in types, f"Accept-Patch {value!r}"


# -- 104 rules ------------------------------------------------------------------------------------


@check(
    "ietf-draft",
    "draft-01/-03/-05 §4.2, draft-08 §4.2.3, draft-11 App. B (every interop version)",
    "Server implementations of draft versions of the protocol MUST NOT send a `104 (Upload "
    "Resumption Supported)` informational response when the interop version indicated by the "
    "`Upload-Draft-Interop-Version` header field in the request is missing or mismatching. "
    "[draft-01 §4.2, draft-03 §4.2, draft-05 §4.2, draft-08 §4.2.3, draft-11 App. B]",
)
def no_104_for_unknown_interop_version(t: Target) -> None:
    """A complete one-shot creation (both completeness spellings) with an interop version the
    server does not answer, and with none at all: whatever the answer, no 104."""
    fields = {"Upload-Complete": "?1", "Upload-Incomplete": "?0"}
    unknown = next(n for n in (99, 0, 1000) if n not in (t.ietf_versions or []))
    problems = []
    for version in (str(unknown), None):
        headers = {**fields, **({INTEROP: version} if version is not None else {})}
        reply = send(t, unknown, t.url, "POST", headers, b"hello")
        sent = [h.status for h in reply.interims if h.status == 104]
        if sent:
            problems.append(f"{INTEROP}: {version or '(missing)'} got {len(sent)} 104")
    expect(problems)


@ietf_check(
    "http10",
    "Since HTTP/1.0 did not define any 1xx status codes, a server MUST NOT send a 1xx response "
    "to an HTTP/1.0 client. [RFC 9110 §15.2]",
)
def no_104_to_http_1_0(t: Target, v: Version) -> None:
    """The 104 of a creation is not sent when the request is HTTP/1.0."""
    reply, _ = create(t, v, b"hello", complete=False, http_version="1.0")
    interims = [h.status for h in reply.interims]
    assert not interims, f"an HTTP/1.0 creation got {interims} before its {reply.status}"
