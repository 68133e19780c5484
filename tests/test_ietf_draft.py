"""The IETF resumable-upload draft (draft-ietf-httpbis-resumable-upload) against a live server,
for every interop version served by default (3 to 8), through a raw-socket client that sees
the 104 (Upload Resumption Supported) interim responses.

Section numbers are the RFC-rendered ones of the draft named (see notes/ietf-versions.md):
interop 3 = draft-01, 4 = -02, 5 = -03, 6 = -04/-05, 7 = -06…-08, 8 = -09…-11. Server
options, hooks, metrics, CORS and tus interplay are in test_ietf_integration.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from conftest import ServerProcess, wait_receiving
from ietf_helpers import (
    INTEROP,
    SUPPORTED_NAMES,
    VERSIONS,
    KiB,
    append_headers,
    check_limit,
    complete_field,
    completeness,
    creation_headers,
    head,
    limit_members,
    payload,
    problem,
    problem_type,
    says_complete,
    sha256,
)

from conformance.draft_client import Exchange, Reply, request


@pytest.fixture(scope="module")
def draft_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A default server of this module's own: the tests that cut or stall a creation or an
    append wait for the server's active-upload gauge (wait_receiving), which no other test's
    uploads may move."""
    server = ServerProcess(tmp_path_factory.mktemp("draft") / "uploads").start()
    yield server
    server.stop(5)


def append_status(version: int) -> int:
    """201 for an append in 3-6 (draft-01…-05 §6), 204 from 7 ("2xx", -06 §4.4.2)."""
    return 201 if version <= 6 else 204


def create_partial(url: str, version: int, data: bytes) -> str:
    """An incomplete upload holding `data` (one creation request); its Location."""
    reply = request(url, "POST", creation_headers(version, False), data)
    assert reply.status == 201, reply.text
    return reply.headers["location"]


def create_complete(url: str, version: int, data: bytes) -> str:
    """A complete upload made of `data` in one creation request; its Location."""
    reply = request(url, "POST", creation_headers(version, True), data)
    assert reply.status == 201, reply.text
    assert says_complete(reply.headers, version) is True
    return reply.headers["location"]


def offset_of(location: str, version: int) -> int:
    reply = head(location, version)
    assert reply.status == 204, reply.text
    return int(reply.headers["upload-offset"])


