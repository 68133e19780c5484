"""Hooks against a real server: tusd-format file hooks, HTTP hooks, Python plugins, pre-access,
durable post-finish deliveries across a crash and a restart.

File hooks are real scripts in a temporary hooks dir. The generic recorder script saves every
hook request it gets (plus TUS_* env) under `events/` and answers with `control/<event>.json`
(or exits with `control/<event>.exit`, or sleeps `control/<event>.sleep` seconds first), so a
test steers hooks by writing control files while the server runs.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ROOT, TUS, create_upload, patch, wait_for

ALL_EVENTS = (
    "pre-create,post-create,post-receive,pre-finish,post-finish,pre-terminate,post-terminate"
)
EVENT_NAMES = [*ALL_EVENTS.split(","), "pre-access"]

RECORDER = textwrap.dedent(
    """\
    #!{python}
    import json, os, pathlib, sys, time
    started = time.time()
    raw = sys.stdin.read()
    name = os.path.basename(sys.argv[0])
    base = pathlib.Path(sys.argv[0]).resolve().parent.parent
    (base / "started" / ("%s-%d" % (name, os.getpid()))).touch()
    control = base / "control"
    delay = control / (name + ".sleep")
    if delay.exists():
        time.sleep(float(delay.read_text()))  # a slow hook, on purpose
    record = {{
        "request": json.loads(raw),
        "env": {{k: os.environ.get(k) for k in ("TUS_ID", "TUS_SIZE", "TUS_OFFSET", "PATH",
                 "TUSSERVER_ADMIN_TOKEN", "TUSSERVER_SETTINGS_JSON")}},
        "cwd": os.getcwd(),
        "started": started,
    }}
    events = base / "events"
    events.mkdir(exist_ok=True)
    stamp = "%s-%020d-%d" % (name, time.time_ns(), os.getpid())
    tmp = events / ("." + stamp)
    tmp.write_text(json.dumps(record))
    tmp.rename(events / (stamp + ".json"))
    answer = control / (name + ".json")
    if answer.exists():
        sys.stdout.write(answer.read_text())
    code = control / (name + ".exit")
    if code.exists():
        print("secret detail for the log only", file=sys.stderr)
        sys.exit(int(code.read_text()))
    """
)


class HookBox:
    """A hooks dir full of recorder scripts, plus its events/ and control/ dirs."""

    def __init__(self, base: Path, events: list[str] = EVENT_NAMES):
        self.base = base
        self.hooks = base / "hooks"
        self.control = base / "control"
        self.events_dir = base / "events"
        self.started_dir = base / "started"
        for path in (self.hooks, self.control, self.events_dir, self.started_dir):
            path.mkdir(parents=True, exist_ok=True)
        for event in events:
            script = self.hooks / event
            script.write_text(RECORDER.format(python=sys.executable))
            script.chmod(0o755)

    def answer(self, event: str, response: dict[str, Any] | str) -> None:
        text = response if isinstance(response, str) else json.dumps(response)
        (self.control / f"{event}.json").write_text(text)

    def set(self, event: str, kind: str, value: object) -> None:
        (self.control / f"{event}.{kind}").write_text(str(value))

    def clear(self, event: str) -> None:
        for path in self.control.glob(f"{event}.*"):
            path.unlink()

    def events(self, event: str, upload_id: str | None = None) -> list[dict[str, Any]]:
        records = [json.loads(p.read_text()) for p in sorted(self.events_dir.glob(f"{event}-*"))]
        if upload_id is not None:
            records = [r for r in records if r["request"]["Event"]["Upload"]["ID"] == upload_id]
        return records

    def wait(
        self, event: str, count: int = 1, upload_id: str | None = None, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        return wait_for(
            lambda: (found := self.events(event, upload_id)) and len(found) >= count and found,
            timeout,
            f"{count} {event} event(s)",
        )


def upload_id(location: str) -> str:
    return location.rsplit("/", 1)[1]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def deliveries(server: Any) -> list[dict[str, Any]]:
    with sqlite3.connect(server.upload_dir / "tusserver.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM hook_deliveries ORDER BY id")]


def slow_patch(
    port: int, path: str, total: int, piece: int, pause: float, offset: int = 0
) -> tuple[int, dict[str, str], bytes]:
    """A PATCH whose body trickles in; returns as soon as the server answers (even early)."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTus-Resumable: 1.0.0\r\n"
        f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {total}\r\n\r\n"
    )
    sock.sendall(head.encode())
    received = b""
    sent = 0
    sock.settimeout(pause)  # paces the body: wait `pause` for an answer between pieces
    try:
        while sent < total:
            n = min(piece, total - sent)
            sock.sendall(b"x" * n)
            sent += n
            try:
                received = sock.recv(65536)
            except TimeoutError:
                continue
            if received:
                break
    except OSError:
        pass  # the server answered early and closed: read what it said
    sock.settimeout(10)
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    head_bytes, _, body = received.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    sock.close()
    return status, headers, body


