"""The IETF resumable-upload draft with the rest of the server: 104 interim responses and how
options and transports change them (--ietf-interim, --behind-proxy, HTTP/1.0, Expect:
100-continue, progress during slow bodies, an app mounted under stock uvicorn), interop 9,
--disable-ietf-draft, --max-size, representation metadata, tus on the same uploads, hooks and
processing, metrics and CORS. The per-version protocol itself is in test_ietf_draft.py.
"""

from __future__ import annotations

import base64
import itertools
import json
import socket
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import (
    TUS,
    ServerFactory,
    ServerProcess,
    create_upload,
    data_files,
    patch,
    wait_for,
)
from ietf_helpers import (
    INTEROP,
    SUPPORTED_NAMES,
    VERSIONS,
    KiB,
    append_headers,
    check_limit,
    creation_headers,
    head,
    payload,
    problem_type,
    says_complete,
    sha256,
)

from conformance.draft_client import Exchange, Reply, request

APP = "https://app.example"


def slow_body(exchange: Exchange, data: bytes, pieces: int, seconds: float) -> None:
    """Send `data` in `pieces` spread over about `seconds` (a long body on purpose)."""
    size = -(-len(data) // pieces)
    for start in range(0, len(data), size):
        exchange.send(data[start : start + size])
        time.sleep(seconds / pieces)


def partial_creation(url: str, version: int, data: bytes) -> Exchange:
    """A creation of an incomplete upload whose Content-Length is len(data), nothing sent."""
    headers = {**creation_headers(version, False), "Content-Length": str(len(data))}
    return Exchange(url, "POST", headers)


def tus_metadata(location: str) -> dict[str, str]:
    """Upload-Metadata as a tus client sees it (HEAD with Tus-Resumable), decoded."""
    response = httpx.head(location, headers=TUS)
    assert response.status_code == 200, response.text
    decoded = {}
    for pair in response.headers.get("Upload-Metadata", "").split(","):
        key, _, value = pair.strip().partition(" ")
        if key:
            decoded[key] = base64.b64decode(value).decode()
    return decoded


# -- 104 (Upload Resumption Supported) and the transport ---------------------------------------


def test_progress_interims_during_slow_bodies(shared_server: ServerProcess) -> None:
    """-03 §4 and §6: during a long creation or append body the server MAY send 104s with
    Upload-Offset (-09 §4.4.2: SHOULD), which "MUST NOT include the Location header field",
    whose offset "MUST NOT be smaller than in previous informational responses", and later
    offset retrievals "MUST NOT receive an upload offset that is less than" it. Interop 3 and
    4 define no such 104s (draft-01, -02): only the creation's one 104.

    The bodies run side by side, each ~2.6 s at ~1.4 MiB/s: the server records a durable
    offset about once a second, of what it has written (in batches of up to 1 MiB), so each
    body sees at least two advancing checkpoints."""
    pieces, piece = 40, 96 * KiB
    total = pieces * piece

    def run(version: int, procedure: str) -> tuple[int, str, Reply, Reply]:
        data = payload(total, 300 + version)
        location = ""
        if procedure == "creation":
            exchange = partial_creation(shared_server.url, version, data)
        else:
            created = request(shared_server.url, "POST", creation_headers(version, False))
            assert created.status == 201, created.text
            location = created.headers["location"]
            headers = {**append_headers(version, 0, False), "Content-Length": str(total)}
            exchange = Exchange(location, "PATCH", headers)
        slow_body(exchange, data, pieces, 2.6)
        reply = exchange.reply()
        assert reply.status in (201, 204), reply.text
        location = reply.headers.get("location") or location
        return version, procedure, reply, head(location, version)

    jobs = [(version, "creation") for version in VERSIONS] + [(5, "append"), (8, "append")]
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: run(*job), jobs))

    for version, procedure, reply, after in results:
        interims = list(reply.interims)
        assert all(interim.status == 104 for interim in interims)
        if procedure == "creation":
            announced = interims.pop(0)
            assert "location" in announced and "upload-offset" not in announced
        if version <= 4:
            assert interims == [], (version, procedure)
            continue
        progress = [int(interim["upload-offset"]) for interim in interims]
        assert len(progress) >= 2, (version, procedure, progress)
        for interim in interims:
            assert "location" not in interim
            assert interim[INTEROP] == str(version)
        assert progress[0] > 0
        assert all(a < b for a, b in itertools.pairwise(progress)), progress
        assert progress[-1] <= total
        assert int(after.headers["upload-offset"]) == total >= progress[-1]


