"""``serve_admin``: ``/metrics`` and read-only JSON about a supervisor's sessions, over HTTP (issue 16).

The HTTP server is hypercorn, an ASGI server that runs on asyncio and on trio, inside the caller's
event loop: no thread of its own, request parsing by h11 (bounded header size), TLS by the standard
library. The routes (:mod:`._admin_app`) run in the loop next to the sessions they report on, and
call the supervisor's async API directly; ``/metrics`` renders in a worker thread so that a large
registry does not hold the loop. bench/README.md ("Admin endpoint") has the figures that chose it
over the threaded ``wsgiref`` server behind ``runtime.serve_metrics``.

Needs the ``admin`` extra: ``pip install 'sessionvisor[admin]'``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import socket
import ssl
from types import TracebackType
from typing import TYPE_CHECKING, Any, final

import anyio
import attrs
import sniffio

from ._admin_app import AdminApp

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from prometheus_client import CollectorRegistry

    from ._sessions import SessionSupervisor

__all__ = ["AdminServer", "serve_admin"]

logger = logging.getLogger("supervisors.admin")

_COUNT_STORED_EVERY = 60.0
"""Seconds between counts of the stored sessions (``sessionvisor_sessions_stored``)."""


@final
@attrs.frozen
class AdminServer:
    """A running admin endpoint, as :func:`serve_admin` yields it.

    Attributes:
        host: the address it is bound to.
        port: the port it is bound to (the one picked, when ``port=0`` was asked).
        tls: whether it speaks HTTPS.

    .. versionadded:: 0.1
    """

    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        """The base URL: ``http://127.0.0.1:9464``; routes go after it (``url + "/sessions"``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        """Where Prometheus scrapes: ``url + "/metrics"``."""
        return self.url + "/metrics"


