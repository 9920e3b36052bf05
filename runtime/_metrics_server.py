"""The endpoint that serves a registry's metrics: Prometheus text on ``/metrics``, on threads.

``serve_metrics`` is an async context manager on both backends. The server is prometheus_client's
WSGI app behind a ``wsgiref`` server, with optional TLS and basic auth; it binds 127.0.0.1 unless
told otherwise, and leaves no thread behind when the block exits. One thread accepts and reads
requests without blocking, under a whole-request deadline; a bounded pool answers them (issue 17).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import functools
import hmac
import io
import ipaddress
import logging
import os
import selectors
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import anyio
import attrs
from prometheus_client import CollectorRegistry, make_wsgi_app

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["MetricsServer", "serve_metrics"]

logger = logging.getLogger(__name__)


# -- the endpoint ---------------------------------------------------------------------------------


@final
@attrs.frozen
class MetricsServer:
    """A running metrics endpoint, as yielded by :func:`serve_metrics`.

    Attributes:
        host: the address it is bound to.
        port: the port it is bound to (the one picked, when ``port=0`` was asked).
        tls: whether it speaks HTTPS.
    """

    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        """The URL to scrape: ``http://127.0.0.1:9464/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/metrics"


class _Handler(WSGIRequestHandler):
    """Answers one request whose head the accept thread has read already; logs through :mod:`logging`."""

    server: _Server

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self.rfile = io.BytesIO(self.server.request_head())

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("metrics endpoint: %s - %s", self.address_string(), format % args)


@attrs.define
class _Reading:
    """A connection whose request the accept thread is still reading (it holds no thread)."""

    sock: socket.socket
    address: object
    deadline: float
    head: bytearray = attrs.field(factory=bytearray)
    handshaken: bool = True