@pytest.mark.parametrize("version", VERSIONS)
def test_expect_100_continue_then_104(shared_server: ServerProcess, version: int) -> None:
    """A creation with `Expect: 100-continue` gets its 100 (Continue) first and then the 104:
    "the server MUST NOT omit the 100 (Continue) response because it has sent an interim
    response with the 104" (-10 §5). Both come before any body byte was sent."""
    data = payload(80 * KiB, 400 + version)
    exchange = Exchange(
        shared_server.url,
        "POST",
        {
            **creation_headers(version, False),
            "Content-Length": str(len(data)),
            "Expect": "100-continue",
        },
    )
    assert exchange.interim().status == 100
    announced = exchange.interim()
    assert announced.status == 104 and announced[INTEROP] == str(version)
    exchange.send(data)
    reply = exchange.reply()
    assert reply.status == 201, reply.text
    assert [interim.status for interim in reply.interims] == [100, 104]
    assert reply.headers["location"] == announced["location"]
    assert reply.headers["upload-offset"] == str(len(data))


@pytest.mark.parametrize("version", [3, 8])
def test_http10_gets_no_104(
    shared_server: ServerProcess, client: httpx.Client, version: int
) -> None:
    """RFC 9110 §15.2: "A server MUST NOT send a 1xx response to an HTTP/1.0 client", so an
    HTTP/1.0 creation gets no 104 (draft-01 §4 "MAY send"; -06 §4.2.2 SHOULD), but the upload
    works: 201 with Location, then an append completes it."""
    data = payload(100 * KiB, 500 + version)
    created = request(
        shared_server.url,
        "POST",
        creation_headers(version, False),
        data[:60000],
        http_version="1.0",
    )
    assert created.status == 201, created.text
    assert created.interims == []
    location = created.headers["location"]
    appended = request(
        location, "PATCH", append_headers(version, 60000, True), data[60000:], http_version="1.0"
    )
    assert appended.interims == []
    assert says_complete(appended.headers, version) is True
    assert sha256(client.get(location).content) == sha256(data)


@pytest.mark.parametrize("version", [4, 8])
def test_chunked_one_shot_creation(
    shared_server: ServerProcess, client: httpx.Client, version: int
) -> None:
    """A complete upload with a chunked body: no Content-Length, so the length is what arrived
    (-02 §4: with `?1` the content is the whole upload; -06 §4.1.3). The 104 comes before the
    body ends."""
    data = payload(200 * KiB, 600 + version)
    exchange = Exchange(shared_server.url, "POST", creation_headers(version, True), chunked=True)
    exchange.send(data[: 50 * KiB])
    announced = exchange.interim()
    assert announced.status == 104
    exchange.send(data[50 * KiB :])
    exchange.finish()
    reply = exchange.reply()
    assert reply.status == 201, reply.text
    assert says_complete(reply.headers, version) is True
    assert reply.headers["upload-offset"] == str(len(data))
    assert sha256(client.get(announced["location"]).content) == sha256(data)


