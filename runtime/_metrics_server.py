"""The endpoint that serves a registry's metrics: Prometheus text on ``/metrics``, on a thread.

``serve_metrics`` is an async context manager on both backends. The server is prometheus_client's
WSGI app in a threaded ``wsgiref`` server, with optional TLS and basic auth; it binds 127.0.0.1
unless told otherwise, and leaves no thread behind when the block exits.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
import os
import selectors
import socket
import socketserver
import ssl
import threading
from collections.abc import AsyncIterator, Iterable
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
    """Logs through :mod:`logging`; finishes the TLS handshake in the request's own thread."""

    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)  # a silent client cannot hold a thread
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("metrics endpoint: %s - %s", self.address_string(), format % args)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """prometheus_client's threaded WSGI server, made to stop promptly and leave no thread behind."""

    # Non-daemon request threads, so that server_close() joins them (socketserver does not track
    # daemon threads); close_connections() first makes sure none of them is left waiting on a client.
    daemon_threads = False
    block_on_close = True
    request_timeout = 10.0
    ssl_context: ssl.SSLContext | None = None

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() would call socket.getfqdn(), a reverse DNS look-up that can take
        # seconds; WSGI only needs a name for SERVER_NAME.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def get_request(self) -> tuple[socket.socket, object]:
        conn, addr = self.socket.accept()
        if self.ssl_context is not None:
            # The handshake happens in the request's thread (_Handler.setup), under its timeout: a
            # client that connects and stays silent does not stop the server from accepting others.
            conn = self.ssl_context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        with self._connections_lock:
            self._connections.add(conn)
        return conn, addr

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut every open connection, so that no request thread waits for its client any longer."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                # The plain socket's shutdown, even for TLS: SSLSocket.shutdown() would drop its SSL
                # object under the feet of the thread that is using it.
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: object, client_address: object) -> None:
        logger.debug("metrics endpoint: a request from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


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
    host: str, port: int, app: WSGIApplication, context: ssl.SSLContext | None, timeout: float
) -> _Server:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        server_cls = _Server6 if family == socket.AF_INET6 else _Server
        server = server_cls((str(sockaddr[0]), port), _Handler)
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}): choose another host or "
            f"port (port=0 picks a free one)",
        ) from exc
    server.set_app(app)
    server.ssl_context = context
    server.request_timeout = timeout
    # Non-blocking accept: a connection that goes away between select() and accept() is skipped.
    server.socket.settimeout(0)
    return server


def _serve(server: _Server, stop: socket.socket) -> None:
    """The accept loop, in its own thread, until a byte arrives on ``stop``."""
    with selectors.DefaultSelector() as selector:
        selector.register(server.socket, selectors.EVENT_READ, None)
        selector.register(stop, selectors.EVENT_READ, stop)
        while True:
            ready = selector.select()
            if any(key.data is stop for key, _ in ready):
                return
            server.handle_request()  # accepts one connection and hands it to a new thread


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
) -> AsyncIterator[MetricsServer]:
    """Serve ``registry`` as Prometheus text on ``/metrics`` until the block exits.

    The server is prometheus_client's threaded WSGI server: it runs in threads of its own, so it
    works the same under asyncio and trio and a busy event loop does not delay scrapes. Leaving the
    block stops it and joins every one of its threads.

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
        request_timeout: seconds a client may take to send its request (or TLS handshake).

    Yields:
        The :class:`MetricsServer`, with its bound ``port`` and ``url``.

    Raises:
        OSError: the address cannot be bound (port in use, unknown host).
        ValueError: inconsistent or unreadable TLS options.

    .. versionadded:: 0.1
    """
    context = _tls_context(certfile, keyfile, client_cafile, client_auth_required)
    if basic_auth is not None and context is None and not _is_loopback(host):
        logger.warning(
            "metrics endpoint on %s uses basic auth over plain HTTP: the password crosses the network "
            "in clear; pass certfile= and keyfile= to serve HTTPS",
            host,
        )
    app = _metrics_app(registry, basic_auth)
    server = await anyio.to_thread.run_sync(_bind, host, port, app, context, request_timeout)
    stop_recv, stop_send = socket.socketpair()
    bound_host, bound_port = server.server_address[:2]
    thread = threading.Thread(
        target=_serve, args=(server, stop_recv), name=f"sessionvisor-metrics:{bound_port}", daemon=True
    )

    def shut_down() -> None:
        try:
            if thread.is_alive():
                stop_send.send(b"x")
                thread.join()
            server.close_connections()
            server.server_close()  # closes the socket and joins the request threads
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