# -- the whole life of an upload, per version --------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_upload_lifecycle(draft_server: ServerProcess, client: httpx.Client, version: int) -> None:
    """Creation with part of the data, offset retrieval, a mismatching append, an append, an
    append cut off mid-body, resumption from HEAD's offset to completion, download, deletion.

    draft-01 §4 / -02 §4 / -03 §4 / -05 §4 / -06 §4.2.2 / -09 §4.2.2: a 104 with Location
    (and the echoed interop version, draft-01 §4.2, -09 Appendix B; Upload-Limit from -04)
    arrives while the body is still being sent, then 201 with the same Location (-10 §4.2.2),
    Upload-Offset and the completeness field saying incomplete. -01…-05 §5, -06/-09 §4.3.2:
    HEAD is 204 with Upload-Offset, completeness, Upload-Length when known (-05 on),
    Upload-Limit (-04 on) and Cache-Control: no-store. -01 §6, -06 §4.4.2: a wrong offset is
    409 with the correct Upload-Offset (problem type mismatching-upload-offset, -04 §10.1,
    -06 §6.1). -04 §6, -06 §4.4.2: a cut-off append keeps a prefix and the upload stays
    incomplete; -09 §4.6: HEAD's offset is accepted by the next append. -06 §4.4.2: the
    completing response says complete. -01 §7, -06 §4.5.2: DELETE is 204, then the upload is
    gone."""
    total = 512 * KiB
    data = payload(total, version)
    first, second, cut_sent = 160 * KiB, 128 * KiB, 128 * KiB

    creation = Exchange(
        draft_server.url,
        "POST",
        {**creation_headers(version, False), "Content-Length": str(first)},
    )
    creation.send(data[: 64 * KiB])
    announced = creation.interim()  # only part of the body has been sent
    assert announced.status == 104
    location = announced["location"]
    assert location.startswith(draft_server.url) and len(location) > len(draft_server.url)
    assert announced[INTEROP] == str(version)
    assert "upload-offset" not in announced
    check_limit(announced.get("upload-limit"), version)
    creation.send(data[64 * KiB : first])
    created = creation.reply()
    assert created.status == 201, created.text
    assert [interim.status for interim in created.interims] == [104]
    assert created.headers["location"] == location
    assert created.headers["upload-offset"] == str(first)
    assert says_complete(created.headers, version) is False
    check_limit(created.headers.get("upload-limit"), version)

    retrieved = head(location, version)
    assert retrieved.status == 204
    assert retrieved.headers["upload-offset"] == str(first)
    assert says_complete(retrieved.headers, version) is False
    assert retrieved.headers["cache-control"] == "no-store"
    assert "upload-length" not in retrieved.headers  # not known yet
    check_limit(retrieved.headers.get("upload-limit"), version)

    mismatch = request(location, "PATCH", append_headers(version, 0, False), b"x" * 10)
    assert mismatch.status == 409, mismatch.text
    assert mismatch.headers["upload-offset"] == str(first)
    assert says_complete(mismatch.headers, version) is False
    if version >= 6:
        document = problem(mismatch)
        assert document is not None, mismatch.headers.fields
        assert problem_type(mismatch) == "mismatching-upload-offset"
        assert document["expected-offset"] == first
        assert document["provided-offset"] == 0
        assert document["status"] == 409
    else:
        assert problem(mismatch) is None  # no problem details before -04
    assert offset_of(location, version) == first

    appended = request(
        location, "PATCH", append_headers(version, first, False), data[first : first + second]
    )
    assert appended.status == append_status(version), appended.text
    assert appended.headers["upload-offset"] == str(first + second)
    assert says_complete(appended.headers, version) is False
    assert all("location" not in interim for interim in appended.interims)

    # An append meant to complete the upload, cut off after part of its body.
    before = first + second
    cut = Exchange(
        location,
        "PATCH",
        {**append_headers(version, before, True), "Content-Length": str(total - before)},
    )
    cut.send(data[before : before + 96 * KiB])
    wait_receiving(draft_server)
    cut.send(data[before + 96 * KiB : before + cut_sent])
    cut.cut()
    after_cut = head(location, version)
    assert after_cut.status == 204
    resume_at = int(after_cut.headers["upload-offset"])
    assert before < resume_at <= before + cut_sent
    assert says_complete(after_cut.headers, version) is False
    if version >= 6:  # the cut request declared the length (?1 + Content-Length)
        assert after_cut.headers["upload-length"] == str(total)

    resumed = request(location, "PATCH", append_headers(version, resume_at, True), data[resume_at:])
    assert resumed.status == append_status(version), resumed.text
    assert resumed.headers["upload-offset"] == str(total)
    assert says_complete(resumed.headers, version) is True
    assert resumed.headers[complete_field(version)] == ("?0" if version == 3 else "?1")

    final = head(location, version)
    assert final.status == 204
    assert final.headers["upload-offset"] == str(total)
    assert says_complete(final.headers, version) is True
    if version >= 6:
        assert final.headers["upload-length"] == str(total)
    check_limit(final.headers.get("upload-limit"), version, unfinished=False)

    download = client.get(location)
    assert download.status_code == 200
    assert sha256(download.content) == sha256(data)

    deleted = request(location, "DELETE", {INTEROP: str(version)})
    assert deleted.status == 204, deleted.text
    # -01…-05 §5-§7: an upload not active "MUST respond with 404"; later drafts allow 410
    gone = (404,) if version <= 6 else (404, 410)
    assert head(location, version).status in gone
    assert request(location, "PATCH", append_headers(version, total, True), b"x").status in gone
    assert request(location, "DELETE", {INTEROP: str(version)}).status in gone
    assert client.get(location).status_code in (404, 410)