@pytest.mark.parametrize(
    "flags", [("--ietf-interim", "off"), ("--behind-proxy",)], ids=["off", "behind-proxy"]
)
def test_no_104_when_interims_are_off(
    make_server: ServerFactory, client: httpx.Client, flags: tuple[str, ...]
) -> None:
    """--ietf-interim off, and auto behind a proxy (which may take a 104 for the final answer):
    no 104 at all, neither on creation nor for progress during a long body (1.5 s, past the
    server's one-second checkpoint), yet the upload works ("unless the server is not capable
    of sending interim responses", -09 §4.2.2)."""
    server = make_server(*flags)
    data = payload(256 * KiB, 700)
    exchange = partial_creation(server.url, 8, data)
    slow_body(exchange, data, 30, 1.5)
    created = exchange.reply()
    assert created.status == 201, created.text
    assert created.interims == []
    location = created.headers["location"]
    assert says_complete(created.headers, 8) is False
    done = request(location, "PATCH", append_headers(8, len(data), True), b"end")
    assert done.status == 204 and done.interims == []
    assert sha256(client.get(location).content) == sha256(data + b"end")


def test_interims_on_behind_proxy(make_server: ServerFactory) -> None:
    """--ietf-interim on overrides the proxy default: the 104 is sent (-06 §4.2.2), and its
    Location is the client-facing one the proxy forwards, identical to the final response's
    ("all interim and final response messages for the same request MUST contain an identical
    Location value", -10 §4.2.2)."""
    server = make_server("--ietf-interim", "on", "--behind-proxy")
    data = payload(100 * KiB, 701)
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "uploads.example"}
    headers = {**creation_headers(7, False), "Content-Length": str(len(data)), **forwarded}
    exchange = Exchange(server.url, "POST", headers)
    exchange.send(data[: 10 * KiB])
    announced = exchange.interim()
    assert announced.status == 104
    assert announced["location"].startswith("https://uploads.example/files/")
    exchange.send(data[10 * KiB :])
    reply = exchange.reply()
    assert reply.status == 201 and reply.headers["location"] == announced["location"]


def test_mounted_app_without_interims(mounted_app: int, client: httpx.Client) -> None:
    """create_app() mounted in a host app under stock uvicorn, which cannot send a 104: the
    upload still works, the Location points into the mount, and the bytes come back."""
    url = f"http://127.0.0.1:{mounted_app}/api/tus/files/"
    data = payload(200 * KiB, 702)
    created = request(url, "POST", creation_headers(8, False), data[: 100 * KiB])
    assert created.status == 201, created.text
    assert created.interims == []
    location = created.headers["location"]
    assert location.startswith(url) and len(location) > len(url)
    retrieved = head(location, 8)
    assert retrieved.status == 204 and retrieved.headers["upload-offset"] == str(100 * KiB)
    done = request(location, "PATCH", append_headers(8, 100 * KiB, True), data[100 * KiB :])
    assert done.status == 204, done.text
    assert done.headers["upload-complete"] == "?1"
    assert sha256(client.get(location).content) == sha256(data)


# -- which versions are served -----------------------------------------------------------------