@pytest.fixture
def box(tmp_path: Path) -> HookBox:
    return HookBox(tmp_path / "box")


# -- file hooks ------------------------------------------------------------------------------


def test_every_event_fires_with_tusd_payload(make_server, box, client):
    """All seven tusd events reach file hooks with tusd's JSON schema and TUS_* variables."""
    server = make_server(
        "--hooks-dir", str(box.hooks), "--hooks-enabled-events", ALL_EVENTS,
        "--progress-hooks-interval", "0.1s",
    )  # fmt: skip
    box.answer("pre-finish", {"HTTPResponse": {"Header": {"X-Finished-By": "hook"}}})
    meta = f"filename {b64('report.csv')},kind {b64('zoë')}"
    location = create_upload(client, server.url, 11, {"Upload-Metadata": meta, "X-Trace": "t1"})
    uid = upload_id(location)

    [pre] = box.wait("pre-create")
    request = pre["request"]
    assert request["Type"] == "pre-create"
    upload = request["Event"]["Upload"]
    assert upload == {
        "ID": "",
        "Size": 11,
        "SizeIsDeferred": False,
        "Offset": 0,
        "MetaData": {"filename": "report.csv", "kind": "zoë"},
        "IsPartial": False,
        "IsFinal": False,
        "PartialUploads": None,
        "Storage": None,
    }
    http = request["Event"]["HTTPRequest"]
    assert http["Method"] == "POST"
    assert http["URI"] == "/files/"
    host, port = http["RemoteAddr"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    assert http["Header"]["X-Trace"] == ["t1"]
    assert http["Header"]["Upload-Length"] == ["11"]
    assert http["Header"]["Host"] == [f"127.0.0.1:{server.port}"]
    assert pre["env"].items() >= {"TUS_ID": "", "TUS_SIZE": "11", "TUS_OFFSET": "0"}.items()
    assert Path(pre["cwd"]).resolve() == box.hooks.resolve()

    [created] = box.wait("post-create", upload_id=uid)
    stored = created["request"]["Event"]["Upload"]
    assert stored["Storage"] == {
        "Type": "filestore",
        "Path": str(server.upload_dir.resolve() / uid),
    }
    assert created["env"]["TUS_ID"] == uid

    assert patch(client, location, 0, b"hello ").status_code == 204
    response = patch(client, location, 6, b"world")
    assert response.status_code == 204
    assert response.headers["X-Finished-By"] == "hook"  # pre-finish answer merged into the 204

    [pre_finish] = box.wait("pre-finish", upload_id=uid)
    [post_finish] = box.wait("post-finish", upload_id=uid)
    for record in (pre_finish, post_finish):
        assert record["request"]["Event"]["Upload"]["Offset"] == 11
        assert record["request"]["Event"]["HTTPRequest"]["Method"] == "PATCH"
        assert record["request"]["Event"]["HTTPRequest"]["URI"] == f"/files/{uid}"
        tus_env = {"TUS_ID": uid, "TUS_SIZE": "11", "TUS_OFFSET": "11"}
        assert record["env"].items() >= tus_env.items()
    assert pre_finish["started"] <= post_finish["started"]
    offsets = [r["request"]["Event"]["Upload"]["Offset"] for r in box.wait("post-receive", 2, uid)]
    assert offsets == sorted(offsets) and offsets[-1] == 11 and set(offsets) <= {6, 11}

    assert client.delete(location, headers=TUS).status_code == 204
    [pre_term] = box.wait("pre-terminate", upload_id=uid)
    [post_term] = box.wait("post-terminate", upload_id=uid)
    assert pre_term["request"]["Event"]["HTTPRequest"]["Method"] == "DELETE"
    assert post_term["request"]["Event"]["Upload"]["Offset"] == 11
    assert not box.events("pre-access")  # opt-in only
    assert [d["state"] for d in deliveries(server)] == ["done"]


def test_default_events_are_tusds(make_server, box, client):
    """Without --hooks-enabled-events, tusd's default set fires: not pre-finish/pre-terminate."""
    server = make_server("--hooks-dir", str(box.hooks))
    location = create_upload(client, server.url, 2)
    uid = upload_id(location)
    assert patch(client, location, 0, b"ok").status_code == 204
    assert client.delete(location, headers=TUS).status_code == 204
    for event in ("pre-create", "post-create", "post-receive", "post-finish", "post-terminate"):
        box.wait(event, upload_id=uid if event != "pre-create" else None)
    assert not box.events("pre-finish") and not box.events("pre-terminate")


def test_hook_scripts_never_see_the_admin_token(make_server, box, client, monkeypatch):
    """The admin token (from TUSSERVER_ADMIN_TOKEN, or in the settings handed to --workers)
    is the server's secret: hook scripts get the rest of its environment, not that."""
    monkeypatch.setenv("TUSSERVER_ADMIN_TOKEN", "t0ken-for-the-dashboard-only")
    server = make_server("--hooks-dir", str(box.hooks), "--workers", "2")
    location = create_upload(client, server.url, 2)
    assert patch(client, location, 0, b"ok").status_code == 204
    [finished] = box.wait("post-finish", upload_id=upload_id(location))
    env = finished["env"]
    assert env["PATH"] and env["TUS_ID"] == upload_id(location)
    assert env["TUSSERVER_ADMIN_TOKEN"] is None and env["TUSSERVER_SETTINGS_JSON"] is None


def test_shipped_pre_create_and_post_finish_scripts(make_server, monkeypatch, tmp_path, client):
    """The ready-to-use hooks/ scripts: extension and size rules from env, post-finish log."""
    log_file = tmp_path / "finished.jsonl"
    monkeypatch.setenv("HOOK_ALLOWED_EXTENSIONS", ".csv, tsv")
    monkeypatch.setenv("HOOK_MAX_SIZE", "100")
    monkeypatch.setenv("HOOK_LOG_FILE", str(log_file))
    server = make_server("--hooks-dir", str(ROOT / "hooks"))

    def post(name: str, length: int) -> httpx.Response:
        headers = {**TUS, "Upload-Length": str(length), "Upload-Metadata": f"filename {b64(name)}"}
        return client.post(server.url, headers=headers)

    refused = post("notes.txt", 10)
    assert refused.status_code == 400
    assert refused.headers["Content-Type"] == "application/json"
    assert "file type not allowed" in refused.json()["error"]
    too_big = post("data.csv", 101)
    assert too_big.status_code == 413 and "larger than 100" in too_big.json()["error"]
    assert post("DATA.TSV", 3).status_code == 201
    ok = post("data.csv", 4)
    assert ok.status_code == 201
    assert patch(client, ok.headers["Location"], 0, b"a,b\n").status_code == 204
    line = wait_for(lambda: log_file.exists() and log_file.read_text(), 10, "post-finish log")
    summary = json.loads(line)
    assert summary["id"] == upload_id(ok.headers["Location"]) and summary["size"] == 4
    assert Path(summary["path"]).read_bytes() == b"a,b\n"
    assert "pre-create: rejected: file type not allowed" in server.log()


def test_change_file_info_sets_id_and_metadata(make_server, box, client):
    """pre-create ChangeFileInfo: the new ID is used in Location, metadata is replaced;
    an invalid ID is refused (500, nothing created), a taken ID gets 409."""
    server = make_server("--hooks-dir", str(box.hooks), "--hooks-enabled-events", "pre-create")
    box.answer(
        "pre-create",
        {"ChangeFileInfo": {"ID": "project-7_file-1", "MetaData": {"owner": "ann", "n": "1"}}},
    )
    location = create_upload(client, server.url, 3, {"Upload-Metadata": f"filename {b64('a')}"})
    assert location == f"{server.url}project-7_file-1"
    head = client.head(location, headers=TUS)
    assert head.status_code == 200
    pairs = dict(p.split(" ") for p in head.headers["Upload-Metadata"].split(","))
    assert {k: base64.b64decode(v).decode() for k, v in pairs.items()} == {"owner": "ann", "n": "1"}
    assert (server.upload_dir / "project-7_file-1").exists()

    taken = client.post(server.url, headers={**TUS, "Upload-Length": "1"})
    assert taken.status_code == 409

    box.answer("pre-create", {"ChangeFileInfo": {"ID": "../../escape"}})
    bad = client.post(server.url, headers={**TUS, "Upload-Length": "1"})
    assert bad.status_code == 500
    assert not (server.upload_dir.parent / "escape").exists()
    assert "invalid upload ID" in server.log()


def test_pre_create_rejection_and_failures(make_server, box, client):
    """RejectUpload gives tusd's 400 merged with the hook's HTTPResponse; a failing blocking
    hook gives 500 with a generic body (details only in the log); failing post-* hooks do
    not affect the request."""
    server = make_server("--hooks-dir", str(box.hooks), "--hooks-enabled-events", ALL_EVENTS)
    box.answer("pre-create", {"RejectUpload": True})
    plain = client.post(server.url, headers={**TUS, "Upload-Length": "1"})
    assert plain.status_code == 400
    assert plain.text == "ERR_UPLOAD_REJECTED: upload creation has been rejected by server\n"

    box.answer(
        "pre-create",
        {
            "RejectUpload": True,
            "HTTPResponse": {
                "StatusCode": 403,
                "Body": '{"message":"quota exceeded"}',
                "Header": {"Content-Type": "application/json", "X-Quota": "0"},
            },
        },
    )
    custom = client.post(server.url, headers={**TUS, "Upload-Length": "1"})
    assert custom.status_code == 403
    assert custom.text == '{"message":"quota exceeded"}'
    assert custom.headers["X-Quota"] == "0" and custom.headers["Tus-Resumable"] == "1.0.0"

    box.clear("pre-create")
    box.set("pre-create", "exit", 3)
    failed = client.post(server.url, headers={**TUS, "Upload-Length": "1"})
    assert failed.status_code == 500
    assert "secret detail" not in failed.text and "pre-create hook failed" in failed.text
    wait_for(lambda: "secret detail for the log only" in server.log(), 5, "hook stderr in log")
    assert "exited with code 3" in server.log()

    box.clear("pre-create")
    box.answer("pre-create", "this is not json")
    assert client.post(server.url, headers={**TUS, "Upload-Length": "1"}).status_code == 500
    box.answer("pre-create", {"HTTPResponse": {"Header": {"X-Bad": "a\r\nSet-Cookie: x=1"}}})
    assert client.post(server.url, headers={**TUS, "Upload-Length": "1"}).status_code == 500
    box.clear("pre-create")

    for event in ("post-create", "post-receive", "post-finish"):
        box.set(event, "exit", 1)
    location = create_upload(client, server.url, 1)
    assert patch(client, location, 0, b"x").status_code == 204
    box.wait("post-finish", upload_id=upload_id(location))

    box.set("pre-finish", "exit", 1)  # the upload is complete anyway; post-finish still fires
    location = create_upload(client, server.url, 1)
    assert patch(client, location, 0, b"y").status_code == 500
    assert client.head(location, headers=TUS).headers["Upload-Offset"] == "1"
    box.wait("post-finish", upload_id=upload_id(location))


def test_slow_and_timed_out_hooks(make_server, box, client):
    """A slow post-finish does not delay the PATCH that finished the upload; a pre-create
    running past --hooks-timeout is killed and the request fails with 500 promptly."""
    server = make_server(
        "--hooks-dir", str(box.hooks), "--hooks-enabled-events", "pre-create,post-finish",
        "--hooks-timeout", "1s",
    )  # fmt: skip
    box.set("post-finish", "sleep", 5)
    location = create_upload(client, server.url, 2)
    started = time.monotonic()
    assert patch(client, location, 0, b"ab").status_code == 204
    assert time.monotonic() - started < 2.5, "post-finish must not delay the response"
    wait_for(lambda: list(box.started_dir.glob("post-finish-*")), 5, "post-finish running")

    box.set("pre-create", "sleep", 30)
    started = time.monotonic()
    response = client.post(server.url, headers={**TUS, "Upload-Length": "1"})
    elapsed = time.monotonic() - started
    assert response.status_code == 500
    assert elapsed < 5, elapsed
    assert "timed out after 1s" in server.log()
    sizes = [r["request"]["Event"]["Upload"]["Size"] for r in box.events("pre-create")]
    assert sizes == [2], "the killed hook never got to record anything"


PROGRESS_PLUGIN = """\
import pathlib, time

OUT = pathlib.Path({out!r})


class Progress:
    async def post_receive(self, request):
        with OUT.open("a") as out:
            out.write(f"{{time.monotonic()}} {{request.event.upload.offset}}\\n")
"""


def test_post_receive_throttled(make_server, monkeypatch, tmp_path, client):
    """post-receive fires at most every --progress-hooks-interval per upload, also across
    consecutive PATCHes, with the bytes received so far and finally the full offset."""
    out = tmp_path / "progress.txt"
    (tmp_path / "progress_plugin.py").write_text(PROGRESS_PLUGIN.format(out=str(out)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(ROOT)]))
    interval = 0.3
    server = make_server(
        "--hooks-plugin", "progress_plugin:Progress", "--progress-hooks-interval", f"{interval}s"
    )
    location = create_upload(client, server.url, 3000)
    path = "/files/" + upload_id(location)
    status, _, _ = slow_patch(server.port, path, 2000, 100, 0.05)  # about 1 s of body
    assert status == 204
    assert patch(client, location, 2000, b"y" * 1000).status_code == 204  # right after

    def records() -> list[tuple[float, int]]:
        lines = out.read_text().splitlines() if out.exists() else []
        return [(float(t), int(o)) for t, o in (line.split() for line in lines)]

    wait_for(lambda: records() and records()[-1][1] == 3000, 5, "final post-receive")
    times, offsets = zip(*records(), strict=True)
    assert list(offsets) == sorted(offsets) and 0 < offsets[0] < 2000 and len(offsets) >= 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= interval - 0.05, gaps


