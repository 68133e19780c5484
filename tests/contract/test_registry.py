"""The registry contract (tusserver/registry/base.py): every implementation passes these.

Tests name only the interface; the few that need SQLite itself (databases of earlier
versions, threads of their own) say so in their names. Leases are real durations on the
registry's clock: a lease of 0 has already lapsed, a short one is waited out by polling.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from tusserver.errors import AlreadyExists, BackendUnavailable
from tusserver.registry import sqlite as sqlite_registry
from tusserver.registry.base import (
    ACTIVE,
    COMPLETE,
    COMPLETED,
    DONE,
    EXPIRED,
    FAILED,
    JOB_FAILED,
    NO_JOB,
    PENDING,
    PROCESSING,
    QUEUED,
    TERMINATED,
    TOMBSTONE_SECONDS,
    Job,
    NewDelivery,
    NewJobError,
    Part,
    Registry,
    UploadFilter,
    UploadInfo,
    UploadStats,
)
from tusserver.registry.sqlite import SqliteRegistry

from .conftest import RegistryFactory

pytestmark = pytest.mark.anyio

T = TypeVar("T")
HELD = 60.0  # a lease that outlives the test


async def eventually(condition: Callable[[], Awaitable[T]], timeout: float = 5.0) -> T:
    """Poll `condition` until it is truthy and return its value (no sleeping as sync)."""
    with anyio.fail_after(timeout):
        while not (value := await condition()):
            await anyio.sleep(0.01)
    return value


async def concurrently(count: int, call: Callable[[int], Awaitable[T]]) -> list[T]:
    """call(0) .. call(count - 1) all at once; their results."""
    results: list[T] = []

    async def one(index: int) -> None:
        results.append(await call(index))

    async with anyio.create_task_group() as group:
        for index in range(count):
            group.start_soon(one, index)
    return results


def flat(lists: list[list[str]]) -> list[str]:
    return [item for items in lists for item in items]


async def new_upload(
    registry: Registry, upload_id: str, length: int | None = 100, **fields: Any
) -> UploadInfo:
    """Create an upload (of 100 bytes unless told otherwise)."""
    info = UploadInfo(id=upload_id, length=length, **fields)
    await registry.create(info)
    return info


async def finish(
    registry: Registry, job: Job, state: str = COMPLETED, error: str | None = None, **fields: Any
) -> bool:
    """finish_job for run `job.run` with empty results unless given."""
    values: dict[str, Any] = {"result": {}, "bytes_done": 1, "records": 1, "error_count": 0}
    return await registry.finish_job(
        job.id, job.run, state=state, error=error, **{**values, **fields}
    )


def delivery(upload_id: str = "u1", event: str = "post-finish", target: str = "t") -> NewDelivery:
    return NewDelivery(event=event, target=target, upload_id=upload_id, payload='{"a": 1}')


def error_row(line: int, message: str = "bad") -> NewJobError:
    return ("csv", line, "format", message, f"excerpt {line}")


# -- uploads ---------------------------------------------------------------------------------


async def test_create_get_round_trips_every_field(registry: Registry) -> None:
    full = UploadInfo(
        id="full",
        length=1000,
        offset=10,
        metadata_raw="filename aGVsbG8=,flag",
        metadata={"filename": "hello", "flag": "", "binary": "a\x00b\u00e9"},
        created=1_700_000_000.25,
        updated=1_700_000_001.5,
        expires=1_700_086_400.75,
        state=ACTIVE,
        concat="final;/files/a /files/b",
        is_final=True,
        partials=["a", "b"],
        store_ref="multipart-123",
    )
    deferred = UploadInfo(id="deferred", length=None, is_partial=True, concat="partial")
    for info in (full, deferred):
        await registry.create(info)
        assert await registry.get(info.id) == info
    assert await registry.get("never-created") is None


async def test_set_offset_is_compare_and_set(registry: Registry) -> None:
    info = await new_upload(registry, "u", expires=1000.0)
    moved = await registry.set_offset("u", expected=5, offset=50, expires=2000.0, state=COMPLETE)
    assert not moved
    assert await registry.get("u") == info
    assert await registry.set_offset("u", expected=0, offset=40, expires=2000.0, state=ACTIVE)
    assert await registry.set_offset("u", expected=40, offset=100, expires=None, state=COMPLETE)
    got = await registry.get("u")
    assert got is not None
    assert (got.offset, got.expires, got.state) == (100, None, COMPLETE)


async def test_set_offset_after_terminate_changes_nothing(registry: Registry) -> None:
    """A writer that lost its lock records after a DELETE or an expiry: the compare-and-set
    refuses it (the offset matches, the state does not), so a removed upload never becomes
    active again with its data gone."""
    for name, gone in (("terminated", TERMINATED), ("expired", EXPIRED)):
        await new_upload(registry, name, offset=40, expires=1000.0)
        await registry.set_state(name, gone)
        before = await registry.get(name)
        for state in (ACTIVE, COMPLETE):
            assert not await registry.set_offset(
                name, expected=40, offset=100, expires=2000.0, state=state
            )
        assert await registry.get(name) == before
    assert await registry.pending_finishes(0) == []


async def test_set_offset_and_set_length_of_a_complete_upload_change_nothing(
    registry: Registry,
) -> None:
    await new_upload(registry, "done", offset=100, state=COMPLETE)
    before = await registry.get("done")
    assert not await registry.set_offset(
        "done", expected=100, offset=100, expires=None, state=COMPLETE
    )
    assert await registry.get("done") == before


async def test_set_length_after_terminate_changes_nothing(registry: Registry) -> None:
    await new_upload(registry, "deferred", length=None)
    await registry.set_state("deferred", TERMINATED)
    assert not await registry.set_length("deferred", 500)
    info = await registry.get("deferred")
    assert info is not None and info.length is None


async def test_completing_marks_the_finish_pending_until_recorded(registry: Registry) -> None:
    """The last byte and the pending finish are recorded together (set_offset to COMPLETE, or
    create of an upload complete at once); finish_recorded clears the mark; uploads that are
    active, or completed less than `older_than` seconds ago, are not listed."""
    await new_upload(registry, "active")
    await new_upload(registry, "completing")
    await new_upload(registry, "empty", length=0, state=COMPLETE)
    assert await registry.pending_finishes(0) == ["empty"]
    assert await registry.set_offset(
        "completing", expected=0, offset=40, expires=2000.0, state=ACTIVE
    )
    assert await registry.pending_finishes(0) == ["empty"]
    assert await registry.set_offset(
        "completing", expected=40, offset=100, expires=None, state=COMPLETE
    )
    assert sorted(await registry.pending_finishes(0)) == ["completing", "empty"]
    assert len(await registry.pending_finishes(0, limit=1)) == 1
    assert await registry.pending_finishes(3600) == []  # both completed just now
    await registry.finish_recorded("empty")
    await registry.finish_recorded("empty")  # idempotent
    await registry.finish_recorded("never-created")
    assert await registry.pending_finishes(0) == ["completing"]
    await registry.set_state("completing", TERMINATED)  # a gone upload has nothing to finish
    assert await registry.pending_finishes(0) == []


async def test_pending_finishes_oldest_first(registry: Registry) -> None:
    for name in ("first", "second", "third"):
        await new_upload(registry, name)
        assert await registry.set_offset(name, expected=0, offset=100, expires=None, state=COMPLETE)
    assert await registry.pending_finishes(0) == ["first", "second", "third"]


async def test_set_length_only_once(registry: Registry) -> None:
    await new_upload(registry, "deferred", length=None)
    await new_upload(registry, "known", length=10)
    assert await registry.set_length("deferred", 500)
    assert not await registry.set_length("deferred", 600)
    assert not await registry.set_length("known", 20)
    lengths = [(await registry.get(name)) for name in ("deferred", "known")]
    assert [info.length for info in lengths if info] == [500, 10]


async def test_set_state_if_has_one_winner(registry: Registry) -> None:
    await new_upload(registry, "u")
    wins = await concurrently(12, lambda _: registry.set_state_if("u", ACTIVE, TERMINATED))
    assert sorted(wins) == [False] * 11 + [True]
    assert not await registry.set_state_if("u", ACTIVE, COMPLETE)
    await registry.set_state("u", EXPIRED)
    info = await registry.get("u")
    assert info is not None and info.state == EXPIRED


async def test_finals_waiting_for_matches_exact_partial_ids(registry: Registry) -> None:
    await new_upload(registry, "f1", is_final=True, partials=["a_b", "c"])
    await new_upload(registry, "f2", is_final=True, partials=["c"])
    await new_upload(registry, "done", is_final=True, partials=["a_b"], state=COMPLETE)
    await new_upload(registry, "lookalike", is_final=True, partials=["aXb", "a_bc"])
    await new_upload(registry, "partial", is_partial=True)
    assert await registry.finals_waiting_for("a_b") == ["f1"]
    assert sorted(await registry.finals_waiting_for("c")) == ["f1", "f2"]
    assert await registry.finals_waiting_for("nobody") == []


async def test_expired_ids_are_active_unfinished_and_past_expiry(registry: Registry) -> None:
    await new_upload(registry, "expired", expires=100.0)
    await new_upload(registry, "deferred", length=None, expires=100.0)
    await new_upload(registry, "finished", offset=100, expires=100.0)
    await new_upload(registry, "future", expires=10_000.0)
    await new_upload(registry, "never", expires=None)
    await new_upload(registry, "terminated", expires=100.0, state=TERMINATED)
    assert sorted(await registry.expired_ids(1000.0)) == ["deferred", "expired"]
    assert len(await registry.expired_ids(1000.0, limit=1)) == 1


async def record_parts(registry: Registry, upload_id: str, *parts: Part) -> None:
    """Record parts as a store does: with the offset that covers them."""
    info = await registry.get(upload_id)
    assert info is not None
    offset = info.offset + sum(part.size for part in parts)
    assert await registry.set_offset(
        upload_id, expected=info.offset, offset=offset, expires=None, state=ACTIVE, parts=parts
    )


async def test_prune_tombstones_forgets_old_gone_uploads_and_their_parts(
    registry: Registry,
) -> None:
    for name in ("terminated", "expired", "active"):
        await new_upload(registry, name)
        await record_parts(registry, name, Part(1, "etag", 10))
    await registry.set_state("terminated", TERMINATED)
    await registry.set_state("expired", EXPIRED)
    assert await registry.prune_tombstones(time.time()) == 0
    assert await registry.parts("terminated") == [Part(1, "etag", 10)]  # tombstones keep them
    assert await registry.prune_tombstones(time.time() + TOMBSTONE_SECONDS + 60) == 2
    assert await registry.get("terminated") is None
    assert await registry.get("expired") is None
    assert await registry.parts("terminated") == []
    assert await registry.parts("expired") == []
    assert await registry.get("active") is not None
    assert await registry.parts("active") == [Part(1, "etag", 10)]


async def test_parts_and_store_ref_are_recorded_with_the_offset(registry: Registry) -> None:
    await new_upload(registry, "u")
    await new_upload(registry, "other")
    first = Part(1, "e1", 40, "c1")
    assert await registry.set_offset(
        "u", expected=0, offset=40, expires=None, state=ACTIVE, parts=[first], store_ref="mp-1"
    )
    info = await registry.get("u")
    assert info is not None and (info.offset, info.store_ref) == (40, "mp-1")
    assert await registry.parts("u") == [first]
    assert await registry.parts("other") == []
    # a store_ref of None keeps the recorded one
    later = [Part(3, "e3", 30, None), Part(2, "e2", 30, "c2")]
    assert await registry.set_offset(
        "u", expected=40, offset=100, expires=None, state=COMPLETE, parts=later
    )
    info = await registry.get("u")
    assert info is not None and (info.offset, info.state, info.store_ref) == (100, COMPLETE, "mp-1")
    assert await registry.parts("u") == [first, Part(2, "e2", 30, "c2"), Part(3, "e3", 30)]
    assert await registry.pending_finishes(0) == ["u"]


async def test_set_offset_without_parts_records_the_store_ref(registry: Registry) -> None:
    await new_upload(registry, "u")
    assert await registry.set_offset(
        "u", expected=0, offset=0, expires=None, state=ACTIVE, store_ref="mp-1"
    )
    info = await registry.get("u")
    assert info is not None and (info.offset, info.store_ref) == (0, "mp-1")
    assert await registry.parts("u") == []


async def test_a_different_store_ref_fails_the_compare_and_set(registry: Registry) -> None:
    """The store_ref is recorded once: a writer whose parts belong to another multipart upload
    (a stale writer that started its own) changes nothing, even at an unchanged offset, so the
    recorded parts always belong to the recorded store_ref."""
    await new_upload(registry, "u")
    assert await registry.set_offset(
        "u", expected=0, offset=0, expires=None, state=ACTIVE, store_ref="mp-new-owner"
    )
    for parts in ((), (Part(1, "stale", 10),)):
        assert not await registry.set_offset(
            "u",
            expected=0,
            offset=len(parts) * 10,
            expires=None,
            state=ACTIVE,
            parts=parts,
            store_ref="mp-stale",
        )
    assert await registry.set_offset(
        "u",
        expected=0,
        offset=10,
        expires=None,
        state=ACTIVE,
        parts=[Part(1, "mine", 10)],
        store_ref="mp-new-owner",
    )
    info = await registry.get("u")
    assert info is not None and (info.offset, info.store_ref) == (10, "mp-new-owner")
    assert await registry.parts("u") == [Part(1, "mine", 10)]


async def test_a_refused_set_offset_records_no_parts_and_no_store_ref(registry: Registry) -> None:
    """A writer that lost the compare-and-set (another moved the offset, or the upload was
    completed, terminated or expired) leaves nothing behind: no part, no store_ref, no offset."""
    await new_upload(registry, "moved", offset=40, store_ref="mp")
    await new_upload(registry, "done", offset=100, state=COMPLETE)
    await new_upload(registry, "terminated", offset=40)
    await registry.set_state("terminated", TERMINATED)
    await new_upload(registry, "expired", offset=40)
    await registry.set_state("expired", EXPIRED)
    cases = {"moved": 0, "done": 100, "terminated": 40, "expired": 40}
    for name, expected in cases.items():
        before = await registry.get(name)
        for state in (ACTIVE, COMPLETE):
            assert not await registry.set_offset(
                name,
                expected=expected,
                offset=100,
                expires=None,
                state=state,
                parts=[Part(1, "e1", 60, "c1")],
                store_ref="stale",
            )
        assert await registry.get(name) == before, name
        assert await registry.parts(name) == [], name
    assert not await registry.set_offset(
        "never-created", expected=0, offset=1, expires=None, state=ACTIVE, parts=[Part(1, "e", 1)]
    )
    assert await registry.parts("never-created") == []


async def test_recording_a_part_again_replaces_it(registry: Registry) -> None:
    """The retry of a part whose acknowledgement was lost (the store uploaded it again under
    the same number) replaces the row: one row per number, the latest wins."""
    await new_upload(registry, "u")
    await record_parts(registry, "u", Part(1, "e1", 10, "c1"), Part(2, "e2", 10))
    await record_parts(registry, "u", Part(2, "e2-again", 10, "c2"))
    await record_parts(registry, "u", Part(2, "e2-third", 10), Part(2, "e2-last", 10, "c2"))
    assert await registry.parts("u") == [Part(1, "e1", 10, "c1"), Part(2, "e2-last", 10, "c2")]


async def test_parts_in_number_order_with_checksums_and_dropped(registry: Registry) -> None:
    await new_upload(registry, "u")
    await new_upload(registry, "other")
    checksums = {1: "AAAA", 2: None, 3: "sha256:" + "x" * 44}
    await record_parts(registry, "u", *(Part(n, f"e{n}", n * 10, checksums[n]) for n in (3, 1, 2)))
    await record_parts(registry, "other", Part(1, "x", 5))
    assert await registry.parts("u") == [Part(n, f"e{n}", n * 10, checksums[n]) for n in (1, 2, 3)]
    await registry.drop_parts("u")
    assert await registry.parts("u") == []
    assert await registry.parts("other") == [Part(1, "x", 5, None)]


async def test_reserve_part_counts_per_upload_in_any_state(registry: Registry) -> None:
    """1, 2, 3 for each upload, on after its parts were dropped or it finished or was
    removed (a number is never handed out twice); an unknown id is a KeyError."""
    await new_upload(registry, "u")
    await new_upload(registry, "other")
    assert [await registry.reserve_part("u") for _ in range(3)] == [1, 2, 3]
    assert await registry.reserve_part("other") == 1
    await registry.drop_parts("u")
    assert await registry.reserve_part("u") == 4
    assert await registry.set_offset("u", expected=0, offset=100, expires=None, state=COMPLETE)
    assert await registry.reserve_part("u") == 5
    await registry.set_state("other", TERMINATED)
    assert await registry.reserve_part("other") == 2
    with pytest.raises(KeyError):
        await registry.reserve_part("never-created")
    info = await registry.get("u")
    assert info is not None and info.offset == 100  # reserving changes nothing else


async def test_reserve_part_never_repeats_under_concurrency(
    registry_factory: RegistryFactory,
) -> None:
    """50 callers at once on one instance, and two instances on the same database: every
    number once, none skipped."""
    first, second = registry_factory(), registry_factory()
    await first.open()
    await second.open()
    try:
        await new_upload(first, "u")
        await new_upload(first, "shared")
        numbers = await asyncio.gather(*(first.reserve_part("u") for _ in range(50)))
        assert sorted(numbers) == list(range(1, 51))
        instances = (first, second)
        shared = await asyncio.gather(*(instances[n % 2].reserve_part("shared") for n in range(50)))
        assert sorted(shared) == list(range(1, 51))
        assert await second.reserve_part("u") == 51
    finally:
        await first.close()
        await second.close()


async def test_creating_a_taken_id_raises_already_exists(registry: Registry) -> None:
    """A duplicate id is the named AlreadyExists (answered 409), never a driver's error; the
    first upload is untouched."""
    await new_upload(registry, "taken", offset=7)
    with pytest.raises(AlreadyExists):
        await new_upload(registry, "taken")
    info = await registry.get("taken")
    assert info is not None and info.offset == 7


# -- hook deliveries -------------------------------------------------------------------------


async def test_added_deliveries_are_leased_by_their_owner(registry: Registry) -> None:
    ids = await registry.add_deliveries([delivery(target="a"), delivery(target="b")], "me", HELD)
    assert len(set(ids)) == 2
    recorded = await registry.deliveries()
    assert [d.id for d in recorded] == ids
    assert [d.target for d in recorded] == ["a", "b"]
    first = recorded[0]
    assert (first.event, first.upload_id, first.payload) == ("post-finish", "u1", '{"a": 1}')
    assert (first.state, first.attempts, first.owner, first.last_error) == (PENDING, 1, "me", None)
    assert first.created <= first.updated
    assert await registry.due_deliveries() == []
    assert await registry.due_deliveries(everything=True) == []
    assert await registry.delivery_owners() == ["me"]
    assert await registry.has_delivery("u1", "post-finish")
    assert not await registry.has_delivery("u1", "post-terminate")
    assert not await registry.has_delivery("u2", "post-finish")


async def test_lapsed_leases_make_deliveries_due(registry: Registry) -> None:
    (lapsed,) = await registry.add_deliveries([delivery()], "me", 0)
    assert [d.id for d in await registry.due_deliveries()] == [lapsed]
    (short,) = await registry.add_deliveries([delivery()], "me", 0.2)

    async def due_ids() -> list[int]:
        return [d.id for d in await registry.due_deliveries()]

    async def both_due() -> bool:
        return len(await due_ids()) == 2

    await eventually(both_due)
    assert sorted(await due_ids()) == [lapsed, short]
    assert await registry.delivery_owners() == []


async def test_dead_owners_deliveries_are_due_and_claimable(registry: Registry) -> None:
    (held,) = await registry.add_deliveries([delivery()], "dead", HELD)
    assert await registry.due_deliveries(dead_owners=["someone-else"]) == []
    assert [d.id for d in await registry.due_deliveries(dead_owners=["dead"])] == [held]
    assert await registry.claim_delivery(held, "me", HELD) is None
    claimed = await registry.claim_delivery(held, "me", HELD, dead_owners=["dead"])
    assert claimed is not None
    assert (claimed.id, claimed.owner, claimed.attempts) == (held, "me", 2)
    assert await registry.delivery_owners() == ["me"]


async def test_a_delivery_is_claimed_by_one_caller(registry: Registry) -> None:
    (lapsed,) = await registry.add_deliveries([delivery()], "gone", 0)
    claims = await concurrently(20, lambda i: registry.claim_delivery(lapsed, f"w{i}", HELD))
    won = [claim for claim in claims if claim is not None]
    assert len(won) == 1
    assert won[0].attempts == 2 and won[0].state == PENDING
    (recorded,) = await registry.deliveries()
    assert (recorded.owner, recorded.attempts) == (won[0].owner, 2)
    assert await registry.claim_delivery(lapsed, "late", HELD) is None
    assert await registry.due_deliveries() == []


async def test_settle_is_fenced_by_the_attempt(registry: Registry) -> None:
    (lapsed,) = await registry.add_deliveries([delivery()], "first", 0)
    reclaimed = await registry.claim_delivery(lapsed, "second", HELD)
    assert reclaimed is not None and reclaimed.attempts == 2
    assert not await registry.settle_delivery(lapsed, 1, DONE)
    (recorded,) = await registry.deliveries()
    assert (recorded.state, recorded.owner) == (PENDING, "second")
    assert await registry.settle_delivery(lapsed, 2, FAILED, error="gave up")
    (recorded,) = await registry.deliveries()
    assert (recorded.state, recorded.last_error) == (FAILED, "gave up")
    # a settled delivery stays settled, whoever asks (even its own attempt)
    assert not await registry.settle_delivery(lapsed, 2, PENDING, retry_in=0)
    (recorded,) = await registry.deliveries()
    assert (recorded.state, recorded.owner) == (FAILED, None)
    assert await registry.due_deliveries(everything=True) == []
    assert await registry.delivery_owners() == []


async def test_retry_in_schedules_the_next_attempt(registry: Registry) -> None:
    (held,) = await registry.add_deliveries([delivery()], "me", HELD)
    assert await registry.settle_delivery(held, 1, PENDING, retry_in=3600, error="x" * 5000)
    (recorded,) = await registry.deliveries()
    assert (recorded.state, recorded.last_error) == (PENDING, "x" * 2000)
    assert await registry.due_deliveries() == []
    assert [d.id for d in await registry.due_deliveries(everything=True)] == [held]
    claimed = await registry.claim_delivery(held, "me", HELD)
    assert claimed is not None and claimed.attempts == 2
    assert await registry.settle_delivery(held, 2, PENDING, retry_in=0)
    assert [d.id for d in await registry.due_deliveries()] == [held]
    claimed = await registry.claim_delivery(held, "me", HELD)
    assert claimed is not None and claimed.attempts == 3
    assert await registry.settle_delivery(held, 3, DONE)
    (recorded,) = await registry.deliveries()
    assert (recorded.state, recorded.attempts) == (DONE, 3)


async def test_due_deliveries_respect_the_limit(registry: Registry) -> None:
    await registry.add_deliveries([delivery(target=str(n)) for n in range(5)], "me", 0)
    assert len(await registry.due_deliveries(limit=3)) == 3
    assert len(await registry.due_deliveries()) == 5


async def test_deliveries_oldest_first_all_or_one_uploads(registry: Registry) -> None:
    first = await registry.add_deliveries([delivery("u1"), delivery("u2")], "me", HELD)
    second = await registry.add_deliveries([delivery("u1", event="post-terminate")], "me", HELD)
    assert [d.id for d in await registry.deliveries()] == first + second
    assert [d.id for d in await registry.deliveries("u1")] == [first[0], *second]
    assert await registry.deliveries("nobody") == []


async def test_prune_deliveries_forgets_settled_ones_only(registry: Registry) -> None:
    done, failed, pending = await registry.add_deliveries([delivery()] * 3, "me", HELD)
    await registry.settle_delivery(done, 1, DONE)
    await registry.settle_delivery(failed, 1, FAILED)
    await registry.settle_delivery(pending, 1, PENDING, retry_in=0)
    assert await registry.prune_deliveries(3600) == 0

    async def pruned() -> int:
        return await registry.prune_deliveries(0)

    assert await eventually(pruned) == 2
    assert [d.id for d in await registry.deliveries()] == [pending]


# -- processing jobs -------------------------------------------------------------------------


async def test_create_job_once(registry: Registry) -> None:
    assert await registry.create_job("u", ["csv", "sha256"], 1234)
    assert not await registry.create_job("u", ["other"], 1)
    job = await registry.get_job("u")
    assert job is not None
    assert (job.id, job.state, job.plugins, job.size) == ("u", QUEUED, ["csv", "sha256"], 1234)
    assert (job.owner, job.attempts, job.run, job.error_count) == (None, 0, 0, 0)
    assert (job.bytes_done, job.records, job.progress, job.result, job.error) == (
        0,
        0,
        None,
        None,
        None,
    )
    assert job.started is None and job.finished is None
    assert await registry.get_job("nobody") is None


async def test_claim_next_job_takes_the_oldest_first(registry: Registry) -> None:
    for name in ("j1", "j2", "j3"):
        await registry.create_job(name, ["csv"], 10)
    claimed = [await registry.claim_next_job("me", HELD) for _ in range(3)]
    assert [job.id for job in claimed if job] == ["j1", "j2", "j3"]
    assert await registry.claim_next_job("me", HELD) is None
    job = claimed[0]
    assert job is not None
    assert (job.state, job.owner, job.run, job.attempts, job.error_count) == (
        PROCESSING,
        "me",
        1,
        1,
        0,
    )
    assert job.started is not None
    assert await registry.get_job("j1") == job


async def test_each_job_is_claimed_exactly_once(registry_factory: RegistryFactory) -> None:
    first, second = registry_factory(), registry_factory()  # two instances, one database
    await first.open()
    await second.open()
    try:
        for number in range(8):
            await first.create_job(f"j{number}", ["csv"], 1)

        async def claim_all(worker: int) -> list[str]:
            instance = (first, second)[worker % 2]
            claimed = []
            while (job := await instance.claim_next_job(f"w{worker}", HELD)) is not None:
                claimed.append(job.id)
            return claimed

        claims = await concurrently(16, claim_all)
        assert sorted(flat(claims)) == [f"j{number}" for number in range(8)]
        assert await first.job_counts() == {PROCESSING: 8}
    finally:
        await first.close()
        await second.close()


async def test_writes_of_a_stale_run_change_nothing(registry: Registry) -> None:
    await new_upload(registry, "u")
    await registry.create_job("u", ["csv"], 100)
    stale = await registry.claim_next_job("old", HELD)
    assert stale is not None and stale.run == 1
    assert await registry.requeue_job("u", 1)
    current = await registry.claim_next_job("new", HELD)
    assert current is not None and current.run == 2
    assert not await registry.job_progress(
        "u", 1, bytes_done=5, records=1, progress={"csv": {}}, error_count=1, lease=HELD
    )
    assert not await registry.add_job_errors("u", 1, [error_row(1)])
    assert not await registry.finish_job(
        "u", 1, state=COMPLETED, result={}, error=None, bytes_done=5, records=1, error_count=0
    )
    assert not await registry.requeue_job("u", 1)
    assert await registry.get_job("u") == current
    assert await registry.job_errors_page("u", 1) == []
    assert await registry.add_job_errors("u", 2, [error_row(1)])
    assert len(await registry.job_errors_page("u", 2)) == 1


async def test_progress_extends_the_lease_and_finish_records_results(registry: Registry) -> None:
    await registry.create_job("u", ["csv"], 100)
    job = await registry.claim_next_job("me", 0)
    assert job is not None
    assert await registry.job_progress(
        "u",
        job.run,
        bytes_done=50,
        records=7,
        progress={"csv": {"records": 7}},
        error_count=2,
        lease=HELD,
    )
    assert await registry.requeue_lapsed_jobs() == []
    running = await registry.get_job("u")
    assert running is not None
    assert (running.bytes_done, running.records, running.error_count) == (50, 7, 2)
    assert running.progress == {"csv": {"records": 7}}
    result = {"csv": {"rows": 7, "ok": True}}
    assert await finish(registry, job, result=result, bytes_done=100, records=9, error_count=3)
    done = await registry.get_job("u")
    assert done is not None
    assert (done.state, done.result, done.error) == (COMPLETED, result, None)
    assert (done.bytes_done, done.records, done.error_count) == (100, 9, 3)
    assert done.finished is not None
    assert await registry.job_owners() == []
    assert not await registry.requeue_job("u", job.run)


async def test_requeue_refunds_only_when_asked(registry: Registry) -> None:
    await registry.create_job("u", ["csv"], 1)
    first = await registry.claim_next_job("me", HELD)
    assert first is not None and first.attempts == 1
    assert await registry.requeue_job("u", first.run, refund=True)
    requeued = await registry.get_job("u")
    assert requeued is not None
    assert (requeued.state, requeued.owner, requeued.attempts) == (QUEUED, None, 0)
    second = await registry.claim_next_job("me", HELD)
    assert second is not None and (second.attempts, second.run) == (1, 2)
    assert await registry.requeue_job("u", second.run)
    third = await registry.claim_next_job("me", HELD)
    assert third is not None and (third.attempts, third.run) == (2, 3)


async def test_requeue_lapsed_jobs_takes_lapsed_leases_and_dead_owners(
    registry: Registry,
) -> None:
    for name in ("lapsed", "dead", "alive"):
        await registry.create_job(name, ["csv"], 1)
    await registry.claim_next_job("w1", 0)
    await registry.claim_next_job("w2", HELD)
    await registry.claim_next_job("w3", HELD)
    assert sorted(await registry.job_owners()) == ["w1", "w2", "w3"]
    requeued = await concurrently(6, lambda _: registry.requeue_lapsed_jobs(["w2", "nobody"]))
    assert sorted(flat(requeued)) == ["dead", "lapsed"]
    for name in ("lapsed", "dead"):
        job = await registry.get_job(name)
        assert job is not None and (job.state, job.owner) == (QUEUED, None)
    assert await registry.job_owners() == ["w3"]
    assert await registry.requeue_lapsed_jobs() == []


async def test_job_errors_page_in_line_order_by_keyset(registry: Registry) -> None:
    await new_upload(registry, "u")
    await registry.create_job("u", ["csv"], 1)
    job = await registry.claim_next_job("me", HELD)
    assert job is not None
    rows = [error_row(5, "a"), error_row(2, "b"), error_row(5, "c"), error_row(1, "d")]
    assert await registry.add_job_errors("u", job.run, rows[:2])
    assert await registry.add_job_errors("u", job.run, rows[2:])
    everything = await registry.job_errors_page("u", job.run)
    assert [(row.line, row.message) for row in everything] == [
        (1, "d"),
        (2, "b"),
        (5, "a"),
        (5, "c"),
    ]
    first = everything[0]
    assert (first.plugin, first.kind, first.excerpt) == ("csv", "format", "excerpt 1")
    keys = [(row.line, row.seq) for row in everything]
    assert keys == sorted(set(keys))
    pages = []
    after = (-1, -1)
    while page := await registry.job_errors_page("u", job.run, after, limit=1):
        pages.extend(page)
        after = (page[-1].line, page[-1].seq)
    assert pages == everything
    assert await registry.job_errors_page("u", job.run, (5, everything[2].seq)) == everything[3:]


async def purge_all(registry: Registry) -> int:
    """Run purge_job_errors until it has nothing left; the number of calls."""
    for calls in range(1, 100):
        if not await registry.purge_job_errors(limit=2):
            return calls
    raise AssertionError("purge_job_errors never finished")


async def test_a_new_claim_purges_the_rows_of_older_runs(registry: Registry) -> None:
    await new_upload(registry, "u")
    await new_upload(registry, "other")
    for name in ("u", "other"):
        await registry.create_job(name, ["csv"], 1)
        job = await registry.claim_next_job("me", HELD)
        assert job is not None
        await registry.add_job_errors(name, job.run, [error_row(n) for n in range(5)])
    assert await registry.requeue_job("u", 1)
    second = await registry.claim_next_job("me", HELD)
    assert second is not None and second.run == 2
    assert await registry.add_job_errors("u", 2, [error_row(9)])
    assert await purge_all(registry) > 1  # five rows, two per call
    assert await registry.job_errors_page("u", 1) == []
    assert [row.line for row in await registry.job_errors_page("u", 2)] == [9]
    assert len(await registry.job_errors_page("other", 1)) == 5


async def test_report_rows_are_refused_and_purged_once_the_upload_is_gone(
    registry: Registry,
) -> None:
    await new_upload(registry, "u")
    await registry.create_job("u", ["csv"], 1)
    job = await registry.claim_next_job("me", HELD)
    assert job is not None
    assert await registry.add_job_errors("u", job.run, [error_row(1)])
    await registry.set_state("u", TERMINATED)
    assert not await registry.add_job_errors("u", job.run, [error_row(2)])
    assert await finish(registry, job, error_count=1)
    assert await registry.prune_jobs() == 1
    await purge_all(registry)
    assert await registry.job_errors_page("u", job.run) == []
    assert await registry.get_job("u") is None


async def test_prune_jobs_forgets_jobs_of_gone_uploads(registry: Registry) -> None:
    # claimed in this order: a job still running, two finished ones; then two left queued
    for name in ("processing", "active", "terminated", "expired", "never-created"):
        if name != "never-created":
            await new_upload(registry, name)
        await registry.create_job(name, ["csv"], 1)
    for _ in range(3):
        job = await registry.claim_next_job("me", HELD)
        assert job is not None
        if job.id != "processing":
            await finish(registry, job)
    await registry.set_state("processing", TERMINATED)
    await registry.set_state("terminated", TERMINATED)
    await registry.set_state("expired", EXPIRED)
    assert await registry.prune_jobs() == 3
    names = ("processing", "active", "terminated", "expired", "never-created")
    assert [name for name in names if await registry.get_job(name)] == ["processing", "active"]
    assert await registry.prune_jobs() == 0


async def test_job_counts_per_state(registry: Registry) -> None:
    assert await registry.job_counts() == {}
    for name in ("a", "b", "c", "d"):
        await registry.create_job(name, ["csv"], 1)
    first = await registry.claim_next_job("me", HELD)
    second = await registry.claim_next_job("me", HELD)
    assert first is not None and second is not None
    await finish(registry, first, FAILED, "boom")
    assert await registry.job_counts() == {QUEUED: 2, PROCESSING: 1, FAILED: 1}


async def ended_job(registry: Registry, upload_id: str, state: str, error: str | None) -> Job:
    """A job of `upload_id` run once (with progress and a report row) and finished `state`."""
    await registry.create_job(upload_id, ["csv"], 100)
    job = await registry.claim_next_job("me", HELD)
    assert job is not None and job.id == upload_id
    assert await registry.job_progress(
        upload_id,
        job.run,
        bytes_done=50,
        records=5,
        progress={"csv": {}},
        error_count=1,
        lease=HELD,
    )
    assert await registry.add_job_errors(upload_id, job.run, [error_row(1)])
    assert await finish(registry, job, state, error, result={"csv": {"ok": False}}, error_count=1)
    return job


async def test_restart_job_queues_an_ended_job_again(registry: Registry) -> None:
    """Completed and failed jobs are queued again with the new plugins and size, cleared and
    at attempts 0 (a job stopped by the crash-loop limit may run again); the run is kept, so
    the next claim is run + 1 and the old run's report rows are purged."""
    for name, state, error in (("completed", COMPLETED, None), ("failed", JOB_FAILED, "boom")):
        await new_upload(registry, name, offset=100, state=COMPLETE)
        ended = await ended_job(registry, name, state, error)
        assert await registry.restart_job(name, ["csv", "sha256"], 200)
        queued = await registry.get_job(name)
        assert queued is not None
        assert (queued.state, queued.plugins, queued.size, queued.owner) == (
            QUEUED,
            ["csv", "sha256"],
            200,
            None,
        )
        assert (queued.attempts, queued.run) == (0, ended.run)
        assert (queued.bytes_done, queued.records, queued.error_count) == (0, 0, 0)
        assert (queued.progress, queued.result, queued.error) == (None, None, None)
        rerun = await registry.claim_next_job("me", HELD)
        assert rerun is not None
        assert (rerun.id, rerun.run, rerun.attempts, rerun.size) == (name, ended.run + 1, 1, 200)
        await purge_all(registry)
        assert await registry.job_errors_page(name, ended.run) == []
        assert await finish(registry, rerun)  # out of the way of the next claim


