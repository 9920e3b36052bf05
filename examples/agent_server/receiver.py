"""A local webhook receiver: an HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it.

It stands in for the service a real deployment would notify (a CRM, a chat channel, an audit log).
It runs the standard library's ``ThreadingHTTPServer`` in a thread of its own, so it works the same
under asyncio and trio.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio

__all__ = ["Receiver", "open_receiver"]


class Receiver:
    """What the receiver got: ``events`` (the decoded bodies, in arrival order)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def keep(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(body)

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)


class _Handler(BaseHTTPRequestHandler):
    receiver: Receiver  # set on a subclass per server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_response(400)
        else:
            self.receiver.keep(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the example's output


@asynccontextmanager
async def open_receiver(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[Receiver]:
    """Serve on ``host:port`` (0: any free port) until the block exits; yields the ``Receiver``."""

    class Handler(_Handler):
        pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    Handler.receiver = receiver = Receiver(f"http://{host}:{server.server_address[1]}/hooks/sessions")
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(server.shutdown)
            server.server_close()
            await anyio.to_thread.run_sync(thread.join)