def test_stop_upload(make_server, box, client):
    """post-receive StopUpload stops the running PATCH with tusd's 400 merged with the hook's
    HTTPResponse, and terminates the upload (post-terminate fires)."""
    server = make_server("--hooks-dir", str(box.hooks), "--progress-hooks-interval", "0.2s")
    box.answer(
        "post-receive",
        {"StopUpload": True, "HTTPResponse": {"StatusCode": 410, "Body": "project deleted"}},
    )
    victim = create_upload(client, server.url, 100_000)
    started = time.monotonic()
    status, _, body = slow_patch(server.port, "/files/" + upload_id(victim), 100_000, 500, 0.05)
    assert status == 410 and body == b"project deleted"
    assert time.monotonic() - started < 8, "stopped long before the 10 s body would end"
    assert client.head(victim, headers=TUS).status_code in (404, 410)
    box.wait("post-terminate", upload_id=upload_id(victim))
    assert not (server.upload_dir / upload_id(victim)).exists()

    box.answer("post-receive", {"StopUpload": True})
    plain = create_upload(client, server.url, 100_000)
    status, _, body = slow_patch(server.port, "/files/" + upload_id(plain), 100_000, 500, 0.05)
    assert status == 400 and body == b"ERR_UPLOAD_STOPPED: upload has been stopped by server\n"