async def test_restart_job_leaves_queued_and_processing_jobs_alone(registry: Registry) -> None:
    await registry.create_job("processing", ["csv"], 1)
    running = await registry.claim_next_job("me", HELD)
    assert running is not None
    await registry.create_job("queued", ["csv"], 1)
    queued = await registry.get_job("queued")
    for name in ("processing", "queued"):
        assert not await registry.restart_job(name, ["other"], 2)
    assert await registry.get_job("processing") == running
    assert await registry.get_job("queued") == queued


async def test_restart_job_creates_a_missing_job(registry: Registry) -> None:
    await new_upload(registry, "u", offset=100, state=COMPLETE)
    assert await registry.restart_job("u", ["csv"], 100)
    job = await registry.get_job("u")
    assert job is not None
    assert (job.state, job.plugins, job.size, job.attempts, job.run) == (QUEUED, ["csv"], 100, 0, 0)
    claimed = await registry.claim_next_job("me", HELD)
    assert claimed is not None and (claimed.id, claimed.run) == ("u", 1)


async def test_concurrent_restarts_queue_one_run(registry_factory: RegistryFactory) -> None:
    """Two instances asked to reprocess at once (an ended job, a missing one): one wins."""
    first, second = registry_factory(), registry_factory()
    await first.open()
    await second.open()

    async def restart(name: str) -> list[bool]:
        """Ten restarts of `name` at once, by turns on each instance."""
        return await concurrently(
            10, lambda n: (first, second)[n % 2].restart_job(name, ["csv"], n)
        )

    try:
        await new_upload(first, "ended", offset=100, state=COMPLETE)
        await ended_job(first, "ended", COMPLETED, None)
        for name in ("ended", "missing"):
            assert sorted(await restart(name)) == [False] * 9 + [True]
        assert await first.job_counts() == {QUEUED: 2}
    finally:
        await first.close()
        await second.close()


