"""The DynamoDB connection of the store: URL, aiobotocore client, bounded calls, error mapping.

aiobotocore is imported only when a client is made. Every call is bounded: the
client's connect and read timeouts, botocore's ``standard`` retry mode with a
few attempts (it retries throttling, 5xx answers and dropped connections with
backoff), and an overall deadline per call. What is still failing after that
becomes :class:`StoreUnavailableError` (the middleware answers 503); a request
DynamoDB refuses for another reason becomes :class:`StoreError`.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio

from ...errors import ConfigurationError, MissingExtraError, StoreError, StoreUnavailableError

DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_READ_TIMEOUT = 5.0
DEFAULT_CALL_TIMEOUT = 10.0
"""Longest one store call to DynamoDB may take, retries included."""
DEFAULT_MAX_ATTEMPTS = 3
"""botocore attempts per request (the first one included) before giving up."""
BATCH_WRITE_SIZE = 25
"""Requests one BatchWriteItem takes."""
BATCH_ROUNDS = 8
"""Rounds of a batch call's unprocessed leftovers before the store gives up (503)."""
TABLE_ACTIVE_TIMEOUT = 120.0
"""How long table creation waits for the table to turn ACTIVE."""

UNAVAILABLE_MESSAGE = "DynamoDB is unreachable, throttling or failing"
FAILED_MESSAGE = "DynamoDB refused the request"
TABLE_MISSING = (
    "the DynamoDB table {table!r} does not exist: create it with "
    "`mcp-session-mw db upgrade --store URL`, or let the store create it (create_table=True)"
)
BAD_URL = "a DynamoDB store URL is dynamodb:///TABLE?region=REGION&endpoint_url=URL, not {url!r}"
BAD_TABLE = "a DynamoDB table name is 3 to 255 characters of A-Z a-z 0-9 _ . -, not {name!r}"
BAD_QUERY = "unknown DynamoDB URL parameter(s): {names} (known: {known})"
BAD_FLAG = "{name} must be true or false, not {value!r}"
BAD_TIMEOUT = "{name} must be a positive number of seconds"

_TABLE_RE = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_URL_PARAMS = (
    "region",
    "endpoint_url",
    "create_table",
    "poll_interval",
    "connect_timeout",
    "read_timeout",
    "call_timeout",
    "max_attempts",
)
_NUMBER_PARAMS = ("poll_interval", "connect_timeout", "read_timeout", "call_timeout")
_UNAVAILABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "TransactionInProgressException",
    }
)


class ConditionFailed(Exception):
    """A write's ConditionExpression did not hold (never escapes the store)."""


class Cancelled(Exception):
    """A TransactWriteItems was cancelled; ``codes`` has one reason code per action."""

    def __init__(self, codes: list[str]) -> None:
        super().__init__(codes)
        self.codes = codes


@dataclass(frozen=True)
class Settings:
    """Where the table is and how calls to it are bounded."""

    table: str
    region: str | None = None
    endpoint_url: str | None = None
    create_table: bool = False
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    def __post_init__(self) -> None:
        if not isinstance(self.table, str) or _TABLE_RE.fullmatch(self.table) is None:
            raise ConfigurationError(BAD_TABLE.format(name=self.table))
        for name in ("connect_timeout", "read_timeout", "call_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigurationError(BAD_TIMEOUT.format(name=name))
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigurationError("max_attempts must be a positive integer")


def flag(name: str, value: object) -> bool:
    """A boolean option given as a bool or as URL text (true/false, 1/0, yes/no)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(BAD_FLAG.format(name=name, value=value))


def parse_url(url: str) -> dict[str, Any]:
    """The table, region, endpoint and create_table flag a ``dynamodb:///TABLE?…`` URL names."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "dynamodb" or parts.netloc or not parts.path.startswith("/"):
        raise ConfigurationError(BAD_URL.format(url=url))
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(params) - set(_URL_PARAMS))
    if unknown:
        raise ConfigurationError(
            BAD_QUERY.format(names=", ".join(unknown), known=", ".join(_URL_PARAMS))
        )
    found: dict[str, Any] = {"table": parts.path[1:]}
    if params.get("region"):
        found["region"] = params["region"]
    if params.get("endpoint_url"):
        found["endpoint_url"] = params["endpoint_url"]
    if "create_table" in params:
        found["create_table"] = flag("create_table", params["create_table"])
    for name in _NUMBER_PARAMS:
        if name in params:
            found[name] = _url_number(name, params[name], float)
    if "max_attempts" in params:
        found["max_attempts"] = _url_number("max_attempts", params["max_attempts"], int)
    return found