@pytest.mark.parametrize("version", VERSIONS)
def test_one_shot_upload(shared_server: ServerProcess, client: httpx.Client, version: int) -> None:
    """The whole upload in the creation request (draft-01 §4: `Upload-Incomplete: ?0`; -02 §4
    on: `Upload-Complete: ?1`): the 104 still announces it, the 201 says complete (it "MUST
    NOT include the Upload-Complete header field with the value of false", -02 §4), the length
    is Content-Length (-02 §4, -06 §4.1.3), and the bytes come back identical."""
    data = payload(300 * KiB, 100 + version)
    reply = request(shared_server.url, "POST", creation_headers(version, True), data)
    assert reply.status == 201, reply.text
    [announced] = reply.interims
    assert announced.status == 104
    assert reply.headers["location"] == announced["location"]
    assert reply.headers["upload-offset"] == str(len(data))
    assert says_complete(reply.headers, version) is True
    retrieved = head(reply.headers["location"], version)
    assert retrieved.headers["upload-offset"] == str(len(data))
    assert says_complete(retrieved.headers, version) is True
    if version >= 6:
        assert retrieved.headers["upload-length"] == str(len(data))
    assert sha256(client.get(reply.headers["location"]).content) == sha256(data)


@pytest.mark.parametrize("version", VERSIONS)
def test_cut_creation_resumes_at_the_announced_location(
    draft_server: ServerProcess, client: httpx.Client, version: int
) -> None:
    """The point of the 104: a client whose one-shot creation is cut off mid-body already knows
    the upload's Location, retrieves the offset there and sends the rest. draft-01 §4 "the
    Location header field MUST be set to the upload URL" in the 104; -04 §4 "If the server
    does not receive the entire request content, … it SHOULD append as much of the request
    content … as possible" and "the upload MUST NOT be considered complete"; -06 §4.2.2."""
    total = 300 * KiB
    data = payload(total, 150 + version)
    exchange = Exchange(
        draft_server.url,
        "POST",
        {**creation_headers(version, True), "Content-Length": str(total)},
    )
    exchange.send(data[: 96 * KiB])
    location = exchange.interim()["location"]
    wait_receiving(draft_server)
    exchange.send(data[96 * KiB : 160 * KiB])
    exchange.cut()
    retrieved = head(location, version)
    assert retrieved.status == 204
    offset = int(retrieved.headers["upload-offset"])
    assert 0 < offset <= 160 * KiB
    assert says_complete(retrieved.headers, version) is False
    rest = request(location, "PATCH", append_headers(version, offset, True), data[offset:])
    assert rest.status == append_status(version), rest.text
    assert says_complete(rest.headers, version) is True
    assert sha256(client.get(location).content) == sha256(data)


@pytest.mark.parametrize("version", VERSIONS)
def test_empty_creation(shared_server: ServerProcess, client: httpx.Client, version: int) -> None:
    """-03 §4: "The request content MAY be empty. If the Upload-Complete header field is then
    set to true, the client intends to upload an empty entity. An Upload-Complete header field
    is set to false is also valid": the first is a complete empty upload, the second an upload
    to append to."""
    empty = request(shared_server.url, "POST", creation_headers(version, True))
    assert empty.status == 201, empty.text
    assert empty.headers["upload-offset"] == "0"
    assert says_complete(empty.headers, version) is True
    assert client.get(empty.headers["location"]).content == b""

    later = request(shared_server.url, "POST", creation_headers(version, False))
    assert later.status == 201, later.text
    assert says_complete(later.headers, version) is False
    location = later.headers["location"]
    assert offset_of(location, version) == 0
    appended = request(location, "PATCH", append_headers(version, 0, True), b"content")
    assert appended.status == append_status(version), appended.text
    assert client.get(location).content == b"content"


@pytest.mark.parametrize("version", [3, 8])
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_creation_with_other_methods(
    shared_server: ServerProcess, client: httpx.Client, version: int, method: str
) -> None:
    """Creation is any request with content to a non-upload URL: draft-01 §4 "all methods are
    allowed with the exception of GET, HEAD, DELETE, and OPTIONS" (identified by URL first,
    draft-01 §8); -06 §4.2.1 "such as POST, PUT, and PATCH"."""
    reply = request(
        shared_server.url, method, creation_headers(version, True), b"via " + method.encode()
    )
    assert reply.status == 201, reply.text
    assert [interim.status for interim in reply.interims] == [104]
    assert says_complete(reply.headers, version) is True
    assert client.get(reply.headers["location"]).content == b"via " + method.encode()