def test_interop_9_when_enabled(make_server: ServerFactory, client: httpx.Client) -> None:
    """--ietf-draft-versions 3,4,5,6,7,8,9 serves the provisional interop 9 (draft -12 as
    rebuilt from the editor's copy): 104 with Location and Upload-Limit (§4.2.2), HEAD and GET
    retrieve the offset (§4.3.2), 409 with the correct offset and Upload-Complete: ?0 (§4.4.2),
    and an empty `?1` append to the completed upload replays success (§4.4.2 "can choose to
    replay the final response"), while a non-empty one is an inconsistent length (§7.2)."""
    server = make_server("--ietf-draft-versions", "3,4,5,6,7,8,9")
    data = payload(150 * KiB, 900)
    exchange = partial_creation(server.url, 9, data[: 100 * KiB])
    exchange.send(data[: 10 * KiB])
    announced = exchange.interim()
    assert announced.status == 104 and announced[INTEROP] == "9"
    check_limit(announced.get("upload-limit"), 9)
    exchange.send(data[10 * KiB : 100 * KiB])
    created = exchange.reply()
    assert created.status == 201 and created.headers["upload-complete"] == "?0"
    location = created.headers["location"]

    for method in ("HEAD", "GET"):
        retrieved = request(location, method, {INTEROP: "9"})
        assert retrieved.status == 204, (method, retrieved.text)
        assert retrieved.headers["upload-offset"] == str(100 * KiB)
        assert retrieved.headers["upload-complete"] == "?0"

    mismatch = request(location, "PATCH", append_headers(9, 0, True), b"x")
    assert mismatch.status == 409
    assert mismatch.headers["upload-offset"] == str(100 * KiB)
    assert mismatch.headers["upload-complete"] == "?0"
    assert problem_type(mismatch) == "mismatching-upload-offset"

    done = request(location, "PATCH", append_headers(9, 100 * KiB, True), data[100 * KiB :])
    assert done.status == 204 and done.headers["upload-complete"] == "?1"
    replay = request(location, "PATCH", append_headers(9, len(data), True), b"")
    assert replay.status == 204, replay.text
    assert replay.headers["upload-complete"] == "?1"
    more = request(location, "PATCH", append_headers(9, len(data), True), b"more")
    assert more.status == 400 and problem_type(more) == "inconsistent-upload-length"
    assert sha256(client.get(location).content) == sha256(data)


def test_interop_9_is_not_served_by_default(
    shared_server: ServerProcess, client: httpx.Client
) -> None:
    """Without the opt-in, 9 is an unknown version: no 104 (draft-01 §4.2 … -11 Appendix B
    "MUST NOT" for a mismatching version), an incomplete creation or a HEAD is 400 naming the
    versions served, and a one-shot upload is stored as a plain one (P23)."""
    refused = request(shared_server.url, "POST", creation_headers(9, False), b"part")
    assert refused.status == 400 and refused.interims == []
    assert SUPPORTED_NAMES in refused.text and "9" in refused.text
    plain = request(shared_server.url, "POST", creation_headers(9, True), b"whole")
    assert plain.status == 201 and plain.interims == []
    location = plain.headers["location"]
    assert client.get(location).content == b"whole"
    assert head(location, 9).status == 400


def test_disabled_draft_is_tus_only(make_server: ServerFactory) -> None:
    """--disable-ietf-draft: requests without Tus-Resumable are tus requests of no version,
    412 (tus 1.0 "Tus-Resumable … MUST be included in every request"), and no 104 is sent."""
    server = make_server("--disable-ietf-draft")
    refused = request(server.url, "POST", creation_headers(8, False), b"data")
    assert refused.status == 412 and refused.interims == []
    with httpx.Client() as http:
        location = create_upload(http, server.url, 10)
    assert head(location, 8).status == 412
    assert request(location, "PATCH", append_headers(8, 0, True), b"0123456789").status == 412
    discovery = request(server.url, "OPTIONS", {INTEROP: "8"})
    assert discovery.status in (200, 204) and "upload-limit" not in discovery.headers


