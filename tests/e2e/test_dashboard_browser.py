"""The dashboard in a real headless browser (Debian's Chromium) against a uvicorn server.

The server reads a SQLite store the test filled with sessions and events.
Chromium dumps the DOM it built (the session keys must be in it) and takes a
screenshot, which must show a rendered page: not one flat colour, and with
enough distinct colours for the text, the table and the header. The PNG is
read with the standard library (zlib and struct).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import anyio
import pytest

from mcp_session_mw import SessionRecord, StreamState, create_store

from .server import run_server

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
BROWSER_TIMEOUT = 90
SERVER = """
import argparse, uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from mcp_session_mw import create_store
from mcp_session_mw.dashboard import dashboard_app
parser = argparse.ArgumentParser()
parser.add_argument("--store")
parser.add_argument("--host")
parser.add_argument("--port", type=int)
args = parser.parse_args()
store = create_store(args.store)
loopback = lambda request: request.client is not None and request.client.host == "127.0.0.1"
app = Starlette(routes=[Mount("/admin", app=dashboard_app(store, guard=loopback))])
uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
"""


def _seed(url: str) -> list[str]:
    async def seed() -> list[str]:
        store = create_store(url)
        await store.open()
        now = time.time()
        keys = []
        for n, client in enumerate(["claude-desktop", "mcp-inspector", "cursor"]):
            record = SessionRecord(
                key="",
                protocol_version="2025-11-25",
                client_info={"name": client, "version": f"1.{n}"},
                principal=f"user-{n}",
                created_at=now - 600 * (n + 1),
                last_accessed=now,
                expires_at=now + 3600,
                ttl=3600,
                state={"calls": n},
            )
            made = await store.create(f"browser-{n}", record)
            keys.append(made.key)
            items: list[tuple[str, str | None]] = [
                (
                    f'{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"n":{k}}}}}',
                    "message",
                )
                for k in range(n + 2)
            ]
            await store.write_stream(
                f"browser-{n}", f"stream{n}", items, open_as=StreamState(f"stream{n}", request_id=n)
            )
        await store.close()
        return keys

    return anyio.run(seed)


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, timeout=BROWSER_TIMEOUT, check=False)


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """Width, height and RGB(A) pixels of an 8-bit truecolour PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, idat, header = 8, b"", b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0), "only 8-bit, non-interlaced PNGs are read here"
    channels = {2: 3, 6: 4}[colour]
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        rows.append(line)
        previous = line
    pixels = [
        tuple(row[x * channels : x * channels + 3]) for row in rows for x in range(0, width, 2)
    ]
    return width, height, pixels


def test_png_reader_reads_what_it_is_given() -> None:
    # A 2x1 RGB image, red then blue, filter 1 (sub) on its one row.
    row = bytes([1, 255, 0, 0, 1, 0, 255])  # the second pixel as a difference from the first
    ihdr = struct.pack(">IIBBBBB", 2, 1, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + b"\0\0\0\0"

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row))
    width, height, pixels = png_pixels(png + chunk(b"IEND", b""))
    assert (width, height, pixels) == (2, 1, [(255, 0, 0)])  # every second pixel is sampled


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")
def test_the_dashboard_renders_with_data_in_chromium(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"
    keys = _seed(url)
    shot = tmp_path / "dashboard.png"
    with run_server(["-c", SERVER, "--store", url]) as base:
        page = f"{base}/admin/"
        dom = _chromium(tmp_path / "profile-dom", "--dump-dom", page)
        taken = _chromium(
            tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,800", page
        )
        detail = _chromium(tmp_path / "profile-detail", "--dump-dom", f"{page}session/{keys[0]}")
    html = dom.stdout.decode()
    for key in keys:
        assert key in html, dom.stderr.decode()[-2000:]
    assert "claude-desktop 1.0" in html
    assert "user-2" in html
    assert "notifications/progress" in detail.stdout.decode()
    assert taken.returncode == 0, taken.stderr.decode()[-2000:]
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1280, 800)
    mean = [sum(p[c] for p in pixels) / len(pixels) for c in range(3)]
    variance = sum((p[0] - mean[0]) ** 2 for p in pixels) / len(pixels)
    assert variance > 100, "the screenshot is (nearly) one flat colour"
    assert len(set(pixels)) > 50, "too few colours for a page with text and a table"
