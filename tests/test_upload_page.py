"""The browser upload page at `/`: Uppy (Dashboard + Tus) in headless Chromium against a real
server. A transfer cut mid-body resumes by itself to a byte-identical file; a page reload
resumes from the server's offset; the processing status appears live; limits, flags, the CSP
and the assets are checked. Screenshots go to browser.ARTIFACTS."""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import open_page, screenshot
from conftest import TUS, ServerProcess, data_files, metric, offset_of, wait_for
from netfault import CuttingProxy, SwitchableProxy, close
from playwright.sync_api import Browser, Page, Request, expect

MiB = 1024 * 1024
CSV_ROWS = 640_000  # about 20 MiB
BAD_LINE = 123_457  # the one malformed row (an extra field), as the csv plugin numbers lines
PROCESSING = ("--plugins", "validate,csv", "--validate-allowed-types", "text/csv,text/*")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated 20 MiB CSV (header + CSV_ROWS records) with one malformed row at BAD_LINE."""
    rows = ["id,name,amount,day\n"]
    rows += [f"{i},name {i},{i * 0.25:.2f},2024-05-{i % 28 + 1:02d}\n" for i in range(CSV_ROWS)]
    rows[BAD_LINE - 1] = "oops,too,many,fields,here\n"  # line n is rows[n - 1]
    path = tmp_path_factory.mktemp("csv") / "measurements.csv"
    path.write_text("".join(rows))
    assert path.stat().st_size >= 20 * MiB
    return path


@contextlib.contextmanager
def proxied(proxy: CuttingProxy | SwitchableProxy) -> Iterator[str]:
    """The proxy's origin (the page and its uploads all go through it); closed after."""
    try:
        yield f"http://127.0.0.1:{proxy.port}"
    finally:
        proxy.close()


class CutAndHoldProxy(SwitchableProxy):
    """Cuts the first connection that sends more than `cut_after` request bytes, and is then
    down (every connection closed at once) until `up()`: the client's retries all fail."""

    def __init__(self, target_port: int, cut_after: int):
        self.cut_after = cut_after
        self.cut_done = False
        super().__init__(target_port)

    def _up(self, src: socket.socket, dst: socket.socket) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if not self.cut_done and sent + len(data) > self.cut_after:
                    dst.sendall(data[: self.cut_after - sent])
                    self.cut_done = True
                    self.down()
                    break
                dst.sendall(data)
                sent += len(data)
        close(src, dst)


class TusLog:
    """The tus requests a page sends: (method, url, Upload-Offset header)."""

    def __init__(self, page: Page):
        self.requests: list[tuple[str, str, str | None]] = []
        page.on("request", self._record)

    def _record(self, request: Request) -> None:
        if "/files/" in request.url and request.method in ("POST", "HEAD", "PATCH"):
            offset = request.headers.get("upload-offset")
            self.requests.append((request.method, request.url, offset))

    def methods(self) -> list[str]:
        return [method for method, _, _ in self.requests]

    def patch_offsets(self) -> list[int]:
        return [int(o or 0) for method, _, o in self.requests if method == "PATCH"]


def choose_files(page: Page, *paths: Path) -> None:
    """Add files through Uppy's file input (what "browse files" opens)."""
    page.locator("input.uppy-Dashboard-input").first.set_input_files([str(p) for p in paths])


def start_upload(page: Page, count: int) -> None:
    noun = "file" if count == 1 else "files"
    page.get_by_role("button", name=f"Upload {count} {noun}").click()


def stored_file(server: ServerProcess) -> bytes:
    """The one upload's data file in the server's upload dir."""
    [name] = data_files(server.upload_dir)
    return (server.upload_dir / name).read_bytes()


def settled_upload(server: ServerProcess, http: httpx.Client) -> str | None:
    """The one upload's id once no PATCH is running and some of its bytes are stored."""
    ids = data_files(server.upload_dir)
    if not ids or metric(server, "tusserver_active_uploads"):
        return None
    return ids[0] if offset_of(http, server.url + ids[0]) else None