# -- listing ---------------------------------------------------------------------------------


async def listed(registry: Registry, **kwargs: Any) -> list[str]:
    """The ids list_uploads returns."""
    return [info.id for info, _ in await registry.list_uploads(**kwargs)]


async def test_list_uploads_newest_first_with_their_jobs(registry: Registry) -> None:
    for name, created in (("b", 2.0), ("d", 4.0), ("a", 1.0), ("c", 3.0)):
        await new_upload(registry, name, created=created)
    await ended_job(registry, "c", COMPLETED, None)
    await registry.create_job("no-upload", ["csv"], 1)  # uploads are listed, not jobs
    listing = await registry.list_uploads()
    assert [info.id for info, _ in listing] == ["d", "c", "b", "a"]
    assert listing[0] == (await registry.get("d"), None)
    assert listing[1] == (await registry.get("c"), await registry.get_job("c"))


async def test_list_uploads_limit(registry: Registry) -> None:
    for number in range(51):
        await new_upload(registry, f"u{number:02}", created=float(number))
    assert await listed(registry, limit=3) == ["u50", "u49", "u48"]
    assert await listed(registry) == [f"u{number:02}" for number in range(50, 0, -1)]


async def test_list_uploads_pages_by_keyset_ties_broken_by_id(registry: Registry) -> None:
    """Pages of 2 cut through uploads created at the same time; uploads created meanwhile
    (newer) shift no page."""
    created = {"e": 1.0, "a": 2.0, "c": 2.0, "f": 2.0, "b": 3.0, "d": 3.0, "g": 2.0}
    for name, at in created.items():
        await new_upload(registry, name, created=at)
    newest_first = sorted(created, key=lambda name: (created[name], name), reverse=True)
    assert await listed(registry) == newest_first
    pages: list[list[str]] = []
    before = None
    for number in range(5):  # a fixed count: a keyset that stops moving must not loop forever
        page = await registry.list_uploads(limit=2, before=before)
        pages.append([info.id for info, _ in page])
        if page:
            before = (page[-1][0].created, page[-1][0].id)
        await new_upload(registry, f"new{number}", created=10.0 + number)
    assert pages == [newest_first[start : start + 2] for start in range(0, 10, 2)]  # 4 and []


