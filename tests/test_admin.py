"""The admin JSON API and its guard against live servers: the token (Bearer, ?token= exchanged
for a cookie: per-token name, issued-at time, 7 days), same-origin checks for
cookie-authenticated changes, no CORS and no tus version check on admin paths, listing with
pagination and status filters, detail, terminate, reprocess, stats, the live event stream
(shared registry reads, 503 before it starts), the generated token in the log.

Processing states are held deterministically by a test plugin ("gate", written below) that
keeps its job running until a file exists, or fails it when asked.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import (
    TUS,
    ServerFactory,
    ServerProcess,
    create_upload,
    patch,
    sse_events,
    wait_for,
    wait_receiving,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount
from test_hooks import HookBox, slow_patch

from tusserver import admin as admin_module
from tusserver.admin import auth, events
from tusserver.admin.api import FILTERS
from tusserver.app import create_app
from tusserver.config import Settings
from tusserver.errors import BackendUnavailable

TOKEN = "test-admin-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
COOKIE = (
    "tusserver_admin_" + hashlib.sha256(b"tusserver-cookie-name:" + TOKEN.encode()).hexdigest()[:10]
)
API = "/admin/api/"
CSV = b"a,b\n1,2\n3,4\n"

GATE_PLUGIN = '''
import pathlib
import time

from tusserver.processing.plugin import Plugin, PluginFailed


class Gate(Plugin):
    """Holds its job until the file named by the `gate` metadata exists; fails on `fail`."""

    name = "gate"

    def finish(self):
        gate = self.ctx.metadata.get("gate")
        while gate and not pathlib.Path(gate).exists() and not self.ctx.cancelled():
            time.sleep(0.02)
        if "fail" in self.ctx.metadata:
            raise PluginFailed("failing as asked")
        return {}
'''


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def metadata(**pairs: str) -> dict[str, str]:
    return {"Upload-Metadata": ",".join(f"{k} {b64(v)}" for k, v in pairs.items())}


def upload_id(location: str) -> str:
    return location.rsplit("/", 1)[1]


def finished_upload(http: httpx.Client, server: ServerProcess, data: bytes, **meta: str) -> str:
    """A complete upload with the given metadata; returns its id."""
    location = create_upload(http, server.url, len(data), metadata(**meta))
    assert patch(http, location, 0, data).status_code == 204
    return upload_id(location)


def admin(http: httpx.Client, server: ServerProcess, method: str, path: str, **kw: Any):
    """An admin API request with the Bearer token (no Tus-Resumable: admin is not tus)."""
    headers = {**BEARER, **kw.pop("headers", {})}
    return http.request(method, server.origin + API + path, headers=headers, **kw)


def detail(http: httpx.Client, server: ServerProcess, uid: str) -> dict[str, Any]:
    response = admin(http, server, "GET", f"uploads/{uid}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_status(http: httpx.Client, server: ServerProcess, uid: str, status: str) -> None:
    wait_for(lambda: detail(http, server, uid)["status"] == status, 30, f"{uid} {status}")


def listed(http: httpx.Client, server: ServerProcess, status: str = "") -> list[str]:
    response = admin(http, server, "GET", "uploads", params={"status": status, "limit": 500})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def access_control(response: httpx.Response) -> list[str]:
    return [name for name in response.headers if name.lower().startswith("access-control-")]


def job_run(server: ServerProcess, uid: str) -> int:
    with sqlite3.connect(server.upload_dir / "tusserver.db") as db:
        (run,) = db.execute("SELECT run FROM jobs WHERE id = ?", (uid,)).fetchone()
    return int(run)


def job_state(server: ServerProcess, uid: str) -> str | None:
    with sqlite3.connect(server.upload_dir / "tusserver.db") as db:
        row = db.execute("SELECT state FROM jobs WHERE id = ?", (uid,)).fetchone()
    return str(row[0]) if row else None


def metric_value(server: ServerProcess, sample: str) -> float:
    """One sample (name with labels, as exposed) of the server's /metrics; 0 when absent."""
    for line in httpx.get(server.origin + "/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[1])
    return 0.0


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a configured token, CORS open to every origin with credentials, and
    processing (validate, csv, gate) one job at a time."""
    base = tmp_path_factory.mktemp("admin")
    plugin = base / "gate.py"
    plugin.write_text(GATE_PLUGIN)
    server = ServerProcess(
        base / "uploads",
        "--admin-token", TOKEN,
        "--cors-allow-origin", ".*",
        "--cors-allow-credentials",
        "--plugins", "validate,csv,gate",
        "--plugin-path", str(plugin),
        "--processing-workers", "1",
    ).start()  # fmt: skip
    yield server
    server.stop(5)


# -- the guard --------------------------------------------------------------------------------


def test_without_the_token_everything_is_401(admin_server: ServerProcess, client) -> None:
    """Page and API answer 401 (with WWW-Authenticate: Bearer) without the token, with a wrong
    one in any form, with the raw token as cookie, or with the token in another scheme."""
    origin = admin_server.origin
    page = client.get(origin + "/dashboard")
    assert page.status_code == 401
    assert page.headers["WWW-Authenticate"] == "Bearer"
    assert page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert "/dashboard?token=" in page.text and "dashboard:" in page.text

    refusals = [
        client.get(origin + API + "uploads"),
        client.get(origin + API + "stats", headers={"Authorization": "Bearer wrong-token-here"}),
        client.get(origin + API + "stats", params={"token": "wrong-token-here"}),
        client.get(origin + "/dashboard", params={"token": "wrong-token-here"}),
        client.get(origin + API + "stats", headers={"Authorization": f"Basic {TOKEN}"}),
        client.get(origin + API + "stats", headers={"Cookie": f"{COOKIE}={TOKEN}"}),
        client.get(origin + API + "stats", headers={"Cookie": f"tusserver_admin={TOKEN}"}),
        client.post(origin + API + "uploads/abc/reprocess"),
        client.delete(origin + API + "uploads/abc"),
    ]
    for response in refusals:
        assert response.status_code == 401, response.request.url
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "set-cookie" not in response.headers
    assert refusals[0].json() == {"error": "admin token required"}


def test_bearer_works_without_tus_resumable(admin_server: ServerProcess, client) -> None:
    """Admin requests are not tus: no Tus-Resumable needed (POST included) or stamped."""
    stats = admin(client, admin_server, "GET", "stats")
    assert stats.status_code == 200
    assert stats.headers["Content-Type"] == "application/json"
    assert stats.headers["Cache-Control"] == "no-store"
    assert "tus-resumable" not in stats.headers
    unknown = admin(client, admin_server, "POST", "uploads/0123456789abcdef/reprocess")
    assert unknown.status_code == 404  # not 412
    assert unknown.json() == {"error": "upload not found"}
    nowhere = admin(client, admin_server, "GET", "no/such/thing")
    assert (nowhere.status_code, nowhere.headers["Cache-Control"]) == (404, "no-store")


def test_token_in_the_address_becomes_a_cookie(admin_server: ServerProcess, client) -> None:
    """?token= on the page answers 200 with a page that sets an HttpOnly, SameSite=Strict
    cookie (named after the token, holding something other than the token, for 7 days) and
    moves on to the same address without the token; on the API, a 303 does. The cookie then
    opens the page and the API's reads."""
    login = client.get(admin_server.origin + "/dashboard", params={"x": "1", "token": TOKEN})
    assert login.status_code == 200
    assert "location" not in login.headers
    assert '<meta http-equiv="refresh" content="0;url=/dashboard?x=1">' in login.text
    assert 'href="/dashboard?x=1"' in login.text and TOKEN not in login.text
    assert "<script" not in login.text and "style=" not in login.text  # CSP: nothing inline
    assert login.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in login.headers["Content-Security-Policy"]
    cookie = login.headers["Set-Cookie"]
    assert cookie.startswith(COOKIE + "=")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "secure" not in attributes  # plain http here
    assert "samesite=strict" in cookie.lower() and "path=/;" in cookie.lower() + ";"
    assert f"max-age={7 * 24 * 3600};" in cookie.lower() + ";"
    value = login.cookies[COOKIE]
    issued, _, mac = value.partition(".")
    assert abs(int(issued) - time.time()) < 60 and len(mac) == 64 and TOKEN not in value

    jar = {"Cookie": f"{COOKIE}={value}"}
    page = client.get(admin_server.origin + "/dashboard", headers=jar)
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert 'src="/_tusserver/dashboard.js"' in page.text
    assert 'data-api="/admin/api/"' in page.text
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline
    api_login = client.get(admin_server.origin + API + "stats", params={"token": TOKEN})
    assert (api_login.status_code, api_login.headers["Location"]) == (303, API + "stats")
    assert api_login.cookies[COOKIE]
    assert client.get(admin_server.origin + API + "stats", headers=jar).status_code == 200


def test_cookie_is_refused_once_old_or_forged(admin_server: ServerProcess, client) -> None:
    """A cookie is good for 7 days from its issue, for its own token, under its own name."""
    now = int(time.time())
    stats = admin_server.origin + API + "stats"

    def status(name: str, value: str) -> int:
        return client.get(stats, headers={"Cookie": f"{name}={value}"}).status_code

    assert status(COOKIE, auth.cookie_value(TOKEN, now - 6 * 24 * 3600)) == 200
    assert status(COOKIE, auth.cookie_value(TOKEN, now - 8 * 24 * 3600)) == 401
    assert status(COOKIE, auth.cookie_value(TOKEN, now + 3600)) == 401  # issued in the future
    assert status(COOKIE, auth.cookie_value("another-token-0123456789", now)) == 401
    assert status("tusserver_admin", auth.cookie_value(TOKEN, now)) == 401
    fresh = auth.cookie_value(TOKEN, now)
    for forged in (f"{now + 1}.{fresh.split('.')[1]}", fresh.split(".")[1], "9" * 5000 + ".ab"):
        assert status(COOKIE, forged) == 401, forged[:40]
    assert auth.cookie_name(TOKEN) == COOKIE
    assert auth.cookie_name("another-token-0123456789") != COOKIE


def test_login_redirects_keep_the_raw_address(admin_server: ServerProcess, client) -> None:
    """The way on after ?token= is the address as sent, whatever its characters (a decoded
    path with one latin-1 cannot encode was a 500), never scheme-relative, and the token is
    dropped however it is spelt."""
    origin = admin_server.origin
    euro = client.get(f"{origin}{API}uploads/%E2%82%AC?a=%E2%82%AC&token={TOKEN}&b=+")
    assert (euro.status_code, euro.headers["Location"]) == (
        303,
        API + "uploads/%E2%82%AC?a=%E2%82%AC&b=+",
    )
    spelt = client.get(f"{origin}/dashboard?t%6Fken={TOKEN}&q=1")
    assert spelt.status_code == 200 and 'url=/dashboard?q=1"' in spelt.text
    raw = client.get(f"{origin}/dashboard?token={TOKEN}&x=%22%3E")
    assert 'url=/dashboard?x=%22%3E"' in raw.text


def test_cookie_changes_need_a_same_origin_request(admin_server: ServerProcess, client) -> None:
    """POST and DELETE authenticated by the cookie alone are refused (403) unless the browser
    says they come from the server's own origin; Bearer needs no such proof."""
    login = client.get(admin_server.origin + "/dashboard", params={"token": TOKEN})
    jar = {"Cookie": f"{COOKIE}={login.cookies[COOKIE]}"}
    uid = upload_id(create_upload(client, admin_server.url, 10))
    cross = [
        {},
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": admin_server.origin.replace("127.0.0.1", "localhost")},
    ]
    for extra in cross:
        for method, path in (("DELETE", f"uploads/{uid}"), ("POST", f"uploads/{uid}/terminate")):
            response = client.request(
                method, admin_server.origin + API + path, headers={**jar, **extra}
            )
            assert response.status_code == 403, (method, extra)
            assert "error" in response.json()
    assert detail(client, admin_server, uid)["state"] == "active"

    same = {**jar, "Origin": admin_server.origin}
    assert (
        client.delete(admin_server.origin + API + f"uploads/{uid}", headers=same).status_code == 204
    )
    other = upload_id(create_upload(client, admin_server.url, 10))
    fetch = {**jar, "Sec-Fetch-Site": "same-origin"}
    terminated = client.post(
        admin_server.origin + API + f"uploads/{other}/terminate", headers=fetch
    )
    assert terminated.status_code == 204
    assert admin(client, admin_server, "GET", "stats", headers=jar).status_code == 200


def test_admin_paths_are_outside_cors(admin_server: ServerProcess, client) -> None:
    """Even with --cors-allow-origin .* and credentials (the tus routes answer any origin),
    admin paths never carry Access-Control-* headers: preflights get 405, answers none."""
    origin = {"Origin": "https://app.example"}
    preflight = {**origin, "Access-Control-Request-Method": "DELETE"}
    tus = client.options(admin_server.url, headers=preflight)
    assert tus.headers["Access-Control-Allow-Origin"] == "https://app.example"  # CORS is on
    for path in ("/dashboard", API + "uploads", API + "uploads/abc", API + "stats"):
        answer = client.options(admin_server.origin + path, headers=preflight)
        assert answer.status_code == 405, path
        assert access_control(answer) == [], path
    answers = [
        admin(client, admin_server, "GET", "stats", headers=origin),
        client.get(admin_server.origin + API + "stats", headers=origin),
        client.get(admin_server.origin + "/dashboard", headers=origin),
    ]
    assert [r.status_code for r in answers] == [200, 401, 401]
    assert all(access_control(r) == [] for r in answers)


def test_other_methods_are_405(admin_server: ServerProcess, client) -> None:
    for method, path, allow in [
        ("PUT", "uploads", "GET"),
        ("PATCH", "uploads/abc", "DELETE, GET"),
        ("GET", "uploads/abc/reprocess", "POST"),
        ("POST", "stats", "GET"),
    ]:
        response = admin(client, admin_server, method, path)
        assert response.status_code == 405, (method, path)
        assert response.headers["Allow"] == allow
        assert response.json() == {"error": f"method {method} not allowed"}


# -- reading ----------------------------------------------------------------------------------


def test_list_pages_newest_first(make_server: ServerFactory, client) -> None:
    """limit/cursor walk every upload once, newest first; bad parameters are 400."""
    server = make_server("--admin-token", TOKEN)
    created = [upload_id(create_upload(client, server.url, 5)) for _ in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = admin(client, server, "GET", "uploads", params=params).json()
        seen += [item["id"] for item in body["items"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert (seen, pages) == (created[::-1], 3)

    for params, message in [
        ({"limit": "0"}, "limit must be a number from 1 to 500"),
        ({"limit": "501"}, "limit must be a number from 1 to 500"),
        ({"limit": "ten"}, "limit must be a number from 1 to 500"),
        ({"cursor": "not-a-cursor"}, "bad cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'[1.5, "../x"]').decode()}, "bad cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'{"a": 1}').decode()}, "bad cursor"),
        (
            {"cursor": base64.urlsafe_b64encode(b"[1" + b"0" * 400 + b', "ab"]').decode()},
            "bad cursor",
        ),
        ({"cursor": base64.urlsafe_b64encode(b'[1e400, "ab"]').decode()}, "bad cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'[NaN, "ab"]').decode()}, "bad cursor"),
    ]:
        response = admin(client, server, "GET", "uploads", params=params)
        assert (response.status_code, response.json()) == (400, {"error": message}), params
    bad_status = admin(client, server, "GET", "uploads", params={"status": "sleeping"})
    assert bad_status.status_code == 400
    assert bad_status.json()["error"].startswith("unknown status 'sleeping'")


def test_item_and_detail(admin_server: ServerProcess, client) -> None:
    """An unfinished upload as listed and in detail; unknown and malformed ids are 404."""
    location = create_upload(
        client, admin_server.url, 10, metadata(filename="a.csv", filetype="text/csv", x="y")
    )
    assert patch(client, location, 0, b"12345").status_code == 204
    uid = upload_id(location)
    item = next(
        i for i in admin(client, admin_server, "GET", "uploads").json()["items"] if i["id"] == uid
    )
    assert item["url"] == location
    assert (item["name"], item["type"], item["size"], item["offset"]) == (
        "a.csv",
        "text/csv",
        10,
        5,
    )
    assert (item["state"], item["status"], item["result"]) == ("active", "uploading", None)
    assert item["percent"] == 50.0
    assert item["processing"] is None
    assert item["expires"] > item["updated"] >= item["created"]
    assert {"bytes_per_second", "eta_seconds"} <= set(item)

    full = detail(client, admin_server, uid)
    assert full["metadata"] == {"filename": "a.csv", "filetype": "text/csv", "x": "y"}
    assert (full["concat"], full["partials"]) == (None, [])
    assert set(full) == {*item, "metadata", "concat", "partials"}
    for bad in ("0123456789abcdef0123456789abcdef", "a.b", "a%20b"):
        response = admin(client, admin_server, "GET", f"uploads/{bad}")
        assert response.status_code == 404, bad


def test_status_filters(admin_server: ServerProcess, client, tmp_path: Path) -> None:
    """Each ?status= lists exactly the uploads in that overall status, and every item it
    lists says that status: a terminated upload whose failed job row remains is terminated
    (not failed), a partial upload of a concatenation is completed (never processed, not
    queued); reprocess is refused (409/410) for all but ended jobs."""
    done = finished_upload(client, admin_server, CSV, filename="ok.csv", pipeline="csv")
    unprocessed = finished_upload(client, admin_server, b"data", pipeline="none")
    failing = finished_upload(client, admin_server, b"data", pipeline="gate", fail="1")
    failed_then_gone = finished_upload(client, admin_server, b"data", pipeline="gate", fail="1")
    partial = create_upload(client, admin_server.url, 4, {"Upload-Concat": "partial"})
    assert patch(client, partial, 0, b"part").status_code == 204
    wait_status(client, admin_server, done, "completed")
    wait_status(client, admin_server, failing, "failed")
    wait_status(client, admin_server, failed_then_gone, "failed")
    gone_location = admin_server.url + failed_then_gone
    assert client.delete(gone_location, headers=TUS).status_code == 204
    assert job_state(admin_server, failed_then_gone) == "failed"  # the job row remains
    gone = create_upload(client, admin_server.url, 10)
    assert client.delete(gone, headers=TUS).status_code == 204
    uploading = create_upload(client, admin_server.url, 10)
    assert patch(client, uploading, 0, b"abc").status_code == 204
    gates = [tmp_path / "gate-held", tmp_path / "gate-waiting"]
    held = finished_upload(client, admin_server, b"data", pipeline="gate", gate=str(gates[0]))
    try:
        wait_status(client, admin_server, held, "processing")
        waiting = finished_upload(
            client, admin_server, b"data", pipeline="gate", gate=str(gates[1])
        )
        wait_for(lambda: waiting in listed(client, admin_server, "queued"), 15, "queued job")
        expected = {
            "uploading": {upload_id(uploading)},
            "queued": {waiting},
            "processing": {held},
            "completed": {done, unprocessed, upload_id(partial)},
            "failed": {failing},
            "terminated": {upload_id(gone), failed_then_gone},
            "expired": set(),
        }
        mine = set().union(*expected.values())
        for status, ids in expected.items():
            params = {"status": status, "limit": 500}
            items = admin(client, admin_server, "GET", "uploads", params=params).json()["items"]
            assert {i["id"] for i in items if i["id"] in mine} == ids, status
            assert {i["status"] for i in items} <= {status}, status  # every item, not only ours
        assert set(listed(client, admin_server)) >= mine
        assert detail(client, admin_server, upload_id(partial))["result"] == "ok"

        refusals = {
            held: (409, "processing is queued or running"),
            waiting: (409, "processing is queued or running"),
            upload_id(uploading): (409, "upload is not finished"),
            upload_id(gone): (410, "upload terminated"),
            unprocessed: (409, "processing is off"),
            upload_id(partial): (409, "partial uploads are not processed"),
        }
        for uid, (status, message) in refusals.items():
            response = admin(client, admin_server, "POST", f"uploads/{uid}/reprocess")
            assert (response.status_code, response.json()) == (status, {"error": message})
    finally:
        for gate in gates:
            gate.touch()
    wait_status(client, admin_server, held, "completed")
    wait_status(client, admin_server, waiting, "completed")


def test_expired_filter(make_server: ServerFactory, client) -> None:
    server = make_server("--admin-token", TOKEN, "--expiration", "1s")
    location = create_upload(client, server.url, 10)
    wait_for(lambda: client.head(location, headers=TUS).status_code == 410, 10, "expiry")
    assert listed(client, server, "expired") == [upload_id(location)]
    assert listed(client, server, "uploading") == []
    gone = detail(client, server, upload_id(location))
    assert (gone["state"], gone["status"]) == ("expired", "expired")


def test_stats(make_server: ServerFactory, client) -> None:
    """Counts by state, bytes stored, uploads in flight, free space, jobs."""
    server = make_server("--admin-token", TOKEN, "--plugins", "csv")
    done = finished_upload(client, server, CSV)
    wait_status(client, server, done, "completed")
    moving = create_upload(client, server.url, 10)
    assert patch(client, moving, 0, b"1234").status_code == 204
    gone = create_upload(client, server.url, 5)
    assert client.delete(gone, headers=TUS).status_code == 204

    stats = admin(client, server, "GET", "stats").json()
    assert stats["uploads"] == {"complete": 1, "active": 1, "terminated": 1}
    assert stats["bytes_stored"] == len(CSV) + 4
    assert stats["in_flight"] == 1
    assert isinstance(stats["free_bytes"], int) and stats["free_bytes"] > 0
    assert (stats["jobs"], stats["failed_jobs"]) == ({"completed": 1}, 0)


class Snapshots:
    """Reads /admin/api/events in a thread; every `snapshot` lands in `views`."""

    def __init__(self, server: ServerProcess, params: dict[str, str]):
        self.http = httpx.Client(timeout=60)
        self.views: list[dict[str, Any]] = []
        self.headers: httpx.Headers | None = None
        self.opened = threading.Event()
        args = (server.origin + API + "events", params)
        self.thread = threading.Thread(target=self._read, args=args, daemon=True)
        self.thread.start()
        assert self.opened.wait(10), "event stream did not open"

    def _read(self, url: str, params: dict[str, str]) -> None:
        with (
            contextlib.suppress(Exception),
            self.http.stream("GET", url, params=params, headers=BEARER) as response,
        ):
            self.headers = response.headers
            self.opened.set()
            for kind, data in sse_events(response.iter_lines()):
                if kind == "snapshot":
                    self.views.append(json.loads(data))

    def wait(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        found = wait_for(
            lambda: next((v for v in self.views[::-1] if predicate(v)), None), 15, what
        )
        assert isinstance(found, dict)
        return found

    def close(self) -> None:
        self.http.close()
        self.thread.join(5)


def offset_in(view: dict[str, Any], uid: str) -> int | None:
    return next((i["offset"] for i in view["items"] if i["id"] == uid), None)


def test_events_follow_uploads(admin_server: ServerProcess, client) -> None:
    """The stream sends a snapshot (stats + first page) at once and again whenever an upload
    of its filter appears, progresses or leaves it."""
    bad = admin(client, admin_server, "GET", "events", params={"status": "nope"})
    assert bad.status_code == 400
    stream = Snapshots(admin_server, {"status": "uploading"})
    try:
        assert stream.headers is not None
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert stream.headers["Cache-Control"] == "no-store"
        first = stream.wait(lambda v: True, "first snapshot")
        assert {"stats", "items", "next"} <= set(first)
        assert {"uploads", "in_flight", "bytes_stored", "free_bytes"} <= set(first["stats"])
        location = create_upload(client, admin_server.url, 10)
        uid = upload_id(location)
        stream.wait(lambda v: offset_in(v, uid) == 0, "the new upload")
        assert patch(client, location, 0, b"123456").status_code == 204
        stream.wait(lambda v: offset_in(v, uid) == 6, "its progress")
        # the totals are refreshed every 5 s (in_flight: moved in the last 10 s)
        stream.wait(lambda v: v["stats"]["in_flight"] >= 1, "it counted in flight")
        assert patch(client, location, 6, b"7890").status_code == 204
        stream.wait(lambda v: offset_in(v, uid) is None, "it leaving the uploading list")
    finally:
        stream.close()


# -- actions ----------------------------------------------------------------------------------


def test_terminate_stops_a_patch_and_fires_post_terminate(
    make_server: ServerFactory, client, tmp_path: Path
) -> None:
    """DELETE stops an in-flight PATCH and removes the upload even though pre-terminate would
    refuse a client's DELETE; post-terminate fires without the admin's credentials."""
    box = HookBox(tmp_path / "box")
    box.answer("pre-terminate", {"RejectTermination": True})
    server = make_server(
        "--admin-token", TOKEN,
        "--hooks-dir", str(box.hooks),
        "--hooks-enabled-events", "pre-terminate,post-terminate",
        "--disable-termination",
    )  # fmt: skip
    location = create_upload(client, server.url, 50_000_000)
    path = "/files/" + upload_id(location)
    answered: list[int] = []
    sender = threading.Thread(
        target=lambda: answered.append(slow_patch(server.port, path, 50_000_000, 65536, 0.05)[0])
    )
    sender.start()
    wait_receiving(server)
    # the token in the address (a DELETE does not log in with it) must not reach the hooks
    address = f"uploads/{upload_id(location)}?token={TOKEN}&x=1"
    response = admin(client, server, "DELETE", address)
    assert response.status_code == 204
    sender.join(15)
    assert answered and answered[0] != 204  # the PATCH ended early, unfinished
    assert client.head(location, headers=TUS).status_code == 410
    assert not box.events("pre-terminate")
    (event,) = box.wait("post-terminate", upload_id=upload_id(location))
    seen = event["request"]["Event"]["HTTPRequest"]
    assert "Authorization" not in seen["Header"] and "Cookie" not in seen["Header"]
    assert seen["URI"] == API + f"uploads/{upload_id(location)}"  # no query string at all
    assert TOKEN not in json.dumps(event)
    again = admin(client, server, "POST", f"uploads/{upload_id(location)}/terminate")
    assert (again.status_code, again.json()) == (410, {"error": "upload terminated"})
    unknown = admin(client, server, "DELETE", "uploads/0123456789abcdef")
    assert (unknown.status_code, unknown.json()) == (404, {"error": "upload not found"})


def test_reprocess_runs_the_job_again(admin_server: ServerProcess, client) -> None:
    """Reprocess goes through the job runner: the job is queued (and counted as such) and
    runs again at once (the runner is woken, no wait for its next poll)."""
    uid = finished_upload(client, admin_server, CSV, filename="again.csv", pipeline="csv")
    wait_status(client, admin_server, uid, "completed")
    assert job_run(admin_server, uid) == 1
    queued = 'tusserver_processing_jobs_total{state="queued"}'
    before = metric_value(admin_server, queued)
    response = admin(client, admin_server, "POST", f"uploads/{uid}/reprocess")
    assert response.status_code == 202
    assert response.json()["status"] in ("queued", "processing", "completed")
    assert metric_value(admin_server, queued) == before + 1
    wait_for(lambda: job_run(admin_server, uid) == 2, 15, "a second run")
    wait_status(client, admin_server, uid, "completed")
    assert detail(client, admin_server, uid)["result"] == "ok"


# -- the token's origin and the switch ----------------------------------------------------------


def test_generated_token_is_logged_and_shared_by_workers(
    make_server: ServerFactory, client
) -> None:
    """Without --admin-token one token is generated per command (one `dashboard:` line: the
    parent made it, not each worker), logged with the dashboard URL (as Jupyter does), and
    accepted by every worker."""
    server = make_server("--workers", "2")
    line = wait_for(
        lambda: re.search(r"dashboard: (\S+)\?token=(\S+)", server.log()), 10, "dashboard line"
    )
    assert isinstance(line, re.Match)
    assert line.group(1) == f"http://127.0.0.1:{server.port}/dashboard"
    token = line.group(2)
    assert len(token) >= 32
    login = client.get(line.group(0).split(" ", 1)[1])
    assert login.status_code == 200 and auth.cookie_name(token) in login.cookies
    for _ in range(20):  # new connections: both workers answer
        with httpx.Client() as fresh:
            auth_header = {"Authorization": f"Bearer {token}"}
            assert fresh.get(server.origin + API + "stats", headers=auth_header).status_code == 200
    workers = set(re.findall(r"Started server process \[(\d+)\]", server.log()))
    assert len(workers) == 2, server.log()
    assert server.log().count("dashboard:") == 1, server.log()


def test_wildcard_host_logs_a_loopback_url(make_server: ServerFactory) -> None:
    """With --host 0.0.0.0 the logged URL is one a browser can open: 127.0.0.1."""
    server = make_server("--host", "0.0.0.0")
    line = wait_for(lambda: re.search(r"dashboard: (\S+)\?token=", server.log()), 10, "line")
    assert isinstance(line, re.Match)
    assert line.group(1) == f"http://127.0.0.1:{server.port}/dashboard"


def test_configured_token_is_not_logged(admin_server: ServerProcess) -> None:
    log = admin_server.log()
    assert f"dashboard: {admin_server.origin}/dashboard (token from --admin-token)" in log
    assert TOKEN not in log


def test_dashboard_path_empty_turns_everything_off(make_server: ServerFactory, client) -> None:
    server = make_server("--dashboard-path", "", "--admin-token", TOKEN)
    for path in ("/dashboard", API + "stats", API + "uploads"):
        assert client.get(server.origin + path, headers=BEARER).status_code == 404, path
    assert "dashboard:" not in server.log()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_mounted_app_gets_a_token_and_its_paths(tmp_path: Path, anyio_backend: str) -> None:
    """Mounted under a path, the app generates its own token (logged below the mount path,
    which it cannot know); the page (built without starting the backends), the cookie and
    the way on after login stay under the mount path, and item URLs carry it."""
    settings = Settings(upload_dir=tmp_path / "up")
    with caplog_lines() as lines:
        app = create_app(settings)
    token = settings.admin_token
    assert token
    assert f"dashboard: /dashboard?token={token} (below the app's mount path)" in lines
    host = Starlette(routes=[Mount("/api/tus", app=app)])
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://host.test") as http:
        login = await http.get("/api/tus/dashboard", params={"token": token})
        assert 'url=/api/tus/dashboard"' in login.text
        assert "Path=/api/tus/;" in login.headers["Set-Cookie"] + ";"
        cookie = {"Cookie": f"{auth.cookie_name(token)}={login.cookies[auth.cookie_name(token)]}"}
        page = await http.get("/api/tus/dashboard", headers=cookie)
        assert page.status_code == 200 and 'data-api="/api/tus/admin/api/"' in page.text
        assert not app.state.core.started  # the page reads nothing: no backends for it
        api_login = await http.get("/api/tus/admin/api/stats", params={"token": token, "a": "b"})
        assert api_login.headers["Location"] == "/api/tus/admin/api/stats?a=b"
        created = await http.post("/api/tus/files/", headers={**TUS, "Upload-Length": "3"})
        bearer = {"Authorization": f"Bearer {token}"}
        items = (await http.get("/api/tus/admin/api/uploads", headers=bearer)).json()["items"]
        assert [item["url"] for item in items] == [created.headers["Location"]]
        assert created.headers["Location"].startswith("http://host.test/api/tus/files/")
        await app.state.core.stop_background()


@contextlib.contextmanager
def caplog_lines() -> Iterator[list[str]]:
    """The messages logged by tusserver loggers inside the block."""
    import logging

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("tusserver")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_dashboard_line_for_wildcard_addresses() -> None:
    settings = Settings(admin_token="t" * 20)
    for origin, shown in [
        ("http://0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("https://[::]:8443", "https://[::1]:8443"),
        ("http://10.1.2.3:8080", "http://10.1.2.3:8080"),
        ("http://[::1]:80", "http://[::1]:80"),
    ]:
        line = admin_module.dashboard_line(settings, False, origin)
        assert line == f"dashboard: {shown}/dashboard (token from --admin-token)", origin


def test_shared_values_are_computed_once_per_interval() -> None:
    """Callers of a stale key wait for one computation instead of each making their own."""
    calls: list[int] = []

    async def compute() -> int:
        calls.append(1)
        await anyio.sleep(0.05)
        return len(calls)

    async def main() -> None:
        shared: events.Shared[int] = events.Shared(0.3)
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(shared.get, "k", compute)
        assert calls == [1] and await shared.get("k", compute) == 1
        await anyio.sleep(0.35)
        assert await shared.get("k", compute) == 2

    anyio.run(main)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_event_streams_share_registry_reads(tmp_path: Path, anyio_backend: str) -> None:
    """However many streams poll, the listing is read once a second per filter and the stats
    once every 5 s; an unreadable registry answers the stream's request with 503."""
    settings = Settings(upload_dir=tmp_path / "up", admin_token=TOKEN)
    app = create_app(settings)
    core = app.state.core
    await core.start()
    try:
        reads = {"list": 0, "stats": 0}
        list_uploads, upload_stats = core.registry.list_uploads, core.registry.upload_stats

        async def counted_list(*args: Any, **kwargs: Any) -> Any:
            reads["list"] += 1
            return await list_uploads(*args, **kwargs)

        async def counted_stats(*args: Any, **kwargs: Any) -> Any:
            reads["stats"] += 1
            return await upload_stats(*args, **kwargs)

        core.registry.list_uploads, core.registry.upload_stats = counted_list, counted_stats
        scope = {
            "type": "http",
            "app": app,
            "method": "GET",
            "path": API + "events",
            "query_string": b"",
            "headers": [(b"host", b"tus.test")],
            "scheme": "http",
            "server": ("tus.test", 80),
            "root_path": "",
        }
        request = Request(scope)
        views = [await events.snapshot(request, FILTERS["uploading"]) for _ in range(20)]
        assert len(set(views)) == 1 and reads == {"list": 1, "stats": 1}
        await events.snapshot(request, FILTERS["queued"])
        assert reads == {"list": 2, "stats": 1}  # another filter: its own listing
        await anyio.sleep(events.POLL + 0.05)
        await events.snapshot(request, FILTERS["uploading"])
        assert reads == {"list": 3, "stats": 1}  # the stats are younger than 5 s

        async def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise BackendUnavailable("registry down", retry_after=3)

        core.registry.list_uploads = unavailable
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tus.test") as http:
            answer = await http.get(API + "events", params={"status": "failed"}, headers=BEARER)
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "3"
        assert "error" in answer.json()
    finally:
        await core.stop_background()