def test_max_size(make_server: ServerFactory) -> None:
    """--max-size as the draft sees it: `max-size` in Upload-Limit (-04 §8.2, -06 §4.1.4); a
    creation or append that would go past it is 413 (Content Too Large, -09 §4.1.4 "the
    server MAY respond with 413"), one going past a length the upload declared is 400
    (inconsistent, -05 §6, -06 §4.4.2)."""
    limit = 100_000
    server = make_server("--max-size", str(limit))
    for version in VERSIONS:
        exchange = partial_creation(server.url, version, b"x" * 1000)
        exchange.send(b"x" * 1000)
        created = exchange.reply()
        assert created.status == 201, created.text
        check_limit(created.interims[0].get("upload-limit"), version, max_size=limit)
        check_limit(created.headers.get("upload-limit"), version, max_size=limit)
        location = created.headers["location"]

        too_big = Exchange(
            server.url,
            "POST",
            {**creation_headers(version, True), "Content-Length": str(limit + 1)},
        )
        assert too_big.reply(timeout=10).status == 413  # refused before the body is sent

        past = request(server.url, "POST", creation_headers(version, False), b"y" * (limit + 1))
        assert past.status == 413, (version, past.text)

        append = Exchange(
            location,
            "PATCH",
            {**append_headers(version, 1000, False), "Content-Length": str(limit)},
        )
        refused = append.reply(timeout=10)
        assert refused.status == 413, (version, refused.text)
        assert refused.headers["upload-offset"] == "1000"
        if version >= 6:
            check_limit(refused.headers.get("upload-limit"), version, max_size=limit)
        assert int(head(location, version).headers["upload-offset"]) == 1000

        if version >= 6:
            declared = request(
                server.url, "POST", creation_headers(version, False, **{"Upload-Length": "5000"})
            )
            assert declared.status == 201
            over_length = Exchange(
                declared.headers["location"],
                "PATCH",
                {**append_headers(version, 0, False), "Content-Length": "6000"},
            )
            assert over_length.reply(timeout=10).status == 400
            huge = creation_headers(version, False, **{"Upload-Length": str(limit + 1)})
            assert request(server.url, "POST", huge).status == 413


# -- metadata, tus, hooks, processing ----------------------------------------------------------


def test_representation_metadata(shared_server: ServerProcess, client: httpx.Client) -> None:
    """Content-Type and Content-Disposition on creation are representation metadata (draft-01
    §4, -06 §4.2.1): they become the upload's `filetype`/`filename` (RFC 6266 `filename*`
    in UTF-8 wins over `filename`), and the download serves them. application/partial-upload
    only frames the request and is no file type (P11); tus Upload-Metadata is taken as well."""
    body = b"day,rate\n2024-01-02,1.1\n"
    created = request(
        shared_server.url,
        "POST",
        creation_headers(
            8,
            True,
            **{
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": (
                    "attachment; filename=\"rates.csv\"; filename*=UTF-8''%E2%82%AC%20rates.csv"
                ),
            },
        ),
        body,
    )
    assert created.status == 201, created.text
    location = created.headers["location"]
    download = client.get(location)
    assert download.content == body
    assert download.headers["content-type"].startswith("text/csv")
    assert download.headers["content-disposition"].endswith(
        "filename*=utf-8''%E2%82%AC%20rates.csv"
    )
    assert tus_metadata(location) == {"filetype": "text/csv", "filename": "€ rates.csv"}

    framed = request(
        shared_server.url,
        "POST",
        creation_headers(
            6,
            True,
            **{
                "Content-Type": "application/partial-upload",
                "Upload-Metadata": "filename " + base64.b64encode(b"from-tus.bin").decode(),
            },
        ),
        b"bytes",
    )
    assert framed.status == 201, framed.text
    download = client.get(framed.headers["location"])
    assert download.headers["content-type"] == "application/octet-stream"
    assert 'filename="from-tus.bin"' in download.headers["content-disposition"]
    assert tus_metadata(framed.headers["location"]) == {"filename": "from-tus.bin"}

    plain_name = request(
        shared_server.url,
        "POST",
        creation_headers(
            3,
            True,
            **{
                "Content-Type": "application/pdf",
                "Content-Disposition": 'inline; filename="r.pdf"',
            },
        ),
        b"%PDF-1.4",
    )
    download = client.get(plain_name.headers["location"])
    assert download.headers["content-type"] == "application/pdf"
    assert 'filename="r.pdf"' in download.headers["content-disposition"]


