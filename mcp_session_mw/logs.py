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
from contextvars import ContextVar, Token

SESSION_FINGERPRINT_ATTR = "session_fingerprint"
NO_SESSION = "-"
"""The fingerprint of records logged outside any session."""
FINGERPRINT_LENGTH = 12
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [session %(session_fingerprint)s] %(message)s"
"""A ``logging.Formatter`` format that shows the session fingerprint."""

PACKAGE_LOGGERS = ("mcp_session_mw", "mcp_session_mw.stores.sql")
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


def _install() -> None:
    """Give the package's loggers the filter (once, however often this runs)."""
    for name in PACKAGE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, SessionFingerprintFilter) for f in logger.filters):
            logger.addFilter(_FILTER)


_install()

__all__ = [
    "LOG_FORMAT",
    "NO_SESSION",
    "SESSION_FINGERPRINT_ATTR",
    "SessionFingerprintFilter",
    "current_fingerprint",
    "fingerprint_of",
]