async def test_list_uploads_filters_by_upload_and_job_state(registry: Registry) -> None:
    uploads = {  # name: (upload state, job state or None), oldest first
        "active-none": (ACTIVE, None),
        "complete-failed": (COMPLETE, JOB_FAILED),
        "complete-none": (COMPLETE, None),
        "terminated-completed": (TERMINATED, COMPLETED),
        "complete-queued": (COMPLETE, QUEUED),
        "expired-none": (EXPIRED, None),
    }
    for number, (name, (state, job_state)) in enumerate(uploads.items()):
        await new_upload(registry, name, offset=100, state=COMPLETE, created=float(number))
        if job_state == QUEUED:
            await registry.create_job(name, ["csv"], 100)
        elif job_state is not None:
            await ended_job(registry, name, job_state, None)
        await registry.set_state(name, state)  # once the job ran: gone uploads take no report

    def newest_first(*names: str) -> list[str]:
        return [name for name in reversed(uploads) if name in names]

    cases = {
        UploadFilter(): newest_first(*uploads),  # tombstones too
        UploadFilter(states=(COMPLETE,)): newest_first(
            "complete-failed", "complete-none", "complete-queued"
        ),
        UploadFilter(states=(TERMINATED, EXPIRED)): newest_first(
            "terminated-completed", "expired-none"
        ),
        UploadFilter(job_states=(QUEUED,)): ["complete-queued"],
        UploadFilter(job_states=(NO_JOB,)): newest_first(
            "active-none", "complete-none", "expired-none"
        ),
        UploadFilter(job_states=(JOB_FAILED, COMPLETED)): newest_first(
            "complete-failed", "terminated-completed"
        ),
        UploadFilter(job_states=(JOB_FAILED, NO_JOB)): newest_first(
            "active-none", "complete-failed", "complete-none", "expired-none"
        ),
        UploadFilter(states=(COMPLETE,), job_states=(NO_JOB, QUEUED)): newest_first(
            "complete-none", "complete-queued"
        ),
        UploadFilter(states=(ACTIVE,), job_states=(QUEUED, PROCESSING)): [],
    }
    for where, expected in cases.items():
        assert await listed(registry, where=where) == expected, where
    complete = UploadFilter(states=(COMPLETE,))
    assert await listed(registry, where=complete, limit=1, before=(4.0, "complete-queued")) == [
        "complete-none"
    ]


