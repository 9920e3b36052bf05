"""``serve_metrics`` under a burst of scrapers and hostile clients (issue 17).

The endpoint's threads work in real time, so these tests drive it from blocking sockets on threads
of their own, with the event loop in a blocking portal (both backends), not under a virtual clock.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from anyio.from_thread import start_blocking_portal
from prometheus_client import CollectorRegistry, Counter

from runtime import MetricsServer, serve_metrics
from tests.runtime.test_metrics import our_threads


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def endpoint(backend: str, **options: object) -> Iterator[MetricsServer]:
    registry = CollectorRegistry()
    Counter("soak_canary", "A figure to find in each scrape.", registry=registry).inc()
    with start_blocking_portal(backend) as portal:
        with portal.wrap_async_context_manager(serve_metrics(registry, port=0, **options)) as server:  # type: ignore[arg-type]
            yield server
    assert our_threads() == [], "a thread of the endpoint is left behind"


def scrape(port: int, timeout: float = 30) -> tuple[int, str, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    finally:
        conn.close()


def trickle(port: int, every: float, until: float) -> tuple[float, bytes]:
    """A slow client: a byte of its request each ``every`` seconds; when was it cut, and what it got."""
    began = time.monotonic()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=until) as sock:
        sock.settimeout(every)
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\n" * 10:
            try:
                sock.sendall(bytes([byte]))
                data = sock.recv(4096)  # nothing comes, until the server gives up on us
            except TimeoutError:
                continue
            except OSError:
                break
            answer += data
            if not data:
                break
            with contextlib.suppress(OSError):
                while chunk := sock.recv(4096):
                    answer += chunk
            break
    return time.monotonic() - began, answer


def test_the_accept_thread_needs_no_descriptor_of_its_own(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The accept thread's selector is made before the thread runs: a thread that first runs once
    clients have used up the process's descriptors still serves (it died of EMFILE when it made
    its selector itself)."""
    real = selectors.DefaultSelector

    def selector() -> selectors.BaseSelector:
        if threading.current_thread().name.startswith("sessionvisor-metrics:"):
            raise OSError(errno.EMFILE, "Too many open files")  # as under a flood of clients
        return real()

    monkeypatch.setattr(selectors, "DefaultSelector", selector)
    with endpoint(backend) as server:
        status, body, _ = scrape(server.port, timeout=10)
    assert status == 200
    assert "soak_canary_total 1.0" in body


@pytest.mark.slow
class TestBurst:
    def test_200_scrapers_and_50_slow_clients(self, backend: str) -> None:
        """Every scraper gets its figures; each slow client is cut at the deadline; threads stay few."""
        deadline = 2.0
        with endpoint(backend, request_timeout=deadline, max_threads=4) as server:
            most_threads = 0
            stop = threading.Event()

            def count_threads() -> None:
                nonlocal most_threads
                while not stop.wait(0.02):
                    most_threads = max(most_threads, len(our_threads()))

            counter = threading.Thread(target=count_threads)
            counter.start()
            with ThreadPoolExecutor(250) as pool:
                slow = [pool.submit(trickle, server.port, 0.5, 30) for _ in range(50)]
                time.sleep(0.3)  # the slow ones are in first, holding what they can
                scrapes = [pool.submit(scrape, server.port) for _ in range(200)]
                answers = [f.result() for f in scrapes]
                cuts = [f.result() for f in slow]
            stop.set()
            counter.join()
        assert [status for status, _, _ in answers] == [200] * 200
        assert all("soak_canary_total 1.0" in body for _, body, _ in answers)
        for took, answer in cuts:
            assert deadline - 0.1 <= took < deadline + 3, took
            assert answer.startswith(b"HTTP/1.0 408 Request Timeout"), answer
        assert most_threads <= 1 + 4  # the accept thread and the pool, whatever the clients do

    def test_beyond_max_connections_a_503(self, backend: str) -> None:
        """A connection beyond the cap is answered 503 with Retry-After at once; the others are served."""
        with endpoint(backend, max_connections=3) as server:
            held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
            try:
                time.sleep(0.2)  # accepted: three open, being read
                status, body, headers = scrape(server.port, timeout=5)
                assert status == 503
                assert headers["Retry-After"] == "1"
                assert body == "503 Service Unavailable: 3 connections at once at most; retry shortly\n"
            finally:
                for sock in held:
                    sock.close()
            time.sleep(0.2)
            assert scrape(server.port)[0] == 200

    def test_a_head_too_large_is_431(self, backend: str) -> None:
        with endpoint(backend) as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.settimeout(10)
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 40_000 + b"\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.0 431 ")

    def test_a_silent_tls_client_is_cut_at_the_deadline(
        self, backend: str, certificate: tuple[Path, Path]
    ) -> None:
        """Without a handshake a TLS client holds no thread either, and goes at the deadline."""
        cert, key = certificate
        with (
            endpoint(backend, certfile=cert, keyfile=key, request_timeout=1.0) as server,
            socket.create_connection(("127.0.0.1", server.port)) as silent,
        ):
            silent.settimeout(10)
            began = time.monotonic()
            assert silent.recv(100) == b""  # closed, without a word (there is no TLS to say it in)
            assert 0.9 <= time.monotonic() - began < 4
            client = ssl.create_default_context(cafile=str(cert))
            conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=client, timeout=10)
            conn.request("GET", "/metrics")
            assert conn.getresponse().status == 200
            conn.close()

    def test_limits_are_checked(self) -> None:
        with pytest.raises(ValueError, match="max_threads"):
            with endpoint("asyncio", max_threads=0):
                pass  # pragma: no cover
