"""Webhooks: every session's status change POSTed as JSON to a URL, with retries and backoff (issue 5).

The HTTP work is the standard library's ``http.client`` in a worker thread, one request at a time
over a kept-alive connection; the event loop only waits. Nothing here can slow a session down: the
notifier reads a bounded lifecycle subscription, which drops (and counts) what does not fit while the
receiver is busy retrying.

.. versionadded:: 0.1
"""

from __future__ import annotations

import datetime
import email.utils
import http.client
import json
import logging
import math
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import final

import anyio
import attrs
from anyio.abc import TaskStatus

from runtime import LifecycleEvent, LifecycleSubscription, Status, StatusChanged
from runtime._host import SessionHost
from runtime.abc import Clock

from ._restart import Backoff

__all__ = ["WebhookNotifier", "WebhookStatistics"]

logger = logging.getLogger(__name__)

#: The default retry schedule: 0.1 s, 0.2 s, 0.4 s... up to 10 s, each stretched by up to 20 %.
DEFAULT_BACKOFF = Backoff(initial=0.1, maximum=10.0, multiplier=2.0, jitter=0.2)

#: Statuses worth another try: the server is overloaded, restarting or timed out waiting for us.
_RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})

#: Read at most this much of a response body (nobody reads it; reading it keeps the connection usable).
_MAX_RESPONSE_BODY = 64 * 1024

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_MANAGED_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


@attrs.frozen
class WebhookStatistics:
    """A snapshot of what a :class:`WebhookNotifier` has done since it was created.

    Attributes:
        delivered: events the server acknowledged with a 2xx status.
        retried: attempts after an event's first (each connection error, timeout, 408, 429 or 5xx
            that was followed by another try).
        failed: events given up on: ``max_attempts`` spent, or a status that retrying cannot fix
            (a 3xx or another 4xx). Each is logged at WARNING.
        dropped: events lost because the notifier fell ``buffer`` events behind (the sessions
            never wait for it).
        filtered: events skipped because their status is not among ``statuses``.

    .. versionadded:: 0.1
    """

    delivered: int
    retried: int
    failed: int
    dropped: int
    filtered: int


