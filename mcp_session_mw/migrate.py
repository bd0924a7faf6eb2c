"""Copying live sessions between stores: ``mcp-session-mw migrate``, ``dump`` and ``load``.

A session is copied as its record (under the same key digest, so the ids
clients hold keep working: both stores must hash ids alike, the same
``secret`` or none), then each of its streams with every event at its own
``seq``, so a client's ``Last-Event-ID`` names the same event on the new store
and a migrated client goes on with no new ``initialize``. Only the public
:class:`~mcp_session_mw.stores.base.Store` API is used, so any pair of
backends works.

Copying is idempotent and resumable: a session already in the target is left
as it is (the target's record wins) and only the events its streams lack are
written, so a second run copies nothing twice and a run that stopped half-way
carries on where it stopped. Encrypted stores are copied as they are stored
(sealed), so the same keys open them on the target.

``dump`` writes sessions as JSON Lines, one session per line (record, stream
states, events); ``load`` reads them back into a store through the same copy.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol, TextIO

import anyio

from .errors import ConfigurationError, SessionNotFoundError
from .records import SessionRecord, StoredEvent, StreamState
from .stores.base import Store, is_key

DUMP_FORMAT = "mcp-session-mw/1"
BATCH = 1000
"""Events read and written per round trip."""
PAGE = 100
"""Sessions listed per page of the source."""
BAR_WIDTH = 30

# Messages tests assert on.
MSG_BAD_LINE = "line {line} is not a session dump of format {format!r}: {error}"
MSG_NO_SESSION = "no live session with that id or key"
MSG_SUMMARY = (
    "{verb} {sessions} session(s), {present} already there, {gone} gone meanwhile; "
    "{streams} stream(s) and {events} event(s) {verb_streams}"
)
MSG_BAD_OPTION = "{flag} takes NAME=VALUE, not {value!r}"
MSG_NO_STORE_FLAG = "migrate takes --from URL and --to URL, not --store"
MSG_OTHER_HASHING = (
    "the two stores hash session ids differently (a different secret): clients' ids "
    "would not find their sessions on the target; give both the same secret"
)
PROBE_ID = "mcp-session-mw-migrate-probe"


class BadDumpError(ConfigurationError):
    """A line given to ``load`` is not a session dump (exit 2); nothing after it is loaded."""


@dataclass
class Tally:
    """What a copy did (or, with ``dry_run``, would do)."""

    sessions: int = 0
    """Sessions written to the target."""
    present: int = 0
    """Sessions the target already had (their streams still get the events they lack)."""
    gone: int = 0
    """Sessions that expired or ended while being copied."""
    streams: int = 0
    """Streams created or given events."""
    events: int = 0


class Source(Protocol):
    """Where one session's streams and events come from: a store, or a dump line."""

    async def streams(self) -> list[StreamState]: ...

    async def events(self, stream_id: str, after_seq: int, limit: int) -> list[StoredEvent]: ...


@dataclass
class StoreSource:
    store: Store
    key: str

    async def streams(self) -> list[StreamState]:
        return await self.store.list_streams_by_key(self.key)

    async def events(self, stream_id: str, after_seq: int, limit: int) -> list[StoredEvent]:
        return await self.store.read_events_by_key(self.key, stream_id, after_seq, limit)


@dataclass
class DumpSource:
    states: list[StreamState]
    by_stream: dict[str, list[StoredEvent]]

    async def streams(self) -> list[StreamState]:
        return self.states

    async def events(self, stream_id: str, after_seq: int, limit: int) -> list[StoredEvent]:
        events = [e for e in self.by_stream.get(stream_id, []) if e.seq > after_seq]
        return events[:limit]


async def copy_session(
    target: Store, record: SessionRecord, source: Source, tally: Tally, *, dry_run: bool = False
) -> None:
    """Copy one session into ``target``: the record if it is not there, then missing events."""
    key = record.key
    try:
        present = await target.load_by_key(key) is not None
        if present:
            tally.present += 1
        elif dry_run or await target.restore(record):
            tally.sessions += 1
        else:  # created on the target meanwhile: it wins
            tally.present += 1
            present = True
        have = {s.stream_id: s for s in await target.list_streams_by_key(key)} if present else {}
        for state in await source.streams():
            known = have.get(state.stream_id)
            written = await _copy_stream(target, key, state, known, source, dry_run=dry_run)
            if written or known is None or (state.done and not known.done):
                tally.streams += 1
                tally.events += written
    except SessionNotFoundError:
        tally.gone += 1


