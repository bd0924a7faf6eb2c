"""``mcp-session-mw doctor``: checks a store's deployment and explains each finding in one line.

What it checks, in order: the store answers (and how fast); the SQL schema is
the one this release needs; this host's clock agrees with the store's (hosts
compare expiry times with their own clocks, so they must agree with each
other: the store is the common reference); on Redis, that it does not evict
keys when full, that it persists, and that every Cluster slot is served; on
PostgreSQL, ``synchronous_commit`` and that LISTEN/NOTIFY reaches this host;
and, with encryption keys, that they open the stored records.

It only reads: a SQL database without tables is reported, not set up.

Exit status: 0 healthy (warnings allowed), 1 a problem found, 2 bad usage,
3 the store cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from .errors import StoreUnavailableError
from .health import PROBE_KEY

if TYPE_CHECKING:
    from .stores.base import Store
    from .stores.dynamodb import DynamoDBStore
    from .stores.redis import RedisStore
    from .stores.sql import SQLStore

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_UNREACHABLE = 3
KEYS_ENV = "MCP_SESSION_ENCRYPTION_KEYS"
DEFAULT_TIMEOUT = 5.0
ROUND_TRIPS = 5
CLOCK_WARN = 0.5
"""Seconds of disagreement between this host and the store that earn a warning."""
CLOCK_PROBLEM = 2.0
"""Seconds of disagreement that are a problem: expiry and leases shift by that much."""
SAMPLE = 100
"""Session records the encryption check tries to open."""

OK, WARN, PROBLEM = "ok", "warn", "problem"
EVICTING = ("allkeys-lru", "allkeys-lfu", "allkeys-random")
VOLATILE = ("volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl")

# Findings tests assert on.
MSG_UNREACHABLE = "the store cannot be reached: {error}"
MSG_ANSWERS = "the store answers: {n} round trips, median {median:.2f} ms, slowest {worst:.2f} ms"
MSG_NO_TABLES = "no session tables with prefix {prefix!r}: run `mcp-session-mw db upgrade`"
MSG_SCHEMA_OLD = (
    "schema version {found}, this release needs {need}: run `mcp-session-mw db upgrade`"
)
MSG_SCHEMA_NEW = (
    "schema version {found} is newer than this release's {need}: upgrade mcp-session-mw"
)
MSG_SCHEMA_OK = "schema version {found} (current)"
MSG_TABLE_MISSING = "table {table} does not exist: run `mcp-session-mw db upgrade`"
MSG_TABLE_TTL_OFF = (
    "table {table}: DynamoDB's TTL is {status}, so expired items stay (and are billed) until "
    "the janitor removes them: run `mcp-session-mw db upgrade`"
)
MSG_TABLE_OK = "table {table} exists, TTL on attribute {attribute}"
MSG_CLOCK = "this host's clock and the store's differ by {skew:.3f} s (±{error:.3f} s)"
MSG_CLOCK_LOCAL = "the store is in this process or on this host: one clock"
MSG_EVICTING = (
    "maxmemory-policy is {policy}: a full Redis evicts session and event keys; "
    "set it to noeviction (and size maxmemory)"
)
MSG_EVICTING_UNLIMITED = (
    "maxmemory-policy is {policy}, with no maxmemory: nothing is evicted until a limit is set; "
    "prefer noeviction"
)
MSG_NOEVICTION = "maxmemory-policy is noeviction: a full Redis refuses writes (503), never drops"
MSG_NO_CONFIG = "cannot read {what} (CONFIG GET refused: {error}); check it with your provider"
MSG_AOF = "persistence: append-only file on (appendfsync {fsync})"
MSG_RDB = "persistence: RDB snapshots only (save {save}): a crash loses writes since the last"
MSG_NO_PERSISTENCE = "persistence: none: a Redis restart ends every session and stream"
MSG_STANDALONE = "standalone Redis (no Cluster)"
MSG_CLUSTER_OK = "Cluster: state ok, {assigned} of 16384 slots served, {nodes} nodes"
MSG_CLUSTER_BAD = "Cluster: state {state}, {assigned} of 16384 slots served, {failing} failing"
MSG_SYNC_OFF = (
    "synchronous_commit is off: a PostgreSQL crash can lose the last writes a client saw "
    "acknowledged (events it was sent)"
)
MSG_SYNC_OK = "synchronous_commit is {value}"
MSG_LISTENER_OK = "LISTEN/NOTIFY: a notification came back in {ms:.1f} ms (live follow pushes)"
MSG_LISTENER_LOST = (
    "LISTEN/NOTIFY: no notification within {timeout:g} s (a pooler in transaction mode?): "
    "live follow falls back to polling every waited stream every 5 s"
)
MSG_LISTENER_DRIVER = "LISTEN/NOTIFY needs the asyncpg driver; with {driver}, live follow polls"
MSG_KEYS_OPEN = "encryption: the keys open {opened} of {tried} stored records sampled"
MSG_KEYS_FAIL = (
    "encryption: {failed} of {tried} stored records sampled do not open with the keys given "
    "(first: {first})"
)
MSG_SEALED_NO_KEYS = (
    "encryption: {sealed} of {tried} records sampled are encrypted; pass --encryption-key "
    f"(or ${KEYS_ENV}) to check the keys open them"
)
MSG_PLAIN_WITH_KEYS = (
    "encryption: {plain} of {tried} records sampled are not encrypted (written without keys)"
)


@dataclass(frozen=True)
class Finding:
    """One line of the report: what was checked, how it went, and what it means."""

    check: str
    status: str
    message: str


class Unreachable(Exception):
    """The store did not answer: the report stops there (exit 3)."""


Report = list[Finding]


# -- the checks ------------------------------------------------------------------------------


async def _timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.monotonic()
    await call()
    return time.monotonic() - started


async def check_answers(store: Store, report: Report) -> None:
    """Open the store and time a few reads of a key no session has."""
    try:
        await store.open()
        times = [await _timed(lambda: store.load_by_key(PROBE_KEY)) for _ in range(ROUND_TRIPS)]
    except StoreUnavailableError as exc:
        raise Unreachable(MSG_UNREACHABLE.format(error=exc)) from exc
    median, worst = statistics.median(times) * 1000, max(times) * 1000
    report.append(
        Finding("store", OK, MSG_ANSWERS.format(n=len(times), median=median, worst=worst))
    )


async def check_sql_schema(store: SQLStore, report: Report) -> bool:
    """The ``<prefix>schema_version`` row against this release's; True if the store can open."""
    import sqlalchemy as sa

    from .stores.sql import SCHEMA_VERSION

    table = f"{store.table_prefix}schema_version"

    def read(conn: Any) -> int | None:
        if not sa.inspect(conn).has_table(table):
            return None
        row = conn.execute(sa.select(sa.column("version")).select_from(sa.table(table))).first()
        return None if row is None else int(row[0])

    try:
        async with store.engine.connect() as conn:
            found = await conn.run_sync(read)
    except (OSError, sa.exc.DBAPIError) as exc:
        raise Unreachable(MSG_UNREACHABLE.format(error=_first_line(exc))) from exc
    if found is None:
        report.append(Finding("schema", PROBLEM, MSG_NO_TABLES.format(prefix=store.table_prefix)))
        return False
    if found < SCHEMA_VERSION:
        report.append(
            Finding("schema", PROBLEM, MSG_SCHEMA_OLD.format(found=found, need=SCHEMA_VERSION))
        )
        return False
    if found > SCHEMA_VERSION:
        report.append(
            Finding("schema", PROBLEM, MSG_SCHEMA_NEW.format(found=found, need=SCHEMA_VERSION))
        )
        return False
    report.append(Finding("schema", OK, MSG_SCHEMA_OK.format(found=found)))
    return True