@pytest.mark.parametrize("version", VERSIONS)
def test_options_discovery(shared_server: ServerProcess, version: int) -> None:
    """OPTIONS with the interop header: the tus answer, plus Upload-Limit with `min-size=0`
    when the server has no limits (-05 §8.2, -06 §4.1.4, -09 §4.1.4) and Accept-Patch with
    application/partial-upload (-10 §4.1.4, interop 8); nothing extra before interop 6."""
    reply = request(shared_server.url, "OPTIONS", {INTEROP: str(version)})
    assert reply.status in (200, 204), reply.text
    assert "1.0.0" in reply.headers["tus-version"]
    if version >= 6:
        assert limit_members(reply.headers.get("upload-limit")) == {"min-size": "0"}
    else:
        assert "upload-limit" not in reply.headers
    if version == 8:
        assert reply.headers["accept-patch"] == "application/partial-upload"
    else:
        assert "accept-patch" not in reply.headers


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [6, 7, 8])
def test_append_needs_partial_upload_media_type(shared_server: ServerProcess, version: int) -> None:
    """-04 §6 / -06 §4.4.1: "The request MUST use the PATCH method with the
    application/partial-upload media type"; anything else is 415 (RFC 5789 §2.2) and the
    upload is not touched."""
    location = create_partial(shared_server.url, version, b"abc")
    for content_type in ("application/offset+octet-stream", "text/plain", None):
        headers = append_headers(version, 3, False)
        if content_type is None:
            del headers["Content-Type"]
        else:
            headers["Content-Type"] = content_type
        reply = request(location, "PATCH", headers, b"defg")
        assert reply.status == 415, (content_type, reply.text)
        assert "application/partial-upload" in reply.headers["accept-patch"]
    parametrised = append_headers(
        version, 3, False, **{"Content-Type": "Application/Partial-Upload"}
    )
    assert request(location, "PATCH", parametrised, b"d").status == append_status(version)
    assert offset_of(location, version) == 4


@pytest.mark.parametrize("version", [3, 4, 5])
def test_append_needs_no_media_type_before_interop_6(
    shared_server: ServerProcess, version: int
) -> None:
    """draft-01…-03 §6 name no media type for PATCH (tus-js-client's 'ietf-draft-03' sends
    none): any Content-Type, or none, is an append."""
    location = create_partial(shared_server.url, version, b"abc")
    headers = append_headers(version, 3, False, **{"Content-Type": "text/plain"})
    assert request(location, "PATCH", headers, b"de").status == 201
    assert offset_of(location, version) == 5


@pytest.mark.parametrize("version", VERSIONS)
def test_head_with_upload_fields(shared_server: ServerProcess, version: int) -> None:
    """draft-01…-05 §5: "The server MUST reject the request with the Upload-Offset header or the
    Upload-Incomplete [Upload-Complete] header by sending a 400 (Bad Request)" (-05 adds
    Upload-Length). -06 §4.3 dropped that rule, so from interop 7 HEAD just answers."""
    location = create_partial(shared_server.url, version, b"abc")
    fields = [{"Upload-Offset": "3"}, completeness(version, False)]
    if version >= 6:
        fields.append({"Upload-Length": "10"})
    for extra in fields:
        reply = head(location, version, **extra)
        if version <= 6:
            assert reply.status == 400, extra
        else:
            assert reply.status == 204, extra
            assert reply.headers["upload-offset"] == "3"


@pytest.mark.parametrize("version", VERSIONS)
def test_delete_with_upload_fields(shared_server: ServerProcess, version: int) -> None:
    """draft-01…-05 §7: "The server MUST reject the request with the Upload-Offset header or the
    Upload-Incomplete [Upload-Complete] header by sending a 400 (Bad Request)", and the upload
    stays; the rule is gone from -06 on (§4.5), where the DELETE succeeds (204)."""
    location = create_partial(shared_server.url, version, b"abc")
    for extra in ({"Upload-Offset": "3"}, completeness(version, False)):
        reply = request(location, "DELETE", {INTEROP: str(version), **extra})
        if version <= 6:
            assert reply.status == 400, extra
            assert offset_of(location, version) == 3
        else:
            assert reply.status == 204, extra
            break
    assert head(location, version).status in ((204,) if version <= 6 else (404, 410))