def test_cut_transfer_resumes_and_processing_shows_live(
    browser: Browser, make_server: Any, big_csv: Path
) -> None:
    """The issue's scenario: a 20 MiB CSV through Uppy, its connection cut mid-body; Uppy
    resumes by itself to a byte-identical file, and the record count and the malformed row's
    line number appear on the page from /events, without a reload."""
    server = make_server(*PROCESSING, "--max-size", "1G")
    data = big_csv.read_bytes()
    proxy = CuttingProxy(server.port, cut_after=6 * MiB)
    with proxied(proxy) as origin, open_page(browser) as (page, problems):
        log = TusLog(page)
        page.goto(origin + "/")
        page.evaluate("window.sameDocument = true")  # gone if the page were reloaded
        choose_files(page, big_csv)
        start_upload(page, 1)
        result = page.locator(".result")
        expect(result.locator(".state")).to_have_text(
            f"Processed: {CSV_ROWS:,} records, 1 malformed row", timeout=60_000
        )
        assert proxy.cut_done.is_set()
        errors = result.get_by_role("table", name="Malformed rows")
        expect(errors.locator("tbody tr")).to_have_count(1)
        expect(errors.locator("tbody td").first).to_have_text(str(BAD_LINE))
        columns = result.get_by_role("table", name=re.compile(r"^Columns"))
        expect(columns.locator("tbody tr")).to_have_text(
            [
                re.compile(r"^id\s*int"),
                re.compile(r"^name\s*text"),
                re.compile(r"^amount\s*float"),
                re.compile(r"^day\s*date"),
            ]
        )
        expect(result.get_by_role("link", name=re.compile("full error report"))).to_be_visible()
        screenshot(page, "upload-page-processed")
        # the cut may show as failed requests (Chromium replays the cut PATCH on a fresh
        # connection with its old offset: 409), nothing else
        assert not problems.page_errors and not problems.csp_violations, problems
        assert page.evaluate("window.sameDocument") is True
    assert log.methods().count("POST") == 1
    offsets = log.patch_offsets()
    assert len(offsets) >= 2 and offsets[0] == 0 and offsets[-1] > 0, log.requests
    assert sha256(stored_file(server)) == sha256(data)


