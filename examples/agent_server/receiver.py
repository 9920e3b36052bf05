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


MAX_BODY = 64 * 1024
"""The largest body the receiver reads, in bytes (a lifecycle event is a few hundred)."""


class _Handler(BaseHTTPRequestHandler):
    """Keeps JSON objects POSTed to it; any other input is answered 4xx and dropped (issue 17)."""

    receiver: Receiver  # set on a subclass per server
    timeout = 10  # seconds per read: a client that stalls is cut (the threads are the server's)

    def do_POST(self) -> None:
        text = self.headers.get("Content-Length")
        if text is None or not text.isdigit() or len(text) > 12:
            self.refuse(411, "send a Content-Length: the body's size in bytes")
            return
        length = int(text)
        if length > MAX_BODY:
            self.refuse(413, f"a body is {MAX_BODY} bytes at most")
            return
        data = self.rfile.read(length)
        if len(data) < length:
            self.close_connection = True  # the client went away mid-body
            return
        try:
            body = json.loads(data, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError included
            self.refuse(400, f"the body is not standard JSON: {str(exc)[:200]}")
            return
        if not isinstance(body, dict):
            self.refuse(400, f"the body is a JSON object, not {type(body).__name__}")
            return
        self.receiver.keep(body)
        self.send_response(204)
        self.end_headers()

    def refuse(self, status: int, message: str) -> None:
        data = f"{status}: {message}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the example's output


class _Server(ThreadingHTTPServer):
    """A thread per request, ``max_threads`` at most: one more is answered 503 at once and closed."""

    daemon_threads = True
    max_threads = 32

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._busy = 0
        self._busy_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._busy_lock:
            full = self._busy >= self.max_threads
            if not full:
                self._busy += 1
        if full:
            try:
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._busy_lock:
                self._busy -= 1


_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not standard JSON")


@asynccontextmanager
async def open_receiver(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[Receiver]:
    """Serve on ``host:port`` (0: any free port) until the block exits; yields the ``Receiver``."""

    class Handler(_Handler):
        pass

    server = _Server((host, port), Handler)
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
