"""Every exception this package raises derives from :class:`SessionMiddlewareError`.

Backend drivers' own exceptions never escape a store: they are re-raised as
:class:`StoreError` (or :class:`StoreUnavailableError` when the server cannot be
reached) with the driver's exception chained as ``__cause__``.
"""

from __future__ import annotations


class SessionMiddlewareError(Exception):
    """Base class of every error raised by mcp-session-mw."""


class ConfigurationError(SessionMiddlewareError, ValueError):
    """An option, URL or environment variable has a value the library cannot use."""


class MissingExtraError(SessionMiddlewareError, ImportError):
    """An optional driver is not installed; the message names the extra to install."""

    def __init__(self, extra: str, module: str) -> None:
        self.extra = extra
        self.module = module
        super().__init__(
            f"the {module!r} package is needed for this feature: "
            f"pip install 'mcp-session-mw[{extra}]'"
        )


class StoreError(SessionMiddlewareError):
    """A store operation failed."""


class StoreUnavailableError(StoreError):
    """The store's server could not be reached; the middleware answers 503."""


class CorruptRecordError(StoreError):
    """Stored data failed its integrity check: tampered, or sealed with a key no longer held."""


class ItemTooLargeError(StoreError, ValueError):
    """What was to be stored is more than the backend can hold in one write (DynamoDB's 400 KB).

    Raised before anything is written: nothing of the refused write is stored.
    """


class SessionNotFoundError(StoreError, KeyError):
    """The session does not exist, or has expired."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the plain message.
        return str(self.args[0]) if self.args else "session not found"


class SessionExistsError(StoreError):
    """``create`` was given a session id that is already stored."""


class ConflictError(StoreError):
    """An atomic update could not win its compare-and-swap after every retry."""


class StreamNotFoundError(StoreError, KeyError):
    """The event stream does not exist in this session."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "stream not found"


class InvalidStateError(SessionMiddlewareError, TypeError):
    """Session state must be a JSON object whose values JSON can encode."""


class NoSessionError(SessionMiddlewareError, LookupError):
    """``current_session()`` was called outside a request the middleware handled."""
