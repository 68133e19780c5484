"""Core, Creation, Defer-Length, Expiration and Termination rules against a live server.

Each test quotes the protocol.md sentence (tus 1.0.0) it checks.
"""

from __future__ import annotations

import base64
import email.utils
import time

import httpx
import pytest
from conftest import TUS, create_upload, patch
from rawclient import RawRequest

OCTET = {"Content-Type": "application/offset+octet-stream"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- Core: OPTIONS ---------------------------------------------------------------------------


def test_options_lists_version_and_extensions(shared_server, client):
    """Core/OPTIONS: "A successful response ... MUST contain the Tus-Version header. It MAY
    include the Tus-Extension and Tus-Max-Size headers." The client "SHOULD NOT include the
    Tus-Resumable header in the request and the Server MUST ignore the header"."""
    response = client.options(shared_server.url, headers={"Tus-Resumable": "0.0.1"})
    assert response.status_code == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    extensions = response.headers["Tus-Extension"].split(",")
    for name in ("creation", "creation-with-upload", "creation-defer-length", "termination"):
        assert name in extensions
    assert "expiration" in extensions
    assert "Tus-Max-Size" not in response.headers


def test_options_max_size_when_limited(make_server, client):
    """Core/Tus-Max-Size: "The Server SHOULD set this header if there is a known hard limit."."""
    server = make_server("--max-size", "1000")
    response = client.options(server.url)
    assert response.headers["Tus-Max-Size"] == "1000"


def test_disabled_features_are_not_advertised(make_server, client):
    """Tus-Extension: only what works; termination off -> no DELETE, expiration 0 -> none."""
    server = make_server("--disable-termination", "--expiration", "0")
    extensions = client.options(server.url).headers["Tus-Extension"].split(",")
    assert "termination" not in extensions and "expiration" not in extensions
    location = create_upload(client, server.url, 3)
    assert "Upload-Expires" not in client.head(location, headers=TUS).headers
    assert client.delete(location, headers=TUS).status_code == 405


# -- Core: Tus-Resumable ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [None, "0.2.2", "2.0.0", "garbage"])
def test_unsupported_version_is_412(server, client, version):
    """Core/Tus-Resumable: "If the version specified by the Client is not supported by the
    Server, it MUST respond with the 412 Precondition Failed status and MUST include the
    Tus-Version header into the response. In addition, the Server MUST NOT process the
    request."."""
    headers = {"Upload-Length": "5"}
    if version:
        headers["Tus-Resumable"] = version
    response = client.post(server.url, headers=headers)
    assert response.status_code == 412
    assert response.headers["Tus-Version"] == "1.0.0"
    assert "Location" not in response.headers
    assert list((server.upload_dir).glob("[0-9a-f]" * 32)) == []


def test_every_response_carries_tus_resumable(shared_server, client):
    """Core/Tus-Resumable: "MUST be included in every request and response except for OPTIONS
    requests" (errors included)."""
    location = create_upload(client, shared_server.url, 4)
    responses = [
        client.head(location, headers=TUS),
        patch(client, location, 0, b"ab"),
        patch(client, location, 0, b"ab"),  # 409
        client.head(shared_server.url + "0" * 32, headers=TUS),  # 404
        client.post(shared_server.url, headers=TUS),  # 400
    ]
    for response in responses:
        assert response.headers["Tus-Resumable"] == "1.0.0", response.status_code


# -- Core: HEAD ------------------------------------------------------------------------------


def test_head_reports_offset_length_and_no_store(shared_server, client):
    """Core/HEAD: "The Server MUST always include the Upload-Offset header in the response for
    a HEAD request, even if the offset is 0 ... If the size of the upload is known, the Server
    MUST include the Upload-Length header" and "MUST prevent the client and/or proxies from
    caching the response by adding the Cache-Control: no-store header"."""
    location = create_upload(client, shared_server.url, 10)
    response = client.head(location, headers=TUS)
    assert response.status_code == 200
    assert response.headers["Upload-Offset"] == "0"
    assert response.headers["Upload-Length"] == "10"
    assert response.headers["Cache-Control"] == "no-store"
    patch(client, location, 0, b"0123456789")
    done = client.head(location, headers=TUS)
    assert done.headers["Upload-Offset"] == "10"
    assert "Upload-Expires" not in done.headers  # finished uploads do not expire


def test_head_unknown_upload_is_404_without_offset(shared_server, client):
    """Core/HEAD: "If the resource is not found, the Server SHOULD return either the 404 Not
    Found, 410 Gone or 403 Forbidden status without the Upload-Offset header."."""
    response = client.head(shared_server.url + "f" * 32, headers=TUS)
    assert response.status_code == 404
    assert "Upload-Offset" not in response.headers


def test_head_echoes_metadata_verbatim(shared_server, client):
    """Creation/POST: "responses to HEAD requests MUST include the Upload-Metadata header and
    its value as specified by the Client during the creation"."""
    raw = f"filename {b64('world_domination_plan.pdf')},is_confidential"
    location = create_upload(client, shared_server.url, 1, {"Upload-Metadata": raw})
    assert client.head(location, headers=TUS).headers["Upload-Metadata"] == raw


# -- Core: PATCH -----------------------------------------------------------------------------


def test_patch_appends_and_returns_new_offset(shared_server, client):
    """Core/PATCH: "The Server MUST acknowledge successful PATCH requests with the 204 No
    Content status. It MUST include the Upload-Offset header containing the new offset."."""
    location = create_upload(client, shared_server.url, 11)
    first = patch(client, location, 0, b"hello")
    assert (first.status_code, first.headers["Upload-Offset"]) == (204, "5")
    second = patch(client, location, 5, b" world")
    assert (second.status_code, second.headers["Upload-Offset"]) == (204, "11")
    assert client.get(location).content == b"hello world"


def test_patch_wrong_content_type_is_415(shared_server, client):
    """Core/PATCH: "All PATCH requests MUST use Content-Type: application/offset+octet-stream,
    otherwise the server SHOULD return a 415 Unsupported Media Type status."."""
    location = create_upload(client, shared_server.url, 3)
    response = client.patch(
        location,
        content=b"abc",
        headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 415
    assert client.head(location, headers=TUS).headers["Upload-Offset"] == "0"


@pytest.mark.parametrize("claimed", [1, 3, 100])
def test_patch_offset_mismatch_is_409_and_untouched(shared_server, client, claimed):
    """Core/PATCH: "If the offsets do not match, the Server MUST respond with the 409 Conflict
    status without modifying the upload resource."."""
    location = create_upload(client, shared_server.url, 10)
    patch(client, location, 0, b"ab")
    response = patch(client, location, claimed, b"zz")
    assert response.status_code == 409
    assert response.headers["Upload-Offset"] == "2"
    assert client.head(location, headers=TUS).headers["Upload-Offset"] == "2"


def test_patch_unknown_upload_is_404(shared_server, client):
    """Core/PATCH: "If the server receives a PATCH request against a non-existent resource it
    SHOULD return a 404 Not Found status."."""
    assert patch(client, shared_server.url + "a" * 32, 0, b"x").status_code == 404


def test_patch_past_length_is_413_and_nothing_stored(shared_server, client):
    """A PATCH that would pass Upload-Length is refused (413) and stores nothing."""
    location = create_upload(client, shared_server.url, 4)
    assert patch(client, location, 0, b"12345").status_code == 413
    assert client.head(location, headers=TUS).headers["Upload-Offset"] == "0"
    assert patch(client, location, 0, b"1234").status_code == 204


def test_chunked_patch_past_length_is_413_and_nothing_stored(server, client):
    """Same rule when the body has no Content-Length (chunked): cut at the length."""
    location = create_upload(client, server.url, 4)

    def body():
        yield b"12"
        yield b"345"

    response = client.patch(
        location, content=body(), headers={**TUS, **OCTET, "Upload-Offset": "0"}
    )
    assert response.status_code == 413
    assert client.head(location, headers=TUS).headers["Upload-Offset"] == "0"
    assert server.upload_dir.joinpath(location.rsplit("/", 1)[1]).stat().st_size == 0


def test_method_override(shared_server, client):
    """Core/X-HTTP-Method-Override: "MUST be interpreted as the request's method by the
    Server, if the header is presented. The actual method of the request MUST be ignored."."""
    location = create_upload(client, shared_server.url, 3)
    response = client.post(
        location,
        content=b"abc",
        headers={**TUS, **OCTET, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"},
    )
    assert response.status_code == 204 and response.headers["Upload-Offset"] == "3"
    deleted = client.post(location, headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
    assert deleted.status_code == 204


# -- Creation ---------------------------------------------------------------------------------


def test_post_creates_with_absolute_location(shared_server, client):
    """Creation/POST: "The Server MUST acknowledge a successful upload creation with the 201
    Created status. The Server MUST set the Location header to the URL of the created
    resource."."""
    response = client.post(shared_server.url, headers={**TUS, "Upload-Length": "100"})
    assert response.status_code == 201
    location = response.headers["Location"]
    assert location.startswith(shared_server.url)
    upload_id = location.rsplit("/", 1)[1]
    assert len(upload_id) == 32 and upload_id.isalnum()


def test_post_without_trailing_slash(shared_server, client):
    """The creation URL answers with or without its trailing slash (no redirect)."""
    response = client.post(shared_server.url.rstrip("/"), headers={**TUS, "Upload-Length": "1"})
    assert response.status_code == 201


def test_post_over_max_size_is_413(make_server, client):
    """Creation/POST: "If the length of the upload exceeds the maximum, which MAY be specified
    using the Tus-Max-Size header, the Server MUST respond with the 413 Request Entity Too
    Large status."."""
    server = make_server("--max-size", "10")
    response = client.post(server.url, headers={**TUS, "Upload-Length": "11"})
    assert response.status_code == 413
    assert client.post(server.url, headers={**TUS, "Upload-Length": "10"}).status_code == 201


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Upload-Length": "-1"},
        {"Upload-Length": "abc"},
        {"Upload-Length": "1.5"},
        {"Upload-Length": "99999999999999999999999"},
        {"Upload-Length": "5", "Upload-Defer-Length": "1"},
        {"Upload-Defer-Length": "0"},
        {"Upload-Defer-Length": "yes"},
        {"Upload-Length": "5", "Upload-Metadata": "key not-base64!"},
        {"Upload-Length": "5", "Upload-Metadata": "a YQ==,a Yg=="},
        {"Upload-Length": "5", "Upload-Metadata": "a YQ==,,b"},
        {"Upload-Length": "5", "Upload-Metadata": "a b c"},
    ],
)
def test_post_bad_headers_are_400(shared_server, client, headers):
    """Creation: Upload-Length "MUST be a non-negative integer"; Upload-Defer-Length "If the
    Upload-Defer-Length header contains any other value than 1 the server should return a 400
    Bad Request status"; metadata "The key MUST NOT contain spaces and commas and MUST NOT be
    empty ... the value MUST be Base64 encoded. All keys MUST be unique."."""
    response = client.post(shared_server.url, headers={**TUS, **headers})
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    assert 0 < len(response.text) < 200
    assert "Location" not in response.headers


def test_metadata_with_empty_value_is_accepted(shared_server, client):
    """Creation/Upload-Metadata: "The value MAY be empty. In these cases, the space, which
    would normally separate the key and the value, MAY be left out."."""
    location = create_upload(client, shared_server.url, 1, {"Upload-Metadata": "flag,other"})
    assert client.head(location, headers=TUS).headers["Upload-Metadata"] == "flag,other"


def test_creation_with_upload(shared_server, client):
    """Creation With Upload: "The Server SHOULD accept as many bytes as possible and MUST
    include the Upload-Offset header in the response and MUST set its value to the offset of
    the upload after applying the accepted bytes."."""
    response = client.post(
        shared_server.url, content=b"hello", headers={**TUS, **OCTET, "Upload-Length": "11"}
    )
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == "5"
    location = response.headers["Location"]
    assert client.head(location, headers=TUS).headers["Upload-Offset"] == "5"
    patch(client, location, 5, b" world")
    assert client.get(location).content == b"hello world"


def test_creation_with_upload_too_large_is_413(shared_server, client):
    """A creation-with-upload body larger than Upload-Length is refused before creation."""
    response = client.post(
        shared_server.url, content=b"toolong", headers={**TUS, **OCTET, "Upload-Length": "3"}
    )
    assert response.status_code == 413


# -- Creation Defer Length ---------------------------------------------------------------------


def test_deferred_length(shared_server, client):
    """Creation/POST b): "As long as the length of the upload is not known, the Server MUST
    set Upload-Defer-Length: 1 in all responses to HEAD requests." ... "Once it is known the
    Client MUST set the Upload-Length header in the next PATCH request. Once set the length
    MUST NOT be changed."."""
    location = create_upload(client, shared_server.url, None)
    head = client.head(location, headers=TUS)
    assert head.headers["Upload-Defer-Length"] == "1" and "Upload-Length" not in head.headers
    assert patch(client, location, 0, b"abc").status_code == 204
    assert client.head(location, headers=TUS).headers["Upload-Defer-Length"] == "1"
    response = patch(client, location, 3, b"def", **{"Upload-Length": "9"})
    assert response.status_code == 204
    head = client.head(location, headers=TUS)
    assert head.headers["Upload-Length"] == "9" and "Upload-Defer-Length" not in head.headers
    changed = patch(client, location, 6, b"ghi", **{"Upload-Length": "10"})
    assert changed.status_code == 400
    assert patch(client, location, 6, b"ghi").status_code == 204
    assert client.get(location).content == b"abcdefghi"


def test_deferred_length_smaller_than_offset_is_400(shared_server, client):
    """A declared length below what was already received can never be right."""
    location = create_upload(client, shared_server.url, None)
    patch(client, location, 0, b"abcdef")
    assert patch(client, location, 6, b"", **{"Upload-Length": "3"}).status_code == 400


def test_deferred_upload_respects_max_size(make_server, client):
    """Deferred uploads still cannot exceed --max-size."""
    server = make_server("--max-size", "5")
    location = create_upload(client, server.url, None)
    assert patch(client, location, 0, b"123456").status_code == 413
    assert patch(client, location, 0, b"12345").status_code == 204


# -- Expiration ---------------------------------------------------------------------------------


def _parse_http_date(value: str) -> float:
    parsed = email.utils.parsedate_to_datetime(value)
    assert parsed.tzinfo is not None and value.endswith("GMT")
    return parsed.timestamp()


def test_upload_expires_on_post_patch_head(make_server, client):
    """Expiration: "This header MUST be included in every PATCH response if the upload is going
    to expire. If the expiration is known at the creation, the Upload-Expires header MUST be
    included in the response to the initial POST request." ... "MUST be in RFC 7231 datetime
    format"."""
    server = make_server("--expiration", "1h")
    response = client.post(server.url, headers={**TUS, "Upload-Length": "4"})
    expires = _parse_http_date(response.headers["Upload-Expires"])
    assert 3500 < expires - time.time() < 3700
    location = response.headers["Location"]
    assert "Upload-Expires" in patch(client, location, 0, b"ab").headers
    assert "Upload-Expires" in client.head(location, headers=TUS).headers


def test_expired_upload_is_removed_and_gone(make_server, client):
    """Expiration: "If a Client does attempt to resume an upload which has since been removed
    by the Server, the Server SHOULD respond with the 404 Not Found or 410 Gone status. The
    latter one SHOULD be used if the Server is keeping track of expired uploads."."""
    server = make_server("--expiration", "1s", "--cleanup-interval", "100ms")
    location = create_upload(client, server.url, 10)
    patch(client, location, 0, b"abc")
    finished = create_upload(client, server.url, 2)
    patch(client, finished, 0, b"ok")
    data_file = server.upload_dir / location.rsplit("/", 1)[1]
    deadline = time.monotonic() + 15
    while data_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not data_file.exists(), "background cleanup did not remove the expired upload"
    assert client.head(location, headers=TUS).status_code == 410
    assert patch(client, location, 3, b"d").status_code == 410
    assert client.get(finished).content == b"ok"  # finished uploads never expire


# -- Termination ----------------------------------------------------------------------------------


def test_delete_terminates(server, client):
    """Termination/DELETE: "the Server SHOULD free associated resources and MUST respond with the
    204 No Content status ... For all future requests to this URL, the Server SHOULD respond
    with the 404 Not Found or 410 Gone status."."""
    location = create_upload(client, server.url, 10)
    patch(client, location, 0, b"12345")
    data_file = server.upload_dir / location.rsplit("/", 1)[1]
    assert data_file.exists()
    assert client.delete(location, headers=TUS).status_code == 204
    assert not data_file.exists()
    assert client.head(location, headers=TUS).status_code == 410
    assert patch(client, location, 5, b"x").status_code == 410
    assert client.delete(location, headers=TUS).status_code == 410
    assert client.get(location).status_code == 410


# -- Ids and paths ------------------------------------------------------------------------------


PATCH_ONE_BYTE = {
    "Upload-Offset": "0",
    "Content-Type": "application/offset+octet-stream",
    "Content-Length": "1",
}


@pytest.mark.parametrize(
    "path", ["..", "..%2f..%2fetc%2fpasswd", "%2e%2e", "a.b", "x" * 200, "tusserver.db", ".locks"]
)
def test_invalid_ids_never_touch_the_filesystem(shared_server, path):
    """An id from a URL is validated before it reaches the store: 404, never a file access.
    Sent byte for byte (httpx would normalise /files/.. to /, the upload page)."""
    target = "/files/" + path
    for method, extra in (("HEAD", {}), ("PATCH", PATCH_ONE_BYTE), ("GET", {})):
        request = RawRequest(shared_server.port, method, target, {**TUS, **extra})
        try:
            if extra:
                request.send(b"x")
            status = request.response_head()[0]
        finally:
            request.close()
        assert status in (404, 405), (method, target, status)


def test_unknown_method_is_405(shared_server, client):
    """Methods tus does not define get 405 with Allow, as plain text."""
    location = create_upload(client, shared_server.url, 1)
    response = client.request("PUT", location, headers=TUS)
    assert response.status_code == 405
    assert "PATCH" in response.headers["Allow"]


# -- GET download ---------------------------------------------------------------------------------


def test_download_headers_and_range(shared_server, client):
    """GET serves finished uploads with Range, a safe disposition and nosniff."""
    meta = f"filename {b64('report.html')},filetype {b64('text/html')}"
    location = create_upload(client, shared_server.url, 10, {"Upload-Metadata": meta})
    assert client.get(location).status_code == 409  # not finished yet
    patch(client, location, 0, b"0123456789")
    response = client.get(location)
    assert response.content == b"0123456789"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert 'filename="report.html"' in response.headers["Content-Disposition"]
    partial = client.get(location, headers={"Range": "bytes=2-5"})
    assert partial.status_code == 206 and partial.content == b"2345"


def test_download_inline_for_safe_types(shared_server, client):
    """Images on the safe list are shown inline; everything else is an attachment."""
    meta = f"filename {b64('a.png')},filetype {b64('image/png')}"
    location = create_upload(client, shared_server.url, 1, {"Upload-Metadata": meta})
    patch(client, location, 0, b"x")
    response = client.get(location)
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Disposition"].startswith("inline")


def test_download_can_be_disabled(make_server, client):
    """--disable-download turns GET off."""
    server = make_server("--disable-download")
    location = create_upload(client, server.url, 1)
    patch(client, location, 0, b"x")
    assert client.get(location).status_code == 405


# -- CORS and proxies ------------------------------------------------------------------------------


def test_cors_preflight_and_exposed_headers(shared_server, client):
    """Browsers (tus-js-client, Uppy) need every tus header allowed and exposed."""
    preflight = client.options(
        shared_server.url,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "tus-resumable,upload-offset,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "PATCH" in preflight.headers["Access-Control-Allow-Methods"]
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "upload-offset" in allowed and "tus-resumable" in allowed
    response = client.post(
        shared_server.url, headers={**TUS, "Upload-Length": "1", "Origin": "https://app.example"}
    )
    exposed = response.headers["Access-Control-Expose-Headers"].lower()
    for name in ("location", "upload-offset", "upload-length", "tus-resumable", "upload-expires"):
        assert name in exposed


def test_cors_origin_regex(make_server, client):
    """--cors-allow-origin restricts which origins get CORS headers."""
    server = make_server("--cors-allow-origin", r"https://good\.example")
    good = client.post(
        server.url, headers={**TUS, "Upload-Length": "1", "Origin": "https://good.example"}
    )
    bad = client.post(
        server.url, headers={**TUS, "Upload-Length": "1", "Origin": "https://evil.example"}
    )
    assert good.headers.get("Access-Control-Allow-Origin") == "https://good.example"
    assert "Access-Control-Allow-Origin" not in bad.headers


def test_behind_proxy_location(make_server, client):
    """--behind-proxy builds Location from X-Forwarded-Host/Proto or Forwarded."""
    server = make_server("--behind-proxy")
    forwarded = client.post(
        server.url,
        headers={
            **TUS,
            "Upload-Length": "1",
            "X-Forwarded-Host": "up.example",
            "X-Forwarded-Proto": "https",
        },
    )
    assert forwarded.headers["Location"].startswith("https://up.example/files/")
    rfc7239 = client.post(
        server.url,
        headers={
            **TUS,
            "Upload-Length": "1",
            "Forwarded": 'for=1.2.3.4;proto=https;host="cdn.example"',
        },
    )
    assert rfc7239.headers["Location"].startswith("https://cdn.example/files/")


def test_proxy_headers_ignored_by_default(shared_server, client):
    """Without --behind-proxy, a client cannot steer Location to another host."""
    response = client.post(
        shared_server.url, headers={**TUS, "Upload-Length": "1", "X-Forwarded-Host": "evil.example"}
    )
    assert response.headers["Location"].startswith(shared_server.url)


def test_custom_base_path(make_server, client):
    """--base-path moves the creation URL and every upload URL."""
    server = make_server("--base-path", "/api/uploads/")
    location = create_upload(client, server.url, 2)
    assert location.startswith(f"{server.origin}/api/uploads/")
    assert patch(client, location, 0, b"ok").status_code == 204
    assert (
        client.post(f"{server.origin}/files/", headers={**TUS, "Upload-Length": "1"}).status_code
        == 404
    )


def test_malformed_upload_offset_is_400(shared_server, client):
    """Upload-Offset "MUST be a non-negative integer"; anything else is a 400, never a 500."""
    location = create_upload(client, shared_server.url, 5)
    for value in ["-1", "abc", "", "1e3", "0x10"]:
        response = client.patch(
            location, content=b"a", headers={**TUS, **OCTET, "Upload-Offset": value}
        )
        assert response.status_code == 400, value
    missing = client.patch(location, content=b"a", headers={**TUS, **OCTET})
    assert missing.status_code == 400


def test_http_errors_are_plain_text(shared_server):
    """Errors are short plain text, not HTML or JSON."""
    response = httpx.post(shared_server.url, headers={**TUS, "Upload-Length": "x"})
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text.strip() == "Upload-Length must be a non-negative integer"