def serve_admin(
    sessions: SessionSupervisor,
    host: str = "127.0.0.1",
    port: int = 9464,
    *,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    client_cafile: str | os.PathLike[str] | None = None,
    client_auth_required: bool = False,
    basic_auth: tuple[str, str] | None = None,
    request_timeout: float = 10.0,
    max_concurrent_requests: int = 8,
    max_header_bytes: int = 16 * 1024,
    registry: CollectorRegistry | None = None,
) -> _Serving:
    """Serve ``/metrics`` and read-only JSON about ``sessions`` until the ``async with`` block exits.

    Routes (every one ``GET``; docs/admin.md documents each answer):

    * ``/metrics``: Prometheus text of ``sessions.registry`` (or ``registry``).
    * ``/healthz``: 200 while the process serves.
    * ``/readyz``: 200 once ``sessions.ready()`` has returned, 503 before and while shutting down.
    * ``/stats``: ``sessions.stats()``: counters, the store's counts, outcomes per type.
    * ``/sessions``: stored sessions; ``status``, ``type``, ``meta.KEY=VALUE``, ``sort``
      (``created_at``, ``-created_at``, ``updated_at``, ``-updated_at``), ``created_after``,
      ``created_before``, ``updated_after``, ``updated_before`` (Unix seconds or ISO 8601),
      ``limit`` (default 100, at most 1000) and ``offset``.
    * ``/sessions/{id}``: the session's :class:`runtime.Inspection`; ``/sessions/{id}/history``
      its recent transitions.

    A bad query value is a 400 that names the parameter; an unknown session or route a 404; both
    JSON. Example::

        async with SessionSupervisor(...) as sessions, serve_admin(sessions, port=0) as admin:
            print("admin on", admin.url)
            ...

    Args:
        sessions: the supervisor to report on.
        host: the address to bind; loopback by default. Bind ``"0.0.0.0"`` or ``"::"`` explicitly to
            be reached from other hosts, preferably with TLS and ``basic_auth``.
        port: the port; 0 picks a free one (read it back from ``server.port``).
        certfile: serve HTTPS with this certificate (PEM); ``keyfile`` is its key when not included.
        keyfile: the certificate's private key (PEM).
        client_cafile: verify client certificates against this CA bundle (mutual TLS).
        client_auth_required: refuse clients without a certificate signed by ``client_cafile``.
        basic_auth: ``(username, password)``: answer 401 to requests without them.
        request_timeout: seconds a connection may stay silent (while sending its request, or idle
            between requests) before it is closed.
        max_concurrent_requests: routes that run at once; further requests wait their turn.
        max_header_bytes: the longest request head taken: a longer one that arrives in pieces is
            refused and its connection closed; a URL (path and query) longer than half of it is
            answered 414.
        registry: what ``/metrics`` serves (default: ``sessions.registry``).

    Returns:
        An async context manager that yields the :class:`AdminServer`.

    Raises:
        OSError: the address cannot be bound (port in use, unknown host).
        ValueError: inconsistent or unreadable TLS options, or a limit out of range.
        ModuleNotFoundError: hypercorn is not installed (``pip install 'sessionvisor[admin]'``).

    .. versionadded:: 0.1
    """
    if not (isinstance(request_timeout, int | float) and 0 < request_timeout < math.inf):
        raise ValueError(f"request_timeout must be a finite number of seconds > 0, got {request_timeout!r}")
    for name, value in (
        ("max_concurrent_requests", max_concurrent_requests),
        ("max_header_bytes", max_header_bytes),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if certfile is None and (keyfile is not None or client_cafile is not None or client_auth_required):
        raise ValueError("TLS options need certfile=... (the server's certificate, PEM)")
    if client_auth_required and client_cafile is None:
        raise ValueError("client_auth_required=True needs client_cafile=... (the CA of client certificates)")
    app = AdminApp(
        sessions,
        registry=registry,
        basic_auth=basic_auth,
        max_concurrent_requests=max_concurrent_requests,
        max_url_bytes=max_header_bytes // 2,
    )
    return _Serving(
        app,
        host,
        port,
        tls=(certfile, keyfile, client_cafile, client_auth_required),
        request_timeout=float(request_timeout),
        max_header_bytes=max_header_bytes,
        warn_clear_password=basic_auth is not None and certfile is None,
    )


@final
class _Serving:
    """The context manager :func:`serve_admin` returns: hypercorn in a task group of its own."""

    def __init__(
        self,
        app: AdminApp,
        host: str,
        port: int,
        *,
        tls: tuple[Any, Any, Any, bool],
        request_timeout: float,
        max_header_bytes: int,
        warn_clear_password: bool,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._tls = tls
        self._request_timeout = request_timeout
        self._max_header_bytes = max_header_bytes
        self._warn_clear_password = warn_clear_password
        self._tg: TaskGroup | None = None
        self._stop = anyio.Event()
        self._watch = anyio.CancelScope()  # the readiness watcher and its once-a-minute count
        self.server: AdminServer | None = None

    async def __aenter__(self) -> AdminServer:
        if self._tg is not None:
            raise RuntimeError("this serve_admin() is already serving; call serve_admin() again")
        from hypercorn.config import Config  # the optional dependency, imported when used

        config = Config()
        config.accesslog = None
        config.errorlog = logger
        config.h11_max_incomplete_size = self._max_header_bytes
        config.h2_max_header_list_size = self._max_header_bytes
        config.read_timeout = math.ceil(self._request_timeout)
        config.keep_alive_timeout = self._request_timeout
        config.ssl_handshake_timeout = self._request_timeout
        config.graceful_timeout = 1.0
        config.include_server_header = False
        config.alpn_protocols = ["http/1.1"]
        certfile, keyfile, cafile, required = self._tls
        if certfile is not None:
            config.certfile = os.fspath(certfile)
            config.keyfile = os.fspath(keyfile if keyfile is not None else certfile)
            if cafile is not None:
                config.ca_certs = os.fspath(cafile)
                config.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
            try:
                config.create_ssl_context()  # fail here, with the file names, not in the server task
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"cannot load the certificate {config.certfile!r} and key {config.keyfile!r} "
                    f"({exc}): pass PEM files that match"
                ) from exc
        if self._warn_clear_password and not _is_loopback(self._host):
            logger.warning(
                "admin endpoint on %s uses basic auth over plain HTTP: the password crosses the "
                "network in clear; pass certfile= and keyfile= to serve HTTPS",
                self._host,
            )
        sock = await anyio.to_thread.run_sync(_listen, self._host, self._port)
        bound_host, bound_port = sock.getsockname()[:2]
        # hypercorn takes the listening socket over (and closes it when it stops serving).
        config.bind = [f"fd://{sock.detach()}"]
        if sniffio.current_async_library() == "trio":
            from hypercorn.trio import serve
        else:
            from hypercorn.asyncio import serve  # type: ignore[assignment]
        self._stop = anyio.Event()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg

        async def run() -> None:
            await serve(self._app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

        self._watch = watch = anyio.CancelScope()

        async def watch_ready() -> None:
            sessions = self._app.sessions
            with watch:
                await sessions.ready()
                self._app.ready = True
                while True:  # the stored-sessions gauge, counted once a minute
                    try:
                        await sessions.count_stored()
                    except Exception as exc:
                        logger.warning("admin endpoint: cannot count the stored sessions: %s", exc)
                    await anyio.sleep(_COUNT_STORED_EVERY)

        tg.start_soon(run)
        tg.start_soon(watch_ready)
        self.server = AdminServer(host=str(bound_host), port=int(bound_port), tls=certfile is not None)
        logger.info("serving the admin endpoint on %s", self.server.url)
        return self.server

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg, self._tg = self._tg, None
        if tg is None:
            return
        self._stop.set()
        # The watcher never returns by itself: without this, every exit waited for the 5 s deadline.
        self._watch.cancel()
        try:
            # hypercorn stops accepting, lets requests in progress finish (graceful_timeout), then
            # returns; the deadline cuts off a connection that does not let go.
            tg.cancel_scope.deadline = anyio.current_time() + 5.0
            await tg.__aexit__(None, None, None)
            if tg.cancel_scope.cancelled_caught:
                logger.warning("the admin endpoint did not stop within 5 s: its connections were cut")
        finally:
            if self.server is not None:
                logger.info("stopped serving the admin endpoint on %s", self.server.url)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"cannot serve the admin endpoint on {host}:{port} ({exc.strerror or exc}): choose another "
            f"host or port (port=0 picks a free one)",
        ) from exc
    return sock
