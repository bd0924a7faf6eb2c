"""What the harness does to the cluster, and what it counts while doing it.

Four scenarios, each returning a :class:`Counts` whose ``problems`` list every
check that failed (empty means the scenario passed):

1. :func:`round_robin` — SDK sessions, one after another, of ``count`` calls;
   nginx sends each call to another instance than the one before, and the
   session's counter must end exact, with no 404.
2. :func:`crash` — SIGKILL the instance producing a stream mid-stream; the
   SDK client's resume lands elsewhere, gets every stored event, then the
   orphaned-stream error once the producer's lease lapses.
3. :func:`rolling_restart` — many concurrent sessions doing ``count`` calls
   and long streams while every instance in turn is SIGTERMed, waited for and
   started again on its port: no event lost or duplicated, no 5xx, every
   session still usable afterwards.
4. :func:`store_outage` — the relay to the store is cut and restored: requests
   in between get 503, everything stored before is still there, and service
   resumes without anyone doing anything.

Clients only ever talk to nginx. The only knowledge a scenario has of which
instance did what is the pid the tools put in their answers and progress
messages, and nginx's access log (which upstream answered, with what status).
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from mcp.shared.exceptions import MCPError

from mcp_session_mw.streams import MSG_STREAM_ORPHANED, STREAM_ORPHANED

from .client import Session, StreamRecord, open_session
from .harness import Cluster
from .nginx import statuses_by_cause
from .procs import Child

STREAM_LIMIT = 90.0
"""Seconds after which a stream call of the rolling restart counts as never answered; its
100 steps take seconds."""
MAX_PROBLEMS = 20
"""Problems listed one by one per scenario; the rest are only counted."""


@dataclass(frozen=True)
class Plan:
    """How big each scenario is: :data:`FULL` for the demo and the report, :data:`CI` for CI."""

    round_robin_sessions: int = 5
    calls_per_session: int = 100
    crash_steps: int = 200
    crash_kill_at: int = 30
    crash_hold_at: int = 60
    rolling_sessions: int = 50
    rolling_seconds: float = 120.0
    stream_steps: int = 100
    stream_delay_ms: int = 20
    restart_pause: float = 2.0
    """Seconds between one instance being back and the next one being stopped."""
    route_around: bool = True
    """Take an instance out of nginx's rotation (a reload) just before its SIGTERM, as a
    deploy would; without it, a POST that reaches an instance in the instant it stops
    accepting is dropped unanswered and nginx answers 502."""
    drain_delay: float = 1.0
    """Seconds between taking an instance out of the rotation and its SIGTERM."""
    outage_sessions: int = 5
    outage_seconds: float = 5.0


FULL = Plan()
CI = Plan(
    round_robin_sessions=2,
    rolling_sessions=10,
    rolling_seconds=15.0,
    restart_pause=0.5,
    outage_seconds=3.0,
)

HANG_SLACK = 60.0
"""Added to every scenario's expected length for its fail_after: it bounds hangs only."""
RECOVERY_BOUND = 60.0
"""How long sessions may take to get a success after the store is back before it counts as
not recovering (a bound on a hang, not a speed requirement)."""


@dataclass
class Counts:
    scenario: str
    store: str
    seconds: float = 0.0
    sessions: int = 0
    requests: int = 0
    """HTTP responses nginx logged during the scenario."""
    tool_calls: int = 0
    streams: int = 0
    events: int = 0
    """Progress notifications the clients received."""
    lost: int = 0
    duplicated: int = 0
    failed_calls: Counter[str] = field(default_factory=Counter)
    """Tool calls that ended in an error, by the error's message."""
    http: Counter[str] = field(default_factory=Counter)
    """404 and 5xx responses by status, method and who made them (nginx or an instance)."""
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    def check(self, ok: bool, problem: str | Callable[[], str]) -> bool:
        if not ok:
            self.problem_count += 1
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append(problem if isinstance(problem, str) else problem())
        return ok

    def add_stream(self, record: StreamRecord) -> None:
        self.streams += 1
        self.events += len(record.progress)
        self.lost += record.lost
        self.duplicated += record.duplicated

    def server_errors(self) -> int:
        return sum(n for cause, n in self.http.items() if cause.startswith("5"))


Say = Callable[[str], None]