async def test_upload_stats(registry: Registry) -> None:
    """Counts per state, the bytes of active and complete uploads (not of tombstones) and the
    active unfinished uploads updated at or after `active_since`."""
    assert await registry.upload_stats(0) == UploadStats({}, 0, 0, {})
    since = 1_000.0
    uploads = {  # name: (state, length, offset, updated)
        "moving": (ACTIVE, 100, 10, since),
        "deferred": (ACTIVE, None, 5, since + 1),
        "stalled": (ACTIVE, 100, 20, since - 0.5),
        "all-bytes": (ACTIVE, 100, 100, since + 1),  # finished, not completed yet
        "complete": (COMPLETE, 100, 100, since + 1),
        "terminated": (TERMINATED, 100, 40, since + 1),
        "expired": (EXPIRED, 100, 30, since + 1),
    }
    for name, (state, length, offset, updated) in uploads.items():
        await new_upload(registry, name, length, state=state, offset=offset, updated=updated)
    await registry.create_job("complete", ["csv"], 100)
    await registry.create_job("all-bytes", ["csv"], 100)
    assert await registry.claim_next_job("me", HELD) is not None
    stats = await registry.upload_stats(since)
    assert stats == UploadStats(
        by_state={ACTIVE: 4, COMPLETE: 1, TERMINATED: 1, EXPIRED: 1},
        bytes_stored=10 + 5 + 20 + 100 + 100,
        in_flight=2,
        jobs={PROCESSING: 1, QUEUED: 1},
    )
    assert (await registry.upload_stats(since + 0.25)).in_flight == 1
    assert (await registry.upload_stats(since - 0.5)).in_flight == 3


