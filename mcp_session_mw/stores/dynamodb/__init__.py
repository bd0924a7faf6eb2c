"""DynamoDB store (``dynamodb:///TABLE?region=…&endpoint_url=…``); needs the ``dynamodb`` extra.

Importing this package imports no AWS library: aiobotocore is imported when
the store first talks to DynamoDB, and a missing one raises MissingExtraError
naming the extra.
"""

from __future__ import annotations

from .store import DynamoDBStore

__all__ = ["DynamoDBStore"]
