"""End to end on DynamoDB: two processes on one table count exactly; a restart keeps the session.

What tests/e2e/test_sdk_client.py checks on one SQLite file, here on a table
of moto's DynamoDB-compatible server (see :mod:`tests.dynamodb_server`): the
example ``01_sdk_server.py`` in two uvicorn processes, its ``count`` tool an
``update`` of the session state (a compare-and-swap on the version attribute).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import anyio
import httpx
import pytest

from mcp_session_mw.jsonrpc import INVALID_REQUEST, MSG_SESSION_NOT_FOUND

from ..dynamodb_server import dynamodb_table
from .server import run_server
from .test_sdk_client import (
    EXAMPLE,
    HTTP_TIMEOUT,
    MODES,
    assert_jsonrpc_error,
    headers_for,
    raw_count,
    raw_initialize,
    spawn,
    start_all,
    tool_call,
)

pytestmark = [pytest.mark.e2e, pytest.mark.dynamodb, pytest.mark.anyio]

INCREMENTS = 50
TEST_TIMEOUT = 90.0
"""Bounds a hang: two server start-ups and a hundred-odd requests on a shared two-core box."""


@pytest.fixture
def table_url() -> Iterator[str]:
    """A table of this test's own (created by the first process), dropped afterwards."""
    with dynamodb_table() as url:
        yield url


@pytest.mark.parametrize("mode", list(MODES))
async def test_two_processes_count_fifty_concurrent_increments_exactly(
    mode: str, table_url: str
) -> None:
    args = [EXAMPLE, "--store", table_url, *MODES[mode]]
    with anyio.fail_after(TEST_TIMEOUT), ExitStack() as stack:
        urls = start_all(stack, args, args)
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            session_id = await raw_initialize(http, urls[0])
            counts: list[int] = []

            async def call(request_id: int) -> None:
                url = urls[request_id % 2]
                counts.append(await raw_count(http, url, session_id, request_id))

            async with anyio.create_task_group() as tg:
                for request_id in range(1, INCREMENTS + 1):
                    tg.start_soon(call, request_id)
            assert sorted(counts) == list(range(1, INCREMENTS + 1))
            # Deleted through one process, the session is gone on the other too.
            deleted = await http.delete(urls[1], headers=headers_for(session_id))
            assert deleted.status_code == 200, deleted.text
            gone = await http.post(urls[0], json=tool_call(99), headers=headers_for(session_id))
            assert_jsonrpc_error(gone, 404, INVALID_REQUEST, MSG_SESSION_NOT_FOUND, 99)


async def test_session_survives_a_restart(table_url: str) -> None:
    """The first process is SIGKILLed; a new one on the same table serves the old id."""
    args = [EXAMPLE, "--store", table_url]
    with anyio.fail_after(TEST_TIMEOUT), spawn(args) as first, ExitStack() as later:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            session_id = await raw_initialize(http, first.url)
            assert [await raw_count(http, first.url, session_id, i) for i in (1, 2)] == [1, 2]
            first.kill()
            second = f"{later.enter_context(run_server(args))}/mcp"
            assert await raw_count(http, second, session_id, 3) == 3
            assert await raw_count(http, second, session_id, 4) == 4