class _Bound:
    """``fail_after`` that turns a hang into a problem (with the cluster's recent logs)."""

    def __init__(
        self,
        cluster: Cluster,
        counts: Counts,
        seconds: float,
        what: str,
        describe: Callable[[], str] = str,
    ) -> None:
        self.cluster, self.counts, self.seconds, self.what = cluster, counts, seconds, what
        self.describe = describe
        self.hung = False
        self._scope = anyio.CancelScope()

    def __enter__(self) -> _Bound:
        self._scope = anyio.move_on_after(self.seconds)
        self._scope.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> bool:
        swallowed = self._scope.__exit__(*exc_info)  # type: ignore[arg-type]
        if self._scope.cancelled_caught:
            self.hung = True
            self.counts.check(
                False,
                f"{self.what} did not finish within {self.seconds:.0f} s (a hang)\n"
                f"{self.describe()}\n{self.cluster.diagnostics()}",
            )
        return bool(swallowed)


class _Watch:
    """The nginx log and the clock from a scenario's start."""

    def __init__(self, cluster: Cluster, counts: Counts) -> None:
        self.cluster = cluster
        self.counts = counts
        self.offset = cluster.nginx.log_offset()
        self.began = time.monotonic()

    def finish(self) -> Counts:
        lines = self.cluster.nginx.access_lines(self.offset)
        self.counts.requests = len(lines)
        self.counts.http = statuses_by_cause(lines)
        self.counts.seconds = time.monotonic() - self.began
        return self.counts


# -- 1. round robin ------------------------------------------------------------------------


async def round_robin(cluster: Cluster, plan: Plan, say: Say) -> Counts:
    counts = Counts("round robin", cluster.spec.name)
    watch = _Watch(cluster, counts)
    calls = plan.calls_per_session
    with _Bound(cluster, counts, HANG_SLACK + calls * plan.round_robin_sessions, "round robin"):
        for number in range(1, plan.round_robin_sessions + 1):
            # One session at a time: nginx's rotation is global, so only a lone
            # client is guaranteed a different instance on every call.
            async with open_session(cluster.url, f"round-robin-{number}") as session:
                counts.sessions += 1
                previous: int | None = None
                pids: set[int] = set()
                for call in range(1, calls + 1):
                    counts.tool_calls += 1
                    try:
                        value, pid = await session.count()
                    except MCPError as exc:
                        counts.failed_calls[exc.message] += 1
                        continue
                    counts.check(
                        value == call, f"session {number}: call {call} was counted as {value}"
                    )
                    counts.check(
                        pid != previous,
                        f"session {number}: calls {call - 1} and {call} both ran in pid {pid}",
                    )
                    previous = pid
                    pids.add(pid)
                counts.check(
                    pids == cluster.pids(),
                    f"session {number} reached pids {sorted(pids)}, not {sorted(cluster.pids())}",
                )
                counts.check(session.counted == calls, f"session {number}: failed calls")
                counts.check(
                    session.wire.count("404") == 0, f"session {number} got 404: {session.wire}"
                )
            say(f"  session {number}: {session.counted} calls counted, over pids {sorted(pids)}")
    watch.finish()
    counts.check(not counts.http, lambda: f"404/5xx responses: {dict(counts.http)}")
    return counts


# -- 2. SIGKILL mid-stream -------------------------------------------------------------------


