"""The webhook notifier against a real HTTP server on 127.0.0.1: order, retries, filters, shutdown."""

from __future__ import annotations

import email.utils
import functools
import json
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast, final

import anyio
import anyio.lowlevel
import attrs
import jsonschema
import pytest

from runtime import LifecycleSubscription, Status
from supervisors import Backoff, ChildSpec, SessionSupervisor, Supervisor, _webhook
from supervisors._webhook import WebhookNotifier, WebhookStatistics, retry_after_seconds
from tests.apps.counter import Add, Complete, Counter, Fail, Get

NO_JITTER = Backoff(initial=0.01, maximum=0.05, multiplier=2.0, jitter=0)


# -- a real webhook receiver ------------------------------------------------------------------------


@attrs.frozen
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the server answered (or would have, for a client that gave up)
    client_port: int


@final
class Hook:
    """A webhook receiver: ``ThreadingHTTPServer`` (HTTP/1.1, keep-alive) in a thread on 127.0.0.1.

    It records every request; ``fail_next`` requests get ``fail_status``, and ``slow_next`` requests
    are held ``delay`` seconds (or until the server closes) before the answer.
    """

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.lock = threading.Lock()
        self.requests: list[Received] = []
        self.fail_next = 0
        self.fail_status = 500
        self.slow_next = 0
        self.delay = 0.0
        self.hang_up = False  # close each connection after answering, without saying so
        self.retry_after: str | None = None  # a Retry-After header on the failed answers
        self.release = threading.Event()
        self.handler_threads: set[threading.Thread] = set()
        self.server = _Server(self)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        port = self.server.server_address[1]
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{port}/hooks/sessions?token=s3cret"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, name="webhook-test-server"
        )

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The JSON of the requests answered with 200, in arrival order."""
        with self.lock:
            return [json.loads(r.body) for r in self.requests if r.status == 200]

    @property
    def statuses(self) -> list[int]:
        with self.lock:
            return [r.status for r in self.requests]

    def live_threads(self) -> list[str]:
        return [t.name for t in (self.thread, *self.handler_threads) if t.is_alive()]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()  # joins every request thread (block_on_close, not daemons)
        self.thread.join()


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, hook: Hook) -> None:
        self.hook = hook
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up on a slow answer: expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # a connection left open cannot hold server_close for longer

    def do_POST(self) -> None:
        hook = cast("_Server", self.server).hook
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with hook.lock:
            hook.handler_threads.add(threading.current_thread())
            status = 200
            if hook.fail_next:
                hook.fail_next -= 1
                status = hook.fail_status
            retry_after = hook.retry_after if status != 200 else None
            delay = 0.0
            if hook.slow_next:
                hook.slow_next -= 1
                delay = hook.delay
            headers = {k.lower(): v for k, v in self.headers.items()}
            hook.requests.append(
                Received(self.command, self.path, headers, body, status, self.client_address[1])
            )
        if delay:
            hook.release.wait(delay)
        self.send_response(status)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.close_connection = hook.hang_up

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serving(tls: ssl.SSLContext | None = None) -> Iterator[Hook]:
    hook = Hook(tls)
    hook.thread.start()
    try:
        yield hook
    finally:
        hook.close()
    assert hook.live_threads() == []


@pytest.fixture
def hook() -> Iterator[Hook]:
    with serving() as hook:
        yield hook


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def notifier_threads() -> list[str]:
    """Threads that are running this notifier's code (a request still at work)."""
    frames = sys._current_frames()
    busy = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident) if thread.ident is not None else None
        while frame is not None:
            if frame.f_code.co_filename == _webhook.__file__:
                busy.append(thread.name)
                break
            frame = frame.f_back
    return busy


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll in real time (the work happens in threads, which virtual time does not wait for)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.to_thread.run_sync(time.sleep, 0.005)


WEBHOOK_SCHEMA = jsonschema.Draft202012Validator(
    json.loads((Path(__file__).parents[2] / "docs" / "webhook.schema.json").read_text())
)