def test_reject_termination(make_server, box, client):
    """pre-terminate RejectTermination refuses the DELETE (tusd's 400) and keeps the upload."""
    server = make_server("--hooks-dir", str(box.hooks), "--hooks-enabled-events", ALL_EVENTS)
    location = create_upload(client, server.url, 5)
    box.answer("pre-terminate", {"RejectTermination": True})
    refused = client.delete(location, headers=TUS)
    assert refused.status_code == 400
    assert refused.text.startswith("ERR_UPLOAD_TERMINATION_REJECTED")
    assert client.head(location, headers=TUS).status_code == 200
    assert not box.events("post-terminate")
    box.clear("pre-terminate")
    assert client.delete(location, headers=TUS).status_code == 204
    assert client.head(location, headers=TUS).status_code == 410


PRE_ACCESS_SCRIPT = """\
#!{python}
import json, sys
request = json.load(sys.stdin)
auth = request["Event"]["HTTPRequest"]["Header"].get("Authorization", [""])[0]
if auth != "Bearer good":
    json.dump({{"RejectAccess": True, "HTTPResponse": {{"StatusCode": 401, "Body": "who are you?",
               "Header": {{"WWW-Authenticate": "Bearer"}}}}}}, sys.stdout)
else:
    method = request["Event"]["HTTPRequest"]["Method"]
    json.dump({{"HTTPResponse": {{"Header": {{"X-Access": method}}}}}}, sys.stdout)
"""