def test_reload_resumes_from_server_offset(browser: Browser, make_server: Any) -> None:
    """Part of a file reaches the server, the page goes away; after a reload the same file,
    chosen again, continues on the same upload URL from the server's offset (tus fingerprint
    in localStorage): a HEAD, then PATCH from that offset, no new POST."""
    server = make_server()
    source = server.upload_dir.parent / "video.bin"
    data = hashlib.sha256(b"seed").digest() * (8 * MiB // 32)
    source.write_bytes(data)
    proxy = CutAndHoldProxy(server.port, cut_after=3 * MiB)
    with proxied(proxy) as origin, open_page(browser) as (page, _):
        page.goto(origin + "/")
        choose_files(page, source)
        start_upload(page, 1)
        with httpx.Client() as http:
            upload_id = str(
                wait_for(lambda: proxy.cut_done and settled_upload(server, http), 15, "the cut")
            )
            kept = offset_of(http, server.url + upload_id)
        assert 0 < kept < len(data)
        page.goto("about:blank")  # the old page and its retry timers are gone
        proxy.up()
        log = TusLog(page)
        page.goto(origin + "/")
        choose_files(page, source)
        start_upload(page, 1)
        expect(page.locator(".result .state")).to_contain_text("Stored", timeout=30_000)
    assert log.methods()[0] == "HEAD" and "POST" not in log.methods(), log.requests
    assert {url.rsplit("/", 1)[1] for _, url, _ in log.requests} == {upload_id}
    assert log.patch_offsets()[0] == kept
    assert stored_file(server) == data


def test_several_files_without_processing_and_no_page_problems(
    browser: Browser, shared_server: ServerProcess, tmp_path: Path
) -> None:
    """Three files at once on a server without --plugins: each is stored byte for byte, the
    page says plainly that processing is off, and nothing went wrong in the page (no console
    error, no uncaught exception, no CSP violation)."""
    files = {}
    for i, name in enumerate(["a.txt", "b.json", "c.csv"]):
        path = tmp_path / name
        path.write_bytes(hashlib.sha256(name.encode()).digest() * (1000 * (i + 1)))
        files[name] = path
    with open_page(browser) as (page, problems):
        page.goto(shared_server.origin + "/")
        expect(page.locator("#limit-processing")).to_contain_text("off")
        choose_files(page, *files.values())
        start_upload(page, 3)
        results = page.locator(".result")
        expect(results).to_have_count(3, timeout=30_000)
        for i in range(3):
            expect(results.nth(i).locator(".state")).to_have_text(
                "Stored on the server. Processing is off on this server: nothing is checked."
            )
        ids = results.evaluate_all(
            "items => items.map(i => [i.dataset.uploadId, i.querySelector('h3').textContent])"
        )
        screenshot(page, "upload-page-several-files")
        assert not problems.all(), problems
    with httpx.Client() as http:
        for upload_id, name in ids:
            got = http.get(shared_server.url + upload_id)
            assert got.content == files[name].read_bytes(), name


def test_page_shows_limits_is_accessible_and_has_a_strict_csp(
    browser: Browser, make_server: Any
) -> None:
    """--max-size and the validate plugin's allowed types are on the page; the CSP header is
    there and really enforced (an injected inline script is refused and reported); the page
    fits a phone-width screen and its skip link works from the keyboard."""
    server = make_server(
        "--max-size",
        "5G",
        "--plugins",
        "validate",
        "--validate-allowed-types",
        "text/csv,application/json",
    )
    response = httpx.get(server.origin + "/")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    with open_page(browser, viewport={"width": 390, "height": 844}) as (page, problems):
        page.goto(server.origin + "/")
        expect(page.locator("#limit-size")).to_have_text("5 GiB")
        expect(page.locator("#limit-types")).to_have_text("text/csv, application/json")
        expect(page.locator("#limit-processing")).to_contain_text("on: validate")
        expect(page.locator(".uppy-Dashboard-note")).to_have_text(
            "Accepted: text/csv, application/json (checked on the server)"
        )
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Skip to the uploader")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("main")).to_be_focused()
        screenshot(page, "upload-page-phone")
        assert not problems.all(), problems
        page.evaluate(
            "document.body.append(Object.assign(document.createElement('script'),"
            " {textContent: 'window.injected = 1'}))"
        )
        page.wait_for_function("window.cspViolations > 0")
        assert problems.csp_violations[0].startswith("script-src-elem blocked inline")
        assert page.evaluate("window.injected") is None


def test_web_ui_flags(make_server: Any) -> None:
    """--disable-web-ui: `/` is 404 (the assets stay, the dashboard uses them);
    --web-ui-path /upload/ moves the page."""
    off = make_server("--disable-web-ui")
    assert httpx.get(off.origin + "/").status_code == 404
    assert httpx.get(off.origin + "/_tusserver/style.css").status_code == 200
    moved = make_server("--web-ui-path", "/upload/")
    assert httpx.get(moved.origin + "/").status_code == 404
    page = httpx.get(moved.origin + "/upload/")
    assert page.status_code == 200 and 'id="uploader"' in page.text
    assert 'data-endpoint="/files/"' in page.text


def test_assets_compressed_revalidated_and_confined(shared_server: ServerProcess) -> None:
    """Assets come from the package: gzip when accepted, an ETag per representation (304 on
    revalidation), `no-cache`, JavaScript's media type for the module; nothing outside
    static/ and vendor/ is served."""
    base = shared_server.origin + "/_tusserver/"
    package = resources.files("tusserver.web")
    bundle = package.joinpath("vendor/uppy.min.mjs").read_bytes()
    with httpx.Client() as http:
        packed = http.get(base + "vendor/uppy.min.mjs", headers={"Accept-Encoding": "gzip"})
        assert packed.headers["content-encoding"] == "gzip"
        assert packed.headers["content-type"].startswith("text/javascript")
        assert packed.headers["cache-control"] == "no-cache"
        assert int(packed.headers["content-length"]) < len(bundle) // 2
        assert packed.content == bundle  # httpx decodes it
        plain = http.get(base + "vendor/uppy.min.mjs", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.content == bundle
        assert plain.headers["etag"] != packed.headers["etag"]
        again = http.get(
            base + "vendor/uppy.min.mjs",
            headers={"Accept-Encoding": "gzip", "If-None-Match": packed.headers["etag"]},
        )
        assert again.status_code == 304 and not again.content
        script = http.get(base + "upload.js")
        assert script.content == package.joinpath("static/upload.js").read_bytes()
        hidden = ["pages.py", "vendor/VERSION", "vendor/uppy.min.mjs.map", "templates/upload.html"]
        for name in [*hidden, "nothing.js"]:
            assert http.get(base + name).status_code == 404, name


def test_tus_requests_still_work_at_the_root(make_server: Any) -> None:
    """With --base-path / the page at / does not shadow the tus endpoint: POST creates."""
    server = make_server("--base-path", "/")
    page = httpx.get(server.origin + "/")
    assert page.status_code == 200 and 'data-endpoint="/"' in page.text
    created = httpx.post(server.origin + "/", headers={**TUS, "Upload-Length": "3"})
    assert created.status_code == 201


@pytest.mark.anyio
async def test_unknown_asset_names_cost_no_memory(tmp_path: Path) -> None:
    """Unknown asset names are answered 404 before the asset cache: requests for random names
    (anyone may send them) never grow the process's memory."""
    from inprocess import serving

    from tusserver.web import load_asset

    async with serving(tmp_path) as (client, _):
        before = load_asset.cache_info().currsize
        for n in range(50):
            assert (await client.get(f"/_tusserver/nothing-{n}.js")).status_code == 404
        assert (await client.get("/_tusserver/style.css")).status_code == 200
        assert load_asset.cache_info().currsize <= before + 1


def test_page_head_needs_no_tus_version(shared_server: ServerProcess) -> None:
    """HEAD of the page or an asset is a browser's, not a tus request: no 412."""
    assert httpx.head(shared_server.origin + "/").status_code == 200
    assert httpx.head(shared_server.origin + "/_tusserver/style.css").status_code == 200
