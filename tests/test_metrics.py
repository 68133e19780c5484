"""/metrics (Prometheus), /health and structured logs, against a live server."""

from __future__ import annotations

import json
import re

import httpx
from conftest import TUS, create_upload, patch


def scrape(http: httpx.Client, origin: str) -> dict[str, float]:
    """Sample name with labels -> value, from the text exposition."""
    response = http.get(origin + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_count_requests_bytes_and_upload_events(server, client):
    """After 2 creations, one finished upload (in two PATCHes), one termination and a 404:
    the counters say exactly that, and nothing is left active."""
    a = create_upload(client, server.url, 10)
    b = create_upload(client, server.url, 5)
    assert patch(client, a, 0, b"01234").status_code == 204
    assert patch(client, a, 5, b"56789").status_code == 204
    assert client.delete(b, headers=TUS).status_code == 204
    assert client.head(server.url + "f" * 32, headers=TUS).status_code == 404

    m = scrape(client, server.origin)
    assert m['tusserver_uploads_created_total{protocol="tus"}'] == 2
    assert m["tusserver_uploads_finished_total"] == 1
    assert m["tusserver_uploads_terminated_total"] == 1
    assert m["tusserver_bytes_received_total"] == 10
    assert m['tusserver_requests_total{method="POST",protocol="tus",status="201"}'] == 2
    assert m['tusserver_requests_total{method="PATCH",protocol="tus",status="204"}'] == 2
    assert m['tusserver_requests_total{method="DELETE",protocol="tus",status="204"}'] == 1
    assert m['tusserver_requests_total{method="HEAD",protocol="tus",status="404"}'] == 1
    assert m['tusserver_request_duration_seconds_count{method="PATCH"}'] == 2
    assert m["tusserver_upload_duration_seconds_count"] == 1
    assert m["tusserver_active_uploads"] == 0
    assert m["tusserver_open_connections"] >= 1  # this scrape's own connection
    text = client.get(server.origin + "/metrics").text
    # other modules' metrics share the default registry and endpoint
    assert "# HELP tusserver_hook_invocations" in text
    assert "# HELP tusserver_processing_jobs" in text


def test_zero_length_and_final_uploads_count_as_finished(server, client):
    """An empty upload is complete when created; a final upload when assembled."""
    empty = create_upload(client, server.url, 0)
    assert client.head(empty, headers=TUS).headers["Upload-Offset"] == "0"
    assert "Upload-Expires" not in client.head(empty, headers=TUS).headers
    partial = create_upload(client, server.url, 2, {"Upload-Concat": "partial"})
    assert patch(client, partial, 0, b"ab").status_code == 204
    final = client.post(server.url, headers={**TUS, "Upload-Concat": f"final;{partial}"})
    assert final.status_code == 201
    assert client.get(final.headers["Location"]).content == b"ab"
    m = scrape(client, server.origin)
    assert m["tusserver_uploads_finished_total"] == 3  # empty, partial, final


def test_metrics_method_override_and_unknown_methods(server, client):
    """X-HTTP-Method-Override is counted as the method it stands for; odd methods share one
    label value so scanners cannot blow up the series count."""
    location = create_upload(client, server.url, 3)
    client.post(location, headers={**TUS, "X-HTTP-Method-Override": "HEAD"})
    client.request("PROPFIND", server.url, headers=TUS)
    m = scrape(client, server.origin)
    assert m['tusserver_requests_total{method="HEAD",protocol="tus",status="200"}'] == 1
    assert any(k.startswith('tusserver_requests_total{method="OTHER"') for k in m)


def test_metrics_aggregate_across_workers(make_server):
    """--workers 2 (prometheus multiprocess mode): every worker's counts are in one scrape,
    whichever worker answers it."""
    server = make_server("--workers", "2")
    with httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        for _ in range(12):
            create_upload(http, server.url, 1)
        for _ in range(4):  # several scrapes, each likely served by either worker
            m = scrape(http, server.origin)
            assert m['tusserver_uploads_created_total{protocol="tus"}'] == 12
            assert m['tusserver_requests_total{method="POST",protocol="tus",status="201"}'] == 12
    assert (server.upload_dir / ".metrics").is_dir()


def test_metrics_path_can_move_or_be_disabled(make_server, client):
    server = make_server("--metrics-path", "/internal/prom", "--health-path", "")
    assert client.get(server.origin + "/internal/prom").status_code == 200
    assert client.get(server.origin + "/metrics").status_code == 404
    assert client.get(server.origin + "/health").status_code == 404


def test_health_reports_ok(server, client):
    """/health: 200 and a JSON report when the directory, disk and registry are fine."""
    response = client.get(server.origin + "/health")
    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "ok"
    assert {"store", "disk", "registry"} <= set(report["checks"])
    assert report["checks"]["disk"]["free_bytes"] > 0
    assert not list(server.upload_dir.glob(".health-*"))  # probe file cleaned up


def test_json_logs_one_line_per_request_and_upload_event(make_server, client):
    """--log-format json: every line is a JSON object; requests and upload events carry
    their fields."""
    server = make_server("--log-format", "json")
    location = create_upload(client, server.url, 3)
    assert patch(client, location, 0, b"abc").status_code == 204
    server.stop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    upload_id = location.rsplit("/", 1)[-1]
    access = [r for r in lines if r["logger"] == "tusserver.access"]
    events = [r for r in lines if r["logger"] == "tusserver.events"]
    assert {(r["method"], r["status"]) for r in access} >= {("POST", 201), ("PATCH", 204)}
    assert all(isinstance(r["duration_ms"], float | int) for r in access)
    assert [(r["event"], r["upload"]) for r in events] == [
        ("created", upload_id),
        ("finished", upload_id),
    ]
    assert any(re.match(r"uvicorn", r["logger"]) for r in lines)