def test_pre_access_authorises_every_request(make_server, tmp_path, client):
    """Beyond tusd: pre-access (opt-in) can refuse HEAD, PATCH, GET and DELETE."""
    hooks = tmp_path / "access-hooks"
    hooks.mkdir()
    (hooks / "pre-access").write_text(PRE_ACCESS_SCRIPT.format(python=sys.executable))
    (hooks / "pre-access").chmod(0o755)
    server = make_server(
        "--hooks-dir", str(hooks), "--hooks-enabled-events", "pre-create,pre-access"
    )
    good = {**TUS, "Authorization": "Bearer good"}
    location = create_upload(client, server.url, 3)  # creation is pre-create's business

    head = client.head(location, headers=TUS)
    assert head.status_code == 401 and head.headers["WWW-Authenticate"] == "Bearer"
    refused = patch(client, location, 0, b"abc")
    assert refused.status_code == 401 and refused.text == "who are you?"
    assert client.head(location, headers=good).headers["Upload-Offset"] == "0"
    granted = patch(client, location, 0, b"abc", Authorization="Bearer good")
    assert granted.status_code == 204 and granted.headers["X-Access"] == "PATCH"
    assert client.get(location).status_code == 401
    download = client.get(location, headers={"Authorization": "Bearer good"})
    assert download.status_code == 200 and download.content == b"abc"
    assert client.delete(location, headers=TUS).status_code == 401
    assert client.delete(location, headers=good).status_code == 204
    assert client.head(location, headers=good).status_code == 410  # gone: no hook needed
    assert client.head(server.url + "unknown", headers=TUS).status_code == 404


TUSD_USER_PRE_CREATE = """\
#!/bin/sh
# Written for tusd from its hooks documentation: read the hook request on stdin,
# reject uploads without a project_id, answer in tusd's response schema.
request=$(cat)
case "$request" in
  *'"project_id"'*) echo "pre-create ok for size $TUS_SIZE" >&2 ;;
  *) cat <<'JSON'
{"RejectUpload": true,
 "HTTPResponse": {"StatusCode": 400, "Body": "{\\"message\\":\\"no project\\"}",
                  "Header": {"Content-Type": "application/json"}}}
JSON
  ;;
esac
"""

TUSD_USER_POST_FINISH = """\
#!{python}
# Written for tusd: copy the finished file (Storage.Path) next to a JSON sidecar.
import json, os, shutil, sys
hook = json.load(sys.stdin)
upload = hook["Event"]["Upload"]
assert hook["Type"] == "post-finish" and upload["ID"] == os.environ["TUS_ID"]
target = os.path.join("..", "archive")
os.makedirs(target, exist_ok=True)
shutil.copy(upload["Storage"]["Path"], os.path.join(target, upload["ID"]))
with open(os.path.join(target, upload["ID"] + ".json"), "w") as out:
    json.dump({{"size": upload["Size"], "meta": upload["MetaData"],
               "client": hook["Event"]["HTTPRequest"]["RemoteAddr"]}}, out)
"""