@final
class WebhookNotifier:
    """POSTs each session's status changes to ``url``, as JSON, one event per request, in order.

    Each request's body is :meth:`LifecycleEvent.to_json` (``session_id``, ``type``, ``status``,
    ``previous``, ``reason``, ``version``, ``at``, ``metadata``) and ``result``: what the session
    passed to ``complete()`` for a ``COMPLETED`` event (read back from its log, as JSON), ``null``
    otherwise; a ``FAILED`` event's ``reason`` says why. ``docs/webhook.schema.json`` is the
    payload's JSON schema. It is sent with ``Content-Type: application/json``. A connection error, a
    socket timeout, 408, 429 or a 5xx is retried after ``backoff`` (read from ``clock``), or after
    the server's ``Retry-After`` (seconds or an HTTP date) when it sends one, up to
    ``max_retry_after``; after ``max_attempts`` the event is logged at WARNING, counted as failed,
    and the next one goes. Other statuses (3xx, 4xx) are not retried: redirects are not followed.
    Delivery is at least once: a request that timed out may have reached the server, and is sent
    again.

    Run it next to the supervisor it watches::

        notifier = WebhookNotifier("https://hooks.example.com/sessions", statuses={Status.FAILED})
        async with anyio.create_task_group() as tg:
            async with SessionSupervisor() as sessions:
                await tg.start(notifier.run, sessions)
                ...
            # leaving the supervisor ends the feed: run() sends what is still queued, then returns

    or as a child of a ``Supervisor``, after the session supervisor (children stop in reverse order,
    so it stops first)::

        Supervisor([ChildSpec("sessions", sessions),
                    ChildSpec("webhook", functools.partial(notifier.run, sessions))])

    Args:
        url: an ``http://`` or ``https://`` URL. Only its scheme, host and port appear in logs and
            ``repr`` (webhook paths and queries often carry secrets).
        backoff: the delay before each retry (``Backoff.delay(n)`` before attempt ``n + 2``).
        max_attempts: tries per event, the first included.
        timeout: seconds each socket operation (connect, send, each read) may take.
        headers: extra request headers (``Authorization``, say); they may replace ``Content-Type``
            and ``User-Agent``, but not the framing headers (``Content-Length``...).
        statuses: send only the events whose new status is one of these, or this one (``None``:
            all).
        buffer: how many events may wait while a request is retried; newer ones are dropped.
        clock: where the backoff sleeps (default: the watched supervisor's clock, so a test clock
            drives the retries too). The timeout is real time: it applies inside the worker thread.
        ssl_context: for ``https://`` URLs (default: ``ssl.create_default_context()``).
        max_retry_after: the longest wait a server's ``Retry-After`` may ask for (seconds); a
            longer one waits this long.

    Raises:
        ValueError: the URL is not ``http://`` or ``https://`` with a host, or carries credentials
            (pass them in ``headers``); a header is malformed or managed by the notifier; a number is
            out of range; ``statuses`` is empty.
        TypeError: ``statuses`` holds something that is not a ``Status``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        url: str,
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        max_attempts: int = 5,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        statuses: Status | Iterable[Status] | None = None,
        buffer: int = 1000,
        clock: Clock | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_retry_after: float = 300.0,
    ) -> None:
        self._target = _Target.parse(url)
        if not (isinstance(max_retry_after, int | float) and 0 <= max_retry_after < math.inf):
            raise ValueError(
                f"max_retry_after must be a finite number of seconds >= 0, got {max_retry_after!r}"
            )
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise ValueError(f"buffer must be an int >= 1, got {buffer!r}")
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.timeout = float(timeout)
        self.buffer = buffer
        self.max_retry_after = float(max_retry_after)
        self.statuses = _statuses(statuses)
        self._headers = _headers(headers)
        self._clock = clock
        if self._target.https and ssl_context is None:
            ssl_context = ssl.create_default_context()
        self._ssl_context = ssl_context
        self._running = False
        self._subscription: LifecycleSubscription | None = None
        self._delivered = self._retried = self._failed = self._dropped = self._filtered = 0

    def __repr__(self) -> str:
        return f"<WebhookNotifier {self._target.display} running={self._running}>"

    def statistics(self) -> WebhookStatistics:
        """What the notifier has delivered, retried, given up on, dropped and filtered so far."""
        subscription = self._subscription
        dropped = self._dropped + (subscription.dropped if subscription is not None else 0)
        return WebhookStatistics(self._delivered, self._retried, self._failed, dropped, self._filtered)

    async def run(
        self,
        sessions: SessionHost,
        *,
        task_status: TaskStatus[WebhookNotifier] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Send ``sessions``' lifecycle events until cancelled, or until the supervisor shuts down.

        It subscribes before ``task_status.started(self)``, so every status change after
        ``await tg.start(notifier.run, sessions)`` is seen. When the supervisor shuts down, the
        events still queued are sent (retries included), then ``run`` returns. When cancelled, a
        request in progress is cut off (its socket shut down) and its worker thread waited for, so
        that no thread outlives ``run``; queued events are then lost.

        Raises:
            RuntimeError: the notifier is already running (one ``run`` at a time).
        """
        if self._running:
            raise RuntimeError(f"{self!r} is already running: run one notifier per feed")
        clock = self._clock if self._clock is not None else sessions.clock
        subscription = self._subscription = sessions.lifecycle(self.buffer)
        self._running = True
        connection = _Connection(self._target, self.timeout, self._ssl_context)
        try:
            task_status.started(self)
            async for event in subscription:
                if self.statuses is not None and event.status not in self.statuses:
                    self._filtered += 1
                    continue
                await self._deliver(connection, clock, event, await _result(sessions, event))
        finally:
            subscription.close()
            self._dropped += subscription.dropped
            self._subscription = None
            self._running = False
            connection.close()

    async def _deliver(
        self, connection: _Connection, clock: Clock, event: LifecycleEvent, result: object
    ) -> None:
        payload = event.to_json()
        payload["result"] = result
        body = json.dumps(payload, separators=(",", ":")).encode()
        outcome: int | Exception = 0
        attempt = 0
        retry_after: float | None = None
        while attempt < self.max_attempts:
            if attempt:
                self._retried += 1
                delay = self.backoff.delay(attempt - 1) if retry_after is None else retry_after
                await clock.sleep_until(clock.now() + delay)
            attempt += 1
            outcome, retry_after = await self._post(connection, body)
            if isinstance(outcome, int) and 200 <= outcome < 300:
                self._delivered += 1
                return
            if isinstance(outcome, int) and outcome not in _RETRY_STATUSES:
                break
            logger.debug(
                "webhook %s: attempt %d at the %r event of session %r failed: %s",
                self._target.display,
                attempt,
                event.status.value,
                event.session_id,
                _describe(outcome),
            )
        self._failed += 1
        logger.warning(
            "webhook %s: gave up on the %r event of session %r after %d attempt(s): %s",
            self._target.display,
            event.status.value,
            event.session_id,
            attempt,
            _describe(outcome),
        )

    async def _post(self, connection: _Connection, body: bytes) -> tuple[int | Exception, float | None]:
        """One attempt, in a worker thread: its outcome, and the wait its ``Retry-After`` asks for.

        A cancellation cuts the request off and waits for the thread.
        """
        request = _Request(body, self._headers)
        try:
            # abandon_on_cancel: a cancellation must not wait out a server that does not answer;
            # the except clause below makes the thread return promptly, and waits for it.
            outcome = await anyio.to_thread.run_sync(connection.post, request, abandon_on_cancel=True)
            wait = retry_after_seconds(request.retry_after, time.time())
            return outcome, None if wait is None else min(wait, self.max_retry_after)
        except anyio.get_cancelled_exc_class():
            if connection.abort(request):
                with anyio.CancelScope(shield=True):
                    # Bounded: only a connect or a name look-up in progress ignores the shutdown,
                    # and the socket timeout ends those.
                    await anyio.to_thread.run_sync(request.done.wait, self.timeout + 1.0)
            raise