async def crash(cluster: Cluster, plan: Plan, say: Say) -> Counts:
    counts = Counts("SIGKILL mid-stream", cluster.spec.name)
    watch = _Watch(cluster, counts)
    killed: list[tuple[Child, float]] = []

    async def kill_producer(record: StreamRecord) -> None:
        if len(record.progress) == plan.crash_kill_at and not killed:
            [pid] = record.pids
            instance = cluster.instance_of(pid)
            instance.send_signal(signal.SIGKILL)
            killed.append((instance, time.monotonic()))
            say(f"  step {plan.crash_kill_at}: SIGKILL {instance.name} (pid {pid})")

    lease = cluster.stream_lease
    with _Bound(cluster, counts, HANG_SLACK + lease * 3, "the killed stream") as bound:
        async with open_session(cluster.url, "crash") as session:
            counts.sessions += 1
            counts.tool_calls += 1
            record = await session.stream(
                plan.crash_steps, delay_ms=5, hold_at=plan.crash_hold_at, on_step=kill_producer
            )
            if record.error is not None:
                counts.failed_calls[record.error] += 1
            resumes = list(session.wire.resumed_from)
            # Read before the client's exit deletes the session (and its events).
            stored = await _stored_progress(cluster, session, record.stream_id)
            # The session outlives its dead producer: the next call works.
            value, _ = await session.count()
            counts.tool_calls += 1
            counts.check(value == 1, f"the session's first count after the crash was {value}")
    if bound.hung or not counts.check(bool(killed), "the producer was never killed"):
        await cluster.ensure_all_running()
        return watch.finish()
    instance, killed_at = killed[0]
    # Lost and duplicated here are measured against what the store holds: the
    # producer died before it made the rest.
    counts.streams, counts.events = 1, len(record.progress)
    counts.lost = len(set(stored) - set(record.progress))
    counts.duplicated = record.duplicated
    counts.check(
        (record.error_code, record.error) == (STREAM_ORPHANED, MSG_STREAM_ORPHANED),
        f"the stream ended with {record.error_code} {record.error!r}, not the orphan error",
    )
    counts.check(
        record.progress == list(range(1, len(record.progress) + 1)),
        f"progress was not 1..k in order: {record.progress}",
    )
    counts.check(
        plan.crash_kill_at <= len(record.progress) <= plan.crash_hold_at,
        f"{len(record.progress)} steps arrived",
    )
    counts.check(bool(resumes), "the client never resumed with Last-Event-ID")
    counts.check(
        sorted(stored) == sorted(record.progress),
        f"stored steps {len(stored)} != received {len(record.progress)}",
    )
    took = record.ended - killed_at
    await instance.start()
    watch.finish()
    lines = cluster.nginx.access_lines(watch.offset)
    answered_by = [
        line.upstream.rsplit(", ", 1)[-1]
        for line in lines
        if line.method == "GET" and line.last_event_id.startswith(f"{record.stream_id}.")
    ]
    counts.check(
        bool(answered_by) and f"127.0.0.1:{instance.port}" not in answered_by,
        f"the resume was answered by {answered_by}, the killed instance is :{instance.port}",
    )
    counts.notes.append(
        f"{len(record.progress)} of {len(stored)} stored steps replayed, then the orphan "
        f"error {took:.1f} s after the kill (lease {lease:g} s, client retry 1 s)"
    )
    say(f"  {counts.notes[-1]}; {instance.name} restarted")
    return counts


async def _stored_progress(cluster: Cluster, session: Session, stream_id: str) -> list[int]:
    """The progress values the store holds for one stream of the session."""
    values: list[int] = []
    async with cluster.spec.connect() as store:
        events = await store.read_events(session.wire.session_id, stream_id, 0, 10_000)
    for event in events:
        message = json.loads(event.data) if event.data else None
        if isinstance(message, dict) and message.get("method") == "notifications/progress":
            values.append(int(message["params"]["progress"]))
    return values


# -- 3. rolling restart ----------------------------------------------------------------------


async def _report_unanswered(
    cluster: Cluster, counts: Counts, unanswered: list[tuple[Session, StreamRecord]]
) -> None:
    """Stream calls never answered within ``STREAM_LIMIT``: each a problem, with its store state."""
    for session, record in unanswered:
        async with cluster.spec.connect() as store:
            state = await store.load_stream(session.wire.session_id, record.stream_id)
            events = await store.read_events(session.wire.session_id, record.stream_id, 0, 10_000)
        counts.check(
            False,
            f"stream {record.stream_id} unanswered: {record.error}; {len(events)} events "
            f"stored; {state}",
        )


async def _stream_in_store(cluster: Cluster, session: Session | None) -> str:
    """What the store holds of a session's latest stream (for the report of a hang)."""
    if session is None or not session.wire.stream_ids:
        return "no stream"
    sid, (_, stream_id) = session.wire.session_id, session.wire.stream_ids[-1]
    async with cluster.spec.connect() as store:
        record = await store.load(sid)
        state = await store.load_stream(sid, stream_id)
        last = state.last_seq if state is not None else 0
        events = await store.read_events(sid, stream_id, max(0, last - 3), 10)
    tail = [(e.seq, e.data[:120]) for e in events]
    alive = record is not None
    return f"in the store: session {sid[:8]} alive={alive}, stream {stream_id}: {state}; {tail}"


def _doing(session: Session, what: str, since: float) -> Callable[[], str]:
    def describe() -> str:
        wire = session.wire
        return (
            f"{what} for {time.monotonic() - since:.0f} s; session {wire.session_id[:8]}, "
            f"streams {wire.stream_ids[-2:]}, resumed from {wire.resumed_from[-3:]}, "
            f"statuses {dict(wire.statuses)}"
        )

    return describe