def test_hooks_written_for_tusd_work_unchanged(make_server, tmp_path, client):
    """Scripts written only against tusd's documented contract (sh and python) just work."""
    hooks = tmp_path / "tusd-hooks"
    hooks.mkdir()
    (hooks / "pre-create").write_text(TUSD_USER_PRE_CREATE)
    (hooks / "post-finish").write_text(TUSD_USER_POST_FINISH.format(python=sys.executable))
    for script in hooks.iterdir():
        script.chmod(0o755)
    server = make_server("--hooks-dir", str(hooks))
    refused = client.post(server.url, headers={**TUS, "Upload-Length": "4"})
    assert refused.status_code == 400 and refused.json() == {"message": "no project"}
    meta = {"Upload-Metadata": f"project_id {b64('42')}"}
    location = create_upload(client, server.url, 4, meta)
    assert patch(client, location, 0, b"data").status_code == 204
    sidecar = tmp_path / "archive" / (upload_id(location) + ".json")
    info = json.loads(wait_for(lambda: sidecar.exists() and sidecar.read_text(), 10, "sidecar"))
    assert info["size"] == 4 and info["meta"] == {"project_id": "42"}
    assert (tmp_path / "archive" / upload_id(location)).read_bytes() == b"data"
    assert "pre-create ok for size 4" in server.log()


# -- durable post-finish -----------------------------------------------------------------------


def test_post_finish_retried_after_crash(make_server, box, client):
    """A failed post-finish is recorded and retried after a crash (SIGKILL) until it works."""
    server = make_server(
        "--hooks-dir", str(box.hooks), "--hooks-enabled-events", "post-finish",
        "--hooks-retry-delay", "1h", "--hooks-max-attempts", "3",
    )  # fmt: skip
    box.set("post-finish", "exit", 1)
    location = create_upload(client, server.url, 3)
    uid = upload_id(location)
    assert patch(client, location, 0, b"abc").status_code == 204
    box.wait("post-finish", upload_id=uid)
    wait_for(lambda: deliveries(server)[0]["last_error"], 5, "failed attempt recorded")
    row = deliveries(server)[0]
    assert row["state"] == "pending" and row["attempts"] == 1 and row["lease_until"] is None

    server.kill()
    box.clear("post-finish")  # the receiving side is fixed while the server is down
    server.start()
    wait_for(lambda: deliveries(server)[0]["state"] == "done", 10, "redelivery")
    row = deliveries(server)[0]
    assert row["attempts"] == 2
    records = box.events("post-finish", uid)
    assert len(records) == 2 and records[0]["request"] == records[1]["request"]
    assert "delivered on attempt 2" in server.log()


def test_post_finish_killed_mid_hook_is_redelivered_at_once(make_server, box, client):
    """SIGKILL while a post-finish runs: on start the dead owner's lease is taken over at
    once (its liveness lock is free), not after the lease (here over a minute) runs out."""
    server = make_server(
        "--hooks-dir", str(box.hooks), "--hooks-enabled-events", "post-finish",
        "--hooks-timeout", "1m",
    )  # fmt: skip
    box.set("post-finish", "sleep", 60)
    location = create_upload(client, server.url, 1)
    assert patch(client, location, 0, b"k").status_code == 204
    wait_for(lambda: list(box.started_dir.glob("post-finish-*")), 5, "hook running")
    assert deliveries(server)[0]["lease_until"] > time.time() + 50
    server.kill()
    for marker in box.started_dir.glob("post-finish-*"):  # the orphaned hook process
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(marker.name.rsplit("-", 1)[1]), signal.SIGKILL)
    box.clear("post-finish")
    server.start()
    box.wait("post-finish", upload_id=upload_id(location), timeout=10)
    wait_for(lambda: deliveries(server)[0]["state"] == "done", 5, "done after crash")
    assert deliveries(server)[0]["attempts"] == 2


def test_post_finish_interrupted_by_restart_is_redelivered(make_server, box, client):
    """A post-finish still running at shutdown is released and delivered again on start."""
    server = make_server(
        "--hooks-dir", str(box.hooks), "--hooks-enabled-events", "post-finish",
        "--hooks-timeout", "1m", "--shutdown-timeout", "1s",
    )  # fmt: skip
    box.set("post-finish", "sleep", 60)
    location = create_upload(client, server.url, 1)
    assert patch(client, location, 0, b"z").status_code == 204
    wait_for(lambda: list(box.started_dir.glob("post-finish-*")), 5, "hook running")
    box.clear("post-finish")
    server.restart()  # SIGTERM while the hook sleeps: it is killed, the delivery released
    box.wait("post-finish", upload_id=upload_id(location))
    wait_for(lambda: deliveries(server)[0]["state"] == "done", 10, "done after restart")
    assert deliveries(server)[0]["attempts"] == 2
    assert len(box.events("post-finish", upload_id(location))) == 1  # first run never finished