async def _result(sessions: SessionHost, event: LifecycleEvent) -> object:
    """What a COMPLETED session passed to ``complete()``, from the status event in its log."""
    if event.status is not Status.COMPLETED or not event.version:
        return None
    try:
        for stored in await sessions.store.read(event.session_id, event.version, event.version):
            decoded = sessions.events.decode(stored.type, stored.schema_version, stored.data)
            if isinstance(decoded, StatusChanged):
                return decoded.result
    except Exception as exc:  # the event goes out all the same, without its result
        logger.warning(
            "webhook: cannot read the result of session %r from the store: %s: %s",
            event.session_id,
            type(exc).__name__,
            exc,
        )
    return None


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """The wait a ``Retry-After`` header asks for: delta-seconds or an HTTP date (RFC 9110, 10.2.3).

    ``now`` is wall-clock time (``time.time()``), for dates; a date in the past means "now" (0).
    ``None`` when there is no header or it is neither form.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": HTTP dates are GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


def _describe(outcome: int | Exception) -> str:
    if isinstance(outcome, int):
        return f"HTTP {outcome}"
    return f"{type(outcome).__name__}: {outcome}" if str(outcome) else type(outcome).__name__


def _statuses(statuses: Status | Iterable[Status] | None) -> frozenset[Status] | None:
    if statuses is None:
        return None
    chosen = frozenset([statuses] if isinstance(statuses, Status) else statuses)
    for status in chosen:
        if not isinstance(status, Status):
            raise TypeError(f"statuses must hold runtime.Status members, not {status!r}")
    if not chosen:
        raise ValueError("statuses is empty, so nothing would be sent: pass None to send every status")
    return chosen


def _headers(extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {
        "content-type": ("Content-Type", "application/json"),
        "user-agent": ("User-Agent", "sessionvisor-webhook"),
    }
    for name, value in (extra or {}).items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if name.lower() in _MANAGED_HEADERS:
            raise ValueError(f"the {name} header is set by the HTTP client; leave it out of headers")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise ValueError(f"invalid value for header {name!r}: a str without CR, LF or NUL is needed")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"the value of header {name!r} must be latin-1 text") from None
        headers[name.lower()] = (name, value)
    return dict(headers.values())


@attrs.frozen
class _Target:
    """Where requests go, parsed and checked once."""

    https: bool
    host: str
    port: int | None
    path: str  # with the query
    display: str  # scheme://host:port, safe to log

    @classmethod
    def parse(cls, url: str) -> _Target:
        if not isinstance(url, str):
            raise TypeError(f"the webhook URL must be a str, not {type(url).__name__}")
        if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
            raise ValueError("the webhook URL contains whitespace or control characters")
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            shown = f"the scheme {scheme!r}" if scheme else "no scheme"
            raise ValueError(f"the webhook URL must start with http:// or https://, it has {shown}")
        if not parts.hostname:
            raise ValueError(f"the webhook URL has no host (expected {scheme}://host[:port]/path)")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "the webhook URL carries credentials; pass them as a header instead, "
                "e.g. headers={'Authorization': 'Bearer ...'}"
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"the webhook URL has an invalid port: {exc}") from None
        host = parts.hostname
        shown_host = f"[{host}]" if ":" in host else host
        display = f"{scheme}://{shown_host}" + ("" if port is None else f":{port}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(scheme == "https", host, port, path, display)


@final
class _Connection:
    """One kept-alive HTTP(S) connection, used by one worker thread at a time.

    The event loop's side only prepares requests, aborts the one in progress and closes; every
    field that both sides touch is guarded by ``_lock``.
    """

    def __init__(self, target: _Target, timeout: float, context: ssl.SSLContext | None) -> None:
        self._target = target
        self._timeout = timeout
        self._context = context
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._busy = False
        self._closed = False

    def close(self) -> None:
        """Close the connection; a thread still working (its abort timed out) closes it when done."""
        with self._lock:
            self._closed = True
            if not self._busy:
                self._drop()

    def post(self, request: _Request) -> int | Exception:
        """Send ``request`` (in a worker thread): its status, or the error that stopped it."""
        with self._lock:
            stopping = request.aborted or self._closed
            request.started = self._busy = not stopping
        if stopping:
            request.done.set()
            return ConnectionAbortedError("the webhook notifier is stopping")
        try:
            return self._send(request)
        finally:
            with self._lock:
                self._busy = False
                if self._closed or request.aborted:
                    self._drop()
                request.done.set()

    def abort(self, request: _Request) -> bool:
        """Stop ``request`` (from the event loop); ``True`` when its thread is at work: wait for ``done``."""
        with self._lock:
            request.aborted = True
            if not request.started or request.done.is_set():
                return False
            conn = self._conn
            sock = None if conn is None else conn.sock
            if sock is not None:
                try:
                    # socket.socket's own shutdown even for TLS: SSLSocket.shutdown would also drop
                    # the TLS object that the worker thread may be using at this very moment.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass
            return True

    def _send(self, request: _Request) -> int | Exception:
        reused = self._conn is not None and self._conn.sock is not None
        outcome = self._send_once(request)
        if reused and isinstance(outcome, ConnectionResetError | BrokenPipeError) and not request.aborted:
            outcome = self._send_once(request)  # the server had closed the idle connection: a new one
        return outcome

    def _send_once(self, request: _Request) -> int | Exception:
        conn = self._open()
        try:
            if conn.sock is None:
                conn.connect()
            if request.aborted:  # aborted while connecting: abort() found no socket to shut down
                raise ConnectionAbortedError("the webhook notifier is stopping")
            conn.request("POST", self._target.path, request.body, dict(request.headers))
            with conn.getresponse() as response:
                request.retry_after = response.getheader("Retry-After")
                response.read(_MAX_RESPONSE_BODY)
                if response.will_close or not response.isclosed():
                    self._drop()  # closed by the server, or a body too long to drain
                return response.status
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            return exc

    def _open(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is None:
            target = self._target
            if target.https:
                conn = http.client.HTTPSConnection(
                    target.host, target.port, timeout=self._timeout, context=self._context
                )
            else:
                conn = http.client.HTTPConnection(target.host, target.port, timeout=self._timeout)
            self._conn = conn
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


@final
class _Request:
    """One attempt: what the worker thread sends, and how far it got (guarded by the connection's lock)."""

    __slots__ = ("aborted", "body", "done", "headers", "retry_after", "started")

    def __init__(self, body: bytes, headers: Mapping[str, str]) -> None:
        self.body = body
        self.headers = headers
        self.retry_after: str | None = None  # the last response's Retry-After header
        self.started = False
        self.aborted = False
        self.done = threading.Event()