# -- availability ----------------------------------------------------------------------------


async def test_ping(registry: Registry) -> None:
    await registry.ping()


async def test_opening_an_unusable_database_raises_backend_unavailable(
    unreachable_registry: Registry,
) -> None:
    with pytest.raises(BackendUnavailable):
        await unreachable_registry.open()


async def test_a_registry_that_is_not_open_raises_backend_unavailable(
    unreachable_registry: Registry, registry_factory: RegistryFactory
) -> None:
    """Calls that race start-up (an open that failed) or shutdown (close) are answered like
    an outage, not with a driver's or a programming error."""
    with pytest.raises(BackendUnavailable):
        await unreachable_registry.open()
    with pytest.raises(BackendUnavailable):
        await unreachable_registry.get("u")
    closed = registry_factory()
    await closed.open()
    await closed.close()
    with pytest.raises(BackendUnavailable):
        await closed.ping()
    with pytest.raises(BackendUnavailable):
        await closed.create_job("u", ["csv"], 1)
    await closed.close()  # idempotent


# -- SQLite only -----------------------------------------------------------------------------

# The schemas earlier releases created (sqlite-utils' statements, abridged to the columns).
FIRST_RELEASE_SCHEMA = """
CREATE TABLE "uploads" ("id" TEXT PRIMARY KEY, "length" INTEGER, "offset" INTEGER,
  "metadata_raw" TEXT, "metadata" TEXT, "created" REAL, "updated" REAL, "expires" REAL,
  "state" TEXT NOT NULL, "concat" TEXT, "is_partial" INTEGER, "is_final" INTEGER,
  "partials" TEXT);
CREATE INDEX "idx_uploads_state_expires" ON "uploads" ("state", "expires");
"""
PREVIOUS_RELEASE_SCHEMA = (
    FIRST_RELEASE_SCHEMA
    + """
CREATE INDEX "idx_uploads_is_final_state" ON "uploads" ("is_final", "state");
CREATE TABLE "jobs" ("id" TEXT PRIMARY KEY, "state" TEXT NOT NULL, "plugins" TEXT,
  "size" INTEGER, "owner" TEXT, "heartbeat" REAL, "attempts" INTEGER, "run" INTEGER,
  "error_count" INTEGER, "bytes_done" INTEGER, "records" INTEGER, "progress" TEXT,
  "result" TEXT, "error" TEXT, "created" REAL, "started" REAL, "finished" REAL,
  "updated" REAL);
CREATE INDEX "idx_jobs_state_created" ON "jobs" ("state", "created");
CREATE TABLE job_errors (seq INTEGER PRIMARY KEY, upload_id TEXT NOT NULL,
  run INTEGER NOT NULL, line INTEGER NOT NULL, plugin TEXT NOT NULL, kind TEXT NOT NULL,
  message TEXT NOT NULL, excerpt TEXT NOT NULL);
CREATE INDEX job_errors_report ON job_errors (upload_id, run, line);
CREATE TABLE job_errors_purge (upload_id TEXT PRIMARY KEY, below_run INTEGER NOT NULL);
CREATE TRIGGER job_errors_upload_gone AFTER UPDATE OF state ON uploads
  WHEN NEW.state IN ('terminated', 'expired')
  AND EXISTS (SELECT 1 FROM job_errors WHERE upload_id = NEW.id)
  BEGIN INSERT OR REPLACE INTO job_errors_purge VALUES (NEW.id, 9223372036854775807); END;
CREATE TABLE "hook_deliveries" ("id" INTEGER PRIMARY KEY, "event" TEXT, "target" TEXT,
  "upload_id" TEXT, "payload" TEXT, "state" TEXT NOT NULL, "attempts" INTEGER,
  "next_attempt" REAL, "lease_until" REAL, "owner" TEXT, "last_error" TEXT,
  "created" REAL, "updated" REAL);
CREATE INDEX "idx_hook_deliveries_state_next_attempt"
  ON "hook_deliveries" ("state", "next_attempt");
CREATE INDEX "idx_hook_deliveries_upload_id_event" ON "hook_deliveries" ("upload_id", "event");
INSERT INTO jobs (id, state, plugins, size, attempts, bytes_done, records, created, updated)
  VALUES ('queued', 'queued', '["csv"]', 10, 0, 0, 0, 1.0, 1.0);
INSERT INTO jobs (id, state, plugins, size, owner, heartbeat, attempts, run, error_count,
  bytes_done, records, created, started, updated)
  VALUES ('running', 'processing', '["csv"]', 10, 'host:1', 2.0, 1, 1, 0, 0, 0, 1.0, 2.0, 2.0);
INSERT INTO hook_deliveries (event, target, upload_id, payload, state, attempts,
  next_attempt, lease_until, owner, created, updated)
  VALUES ('post-finish', 't', 'old', '{}', 'pending', 1, 1.0, 2.0, 'host:1', 1.0, 1.0);
"""
)
OLD_UPLOAD = """
INSERT INTO uploads VALUES ('old', 100, 40, 'filename YQ==', '{"filename": "a"}', 1.0, 2.0,
  4102444800.0, 'active', NULL, 0, 0, '[]');
INSERT INTO uploads VALUES ('old-done', 10, 10, NULL, '{}', 1.0, 2.0, NULL, 'complete', NULL,
  0, 0, '[]');
"""