def test_post_finish_gives_up_after_max_attempts(make_server, box, client):
    """Deliveries that keep failing stop after --hooks-max-attempts, visibly (state + log)."""
    server = make_server(
        "--hooks-dir", str(box.hooks), "--hooks-enabled-events", "post-finish",
        "--hooks-retry-delay", "50ms", "--hooks-max-attempts", "3",
    )  # fmt: skip
    box.set("post-finish", "exit", 2)
    location = create_upload(client, server.url, 1)
    assert patch(client, location, 0, b"q").status_code == 204
    wait_for(lambda: deliveries(server)[0]["state"] == "failed", 10, "give up")
    assert deliveries(server)[0]["attempts"] == 3
    assert len(box.events("post-finish", upload_id(location))) == 3
    assert "gave up after 3 attempts" in server.log()
    exposition = client.get(server.origin + "/metrics").text
    labels = 'event="post-finish",kind="file"'
    assert f'tusserver_hook_deliveries_total{{{labels},outcome="gave_up"}} 1.0' in exposition
    assert f'tusserver_hook_deliveries_total{{{labels},outcome="retried"}} 2.0' in exposition
    assert f'tusserver_hook_invocations_total{{{labels},outcome="error"}} 3.0' in exposition


# -- HTTP hooks --------------------------------------------------------------------------------


class Receiver:
    """A threaded HTTP hook endpoint on loopback that records requests and answers per Type."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.answers: dict[str, list[tuple[int, str]]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.requests.append((dict(self.headers), body))
                queue = receiver.answers.get(body["Type"]) or [(200, "")]
                status, text = queue.pop(0) if len(queue) > 1 else queue[0]
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"

    def of(self, event: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
        return [(h, b) for h, b in list(self.requests) if b["Type"] == event]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_http_hooks(make_server, receiver, client):
    """HTTP hooks POST tusd's JSON, forward chosen headers, retry 5xx with backoff, and
    parse the answer like a file hook's (rejection, ChangeFileInfo)."""
    server = make_server(
        "--hooks-http", receiver.url,
        "--hooks-enabled-events", "pre-create,post-create,post-finish",
        "--hooks-http-forward-headers", "Authorization,x-tenant",
        "--hooks-http-retry", "2", "--hooks-http-backoff", "100ms",
    )  # fmt: skip
    receiver.answers["pre-create"] = [
        (200, json.dumps({"RejectUpload": True, "HTTPResponse": {"StatusCode": 422}})),
        (200, json.dumps({"ChangeFileInfo": {"MetaData": {"tenant": "acme"}}})),
    ]
    receiver.answers["post-create"] = [(503, "busy"), (500, "still busy"), (200, "")]
    headers = {**TUS, "Upload-Length": "2", "Authorization": "Bearer t", "X-Tenant": "acme"}
    assert client.post(server.url, headers=headers).status_code == 422
    created = client.post(server.url, headers=headers)
    assert created.status_code == 201
    uid = upload_id(created.headers["Location"])
    assert patch(client, created.headers["Location"], 0, b"hi").status_code == 204

    wait_for(lambda: len(receiver.of("post-create")) == 3, 10, "post-create retries")
    wait_for(lambda: receiver.of("post-finish"), 10, "post-finish")
    sent_headers, body = receiver.of("pre-create")[0]
    assert sent_headers["Content-Type"] == "application/json"
    assert sent_headers["Authorization"] == "Bearer t" and sent_headers["x-tenant"] == "acme"
    assert body["Event"]["Upload"]["ID"] == "" and body["Event"]["HTTPRequest"]["Method"] == "POST"
    _, finish = receiver.of("post-finish")[0]
    assert finish["Event"]["Upload"]["ID"] == uid
    assert finish["Event"]["Upload"]["MetaData"] == {"tenant": "acme"}
    wait_for(lambda: [d["state"] for d in deliveries(server)] == ["done"], 5, "delivered")


# -- Python plugins ----------------------------------------------------------------------------

PLUGIN = """\
import json
import pathlib

from tusserver.hooks import HookRequest, HookResponse, HTTPResponse

OUT = pathlib.Path({out!r})


class Plugin:
    async def pre_create(self, request: HookRequest) -> HookResponse | None:
        assert isinstance(request, HookRequest)
        name = request.event.upload.metadata.get("filename", "")
        if name.endswith(".exe"):
            return HookResponse(reject_upload=True, http_response=HTTPResponse(415, "no exe"))
        return None

    async def post_finish(self, request: HookRequest) -> None:
        upload = request.event.upload
        method = request.event.http_request.method
        line = {{"id": upload.id, "offset": upload.offset, "method": method,
                "path": upload.storage["Path"]}}
        with OUT.open("a") as out:
            out.write(json.dumps(line) + "\\n")

    def pre_finish(self, request):  # a plain function runs in a thread; dict answers work too
        return {{"HTTPResponse": {{"Header": {{"X-Plugin": "sync"}}}}}}
"""