class _Server(WSGIServer):
    """prometheus_client's WSGI app behind a guarded front: the threads serve only whole requests.

    The accept thread reads every request's head itself, without blocking (``selectors``), under a
    whole-request deadline: a client that trickles its request in a byte at a time, or says nothing,
    holds a socket until the deadline, never a thread (issue 17). Complete requests go to a pool of
    ``max_threads`` threads; ``max_connections`` bounds the connections open at once (read, queued
    or answered), and one beyond it is answered 503 at once. The listen backlog holds a burst of
    scrapers until they are accepted.
    """

    request_queue_size = 1024  # the listen backlog (the kernel may cap it: net.core.somaxconn)
    ssl_context: ssl.SSLContext | None = None

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[_Handler],
        *,
        request_timeout: float,
        max_threads: int,
        max_connections: int,
    ) -> None:
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self._open = 0  # connections open at once: read, queued or being answered
        self._answering: set[socket.socket] = set()  # queued or being answered, by the pool
        self._lock = threading.Lock()
        self._local = threading.local()
        # Threads start as requests come, up to max_threads; leaving serve_metrics joins them.
        self._pool = ThreadPoolExecutor(max_threads, thread_name_prefix="sessionvisor-metrics-worker")
        self.refused = 0
        """Connections answered 503 (too many at once)."""
        self.timed_out = 0
        """Connections cut at the request deadline."""
        # The accept thread's selector, made now rather than in the thread: made there, it took a
        # descriptor only once the thread first ran, and clients that had used up the process's
        # descriptors by then (EMFILE from epoll_create) killed the thread. Made before binding, so
        # that a bind that fails closes it too (TCPServer calls server_close then).
        self._selector = selectors.DefaultSelector()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() would call socket.getfqdn(), a reverse DNS look-up that can take
        # seconds; WSGI only needs a name for SERVER_NAME.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def request_head(self) -> bytes:
        """The head of the request the calling pool thread answers (read by the accept thread)."""
        head: bytes = self._local.head
        return head

    # -- the accept thread ------------------------------------------------------------------------

    def run(self, stop: socket.socket) -> None:
        """Accept and read requests until a byte arrives on ``stop``; then close what is not answered."""
        selector = self._selector
        reading: dict[socket.socket, _Reading] = {}
        paused_until = 0.0  # accept() ran out of file descriptors: wait a little before the next one
        selector.register(stop, selectors.EVENT_READ)
        selector.register(self.socket, selectors.EVENT_READ)
        try:
            while True:
                now = time.monotonic()
                deadlines = [r.deadline for r in reading.values()]
                if paused_until:
                    deadlines.append(paused_until)
                timeout = max(0.0, min(deadlines) - now) if deadlines else None
                for key, _ in selector.select(timeout):
                    if key.fileobj is stop:
                        return
                    if key.fileobj is self.socket:
                        if not self._accept(selector, reading):
                            selector.unregister(self.socket)
                            paused_until = time.monotonic() + 0.1
                    else:
                        self._read(selector, reading, reading[key.fileobj])  # type: ignore[index]
                now = time.monotonic()
                if paused_until and now >= paused_until:
                    selector.register(self.socket, selectors.EVENT_READ)
                    paused_until = 0.0
                for late in [r for r in reading.values() if r.deadline <= now]:
                    self.timed_out += 1
                    self._close(selector, reading, late, _TIMED_OUT if late.handshaken else b"")
        finally:
            for r in list(reading.values()):
                self._close(selector, reading, r, b"")

    def _accept(self, selector: selectors.BaseSelector, reading: dict[socket.socket, _Reading]) -> bool:
        """Accept what is waiting; False when out of file descriptors (or memory) for now."""
        for _ in range(64):  # then let the readers have a turn
            try:
                conn, address = self.socket.accept()
            except BlockingIOError:
                return True
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    logger.warning("metrics endpoint: accept() failed (%s); retrying in 0.1 s", exc)
                    return False
                continue  # that one connection is gone (ECONNABORTED...)
            with self._lock:
                full = self._open >= self.max_connections
                if not full:
                    self._open += 1
            if full:
                self.refused += 1
                _refuse(conn, self._busy_answer())
                continue
            conn.setblocking(False)
            state = _Reading(conn, address, time.monotonic() + self.request_timeout)
            if self.ssl_context is not None:
                try:
                    state.sock = self.ssl_context.wrap_socket(
                        conn, server_side=True, do_handshake_on_connect=False
                    )
                except (OSError, ValueError):
                    self._release(conn)
                    continue
                state.handshaken = False
            reading[state.sock] = state
            selector.register(state.sock, selectors.EVENT_READ)
            self._read(selector, reading, state)  # it may have sent its request already
        return True

    def _read(
        self, selector: selectors.BaseSelector, reading: dict[socket.socket, _Reading], state: _Reading
    ) -> None:
        sock = state.sock
        try:
            if not state.handshaken:
                assert isinstance(sock, ssl.SSLSocket)
                sock.do_handshake()
                state.handshaken = True
                selector.modify(sock, selectors.EVENT_READ)
            while True:
                chunk = sock.recv(4096)
                if not chunk:  # the client went away
                    self._close(selector, reading, state, b"")
                    return
                state.head += chunk
                if b"\r\n\r\n" in state.head or b"\n\n" in state.head:
                    self._dispatch(selector, reading, state)
                    return
                if len(state.head) > _MAX_HEAD:
                    self._close(selector, reading, state, _TOO_LARGE)
                    return
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLWantWriteError:
            selector.modify(sock, selectors.EVENT_WRITE)
        except BlockingIOError:
            pass
        except OSError:  # reset, or a failed TLS handshake (ssl.SSLError)
            self._close(selector, reading, state, b"")

    def _dispatch(
        self, selector: selectors.BaseSelector, reading: dict[socket.socket, _Reading], state: _Reading
    ) -> None:
        selector.unregister(state.sock)
        del reading[state.sock]
        with self._lock:
            self._answering.add(state.sock)
        try:
            self._pool.submit(self._answer, state.sock, state.address, bytes(state.head))
        except RuntimeError:  # shutting down
            self._release(state.sock)

    def _close(
        self,
        selector: selectors.BaseSelector,
        reading: dict[socket.socket, _Reading],
        state: _Reading,
        answer: bytes,
    ) -> None:
        selector.unregister(state.sock)
        del reading[state.sock]
        if answer:
            _refuse(state.sock, answer)
        self._release(state.sock)

    def _release(self, sock: socket.socket) -> None:
        with self._lock:
            self._open -= 1
            self._answering.discard(sock)
        with contextlib.suppress(OSError):
            sock.close()

    def _busy_answer(self) -> bytes:
        return _response(
            "503 Service Unavailable",
            f"503 Service Unavailable: {self.max_connections} connections at once at most; retry shortly\n",
            ("Retry-After", "1"),
        )

    # -- the pool threads -------------------------------------------------------------------------

    def _answer(self, sock: socket.socket, address: object, head: bytes) -> None:
        try:
            sock.setblocking(True)
            sock.settimeout(self.request_timeout)  # writing the answer: a client that does not read
            self._local.head = head
            self.finish_request(sock, address)
        except Exception:
            self.handle_error(sock, address)
        finally:
            self._local.head = b""
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            self._release(sock)

    def handle_error(self, request: object, client_address: object) -> None:
        logger.debug("metrics endpoint: a request from %s failed", client_address, exc_info=True)

    # -- stopping ---------------------------------------------------------------------------------

    def close_answering(self) -> None:
        """Cut the connections the pool answers or will, so that no pool thread waits on a client."""
        with self._lock:
            connections = list(self._answering)
        for conn in connections:
            try:
                # The plain socket's shutdown, even for TLS: SSLSocket.shutdown() would drop its SSL
                # object under the feet of the thread that is using it.
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
            except OSError:
                pass

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=True)
        self._selector.close()