@dataclass
class _Restart:
    instance: str
    pid: int
    signalled: float
    exited: float


@dataclass
class _Failure:
    message: str
    started: float
    ended: float


def _overlaps(restarts: list[_Restart], started: float, ended: float, pid: int | None) -> bool:
    """Was ``pid`` (any instance, if None) shutting down at some time between ``started`` and
    ``ended``? (From its SIGTERM to its exit: it still accepts for a moment after the signal.)"""
    return any(
        (pid is None or r.pid == pid) and started <= r.exited and ended >= r.signalled
        for r in restarts
    )


async def rolling_restart(cluster: Cluster, plan: Plan, say: Say) -> Counts:
    counts = Counts("rolling restart", cluster.spec.name)
    watch = _Watch(cluster, counts)
    stop = anyio.Event()
    restarts: list[_Restart] = []
    records: list[StreamRecord] = []
    failures: list[_Failure] = []
    applied_failed: list[int] = []
    """Per successful count: how many failed calls before it had counted all the same."""
    unusable: list[str] = []

    activity: dict[int, Callable[[], str]] = {}
    """What each client still running is doing, for the report of a hang."""
    sessions: dict[int, Session] = {}
    unanswered: list[tuple[Session, StreamRecord]] = []

    async def client(number: int) -> None:
        activity[number] = lambda: "opening its session"
        async with open_session(cluster.url, f"rolling-{number}") as session:
            sessions[number] = session
            counts.sessions += 1
            expected = 0
            unsure = 0  # failed calls since the last success: each may have counted
            turn = number
            while not stop.is_set():
                counts.tool_calls += 1
                turn += 1
                if turn % 2:
                    started = time.monotonic()
                    activity[number] = _doing(session, "count", started)
                    try:
                        value, _ = await session.count()
                    except MCPError as exc:
                        failures.append(_Failure(exc.message, started, time.monotonic()))
                        unsure += 1
                        continue
                    counts.check(
                        expected < value <= expected + 1 + unsure,
                        f"session {number}: count {value}, not {expected + 1}..+{unsure}",
                    )
                    applied_failed.append(value - expected - 1)
                    expected, unsure = value, 0
                else:
                    activity[number] = _doing(session, "stream", time.monotonic())
                    record = await session.stream(
                        plan.stream_steps, delay_ms=plan.stream_delay_ms, limit=STREAM_LIMIT
                    )
                    records.append(record)
                    if record.unanswered:
                        unanswered.append((session, record))
            # Still usable once every instance has been replaced.
            activity[number] = _doing(session, "final calls", time.monotonic())
            try:
                value, _ = await session.count()
                record = await session.stream(10)
            except MCPError as exc:
                unusable.append(f"session {number}: {exc.message}")
                return
            counts.tool_calls += 2
            counts.check(
                expected < value <= expected + 1 + unsure,
                f"session {number}: final count {value}, not {expected + 1}..+{unsure}",
            )
            applied_failed.append(value - expected - 1)
            counts.check(record.error is None and record.lost == 0, f"session {number}: {record}")
            activity[number] = lambda: "leaving"
        del activity[number]

    async def restarter() -> None:
        deadline = time.monotonic() + plan.rolling_seconds
        await anyio.sleep(min(3.0, plan.rolling_seconds / 5))
        cycle = 0
        while cycle == 0 or time.monotonic() < deadline:
            cycle += 1
            for instance in cluster.instances:
                if cycle > 1 and time.monotonic() >= deadline:
                    break
                pid = instance.pid
                if plan.route_around:
                    await cluster.nginx.route_around(frozenset({instance.port}))
                    # Requests nginx sent before the reload reach uvicorn before it stops
                    # reading (what a preStop delay is for).
                    await anyio.sleep(plan.drain_delay)
                signalled = time.monotonic()
                took = await instance.stop(signal.SIGTERM)
                restarts.append(_Restart(instance.name, pid, signalled, signalled + took))
                await instance.start()
                if plan.route_around:
                    await cluster.nginx.route_around(frozenset())
                say(f"  {instance.name}: SIGTERM pid {pid}, exited after {took:.1f} s, restarted")
                await anyio.sleep(plan.restart_pause)
        stop.set()

    limit = HANG_SLACK * 2 + plan.rolling_seconds * 2

    def still_running() -> str:
        return "\n".join(f"client {n}: {what()}" for n, what in sorted(activity.items()))

    with _Bound(cluster, counts, limit, "the rolling restart", still_running) as bound:
        async with anyio.create_task_group() as tg:
            for number in range(plan.rolling_sessions):
                tg.start_soon(client, number)
                await anyio.sleep(0.02)
            tg.start_soon(restarter)
    watch.finish()
    if bound.hung:
        for number in sorted(activity):
            counts.problems.append(await _stream_in_store(cluster, sessions.get(number)))
        return counts

    # A stream "lost its producer" when the pid that made its events (or, if it
    # got none, any instance) was SIGTERMed while it ran.
    survived: list[StreamRecord] = []
    stopped: list[StreamRecord] = []
    for record in records:
        producer = record.producer if record.pids else None
        hit = _overlaps(restarts, record.started, record.ended, producer)
        (stopped if hit else survived).append(record)
    counts.streams = len(records)
    counts.events = sum(len(r.progress) for r in records)
    counts.lost = sum(r.lost for r in survived)
    counts.duplicated = sum(r.duplicated for r in records)
    await _report_unanswered(cluster, counts, unanswered)
    for record in survived:
        if record.error is not None and not record.unanswered:
            counts.failed_calls[record.error] += 1
    for failure in failures:
        if not _overlaps(restarts, failure.started, failure.ended, None):
            counts.failed_calls[failure.message] += 1
    counts.check(counts.lost == 0, f"{counts.lost} events lost in streams whose producer lived")
    counts.check(counts.duplicated == 0, f"{counts.duplicated} events duplicated")
    counts.check(not counts.server_errors(), lambda: f"5xx responses: {dict(counts.http)}")
    counts.check(not counts.failed_calls, lambda: f"failed calls: {dict(counts.failed_calls)}")
    counts.check(not unusable, lambda: f"sessions unusable afterwards: {unusable}")
    counts.check(
        {r.instance for r in restarts} == {i.name for i in cluster.instances},
        "not every instance was restarted",
    )
    # A stream whose producer stopped must end in an error response after an
    # unbroken prefix of its events: nothing made may go missing, nobody may hang.
    for record in stopped:
        prefix = record.progress == list(range(1, len(record.progress) + 1))
        counts.check(
            record.unanswered or (prefix and (record.error is not None or not record.lost)),
            f"a stream whose producer was stopped got {record.progress[:5]}... {record.error}",
        )
    ended = Counter(r.error for r in stopped if r.error is not None)
    complete = sum(r.error is None for r in stopped)
    hit_calls = Counter(
        f.message for f in failures if _overlaps(restarts, f.started, f.ended, None)
    )
    longest = max((r.exited - r.signalled for r in restarts), default=0.0)
    how = f"out of nginx's rotation, {plan.drain_delay:g} s, " if plan.route_around else ""
    counts.notes.append(
        f"{len(restarts)} restarts ({how}SIGTERM, wait for exit, start on the same port"
        f"{', back in the rotation' if plan.route_around else ''}); longest exit {longest:.1f} s"
    )
    cut_off = (
        f", {sum(ended.values())} ended with {_causes(ended)} after an unbroken prefix of "
        f"their events ({sum(r.lost for r in stopped)} steps never made)"
        if ended
        else ""
    )
    counts.notes.append(
        f"{len(stopped)} streams had their producer SIGTERMed mid-stream: "
        f"{complete} completed{cut_off}"
    )
    if hit_calls:
        counts.notes.append(
            f"count calls in flight at a SIGTERM that failed: {_causes(hit_calls)}; "
            f"{sum(applied_failed)} of the failed calls had counted (the tool ran, its answer "
            "was cut off)"
        )
    return counts