def test_python_plugin(make_server, monkeypatch, tmp_path, client):
    """--hooks-plugin module:object gets typed objects and answers with them (or dicts)."""
    out = tmp_path / "plugin-out.jsonl"
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "my_tus_plugin.py").write_text(PLUGIN.format(out=str(out)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(plugin_dir), str(ROOT)]))
    server = make_server(
        "--hooks-plugin", "my_tus_plugin:Plugin",
        "--hooks-enabled-events", "pre-create,pre-finish,post-finish",
    )  # fmt: skip
    exe = client.post(
        server.url,
        headers={**TUS, "Upload-Length": "1", "Upload-Metadata": f"filename {b64('x.exe')}"},
    )
    assert exe.status_code == 415 and exe.text == "no exe"
    location = create_upload(client, server.url, 2)
    finish = patch(client, location, 0, b"ok")
    assert finish.status_code == 204 and finish.headers["X-Plugin"] == "sync"
    line = wait_for(lambda: out.exists() and out.read_text(), 10, "plugin post-finish")
    record = json.loads(line)
    assert record == {
        "id": upload_id(location),
        "offset": 2,
        "method": "PATCH",
        "path": str(server.upload_dir.resolve() / upload_id(location)),
    }


def test_unknown_event_name_is_refused_at_startup(tmp_path):
    """A typo in --hooks-enabled-events stops the server instead of silently ignoring it."""
    from conftest import ServerProcess

    server = ServerProcess(tmp_path / "u", "--hooks-dir", str(tmp_path), "--hooks-enabled-events",
                           "pre-create,post-finnish")  # fmt: skip
    with pytest.raises(RuntimeError):
        server.start()
    wait_for(lambda: "post-finnish" in server.log(), 5, "error in log")


def test_concatenation_events(make_server, box, client):
    """Partial and final uploads carry IsPartial/IsFinal/PartialUploads, as in tusd; the final
    gets exactly one post-finish when it is assembled."""
    server = make_server("--hooks-dir", str(box.hooks))
    partials = []
    for data in (b"abc", b"de"):
        location = create_upload(client, server.url, len(data), {"Upload-Concat": "partial"})
        assert patch(client, location, 0, data).status_code == 204
        partials.append(location)
    ids = [upload_id(p) for p in partials]
    final = client.post(server.url, headers={**TUS, "Upload-Concat": "final;" + " ".join(partials)})
    assert final.status_code == 201
    final_id = upload_id(final.headers["Location"])
    for pid in ids:
        [done] = box.wait("post-finish", upload_id=pid)
        assert done["request"]["Event"]["Upload"]["IsPartial"] is True
    [created] = [r for r in box.wait("pre-create", 3) if r["request"]["Event"]["Upload"]["IsFinal"]]
    assert created["request"]["Event"]["Upload"]["PartialUploads"] == ids
    [finished] = box.wait("post-finish", upload_id=final_id)
    upload = finished["request"]["Event"]["Upload"]
    assert upload["IsFinal"] is True and upload["PartialUploads"] == ids
    assert upload["Offset"] == upload["Size"] == 5
    assert Path(upload["Storage"]["Path"]).read_bytes() == b"abcde"
    assert len(box.events("post-finish", final_id)) == 1


def test_example_http_receiver(make_server, monkeypatch, tmp_path, client):
    """hooks/http_receiver.py works as shipped: it logs every event and applies pre-create."""
    from conftest import free_port, wait_listening

    monkeypatch.setenv("HOOK_ALLOWED_EXTENSIONS", ".csv")
    port = free_port()
    log_path = tmp_path / "receiver.log"
    with log_path.open("wb") as log:
        receiver = subprocess.Popen(
            [sys.executable, str(ROOT / "hooks" / "http_receiver.py"), "--port", str(port)],
            stdout=log,
            stderr=subprocess.DEVNULL,
        )
    try:
        wait_listening(port, receiver)
        server = make_server("--hooks-http", f"http://127.0.0.1:{port}/hooks")
        meta = {"Upload-Metadata": f"filename {b64('notes.txt')}"}
        refused = client.post(server.url, headers={**TUS, "Upload-Length": "1", **meta})
        assert refused.status_code == 400 and "not allowed" in refused.json()["error"]
        meta = {"Upload-Metadata": f"filename {b64('data.csv')}"}
        location = create_upload(client, server.url, 1, meta)
        assert patch(client, location, 0, b"1").status_code == 204

        def logged() -> list[dict[str, Any]]:
            return [json.loads(line) for line in log_path.read_text().splitlines()]

        wait_for(lambda: any(e["type"] == "post-finish" for e in logged()), 10, "post-finish")
        types = {e["type"] for e in logged()}
        assert {"pre-create", "post-create", "post-finish"} <= types
    finally:
        receiver.terminate()
        receiver.wait(5)
