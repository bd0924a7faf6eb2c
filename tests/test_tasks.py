"""Background tasks: each contains its failures, duties come back, a group that ends is replaced."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from starlette.types import Message

from mcp_session_mw import MemoryStore, logs
from mcp_session_mw import tasks as tasks_module
from mcp_session_mw.durable import QUEUE_SIZE, DurableResponse
from mcp_session_mw.jsonrpc import INTERNAL_ERROR
from mcp_session_mw.protocol import mint_session_id
from mcp_session_mw.records import SessionRecord
from mcp_session_mw.streams import MSG_NO_RESPONSE, StreamOptions
from mcp_session_mw.tasks import (
    MSG_CLEANUP_FAILED,
    MSG_GROUP_REPLACED,
    MSG_TASK_FAILED,
    MSG_TASKS_ENDED,
    Tasks,
)

pytestmark = pytest.mark.anyio

LIMIT = 5.0
"""Bounds a hang; nothing waits on it to pass."""


class Boom(Exception):
    pass


@pytest.fixture(autouse=True)
def fresh_failure_log() -> None:
    logs.log_failure.reset()


def lines(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


async def test_a_failing_task_is_logged_ends_what_it_owned_and_spares_its_siblings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "mcp_session_mw")
    sibling_ran = anyio.Event()
    cleaned: list[str] = []

    async def fails() -> None:
        raise Boom("an upstream dropped")

    async def cleanup() -> None:
        cleaned.append("ended")

    async def sibling() -> None:
        await anyio.sleep(0.01)
        sibling_ran.set()

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tasks = Tasks(tg)
            tasks.spawn("the sibling", sibling)
            for _ in range(3):
                tasks.spawn("a failing task", fails, on_failure=cleanup)
            await sibling_ran.wait()
    assert cleaned == ["ended"] * 3
    [line] = lines(caplog, MSG_TASK_FAILED.format("a failing task"))
    assert "Boom: an upstream dropped" in line
    assert "Traceback" not in caplog.text


async def test_a_failing_cleanup_is_logged_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "mcp_session_mw")

    async def fails() -> None:
        raise Boom

    async def cleanup() -> None:
        raise Boom("cleanup")

    async with anyio.create_task_group() as tg:
        Tasks(tg).spawn("a task", fails, on_failure=cleanup)
    assert lines(caplog, MSG_CLEANUP_FAILED.format("a task"))


async def test_cancellation_passes_through_and_a_cancelled_duty_is_not_restarted() -> None:
    runs: list[int] = []
    started = anyio.Event()

    async def duty() -> None:
        runs.append(1)
        started.set()
        await anyio.sleep_forever()

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tasks = Tasks(tg)
            tasks.keep("a duty", duty)
            await started.wait()
            tg.cancel_scope.cancel()
    assert runs == [1]


async def test_a_task_raising_cancellation_is_not_taken_for_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "mcp_session_mw")
    cleaned: list[bool] = []

    async def cancelled() -> None:
        raise anyio.get_cancelled_exc_class()

    async def cleanup() -> None:
        cleaned.append(True)

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            Tasks(tg).spawn("a task", cancelled, on_failure=cleanup)
        scope.cancel()
    assert cleaned == []
    assert not lines(caplog, MSG_TASK_FAILED.format("a task"))


async def test_a_failing_duty_is_started_again_until_it_returns() -> None:
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise Boom

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            Tasks(tg).keep("a flaky duty", flaky)
    assert len(runs) == 3


async def test_a_duty_failing_again_at_once_waits_longer_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)
        await anyio.lowlevel.checkpoint()

    monkeypatch.setattr(tasks_module, "sleep", no_wait)
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) <= 12:
            raise Boom

    async with anyio.create_task_group() as tg:
        Tasks(tg).keep("a flaky duty", flaky)
    first = tasks_module.RESTART_DELAY
    assert waits[:4] == [first, 2 * first, 4 * first, 8 * first]
    assert max(waits) == tasks_module.MAX_RESTART_DELAY
    assert len(waits) == 12


async def test_a_group_that_ends_is_replaced_and_its_duties_and_later_tasks_run_in_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "mcp_session_mw")
    tasks = Tasks()
    stop = anyio.Event()
    duty_runs: list[int] = []
    duty_started = anyio.Event()
    later_ran = anyio.Event()

    async def duty() -> None:
        duty_runs.append(1)
        duty_started.set()
        await anyio.sleep_forever()

    async def raw_failure() -> None:
        raise Boom("started on the group directly, not contained")

    async def later() -> None:
        later_ran.set()

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as host:
            await host.start(tasks.serve, stop)
            tasks.keep("a duty", duty)
            await duty_started.wait()
            duty_started = anyio.Event()
            group = tasks._group
            assert group is not None
            group.start_soon(raw_failure)  # the one way left to end the group
            while tasks._group is not None:  # a checkpoint at a time: no sleep to outrun
                await anyio.lowlevel.checkpoint()
            tasks.spawn("a later task", later)  # asked for between two groups
            assert not later_ran.is_set()
            await duty_started.wait()
            await later_ran.wait()
            assert tasks.replaced == 1
            assert tasks._group is not None
            assert tasks._group is not group
            stop.set()
    assert duty_runs == [1, 1]
    [line] = lines(caplog, MSG_GROUP_REPLACED)
    assert "started on the group directly" in line


async def test_no_task_starts_once_its_group_is_gone_for_good() -> None:
    async def nothing() -> None:
        pass

    async with anyio.create_task_group() as tg:
        hosted = Tasks(tg)
    with pytest.raises(RuntimeError, match=MSG_TASKS_ENDED):
        hosted.spawn("a late task", nothing)
    served, stop = Tasks(), anyio.Event()
    async with anyio.create_task_group() as host:
        await host.start(served.serve, stop)
        stop.set()
    with pytest.raises(RuntimeError, match=MSG_TASKS_ENDED):
        served.keep("a late duty", nothing)


async def test_serve_ends_when_told_and_cancels_what_runs() -> None:
    tasks = Tasks()
    stop = anyio.Event()
    ended = anyio.Event()

    async def duty() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            ended.set()

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as host:
            await host.start(tasks.serve, stop)
            tasks.keep("a duty", duty)
            await anyio.lowlevel.checkpoint()
            stop.set()
        assert ended.is_set()
    assert tasks.replaced == 0


# -- a durable response whose own task fails ----------------------------------------------------


def _event(message: dict[str, Any]) -> Message:
    body = b"event: message\ndata: " + json.dumps(message).encode() + b"\n\n"
    return {"type": "http.response.body", "body": body, "more_body": True}


def _progress(step: int) -> dict[str, Any]:
    params = {"progressToken": 3, "progress": step, "total": 9}
    return {"jsonrpc": "2.0", "method": "notifications/progress", "params": params}


async def test_a_durable_response_whose_writer_fails_ends_its_stream_with_the_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryStore()
    await store.open()
    now = time.time()
    record = SessionRecord(
        key="",
        protocol_version="2025-11-25",
        created_at=now,
        last_accessed=now,
        expires_at=now + 60,
    )
    session_id = mint_session_id()
    await store.create(session_id, record)
    sent: list[Message] = []
    ended = anyio.Event()

    async def client_send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            ended.set()

    async def broken_batch(batch: object) -> None:
        raise Boom("a bug in the writer")

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            durable = DurableResponse(
                store=store,
                session_id=session_id,
                request_id=3,
                protocol_version="2025-11-25",
                options=StreamOptions(),
                send=client_send,
                tasks=Tasks(tg),
            )
            durable.start({"type": "http.response.start", "status": 200, "headers": []})
            monkeypatch.setattr(durable, "_write_batch", broken_batch)
            await durable.body(_event(_progress(1)))  # not the answer: the writer takes it
            await ended.wait()  # the writer failed: the client has its error already
            for step in range(2, 2 + QUEUE_SIZE + 2):  # more than the queue holds: none waits
                await durable.body(_event(_progress(step)))
            await durable.finish()
            tg.cancel_scope.cancel()
    error = {"code": INTERNAL_ERROR, "message": MSG_NO_RESPONSE}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    lines = body.decode().splitlines()
    told = [json.loads(line[5:]) for line in lines if line.startswith("data:") and line[5:].strip()]
    assert told[-1] == {"jsonrpc": "2.0", "id": 3, "error": error}, body
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert [m for m in bodies if not m.get("more_body", False)] == [bodies[-1]]
    stored = await store.read_events(session_id, durable.stream_id)
    assert json.loads(stored[-1].data) == {"jsonrpc": "2.0", "id": 3, "error": error}
    state = await store.load_stream(session_id, durable.stream_id)
    assert state is not None
    assert state.done