def _causes(counter: Counter[str] | Counter[str | None]) -> str:
    return ", ".join(f"{n} x {cause!r}" for cause, n in counter.items()) or "none"


# -- 4. store outage ---------------------------------------------------------------------------


async def _retry_count(session: Session) -> tuple[int, int]:
    """``count``, tried again while the cluster answers 503 (bounded by the caller)."""
    while True:
        try:
            return await session.count()
        except MCPError:
            if session.wire.last_call_status != 503:
                raise
            await anyio.sleep(0.2)


async def store_outage(cluster: Cluster, plan: Plan, say: Say) -> Counts:
    counts = Counts("store outage", cluster.spec.name)
    watch = _Watch(cluster, counts)
    outage: list[float] = []  # [cut done, restore done]
    stop = anyio.Event()
    recovered: dict[int, float] = {}
    all_recovered = anyio.Event()
    finished: list[tuple[Session, StreamRecord]] = []
    ready = anyio.Event()
    """Set once every session has its stream stored: the outage comes after that."""
    during: Counter[str] = Counter()
    expected: dict[int, tuple[int, int]] = {}

    async def client(number: int) -> None:
        async with open_session(cluster.url, f"outage-{number}") as session:
            counts.sessions += 1
            counts.tool_calls += 1
            record = await session.stream(20)
            counts.add_stream(record)
            counts.check(record.error is None, f"session {number}: stream before the outage")
            finished.append((session, record))
            if len(finished) == plan.outage_sessions:
                ready.set()
            unsure = 0
            while not stop.is_set():
                counts.tool_calls += 1
                try:
                    await session.count()
                except MCPError as exc:
                    counts.failed_calls[exc.message] += 1
                    if len(outage) == 1:
                        status = session.wire.last_call_status
                        during["503" if status == 503 else f"{exc.message!r} on a {status}"] += 1
                    # A 503 is answered before the tool runs. A stream that began
                    # and then failed (the same message, on a 200) may have counted.
                    unsure += session.wire.last_call_status != 503
                else:
                    if len(outage) == 2 and number not in recovered:
                        recovered[number] = time.monotonic() - outage[1]
                        if len(recovered) == plan.outage_sessions:
                            all_recovered.set()
                await anyio.sleep(0.1)
            expected[number] = (session.counted + 1, session.counted + 1 + unsure)
            value, _ = await session.count()
            low, high = expected[number]
            counts.check(
                low <= value <= high, f"session {number}: count {value}, not {low}..{high}"
            )
            # Every stream stored before the outage replays in full, from the store.
            replayed = await _stored_progress(cluster, session, record.stream_id)
            counts.check(
                replayed == list(range(1, 21)), f"session {number}: stored steps {replayed}"
            )

    in_flight: list[StreamRecord] = []
    restored = anyio.Event()

    streaming = anyio.Event()

    async def started(record: StreamRecord) -> None:
        streaming.set()

    async def long_stream() -> None:
        await ready.wait()
        async with open_session(cluster.url, "outage-stream") as session:
            counts.sessions += 1
            counts.tool_calls += 2
            in_flight.append(await session.stream(100, delay_ms=50, on_step=started))
            await restored.wait()
            value, _ = await _retry_count(session)
            counts.check(value == 1, f"the long stream's session counted {value}")

    async def operator() -> None:
        await ready.wait()
        await streaming.wait()
        await anyio.sleep(1.0)  # a little ordinary traffic first
        await cluster.cut_store()
        outage.append(time.monotonic())
        say(f"  store cut (relay refuses and drops connections) for {plan.outage_seconds:g} s")
        await anyio.sleep(plan.outage_seconds)
        await cluster.restore_store()
        outage.append(time.monotonic())
        restored.set()
        with anyio.move_on_after(RECOVERY_BOUND):
            await all_recovered.wait()
        stop.set()

    limit = HANG_SLACK + RECOVERY_BOUND + plan.outage_seconds * 3
    with _Bound(cluster, counts, limit, "the store outage") as bound:
        async with anyio.create_task_group() as tg:
            for number in range(plan.outage_sessions):
                tg.start_soon(client, number)
            tg.start_soon(long_stream)
            tg.start_soon(operator)
    watch.finish()
    if bound.hung:
        if len(outage) == 1:
            await cluster.restore_store()
        return counts
    counts.check(
        len(recovered) == plan.outage_sessions,
        f"only {len(recovered)} of {plan.outage_sessions} sessions got service back",
    )
    counts.check(during["503"] > 0, f"no 503 during the outage: {dict(during)}")
    other = {k: v for k, v in during.items() if k != "503"}
    counts.notes.append(
        f"during the outage {during['503']} calls were answered 503"
        + (f", and {_causes(Counter(other))}" if other else "")
    )
    if recovered:
        counts.notes.append(
            f"first success after the store came back: {min(recovered.values()):.1f} s "
            f"(slowest session {max(recovered.values()):.1f} s)"
        )
    for record in in_flight:
        # Not counted as lost: past the cut, its events could not be stored, and
        # the client is told so (the error ends the stream).
        counts.streams += 1
        counts.events += len(record.progress)
        counts.duplicated += record.duplicated
        outcome = "completed" if record.error is None else f"ended with {record.error!r}"
        counts.notes.append(
            f"a stream running across the cut {outcome} after {len(record.progress)} of "
            f"{record.n} steps"
        )
    return counts
