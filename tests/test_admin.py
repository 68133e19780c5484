"""The admin JSON API and its guard against live servers: the token (Bearer, ?token= exchanged
for a cookie), same-origin checks for cookie-authenticated changes, no CORS and no tus
version check on admin paths, listing with pagination and status filters, detail,
terminate, reprocess, stats, the live event stream, the generated token in the log.

Processing states are held deterministically by a test plugin ("gate", written below) that
keeps its job running until a file exists, or fails it when asked.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    TUS,
    ServerFactory,
    ServerProcess,
    create_upload,
    patch,
    wait_for,
    wait_receiving,
)
from starlette.applications import Starlette
from starlette.routing import Mount
from test_hooks import HookBox, slow_patch

from tusserver.app import create_app
from tusserver.config import Settings

TOKEN = "test-admin-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
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
    """?token= sets an HttpOnly, SameSite=Strict cookie holding something other than the
    token, and redirects to the same address without it; the cookie then opens the page and
    the API's reads."""
    login = client.get(admin_server.origin + "/dashboard", params={"x": "1", "token": TOKEN})
    assert login.status_code == 303
    assert login.headers["Location"] == "/dashboard?x=1"
    cookie = login.headers["Set-Cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "path"} <= attributes
    assert "secure" not in attributes  # plain http here
    assert "samesite=strict" in cookie.lower() and "path=/;" in cookie.lower() + ";"
    value = login.cookies["tusserver_admin"]
    assert value and TOKEN not in value

    jar = {"Cookie": f"tusserver_admin={value}"}
    page = client.get(admin_server.origin + "/dashboard", headers=jar)
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert 'src="/_tusserver/dashboard.js"' in page.text
    assert 'data-api="/admin/api/"' in page.text
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline
    api_login = client.get(admin_server.origin + API + "stats", params={"token": TOKEN})
    assert (api_login.status_code, api_login.headers["Location"]) == (303, API + "stats")
    assert client.get(admin_server.origin + API + "stats", headers=jar).status_code == 200


def test_cookie_changes_need_a_same_origin_request(admin_server: ServerProcess, client) -> None:
    """POST and DELETE authenticated by the cookie alone are refused (403) unless the browser
    says they come from the server's own origin; Bearer needs no such proof."""
    login = client.get(admin_server.origin + "/dashboard", params={"token": TOKEN})
    jar = {"Cookie": f"tusserver_admin={login.cookies['tusserver_admin']}"}
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
    """Each ?status= lists exactly the uploads in that overall status, as their items say;
    reprocess is refused (409/410) for all but ended jobs."""
    done = finished_upload(client, admin_server, CSV, filename="ok.csv", pipeline="csv")
    unprocessed = finished_upload(client, admin_server, b"data", pipeline="none")
    failing = finished_upload(client, admin_server, b"data", pipeline="gate", fail="1")
    wait_status(client, admin_server, done, "completed")
    wait_status(client, admin_server, failing, "failed")
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
            "completed": {done, unprocessed},
            "failed": {failing},
            "terminated": {upload_id(gone)},
            "expired": set(),
        }
        mine = set().union(*expected.values())
        for status, ids in expected.items():
            params = {"status": status, "limit": 500}
            response = admin(client, admin_server, "GET", "uploads", params=params)
            items = [i for i in response.json()["items"] if i["id"] in mine]
            assert {i["id"] for i in items} == ids, status
            assert all(i["status"] == status for i in items), status
        assert set(listed(client, admin_server)) >= mine

        refusals = {
            held: (409, "processing is queued or running"),
            waiting: (409, "processing is queued or running"),
            upload_id(uploading): (409, "upload is not finished"),
            upload_id(gone): (410, "upload terminated"),
            unprocessed: (409, "processing is off"),
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
            kind = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "snapshot":
                    self.views.append(json.loads(line[6:]))

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
        moved = stream.wait(lambda v: offset_in(v, uid) == 6, "its progress")
        assert moved["stats"]["in_flight"] >= 1
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
    response = admin(client, server, "DELETE", f"uploads/{upload_id(location)}")
    assert response.status_code == 204
    sender.join(15)
    assert answered and answered[0] != 204  # the PATCH ended early, unfinished
    assert client.head(location, headers=TUS).status_code == 410
    assert not box.events("pre-terminate")
    (event,) = box.wait("post-terminate", upload_id=upload_id(location))
    header = event["request"]["Event"]["HTTPRequest"]["Header"]
    assert "Authorization" not in header and "Cookie" not in header
    again = admin(client, server, "POST", f"uploads/{upload_id(location)}/terminate")
    assert (again.status_code, again.json()) == (410, {"error": "upload terminated"})
    unknown = admin(client, server, "DELETE", "uploads/0123456789abcdef")
    assert (unknown.status_code, unknown.json()) == (404, {"error": "upload not found"})


def test_reprocess_runs_the_job_again(admin_server: ServerProcess, client) -> None:
    uid = finished_upload(client, admin_server, CSV, filename="again.csv", pipeline="csv")
    wait_status(client, admin_server, uid, "completed")
    assert job_run(admin_server, uid) == 1
    response = admin(client, admin_server, "POST", f"uploads/{uid}/reprocess")
    assert response.status_code == 202
    assert response.json()["status"] in ("queued", "processing", "completed")
    wait_for(lambda: job_run(admin_server, uid) == 2, 15, "a second run")
    wait_status(client, admin_server, uid, "completed")
    assert detail(client, admin_server, uid)["result"] == "ok"


# -- the token's origin and the switch ----------------------------------------------------------


def test_generated_token_is_logged_and_shared_by_workers(
    make_server: ServerFactory, client
) -> None:
    """Without --admin-token one token is generated per command, logged with the dashboard
    URL (as Jupyter does), and accepted by every worker."""
    server = make_server("--workers", "2")
    line = wait_for(
        lambda: re.search(r"dashboard: (\S+)\?token=(\S+)", server.log()), 10, "dashboard line"
    )
    assert isinstance(line, re.Match)
    assert line.group(1) == f"http://127.0.0.1:{server.port}/dashboard"
    token = line.group(2)
    assert len(token) >= 32
    login = client.get(line.group(0).split(" ", 1)[1])
    assert login.status_code == 303 and "tusserver_admin" in login.cookies
    for _ in range(20):  # new connections: both workers answer
        with httpx.Client() as fresh:
            auth = {"Authorization": f"Bearer {token}"}
            assert fresh.get(server.origin + API + "stats", headers=auth).status_code == 200


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
    """Mounted under a path, the app generates its own token; the cookie and the redirect
    stay under the mount path, and item URLs carry it."""
    settings = Settings(upload_dir=tmp_path / "up")
    app = create_app(settings)
    host = Starlette(routes=[Mount("/api/tus", app=app)])
    token = settings.admin_token
    assert token
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://host.test") as http:
        login = await http.get("/api/tus/dashboard", params={"token": token})
        assert login.headers["Location"] == "/api/tus/dashboard"
        assert "Path=/api/tus/;" in login.headers["Set-Cookie"] + ";"
        created = await http.post("/api/tus/files/", headers={**TUS, "Upload-Length": "3"})
        auth = {"Authorization": f"Bearer {token}"}
        items = (await http.get("/api/tus/admin/api/uploads", headers=auth)).json()["items"]
        assert [item["url"] for item in items] == [created.headers["Location"]]
        assert created.headers["Location"].startswith("http://host.test/api/tus/files/")
        await app.state.core.stop_background()
