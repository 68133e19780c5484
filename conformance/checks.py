"""One check per server-side MUST/SHOULD of protocol.md (tus 1.0.0), grouped by extension.

Every check quotes the sentence it verifies. Checks create their own small uploads and
never depend on each other. Nothing here knows which server is being checked.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import time
import zlib
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from conformance.runner import OCTET, TUS, Skip, Target, check, poll

IMF_FIXDATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" \d{4} \d{2}:\d{2}:\d{2} GMT"
)
DIGESTS: dict[str, Callable[[bytes], bytes]] = {
    "sha1": lambda d: hashlib.sha1(d).digest(),
    "sha256": lambda d: hashlib.sha256(d).digest(),
    "sha512": lambda d: hashlib.sha512(d).digest(),
    "md5": lambda d: hashlib.md5(d).digest(),
    "crc32": lambda d: zlib.crc32(d).to_bytes(4, "big"),
}


def checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(DIGESTS[algorithm](data)).decode()}"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def tokens(value: str) -> list[str]:
    return [part.strip() for part in value.split(",")]


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


# -- core ------------------------------------------------------------------------------------


@check(
    "core",
    "Core Protocol > Headers > Tus-Resumable",
    "The Tus-Resumable header MUST be included in every request and response except for OPTIONS "
    "requests. The value MUST be the version of the protocol used by the Client or the Server.",
)
def tus_resumable_in_every_response(t: Target) -> None:
    location = t.create(4)
    responses = {
        "POST": t.post({"Upload-Length": "1"}),
        "HEAD": t.head(location),
        "PATCH": t.patch(location, 0, b"ab"),
        "PATCH 409": t.patch(location, 0, b"ab"),
        "HEAD 404": t.head(location.rstrip("/") + "nonexistent0"),
    }
    for name, response in responses.items():
        assert response.headers.get("Tus-Resumable") == "1.0.0", (
            f"{name} ({response.status_code}) answered Tus-Resumable="
            f"{response.headers.get('Tus-Resumable')!r}"
        )


@check(
    "core",
    "Core Protocol > Headers > Tus-Resumable",
    "If the version specified by the Client is not supported by the Server, it MUST respond "
    "with the 412 Precondition Failed status and MUST include the Tus-Version header into the "
    "response. In addition, the Server MUST NOT process the request.",
)
def unsupported_version_is_412(t: Target) -> None:
    response = t.http.post(t.url, headers={"Tus-Resumable": "0.0.1", "Upload-Length": "5"})
    assert response.status_code == 412, f"POST with Tus-Resumable 0.0.1 got {response.status_code}"
    assert "Tus-Version" in response.headers, "412 without Tus-Version"
    assert "Location" not in response.headers, "the request was processed (Location given)"
    location = t.create(5)
    patched = t.http.patch(
        location,
        content=b"hello",
        headers={"Tus-Resumable": "0.0.1", "Upload-Offset": "0", "Content-Type": OCTET},
    )
    assert patched.status_code == 412, f"PATCH with Tus-Resumable 0.0.1 got {patched.status_code}"
    assert t.offset(location) == 0, "a PATCH with an unsupported version was processed"


@check(
    "core",
    "Core Protocol > Headers > Tus-Version",
    "The Tus-Version response header MUST be a comma-separated list of protocol versions "
    "supported by the Server.",
)
def tus_version_lists_versions(t: Target) -> None:
    assert t.options is not None
    value = t.options.headers.get("Tus-Version")
    assert value, "OPTIONS without Tus-Version"
    versions = tokens(value)
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in versions), f"Tus-Version {value!r}"
    assert "1.0.0" in versions, f"Tus-Version {value!r} lacks 1.0.0"


@check(
    "core",
    "Core Protocol > Headers > Tus-Extension",
    "The Tus-Extension response header MUST be a comma-separated list of the extensions "
    "supported by the Server. If no extensions are supported, the Tus-Extension header MUST "
    "be omitted.",
)
def tus_extension_is_a_list(t: Target) -> None:
    assert t.options is not None
    value = t.options.headers.get("Tus-Extension")
    if value is None:
        return
    names = tokens(value)
    assert all(re.fullmatch(r"[a-z0-9-]+", n) for n in names), f"Tus-Extension {value!r}"
    assert len(set(names)) == len(names), f"Tus-Extension repeats a name: {value!r}"


@check(
    "core",
    "Core Protocol > Headers > Tus-Max-Size",
    "The Tus-Max-Size response header MUST be a non-negative integer indicating the maximum "
    "allowed size of an entire upload in bytes.",
)
def tus_max_size_is_an_integer(t: Target) -> None:
    assert t.options is not None
    value = t.options.headers.get("Tus-Max-Size")
    if value is None:
        raise Skip("no Tus-Max-Size advertised")
    assert re.fullmatch(r"\d+", value), f"Tus-Max-Size {value!r}"


@check(
    "core",
    "Core Protocol > Requests > OPTIONS",
    "A successful response indicated by the 204 No Content or 200 OK status MUST contain the "
    "Tus-Version header.",
)
def options_has_tus_version(t: Target) -> None:
    response = t.http.options(t.url)
    assert response.status_code in (200, 204), f"OPTIONS got {response.status_code}"
    assert "Tus-Version" in response.headers, "OPTIONS without Tus-Version"


@check(
    "core",
    "Core Protocol > Requests > OPTIONS",
    "The Client SHOULD NOT include the Tus-Resumable header in the request and the Server "
    "MUST ignore the header.",
)
def options_ignores_tus_resumable(t: Target) -> None:
    response = t.http.options(t.url, headers={"Tus-Resumable": "0.0.1"})
    assert response.status_code in (200, 204), (
        f"OPTIONS with Tus-Resumable 0.0.1 got {response.status_code}"
    )
    assert "Tus-Version" in response.headers


@check(
    "core",
    "Core Protocol > Requests > HEAD",
    "The Server MUST always include the Upload-Offset header in the response for a HEAD "
    "request, even if the offset is 0, or the upload is already considered completed.",
)
def head_always_has_offset(t: Target) -> None:
    location = t.create(3)
    response = t.head(location)
    assert response.status_code == 200, f"HEAD got {response.status_code}"
    assert response.headers.get("Upload-Offset") == "0", "HEAD of a new upload: Upload-Offset not 0"
    assert t.patch(location, 0, b"abc").status_code == 204
    done = t.head(location)
    assert done.headers.get("Upload-Offset") == "3", (
        "HEAD of a completed upload: Upload-Offset not 3"
    )


@check(
    "core",
    "Core Protocol > Requests > HEAD",
    "If the size of the upload is known, the Server MUST include the Upload-Length header in "
    "the response.",
)
def head_has_length(t: Target) -> None:
    location = t.create(7)
    assert t.head(location).headers.get("Upload-Length") == "7"


@check(
    "core",
    "Core Protocol > Requests > HEAD",
    "If the resource is not found, the Server SHOULD return either the 404 Not Found, 410 Gone "
    "or 403 Forbidden status without the Upload-Offset header.",
)
def head_unknown_is_404(t: Target) -> None:
    location = t.create(1)
    unknown = location.rstrip("/") + "x0000unknown"
    response = t.head(unknown)
    assert response.status_code in (403, 404, 410), (
        f"HEAD of an unknown upload got {response.status_code}"
    )
    assert "Upload-Offset" not in response.headers


@check(
    "core",
    "Core Protocol > Requests > HEAD",
    "The Server MUST prevent the client and/or proxies from caching the response by adding "
    "the Cache-Control: no-store header to the response.",
)
def head_is_not_cached(t: Target) -> None:
    location = t.create(1)
    value = t.head(location).headers.get("Cache-Control", "")
    assert "no-store" in tokens(value.lower()), f"Cache-Control {value!r}"


@check(
    "core",
    "Core Protocol > Requests > PATCH",
    "The Server SHOULD accept PATCH requests against any upload URL and apply the bytes "
    "contained in the message at the given offset specified by the Upload-Offset header.",
)
def patch_applies_bytes(t: Target) -> None:
    location = t.create(10)
    first = t.patch(location, 0, b"01234")
    assert first.status_code == 204, f"PATCH got {first.status_code}"
    second = t.patch(location, 5, b"56789")
    assert second.status_code == 204, f"second PATCH got {second.status_code}"
    assert t.offset(location) == 10


@check(
    "core",
    "Core Protocol > Requests > PATCH",
    "All PATCH requests MUST use Content-Type: application/offset+octet-stream, otherwise the "
    "server SHOULD return a 415 Unsupported Media Type status.",
    level="SHOULD",
)
def patch_wrong_content_type_is_415(t: Target) -> None:
    location = t.create(5)
    response = t.http.patch(
        location,
        content=b"hello",
        headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 415, (
        f"PATCH with a wrong Content-Type got {response.status_code}"
    )
    assert t.offset(location) == 0, "the upload was modified"


@check(
    "core",
    "Core Protocol > Requests > PATCH",
    "If the offsets do not match, the Server MUST respond with the 409 Conflict status "
    "without modifying the upload resource.",
)
def patch_offset_mismatch_is_409(t: Target) -> None:
    location = t.create(10)
    assert t.patch(location, 0, b"abc").status_code == 204
    for wrong in (0, 5):
        response = t.patch(location, wrong, b"xyz")
        assert response.status_code == 409, (
            f"PATCH at offset {wrong} (current 3) got {response.status_code}"
        )
    assert t.offset(location) == 3, "the upload was modified"


@check(
    "core",
    "Core Protocol > Requests > PATCH",
    "The Server MUST acknowledge successful PATCH requests with the 204 No Content status. It "
    "MUST include the Upload-Offset header containing the new offset. The new offset MUST be "
    "the sum of the offset before the PATCH request and the number of bytes received and "
    "processed or stored during the current PATCH request.",
)
def patch_answers_204_with_new_offset(t: Target) -> None:
    location = t.create(9)
    response = t.patch(location, 0, b"1234")
    assert response.status_code == 204, f"PATCH got {response.status_code}"
    assert response.headers.get("Upload-Offset") == "4"
    response = t.patch(location, 4, b"56789")
    assert response.status_code == 204 and response.headers.get("Upload-Offset") == "9"


@check(
    "core",
    "Core Protocol > Requests > PATCH",
    "If the server receives a PATCH request against a non-existent resource it SHOULD return "
    "a 404 Not Found status.",
)
def patch_unknown_is_404(t: Target) -> None:
    location = t.create(1)
    response = t.patch(location.rstrip("/") + "x0000unknown", 0, b"x")
    assert response.status_code == 404, f"PATCH of an unknown upload got {response.status_code}"


@check(
    "core",
    "Core Protocol > Requests > PATCH",
    "The Server SHOULD always attempt to store as much of the received data as possible.",
)
def patch_keeps_data_of_dropped_request(t: Target) -> None:
    size, sent = 1 << 20, 256 * 1024
    location = t.create(size)
    head = (
        f"PATCH {path_of(location)} HTTP/1.1\r\nHost: {t.host_header()}\r\n"
        f"Tus-Resumable: 1.0.0\r\nContent-Type: {OCTET}\r\nUpload-Offset: 0\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    parts = urlsplit(t.url)
    if parts.scheme != "http":
        raise Skip("raw-socket check needs plain http")
    with socket.create_connection((parts.hostname or "", parts.port or 80)) as sock:
        sock.sendall(head + b"d" * sent)
    # The server learns of the drop on its own time; poll HEAD until it reports the bytes.
    kept = poll(lambda: t.offset(location) > 0, timeout=15)
    assert kept, "none of the 256 KiB received before the connection dropped was kept"
    assert t.offset(location) <= sent


@check(
    "core",
    "Core Protocol > Headers > X-HTTP-Method-Override",
    "The X-HTTP-Method-Override request header MUST be a string which MUST be interpreted as "
    "the request's method by the Server, if the header is presented. The actual method of the "
    "request MUST be ignored.",
)
def method_override_is_honoured(t: Target) -> None:
    location = t.create(5)
    response = t.http.post(
        location,
        content=b"hello",
        headers={
            **TUS,
            "X-HTTP-Method-Override": "PATCH",
            "Upload-Offset": "0",
            "Content-Type": OCTET,
        },
    )
    assert response.status_code == 204, f"POST overridden to PATCH got {response.status_code}"
    assert t.offset(location) == 5


@check(
    "core",
    "Core Protocol > Headers > Upload-Offset",
    "The Upload-Offset request and response header indicates a byte offset within a resource. "
    "The value MUST be a non-negative integer.",
)
def negative_offset_is_rejected(t: Target) -> None:
    location = t.create(5)
    for bad in ("-1", "abc", "1.5"):
        response = t.http.patch(
            location,
            content=b"hello",
            headers={**TUS, "Upload-Offset": bad, "Content-Type": OCTET},
        )
        assert 400 <= response.status_code < 500, (
            f"Upload-Offset {bad!r} got {response.status_code}"
        )
    assert t.offset(location) == 0


# -- creation --------------------------------------------------------------------------------


@check(
    "creation",
    "Creation > Requests > POST",
    "The Server MUST acknowledge a successful upload creation with the 201 Created status. The "
    "Server MUST set the Location header to the URL of the created resource. This URL MAY be "
    "absolute or relative.",
)
def post_creates_with_location(t: Target) -> None:
    response = t.post({"Upload-Length": "10"})
    assert response.status_code == 201, f"POST got {response.status_code}"
    location = response.headers.get("Location")
    assert location, "201 without Location"
    assert t.head(t.absolute(location)).status_code == 200, "Location does not name the upload"


@check(
    "creation",
    "Creation > Example",
    "The new resource has an implicit offset of 0 allowing the Client to use the core protocol "
    "for performing the actual upload.",
)
def new_upload_has_offset_zero(t: Target) -> None:
    location = t.create(10)
    assert t.offset(location) == 0
    assert t.patch(location, 0, b"x" * 10).status_code == 204


@check(
    "creation",
    "Creation > Requests > POST",
    "If an upload contains additional metadata, responses to HEAD requests MUST include the "
    "Upload-Metadata header and its value as specified by the Client during the creation.",
)
def head_echoes_metadata(t: Target) -> None:
    value = f"filename {b64('world_domination_plan.pdf')},is_confidential"
    location = t.create(3, {"Upload-Metadata": value})
    echoed = t.head(location).headers.get("Upload-Metadata")
    assert echoed is not None, "HEAD without Upload-Metadata"
    pairs = sorted(p.strip() for p in echoed.split(","))
    assert pairs == sorted(p.strip() for p in value.split(",")), f"Upload-Metadata {echoed!r}"


@check(
    "creation",
    "Creation > Requests > POST",
    "If the length of the upload exceeds the maximum, which MAY be specified using the "
    "Tus-Max-Size header, the Server MUST respond with the 413 Request Entity Too Large status.",
)
def too_large_is_413(t: Target) -> None:
    if t.max_size is None:
        raise Skip("no Tus-Max-Size advertised")
    response = t.post({"Upload-Length": str(t.max_size + 1)})
    assert response.status_code == 413, f"POST above Tus-Max-Size got {response.status_code}"


@check(
    "creation",
    "Creation > Headers > Upload-Defer-Length",
    "If the length of an upload is not deferred, this header MUST be omitted.",
)
def no_defer_header_for_known_length(t: Target) -> None:
    location = t.create(4)
    assert "Upload-Defer-Length" not in t.head(location).headers


@check(
    "creation",
    "Core Protocol > Headers > Upload-Length",
    "The Upload-Length request and response header indicates the size of the entire upload in "
    "bytes. The value MUST be a non-negative integer.",
)
def negative_length_is_rejected(t: Target) -> None:
    for bad in ("-1", "ten", "1e3"):
        response = t.post({"Upload-Length": bad})
        assert 400 <= response.status_code < 500, (
            f"Upload-Length {bad!r} got {response.status_code}"
        )


@check(
    "creation",
    "Creation > Headers > Upload-Metadata",
    "The value MAY be empty. In these cases, the space, which would normally separate the key "
    "and the value, MAY be left out.",
)
def metadata_with_empty_value(t: Target) -> None:
    location = t.create(1, {"Upload-Metadata": "flag,name " + b64("x")})
    echoed = t.head(location).headers.get("Upload-Metadata", "")
    keys = {p.strip().split(" ")[0] for p in echoed.split(",")}
    assert keys == {"flag", "name"}, f"Upload-Metadata echoed as {echoed!r}"


# -- creation-with-upload --------------------------------------------------------------------


@check(
    "creation-with-upload",
    "Creation With Upload",
    "The Server SHOULD accept as many bytes as possible and MUST include the Upload-Offset "
    "header in the response and MUST set its value to the offset of the upload after applying "
    "the accepted bytes.",
)
def post_with_body_reports_offset(t: Target) -> None:
    response = t.post({"Upload-Length": "100", "Content-Type": OCTET}, content=b"hello")
    assert response.status_code == 201, f"POST with body got {response.status_code}"
    assert response.headers.get("Upload-Offset") == "5", "Upload-Offset missing or wrong"
    location = t.absolute(response.headers["Location"])
    assert t.offset(location) == 5
    assert t.patch(location, 5, b"x" * 95).headers.get("Upload-Offset") == "100"


@check(
    "creation-with-upload",
    "Creation With Upload",
    "Furthermore, this extension depends directly on the Creation extension. Therefore, if the "
    "Server does not offer the Creation extension, it MUST NOT offer the Creation With Upload "
    "extension either.",
)
def creation_with_upload_needs_creation(t: Target) -> None:
    assert "creation" in t.extensions


@check(
    "creation-with-upload",
    "Creation With Upload",
    "The Client MAY include either the entirety or a chunk of the upload data in the body of "
    "the POST request. In this case, similar rules as for the PATCH request and response apply.",
)
def post_with_whole_upload_completes(t: Target) -> None:
    response = t.post({"Upload-Length": "11", "Content-Type": OCTET}, content=b"hello world")
    assert response.status_code == 201 and response.headers.get("Upload-Offset") == "11"
    head = t.head(t.absolute(response.headers["Location"]))
    assert head.headers.get("Upload-Offset") == head.headers.get("Upload-Length") == "11"


# -- creation-defer-length -------------------------------------------------------------------


@check(
    "creation-defer-length",
    "Creation > Requests > POST",
    "As long as the length of the upload is not known, the Server MUST set "
    "Upload-Defer-Length: 1 in all responses to HEAD requests.",
)
def deferred_head_says_defer(t: Target) -> None:
    location = t.create(None)
    head = t.head(location)
    assert head.headers.get("Upload-Defer-Length") == "1", "HEAD lacks Upload-Defer-Length: 1"
    assert "Upload-Length" not in head.headers
    assert t.patch(location, 0, b"abc").status_code == 204
    assert t.head(location).headers.get("Upload-Defer-Length") == "1"


@check(
    "creation-defer-length",
    "Creation > Requests > POST",
    "Once it is known the Client MUST set the Upload-Length header in the next PATCH request. "
    "Once set the length MUST NOT be changed.",
)
def deferred_length_set_once(t: Target) -> None:
    location = t.create(None)
    response = t.patch(location, 0, b"abc", **{"Upload-Length": "6"})
    assert response.status_code == 204, f"PATCH declaring the length got {response.status_code}"
    head = t.head(location)
    assert head.headers.get("Upload-Length") == "6"
    assert "Upload-Defer-Length" not in head.headers
    t.patch(location, 3, b"d", **{"Upload-Length": "9"})
    assert t.head(location).headers.get("Upload-Length") == "6", "the length was changed"


@check(
    "creation-defer-length",
    "Creation > Requests > POST",
    "If the Upload-Defer-Length header contains any other value than 1 the server should "
    "return a 400 Bad Request status.",
)
def defer_other_value_is_400(t: Target) -> None:
    for bad in ("0", "2", "yes"):
        response = t.post({"Upload-Defer-Length": bad})
        assert response.status_code == 400, (
            f"Upload-Defer-Length {bad!r} got {response.status_code}"
        )


# -- expiration ------------------------------------------------------------------------------


def _expires(value: str | None, where: str) -> None:
    assert value is not None, f"{where} without Upload-Expires"
    assert IMF_FIXDATE.fullmatch(value), f"{where}: Upload-Expires {value!r} is not RFC 7231"
    assert parsedate_to_datetime(value).timestamp() > time.time() - 5, f"{where}: in the past"


@check(
    "expiration",
    "Expiration > Headers > Upload-Expires",
    "This header MUST be included in every PATCH response if the upload is going to expire.",
)
def patch_response_has_expires(t: Target) -> None:
    location = t.create(10)
    response = t.patch(location, 0, b"abc")
    assert response.status_code == 204
    _expires(response.headers.get("Upload-Expires"), "PATCH response")


@check(
    "expiration",
    "Expiration > Headers > Upload-Expires",
    "If the expiration is known at the creation, the Upload-Expires header MUST be included in "
    "the response to the initial POST request.",
)
def post_response_has_expires(t: Target) -> None:
    response = t.post({"Upload-Length": "10"})
    assert response.status_code == 201
    value = response.headers.get("Upload-Expires")
    if value is None:
        raise Skip("expiry not known at creation (allowed)")
    _expires(value, "POST response")


@check(
    "expiration",
    "Expiration > Headers > Upload-Expires",
    "The value of the Upload-Expires header MUST be in RFC 7231 datetime format.",
)
def expires_format(t: Target) -> None:
    location = t.create(10)
    value = t.patch(location, 0, b"a").headers.get("Upload-Expires")
    _expires(value, "PATCH response")
    head_value = t.head(location).headers.get("Upload-Expires")
    if head_value is not None:
        _expires(head_value, "HEAD response")


# -- checksum --------------------------------------------------------------------------------


@check(
    "checksum",
    "Checksum",
    "The Tus-Checksum-Algorithm header MUST be included in the response to an OPTIONS request.",
)
def options_lists_algorithms(t: Target) -> None:
    assert t.options is not None
    assert "Tus-Checksum-Algorithm" in t.options.headers, "OPTIONS lacks Tus-Checksum-Algorithm"
    assert t.algorithms, "Tus-Checksum-Algorithm is empty"


@check(
    "checksum",
    "Checksum",
    "The Server MUST support at least the SHA1 checksum algorithm identified by sha1. The names "
    "of the checksum algorithms MUST only consist of ASCII characters with the modification "
    "that uppercase characters are excluded.",
)
def sha1_supported_lowercase_names(t: Target) -> None:
    assert "sha1" in t.algorithms, f"Tus-Checksum-Algorithm {t.algorithms} lacks sha1"
    for name in t.algorithms:
        assert name.isascii() and name == name.lower(), f"algorithm name {name!r}"


@check(
    "checksum",
    "Checksum",
    "Once the entire request has been received, the Server MUST verify the uploaded chunk "
    "against the provided checksum using the specified algorithm. ... 204 No Content if the "
    "checksums match and the processing of the data succeeded.",
)
def matching_checksum_accepted(t: Target) -> None:
    location = t.create(11)
    response = t.patch(
        location, 0, b"hello world", **{"Upload-Checksum": "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="}
    )
    assert response.status_code == 204, f"matching sha1 got {response.status_code}"
    assert response.headers.get("Upload-Offset") == "11"


@check(
    "checksum",
    "Checksum > Headers > Tus-Checksum-Algorithm",
    "The Tus-Checksum-Algorithm response header MUST be a comma-separated list of the checksum "
    "algorithms supported by the server.",
)
def every_advertised_algorithm_works(t: Target) -> None:
    known = [a for a in t.algorithms if a in DIGESTS]
    data = bytes(range(256)) * 8
    for algorithm in known:
        location = t.create(len(data))
        good = t.patch(location, 0, data, **{"Upload-Checksum": checksum(algorithm, data)})
        assert good.status_code == 204, f"matching {algorithm} got {good.status_code}"
    for algorithm in known:
        location = t.create(len(data))
        bad = t.patch(location, 0, data, **{"Upload-Checksum": checksum(algorithm, b"other")})
        assert bad.status_code == 460, f"mismatching {algorithm} got {bad.status_code}"


@check(
    "checksum",
    "Checksum",
    "460 Checksum Mismatch if the checksums mismatch ... In the first two cases the uploaded "
    "chunk MUST be discarded, and the upload and its offset MUST NOT be updated.",
)
def mismatch_is_460_and_discarded(t: Target) -> None:
    location = t.create(10)
    assert t.patch(location, 0, b"01234").status_code == 204
    response = t.patch(location, 5, b"56789", **{"Upload-Checksum": checksum("sha1", b"other")})
    assert response.status_code == 460, f"mismatching checksum got {response.status_code}"
    assert t.offset(location) == 5, "the offset was updated"
    retry = t.patch(location, 5, b"56789", **{"Upload-Checksum": checksum("sha1", b"56789")})
    assert retry.status_code == 204 and retry.headers.get("Upload-Offset") == "10"


@check(
    "checksum",
    "Checksum",
    "400 Bad Request if the checksum algorithm is not supported by the server ... In the first "
    "two cases the uploaded chunk MUST be discarded, and the upload and its offset MUST NOT be "
    "updated.",
)
def unsupported_algorithm_is_400(t: Target) -> None:
    name = "nosuchalgo"
    if name in t.algorithms:
        raise Skip("server supports the made-up algorithm")
    location = t.create(5)
    response = t.patch(location, 0, b"hello", **{"Upload-Checksum": f"{name} AAAA"})
    assert response.status_code == 400, f"unsupported algorithm got {response.status_code}"
    assert t.offset(location) == 0, "the offset was updated"


# -- checksum-trailer ------------------------------------------------------------------------


def _trailer_patch(
    t: Target, location: str, offset: int, pieces: list[bytes], value: str
) -> tuple[int, dict[str, str]]:
    parts = urlsplit(t.url)
    if parts.scheme not in ("http", "https"):
        raise Skip("unsupported URL scheme")
    wire = (
        f"PATCH {path_of(location)} HTTP/1.1\r\nHost: {t.host_header()}\r\n"
        f"Tus-Resumable: 1.0.0\r\nContent-Type: {OCTET}\r\nUpload-Offset: {offset}\r\n"
        "Transfer-Encoding: chunked\r\nTrailer: Upload-Checksum\r\nConnection: close\r\n\r\n"
    ).encode()
    for piece in pieces:
        wire += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    wire += f"0\r\nUpload-Checksum: {value}\r\n\r\n".encode()
    return t.raw(wire)


@check(
    "checksum-trailer",
    "Checksum",
    "If the hash cannot be calculated at the beginning of the upload, it MAY be included as a "
    "trailer. If the Server can handle trailers, this behavior MUST be announced by adding "
    "checksum-trailer to the Tus-Extension header.",
)
def trailer_checksum_accepted(t: Target) -> None:
    pieces = [b"hello ", b"world"]
    location = t.create(11)
    status, headers = _trailer_patch(t, location, 0, pieces, checksum("sha1", b"hello world"))
    assert status == 204, f"chunked PATCH with a matching trailer got {status}"
    assert headers.get("upload-offset") == "11"


@check(
    "checksum-trailer",
    "Checksum",
    "Trailers, also known as trailing headers, are headers which are sent after the request's "
    "body has been transmitted already. ... 460 Checksum Mismatch if the checksums mismatch ... "
    "the uploaded chunk MUST be discarded, and the upload and its offset MUST NOT be updated.",
)
def trailer_mismatch_is_460(t: Target) -> None:
    location = t.create(11)
    status, _ = _trailer_patch(t, location, 0, [b"hello ", b"world"], checksum("sha1", b"bye"))
    assert status == 460, f"chunked PATCH with a mismatching trailer got {status}"
    assert t.offset(location) == 0, "the offset was updated"


# -- termination -----------------------------------------------------------------------------


@check(
    "termination",
    "Termination > Requests > DELETE",
    "When receiving a DELETE request for an existing upload the Server SHOULD free associated "
    "resources and MUST respond with the 204 No Content status confirming that the upload was "
    "terminated.",
)
def delete_is_204(t: Target) -> None:
    unfinished = t.create(10)
    assert t.patch(unfinished, 0, b"abc").status_code == 204
    response = t.http.delete(unfinished, headers=TUS)
    assert response.status_code == 204, f"DELETE of an unfinished upload got {response.status_code}"
    finished = t.create(3)
    assert t.patch(finished, 0, b"abc").status_code == 204
    response = t.http.delete(finished, headers=TUS)
    assert response.status_code == 204, f"DELETE of a completed upload got {response.status_code}"


@check(
    "termination",
    "Termination > Requests > DELETE",
    "For all future requests to this URL, the Server SHOULD respond with the 404 Not Found or "
    "410 Gone status.",
)
def deleted_is_gone(t: Target) -> None:
    location = t.create(10)
    assert t.http.delete(location, headers=TUS).status_code == 204
    head = t.head(location)
    assert head.status_code in (404, 410), f"HEAD after DELETE got {head.status_code}"
    patched = t.patch(location, 0, b"abc")
    assert patched.status_code in (404, 410), f"PATCH after DELETE got {patched.status_code}"


@check(
    "termination",
    "Core Protocol > Headers > X-HTTP-Method-Override",
    "The X-HTTP-Method-Override request header MUST be a string which MUST be interpreted as "
    "the request's method by the Server ... The Client SHOULD use this header if its "
    "environment does not support the PATCH or DELETE methods.",
)
def delete_through_method_override(t: Target) -> None:
    location = t.create(10)
    response = t.http.post(location, headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
    assert response.status_code == 204, f"POST overridden to DELETE got {response.status_code}"
    assert t.head(location).status_code in (404, 410)


# -- concatenation ---------------------------------------------------------------------------


def _partial(t: Target, data: bytes | None, length: int | None = None) -> str:
    size = len(data) if data is not None and length is None else length
    location = t.create(size, {"Upload-Concat": "partial"})
    if data:
        response = t.patch(location, 0, data)
        assert response.status_code == 204, f"PATCH to a partial upload got {response.status_code}"
    return location


def _final(t: Target, *locations: str, **headers: str) -> tuple[str, str]:
    value = "final;" + " ".join(locations)
    response = t.post({"Upload-Concat": value, **headers})
    assert response.status_code == 201, (
        f"final creation got {response.status_code}: {response.text[:200]}"
    )
    return t.absolute(response.headers["Location"]), value


@check(
    "concatenation",
    "Concatenation",
    "The length of the final upload MUST be the sum of the length of all partial uploads.",
)
def final_length_is_sum(t: Target) -> None:
    final, _ = _final(t, _partial(t, b"hello"), _partial(t, b" world"))
    head = t.head(final)
    assert head.status_code == 200
    assert head.headers.get("Upload-Length") == "11", (
        f"Upload-Length {head.headers.get('Upload-Length')}"
    )


@check(
    "concatenation",
    "Concatenation",
    "After successful concatenation, the Upload-Offset and Upload-Length MUST be set and their "
    "values MUST be equal.",
)
def final_offset_equals_length(t: Target) -> None:
    final, _ = _final(t, _partial(t, b"abc"), _partial(t, b"defg"))
    ok = poll(lambda: t.head(final).headers.get("Upload-Offset") == "7", timeout=10)
    head = t.head(final)
    assert ok, f"final never reported Upload-Offset 7 (got {head.headers.get('Upload-Offset')})"
    assert head.headers.get("Upload-Length") == "7"


@check(
    "concatenation",
    "Concatenation",
    "The response to a HEAD request for a partial upload MUST contain the Upload-Offset header.",
)
def partial_head_has_offset(t: Target) -> None:
    location = _partial(t, None, 10)
    assert t.head(location).headers.get("Upload-Offset") == "0"
    assert t.patch(location, 0, b"abc").status_code == 204
    assert t.head(location).headers.get("Upload-Offset") == "3"


@check(
    "concatenation",
    "Concatenation",
    "Response to HEAD request against partial or final upload MUST include the Upload-Concat "
    "header and its value as received in the upload creation request.",
)
def head_echoes_upload_concat(t: Target) -> None:
    a, b = _partial(t, b"a"), _partial(t, b"b")
    assert t.head(a).headers.get("Upload-Concat") == "partial"
    final, value = _final(t, a, b)
    echoed = t.head(final).headers.get("Upload-Concat")
    assert echoed == value, f"final HEAD: Upload-Concat {echoed!r}, created with {value!r}"


@check(
    "concatenation",
    "Concatenation",
    "The Server MUST respond with the 403 Forbidden status to PATCH requests against a final "
    "upload URL and MUST NOT modify the final or its partial uploads.",
)
def patch_to_final_is_403(t: Target) -> None:
    a, b = _partial(t, b"ab"), _partial(t, b"cd")
    final, _ = _final(t, a, b)
    poll(lambda: "Upload-Offset" in t.head(final).headers, timeout=10)
    for offset in (0, 4):
        response = t.patch(final, offset, b"xx")
        assert response.status_code == 403, (
            f"PATCH to a final at {offset} got {response.status_code}"
        )
    assert t.head(final).headers.get("Upload-Length") == "4"
    assert t.offset(a) == 2 and t.offset(b) == 2


@check(
    "concatenation",
    "Concatenation",
    "When creating a new final upload the partial uploads' metadata SHALL NOT be transferred "
    "to the new final upload.",
)
def partial_metadata_not_inherited(t: Target) -> None:
    a = t.create(2, {"Upload-Concat": "partial", "Upload-Metadata": "filename " + b64("a.txt")})
    assert t.patch(a, 0, b"hi").status_code == 204
    final, _ = _final(t, a)
    assert "Upload-Metadata" not in t.head(final).headers, "the partial's metadata was inherited"
    own = "filename " + b64("final.txt")
    final2, _ = _final(t, a, **{"Upload-Metadata": own})
    assert t.head(final2).headers.get("Upload-Metadata") == own


@check(
    "concatenation",
    "Concatenation > Headers > Upload-Concat",
    "The partial uploads URLs MAY be absolute or relative and MUST NOT contain spaces as "
    "defined in RFC 3986.",
)
def relative_and_absolute_partial_urls(t: Target) -> None:
    a, b = _partial(t, b"rel"), _partial(t, b"abs")
    final, _ = _final(t, urlsplit(a).path, b)
    assert t.head(final).headers.get("Upload-Length") == "6"


# -- concatenation-unfinished ----------------------------------------------------------------


@check(
    "concatenation-unfinished",
    "Concatenation",
    "The Client MAY send the concatenation request while the partial uploads are still in "
    "progress. This feature MUST be explicitly announced by the Server by adding "
    "concatenation-unfinished to the Tus-Extension header.",
)
def final_of_unfinished_partials_completes(t: Target) -> None:
    a, b = _partial(t, None, 5), _partial(t, None, 6)
    assert t.patch(a, 0, b"he").status_code == 204
    final, _ = _final(t, a, b)
    assert t.patch(a, 2, b"llo").status_code == 204
    assert t.patch(b, 0, b" world").status_code == 204
    ok = poll(lambda: t.head(final).headers.get("Upload-Offset") == "11", timeout=10)
    assert ok, "final never completed after its partials finished"
    assert t.head(final).headers.get("Upload-Length") == "11"


@check(
    "concatenation-unfinished",
    "Concatenation",
    "The response to a HEAD request for a final upload SHOULD NOT contain the Upload-Offset "
    "header unless the concatenation has been successfully finished.",
)
def unfinished_final_has_no_offset(t: Target) -> None:
    a, b = _partial(t, b"done"), _partial(t, None, 6)
    final, _ = _final(t, a, b)
    head = t.head(final)
    assert head.status_code == 200, f"HEAD of an unfinished final got {head.status_code}"
    assert "Upload-Offset" not in head.headers, "unfinished final reports Upload-Offset"


@check(
    "concatenation-unfinished",
    "Concatenation",
    "The Upload-Length header MUST be included if the length of the final resource can be "
    "calculated at the time of the request.",
)
def unfinished_final_has_length(t: Target) -> None:
    a, b = _partial(t, None, 4), _partial(t, None, 6)
    final, _ = _final(t, a, b)
    assert t.head(final).headers.get("Upload-Length") == "10"


@check(
    "concatenation-unfinished",
    "Concatenation",
    "The Server MUST respond with the 403 Forbidden status to PATCH requests against a final "
    "upload URL and MUST NOT modify the final or its partial uploads.",
)
def patch_to_unfinished_final_is_403(t: Target) -> None:
    a = _partial(t, None, 4)
    final, _ = _final(t, a)
    response = t.patch(final, 0, b"abcd")
    assert response.status_code == 403, f"PATCH to an unfinished final got {response.status_code}"
    assert t.offset(a) == 0, "the partial was modified"
    assert "Upload-Offset" not in t.head(final).headers