class _Server6(_Server):
    address_family = socket.AF_INET6


_MAX_HEAD = 16 * 1024
"""The longest request head (request line and headers) read, in bytes."""


def _response(status: str, body: str, *headers: tuple[str, str]) -> bytes:
    data = body.encode()
    lines = [
        f"HTTP/1.0 {status}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(data)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


_TIMED_OUT = _response("408 Request Timeout", "408 Request Timeout: send the whole request at once\n")
_TOO_LARGE = _response("431 Request Header Fields Too Large", "431: the request head is too large\n")


def _refuse(sock: socket.socket, answer: bytes) -> None:
    """Best effort, from the accept thread: never blocks (a fresh socket's buffer takes it whole)."""
    try:
        sock.setblocking(False)
        sock.send(answer)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def _metrics_app(registry: CollectorRegistry, basic_auth: tuple[str, str] | None) -> WSGIApplication:
    metrics: WSGIApplication = make_wsgi_app(registry)
    expected = None if basic_auth is None else f"{basic_auth[0]}:{basic_auth[1]}".encode()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if expected is not None and not _authorized(environ.get("HTTP_AUTHORIZATION", ""), expected):
            start_response(
                "401 Unauthorized",
                [
                    ("WWW-Authenticate", 'Basic realm="sessionvisor metrics", charset="UTF-8"'),
                    ("Content-Type", "text/plain; charset=utf-8"),
                ],
            )
            return [b"401 Unauthorized: this endpoint needs HTTP basic auth\n"]
        if environ.get("PATH_INFO", "") not in ("/metrics", "/metrics/"):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"404 Not Found: metrics are served on /metrics\n"]
        return metrics(environ, start_response)

    return app


def _authorized(header: str, expected: bytes) -> bool:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, expected)


def _tls_context(
    certfile: str | os.PathLike[str] | None,
    keyfile: str | os.PathLike[str] | None,
    client_cafile: str | os.PathLike[str] | None,
    client_auth_required: bool,
) -> ssl.SSLContext | None:
    if certfile is None:
        if keyfile is not None or client_cafile is not None or client_auth_required:
            raise ValueError("TLS options need certfile=... (the server's certificate, PEM)")
        return None
    if client_auth_required and client_cafile is None:
        raise ValueError("client_auth_required=True needs client_cafile=... (the CA of client certificates)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # TLS 1.2+, no compression
    try:
        context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"cannot load the certificate {os.fspath(certfile)!r} and key "
            f"{None if keyfile is None else os.fspath(keyfile)!r} ({exc}): pass PEM files that match"
        ) from exc
    if client_cafile is not None:
        context.load_verify_locations(client_cafile)
        context.verify_mode = ssl.CERT_REQUIRED if client_auth_required else ssl.CERT_OPTIONAL
    return context


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _bind(
    host: str,
    port: int,
    app: WSGIApplication,
    context: ssl.SSLContext | None,
    *,
    request_timeout: float,
    max_threads: int,
    max_connections: int,
) -> _Server:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        server_cls = _Server6 if family == socket.AF_INET6 else _Server
        server = server_cls(
            (str(sockaddr[0]), port),
            _Handler,
            request_timeout=request_timeout,
            max_threads=max_threads,
            max_connections=max_connections,
        )
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}): choose another host or "
            f"port (port=0 picks a free one)",
        ) from exc
    server.set_app(app)
    server.ssl_context = context
    # Non-blocking accept: a connection that goes away between select() and accept() is skipped.
    server.socket.settimeout(0)
    return server