@pytest.mark.parametrize(
    "schema", [FIRST_RELEASE_SCHEMA, PREVIOUS_RELEASE_SCHEMA], ids=["first", "previous"]
)
async def test_sqlite_database_of_an_earlier_release_keeps_working(
    tmp_path: Path, schema: str
) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(schema + OLD_UPLOAD)
    conn.close()
    for _ in range(2):  # the second open finds the schema up to date
        registry = SqliteRegistry(path)
        await registry.open()
        try:
            info = await registry.get("old")
            assert info == UploadInfo(
                id="old",
                length=100,
                offset=40,
                metadata_raw="filename YQ==",
                metadata={"filename": "a"},
                created=1.0,
                updated=2.0,
                expires=4102444800.0,
            )
        finally:
            await registry.close()
    registry = SqliteRegistry(path)
    await registry.open()
    try:
        assert await registry.pending_finishes(0) == []  # "old-done" was finished before
        assert await registry.reserve_part("old") == 1
        assert await registry.set_offset(
            "old",
            expected=40,
            offset=100,
            expires=None,
            state=COMPLETE,
            parts=[Part(1, "e", 100, "c")],
            store_ref="ref",
        )
        assert await registry.pending_finishes(0) == ["old"]
        assert await registry.parts("old") == [Part(1, "e", 100, "c")]
        if schema is PREVIOUS_RELEASE_SCHEMA:
            await check_previous_rows(registry)
    finally:
        await registry.close()


