"""SessionMiddleware: the request entry, routing by method, session admission and app sessions.

Divergences from the MCP SDK's own session handling, on purpose:

1. The session id is minted here (256 bits from ``secrets``) and stored; the
   app's own id, if it issues one, never reaches the client.
2. A request whose ``MCP-Protocol-Version`` is not a handshake revision passes
   through untouched (modern lane): no id minted, none checked.
3. A session id sent on ``initialize`` is ignored, never adopted (no fixation).
4. Malformed, unknown, expired and foreign session ids are all answered the
   same 404, so a probe learns nothing about which ids exist.
5. A session this process does not hold is re-created in the app from the
   stored client parameters (see :mod:`mcp_session_mw.rehydrate`).
6. Methods other than GET, POST and DELETE get 405 from the middleware, and
   an OPTIONS that is no CORS preflight gets 204 with ``Allow``: the SDK's
   stateful app opens a new session of its own for such a request and sends
   its id back. A preflight goes to the app (its CORS layer answers it) without
   a session id, and an app id in the answer is removed and that session closed.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import TYPE_CHECKING, Any

import anyio
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import metrics
from .app_call import MSG_APP_RAISED, AppCall
from .asgi import (
    BodyTooLarge,
    ClientDisconnected,
    RequestHeads,
    body_only,
    call_and_capture,
    drain_body,
    header_too_large,
    internal_scope,
    read_body,
    replay_body,
    send_empty,
    with_headers,
)
from .durable import DurableResponse
from .errors import ConfigurationError, SessionNotFoundError, StoreError
from .handshake import (
    initialize_succeeded,
    initialize_well_formed,
    negotiated_version,
    rewrite_session_header,
    send_captured,
)
from .janitor import Janitor
from .jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    MSG_APP_SESSION_FAILED,
    MSG_BAD_EVENT_ID,
    MSG_BAD_INITIALIZE,
    MSG_BODY_TOO_LARGE,
    MSG_HEADER_TOO_LARGE,
    MSG_INITIALIZE_BATCHED,
    MSG_METHOD_NOT_ALLOWED,
    MSG_NO_PENDING_REQUEST,
    MSG_NOT_ACCEPTABLE,
    MSG_NOT_JSON_RPC,
    MSG_PARSE_ERROR,
    MSG_PRINCIPAL_SESSION_LIMIT,
    MSG_REPLY_NOT_TAKEN,
    MSG_SESSION_NOT_FOUND,
    MSG_SESSION_REQUIRED,
    MSG_STORE_UNAVAILABLE,
    MSG_TOO_MANY_SESSIONS,
    MSG_UNSUPPORTED_MEDIA_TYPE,
    PARSE_ERROR,
    RequestId,
    is_json,
    parse_json,
    request_id_of,
    send_error,
)
from .lifespan import Lifespan
from .limits import PrincipalIndex, SessionCount, is_index
from .logs import NO_SESSION, fingerprint_of, log_failure, reset_fingerprint, set_fingerprint
from .options import (
    Mode,
    SessionOptions,
    keywords_of,
)
from .principal import resolve_principal
from .protocol import (
    DEFAULT_REVISION,
    LAST_EVENT_ID_HEADER,
    SESSION_HEADER,
    VERSION_HEADER,
    is_handshake_lane,
    mint_session_id,
    valid_session_id,
)
from .records import SessionRecord, StreamState
from .rehydrate import (
    GATEWAY_STATUSES,
    MSG_RECREATE_FAILED,
    AppSessionError,
    LocalSession,
    LocalSessions,
    close_app_session,
    recreate_app_session,
)
from .relay import AppSessionWorker, client_reply_key, hand_over, owner_of, settle, with_id
from .session import Session, _current
from .setup_replay import META_KEY as SETUP_META_KEY
from .setup_replay import is_setup_request, record_setup, setup_changes
from .shutdown import Drain
from .stores import DEFAULT_STORE_URL, Store, create_store
from .streams import (
    STANDALONE_STREAM,
    StreamOptions,
    answer_events_lost,
    follow_stream,
    parse_event_id,
    wants_priming,
    was_evicted,
)
from .tasks import Tasks
from .watch import OPEN_DELAY, StreamWatcher

if TYPE_CHECKING:
    from .settings import SessionSettings

logger = logging.getLogger("mcp_session_mw")

APP_FULL = 503
"""The status of an app that holds all the sessions it may (the SDK's "Too many open sessions")."""
STORE_URL_ENV = "MCP_SESSION_STORE_URL"
REPLY_HANDOVER_TIMEOUT = 10.0

_SESSION = SESSION_HEADER.encode()
_VERSION = VERSION_HEADER.encode()
_RETRY_AFTER = [(b"retry-after", b"1")]
_ALLOW = [(b"allow", b"GET, POST, DELETE, OPTIONS")]
_CLOSE = [(b"connection", b"close")]
_DROP_SESSION = frozenset({_SESSION})


class SessionMiddleware:
    """Pure ASGI middleware giving an MCP Streamable HTTP app durable sessions.

    ``store`` is a :class:`Store` or a store URL (default: the
    ``MCP_SESSION_STORE_URL`` environment variable, else a SQLite file
    ``./mcp_sessions.db``). ``mode`` picks how the app is driven: ``"rehydrate"``
    for apps that issue their own session ids (the SDK's stateful mode),
    ``"stateless"`` for apps that do not, ``"auto"`` to tell from the app's
    first answer to ``initialize``. Only requests to ``path`` (relative to the
    mount point; ``None`` for every path) are handled; the rest pass through.
    """

    @keywords_of(SessionOptions)
    def __init__(self, app: ASGIApp, options: SessionOptions) -> None:
        """Takes each :class:`~mcp_session_mw.options.SessionOptions` field as a keyword."""
        self.options = options
        store = options.store
        store_options = options.store_options
        self.app = app
        if isinstance(store, Store):
            if store_options:
                raise ConfigurationError("store_options only apply when store is a URL")
            self.store = store
        else:
            url = store or os.environ.get(STORE_URL_ENV) or DEFAULT_STORE_URL
            self.store = create_store(url, **dict(store_options or {}))
        if options.encryption_keys is not None:
            from .encryption import EncryptedStore  # cryptography is an optional extra

            self.store = EncryptedStore(self.store, options.encryption_keys)
        self.store.finished_stream_ttl = (
            None if options.finished_stream_ttl is None else float(options.finished_stream_ttl)
        )
        metrics.instrument(self.store)  # store timings and spans, when those extras are installed
        self.ttl = float(options.ttl)
        self.touch_interval = (
            min(self.ttl / 4, 60.0)
            if options.touch_interval is None
            else float(options.touch_interval)
        )
        self.mode: Mode = options.mode
        self.path = None if options.path is None else (options.path.rstrip("/") or "/")
        self.max_body_size = options.max_body_size
        self.max_header_size = options.max_header_size
        # A session that never comes back after initialize (a flood) lives this long.
        self.initialize_ttl = (
            self.ttl if options.initialize_ttl is None else min(options.initialize_ttl, self.ttl)
        )
        self.principal = options.principal
        self._count = (
            None
            if options.max_sessions is None
            else SessionCount(self.store, options.max_sessions, options.session_count_interval)
        )
        self._index = (
            None
            if options.max_sessions_per_principal is None
            else PrincipalIndex(self.store, options.max_sessions_per_principal, self.ttl)
        )
        self.streams = StreamOptions(
            retry_ms=options.sse_retry_ms,
            lease_seconds=options.stream_lease,
            max_events_per_stream=options.max_events_per_stream,
            max_streams_per_session=options.max_streams_per_session,
            max_stream_seconds=options.max_stream_seconds,
        )
        self._locals = LocalSessions(options.max_local_sessions, self.store.now)
        self.app_session_idle_timeout = options.app_session_idle_timeout
        self.drain = Drain(float(options.shutdown_grace_seconds))
        self.janitor = (
            None
            if options.cleanup_interval is None
            else Janitor(self.store, options.cleanup_interval, self.open_store)
        )
        self.lifespan = Lifespan(
            self.store, self.drain, self.janitor, self.app_session_idle_timeout, self._close_idle
        )

    @classmethod
    def from_settings(
        cls, app: ASGIApp, settings: SessionSettings | None = None, **overrides: Any
    ) -> SessionMiddleware:
        """Build the middleware from ``MCP_SESSION_*`` environment variables.

        ``settings`` defaults to a :class:`~mcp_session_mw.settings.SessionSettings`
        read now; ``overrides`` (any keyword option) win over it. Needs the
        ``settings`` extra (pydantic-settings); see docs/configuration.md.
        """
        from .settings import SessionSettings  # pydantic-settings is an optional extra

        keywords = (settings or SessionSettings()).middleware_options()
        keywords.update(overrides)
        return cls(app, **keywords)

    # -- entry -----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan.run(self.app, scope, receive, send)
            return
        if scope["type"] != "http" or not self._handles(scope):
            await self.app(scope, receive, send)
            return
        if self.max_header_size is not None and header_too_large(
            scope["headers"], self.max_header_size
        ):
            # Before the lane is told: the limit holds on the modern lane too.
            await send_error(send, 431, INVALID_REQUEST, MSG_HEADER_TOO_LARGE)
            return
        headers = RequestHeads(scope["headers"])
        if not is_handshake_lane(headers.version):
            await self.app(scope, receive, send)  # Divergence #2: modern lane.
            return
        method = scope["method"]
        token = set_fingerprint(NO_SESSION)  # _resolve and _initialize set the session's
        try:
            if method == "POST":
                await self._post(scope, receive, send, headers)
            elif method == "DELETE":
                await self._delete(scope, send, headers)
            elif method == "GET":
                await self._get(scope, receive, send, headers)
            elif method == "OPTIONS":
                await self._options(scope, receive, send)
            else:
                # Divergence #6: answered here; the SDK would open (and leak) an app session.
                await send_error(send, 405, INVALID_REQUEST, MSG_METHOD_NOT_ALLOWED, None, _ALLOW)
        finally:
            reset_fingerprint(token)

    def _handles(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if path == self.path and not scope.get("root_path"):
            return True
        if self.path is None:
            return True
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return (path.rstrip("/") or "/") == self.path

    # -- store lifecycle -----------------------------------------------------------

    async def open_store(self) -> None:
        """Open the store once; called at startup and, lazily, by the first request."""
        await self.lifespan.open_store()

    async def close_store(self) -> None:
        await self.lifespan.close_store()

    # -- OPTIONS ---------------------------------------------------------------------

    async def _options(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Divergence #6: no OPTIONS opens an app session the client would learn of."""
        if not any(name == b"access-control-request-method" for name, _ in scope["headers"]):
            await send_empty(send, 204, _ALLOW)
            return
        minted: list[str] = []

        async def strip_app_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                app_id = Headers(raw=message.get("headers", [])).get(SESSION_HEADER)
                if app_id is not None:
                    minted.append(app_id)
                    rewrite_session_header(message, None)
            await send(message)

        app_scope = with_headers(scope, {}, drop=_DROP_SESSION)
        await self.app(app_scope, receive, strip_app_id)
        for app_id in minted:  # the SDK drops its own on a refusal; another app may not
            await close_app_session(self.app, app_scope, app_id, DEFAULT_REVISION)

    # -- POST ----------------------------------------------------------------------

    async def _post(
        self, scope: Scope, receive: Receive, send: Send, headers: RequestHeads
    ) -> None:
        if not headers.content_types or not all(map(is_json, headers.content_types)):
            await send_error(send, 415, INVALID_REQUEST, MSG_UNSUPPORTED_MEDIA_TYPE)
            return
        try:
            body = await read_body(receive, self.max_body_size)
        except BodyTooLarge:
            # Read on (bounded) so the client, still sending, gets to read the 413.
            await drain_body(receive)
            await send_error(send, 413, INVALID_REQUEST, MSG_BODY_TOO_LARGE, None, _CLOSE)
            return
        except ClientDisconnected:
            return
        try:
            message = parse_json(body)
        except (ValueError, RecursionError):
            await send_error(send, 400, PARSE_ERROR, MSG_PARSE_ERROR)
            return
        if isinstance(message, dict) and message.get("method") == "initialize":
            await self._initialize(scope, receive, send, body, message)
            return
        if isinstance(message, list):
            if any(isinstance(m, dict) and m.get("method") == "initialize" for m in message):
                await send_error(send, 400, INVALID_REQUEST, MSG_INITIALIZE_BATCHED)
                return
        elif not isinstance(message, dict):
            await send_error(send, 400, INVALID_REQUEST, MSG_NOT_JSON_RPC)
            return
        request_id = request_id_of(message)
        found = await self._resolve(scope, send, headers, request_id)
        if found is None:
            return
        session_id, record = found
        reply_key = client_reply_key(message)
        if reply_key is not None:
            await self._reply(
                scope, receive, send, headers, session_id, record, body, message, reply_key
            )
            return
        await self._forward(
            scope, receive, send, headers, session_id, record, body, request_id, message
        )

    async def _initialize(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, message: dict[str, Any]
    ) -> None:
        request_id = request_id_of(message)
        if not initialize_well_formed(message, request_id):
            await send_error(send, 400, INVALID_PARAMS, MSG_BAD_INITIALIZE, request_id)
            return
        params = message.get("params") or {}
        requested = params.get("protocolVersion")
        client_info = params.get("clientInfo")
        capabilities = params.get("capabilities")
        try:
            await self.open_store()
        except StoreError:
            await self._unavailable(send, request_id)
            return
        now = self.store.now()
        session_id = mint_session_id()
        set_fingerprint(fingerprint_of(self.store.key(session_id)))
        principal = await resolve_principal(self.principal, scope)
        # Until the client's next request the session only gets initialize_ttl.
        expires_at = now + self.initialize_ttl
        if not await self._admit(send, session_id, principal, expires_at, request_id):
            return
        provisional = SessionRecord(
            key="",
            protocol_version=requested or DEFAULT_REVISION,
            requested_protocol_version=requested,
            client_info=client_info or {},
            capabilities=capabilities or {},
            principal=principal,
            created_at=now,
            last_accessed=now,
            expires_at=expires_at,
            ttl=self.initialize_ttl,
        )
        session = Session(session_id, self.store, provisional)
        # Divergence #3: a session id sent with initialize is dropped, never adopted.
        app_scope = with_headers(scope, {}, drop=frozenset({_SESSION}))
        if self.mode != "stateless":
            await self._close_local(scope, self._locals.make_room())
        token = _current.set(session)
        try:
            answer = await call_and_capture(self.app, app_scope, body)
            if answer.status == APP_FULL and await self._evict_for_app(scope, None):
                # The app holds all it may: one of ours made room; it ran nothing.
                answer = await call_and_capture(self.app, app_scope, body)
        finally:
            _current.reset(token)
        app_id = answer.header(SESSION_HEADER)
        if not 200 <= answer.status < 300 or not initialize_succeeded(answer):
            # The app refused (an error status, or a JSON-RPC error under 200): no session.
            await self._release(session_id, principal)
            if app_id is not None and 200 <= answer.status < 300:
                await close_app_session(self.app, scope, app_id, provisional.protocol_version)
            await send_captured(send, answer, None)
            return
        self._learn_mode(app_id)
        negotiated = negotiated_version(answer) or provisional.protocol_version
        try:
            record = await self.store.create(
                session_id, provisional.evolve(protocol_version=negotiated)
            )
        except StoreError:
            log_failure(logger, "could not store a new session")
            await self._release(session_id, principal)
            if app_id is not None:
                await close_app_session(self.app, scope, app_id, negotiated)
            await self._unavailable(send, request_id)
            return
        metrics.SESSIONS_CREATED.inc()
        if self.mode != "stateless":  # a stateless session is kept only while it is busy
            session._set_record(record)
            local = LocalSession(session, app_id if self.mode == "rehydrate" else None)
            local.scope = app_scope
            await self._remember(scope, session_id, local)
            self._start_worker(scope, session_id, local, negotiated)
        await send_captured(send, answer, session_id)

    # -- GET -------------------------------------------------------------------------

    async def _get(self, scope: Scope, receive: Receive, send: Send, headers: RequestHeads) -> None:
        """Resume a stream after Last-Event-ID, or open the standalone stream."""
        if "text/event-stream" not in (headers.accept or ""):
            await send_error(send, 406, INVALID_REQUEST, MSG_NOT_ACCEPTABLE)
            return
        found = await self._resolve(scope, send, headers, None)
        if found is None:
            return
        session_id, record = found
        version = headers.version or record.protocol_version
        last_event_id = headers.last_event_ids
        try:
            if last_event_id:
                position = parse_event_id(last_event_id[0]) if len(last_event_id) == 1 else None
                state = (
                    None
                    if position is None
                    else await self.store.load_stream(session_id, position[0])
                )
                if state is None and position is not None and position[1] == 0:
                    # A priming event's id: its stream is stored with the first
                    # event of its response, or OPEN_DELAY (plus a TICK) after its start.
                    await anyio.sleep(3 * OPEN_DELAY)
                    state = await self.store.load_stream(session_id, position[0])
                if (
                    position is not None
                    and state is None
                    and (
                        was_evicted(record.meta, position[0])
                        or await self.store.stream_expired(session_id, position[0])
                    )
                ):
                    # Removed by max_streams_per_session or finished_stream_ttl: its
                    # events are lost, as a trimmed one's.
                    await answer_events_lost(send, session_id)
                    return
                if position is None or state is None:
                    # Another session's id is answered exactly like an unknown one.
                    await send_error(send, 400, INVALID_REQUEST, MSG_BAD_EVENT_ID)
                    return
                stream_id, after_seq = position
                priming = False
            else:
                stream_id = STANDALONE_STREAM
                state = await self.store.load_stream(session_id, stream_id)
                if state is None:
                    state = await self.store.open_stream(session_id, StreamState(stream_id))
                after_seq = state.last_seq
                priming = wants_priming(version)
        except StoreError:
            await self._unavailable(send, None)
            return
        await follow_stream(
            store=self.store,
            session_id=session_id,
            stream_id=stream_id,
            after_seq=after_seq,
            send=send,
            receive=receive,
            options=self.streams,
            priming=priming,
            exiting=None if self.lifespan.exit_watch is None else self.lifespan.exit_watch.exiting,
        )

    # -- DELETE ----------------------------------------------------------------------

    async def _delete(self, scope: Scope, send: Send, headers: RequestHeads) -> None:
        found = await self._resolve(scope, send, headers, None, touch=False)
        if found is None:
            return
        session_id, record = found
        try:
            existed = await self.store.delete(session_id)
        except StoreError:
            await self._unavailable(send, None)
            return
        local = self._locals.pop(session_id)
        if local is not None and local.app_id is not None:
            await close_app_session(self.app, scope, local.app_id, record.protocol_version)
        if not existed:  # deleted by someone else between load and delete
            await send_error(send, 404, INVALID_REQUEST, MSG_SESSION_NOT_FOUND)
            return
        metrics.SESSIONS_DELETED.inc()
        await self._release(session_id, record.principal)
        await send_empty(send, 200)

    # -- shared steps --------------------------------------------------------------------

    async def _resolve(
        self,
        scope: Scope,
        send: Send,
        headers: RequestHeads,
        request_id: RequestId,
        *,
        touch: bool = True,
    ) -> tuple[str, SessionRecord] | None:
        """Find the live session a request names, or answer the request and return None."""
        values = headers.session_ids
        if not values:
            await send_error(send, 400, INVALID_REQUEST, MSG_SESSION_REQUIRED, request_id)
            return None
        session_id = values[0]
        if len(values) > 1 or not valid_session_id(session_id):
            await self._not_found(send, request_id)  # Divergence #4.
            return None
        set_fingerprint(fingerprint_of(self.store.key(session_id)))
        try:
            if (
                not self.lifespan.store_open
            ):  # open_store checks too; this spares a coroutine a request
                await self.open_store()
            record = await self.store.load(session_id)
        except StoreError:
            log_failure(logger, "session store unavailable")
            await self._unavailable(send, request_id)
            return None
        if record is None or is_index(record):
            await self._not_found(send, request_id)
            return None
        if self.principal is not None:
            caller = await resolve_principal(self.principal, scope)
            if caller is None and record.principal is not None:
                await self._let_app_authenticate(scope, send)
                return None
            if caller != record.principal:
                await self._not_found(send, request_id)  # Divergence #4.
                return None
        now = self.store.now()
        # The client came back after initialize: the session gets its full ttl.
        promote = record.ttl < self.ttl
        if touch and (promote or now - record.last_accessed >= self.touch_interval):
            ttl = self.ttl if promote else record.ttl
            try:
                await self.store.touch(session_id, ttl if promote else None)
            except StoreError:
                await self._unavailable(send, request_id)
                return None
            if self._index is not None and record.principal is not None:
                try:
                    await self._index.extend(record.principal, session_id, now + ttl)
                except StoreError:
                    log_failure(logger, "could not renew a per-principal session slot")
        return session_id, record

    async def _admit(
        self,
        send: Send,
        session_id: str,
        principal: str | None,
        expires_at: float,
        request_id: RequestId,
    ) -> bool:
        """Take room for a new session under the limits, or answer the request and return False."""
        if self._count is not None:
            try:
                admitted = await self._count.admit()
            except StoreError:
                await self._unavailable(send, request_id)
                return False
            if not admitted:
                retry = [(b"retry-after", str(math.ceil(self._count.interval)).encode())]
                await send_error(
                    send, 503, INTERNAL_ERROR, MSG_TOO_MANY_SESSIONS, request_id, retry
                )
                return False
        if self._index is not None and principal is not None:
            try:
                wait = await self._index.admit(principal, session_id, expires_at)
            except StoreError:
                wait = -1.0
            if wait is not None:
                if self._count is not None:
                    self._count.forget()
                if wait < 0:
                    await self._unavailable(send, request_id)
                else:
                    retry = [(b"retry-after", str(math.ceil(wait)).encode())]
                    await send_error(
                        send, 429, INVALID_REQUEST, MSG_PRINCIPAL_SESSION_LIMIT, request_id, retry
                    )
                return False
        return True

    async def _release(self, session_id: str, principal: str | None) -> None:
        """Give back what :meth:`_admit` took (the session was never created, or is gone)."""
        if self._count is not None:
            self._count.forget()
        if self._index is not None and principal is not None:
            try:
                await self._index.release(principal, session_id)
            except StoreError:  # the slot frees itself at its recorded expiry
                log_failure(logger, "could not free a per-principal session slot")

    async def _let_app_authenticate(self, scope: Scope, send: Send) -> None:
        """Answer a request without credentials for a session someone owns: the app does.

        The app's authentication layer answers (the MCP SDK: 401 with its
        ``WWW-Authenticate`` challenge), so an OAuth client refreshes its token
        and retries with the same session instead of dropping it on a 404. The
        app gets the request without its session id and with an empty body, so
        an app without authentication can run nothing (it answers 400).
        """
        app_scope = with_headers(scope, {}, drop=frozenset({_SESSION, b"content-length"}))
        await self.app(app_scope, replay_body(b"", _disconnected), send)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: RequestHeads,
        session_id: str,
        record: SessionRecord,
        body: bytes,
        request_id: RequestId,
        message: Any = None,
    ) -> None:
        local = self._locals.get(session_id)
        fresh = local is None
        if local is None:
            session = Session(session_id, self.store, record)
            local = LocalSession(session)
        elif local.session is None:
            session = local.session = Session(session_id, self.store, record)
        else:
            session = local.session
            session._set_record(record)
        version = headers.version or record.protocol_version
        setup = is_setup_request(message)
        token = _current.set(session)
        local.busy += 1
        try:
            if fresh:
                await self._remember(scope, session_id, local)
            for attempt in (0, 1):
                app_id = local.app_id
                if app_id is None and self.mode != "stateless":
                    try:
                        app_id = await self._app_session(scope, session_id, local, record)
                    except (
                        Exception
                    ) as exc:  # AppSessionError, or the app raised (never cancellation)
                        log_failure(logger, MSG_RECREATE_FAILED)
                        app_status = exc.status if isinstance(exc, AppSessionError) else 500
                        # A gateway status passes (an upstream down or slow behind a
                        # proxy); an app full of sessions busy here asks for a moment.
                        refused = app_status if app_status in GATEWAY_STATUSES else 500
                        await send_error(
                            send,
                            refused,
                            INTERNAL_ERROR,
                            MSG_APP_SESSION_FAILED,
                            request_id,
                            _RETRY_AFTER if app_status == APP_FULL else None,
                        )
                        return
                set_headers = {_VERSION: version.encode()}
                if app_id is not None:
                    set_headers[_SESSION] = app_id.encode()
                app_scope = with_headers(scope, set_headers, _DROP_SESSION, headers.named)
                if app_id is not None and record.meta.get(SETUP_META_KEY) != local.applied_setup:
                    await self._sync_setup(scope, app_id, version, local, record)
                if attempt == 0 and setup:
                    # Recorded before the client hears back, so its next request
                    # finds it on whichever process it reaches.
                    await self._record_setup(session_id, message)
                may_retry = attempt == 0 and app_id is not None
                background, watcher = self.lifespan.background, self.lifespan.watcher
                if background is not None and watcher is not None:  # the usual case
                    status = await self._respond(
                        background,
                        watcher,
                        app_scope,
                        body,
                        send,
                        session,
                        request_id,
                        version,
                        may_retry,
                        local,
                    )
                else:
                    status = await self._respond_alone(
                        app_scope, body, send, session, request_id, version, may_retry, local
                    )
                if status is not None:
                    if setup and 200 <= status < 300:
                        # The app session ran it itself; changes other processes
                        # recorded meanwhile are sent on its next request.
                        local.applied_setup = record_setup(
                            {SETUP_META_KEY: local.applied_setup}, message
                        )[SETUP_META_KEY]
                    return
                # The app answered 404: it no longer holds that session (idle
                # timeout, restart). It never ran the request, so re-create once.
                local.app_id = None
                local.stop_worker()
        finally:
            _current.reset(token)
            local.busy -= 1
            if self.mode == "stateless":
                self._put_down(session_id, local)

    def _put_down(self, session_id: str, local: LocalSession) -> None:
        """Stateless mode: keep nothing of a session no request of which runs here.

        The store has the record, so the next request builds a fresh handle;
        only streams still to be recorded (see durable) are kept, handle-less.
        """
        if local.busy:
            return
        if local.has_unrecorded_streams:
            local.session = None
        else:
            self._locals.discard(session_id, local)

    async def _respond_alone(
        self,
        scope: Scope,
        body: bytes,
        send: Send,
        session: Session,
        request_id: RequestId,
        protocol_version: str,
        hold_404: bool,
        local: LocalSession | None,
    ) -> int | None:
        """:meth:`_respond` without a lifespan (a mounted app): in a task group of its own."""
        async with anyio.create_task_group() as tg:
            status = await self._respond(
                Tasks(tg),
                None,
                scope,
                body,
                send,
                session,
                request_id,
                protocol_version,
                hold_404,
                local,
            )
            # What is left is the response's own clock, which would sleep on.
            tg.cancel_scope.cancel()
        return status

    async def _respond(
        self,
        tasks: Tasks,
        watcher: StreamWatcher | None,
        scope: Scope,
        body: bytes,
        send: Send,
        session: Session,
        request_id: RequestId,
        protocol_version: str,
        hold_404: bool,
        local: LocalSession | None,
    ) -> int | None:
        """Run the app on the client's request; its status, or None if a 404 was held back.

        The app never sees ``http.disconnect``: a tool keeps running when its
        client leaves, and an SSE answer is stored event by event before it
        is forwarded (see :class:`DurableResponse`), so the client can resume.
        A response's own tasks (a writer for a long one) run in ``tasks`` (the
        middleware's background tasks), and its clock is ``watcher``. An app
        that raises costs this response alone: the failure is logged, and the
        client gets the JSON-RPC error for its request (see :meth:`AppCall.fail`).
        """
        call = AppCall(
            body=body,
            send=send,
            store=self.store,
            session=session,
            request_id=request_id,
            protocol_version=protocol_version,
            options=self.streams,
            tasks=tasks,
            watcher=watcher,
            unrecorded=None if local is None else local.unrecorded_streams,
            hold_404=hold_404,
        )
        self.drain.enter()
        try:
            await self.app(scope, call.receive, call.send)
            if call.durable is not None:
                await self._drain(scope, call.durable)
        except Exception:  # never cancellation, a BaseException
            log_failure(logger, MSG_APP_RAISED)
            await call.fail()
        finally:
            durable = call.durable
            call.cut()
            if durable is not None:
                session._untrack(durable)
                if not durable.finish_at_once():
                    with anyio.CancelScope(shield=True):
                        await durable.finish()
            self.drain.leave()
        return None if call.held else call.status

    async def _reply(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: RequestHeads,
        session_id: str,
        record: SessionRecord,
        body: bytes,
        message: dict[str, Any],
        key: str,
    ) -> None:
        """Route a client's reply to the process holding the server request it answers."""
        pending = owner_of(record.meta, key)
        request_id = request_id_of(message)
        if pending is None:
            await send_error(send, 400, INVALID_REQUEST, MSG_NO_PENDING_REQUEST, request_id)
            return
        owner, app_request_id = pending
        body = with_id(body, app_request_id)  # the app knows its request by its own id
        if owner == self.streams.instance_id:
            local = self._locals.get(session_id)
            if local is None or local.app_id is None:
                # The app session that asked is gone from this process.
                await self._settle(session_id, key)
                await send_error(send, 400, INVALID_REQUEST, MSG_NO_PENDING_REQUEST, request_id)
                return
            await self._forward(
                scope, receive, send, headers, session_id, record, body, None, message
            )
            await self._settle(session_id, key)
            return
        try:
            delivered = await hand_over(
                self.store, session_id, owner, body, key, REPLY_HANDOVER_TIMEOUT
            )
        except SessionNotFoundError:  # deleted or expired while the reply was on its way
            await self._not_found(send, request_id)
            return
        except StoreError:
            await self._unavailable(send, request_id)
            return
        if not delivered:
            await send_error(send, 503, INTERNAL_ERROR, MSG_REPLY_NOT_TAKEN, request_id)
            return
        await send_empty(send, 202)

    async def _settle(self, session_id: str, key: str) -> None:
        try:
            await settle(self.store, session_id, key)
        except StoreError:
            log_failure(logger, "could not settle a server request")

    async def _record_setup(self, session_id: str, message: dict[str, Any]) -> None:
        try:
            await self.store.update_meta(session_id, lambda meta: record_setup(meta, message))
        except StoreError:
            log_failure(logger, "could not record a session-setup request")

    async def _sync_setup(
        self, scope: Scope, app_id: str, version: str, local: LocalSession, record: SessionRecord
    ) -> None:
        """Bring a live app session to the setup recorded by other processes, if it changed."""
        recorded = record.meta.get(SETUP_META_KEY)
        if recorded == local.applied_setup:
            return
        sync_scope = internal_scope(
            scope,
            "POST",
            {
                b"content-type": b"application/json",
                b"accept": b"application/json, text/event-stream",
                _SESSION: app_id.encode(),
                _VERSION: version.encode(),
            },
        )
        for request in setup_changes(local.applied_setup, recorded):
            answer = await call_and_capture(
                self.app, sync_scope, json.dumps(request, separators=(",", ":")).encode()
            )
            if not 200 <= answer.status < 300:
                logger.warning("the app refused a synced %s (%d)", request["method"], answer.status)
        local.applied_setup = recorded

    async def _drain(self, scope: Scope, durable: DurableResponse) -> None:
        """Fetch the rest of a stream the app cut early, by its own Last-Event-ID.

        The SDK closes a request's SSE stream when a tool asks it to (SEP-1699)
        and keeps the later events in its event store; this resumes that
        stream from the app and stores what follows, so the client's resume
        (served from our store) gets everything up to the final response.
        """
        while durable.needs_drain:
            app_last = durable.app_last_event_id
            assert app_last is not None
            get_scope = with_headers(
                scope,
                {
                    b"accept": b"text/event-stream",
                    LAST_EVENT_ID_HEADER.encode(): app_last.encode(),
                },
                drop=frozenset({b"content-type", b"content-length"}),
            )
            get_scope["method"] = "GET"
            with anyio.CancelScope() as drain_scope:

                async def drain_send(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        if message["status"] != 200:
                            drain_scope.cancel()
                        return
                    if message["type"] == "http.response.body":
                        await durable.body({**message, "more_body": True})
                        if durable.final_seen:
                            drain_scope.cancel()

                await self.app(get_scope, body_only(b""), drain_send)
            if not durable.final_seen and durable.app_last_event_id == app_last:
                logger.warning("the app's stream ended without its final response")
                return

    async def _app_session(
        self, scope: Scope, session_id: str, local: LocalSession, record: SessionRecord
    ) -> str | None:
        """The app's id for this session, re-creating the app session if needed.

        (``_forward`` asks only when it has none and the mode is re-hydration.)
        """
        if self.mode == "stateless" or local.app_id is not None:
            return local.app_id
        async with self._locals.lock(session_id):
            if local.app_id is None:
                try:
                    app_id = await recreate_app_session(self.app, scope, record)
                except AppSessionError as exc:
                    if exc.status != APP_FULL or not await self._evict_for_app(scope, session_id):
                        raise
                    # The app holds all it may: one of ours made room; try once more.
                    app_id = await recreate_app_session(self.app, scope, record)
                self._learn_mode(app_id)
                local.app_id = app_id
                local.scope = scope
                local.applied_setup = record.meta.get(SETUP_META_KEY)
                self._start_worker(scope, session_id, local, record.protocol_version)
                if app_id is not None:
                    metrics.SESSIONS_RESUMED.inc()
                    logger.info("re-created session %s in the app", self.store.key(session_id)[:12])
        return local.app_id

    def _start_worker(
        self, scope: Scope, session_id: str, local: LocalSession, protocol_version: str
    ) -> None:
        """Pump the app session's GET stream and reply inbox, if the server runs our lifespan."""
        local.stop_worker()
        if local.app_id is None or self.lifespan.background is None:
            return
        local.worker = AppSessionWorker(
            app=self.app,
            store=self.store,
            scope=scope,
            session_id=session_id,
            app_id=local.app_id,
            protocol_version=protocol_version,
            instance_id=self.streams.instance_id,
        )
        self.lifespan.background.keep("an app session's worker", local.worker.run)

    def _learn_mode(self, app_id: str | None) -> None:
        if self.mode == "auto":
            self.mode = "rehydrate" if app_id is not None else "stateless"
            logger.info("driving the app in %s mode", self.mode)

    async def _remember(self, scope: Scope, session_id: str, local: LocalSession) -> None:
        await self._close_local(scope, self._locals.put(session_id, local))

    async def _evict_for_app(self, scope: Scope, keep: str | None) -> bool:
        """Close the least recently used idle app session of ours; False if there is none."""
        if self.mode == "stateless":
            return False
        evicted = self._locals.evict_one(keep)
        if evicted is None:
            return False
        logger.info("the app is full: closed the least recently used app session to make room")
        await self._close_local(scope, [evicted])
        return True

    async def _close_local(self, scope: Scope | None, entries: list[LocalSession]) -> None:
        """Close the app sessions of entries taken out of the map, as whoever opened each."""
        for entry in entries:
            on = entry.scope or scope
            if entry.app_id is not None and on is not None:
                await close_app_session(self.app, on, entry.app_id, DEFAULT_REVISION)

    async def _close_idle(self, timeout: float) -> None:
        """Close app sessions no request used for ``timeout`` seconds (a cache, not the truth)."""
        while True:
            await anyio.sleep(min(timeout / 4, 30.0))
            idle = self._locals.idle(timeout)
            if idle:
                logger.info("closing %d idle app sessions", len(idle))
                await self._close_local(None, idle)

    async def _not_found(self, send: Send, request_id: RequestId) -> None:
        await send_error(send, 404, INVALID_REQUEST, MSG_SESSION_NOT_FOUND, request_id)

    async def _unavailable(self, send: Send, request_id: RequestId) -> None:
        await send_error(send, 503, INTERNAL_ERROR, MSG_STORE_UNAVAILABLE, request_id, _RETRY_AFTER)

    # -- for helpers (FastAPI dependencies, admin code) ---------------------------------

    async def get_session(self, session_id: str) -> Session | None:
        """A handle on a live session by id, or None; never consults the app."""
        if not valid_session_id(session_id):
            return None
        await self.open_store()
        record = await self.store.load(session_id)
        if record is None:
            return None
        local = self._locals.get(session_id)
        if local is not None and local.session is not None:
            local.session._set_record(record)
            return local.session
        return Session(session_id, self.store, record)


async def _disconnected() -> Message:
    return {"type": "http.disconnect"}