def clock_finding(skew: float, error: float) -> Finding:
    """Judge a measured clock difference (store minus host, in seconds)."""
    beyond = abs(skew) - error  # the least the clocks can differ by
    status = PROBLEM if beyond > CLOCK_PROBLEM else WARN if beyond > CLOCK_WARN else OK
    return Finding("clock", status, MSG_CLOCK.format(skew=skew, error=error))


async def check_clock(read_clock: Callable[[], Awaitable[float]], report: Report) -> None:
    """Compare the store's clock with this host's, at the middle of the round trip."""
    before = time.time()
    theirs = await read_clock()
    after = time.time()
    report.append(clock_finding(theirs - (before + after) / 2, (after - before) / 2))


async def _redis_config(store: RedisStore, name: str, report: Report, what: str) -> str | None:
    try:
        reply = await store.client.execute_command("CONFIG", "GET", name)
    except Exception as exc:  # managed Redis often refuses CONFIG
        report.append(Finding(what, WARN, MSG_NO_CONFIG.format(what=name, error=_first_line(exc))))
        return None
    values = _config_pairs(reply)
    return values.get(name)


def _config_pairs(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    items = [_text(item) for item in reply]
    return dict(zip(items[::2], items[1::2], strict=False))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def check_redis(store: RedisStore, report: Report) -> None:
    async def redis_time() -> float:
        seconds, micros = await store.client.execute_command("TIME")
        return int(seconds) + int(micros) / 1e6

    await check_clock(redis_time, report)
    policy = await _redis_config(store, "maxmemory-policy", report, "eviction")
    if policy is not None:
        if policy == "noeviction":
            report.append(Finding("eviction", OK, MSG_NOEVICTION))
        else:
            limit = await _redis_config(store, "maxmemory", report, "eviction")
            message = MSG_EVICTING_UNLIMITED if limit == "0" else MSG_EVICTING
            report.append(Finding("eviction", WARN, message.format(policy=policy)))
    aof = await _redis_config(store, "appendonly", report, "persistence")
    if aof is not None:
        if aof == "yes":
            fsync = await _redis_config(store, "appendfsync", report, "persistence")
            report.append(Finding("persistence", OK, MSG_AOF.format(fsync=fsync)))
        else:
            save = await _redis_config(store, "save", report, "persistence")
            if save:
                report.append(Finding("persistence", WARN, MSG_RDB.format(save=save)))
            elif save is not None:
                report.append(Finding("persistence", WARN, MSG_NO_PERSISTENCE))
    info = await store.client.info("cluster")
    if not int(info.get("cluster_enabled", 0) if isinstance(info, dict) else 0):
        report.append(Finding("cluster", OK, MSG_STANDALONE))
        return
    raw = await store.client.execute_command("CLUSTER INFO")
    fields = _cluster_info(raw)
    state = fields.get("cluster_state", "?")
    assigned = int(fields.get("cluster_slots_ok", 0))
    failing = int(fields.get("cluster_slots_pfail", 0)) + int(fields.get("cluster_slots_fail", 0))
    if state == "ok" and assigned == 16384:
        nodes = fields.get("cluster_known_nodes", "?")
        report.append(Finding("cluster", OK, MSG_CLUSTER_OK.format(assigned=assigned, nodes=nodes)))
    else:
        message = MSG_CLUSTER_BAD.format(state=state, assigned=assigned, failing=failing)
        report.append(Finding("cluster", PROBLEM, message))


def _cluster_info(raw: Any) -> dict[str, str]:
    """CLUSTER INFO as a dict, from the text reply or redis-py's parsed (per node) forms."""
    if isinstance(raw, dict):
        if raw and all(isinstance(v, dict) for v in raw.values()):
            raw = next(iter(raw.values()))
        return {_text(k): _text(v) for k, v in raw.items()}
    fields: dict[str, str] = {}
    for line in _text(raw).splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    return fields


async def check_dynamodb_table(store: DynamoDBStore, report: Report) -> bool:
    """The table exists and AWS expires its items; True if the store can open."""
    table = store.table
    if not await table.exists():
        report.append(Finding("table", PROBLEM, MSG_TABLE_MISSING.format(table=table.name)))
        return False
    answer = await table.call("DescribeTimeToLive", TableName=table.name)
    description = answer.get("TimeToLiveDescription", {})
    status = str(description.get("TimeToLiveStatus", "DISABLED"))
    if status not in ("ENABLED", "ENABLING"):
        message = MSG_TABLE_TTL_OFF.format(table=table.name, status=status.lower())
        report.append(Finding("table", WARN, message))
    else:
        attribute = description.get("AttributeName", "?")
        report.append(
            Finding("table", OK, MSG_TABLE_OK.format(table=table.name, attribute=attribute))
        )
    return True


async def check_sql(store: SQLStore, report: Report, timeout: float) -> None:
    import sqlalchemy as sa

    dialect = store.engine.dialect.name
    if dialect == "sqlite":
        report.append(Finding("clock", OK, MSG_CLOCK_LOCAL))
        return
    now_sql = (
        "SELECT extract(epoch from clock_timestamp())"
        if dialect == "postgresql"
        else "SELECT UNIX_TIMESTAMP(NOW(6))"
    )

    async def sql_time() -> float:
        async with store.engine.connect() as conn:
            return float((await conn.execute(sa.text(now_sql))).scalar_one())

    await check_clock(sql_time, report)
    if dialect != "postgresql":
        return
    async with store.engine.connect() as conn:
        value = str((await conn.execute(sa.text("SHOW synchronous_commit"))).scalar_one())
    if value == "off":
        report.append(Finding("synchronous_commit", WARN, MSG_SYNC_OFF))
    else:
        report.append(Finding("synchronous_commit", OK, MSG_SYNC_OK.format(value=value)))
    driver = store.engine.dialect.driver
    if driver != "asyncpg":
        report.append(Finding("listener", WARN, MSG_LISTENER_DRIVER.format(driver=driver)))
        return
    await _check_listener(store, report, timeout)


async def _check_listener(store: SQLStore, report: Report, timeout: float) -> None:
    """LISTEN on a channel of its own on one connection, NOTIFY from another."""
    import sqlalchemy as sa

    channel = f"mcp_session_mw_doctor_{secrets.token_hex(6)}"
    heard = anyio.Event()

    def on_notify(*_args: Any) -> None:
        heard.set()

    async with store.engine.connect() as listening:
        raw = await listening.get_raw_connection()
        pg = raw.driver_connection
        assert pg is not None
        await pg.add_listener(channel, on_notify)
        try:
            started = time.monotonic()
            async with store.engine.connect() as notifying:
                await notifying.execute(sa.text("SELECT pg_notify(:c, 'ping')"), {"c": channel})
                await notifying.commit()
            with anyio.move_on_after(timeout):
                await heard.wait()
            elapsed = time.monotonic() - started
        finally:
            await pg.remove_listener(channel, on_notify)
    if heard.is_set():
        report.append(Finding("listener", OK, MSG_LISTENER_OK.format(ms=elapsed * 1000)))
    else:
        report.append(Finding("listener", WARN, MSG_LISTENER_LOST.format(timeout=timeout)))


async def check_encryption(store: Store, keys: list[str], report: Report) -> None:
    """Try to open up to :data:`SAMPLE` stored records with ``keys`` (or say they are sealed)."""
    from .encryption import ENVELOPE_FIELD

    page = await store.list_active(limit=SAMPLE)
    sealed = [r for r in page.records if set(r.state) == {ENVELOPE_FIELD}]
    tried = len(page.records)
    if not keys:
        if sealed:
            report.append(
                Finding(
                    "encryption", WARN, MSG_SEALED_NO_KEYS.format(sealed=len(sealed), tried=tried)
                )
            )
        return
    from .encryption import EncryptedStore

    opener = EncryptedStore(store, keys)
    failed = []
    quiet = logging.getLogger("mcp_session_mw")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # each unreadable record is one finding, not a log line
    try:
        for record in sealed:
            if await opener.load_by_key(record.key) is None:
                failed.append(record.key)
    finally:
        quiet.setLevel(level)
    if failed:
        message = MSG_KEYS_FAIL.format(failed=len(failed), tried=tried, first=failed[0][:12])
        report.append(Finding("encryption", PROBLEM, message))
    else:
        opened = len(sealed)
        report.append(Finding("encryption", OK, MSG_KEYS_OPEN.format(opened=opened, tried=tried)))
    plain = tried - len(sealed)
    if plain:
        report.append(
            Finding("encryption", WARN, MSG_PLAIN_WITH_KEYS.format(plain=plain, tried=tried))
        )


async def diagnose(
    store: Store, *, keys: list[str] | None = None, timeout: float = DEFAULT_TIMEOUT
) -> Report:
    """Every check that applies to ``store``; raises :class:`Unreachable` if it does not answer.

    Each check runs within ``timeout`` seconds; one that does not finish is a
    problem of its own and the others still run. The caller closes the store.
    """
    from .stores.dynamodb import DynamoDBStore
    from .stores.redis import RedisStore
    from .stores.sql import SQLStore

    report: Report = []
    backend = getattr(store, "backend", store)  # through a caching or encrypting wrapper
    try:
        with anyio.fail_after(timeout):
            if isinstance(backend, SQLStore) and not await check_sql_schema(backend, report):
                return report
            if isinstance(backend, DynamoDBStore) and not await check_dynamodb_table(
                backend, report
            ):
                return report
            await check_answers(store, report)
    except TimeoutError as exc:
        raise Unreachable(MSG_UNREACHABLE.format(error=f"no answer within {timeout:g} s")) from exc
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
    if isinstance(backend, RedisStore):
        steps.append(("redis", lambda: check_redis(backend, report)))
    elif isinstance(backend, SQLStore):
        steps.append(("sql", lambda: check_sql(backend, report, timeout / 2)))
    else:
        report.append(Finding("clock", OK, MSG_CLOCK_LOCAL))
    steps.append(("encryption", lambda: check_encryption(backend, list(keys or []), report)))
    for name, step in steps:
        try:
            with anyio.fail_after(timeout):
                await step()
        except TimeoutError:
            report.append(Finding(name, PROBLEM, f"no answer within {timeout:g} s"))
        except StoreUnavailableError as exc:
            report.append(Finding(name, PROBLEM, MSG_UNREACHABLE.format(error=exc)))
        except Exception as exc:  # a check that fails is a finding, not a crash
            report.append(Finding(name, PROBLEM, f"the check failed: {_first_line(exc)}"))
    return report


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# -- command line ------------------------------------------------------------------------------


def register(topics: Any, common: argparse.ArgumentParser) -> None:
    parser = topics.add_parser(
        "doctor",
        parents=[common],
        help="check the store's deployment, one line per finding",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument(
        "--encryption-key",
        action="append",
        default=[],
        metavar="KEY",
        help=f"a key to try on the stored records (repeat; default ${KEYS_ENV}, comma-separated)",
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per check (default 5)"
    )
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace, out: TextIO, make_store: Any) -> int:
    keys = args.encryption_key or [
        k.strip() for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()
    ]
    store: Store = make_store(args, None)
    try:
        try:
            report = await diagnose(store, keys=keys, timeout=args.timeout)
        except Unreachable as exc:
            _write(out, args.json, [Finding("store", PROBLEM, str(exc))])
            return EXIT_UNREACHABLE
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(args.timeout):
            await store.close()
    _write(out, args.json, report)
    return EXIT_PROBLEM if any(f.status == PROBLEM for f in report) else EXIT_OK


def _write(out: TextIO, as_json: bool, report: Report) -> None:
    if as_json:
        out.write(json.dumps({"findings": [asdict(f) for f in report]}, indent=2) + "\n")
        return
    for finding in report:
        out.write(f"{finding.status:<8} {finding.check:<19} {finding.message}\n")