@pytest.mark.parametrize("version", VERSIONS)
def test_unknown_upload_is_404(shared_server: ServerProcess, version: int) -> None:
    """draft-01 §5/§6/§7: "If the server does not consider the upload associated with this
    upload URL active, it MUST respond with 404 (Not Found)" (HEAD, PATCH and DELETE); an
    append's refusal still says it completed nothing from -06 (§4.4.2)."""
    missing = shared_server.url + "0" * 32
    assert head(missing, version).status == 404
    assert request(missing, "DELETE", {INTEROP: str(version)}).status == 404
    refused = request(missing, "PATCH", append_headers(version, 0, True), b"x")
    assert refused.status == 404
    if version >= 7:
        assert refused.headers["upload-complete"] == "?0"


@pytest.mark.parametrize("version", VERSIONS)
def test_append_without_completeness(shared_server: ServerProcess, version: int) -> None:
    """From interop 7 an append "MUST include the Upload-Complete header field" (-06 §4.4.1):
    without it, 400 and nothing appended. Before, an absent field means the request ends the
    upload (draft-01 §5/§6: "Upload-Incomplete header being omitted or set to false")."""
    location = create_partial(shared_server.url, version, b"abc")
    headers = append_headers(version, 3, False)
    del headers["Upload-Incomplete" if version == 3 else "Upload-Complete"]
    reply = request(location, "PATCH", headers, b"def")
    if version >= 7:
        assert reply.status == 400, reply.text
        assert reply.headers["upload-complete"] == "?0"
        assert offset_of(location, version) == 3
    else:
        assert reply.status == 201, reply.text
        assert reply.headers["upload-offset"] == "6"
        assert says_complete(reply.headers, version) is True
        assert says_complete(head(location, version).headers, version) is True


@pytest.mark.parametrize("version", VERSIONS)
def test_append_to_completed_upload(shared_server: ServerProcess, version: int) -> None:
    """-04 §6: "If the upload is already complete, the server MUST NOT modify the upload
    resource and MUST respond with a 400 (Bad Request)" (completed-upload, -04 §10.2, -06 §6.2);
    -10 §4.4.2: a non-empty append "MUST [be treated] as an inconsistent length failure"
    (interop 8: inconsistent-upload-length). Interop 3-5 say nothing; they get 400 too. The
    upload is left as it was."""
    data = b"complete"
    location = create_complete(shared_server.url, version, data)
    nonempty = request(location, "PATCH", append_headers(version, len(data), True), b"more")
    assert nonempty.status == 400, nonempty.text
    assert nonempty.headers["upload-offset"] == str(len(data))
    empty = request(location, "PATCH", append_headers(version, len(data), True), b"")
    assert empty.status == 400, empty.text
    expected = {6: "completed-upload", 7: "completed-upload", 8: "inconsistent-upload-length"}
    assert problem_type(nonempty) == expected.get(version)
    assert problem_type(empty) == ("completed-upload" if version >= 6 else None)
    assert offset_of(location, version) == len(data)
    assert httpx.get(location).content == data


@pytest.mark.parametrize("version", [6, 7, 8])
def test_inconsistent_lengths(shared_server: ServerProcess, version: int) -> None:
    """Upload-Length (-05 §8.4, -06 §4.1.3) and `?1` + Content-Length both indicate the length;
    "If both indicators are present in the same request, their indicated lengths MUST match.
    If multiple requests include indicators, their indicated values MUST match" (-06 §4.1.3),
    else 400 (-05 §4/§6; inconsistent-upload-length from -06 §6.3). Going past the length is
    rejected with 400 (-05 §6, -06 §4.4.2), and a completing append that ends short of it is
    inconsistent too."""
    kind = "inconsistent-upload-length" if version >= 7 else "about:blank"  # -05 has no type

    within = request(
        shared_server.url, "POST", creation_headers(version, True, **{"Upload-Length": "10"}), b"a"
    )
    assert within.status == 400, within.text
    if version >= 7:
        assert problem_type(within) == kind

    created = request(
        shared_server.url,
        "POST",
        creation_headers(version, False, **{"Upload-Length": "100"}),
        b"x",
    )
    assert created.status == 201, created.text
    location = created.headers["location"]
    assert head(location, version).headers["upload-length"] == "100"

    other = append_headers(version, 1, False, **{"Upload-Length": "50"})
    reply = request(location, "PATCH", other, b"y")
    assert reply.status == 400, reply.text
    assert problem_type(reply) == kind

    too_long = request(location, "PATCH", append_headers(version, 1, False), b"z" * 100)
    assert too_long.status == 400, too_long.text
    assert problem_type(too_long) == kind
    assert offset_of(location, version) == 1

    short = request(location, "PATCH", append_headers(version, 1, True), b"z" * 9)
    assert short.status == 400, short.text
    assert problem_type(short) == kind
    assert says_complete(head(location, version).headers, version) is False

    at = offset_of(location, version)
    rest = request(location, "PATCH", append_headers(version, at, True), b"r" * (100 - at))
    assert rest.status == append_status(version), rest.text
    assert says_complete(rest.headers, version) is True