def test_tus_and_ietf_share_uploads(shared_server: ServerProcess, client: httpx.Client) -> None:
    """One upload, two protocols: an IETF-created upload is seen and continued by tus (HEAD
    with Tus-Resumable, PATCH), and a tus-created one is resumed and completed through the draft
    (HEAD -06 §4.3.2 with Upload-Length, PATCH -06 §4.4.2): the same offsets either way."""
    data = payload(120 * KiB, 1000)
    created = request(shared_server.url, "POST", creation_headers(7, False), data[: 40 * KiB])
    ietf_location = created.headers["location"]
    tus_head = client.head(ietf_location, headers=TUS)
    assert tus_head.status_code == 200
    assert tus_head.headers["Upload-Offset"] == str(40 * KiB)
    assert tus_head.headers["Upload-Defer-Length"] == "1"
    continued = patch(client, ietf_location, 40 * KiB, data[40 * KiB : 80 * KiB])
    assert continued.status_code == 204, continued.text
    assert head(ietf_location, 7).headers["upload-offset"] == str(80 * KiB)
    done = request(ietf_location, "PATCH", append_headers(7, 80 * KiB, True), data[80 * KiB :])
    assert done.status == 204 and done.headers["upload-complete"] == "?1"
    assert sha256(client.get(ietf_location).content) == sha256(data)

    tus_location = create_upload(client, shared_server.url, len(data))
    assert patch(client, tus_location, 0, data[: 50 * KiB]).status_code == 204
    retrieved = head(tus_location, 8)
    assert retrieved.status == 204
    assert retrieved.headers["upload-offset"] == str(50 * KiB)
    assert retrieved.headers["upload-length"] == str(len(data))
    assert retrieved.headers["upload-complete"] == "?0"
    resumed = request(tus_location, "PATCH", append_headers(8, 50 * KiB, True), data[50 * KiB :])
    assert resumed.status == 204 and resumed.headers["upload-complete"] == "?1"
    tus_head = client.head(tus_location, headers=TUS)
    assert tus_head.headers["Upload-Offset"] == tus_head.headers["Upload-Length"] == str(len(data))
    assert sha256(client.get(tus_location).content) == sha256(data)


def test_tus_wins_when_both_headers_are_present(
    shared_server: ServerProcess, client: httpx.Client
) -> None:
    """A request with Tus-Resumable is a tus request even with Upload-Draft-Interop-Version (so
    existing tus clients never change behaviour): tus creation rules, no 104."""
    headers = {**TUS, INTEROP: "8", "Upload-Length": "5", "Upload-Complete": "?0"}
    reply = request(shared_server.url, "POST", headers)
    assert reply.status == 201 and reply.interims == []
    assert reply.headers["tus-resumable"] == "1.0.0"
    assert "upload-complete" not in reply.headers
    location = reply.headers["location"]
    assert patch(client, location, 0, b"12345").status_code == 204
    assert client.get(location).content == b"12345"


POST_FINISH = textwrap.dedent(
    """\
    #!{python}
    import json, pathlib, sys
    hook = json.load(sys.stdin)
    out = pathlib.Path({out!r})
    out.mkdir(exist_ok=True)
    upload = hook["Event"]["Upload"]
    (out / (upload["ID"] + ".tmp")).write_text(json.dumps(hook))
    (out / (upload["ID"] + ".tmp")).rename(out / (upload["ID"] + ".json"))
    """
)