async def ended(events: LifecycleSubscription) -> list[dict[str, object]]:
    """What an ended subscription delivered, as the JSON the webhook should have received.

    No session here completes, so no event carries a result.
    """
    return [dict(event.to_json(), result=None) async for event in events]


def delivered(notifier: WebhookNotifier, count: int) -> Callable[[], bool]:
    return lambda: notifier.statistics().delivered == count


@final
class RecordingClock:
    """A clock whose sleeps return at once, moving it to their deadline; it records each delay."""

    def __init__(self) -> None:
        self.time = 0.0
        self.delays: list[float] = []

    def now(self) -> float:
        return self.time

    async def sleep_until(self, deadline: float) -> None:
        self.delays.append(round(deadline - self.time, 9))
        self.time = max(self.time, deadline)
        await anyio.lowlevel.checkpoint()


# -- configuration ----------------------------------------------------------------------------------


class TestConfiguration:
    @pytest.mark.parametrize(
        ("url", "match"),
        [
            ("ftp://example.com/hook", "http:// or https://, it has the scheme 'ftp'"),
            ("example.com/hook", "it has no scheme"),
            ("file:///etc/passwd", "scheme 'file'"),
            ("http:///hook", "no host"),
            ("https://user:pw@example.com/hook", "credentials"),
            ("http://example.com:99999/", "invalid port"),
            ("http://example.com/a b", "whitespace or control"),
            ("http://example.com/\r\nX-Evil: 1", "whitespace or control"),
        ],
    )
    def test_rejects_bad_urls(self, url: str, match: str) -> None:
        """Only http:// and https:// URLs with a host, and no credentials, are accepted."""
        with pytest.raises(ValueError, match=match):
            WebhookNotifier(url)

    def test_repr_and_logs_show_no_path_or_query(self) -> None:
        """Webhook paths and queries often hold secrets: only scheme, host and port are shown."""
        n = WebhookNotifier("HTTPS://hooks.example.com:8443/T00/B11/s3cret?token=x", statuses=Status.FAILED)
        assert repr(n) == "<WebhookNotifier https://hooks.example.com:8443 running=False>"
        assert repr(WebhookNotifier("http://[::1]/h")) == "<WebhookNotifier http://[::1] running=False>"
        assert n.statuses == frozenset({Status.FAILED})
        assert n.statistics() == WebhookStatistics(0, 0, 0, 0, 0)

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"max_attempts": 0}, ValueError, "max_attempts"),
            ({"timeout": 0}, ValueError, "timeout"),
            ({"timeout": float("inf")}, ValueError, "timeout"),
            ({"buffer": 0}, ValueError, "buffer"),
            ({"statuses": []}, ValueError, "statuses is empty"),
            ({"statuses": ["stopped"]}, TypeError, "runtime.Status"),
            ({"headers": {"Content-Length": "3"}}, ValueError, "set by the HTTP client"),
            ({"headers": {"X-A": "a\r\nX-B: b"}}, ValueError, "without CR, LF"),
            ({"headers": {"Bad Name": "x"}}, ValueError, "invalid header name"),
            ({"headers": {"X-A": "\u20ac"}}, ValueError, "latin-1"),
        ],
    )
    def test_rejects_bad_settings(self, kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
        """Settings are checked when the notifier is made, not at its first request."""
        with pytest.raises(error, match=match):
            WebhookNotifier("http://127.0.0.1/", **kwargs)


# -- delivery ---------------------------------------------------------------------------------------


@pytest.mark.anyio
class TestDelivery:
    async def test_events_arrive_in_order_as_json(self, hook: Hook) -> None:
        """Start, pause, resume and stop: one POST per event, in order, each the event's to_json()."""
        notifier = WebhookNotifier(hook.url, headers={"Authorization": "Bearer t0k3n"})
        async with SessionSupervisor() as sessions, anyio.create_task_group() as tg:
            assert await tg.start(notifier.run, sessions) is notifier
            mirror = sessions.lifecycle()
            a = await sessions.start(Counter, "a")
            assert await a.call(Add(2)) == 2
            await a.pause("maintenance")
            await a.resume()
            b = await sessions.start(Counter, "b")
            await b.stop("done")
            await a.stop()
            await wait_until(lambda: notifier.statistics().delivered == 6, "six deliveries")
            tg.cancel_scope.cancel()
        bodies = hook.bodies
        assert [(e["session_id"], e["status"], e["previous"], e["reason"], e["version"]) for e in bodies] == [
            ("a", "running", None, "started", 0),
            ("a", "paused", "running", "maintenance", 2),
            ("a", "running", "paused", None, 3),
            ("b", "running", None, "started", 0),
            ("b", "stopped", "running", "done", 1),
            ("a", "stopped", "running", "normal", 4),
        ]
        assert bodies == await ended(mirror)
        for body in bodies:
            WEBHOOK_SCHEMA.validate(body)
        assert all(e["type"] == "Counter" and isinstance(e["at"], float) for e in bodies)
        first = hook.requests[0]
        assert (first.method, first.path) == ("POST", "/hooks/sessions?token=s3cret")
        assert first.headers["content-type"] == "application/json"
        assert first.headers["authorization"] == "Bearer t0k3n"
        assert len({r.client_port for r in hook.requests}) == 1  # one kept-alive connection
        assert notifier.statistics() == WebhookStatistics(6, 0, 0, 0, 0)

    @pytest.mark.parametrize("status", [500, 503, 429])
    async def test_retries_with_backoff_then_succeeds(self, hook: Hook, status: int) -> None:
        """5xx and 429 are retried after the backoff's delays; the same body is sent each time."""
        hook.fail_next, hook.fail_status = 2, status
        clock = RecordingClock()
        backoff = Backoff(initial=0.1, maximum=10, multiplier=2, jitter=0)
        notifier = WebhookNotifier(hook.url, backoff=backoff, clock=clock)
        async with SessionSupervisor() as sessions, anyio.create_task_group() as tg:
            await tg.start(notifier.run, sessions)
            await sessions.start(Counter, "a")
            await wait_until(lambda: notifier.statistics().delivered == 1, "a delivery")
            tg.cancel_scope.cancel()
        assert hook.statuses == [status, status, 200]
        assert len({r.body for r in hook.requests}) == 1
        assert clock.delays == [0.1, 0.2]
        assert notifier.statistics() == WebhookStatistics(1, 2, 0, 0, 0)

    async def test_payload_has_metadata_result_and_reason(self, hook: Hook) -> None:
        """Bodies carry the session's metadata; COMPLETED its result, FAILED its reason; schema-valid."""
        notifier = WebhookNotifier(hook.url, statuses={Status.COMPLETED, Status.FAILED})
        async with SessionSupervisor() as sessions, anyio.create_task_group() as tg:
            await tg.start(notifier.run, sessions)
            a = await sessions.start(Counter, "a", metadata={"user": "ann", "channel": "c1"})
            await a.call(Add(2))
            await a.call(Complete({"score": 2, "moves": ["x", "y"]}))
            b = await sessions.start(Counter, "b", metadata={"user": "bob"})
            await b.call(Fail("out of budget"))
            c = await sessions.start(Counter, "c")
            await c.call(Complete())
            await wait_until(delivered(notifier, 3), "three deliveries")
            tg.cancel_scope.cancel()
        bodies = hook.bodies
        for body in bodies:
            WEBHOOK_SCHEMA.validate(body)
        assert [(e["session_id"], e["status"], e["metadata"], e["reason"], e["result"]) for e in bodies] == [
            ("a", "completed", {"user": "ann", "channel": "c1"}, None, {"score": 2, "moves": ["x", "y"]}),
            ("b", "failed", {"user": "bob"}, "out of budget", None),
            ("c", "completed", {}, None, None),
        ]

    def test_schema_rejects_what_the_notifier_never_sends(self) -> None:
        """The schema is strict: a result on a non-completed event, an unknown status or key fail."""
        good = {
            "session_id": "a",
            "type": "Counter",
            "status": "failed",
            "previous": "running",
            "reason": "no",
            "version": 3,
            "at": 1.5,
            "metadata": {},
            "result": None,
        }
        WEBHOOK_SCHEMA.validate(good)
        for bad in (
            dict(good, result=1),
            dict(good, status="exploded"),
            dict(good, extra=1),
            {k: v for k, v in good.items() if k != "metadata"},
        ):
            assert not WEBHOOK_SCHEMA.is_valid(bad), bad

    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ("7", [7.0]),
            ("0", [0.0]),
            ("100000", [300.0]),  # capped at max_retry_after
            ("soon", [0.1]),  # not a Retry-After: the backoff's delay
        ],
    )
    async def test_retry_after_seconds_is_honoured(
        self, hook: Hook, header: str, expected: list[float]
    ) -> None:
        """A 503 or 429 with Retry-After waits what it says (at most max_retry_after), not the backoff."""
        hook.fail_next, hook.fail_status, hook.retry_after = 1, 503, header
        clock = RecordingClock()
        backoff = Backoff(initial=0.1, maximum=10, multiplier=2, jitter=0)
        notifier = WebhookNotifier(hook.url, backoff=backoff, clock=clock)
        async with SessionSupervisor() as sessions, anyio.create_task_group() as tg:
            await tg.start(notifier.run, sessions)
            await sessions.start(Counter, "a")
            await wait_until(delivered(notifier, 1), "a delivery")
            tg.cancel_scope.cancel()
        assert hook.statuses == [503, 200]
        assert clock.delays == expected

    async def test_retry_after_date_is_honoured(self, hook: Hook) -> None:
        """Retry-After as an HTTP date waits until then (measured against the wall clock)."""
        hook.fail_next, hook.fail_status = 1, 429
        hook.retry_after = email.utils.formatdate(time.time() + 60, usegmt=True)
        clock = RecordingClock()
        notifier = WebhookNotifier(hook.url, clock=clock)
        async with SessionSupervisor() as sessions, anyio.create_task_group() as tg:
            await tg.start(notifier.run, sessions)
            await sessions.start(Counter, "a")
            await wait_until(delivered(notifier, 1), "a delivery")
            tg.cancel_scope.cancel()
        (delay,) = clock.delays
        assert 50 < delay <= 60  # whole seconds in the header; a slow machine eats a few

    async def test_default_backoff_has_jitter(self, hook: Hook) -> None:
        """By default: 0.1 s, 0.2 s, 0.4 s, 0.8 s, each stretched by up to 20 %."""
        hook.fail_next = 4
        clock = RecordingClock()
        notifier = WebhookNotifier(hook.url, clock=clock)
        async with SessionSupervisor() as sessions, anyio.create_task_group() as tg:
            await tg.start(notifier.run, sessions)
            await sessions.start(Counter, "a")
            await wait_until(lambda: notifier.statistics().delivered == 1, "a delivery")
            tg.cancel_scope.cancel()
        assert len(clock.delays) == 4
        for n, delay in enumerate(clock.delays):
            assert 0.1 * 2**n <= delay <= 0.1 * 2**n * 1.2

    async def test_gives_up_after_max_attempts_and_goes_on(
        self, hook: Hook, caplog: pytest.LogCaptureFixture
    ) -> None:
        """After max_attempts the event is logged and counted as failed; the next one is sent."""
        hook.fail_next = 3
        notifier = WebhookNotifier(hook.url, backoff=NO_JITTER, max_attempts=3)
        caplog.set_level(logging.WARNING, logger="supervisors._webhook")
        async with SessionSupervisor() as sessions, anyio.create_task_group() as tg:
            await tg.start(notifier.run, sessions)
            a = await sessions.start(Counter, "a")
            await wait_until(lambda: notifier.statistics().failed == 1, "a failure")
            await a.stop()
            await wait_until(lambda: notifier.statistics().delivered == 1, "a delivery")
            tg.cancel_scope.cancel()
        assert hook.statuses == [500, 500, 500, 200]
        assert [e["status"] for e in hook.bodies] == ["stopped"]
        assert notifier.statistics() == WebhookStatistics(1, 2, 1, 0, 0)
        [record] = caplog.records
        assert record.levelno == logging.WARNING
        message = record.getMessage()
        assert "gave up on the 'running' event of session 'a' after 3 attempt(s): HTTP 500" in message
        assert hook.url.split("/hooks")[0] in message
        assert "s3cret" not in message

    async def test_client_errors_are_not_retried(self, hook: Hook, caplog: pytest.LogCaptureFixture) -> None:
        """A 4xx other than 408/429 cannot be fixed by sending again: one attempt, then failed."""
        hook.fail_next, hook.fail_status = 1, 404
        notifier = WebhookNotifier(hook.url, backoff=NO_JITTER)
        async with SessionSupervisor() as sessions, anyio.create_task_group() as tg:
            await tg.start(notifier.run, sessions)
            a = await sessions.start(Counter, "a")
            await a.stop()
            await wait_until(lambda: notifier.statistics().delivered == 1, "a delivery")
            tg.cancel_scope.cancel()
        assert hook.statuses == [404, 200]
        assert notifier.statistics() == WebhookStatistics(1, 0, 1, 0, 0)
        assert "after 1 attempt(s): HTTP 404" in caplog.text

    async def test_connection_refused_is_retried_then_given_up(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Nothing listening: every attempt is a connection error, retried, then given up."""
        notifier = WebhookNotifier(f"http://127.0.0.1:{free_port()}/x", backoff=NO_JITTER, max_attempts=3)
        async with SessionSupervisor() as sessions, anyio.create_task_group() as tg:
            await tg.start(notifier.run, sessions)
            await sessions.start(Counter, "a")
            await wait_until(lambda: notifier.statistics().failed == 1, "a failure")
            tg.cancel_scope.cancel()
        assert notifier.statistics() == WebhookStatistics(0, 2, 1, 0, 0)
        assert "after 3 attempt(s): ConnectionRefusedError" in caplog.text

    async def test_slow_answer_times_out_and_is_retried(self, hook: Hook) -> None:
        """A server slower than timeout (real seconds, in the socket) counts as a failed attempt."""
        hook.slow_next, hook.delay = 1, 30.0
        notifier = WebhookNotifier(hook.url, backoff=NO_JITTER, timeout=0.2)
        async with SessionSupervisor() as sessions, anyio.create_task_group() as tg:
            await tg.start(notifier.run, sessions)
            await sessions.start(Counter, "a")
            await wait_until(lambda: notifier.statistics().delivered == 1, "a delivery")
            tg.cancel_scope.cancel()
        assert len(hook.requests) == 2  # at least once: the first may have been handled too
        assert notifier.statistics() == WebhookStatistics(1, 1, 0, 0, 0)

    async def test_connection_closed_by_the_server_is_reopened(self, hook: Hook) -> None:
        """A kept-alive connection that the server closed is replaced at once, not counted as a retry."""
        hook.hang_up = True
        notifier = WebhookNotifier(hook.url, backoff=NO_JITTER)
        async with SessionSupervisor() as sessions, anyio.create_task_group() as tg:
            await tg.start(notifier.run, sessions)
            for count, name in enumerate("abc", 1):
                await sessions.start(Counter, name)
                await wait_until(delivered(notifier, count), f"delivery {count}")
            tg.cancel_scope.cancel()
        assert [e["session_id"] for e in hook.bodies] == ["a", "b", "c"]
        assert len({r.client_port for r in hook.requests}) == 3
        assert notifier.statistics() == WebhookStatistics(3, 0, 0, 0, 0)

    async def test_status_filter(self, hook: Hook) -> None:
        """Only the statuses asked for are sent; the others are counted as filtered."""
        notifier = WebhookNotifier(hook.url, statuses={Status.PAUSED, Status.STOPPED})
        async with SessionSupervisor() as sessions, anyio.create_task_group() as tg:
            await tg.start(notifier.run, sessions)
            a = await sessions.start(Counter, "a")
            await a.pause()
            await a.resume()
            await a.stop()
            await wait_until(lambda: notifier.statistics().delivered == 2, "two deliveries")
            tg.cancel_scope.cancel()
        assert [(e["session_id"], e["status"]) for e in hook.bodies] == [("a", "paused"), ("a", "stopped")]
        assert notifier.statistics() == WebhookStatistics(2, 0, 0, 0, 2)

    async def test_https(self, certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
        """HTTPS with the given SSL context; the default context rejects an unknown certificate."""
        cert, key = certificate
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(cert, key)
        with serving(server_tls) as tls_hook:
            trusting = WebhookNotifier(tls_hook.url, ssl_context=ssl.create_default_context(cafile=str(cert)))
            default = WebhookNotifier(tls_hook.url, max_attempts=1)
            async with SessionSupervisor() as sessions, anyio.create_task_group() as tg:
                await tg.start(trusting.run, sessions)
                await tg.start(default.run, sessions)
                await sessions.start(Counter, "a")
                await wait_until(lambda: trusting.statistics().delivered == 1, "a delivery")
                await wait_until(lambda: default.statistics().failed == 1, "a failure")
                tg.cancel_scope.cancel()
            assert [e["session_id"] for e in tls_hook.bodies] == ["a"]
        assert "SSLCertVerificationError" in caplog.text


# -- never in the way -------------------------------------------------------------------------------


@pytest.mark.anyio
class TestNeverBlocks:
    async def test_dead_server_never_blocks_sessions(self) -> None:
        """While every request is refused and retried, calls answer at once; the overflow is dropped."""
        notifier = WebhookNotifier(
            f"http://127.0.0.1:{free_port()}/", backoff=NO_JITTER, max_attempts=10**9, buffer=2
        )
        worst = 0.0
        async with SessionSupervisor() as sessions, anyio.create_task_group() as tg:
            await tg.start(notifier.run, sessions)
            for i in range(20):
                started = time.perf_counter()
                ref = await sessions.start(Counter, f"s{i}")
                assert await ref.call(Add(i)) == i
                assert await ref.call(Get()) == i
                worst = max(worst, time.perf_counter() - started)
            await wait_until(lambda: notifier.statistics().retried >= 3, "retries")
            stats = notifier.statistics()
            tg.cancel_scope.cancel()
        assert worst < 0.5
        assert (stats.delivered, stats.failed) == (0, 0)
        assert 17 <= stats.dropped <= 18  # one in progress, two buffered (one more if not yet taken)
        assert notifier_threads() == []

    async def test_hung_server_never_blocks_and_stopping_is_prompt(self, hook: Hook) -> None:
        """A server that never answers: sessions go on; cancelling cuts the request off at once."""
        hook.slow_next, hook.delay = 10**6, 60.0
        notifier = WebhookNotifier(hook.url, timeout=30, buffer=1)
        async with SessionSupervisor() as sessions:
            async with anyio.create_task_group() as tg:
                await tg.start(notifier.run, sessions)
                await sessions.start(Counter, "first")
                await wait_until(lambda: len(hook.requests) == 1, "a request")
                started = time.perf_counter()
                for i in range(10):
                    ref = await sessions.start(Counter, f"s{i}")
                    assert await ref.call(Add(i)) == i
                assert time.perf_counter() - started < 1.0
                assert notifier_threads()  # a worker thread waits for the answer
                cancelled = time.perf_counter()
                tg.cancel_scope.cancel()
            assert time.perf_counter() - cancelled < 2.0  # not the 30 s timeout
            assert notifier_threads() == []
            dropped = notifier.statistics().dropped
            assert dropped == 9
            await sessions.start(Counter, "after")  # unsubscribed: nothing more is offered to it
            assert notifier.statistics() == WebhookStatistics(0, 0, 0, dropped, 0)


# -- lifecycle of the notifier itself ---------------------------------------------------------------


@pytest.mark.anyio
class TestRunning:
    async def test_sends_what_is_queued_when_the_supervisor_closes(self, hook: Hook) -> None:
        """Leaving the supervisor ends the feed: run() sends the queued events, then returns."""
        hook.slow_next, hook.delay = 3, 0.05
        notifier = WebhookNotifier(hook.url)
        async with anyio.create_task_group() as tg:
            async with SessionSupervisor() as sessions:
                await tg.start(notifier.run, sessions)
                mirror = sessions.lifecycle()
                for name in "abc":
                    await (await sessions.start(Counter, name)).stop()
                assert notifier.statistics().delivered < 6
        assert hook.bodies == await ended(mirror)
        assert [(e["session_id"], e["status"]) for e in hook.bodies] == [
            (name, status) for name in "abc" for status in ("running", "stopped")
        ]
        assert notifier.statistics() == WebhookStatistics(6, 0, 0, 0, 0)
        assert notifier_threads() == []

    async def test_as_a_supervisor_child(self, hook: Hook) -> None:
        """A child of a Supervisor tree after the session supervisor; the tree's shutdown stops it."""
        notifier = WebhookNotifier(hook.url)
        sessions = SessionSupervisor()
        tree = Supervisor(
            [
                ChildSpec("sessions", sessions),
                ChildSpec("webhook", functools.partial(notifier.run, sessions)),
            ]
        )
        async with anyio.create_task_group() as tg:
            await tg.start(tree.run)
            assert [(c.id, c.value) for c in tree.which_children()] == [
                ("sessions", sessions),
                ("webhook", notifier),
            ]
            await (await sessions.start(Counter, "a")).stop()
            await wait_until(lambda: notifier.statistics().delivered == 2, "two deliveries")
            tg.cancel_scope.cancel()
        assert [(e["session_id"], e["status"]) for e in hook.bodies] == [("a", "running"), ("a", "stopped")]
        assert notifier_threads() == []

    async def test_one_run_at_a_time_and_runs_again(self, hook: Hook) -> None:
        """A second concurrent run() is refused; after the first ends the notifier can run again."""
        notifier = WebhookNotifier(hook.url)
        async with SessionSupervisor() as sessions:
            async with anyio.create_task_group() as tg:
                await tg.start(notifier.run, sessions)
                with pytest.raises(RuntimeError, match="already running"):
                    await tg.start(notifier.run, sessions)
                await sessions.start(Counter, "a")
                await wait_until(lambda: notifier.statistics().delivered == 1, "a delivery")
                tg.cancel_scope.cancel()
            await sessions.start(Counter, "unseen")
            async with anyio.create_task_group() as tg:
                await tg.start(notifier.run, sessions)
                await sessions.start(Counter, "b")
                await wait_until(lambda: notifier.statistics().delivered == 2, "a second delivery")
                tg.cancel_scope.cancel()
        assert [e["session_id"] for e in hook.bodies] == ["a", "b"]


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, None),
            ("120", 120.0),
            (" 3 ", 3.0),
            ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),  # RFC 9110's example, 10 s after "now"
            ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: now
            ("Wednesday, 21-Oct-15 07:28:10 GMT", 10.0),  # the obsolete RFC 850 form
            ("-5", None),
            ("1.5", None),
            ("tomorrow", None),
            ("", None),
            ("٣", None),  # a digit, but not an ASCII one
        ],
    )
    def test_parse(self, value: str | None, expected: float | None) -> None:
        """Delta-seconds and HTTP dates (RFC 9110 section 10.2.3); anything else is no header."""
        now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
        assert retry_after_seconds(value, now) == expected