def test_reaching_the_recorded_length_completes(shared_server: ServerProcess) -> None:
    """An upload whose recorded length is reached is complete, as in tus (the server's rule
    for P8: tus-js-client's IETF modes never send `?1` at the end of a stream), so HEAD says
    complete (-06 §4.3.2) and the bytes can be downloaded."""
    created = request(
        shared_server.url, "POST", creation_headers(8, False, **{"Upload-Length": "6"}), b"abc"
    )
    location = created.headers["location"]
    reply = request(location, "PATCH", append_headers(8, 3, False), b"def")
    assert reply.status == 204, reply.text
    assert reply.headers["upload-complete"] == "?1"
    assert head(location, 8).headers["upload-complete"] == "?1"
    assert httpx.get(location).content == b"abcdef"


def test_unknown_interop_version(shared_server: ServerProcess, client: httpx.Client) -> None:
    """An interop version the server does not implement gets no 104 ("MUST NOT send a 104 …
    when the interop version … is missing or mismatching", draft-01 §4.2, -09 Appendix B). A
    creation that does not announce more parts is stored as a plain upload (201 + Location);
    anything else is 400 naming the supported versions (P23)."""
    data = payload(100 * KiB, 99)
    plain = request(shared_server.url, "POST", {INTEROP: "99"}, data)
    assert plain.status == 201, plain.text
    assert plain.interims == []
    assert sha256(client.get(plain.headers["location"]).content) == sha256(data)

    for headers in (
        {INTEROP: "99", "Upload-Complete": "?0"},
        {INTEROP: "99", "Upload-Incomplete": "?1"},
    ):
        refused = request(shared_server.url, "POST", headers, b"part")
        assert refused.status == 400, refused.text
        assert refused.interims == []
        assert SUPPORTED_NAMES in refused.text

    location = create_partial(shared_server.url, 8, b"abc")
    for method, headers in (
        ("HEAD", {INTEROP: "99"}),
        ("PATCH", {INTEROP: "99", "Upload-Offset": "3", "Upload-Complete": "?1"}),
        ("DELETE", {INTEROP: "99"}),
    ):
        reply = request(location, method, headers, b"d" if method == "PATCH" else b"")
        assert reply.status == 400, (method, reply.text)
        if method != "HEAD":
            assert SUPPORTED_NAMES in reply.text
    assert offset_of(location, 8) == 3


FUZZ = [
    "",
    "?",
    "?2",
    "?1;",
    "?1;a=\x7f",
    "1.5",
    "-1",
    "1e3",
    "0x10",
    "9999999999999999",
    '"3"',
    ":AAA=:",
    '%"caf%c3%a9"',
    "@1700000000",
    "abc, def",
    "(1 2)",
    "1;a=?1",
    "\xff\xfe",
    " ?1 ",
    "?1, ?0",
]


