"""One run of the app on a client's request: what the app hears, and where its answer goes.

The app hears the request's body, then nothing until its own response is
complete, then ``http.disconnect``: a client that leaves does not stop a tool,
and never answering at all would leave an SSE app to cancel its listener (a
task and a traceback per response). The app's response start gets the durable
session id in place of the app's own; a 200 SSE answer then goes through a
:class:`DurableResponse` (stored before it is sent), anything else straight to
the client.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
from starlette.types import Message, Send

from .durable import DurableResponse
from .jsonrpc import INTERNAL_ERROR, MSG_APP_FAILED, RequestId, send_error
from .protocol import SESSION_HEADER
from .stores.base import Store
from .streams import StreamOptions
from .tasks import Tasks
from .watch import StreamWatcher

if TYPE_CHECKING:
    from .session import Session

_SESSION = SESSION_HEADER.encode()
_DISCONNECT: Message = {"type": "http.disconnect"}

MSG_APP_RAISED = "the app raised while answering a request; that response was ended with an error"
"""Logged (rate-limited) when the app raises on a client's request (see :meth:`AppCall.fail`)."""


class AppCall:
    """The ``receive`` and ``send`` the app gets for one request, and what they saw.

    One object with slots rather than closures: the app's frames often end up
    in reference cycles (a cancelled task's traceback holds them), which only
    the garbage collector frees, and everything they reach with them. After
    the app returns, :meth:`cut` drops what this holds, so such a cycle keeps
    one small object, not the response.
    """

    __slots__ = (
        "_body",
        "_client_send",
        "_complete",
        "_hold_404",
        "_options",
        "_protocol_version",
        "_request_id",
        "_session",
        "_store",
        "_tasks",
        "_unrecorded",
        "_waiting",
        "_watcher",
        "durable",
        "held",
        "status",
    )

    def __init__(
        self,
        *,
        body: bytes,
        send: Send,
        store: Store,
        session: Session,
        request_id: RequestId,
        protocol_version: str,
        options: StreamOptions,
        tasks: Tasks,
        watcher: StreamWatcher | None,
        unrecorded: list[str] | None,
        hold_404: bool,
    ) -> None:
        self._body: bytes | None = body
        self._client_send: Send | None = send
        self._store = store
        self._session: Session | None = session
        self._request_id = request_id
        self._protocol_version = protocol_version
        self._options = options
        self._tasks: Tasks | None = tasks
        self._watcher = watcher
        self._unrecorded = unrecorded
        self._hold_404 = hold_404
        self._complete = False  # the app's response has ended
        self._waiting: anyio.Event | None = None  # the app waits to hear of that
        self.durable: DurableResponse | None = None
        """The app's 200 SSE answer, made durable; None for any other response."""
        self.held = False
        """True when a 404 was held back (``hold_404``): the app no longer knows the session."""
        self.status = 0

    async def receive(self) -> Message:
        body = self._body
        if body is not None:
            self._body = None
            return {"type": "http.request", "body": body, "more_body": False}
        if not self._complete:
            if self._waiting is None:
                self._waiting = anyio.Event()
            await self._waiting.wait()
        return dict(_DISCONNECT)

    async def send(self, message: Message) -> None:
        kind = message["type"]
        durable = self.durable
        if durable is not None and kind == "http.response.body":
            await durable.body(message)
        elif kind == "http.response.start":
            await self._start(message)
            return
        elif not self.held and self._client_send is not None:
            with contextlib.suppress(OSError):  # the app finishes its work all the same
                await self._client_send(message)
        if kind == "http.response.body" and not message.get("more_body"):
            self._complete = True
            if self._waiting is not None:
                self._waiting.set()

    async def _start(self, message: Message) -> None:
        self.status = status = message["status"]
        session, send, tasks = self._session, self._client_send, self._tasks
        if session is None or send is None or tasks is None:
            return  # cut: the request is over
        if self._hold_404 and status == 404:
            self.held = True
        elif take_start(message, session.id):
            durable = self.durable = DurableResponse(
                store=self._store,
                session_id=session.id,
                request_id=self._request_id,
                protocol_version=self._protocol_version,
                options=self._options,
                send=send,
                tasks=tasks,
                watcher=self._watcher,
                unrecorded=self._unrecorded,
            )
            durable.start(message)
            session._track(durable)
        else:
            with contextlib.suppress(OSError):  # the app finishes its work all the same
                await send(message)

    async def fail(self) -> None:
        """The app raised: end its response with what the client should see.

        A durable response needs nothing here: its ``finish`` stores and sends
        the JSON-RPC error for the request after the events stored so far. A
        response not yet begun is answered 500 with a JSON-RPC error body; one
        begun otherwise is ended where it broke.
        """
        send = self._client_send
        if self.durable is not None or self._complete or self.held or send is None:
            return
        self._complete = True
        with contextlib.suppress(OSError):
            if self.status == 0:
                self.status = 500
                await send_error(send, 500, INTERNAL_ERROR, MSG_APP_FAILED, self._request_id)
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    def cut(self) -> None:
        """The app returned: drop the request's body, the client, the session and the response.

        Read :attr:`durable` first: it is None from here on.
        """
        self._body = None
        self._client_send = self._session = self._tasks = self._unrecorded = None
        self.durable = None
        self._complete = True
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.set()


def take_start(message: Message, session_id: str) -> bool:
    """Put the durable session id in the app's response start; True if it is a 200 SSE.

    The app's own session id goes, and from a 200 SSE response (by its first
    content-type), to be made durable, so does a content-length, since the body
    sent is not the app's. Headers with lowercase names, none repeated (what
    Starlette sends), are rewritten as a dict, in C.
    """
    raw = message.get("headers", ())
    if not isinstance(raw, list | tuple):
        raw = list(raw)
    named = dict(raw)
    if len(named) != len(raw) or not b"".join(named).islower():
        return _take_start_scan(message, raw, session_id)
    named.pop(_SESSION, None)
    content_type = named.get(b"content-type")
    sse = (
        message["status"] == 200
        and content_type is not None
        and content_type.lower().startswith(b"text/event-stream")
    )
    if sse:
        named.pop(b"content-length", None)
    named[_SESSION] = session_id.encode("latin-1")
    message["headers"] = list(named.items())
    return sse


def _take_start_scan(message: Message, raw: Sequence[Any], session_id: str) -> bool:
    """:func:`take_start` for any headers: one pass, names in any case, repeats kept."""
    headers = []
    content_type: bytes | None = None
    has_length = False
    for name, value in raw:
        lower = name.lower()
        if lower == _SESSION:
            continue
        if lower == b"content-type":
            if content_type is None:
                content_type = value.lower()
        elif lower == b"content-length":
            has_length = True
        headers.append((name, value))
    sse = (
        message["status"] == 200
        and content_type is not None
        and content_type.startswith(b"text/event-stream")
    )
    if sse and has_length:
        headers = [header for header in headers if header[0].lower() != b"content-length"]
    headers.append((_SESSION, session_id.encode("latin-1")))
    message["headers"] = headers
    return sse