def test_post_finish_hook_and_processing(make_server: ServerFactory, tmp_path: Path) -> None:
    """An IETF upload finishes like a tus one: the post-finish file hook (tusd's schema) gets it
    with the filename from Content-Disposition and the file type from Content-Type as
    MetaData, and post-finish processing validates and parses it."""
    hooks, finished = tmp_path / "hooks", tmp_path / "finished"
    hooks.mkdir()
    script = hooks / "post-finish"
    script.write_text(POST_FINISH.format(python=sys.executable, out=str(finished)))
    script.chmod(0o755)
    server = make_server(
        "--hooks-dir", str(hooks), "--hooks-enabled-events", "post-finish",
        "--plugins", "validate,csv",
    )  # fmt: skip
    rows = "".join(f"{i},{i * 3}\n" for i in range(500))
    data = ("id,value\n" + rows).encode()
    extra = {"Content-Type": "text/csv", "Content-Disposition": 'attachment; filename="v.csv"'}
    created = request(server.url, "POST", creation_headers(5, False, **extra), data[:1000])
    assert created.status == 201, created.text
    location = created.headers["location"]
    done = request(location, "PATCH", append_headers(5, 1000, True), data[1000:])
    assert done.status == 201 and done.headers["upload-complete"] == "?1"

    upload_id = location.rsplit("/", 1)[1]
    record = finished / f"{upload_id}.json"
    hook = json.loads(str(wait_for(lambda: record.exists() and record.read_text(), 15, "hook")))
    assert hook["Type"] == "post-finish"
    upload = hook["Event"]["Upload"]
    assert upload["Size"] == upload["Offset"] == len(data)
    assert upload["MetaData"]["filename"] == "v.csv"
    assert upload["MetaData"]["filetype"] == "text/csv"

    def ended() -> dict[str, object] | None:
        doc = httpx.get(location + "/status").json()
        return doc if doc["status"] in ("completed", "failed") else None

    doc = wait_for(ended, 30, "processing")
    assert isinstance(doc, dict) and doc["status"] == "completed", doc
    results = doc["processing"]["results"]
    assert results["validate"]["filename"] == "v.csv"
    assert results["validate"]["digests"]["sha256"] == sha256(data)
    assert results["csv"]["records"] == 500


# -- metrics and CORS --------------------------------------------------------------------------


def test_metrics_protocol_label(make_server: ServerFactory) -> None:
    """tusserver_requests_total and tusserver_uploads_created_total tell the draft's requests
    (Upload-Draft-Interop-Version, no Tus-Resumable) from tus and plain HTTP ones."""
    server = make_server()
    first = request(server.url, "POST", creation_headers(8, False), b"abc")
    request(server.url, "POST", creation_headers(3, True), b"whole")
    location = first.headers["location"]
    assert head(location, 8).status == 204
    assert request(location, "PATCH", append_headers(8, 0, False), b"x").status == 409
    assert request(location, "PATCH", append_headers(8, 3, True), b"def").status == 204
    assert request(location, "GET", {INTEROP: "8"}).status == 200
    with httpx.Client() as http:
        create_upload(http, server.url, 5)
        http.options(server.url, headers={"Origin": APP, "Access-Control-Request-Method": "POST"})
        text = http.get(server.origin + "/metrics").text
    samples = {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines())
        if name and not name.startswith("#")
    }
    requests = "tusserver_requests_total{{method={!r},protocol={!r},status={!r}}}"

    def count(method: str, protocol: str, status: int) -> float:
        key = requests.format(method, protocol, str(status)).replace("'", '"')
        return samples.get(key, 0.0)

    assert count("POST", "ietf-draft", 201) == 2
    assert count("HEAD", "ietf-draft", 204) == 1
    assert count("PATCH", "ietf-draft", 409) == 1
    assert count("PATCH", "ietf-draft", 204) == 1
    assert count("GET", "ietf-draft", 200) == 1
    assert count("POST", "tus", 201) == 1
    assert count("OPTIONS", "http", 200) == 1
    assert samples['tusserver_uploads_created_total{protocol="ietf-draft"}'] == 2
    assert samples['tusserver_uploads_created_total{protocol="tus"}'] == 1


