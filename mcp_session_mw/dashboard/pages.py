"""The dashboard's HTML: plain server-rendered pages, every value escaped.

Functions here take data and return ``str``; they never touch a store. Every
value that came from a store or a request goes through :func:`text` (HTML
escaping, quotes included) before it is put in a page; nothing is marked safe.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

from ..records import SessionRecord, StoredEvent, StreamState

SEALED_PREFIXES = ("mcpenc1.", "mcpev1.")
"""How encrypted records and events begin (see :mod:`mcp_session_mw.encryption`)."""
ENVELOPE_FIELD = "__enc__"
MAX_PAYLOAD = 2000
"""Characters of an event's data or a session's state shown before it is cut."""
ENCRYPTED = "(encrypted)"

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}
h1{font-size:20px;margin:0 0 12px}h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%;box-shadow:0 1px 2px #0002}
th,td{padding:6px 10px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
th{background:#2d3a56;color:#fff;font-weight:600}tr:nth-child(even) td{background:#fafbfc}
code,pre{font:12px ui-monospace,monospace}pre{white-space:pre-wrap;margin:0;max-width:70em}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;padding:10px 16px;
box-shadow:0 1px 2px #0002;min-width:140px}.card b{display:block;font-size:22px}
.ok{color:#17803d}.bad{color:#b42318}.muted{color:#6b7280}a{color:#2450b2}
"""


def text(value: object) -> str:
    """``value`` as HTML text: escaped, quotes included."""
    return html.escape(str(value), quote=True)


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_PREFIXES)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _cut(value: str) -> str:
    return value if len(value) <= MAX_PAYLOAD else value[:MAX_PAYLOAD] + " …"


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{text(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


@dataclass(frozen=True)
class Health:
    ready: bool
    detail: str
    store: str
    live_sessions: int | None


@dataclass(frozen=True)
class Row:
    """One session of the overview, with its streams' totals."""

    record: SessionRecord
    streams: int
    events: int


def _client(record: SessionRecord) -> str:
    if ENVELOPE_FIELD in record.state and len(record.state) == 1:
        return ENCRYPTED
    name, version = record.client_info.get("name"), record.client_info.get("version")
    if name is None:
        return "-"
    return f"{name} {version}" if version is not None else str(name)


def _principal(record: SessionRecord) -> str:
    if ENVELOPE_FIELD in record.state and len(record.state) == 1:
        return ENCRYPTED
    return record.principal or "-"


def _health(health: Health) -> str:
    status = "ok" if health.ready else "bad"
    count = "?" if health.live_sessions is None else str(health.live_sessions)
    return (
        "<div class=cards>"
        f"<div class=card>store<b>{text(health.store)}</b></div>"
        f"<div class=card>health<b class={status} id=health>{text(health.detail)}</b></div>"
        f"<div class=card>live sessions<b id=live>{text(count)}</b></div>"
        "</div>"
    )


def overview(health: Health, rows: Sequence[Row], next_cursor: str | None, now: float) -> str:
    """The first page: the store's health and counts, and one page of live sessions."""
    head = (
        "<tr><th>key</th><th>principal</th><th>client</th><th>protocol</th>"
        "<th>age</th><th>expires in</th><th>streams</th><th>events</th></tr>"
    )
    lines = []
    for row in rows:
        record = row.record
        lines.append(
            "<tr class=session>"
            f'<td><a href="session/{quote(record.key)}"><code>{text(record.key)}</code></a></td>'
            f"<td>{text(_principal(record))}</td><td>{text(_client(record))}</td>"
            f"<td>{text(record.protocol_version)}</td>"
            f"<td>{text(_span(now - record.created_at))}</td>"
            f"<td>{text(_span(record.expires_at - now))}</td>"
            f"<td>{row.streams}</td><td>{row.events}</td></tr>"
        )
    table = (
        f"<table id=sessions>{head}{''.join(lines)}</table>"
        if lines
        else "<p class=muted>no live sessions</p>"
    )
    more = (
        f'<p><a href="?cursor={quote(next_cursor)}">next page</a></p>'
        if next_cursor is not None
        else ""
    )
    body = (
        f"<h1>mcp-session-mw sessions</h1>{_health(health)}"
        f"<h2>Live sessions</h2>{table}{more}"
        f"<p class=muted>read-only; rendered {text(_when(now))}</p>"
    )
    return page("mcp-session-mw sessions", body)


def _event_data(event: StoredEvent) -> str:
    if is_sealed(event.data):
        return f"<span class=muted>{ENCRYPTED}</span>"
    return f"<pre>{text(_cut(event.data))}</pre>" if event.data else "<span class=muted>-</span>"


def session_page(
    record: SessionRecord,
    streams: Sequence[tuple[StreamState, Sequence[StoredEvent]]],
    now: float,
) -> str:
    """One session: its record, each stream's state and its most recent events."""
    sealed = ENVELOPE_FIELD in record.state and len(record.state) == 1
    state = ENCRYPTED if sealed else _cut(json.dumps(record.state, indent=2, ensure_ascii=False))
    facts = [
        ("key", record.key),
        ("principal", _principal(record)),
        ("client", _client(record)),
        ("protocol version", record.protocol_version),
        ("requested version", record.requested_protocol_version or "-"),
        ("created", _when(record.created_at)),
        ("last used", _when(record.last_accessed)),
        ("expires", f"{_when(record.expires_at)} (in {_span(record.expires_at - now)})"),
        ("version", record.version),
    ]
    rows = "".join(f"<tr><th>{text(k)}</th><td>{text(v)}</td></tr>" for k, v in facts)
    parts = [
        "<p><a href='../'>all sessions</a></p>",
        f"<h1>Session <code>{text(record.key[:12])}</code></h1>",
        f"<table id=record>{rows}<tr><th>state</th><td><pre>{text(state)}</pre></td></tr></table>",
        "<h2>Streams</h2>",
    ]
    if not streams:
        parts.append("<p class=muted>no streams</p>")
    for stream, events in streams:
        lease = _span(stream.lease_expires - now) if stream.lease_expires > now else "ended"
        parts.append(
            f"<h2 class=stream>stream <code>{text(stream.stream_id)}</code></h2>"
            f"<p>request id <code>{text(json.dumps(stream.request_id))}</code> · "
            f"owner <code>{text(stream.owner or '-')}</code> · lease {text(lease)} · "
            f"events {stream.first_seq} to {stream.last_seq} · "
            f"{'done' if stream.done else 'open'}</p>"
        )
        if events:
            cells = "".join(
                f"<tr><td>{e.seq}</td><td>{text(e.event or '-')}</td><td>{_event_data(e)}</td></tr>"
                for e in events
            )
            head = "<tr><th>seq</th><th>event</th><th>data</th></tr>"
            parts.append(f"<table class=events>{head}{cells}</table>")
    return page(f"session {record.key[:12]}", "".join(parts))


def not_found() -> str:
    return page("not found", "<h1>No live session with that key</h1><p><a href='../'>back</a></p>")
