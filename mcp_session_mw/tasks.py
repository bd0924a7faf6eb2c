"""Background tasks that contain their own failures, in a task group replaced if it ends.

The middleware starts its background work (app-session workers and what they
run, durable responses' writers and timed duties, the stream watcher, the
janitor, the shutdown watch) through :class:`Tasks`. Each task runs
contained: an exception it raises is logged (one line per kind per
``FAILURE_LOG_INTERVAL``, see :mod:`mcp_session_mw.logs`), handed to the
task's ``on_failure`` (which ends what the task owned with the error its
client should see), and goes no further, so an app that fails mid-stream
costs that stream and never its siblings or the group. Cancellation is
never caught: on every anyio backend it is a ``BaseException``, and only
``Exception`` is.

Duties meant to run as long as the group (:meth:`Tasks.keep`) are started
again when they fail, after ``RESTART_DELAY`` (doubled while they fail again
at once, up to ``MAX_RESTART_DELAY``). :meth:`Tasks.serve` hosts
the middleware's group: should the group end anyway (a task started on it
directly, or its scope cancelled), it logs that, starts a new one, and
starts in it the kept duties still wanted and the tasks asked for in
between, instead of leaving every later request to fail on a dead group.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio import sleep
from anyio.abc import TaskGroup, TaskStatus

from .logs import log_failure

logger = logging.getLogger("mcp_session_mw")

RESTART_DELAY = 0.1
"""Seconds before a failed kept duty, or a group that ended, is started again."""
MAX_RESTART_DELAY = 30.0
"""A duty that fails again at once waits twice as long each time, up to this."""

# Messages tests assert on.
MSG_TASK_FAILED = "a background task failed ({}); the others run on"
"""``str.format``-ed with what the task does: each kind of task has its own rate limit."""
MSG_CLEANUP_FAILED = "ending what a failed background task owned failed ({})"
MSG_GROUP_REPLACED = "the middleware's background task group ended; a new one was started"
MSG_TASKS_ENDED = "no background task can be started: its task group has ended"

Func = Callable[..., Awaitable[Any]]


@dataclass(eq=False)
class _Task:
    what: str
    func: Func
    args: tuple[Any, ...]
    on_failure: Callable[[], Awaitable[Any]] | None = None
    keep: bool = False


async def _contained(task: _Task) -> bool:
    """Run the task once; True if it raised (logged, ``on_failure`` run), never raising itself."""
    try:
        await task.func(*task.args)
    except Exception:  # cancellation is a BaseException: it passes, as it must
        log_failure(logger, MSG_TASK_FAILED.format(task.what))
        if task.on_failure is not None:
            try:
                await task.on_failure()
            except Exception:
                log_failure(logger, MSG_CLEANUP_FAILED.format(task.what))
        return True
    return False


class Tasks:
    """Starts contained tasks in a task group (see the module doc).

    ``Tasks(group)`` starts them in a group the caller hosts; ``Tasks()``
    waits for :meth:`serve` to host one.
    """

    def __init__(self, group: TaskGroup | None = None) -> None:
        self._group = group
        self._served = group is None
        """True while :meth:`serve` hosts the group (or will): a group that ends has a successor."""
        self._waiting: list[_Task] = []
        """Tasks asked for while no group was running; the next group starts them."""
        self._kept: set[_Task] = set()
        """Kept duties that have not ended on their own: a new group starts them again."""
        self.replaced = 0
        """How many times :meth:`serve` had to start a new group."""

    def spawn(
        self,
        what: str,
        func: Func,
        *args: Any,
        on_failure: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        """Start ``func(*args)``; if it raises, log ``what`` failed and run ``on_failure``."""
        self._start(_Task(what, func, args, on_failure))

    def keep(self, what: str, func: Func, *args: Any) -> None:
        """Start ``func(*args)`` as a duty: started again if it fails, until it returns."""
        task = _Task(what, func, args, keep=True)
        self._kept.add(task)
        self._start(task)

    def _start(self, task: _Task) -> None:
        """Start the task in the group; if it has ended, in its successor (or raise, if none).

        A group being cancelled still takes it: the task runs to its first
        checkpoint, so its ``finally`` blocks run, as for every task of that group.
        """
        group = self._group
        if group is not None:
            try:
                group.start_soon(self._run, task, name=task.what)
                return
            except RuntimeError:
                pass
        if not self._served:
            self._kept.discard(task)
            raise RuntimeError(MSG_TASKS_ENDED)
        if not task.keep:  # a kept one is started from _kept
            self._waiting.append(task)

    async def _run(self, task: _Task) -> None:
        delay = RESTART_DELAY
        while True:
            began = anyio.current_time()
            if not await _contained(task):
                break
            if not task.keep:
                return
            if anyio.current_time() - began > delay:
                delay = RESTART_DELAY  # it ran a while: a new failure, not the same one again
            await sleep(delay)
            delay = min(2 * delay, MAX_RESTART_DELAY)
        self._kept.discard(task)

    async def serve(
        self, stop: anyio.Event, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Host the group until ``stop`` is set, then cancel what runs in it.

        A group that ends before ``stop`` is replaced, after ``RESTART_DELAY``.
        """
        started = False
        while not stop.is_set():
            try:
                async with anyio.create_task_group() as group:
                    self._group = group
                    waiting, self._waiting = self._waiting, []
                    for task in [*waiting, *self._kept]:
                        group.start_soon(self._run, task, name=task.what)
                    if not started:
                        started = True
                        task_status.started()
                    await stop.wait()
                    group.cancel_scope.cancel()
            except Exception as exc:
                self._replacing(exc)
            else:
                if not stop.is_set():
                    self._replacing(None)
            finally:
                self._group = None
                self._served = not stop.is_set()
            if self._served:
                await anyio.sleep(RESTART_DELAY)

    def _replacing(self, exc: BaseException | None) -> None:
        inner = getattr(exc, "exceptions", None)  # an exception group (built in from 3.11)
        while isinstance(inner, tuple) and inner:
            exc = inner[0]  # what ended the group, not anyio's wrapper
            inner = getattr(exc, "exceptions", None)
        self.replaced += 1
        log_failure(logger, MSG_GROUP_REPLACED, exc=exc)