def test_cors_allows_and_exposes_draft_fields(
    shared_server: ServerProcess, client: httpx.Client
) -> None:
    """A browser client of the draft (tus-js-client's ietf-draft protocols) must be allowed to
    send its fields and to read the response fields of every version: Upload-Complete /
    Upload-Incomplete, Upload-Draft-Interop-Version, Upload-Offset, Upload-Length (-05 §8.4,
    -06 §4.1.3), Upload-Limit (-04 §8.2) and Location."""
    fields = {
        "upload-complete",
        "upload-incomplete",
        "upload-draft-interop-version",
        "upload-offset",
        "upload-length",
    }
    preflight = client.options(
        shared_server.url,
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": ", ".join(sorted(fields)),
        },
    )
    assert preflight.status_code == 200
    allowed = {
        h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")
    }
    assert fields <= allowed

    created = request(shared_server.url, "POST", creation_headers(8, False, Origin=APP), b"abc")
    assert created.headers["access-control-allow-origin"] == APP
    exposed = {
        h.strip().lower() for h in created.headers["access-control-expose-headers"].split(",")
    }
    assert fields | {"upload-limit", "location"} <= exposed
    retrieved = head(created.headers["location"], 3, Origin=APP)
    assert "upload-incomplete" in retrieved.headers["access-control-expose-headers"].lower()


def test_refusals_before_anything_is_created(make_server: ServerFactory) -> None:
    """What can be refused up front is refused before the upload exists and before a 104
    invites the body: a ?0 creation whose Content-Length is over --max-size (413, nothing
    created, no 104), a chunked body for an upload declared empty (-05 §4 "If the sizes are
    inconsistent, the server MUST reject the request"), tus's Upload-Concat (a tus 1.0 feature:
    the draft has no concatenation), and methods that never create (-06 §4.2.1 names POST, PUT
    and PATCH; a TRACE override is no creation). Repeated Upload-Draft-Interop-Version fields
    make an invalid Item, answered like an unknown version."""
    server = make_server("--max-size", "1000")
    over = Exchange(server.url, "POST", {**creation_headers(8, False), "Content-Length": "2000"})
    refused = over.reply(timeout=10)
    assert refused.status == 413 and refused.interims == [], refused.headers.fields
    assert "location" not in refused.headers
    empty = Exchange(
        server.url, "POST", creation_headers(7, True, **{"Upload-Length": "0"}), chunked=True
    )
    empty.send(b"hello world")
    empty.finish()
    inconsistent = empty.reply()
    assert inconsistent.status == 400, inconsistent.text
    assert problem_type(inconsistent) == "inconsistent-upload-length"
    assert inconsistent.interims == []
    concat = request(
        server.url, "POST", creation_headers(6, True, **{"Upload-Concat": "partial"}), b"abc"
    )
    assert concat.status == 400 and "Upload-Concat" in concat.text
    trace = request(
        server.url, "POST", {**creation_headers(8, True), "X-HTTP-Method-Override": "TRACE"}, b"x"
    )
    assert trace.status == 405, trace.text
    raw = (  # a field repeated: raw bytes (the client takes a dict)
        "POST /files/ HTTP/1.1\r\nHost: x\r\nUpload-Draft-Interop-Version: 6\r\n"
        "Upload-Draft-Interop-Version: 7\r\nUpload-Complete: ?0\r\nContent-Length: 0\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(raw.encode())
        answer = sock.makefile("rb").read().decode("latin-1")
    assert answer.startswith("HTTP/1.1 400 ") and "104" not in answer.split("\r\n")[0]
    assert "supported versions: 3, 4, 5, 6, 7, 8" in answer
    assert "application/problem+json" in answer  # an unknown version's problem document
    assert data_files(server.upload_dir) == []


def test_append_finishing_a_tus_partial_assembles_its_final(shared_server: ServerProcess) -> None:
    """A tus partial upload completed by a draft append (the same upload, another protocol)
    assembles its tus final at once, as a tus PATCH does (concatenation-unfinished)."""
    with httpx.Client() as http:
        partial = create_upload(http, shared_server.url, 3, {"Upload-Concat": "partial"})
        final = http.post(
            shared_server.url, headers={**TUS, "Upload-Concat": f"final;{partial}"}
        ).headers["Location"]
        appended = request(partial, "PATCH", append_headers(8, 0, True), b"abc")
        assert appended.status == 204, appended.text
        download = http.get(final)
        assert download.status_code == 200 and download.content == b"abc"
