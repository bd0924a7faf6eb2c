"""``mcp-session-mw keys …``: generate, list, rotate and retire the request-state key ring.

Zero-downtime rotation, each step at least one refresh interval (default 5 s)
after the last, so every replica has read the ring in between:
``keys generate`` (a staged key, unseals only), ``keys rotate`` (it seals from
now on), then ``keys retire ID`` on the old key once the state it sealed has
expired. Secrets are never printed. A refused step (no staged key, retiring
the primary, an unknown id) exits 2 with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timezone
from typing import Any, TextIO

from ..stores.base import Store
from .keyring import KeyInfo, generate_key, list_keys, retire_key, rotate_keys

EXIT_OK = 0
KEYS_ENV = "MCP_SESSION_ENCRYPTION_KEYS"


def register(topics: Any, common: argparse.ArgumentParser) -> None:
    keys = topics.add_parser(
        "keys",
        help="the modern lane's request-state key ring",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    actions = keys.add_subparsers(dest="action", required=True)
    for name, text in (
        ("list", "the keys, primary first (never their secrets)"),
        ("generate", "add a staged key (the primary when the ring is empty)"),
        ("rotate", "make the newest staged key the primary"),
        ("retire", "remove a non-primary key"),
    ):
        action = actions.add_parser(name, parents=[common], help=text)
        if name == "retire":
            action.add_argument("key_id", metavar="ID")
        action.add_argument(
            "--encryption-key",
            action="append",
            default=[],
            metavar="KEY",
            help=f"the store's encryption key, when the servers encrypt it (repeat; "
            f"default ${KEYS_ENV}, comma-separated)",
        )
        action.set_defaults(handler=run)


def _line(info: KeyInfo) -> str:
    created = datetime.fromtimestamp(info.created_at, tz=timezone.utc).isoformat(timespec="seconds")
    return f"{info.key_id}  {info.role:<8}  {created}"


def _show(infos: list[KeyInfo], args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        rows = [{"id": i.key_id, "role": i.role, "created_at": i.created_at} for i in infos]
        out.write(json.dumps(rows) + "\n")
    else:
        for info in infos:
            out.write(_line(info) + "\n")


def _encryption_keys(args: argparse.Namespace) -> list[str]:
    given: list[str] = list(args.encryption_key)
    return given or [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()]


async def run(args: argparse.Namespace, out: TextIO, make_store: Any) -> int:
    store: Store = make_store(args, None)
    keys = _encryption_keys(args)
    if keys:  # the ring is read and written as the servers do: through the encryption
        from ..encryption import EncryptedStore

        store = EncryptedStore(store, keys)
    try:
        await store.open()
        if args.action == "generate":
            _show([await generate_key(store)], args, out)
        elif args.action == "rotate":
            _show([await rotate_keys(store)], args, out)
        elif args.action == "retire":
            await retire_key(store, args.key_id)
            _show(await list_keys(store), args, out)
        else:
            _show(await list_keys(store), args, out)
    finally:
        await store.close()
    return EXIT_OK
