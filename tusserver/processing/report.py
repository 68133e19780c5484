"""GET {base}{id}/errors.csv and {base}{id}/errors.ndjson: every malformed row of the job.

The /status document keeps only the first --csv-max-errors rows in detail; this report has all
of them (line, plugin, kind, message, excerpt of the raw row), read from the registry, so
any instance sharing the database serves it. It is streamed page by page (keyset
pagination on (line, seq)): memory stays constant for a report of millions of rows.

While the job is queued or running the rows known so far are served, marked with
`X-Report-Complete: false` (and `X-Processing-Status`); once the job ended the header says
`true`. 404 when the upload is unknown or has no job, 410 once it was terminated or expired.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tusserver.handlers.common import core_of, upload_id_of
from tusserver.protocol import TusError
from tusserver.registry import JobErrorRow
from tusserver.registry.base import COMPLETED, JOB_FAILED

PAGE = 2000  # rows per registry read and per chunk sent
COLUMNS = ("line", "plugin", "kind", "message", "excerpt")


def csv_page(rows: Sequence[JobErrorRow]) -> str:
    """Rows as CSV text (RFC 4180 quoting: excerpts may hold delimiters, quotes, newlines)."""
    out = io.StringIO()
    writer = csv.writer(out)
    for row in rows:  # line 0: the row has no line number
        writer.writerow((row.line or "", row.plugin, row.kind, row.message, row.excerpt))
    return out.getvalue()


def ndjson_page(rows: Sequence[JobErrorRow]) -> str:
    """Rows as one JSON object per line; a row without a line number has "line": null."""
    return "".join(json.dumps(_record(row)) + "\n" for row in rows)


def _record(row: JobErrorRow) -> dict[str, object]:
    cells = (row.line or None, row.plugin, row.kind, row.message, row.excerpt)
    return dict(zip(COLUMNS, cells, strict=True))


FORMATS: dict[str, tuple[str, str, Callable[[Sequence[JobErrorRow]], str]]] = {
    "csv": ("text/csv; charset=utf-8", ",".join(COLUMNS) + "\r\n", csv_page),
    "ndjson": ("application/x-ndjson", "", ndjson_page),
}


async def _report(request: Request, fmt: str) -> Response:
    core = core_of(request)
    info = await core.load(upload_id_of(request))  # 404 unknown, 410 terminated/expired
    job = await core.registry.get_job(info.id)
    if job is None:
        raise TusError(404, "no processing job for this upload")
    run = job.run
    state = job.state
    complete = state in (COMPLETED, JOB_FAILED)
    media_type, header, render = FORMATS[fmt]
    registry = core.registry

    async def body() -> AsyncIterator[str]:
        if header:
            yield header
        after = (-1, -1)
        while True:
            page = await registry.job_errors_page(info.id, run, after, PAGE)
            if page:
                after = (page[-1].line, page[-1].seq)
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