def _url_number(name: str, value: str, kind: type[float] | type[int]) -> float | int:
    try:
        return kind(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {value!r}") from None


_sessions: list[Any] = []


def _session() -> Any:
    """The process's one aiobotocore session: it parses DynamoDB's service model once.

    A session per store would parse it again for every client, which takes a
    good part of a second on a busy machine.
    """
    if not _sessions:
        try:
            from aiobotocore.session import get_session
        except ImportError as exc:
            raise MissingExtraError("dynamodb", "aiobotocore") from exc
        _sessions.append(get_session())
    return _sessions[0]


class Table:
    """One DynamoDB table through one aiobotocore client, made on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.table
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._lock = anyio.Lock()
        self.calls: dict[str, int] = {}
        """Requests sent, by operation (what docs/dynamodb.md counts per tools/call)."""

    async def client(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                session = _session()
                from botocore.config import Config
                from botocore.exceptions import NoRegionError

                settings = self.settings
                config = Config(
                    connect_timeout=settings.connect_timeout,
                    read_timeout=settings.read_timeout,
                    retries={"total_max_attempts": settings.max_attempts, "mode": "standard"},
                )
                stack = contextlib.AsyncExitStack()
                try:
                    self._client = await stack.enter_async_context(
                        session.create_client(
                            "dynamodb",
                            region_name=settings.region,
                            endpoint_url=settings.endpoint_url,
                            config=config,
                        )
                    )
                except NoRegionError as exc:
                    await stack.aclose()
                    raise ConfigurationError(
                        "no AWS region: add ?region=… to the DynamoDB URL or set AWS_REGION"
                    ) from exc
                self._stack = stack
        return self._client

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """Send one request; map what went wrong to the store's errors.

        ConditionalCheckFailedException raises :class:`ConditionFailed` and a
        cancelled transaction :class:`Cancelled`, for the caller to decide.
        """
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            HTTPClientError,
            NoCredentialsError,
        )
        from botocore.exceptions import (
            ConnectionError as BotoConnectionError,
        )

        client = await self.client()
        self.calls[operation] = self.calls.get(operation, 0) + 1
        method = getattr(client, _snake(operation))
        try:
            with anyio.fail_after(self.settings.call_timeout):
                result: dict[str, Any] = await method(**params)
                return result
        except TimeoutError as exc:
            raise StoreUnavailableError(f"{UNAVAILABLE_MESSAGE}: {operation} timed out") from exc
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code == "ConditionalCheckFailedException":
                raise ConditionFailed() from exc
            if code == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons") or []
                codes = [str(r.get("Code", "None")) for r in reasons]
                if not codes:  # some servers only put the reasons in the message
                    codes = re.findall(r"(\w+)(?:,|\])", str(error.get("Message", "")))
                raise Cancelled(codes) from exc
            if code in _UNAVAILABLE_CODES:
                raise StoreUnavailableError(f"{UNAVAILABLE_MESSAGE}: {code}") from exc
            if code == "ResourceNotFoundException":
                raise StoreError(TABLE_MISSING.format(table=self.name)) from exc
            raise StoreError(f"{FAILED_MESSAGE}: {code}: {error.get('Message', '')}") from exc
        except (BotoConnectionError, HTTPClientError, OSError) as exc:
            raise StoreUnavailableError(f"{UNAVAILABLE_MESSAGE}: {exc}") from exc
        except NoCredentialsError as exc:
            raise StoreError(f"{FAILED_MESSAGE}: no AWS credentials found") from exc
        except BotoCoreError as exc:
            raise StoreError(f"{FAILED_MESSAGE}: {exc}") from exc

    # -- several items ------------------------------------------------------------------

    async def batch_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The items of ``keys`` that exist (strongly consistent), in no particular order."""
        found: list[dict[str, Any]] = []
        pending: dict[str, Any] = {self.name: {"Keys": keys, "ConsistentRead": True}}
        for attempt in range(BATCH_ROUNDS):
            answer = await self.call("BatchGetItem", RequestItems=pending)
            found.extend(answer.get("Responses", {}).get(self.name, []))
            pending = answer.get("UnprocessedKeys") or {}
            if not pending:
                return found
            await anyio.sleep(min(0.5, 0.02 * 2**attempt))
        raise StoreUnavailableError(f"{UNAVAILABLE_MESSAGE}: BatchGetItem left keys unread")

    async def batch_delete(self, keys: list[dict[str, Any]]) -> None:
        """Delete ``keys`` (idempotent), 25 to a BatchWriteItem, retrying what was left over."""
        for start in range(0, len(keys), BATCH_WRITE_SIZE):
            requests: list[Any] = [
                {"DeleteRequest": {"Key": key}} for key in keys[start : start + BATCH_WRITE_SIZE]
            ]
            for attempt in range(BATCH_ROUNDS):
                answer = await self.call("BatchWriteItem", RequestItems={self.name: requests})
                requests = (answer.get("UnprocessedItems") or {}).get(self.name) or []
                if not requests:
                    break
                await anyio.sleep(min(0.5, 0.02 * 2**attempt))
            else:
                raise StoreUnavailableError(f"{UNAVAILABLE_MESSAGE}: BatchWriteItem left items")

    async def query(self, **params: Any) -> list[dict[str, Any]]:
        """Every item a Query matches (strongly consistent), page after page."""
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            extra = {} if start is None else {"ExclusiveStartKey": start}
            answer = await self.call(
                "Query", TableName=self.name, ConsistentRead=True, **params, **extra
            )
            items.extend(answer.get("Items", []))
            start = answer.get("LastEvaluatedKey")
            if start is None:
                return items

    # -- the table itself ---------------------------------------------------------------

    async def exists(self) -> bool:
        try:
            await self.call("DescribeTable", TableName=self.name)
        except StoreError as exc:
            if str(exc) == TABLE_MISSING.format(table=self.name):
                return False
            raise
        return True

    async def create(self, ttl_attribute: str) -> bool:
        """Create the table (on-demand capacity) with TTL on ``ttl_attribute``; True if made.

        An existing table is left as it is, except that TTL is switched on if off.
        """
        created = False
        if not await self.exists():
            try:
                await self.call(
                    "CreateTable",
                    TableName=self.name,
                    AttributeDefinitions=[
                        {"AttributeName": "k", "AttributeType": "S"},
                        {"AttributeName": "s", "AttributeType": "S"},
                    ],
                    KeySchema=[
                        {"AttributeName": "k", "KeyType": "HASH"},
                        {"AttributeName": "s", "KeyType": "RANGE"},
                    ],
                    BillingMode="PAY_PER_REQUEST",
                )
                created = True
            except StoreError as exc:  # another process created it meanwhile
                if "ResourceInUseException" not in str(exc):
                    raise
        await self._wait_active()
        ttl = await self.call("DescribeTimeToLive", TableName=self.name)
        status = ttl.get("TimeToLiveDescription", {}).get("TimeToLiveStatus")
        if status not in ("ENABLED", "ENABLING"):
            await self.call(
                "UpdateTimeToLive",
                TableName=self.name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl_attribute},
            )
        return created

    async def _wait_active(self) -> None:
        with anyio.move_on_after(TABLE_ACTIVE_TIMEOUT):
            while True:
                described = await self.call("DescribeTable", TableName=self.name)
                if described.get("Table", {}).get("TableStatus") == "ACTIVE":
                    return
                await anyio.sleep(0.5)
        raise StoreUnavailableError(f"table {self.name!r} did not turn ACTIVE")

    async def drop(self) -> None:
        """Delete the table (tests, teardown); a missing table is fine."""
        with contextlib.suppress(StoreError):
            await self.call("DeleteTable", TableName=self.name)


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


def number(value: float | int) -> dict[str, str]:
    """A DynamoDB Number attribute value."""
    if isinstance(value, int):
        return {"N": str(value)}
    if not math.isfinite(value):
        raise ValueError("DynamoDB numbers are finite")
    return {"N": repr(value)}


def text(value: str) -> dict[str, str]:
    return {"S": value}


def read_number(value: Mapping[str, Any]) -> float:
    return float(value["N"])