async def test_sqlite_parts_of_an_earlier_release_keep_their_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database with parts recorded before part numbers were reserved: the counter starts
    after the highest recorded number (none is handed out again), their checksum is None."""
    path = tmp_path / "parts.db"
    steps = sqlite_registry.SCHEMA_STEPS
    monkeypatch.setattr(sqlite_registry, "SCHEMA_STEPS", steps[:3])  # the previous release's
    older = SqliteRegistry(path)
    await older.open()
    await older.close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO uploads (id, length, offset, created, updated, state) VALUES"
            " ('old', 100, 20, 1, 2, 'active'), ('bare', 10, 0, 1, 2, 'active')"
        )
        conn.executemany(
            "INSERT INTO upload_parts VALUES ('old', ?, ?, 10)", [(1, "e1"), (2, "e2")]
        )
    conn.close()
    monkeypatch.setattr(sqlite_registry, "SCHEMA_STEPS", steps)
    registry = SqliteRegistry(path)
    await registry.open()
    try:
        assert await registry.parts("old") == [Part(1, "e1", 10), Part(2, "e2", 10)]
        assert await registry.reserve_part("old") == 3
        assert await registry.reserve_part("bare") == 1
    finally:
        await registry.close()


async def check_previous_rows(registry: Registry) -> None:
    """The previous release's job and delivery rows carry on under leases."""
    assert await registry.requeue_lapsed_jobs() == ["running"]  # its claim has no lease
    claimed = await registry.claim_next_job("me", HELD)
    assert claimed is not None and (claimed.id, claimed.run) == ("queued", 1)
    (due,) = await registry.due_deliveries(everything=True)
    again = await registry.claim_delivery(due.id, "me", HELD)
    assert again is not None and again.attempts == 2


async def test_sqlite_driver_errors_become_backend_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    registry = SqliteRegistry(path)
    await registry.open()
    try:
        with sqlite3.connect(path) as other:  # breaks the schema behind the registry's back
            other.execute("DROP TABLE upload_parts")
        other.close()
        with pytest.raises(BackendUnavailable) as raised:
            await registry.parts("u")
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    finally:
        await registry.close()


def run_in_threads(worker: Callable[[int], Awaitable[None]], count: int) -> None:
    """`worker(0..count-1)` at once, each on a thread and event loop of its own (as worker
    processes of one host would), until all are done."""
    threads = [threading.Thread(target=anyio.run, args=(worker, n)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_sqlite_workers_in_threads_open_and_claim_exactly_once(tmp_path: Path) -> None:
    """Worker processes of one host: connections of their own opening one new file at the
    same moment, then racing for jobs from threads of their own (not one event loop)."""
    path = tmp_path / "shared.db"
    workers = 8
    jobs = [f"j{number:02}" for number in range(40)]
    barrier = threading.Barrier(workers)
    claims: list[list[str]] = []

    async def worker(number: int) -> None:
        registry = SqliteRegistry(path)
        barrier.wait(timeout=10)
        await registry.open()
        try:
            if number == 0:
                for job_id in jobs:
                    await registry.create_job(job_id, ["csv"], 1)
            barrier.wait(timeout=10)  # every job is queued before anyone claims
            mine = []
            while (job := await registry.claim_next_job(f"w{number}", HELD)) is not None:
                mine.append(job.id)
            claims.append(mine)
        finally:
            await registry.close()

    run_in_threads(worker, workers)
    assert len(claims) == workers
    assert sorted(flat(claims)) == jobs


def test_sqlite_workers_in_threads_reserve_each_part_number_once(tmp_path: Path) -> None:
    """Worker processes of one host reserve numbers for one upload from connections and
    threads of their own (on one event loop the SQLite calls never interleave)."""
    path = tmp_path / "shared.db"
    workers, each = 4, 25
    barrier = threading.Barrier(workers)
    numbers: list[list[int]] = []

    async def worker(number: int) -> None:
        registry = SqliteRegistry(path)
        await registry.open()
        try:
            if number == 0:
                await new_upload(registry, "u")
            barrier.wait(timeout=10)  # the upload exists before anyone reserves
            numbers.append([await registry.reserve_part("u") for _ in range(each)])
        finally:
            await registry.close()

    run_in_threads(worker, workers)
    assert sorted(n for mine in numbers for n in mine) == list(range(1, workers * each + 1))


def test_sqlite_workers_in_threads_restart_a_job_once(tmp_path: Path) -> None:
    """Worker processes of one host asked to reprocess the same upload at the same moment:
    one queues the run."""
    path = tmp_path / "shared.db"
    workers = 8
    barrier = threading.Barrier(workers)
    wins: list[bool] = []

    async def worker(number: int) -> None:
        registry = SqliteRegistry(path)
        await registry.open()
        try:
            if number == 0:
                await new_upload(registry, "u", offset=100, state=COMPLETE)
            barrier.wait(timeout=10)  # the upload exists before anyone restarts
            wins.append(await registry.restart_job("u", ["csv"], number))
        finally:
            await registry.close()

    run_in_threads(worker, workers)
    assert sorted(wins) == [False] * (workers - 1) + [True]
