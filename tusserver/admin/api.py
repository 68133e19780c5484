"""The JSON admin API under /admin/api/: uploads (list, detail, terminate, reprocess), stats.

Everything is read from the registry (but `free_bytes`: the answering instance's store), so
any worker of any instance gives the same answer. Items reuse the /status document
(processing.status.status_of) for the overall status, upload speed and processing progress.
Lists are newest first with keyset pagination: the opaque cursor is the (created, id) of the
last item, so pages stay consistent while uploads keep arriving.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tusserver.core import TusCore
from tusserver.handlers.common import core_of, upload_id_of, upload_url
from tusserver.handlers.delete import terminate
from tusserver.processing.jobs import runner_for
from tusserver.processing.status import status_of
from tusserver.protocol import TusError, is_valid_upload_id
from tusserver.registry import (
    ACTIVE,
    COMPLETE,
    EXPIRED,
    NO_JOB,
    TERMINATED,
    Job,
    UploadFilter,
    UploadInfo,
)
from tusserver.registry.base import COMPLETED, JOB_FAILED, PROCESSING, QUEUED

API_PREFIX = "/admin/api/"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
IN_FLIGHT_WINDOW = 10.0  # seconds: an upload whose offset moved this recently is in flight
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

# ?status= -> registry filter; the names are status_of's overall statuses. A job row outlives
# its upload's termination or expiry for a while (until prune_jobs), so every job status also
# requires a complete upload: a gone one is listed as terminated or expired, as status_of says.
FILTERS = {
    "uploading": UploadFilter(states=(ACTIVE,)),
    "queued": UploadFilter(states=(COMPLETE,), job_states=(QUEUED,)),
    "processing": UploadFilter(states=(COMPLETE,), job_states=(PROCESSING,)),
    "completed": UploadFilter(states=(COMPLETE,), job_states=(COMPLETED, NO_JOB)),
    "failed": UploadFilter(states=(COMPLETE,), job_states=(JOB_FAILED,)),
    "terminated": UploadFilter(states=(TERMINATED,)),
    "expired": UploadFilter(states=(EXPIRED,)),
}


def json_response(data: object, status: int = 200) -> Response:
    return JSONResponse(data, status_code=status, headers=HEADERS)


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """Every admin error: `{"error": message}` with the status."""
    return JSONResponse(
        {"error": message}, status_code=status, headers={**HEADERS, **(headers or {})}
    )


# -- query parameters -------------------------------------------------------------------------


def filter_of(request: Request) -> UploadFilter:
    """?status=, one of FILTERS (absent: every upload); 400 otherwise."""
    status = request.query_params.get("status")
    if status is None or status == "":
        return UploadFilter()
    if status not in FILTERS:
        raise TusError(400, f"unknown status {status!r} (use {', '.join(FILTERS)})")
    return FILTERS[status]


def limit_of(request: Request) -> int:
    """?limit=, 1 to MAX_LIMIT (absent: DEFAULT_LIMIT); 400 otherwise."""
    text = request.query_params.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise TusError(400, f"limit must be a number from 1 to {MAX_LIMIT}")
    return int(text)


def encode_cursor(info: UploadInfo) -> str:
    raw = json.dumps([info.created, info.id]).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def cursor_of(request: Request) -> tuple[float, str] | None:
    """?cursor= as given in a previous page's `next`; 400 for anything else."""
    text = request.query_params.get("cursor")
    if not text:
        return None
    try:
        created, upload_id = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, TypeError, binascii.Error):
        raise TusError(400, "bad cursor") from None
    if not isinstance(created, int | float) or isinstance(created, bool):
        raise TusError(400, "bad cursor")
    try:
        when = float(created)  # an int too large for a float raises
    except OverflowError:
        raise TusError(400, "bad cursor") from None
    valid_id = isinstance(upload_id, str) and is_valid_upload_id(upload_id)
    if not math.isfinite(when) or not valid_id:  # json.loads gives NaN and 1e400 (inf) too
        raise TusError(400, "bad cursor")
    return when, upload_id


# -- documents --------------------------------------------------------------------------------


def item(request: Request, info: UploadInfo, job: Job | None) -> dict[str, Any]:
    """One upload as the list shows it."""
    doc = status_of(core_of(request).settings, info, job)
    upload = doc["upload"]
    return {
        "id": info.id,
        "url": upload_url(request, info.id),
        "name": info.metadata.get("filename"),
        "type": info.metadata.get("filetype"),
        "size": info.length,
        "offset": info.offset,
        "state": info.state,
        "status": doc["status"],
        "result": doc["result"],
        "created": info.created,
        "updated": info.updated,
        "expires": info.expires,
        "percent": upload["percent"],
        "bytes_per_second": upload["bytes_per_second"],
        "eta_seconds": upload["eta_seconds"],
        "processing": doc["processing"],
    }


