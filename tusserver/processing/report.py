"""GET {base}{id}/errors.csv and {base}{id}/errors.ndjson: every malformed row of the job.

The /status document keeps only the first --csv-max-errors rows in detail; this report has all
of them (line, plugin, kind, message, excerpt of the raw row), read from the registry's
job_errors table, so any instance sharing the database serves it. It is streamed page by page
(keyset pagination on (line, seq), reads in a worker thread): memory stays constant for a
report of millions of rows.

While the job is queued or running the rows known so far are served, marked with
`X-Report-Complete: false` (and `X-Processing-Status`); once the job ended the header says
`true`. 404 when the upload is unknown or has no job, 410 once it was terminated or expired.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable, Sequence

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tusserver.handlers.common import core_of, upload_id_of
from tusserver.protocol import TusError

PAGE = 2000  # rows per registry read and per chunk sent
COLUMNS = ("line", "plugin", "kind", "message", "excerpt")

Row = tuple[int, int, str, str, str, str]  # line (0: none), seq, plugin, kind, message, excerpt


def csv_page(rows: Sequence[Row]) -> str:
    """Rows as CSV text (RFC 4180 quoting: excerpts may hold delimiters, quotes, newlines)."""
    out = io.StringIO()
    writer = csv.writer(out)
    for line, _, plugin, kind, message, excerpt in rows:
        writer.writerow((line or "", plugin, kind, message, excerpt))
    return out.getvalue()


def ndjson_page(rows: Sequence[Row]) -> str:
    """Rows as one JSON object per line; a row without a line number has "line": null."""
    return "".join(
        json.dumps(dict(zip(COLUMNS, (line or None, plugin, kind, message, excerpt), strict=True)))
        + "\n"
        for line, _, plugin, kind, message, excerpt in rows
    )


FORMATS: dict[str, tuple[str, str, Callable[[Sequence[Row]], str]]] = {
    "csv": ("text/csv; charset=utf-8", ",".join(COLUMNS) + "\r\n", csv_page),
    "ndjson": ("application/x-ndjson", "", ndjson_page),
}


async def _report(request: Request, fmt: str) -> Response:
    core = core_of(request)
    info = core.load(upload_id_of(request))  # 404 unknown, 410 terminated/expired
    job = core.registry.get_job(info.id)
    if job is None:
        raise TusError(404, "no processing job for this upload")
    run = job["run"] or 0
    state = job["state"]
    complete = state in ("completed", "failed")
    media_type, header, render = FORMATS[fmt]
    registry = core.registry

    async def body() -> AsyncIterator[str]:
        if header:
            yield header
        after = (-1, -1)
        while True:
            page = await anyio.to_thread.run_sync(
                registry.job_errors_page, info.id, run, after, PAGE
            )
            if page:
                after = (page[-1][0], page[-1][1])
                yield render(page)
            if len(page) < PAGE:
                return

    headers = {
        "Content-Disposition": f'attachment; filename="{info.id}-errors.{fmt}"',
        "X-Processing-Status": state,
        "X-Report-Complete": "true" if complete else "false",
        "Cache-Control": "no-cache" if complete else "no-store",
    }
    return StreamingResponse(body(), media_type=media_type, headers=headers)


async def handle_errors_csv(request: Request) -> Response:
    """GET {base}{id}/errors.csv."""
    return await _report(request, "csv")


async def handle_errors_ndjson(request: Request) -> Response:
    """GET {base}{id}/errors.ndjson."""
    return await _report(request, "ndjson")
