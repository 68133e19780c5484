"""CORS against a live server, with tusd's behaviour as the reference (pkg/handler/cors_test.go
in tus/tusd): --cors-allow-origin/-headers/-expose-headers/-credentials/-max-age, --disable-cors.
"""

from __future__ import annotations

import httpx
from conftest import TUS, ServerProcess, create_upload, patch

from tusserver.cors import with_headers

APP = "https://app.example"


def preflight(
    client: httpx.Client, url: str, origin: str = APP, headers: str = "tus-resumable"
) -> httpx.Response:
    """What a browser sends before a cross-origin tus request."""
    return client.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
    )


def listed(response: httpx.Response, name: str) -> list[str]:
    """A comma-separated header as lowercase names."""
    return [item.strip().lower() for item in response.headers.get(name, "").split(",")]


def cors_headers(response: httpx.Response) -> list[str]:
    return [name for name in response.headers if name.lower().startswith("access-control-")]


def test_default_preflight(shared_server: ServerProcess, client: httpx.Client) -> None:
    """Any origin by default, echoed; tusd's methods; tus headers; a day of caching; no
    credentials; nothing tus-specific missing and no extra header allowed unasked."""
    response = preflight(client, shared_server.url, headers="tus-resumable,upload-length,x-api-key")
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert response.headers["Vary"] == "Origin"
    assert response.headers["Access-Control-Max-Age"] == "86400"
    assert set(listed(response, "Access-Control-Allow-Methods")) >= {
        "post",
        "head",
        "patch",
        "options",
        "get",
        "delete",
    }
    allowed = listed(response, "Access-Control-Allow-Headers")
    assert {"tus-resumable", "upload-length", "upload-offset", "upload-metadata"} <= set(allowed)
    assert "x-api-key" not in allowed  # the browser will refuse the actual request
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Access-Control-Expose-Headers" not in response.headers  # actual responses only


def test_extra_headers_credentials_and_max_age(make_server, client: httpx.Client) -> None:
    """--cors-allow-headers / --cors-expose-headers add to the tus set; with credentials the
    origin is echoed exactly even under the default regex `.*`, never `*`."""
    server = make_server(
        "--cors-allow-headers",
        "x-api-key, X-Tenant",
        "--cors-expose-headers",
        "X-Upload-Location,X-Trace-Id",
        "--cors-allow-credentials",
        "--cors-max-age",
        "10m",
    )
    response = preflight(client, server.url, headers="tus-resumable,x-api-key")
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert response.headers["Access-Control-Max-Age"] == "600"
    allowed = listed(response, "Access-Control-Allow-Headers")
    assert {"x-api-key", "x-tenant", "tus-resumable", "upload-offset"} <= set(allowed)

    origin = {"Origin": APP, "X-Api-Key": "secret"}
    location = create_upload(client, server.url, 3, origin)
    actual = [
        client.post(server.url, headers={**TUS, "Upload-Length": "1", **origin}),
        patch(client, location, 0, b"abc", **origin),
        client.head(location, headers={**TUS, **origin}),
        client.post(server.url, headers={"Upload-Length": "1", **origin}),  # 412 too
    ]
    assert [r.status_code for r in actual] == [201, 204, 200, 412]
    for response in actual:
        assert response.headers["Access-Control-Allow-Origin"] == APP
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        assert response.headers["Vary"] == "Origin"
        exposed = listed(response, "Access-Control-Expose-Headers")
        assert {"x-upload-location", "x-trace-id", "location", "upload-offset"} <= set(exposed)
        assert "Access-Control-Allow-Methods" not in response.headers  # preflight only
        assert "Access-Control-Max-Age" not in response.headers


def test_disallowed_origin_is_refused(make_server, client: httpx.Client) -> None:
    """As tusd: an origin outside --cors-allow-origin gets 403 and no CORS header, preflight
    or not (so nothing is created for it); the regex must match the whole origin."""
    server = make_server("--cors-allow-origin", r"https://good\.example")
    for origin in ("https://evil.example", "https://good.example.evil", "xhttps://good.example"):
        refused = [
            preflight(client, server.url, origin),
            client.post(server.url, headers={**TUS, "Upload-Length": "1", "Origin": origin}),
        ]
        for response in refused:
            assert response.status_code == 403, origin
            assert cors_headers(response) == []
            assert response.headers["Vary"] == "Origin"
            assert "Location" not in response.headers
    good = preflight(client, server.url, "https://good.example")
    assert good.status_code == 200
    assert good.headers["Access-Control-Allow-Origin"] == "https://good.example"


def test_disable_cors(make_server, client: httpx.Client) -> None:
    """--disable-cors: no Access-Control-* header (nor Vary) on anything, any origin is let
    through, and a preflight is just a tus OPTIONS request (tusd answers it the same way)."""
    server = make_server("--disable-cors", "--cors-allow-origin", r"https://good\.example")
    options = preflight(client, server.url, "https://evil.example")
    assert options.status_code == 204
    assert options.headers["Tus-Version"] == "1.0.0" and "Tus-Extension" in options.headers
    created = client.post(
        server.url, headers={**TUS, "Upload-Length": "1", "Origin": "https://evil.example"}
    )
    assert created.status_code == 201
    for response in (options, created):
        assert cors_headers(response) == []
        assert "Vary" not in response.headers


def test_requests_without_origin(shared_server: ServerProcess, client: httpx.Client) -> None:
    """Not CORS requests (curl, tuspy): no CORS header, but Vary: Origin for caches."""
    plain = client.options(shared_server.url)
    created = client.post(shared_server.url, headers={**TUS, "Upload-Length": "1"})
    assert (plain.status_code, created.status_code) == (204, 201)
    for response in (plain, created):
        assert cors_headers(response) == []
        assert response.headers["Vary"] == "Origin"


def test_vary_and_duplicates_merge() -> None:
    """An app-set Vary keeps its values and gains Origin once; app-set CORS headers are
    replaced, never doubled."""
    allow = (b"access-control-allow-origin", b"https://a.example")
    headers = [(b"vary", b"Accept-Encoding"), (b"access-control-allow-origin", b"*")]
    assert with_headers(headers, [allow]) == [allow, (b"vary", b"Accept-Encoding, Origin")]
    assert with_headers([(b"vary", b"origin")], []) == [(b"vary", b"origin")]
    assert with_headers([(b"vary", b"*")], []) == [(b"vary", b"*")]
    assert with_headers([(b"x", b"1")], []) == [(b"x", b"1"), (b"vary", b"Origin")]