async def _copy_stream(
    target: Store,
    key: str,
    state: StreamState,
    known: StreamState | None,
    source: Source,
    *,
    dry_run: bool,
) -> int:
    after = 0 if known is None else known.last_seq
    written = 0
    batch = await source.events(state.stream_id, after, BATCH)
    while True:
        following = await source.events(state.stream_id, batch[-1].seq, BATCH) if batch else []
        if not dry_run:
            # Done only with the last batch: a run stopped before it has more to copy.
            last = not following
            as_state = state if last else StreamState(**{**asdict(state), "done": False})
            if batch or known is None or (last and state.done):
                await target.restore_stream(key, as_state, batch)
        written += len(batch)
        if not following:
            return written
        batch = following


async def records_of(store: Store) -> AsyncIterator[SessionRecord]:
    """Every live session record of ``store``, a page at a time."""
    cursor: str | None = None
    while True:
        page = await store.list_active(limit=PAGE, cursor=cursor)
        for record in page.records:
            yield record
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def migrate(
    source: Store,
    target: Store,
    *,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Tally:
    """Copy every live session of ``source`` into ``target``; see the module docstring.

    ``progress`` is called with the number of sessions handled so far, after each.
    """
    tally = Tally()
    done = 0
    async for record in records_of(source):
        await copy_session(target, record, StoreSource(source, record.key), tally, dry_run=dry_run)
        done += 1
        if progress is not None:
            progress(done)
    return tally


# -- JSON Lines ------------------------------------------------------------------------------


async def dump_line(store: Store, record: SessionRecord) -> str:
    """One session as one line of JSON: record, stream states, events (``[seq, data, event]``)."""
    streams = []
    source = StoreSource(store, record.key)
    for state in sorted(await source.streams(), key=lambda s: s.stream_id):
        events: list[list[Any]] = []
        batch = await source.events(state.stream_id, 0, BATCH)
        while batch:
            events += [[e.seq, e.data, e.event] for e in batch]
            batch = await source.events(state.stream_id, batch[-1].seq, BATCH)
        streams.append({"state": asdict(state), "events": events})
    doc = {"format": DUMP_FORMAT, "record": asdict(record), "streams": streams}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def parse_line(text: str, line: int) -> tuple[SessionRecord, DumpSource]:
    """A record and its streams from one dump line; raises :class:`BadDumpError`."""
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != DUMP_FORMAT:
            raise ValueError("no format field naming it")
        record = SessionRecord(**_only(SessionRecord, doc["record"]))
        if not is_key(record.key):
            raise ValueError("the record's key is not a session key")
        states: list[StreamState] = []
        by_stream: dict[str, list[StoredEvent]] = {}
        for stream in doc["streams"]:
            state = StreamState(**_only(StreamState, stream["state"]))
            events = [
                StoredEvent(state.stream_id, int(s), str(d), e) for s, d, e in stream["events"]
            ]
            if any(b.seq != a.seq + 1 for a, b in itertools.pairwise(events)):
                raise ValueError(f"the events of stream {state.stream_id!r} are not consecutive")
            states.append(state)
            by_stream[state.stream_id] = events
    except (ValueError, KeyError, TypeError) as exc:
        raise BadDumpError(MSG_BAD_LINE.format(line=line, format=DUMP_FORMAT, error=exc)) from exc
    return record, DumpSource(states, by_stream)


def _only(cls: type, values: object) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ValueError(f"{cls.__name__} is not an object")
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    return values


# -- command line ------------------------------------------------------------------------------

StoreMaker = Callable[[argparse.Namespace, "str | None"], Store]


def _option(flag: str) -> Callable[[str], tuple[str, Any]]:
    def parse(text: str) -> tuple[str, Any]:
        name, sep, raw = text.partition("=")
        if not sep or not name.isidentifier():
            raise argparse.ArgumentTypeError(MSG_BAD_OPTION.format(flag=flag, value=text))
        try:
            return name, json.loads(raw)
        except ValueError:
            return name, raw

    return parse


def register(topics: Any, common: argparse.ArgumentParser) -> None:
    move = topics.add_parser(
        "migrate",
        parents=[common],
        help="copy every live session, its state and its events to another store",
        description="Copy every live session from --from to --to (any two backends); "
        "idempotent and resumable. --store-option and --table-prefix apply to both stores, "
        "--from-option and --to-option to one.",
    )
    move.add_argument("--from", dest="source", required=True, metavar="URL")
    move.add_argument("--to", dest="target", required=True, metavar="URL")
    for side in ("from", "to"):
        move.add_argument(
            f"--{side}-option",
            type=_option(f"--{side}-option"),
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help=f"a store option for the --{side} store only (repeatable)",
        )
    move.add_argument("--dry-run", action="store_true", help="count what would be copied")
    move.set_defaults(handler=_migrate_command)

    dump = topics.add_parser(
        "dump", parents=[common], help="sessions as JSON Lines, one per line (stdout)"
    )
    dump.add_argument("target", nargs="?", metavar="ID_OR_KEY", help="one session (default all)")
    dump.set_defaults(handler=_dump_command)

    load = topics.add_parser(
        "load", parents=[common], help="sessions from JSON Lines (stdin) into the store"
    )
    load.add_argument("--input", metavar="FILE", help="read this file instead of stdin")
    load.add_argument("--dry-run", action="store_true", help="count what would be loaded")
    load.set_defaults(handler=_load_command)


def _side(args: argparse.Namespace, extra: Sequence[tuple[str, Any]]) -> argparse.Namespace:
    return argparse.Namespace(
        store=None, store_option=[*args.store_option, *extra], table_prefix=args.table_prefix
    )


async def _with(stores: Sequence[Store], body: Callable[[], Awaitable[int]]) -> int:
    try:
        for store in stores:
            await store.open()
        return await body()
    finally:
        with anyio.CancelScope(shield=True):
            for store in stores:
                await store.close()


def _bar(out: TextIO, total: int) -> Callable[[int], None]:
    def show(done: int) -> None:
        filled = BAR_WIDTH * done // total if total else BAR_WIDTH
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        out.write(f"\r[{bar}] {done}/{total} sessions")
        out.flush()

    return show


def _summary(out: TextIO, args: argparse.Namespace, tally: Tally) -> None:
    if args.json:
        out.write(json.dumps({"dry_run": args.dry_run, **asdict(tally)}) + "\n")
        return
    verb, streams_verb = ("would copy", "to copy") if args.dry_run else ("copied", "copied")
    out.write(MSG_SUMMARY.format(verb=verb, verb_streams=streams_verb, **asdict(tally)) + "\n")


async def _migrate_command(args: argparse.Namespace, out: TextIO, make_store: StoreMaker) -> int:
    if args.store is not None:
        raise ConfigurationError(MSG_NO_STORE_FLAG)
    source = make_store(_side(args, args.from_option), args.source)
    target = make_store(_side(args, args.to_option), args.target)
    if source.key(PROBE_ID) != target.key(PROBE_ID):
        raise ConfigurationError(MSG_OTHER_HASHING)

    async def body() -> int:
        progress = None
        if out.isatty() and not args.json:
            progress = _bar(out, await source.count_active())
        tally = await migrate(source, target, dry_run=args.dry_run, progress=progress)
        if progress is not None:
            out.write("\n")
        _summary(out, args, tally)
        return 0

    return await _with([source, target], body)


async def _dump_command(args: argparse.Namespace, out: TextIO, make_store: StoreMaker) -> int:
    store = make_store(args, None)

    async def body() -> int:
        if args.target is not None:
            target: str = args.target
            record = await (store.load_by_key(target) if is_key(target) else store.load(target))
            if record is None:
                sys.stderr.write(f"mcp-session-mw: error: {MSG_NO_SESSION}\n")
                return 4
            out.write(await dump_line(store, record) + "\n")
            return 0
        async for record in records_of(store):
            out.write(await dump_line(store, record) + "\n")
        return 0

    return await _with([store], body)


async def _lines(path: str | None) -> AsyncIterator[str]:
    if path is None:
        for text in sys.stdin:
            yield text
        return
    async with await anyio.open_file(path, encoding="utf-8") as file:
        async for text in file:
            yield text


async def _load_command(args: argparse.Namespace, out: TextIO, make_store: StoreMaker) -> int:
    store = make_store(args, None)

    async def body() -> int:
        tally = Tally()
        number = 0
        async for text in _lines(args.input):
            number += 1
            if text.strip():
                record, source = parse_line(text, number)
                await copy_session(store, record, source, tally, dry_run=args.dry_run)
        _summary(out, args, tally)
        return 0

    return await _with([store], body)
