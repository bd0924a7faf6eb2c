"""``mcp-session-mw``: the operator's command for a session store.

::

    mcp-session-mw sessions list [--limit N] [--cursor C | --all]
    mcp-session-mw sessions show ID_OR_KEY
    mcp-session-mw sessions delete ID_OR_KEY
    mcp-session-mw sessions purge-expired
    mcp-session-mw sessions stats
    mcp-session-mw db upgrade [--table-prefix P]
    mcp-session-mw doctor                      (mcp_session_mw.doctor)
    mcp-session-mw migrate --from URL --to URL (mcp_session_mw.migrate)
    mcp-session-mw dump [ID_OR_KEY] | load     (mcp_session_mw.migrate)

Every command takes ``--store URL`` (default: ``$MCP_SESSION_STORE_URL``, else
the middleware's default SQLite file), ``--store-option NAME=VALUE`` (merged
over ``$MCP_SESSION_STORE_OPTIONS``, a JSON object, as the middleware reads it
through settings), ``--table-prefix`` and ``--json``.

Stores key sessions by a digest of the id, so this tool shows keys, never raw
ids: ``show`` and ``delete`` take either a raw id (hashed here, with the
store's ``secret`` if one is configured) or a 64-hex key from ``list``.

Exit status: 0 done, 1 the store failed, 2 bad usage or configuration (an
unusable URL, a missing driver, an old schema), 3 the store cannot be reached,
4 no such session.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any, TextIO
from urllib.parse import urlsplit

import anyio

from .errors import (
    ConfigurationError,
    MissingExtraError,
    StoreError,
    StoreUnavailableError,
)
from .records import SessionRecord
from .stores import BACKENDS, DEFAULT_STORE_URL, Store, create_store
from .stores.base import is_key

PROG = "mcp-session-mw"
STORE_URL_ENV = "MCP_SESSION_STORE_URL"
STORE_OPTIONS_ENV = "MCP_SESSION_STORE_OPTIONS"

EXIT_OK = 0
EXIT_STORE_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4

# Messages tests assert on.
MSG_NOT_FOUND = "no live session with that id or key"
MSG_BAD_OPTION = "--store-option takes NAME=VALUE, not {value!r}"
MSG_BAD_OPTIONS_ENV = f"{STORE_OPTIONS_ENV} must be a JSON object"
MSG_BAD_STORE_OPTIONS = "this store does not take the options given: {names}"
MSG_PREFIX_NOT_SQL = "--table-prefix applies to SQL stores only"
MSG_NOT_SQL = "`db upgrade` applies to SQL stores only (sqlite, postgresql, mysql, mariadb URLs)"
MSG_UNREACHABLE = "the store cannot be reached: {error}"
MSG_UPGRADED = "tables with prefix {prefix!r}: schema version {before} -> {after}"
MSG_UP_TO_DATE = "tables with prefix {prefix!r}: already at schema version {after}"
MSG_DELETED = "deleted session {key}"
MSG_PURGED = "removed {count} expired session(s)"


class UsageError(Exception):
    """A bad command line that argparse itself cannot see (exit 2)."""


class NotFound(Exception):
    """The session asked for is not there (exit 4)."""


# -- argument parsing ---------------------------------------------------------------


def _store_option(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(MSG_BAD_OPTION.format(value=text))
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw  # a bare string: table_prefix=app_
    return name, value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("store")
    group.add_argument(
        "--store",
        metavar="URL",
        help=f"store URL (default: ${STORE_URL_ENV}, else {DEFAULT_STORE_URL})",
    )
    group.add_argument(
        "--store-option",
        type=_store_option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a store constructor option, VALUE as JSON or a bare string (repeatable); "
        f"merged over ${STORE_OPTIONS_ENV}",
    )
    group.add_argument(
        "--table-prefix", metavar="P", help="SQL stores: the table prefix (store option)"
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")

    parser = argparse.ArgumentParser(
        prog=PROG, description="Inspect and maintain an mcp-session-mw session store."
    )
    topics = parser.add_subparsers(
        dest="topic", required=True, metavar="{sessions,db,doctor,migrate,dump,load}"
    )

    sessions = topics.add_parser("sessions", help="list, show, delete and count sessions")
    actions = sessions.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", parents=[common], help="live sessions, by key")
    listing.add_argument("--limit", type=_positive, default=100, help="page size (default 100)")
    pages = listing.add_mutually_exclusive_group()
    pages.add_argument("--cursor", help="continue after a page (its next_cursor)")
    pages.add_argument("--all", action="store_true", help="every page")
    show = actions.add_parser("show", parents=[common], help="one session in full")
    show.add_argument("target", metavar="ID_OR_KEY")
    delete = actions.add_parser("delete", parents=[common], help="end a session now")
    delete.add_argument("target", metavar="ID_OR_KEY")
    actions.add_parser("purge-expired", parents=[common], help="remove expired sessions")
    actions.add_parser("stats", parents=[common], help="counts over live sessions")

    db = topics.add_parser("db", help="SQL schema maintenance")
    db_actions = db.add_subparsers(dest="action", required=True)
    db_actions.add_parser(
        "upgrade", parents=[common], help="migrate the SQL tables to this release's schema"
    )
    # Commands of their own modules: each sets ``handler`` (see StoreMaker).
    from . import doctor, migrate

    doctor.register(topics, common)
    migrate.register(topics, common)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def _is_sql(url: str) -> bool:
    target = BACKENDS.get(urlsplit(url).scheme.lower()) if "://" in url else None
    return target is not None and target[1] == "SQLStore"


def _store_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    env = os.environ.get(STORE_OPTIONS_ENV)
    if env:
        try:
            loaded = json.loads(env)
        except ValueError:
            loaded = None
        if not isinstance(loaded, dict):
            raise ConfigurationError(MSG_BAD_OPTIONS_ENV)
        options.update(loaded)
    options.update(dict(args.store_option))
    if args.table_prefix is not None:
        options["table_prefix"] = args.table_prefix
    return options


# -- output ---------------------------------------------------------------------------


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _summary(record: SessionRecord) -> dict[str, Any]:
    client = record.client_info
    return {
        "key": record.key,
        "protocol_version": record.protocol_version,
        "client": client.get("name"),
        "client_version": client.get("version"),
        "principal": record.principal,
        "created_at": record.created_at,
        "last_accessed": record.last_accessed,
        "expires_at": record.expires_at,
    }


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
        )


_COLUMNS = ["KEY", "PROTOCOL", "CLIENT", "PRINCIPAL", "LAST USED (UTC)", "EXPIRES (UTC)"]


def _row(record: SessionRecord) -> list[str]:
    name = record.client_info.get("name")
    version = record.client_info.get("version")
    client = "-" if name is None else f"{name} {version}" if version is not None else str(name)
    return [
        record.key,
        record.protocol_version,
        client,
        record.principal or "-",
        _when(record.last_accessed),
        _when(record.expires_at),
    ]


# -- commands -------------------------------------------------------------------------


async def _list(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    cursor = args.cursor
    records: list[SessionRecord] = []
    while True:
        page = await store.list_active(limit=args.limit, cursor=cursor)
        records.extend(page.records)
        cursor = page.next_cursor
        if not args.all or cursor is None:
            break
    if args.json:
        body = {"sessions": [_summary(r) for r in records], "next_cursor": cursor}
        out.write(json.dumps(body, indent=2) + "\n")
        return
    if records:
        _table([_COLUMNS, *(_row(r) for r in records)], out)
    else:
        out.write("no live sessions\n")
    if cursor is not None:
        out.write(f"more: --cursor {cursor}\n")


async def _find(store: Store, target: str) -> SessionRecord:
    record = await store.load_by_key(target) if is_key(target) else await store.load(target)
    if record is None:
        raise NotFound(MSG_NOT_FOUND)
    return record


async def _show(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    record = await _find(store, args.target)
    if args.json:
        out.write(json.dumps(asdict(record), indent=2, ensure_ascii=False) + "\n")
        return
    lines = [
        ("key", record.key),
        ("protocol version", record.protocol_version),
        ("requested version", record.requested_protocol_version or "-"),
        ("client", json.dumps(record.client_info, ensure_ascii=False)),
        ("capabilities", json.dumps(record.capabilities, ensure_ascii=False)),
        ("principal", record.principal or "-"),
        ("created (UTC)", _when(record.created_at)),
        ("last used (UTC)", _when(record.last_accessed)),
        ("expires (UTC)", _when(record.expires_at)),
        ("ttl", f"{record.ttl:g} s"),
        ("version", str(record.version)),
    ]
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        out.write(f"{label.ljust(width)}  {value}\n")
    out.write("state\n" + json.dumps(record.state, indent=2, ensure_ascii=False) + "\n")


async def _delete(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    target: str = args.target
    key = target if is_key(target) else store.key(target)
    if not await store.delete_by_key(key):
        raise NotFound(MSG_NOT_FOUND)
    if args.json:
        out.write(json.dumps({"deleted": True, "key": key}) + "\n")
    else:
        out.write(MSG_DELETED.format(key=key) + "\n")


async def _purge(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    count = await store.cleanup_expired()
    if args.json:
        out.write(json.dumps({"removed": count}) + "\n")
    else:
        out.write(MSG_PURGED.format(count=count) + "\n")


async def _stats(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    total = with_principal = 0
    versions: Counter[str] = Counter()
    clients: Counter[str] = Counter()
    oldest: float | None = None
    next_expiry: float | None = None
    cursor: str | None = None
    while True:  # one page at a time: the whole set is never in memory
        page = await store.list_active(limit=500, cursor=cursor)
        for record in page.records:
            total += 1
            with_principal += record.principal is not None
            versions[record.protocol_version] += 1
            clients[str(record.client_info.get("name", "-"))] += 1
            oldest = record.created_at if oldest is None else min(oldest, record.created_at)
            next_expiry = (
                record.expires_at if next_expiry is None else min(next_expiry, record.expires_at)
            )
        cursor = page.next_cursor
        if cursor is None:
            break
    if args.json:
        body = {
            "active": total,
            "with_principal": with_principal,
            "protocol_versions": dict(versions.most_common()),
            "clients": dict(clients.most_common()),
            "oldest_created_at": oldest,
            "next_expiry": next_expiry,
        }
        out.write(json.dumps(body, indent=2) + "\n")
        return
    out.write(f"active sessions   {total}\n")
    out.write(f"with a principal  {with_principal}\n")
    if oldest is not None and next_expiry is not None:
        out.write(f"oldest created    {_when(oldest)} UTC\n")
        out.write(f"next expiry       {_when(next_expiry)} UTC\n")
    for title, counter in (("protocol version", versions), ("client", clients)):
        if counter:
            _table(
                [[title.upper(), "SESSIONS"]] + [[k, str(n)] for k, n in counter.most_common()], out
            )


async def _db_upgrade(store: Store, args: argparse.Namespace, out: TextIO) -> None:
    from .stores.sql import SQLStore

    if not isinstance(store, SQLStore):
        raise UsageError(MSG_NOT_SQL)
    from .migrations import upgrade_schema

    result = await upgrade_schema(store)
    if args.json:
        body = {"table_prefix": result.table_prefix, "before": result.before, "after": result.after}
        out.write(json.dumps(body) + "\n")
    elif result.changed:
        before = "none" if result.before is None else result.before
        message = MSG_UPGRADED.format(prefix=result.table_prefix, before=before, after=result.after)
        out.write(message + "\n")
    else:
        out.write(MSG_UP_TO_DATE.format(prefix=result.table_prefix, after=result.after) + "\n")


Command = Callable[[Store, argparse.Namespace, TextIO], Awaitable[None]]
COMMANDS: dict[tuple[str, str], Command] = {
    ("sessions", "list"): _list,
    ("sessions", "show"): _show,
    ("sessions", "delete"): _delete,
    ("sessions", "purge-expired"): _purge,
    ("sessions", "stats"): _stats,
    ("db", "upgrade"): _db_upgrade,
}


def store_from_args(args: argparse.Namespace, url: str | None = None) -> Store:
    """The (unopened) store the command line names: ``url``, else ``--store``, else the default."""
    url = url or args.store or os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL
    options = _store_options(args)
    if args.table_prefix is not None and not _is_sql(url):
        raise UsageError(MSG_PREFIX_NOT_SQL)
    try:
        return create_store(url, **options)
    except TypeError as exc:  # an option this backend's constructor does not take
        raise UsageError(MSG_BAD_STORE_OPTIONS.format(names=", ".join(sorted(options)))) from exc


StoreMaker = Callable[[argparse.Namespace, "str | None"], Store]
Handler = Callable[[argparse.Namespace, TextIO, StoreMaker], Awaitable[int]]
"""A command of another module: runs, returns its exit status, raises as the others do."""


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    handler: Handler | None = getattr(args, "handler", None)
    if handler is not None:
        return await handler(args, out, store_from_args)
    store = store_from_args(args)
    command = COMMANDS[(args.topic, args.action)]
    try:
        if command is not _db_upgrade:  # opening refuses the old schema db upgrade fixes
            await store.open()
        await command(store, args, out)
    finally:
        await store.close()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = anyio.run(_run, args, sys.stdout)
    except (ConfigurationError, MissingExtraError, UsageError) as exc:
        return _fail(EXIT_USAGE, str(exc))
    except StoreUnavailableError as exc:
        return _fail(EXIT_UNREACHABLE, MSG_UNREACHABLE.format(error=exc))
    except NotFound as exc:
        return _fail(EXIT_NOT_FOUND, str(exc))
    except StoreError as exc:
        return _fail(EXIT_STORE_FAILED, str(exc))
    return status


def _fail(status: int, message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