@asynccontextmanager
async def serve_metrics(
    registry: CollectorRegistry,
    host: str = "127.0.0.1",
    port: int = 9464,
    *,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    client_cafile: str | os.PathLike[str] | None = None,
    client_auth_required: bool = False,
    basic_auth: tuple[str, str] | None = None,
    request_timeout: float = 10.0,
    max_threads: int = 4,
    max_connections: int = 256,
) -> AsyncIterator[MetricsServer]:
    """Serve ``registry`` as Prometheus text on ``/metrics`` until the block exits.

    The server is prometheus_client's WSGI app in threads of its own, so it works the same under
    asyncio and trio and a busy event loop does not delay scrapes. One thread accepts connections
    and reads their requests without blocking, each under a whole-request deadline; a pool of
    ``max_threads`` answers the complete ones, in order. So a slow or silent client holds a socket
    until ``request_timeout``, never a thread; a burst of scrapers waits in the listen backlog and
    the queue, and is answered; ``max_connections`` bounds the connections open at once, and one
    beyond is answered ``503 Service Unavailable`` with ``Retry-After``. Leaving the block stops it
    and joins every one of its threads.

    Example::

        async with serve_metrics(sessions.registry, port=0) as server:
            print("scrape", server.url)
            ...

    Args:
        registry: what to serve (a supervisor's ``registry``).
        host: the address to bind; loopback by default. Bind ``"0.0.0.0"`` or ``"::"`` explicitly to
            be scraped from other hosts, preferably with TLS and ``basic_auth``.
        port: the port; 0 picks a free one (read it back from ``server.port``).
        certfile: serve HTTPS with this certificate (PEM); ``keyfile`` is its key when not included.
        keyfile: the certificate's private key (PEM).
        client_cafile: verify client certificates against this CA bundle (mutual TLS).
        client_auth_required: refuse clients without a certificate signed by ``client_cafile``.
        basic_auth: ``(username, password)``: answer 401 to requests without them.
        request_timeout: seconds a client may take from connecting to the end of its request (TLS
            handshake included; 408 then), and again to read the answer.
        max_threads: threads answering requests at once.
        max_connections: connections open at once (being read, waiting or being answered).

    Yields:
        The :class:`MetricsServer`, with its bound ``port`` and ``url``.

    Raises:
        OSError: the address cannot be bound (port in use, unknown host).
        ValueError: inconsistent or unreadable TLS options, or limits below 1.

    .. versionadded:: 0.1
    .. versionchanged:: 0.1
       ``request_timeout`` is a deadline for the whole request, not per read; ``max_threads`` and
       ``max_connections`` (issue 17).
    """
    if max_threads < 1 or max_connections < 1 or not request_timeout > 0:
        raise ValueError(
            f"max_threads ({max_threads}) and max_connections ({max_connections}) must be >= 1, "
            f"request_timeout ({request_timeout}) > 0"
        )
    context = _tls_context(certfile, keyfile, client_cafile, client_auth_required)
    if basic_auth is not None and context is None and not _is_loopback(host):
        logger.warning(
            "metrics endpoint on %s uses basic auth over plain HTTP: the password crosses the network "
            "in clear; pass certfile= and keyfile= to serve HTTPS",
            host,
        )
    app = _metrics_app(registry, basic_auth)
    server = await anyio.to_thread.run_sync(
        functools.partial(
            _bind,
            host,
            port,
            app,
            context,
            request_timeout=request_timeout,
            max_threads=max_threads,
            max_connections=max_connections,
        )
    )
    stop_recv, stop_send = socket.socketpair()
    bound_host, bound_port = server.server_address[:2]
    thread = threading.Thread(
        target=server.run, args=(stop_recv,), name=f"sessionvisor-metrics:{bound_port}", daemon=True
    )

    def shut_down() -> None:
        try:
            if thread.is_alive():
                stop_send.send(b"x")
                thread.join()  # it closes the connections it was reading
            server.close_answering()
            server.server_close()  # closes the socket and joins the pool's threads
        finally:
            stop_send.close()
            stop_recv.close()

    try:
        thread.start()
    except BaseException:
        await anyio.to_thread.run_sync(shut_down)
        raise
    info = MetricsServer(host=str(bound_host), port=int(bound_port), tls=context is not None)
    logger.info("serving metrics on %s", info.url)
    try:
        yield info
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shut_down)
        logger.info("stopped serving metrics on %s", info.url)