@pytest.mark.parametrize("version", VERSIONS)
def test_malformed_structured_fields_are_never_a_server_error(
    shared_server: ServerProcess, version: int
) -> None:
    """Every draft field is a structured field (RFC 9651; draft-01 §9, -06 §4.1, -09 §4.1.x:
    "Other values MUST cause the entire header field to be ignored"): whatever a client puts
    in them, the answer is a 2xx or 4xx, never a 5xx, and the server keeps working."""
    location = create_partial(shared_server.url, version, b"abc")
    field = "Upload-Incomplete" if version == 3 else "Upload-Complete"
    statuses: dict[str, set[int]] = {}
    for value in FUZZ:
        attempts: list[tuple[str, str, dict[str, str], bytes]] = [
            ("creation", "POST", {INTEROP: str(version), field: value}, b"x"),
            ("creation", "POST", creation_headers(version, False, **{"Upload-Length": value}), b""),
            ("creation", "POST", creation_headers(version, True, **{"Upload-Offset": value}), b""),
            ("interop", "POST", {INTEROP: value, "Upload-Complete": "?1"}, b"y"),
            ("append", "PATCH", append_headers(version, 3, False, **{"Upload-Offset": value}), b""),
            ("append", "PATCH", {**append_headers(version, 3, False), field: value}, b""),
            ("append", "PATCH", append_headers(version, 3, False, **{"Upload-Length": value}), b""),
            ("head", "HEAD", {INTEROP: str(version), "Upload-Offset": value}, b""),
            ("head", "HEAD", {INTEROP: value}, b""),
        ]
        for what, method, headers, body in attempts:
            url = shared_server.url if method == "POST" else location
            reply = request(url, method, headers, body)
            assert 200 <= reply.status < 500, (what, value, reply.status, reply.text)
            statuses.setdefault(what, set()).add(reply.status)
    assert 400 in statuses["append"] and 400 in statuses["creation"]
    assert offset_of(location, version) == 3  # empty appends only (" ?1 " may complete it)
    create_complete(shared_server.url, version, b"still serving")


# -- concurrency -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("procedure", ["creation", "append"])
def test_head_takes_over_a_stalled_request(
    draft_server: ServerProcess, client: httpx.Client, version: int, procedure: str
) -> None:
    """A creation or append whose client stalls mid-body (socket open, nothing more sent) is
    stopped by a HEAD from another connection, which then reports an offset the next append is
    accepted at: "terminating the previous request before processing the new request" (-06
    §4.6); "the offset sent by the server MUST be accepted in a subsequent request to append"
    (-09 §4.6); draft-01 §6: "RECOMMENDED to take measures to avoid parallel upload
    transfers". The stalled request is answered (4xx with the offset), not left hanging."""
    total = 400 * KiB
    data = payload(total, 200 + version)
    start = 0 if procedure == "creation" else 100 * KiB
    if procedure == "creation":
        headers = {**creation_headers(version, True), "Content-Length": str(total)}
        stalled = Exchange(draft_server.url, "POST", headers)
        location = stalled.interim()["location"]
    else:
        location = create_partial(draft_server.url, version, data[:start])
        headers = {**append_headers(version, start, True), "Content-Length": str(total - start)}
        stalled = Exchange(location, "PATCH", headers)
    try:
        stalled.send(data[start : start + 128 * KiB])
        wait_receiving(draft_server)
        retrieved = head(location, version)
        assert retrieved.status == 204, retrieved.text
        offset = int(retrieved.headers["upload-offset"])
        assert start <= offset <= start + 128 * KiB
        assert says_complete(retrieved.headers, version) is False
        stopped: Reply = stalled.reply(timeout=10)
        assert 400 <= stopped.status < 500
        assert stopped.headers["upload-offset"] == str(offset)
    finally:
        stalled.cut()
    resumed = request(location, "PATCH", append_headers(version, offset, True), data[offset:])
    assert resumed.status == append_status(version), resumed.text
    assert says_complete(resumed.headers, version) is True
    assert sha256(client.get(location).content) == sha256(data)


@pytest.mark.parametrize("version", [3, 8])
def test_delete_stops_an_append_in_flight(draft_server: ServerProcess, version: int) -> None:
    """DELETE while an append is still sending: "The server SHOULD terminate any in-flight
    requests to the upload resource before sending the response" (-09 §4.5.2); the DELETE is
    204 (draft-01 §7, -06 §4.5.2), the append is answered, and the upload is gone."""
    location = create_partial(draft_server.url, version, b"start")
    headers = {**append_headers(version, 5, True), "Content-Length": str(300 * KiB)}
    stalled = Exchange(location, "PATCH", headers)
    try:
        stalled.send(payload(100 * KiB, 7))
        wait_receiving(draft_server)
        deleted = request(location, "DELETE", {INTEROP: str(version)}, timeout=10)
        assert deleted.status == 204, deleted.text
        assert 400 <= stalled.reply(timeout=10).status < 500
    finally:
        stalled.cut()
    assert head(location, version).status in ((404,) if version <= 6 else (404, 410))