Rows = list[tuple[UploadInfo, Job | None]]


async def rows_of(
    core: TusCore, where: UploadFilter, limit: int, before: tuple[float, str] | None = None
) -> Rows:
    """The registry's rows for one page: `limit` and one more (which says there is a next)."""
    return await core.registry.list_uploads(where, limit=limit + 1, before=before)


def page_of(request: Request, rows: Rows, limit: int) -> dict[str, Any]:
    """`{"items", "next"}`: one page of uploads (from rows_of) and the cursor of the next
    (None: last). The items' URLs are the request's (its host, its mount path)."""
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [item(request, info, job) for info, job in rows],
        "next": encode_cursor(rows[-1][0]) if more else None,
    }


async def page(
    request: Request, where: UploadFilter, limit: int, before: tuple[float, str] | None = None
) -> dict[str, Any]:
    """One page of uploads (see page_of)."""
    return page_of(request, await rows_of(core_of(request), where, limit, before), limit)


async def stats(core: TusCore) -> dict[str, Any]:
    """Totals over every upload the registry knows, and the store's free space (as this
    instance sees it).

    `failed_jobs` counts every failed job row, including those of uploads terminated or
    expired since (whose rows remain until the runners' prune_jobs, about every ten minutes; the
    failed filter does not list them): counting only live uploads' would take a join over
    the uploads that upload_stats' job counts do not do."""
    totals = await core.registry.upload_stats(time.time() - IN_FLIGHT_WINDOW)
    return {
        "uploads": totals.by_state,
        "in_flight": totals.in_flight,
        "bytes_stored": totals.bytes_stored,
        "free_bytes": await anyio.to_thread.run_sync(core.store.free_space),
        "jobs": totals.jobs,
        "failed_jobs": totals.jobs.get(JOB_FAILED, 0),
    }


# -- endpoints --------------------------------------------------------------------------------


async def list_uploads(request: Request) -> Response:
    """GET uploads?status=&limit=&cursor=."""
    return json_response(
        await page(request, filter_of(request), limit_of(request), cursor_of(request))
    )


async def upload_detail(request: Request) -> Response:
    """GET uploads/{id}: the item plus metadata and concatenation; tombstones too."""
    registry = core_of(request).registry
    info = await registry.get(upload_id_of(request))
    if info is None:
        raise TusError(404, "upload not found")
    detail = item(request, info, await registry.get_job(info.id))
    detail.update(metadata=info.metadata, concat=info.concat, partials=info.partials)
    return json_response(detail)


def _for_hooks(request: Request) -> Request:
    """The request as hook payloads show it: without the admin's credentials (headers, and
    the query string, where a `?token=` may be)."""
    secret = (b"authorization", b"cookie")
    headers = [(k, v) for k, v in request.scope["headers"] if k.lower() not in secret]
    return Request({**request.scope, "headers": headers, "query_string": b""})


async def terminate_upload(request: Request) -> Response:
    """DELETE uploads/{id} or POST uploads/{id}/terminate: as a tus DELETE (an in-flight
    PATCH is stopped, post-terminate fires), but whatever --disable-termination and the
    pre-terminate hook say."""
    await terminate(core_of(request), upload_id_of(request), _for_hooks(request), refusable=False)
    return Response(status_code=204, headers=HEADERS)


async def reprocess(request: Request) -> Response:
    """POST uploads/{id}/reprocess: queue the finished upload's processing again (202).

    The checks and the restart happen under the upload's lock, so a termination cannot slip
    in between (which would queue a job for a gone upload). An unfinished upload is refused
    before the lock is asked for: taking it would stop a PATCH in flight."""
    core = core_of(request)
    upload_id = upload_id_of(request)
    if not (await core.load(upload_id)).finished:  # 404 unknown, 410 gone
        raise TusError(409, "upload is not finished")
    runner = runner_for(core)
    if runner is None:
        raise TusError(409, "processing is off")
    async with core.locked(upload_id) as (info, _):
        try:
            job = await runner.restart(upload_id)
        except ValueError as exc:  # unfinished, partial, no plugin selected
            raise TusError(409, str(exc)) from None
    if job is None:
        raise TusError(409, "processing is queued or running")
    return json_response(status_of(core.settings, info, job)["processing"], 202)


async def storage_stats(request: Request) -> Response:
    """GET stats."""
    return json_response(await stats(core_of(request)))


async def not_found(request: Request) -> Response:
    """Any other path under /admin/api/."""
    raise TusError(404, "no such admin API endpoint")
