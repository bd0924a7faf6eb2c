"""Log records that say which session they are about, without giving its id away.

The middleware logs through :mod:`logging` (logger ``mcp_session_mw`` and its
children). While it handles a request for a session, every record it emits
carries ``session_fingerprint``: the first 12 hex digits of the session's
store key (its SHA-256, or HMAC-SHA-256 with the store's ``secret``), which is
how the key ``mcp-session-mw sessions list`` shows begins. The raw id is a bearer
credential and never reaches a log line. Outside a session the attribute is
``"-"``.

The middleware's own loggers get :class:`SessionFingerprintFilter` when this
module is imported, so their records have the attribute however logging is
set up. To use :data:`LOG_FORMAT` (or any format naming the attribute) on a
handler that also receives other libraries' records, give that handler the
filter too::

    handler = logging.StreamHandler()
    handler.addFilter(SessionFingerprintFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)

The value comes from a :class:`~contextvars.ContextVar`, so it follows the
request into the app's tool handlers and into tasks they start; a record that
already has the attribute keeps it (a handler running in another thread, such
as a ``QueueListener``, does not overwrite what the logger saw).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar, Token

SESSION_FINGERPRINT_ATTR = "session_fingerprint"
NO_SESSION = "-"
"""The fingerprint of records logged outside any session."""
FINGERPRINT_LENGTH = 12
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [session %(session_fingerprint)s] %(message)s"
"""A ``logging.Formatter`` format that shows the session fingerprint."""

PACKAGE_LOGGERS = (
    "mcp_session_mw",
    "mcp_session_mw.stores.sql",
    "mcp_session_mw.proxy",
    "mcp_session_mw.modern",
)
"""Every logger the package emits through (a test keeps this list complete)."""

_fingerprint: ContextVar[str] = ContextVar("mcp_session_fingerprint", default=NO_SESSION)


def fingerprint_of(key: str) -> str:
    """The fingerprint of a session stored under digest ``key`` (see :meth:`Store.key`)."""
    return key[:FINGERPRINT_LENGTH]


def current_fingerprint() -> str:
    """The fingerprint of the session being handled, or ``"-"``."""
    return _fingerprint.get()


def set_fingerprint(value: str) -> Token[str]:
    """Make ``value`` the current fingerprint; pass the token to :func:`reset_fingerprint`."""
    return _fingerprint.set(value)


def reset_fingerprint(token: Token[str]) -> None:
    _fingerprint.reset(token)


class SessionFingerprintFilter(logging.Filter):
    """Sets ``record.session_fingerprint`` from the current session; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, SESSION_FINGERPRINT_ATTR):
            setattr(record, SESSION_FINGERPRINT_ATTR, _fingerprint.get())
        return True


_FILTER = SessionFingerprintFilter()

FAILURE_LOG_INTERVAL = 10.0
"""Seconds during which repeats of one kind of failure are counted instead of logged."""
MAX_DETAIL = 300
"""Characters of an exception's message kept on a failure's log line."""


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, and of its cause, on one line."""
    text = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    cause = exc.__cause__
    if cause is not None:
        text += f" (from {type(cause).__name__}: {cause})".replace(": )", ")")
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


class FailureLog:
    """Logs failures one line each, at most one line per kind per ``interval`` seconds.

    A store outage makes every request fail the same way; a traceback per
    failure costs event-loop time (seconds each under a rich log handler) just
    when the service is struggling. So a failure is logged as one WARNING line:
    the message, then the exception's type and message (and its cause's). Its
    repeats within ``interval`` are only counted; the next line says how many
    were left out. The traceback is logged at DEBUG, for every failure, when
    that level is enabled. A kind is the logger and the message (before its
    arguments are filled in).
    """

    def __init__(
        self,
        interval: float = FAILURE_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, str], tuple[float, int]] = {}

    def __call__(
        self,
        logger: logging.Logger,
        message: str,
        *args: object,
        exc: BaseException | None = None,
        level: int = logging.WARNING,
    ) -> None:
        """Log ``message % args`` with ``exc`` (default: the exception being handled)."""
        if exc is None:
            exc = _handled()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(message, *args, exc_info=exc)
        if not logger.isEnabledFor(level):
            return
        kind = (logger.name, message)
        now = self._clock()
        with self._lock:
            last, left_out = self._kinds.get(kind, (None, 0))
            if last is not None and now - last < self.interval:
                self._kinds[kind] = (last, left_out + 1)
                return
            self._kinds[kind] = (now, 0)
        detail = "" if exc is None else f": {describe(exc)}"
        more = f" ({left_out} more like it not logged)" if left_out else ""
        logger.log(level, f"{message}%s%s", *args, detail, more)

    def reset(self) -> None:
        """Forget what was logged: the next failure of every kind gets its line."""
        with self._lock:
            self._kinds.clear()


def _handled() -> BaseException | None:
    return sys.exc_info()[1]


log_failure = FailureLog()
"""The package's failure log (see :class:`FailureLog`)."""


def _install() -> None:
    """Give the package's loggers the filter (once, however often this runs)."""
    for name in PACKAGE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, SessionFingerprintFilter) for f in logger.filters):
            logger.addFilter(_FILTER)


_install()

__all__ = [
    "FAILURE_LOG_INTERVAL",
    "LOG_FORMAT",
    "NO_SESSION",
    "SESSION_FINGERPRINT_ATTR",
    "FailureLog",
    "SessionFingerprintFilter",
    "current_fingerprint",
    "describe",
    "fingerprint_of",
    "log_failure",
]
