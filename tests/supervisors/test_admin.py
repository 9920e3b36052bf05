"""``serve_admin`` through real HTTP clients on 127.0.0.1, on both backends: every route, bad input, load."""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from runtime import SQLiteStore
from supervisors import AdminServer, SessionSupervisor, serve_admin
from tests.apps.counter import Add, Complete, Counter, Fail

# Real sockets and a real client: the real clock on both backends (no autojump).
pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def our_threads() -> list[str]:
    """Threads other than the main one and the backends' own pools of idle workers."""
    pools = ("AnyIO worker thread", "Trio thread")
    return [
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.name.startswith(pools)
    ]


@asynccontextmanager
async def admin(**options: Any) -> AsyncIterator[tuple[SessionSupervisor, AdminServer]]:
    async with SessionSupervisor() as sessions, serve_admin(sessions, port=0, **options) as server:
        yield sessions, server


async def fill(sessions: SessionSupervisor) -> None:
    """a (completed, 2 events), b (failed), c (running, metadata ch=x), d (running, ch=y)."""
    a = await sessions.start(Counter, "a", metadata={"ch": "x", "n": 1})
    await a.call(Add(5))
    await a.call(Complete({"score": 5}))
    await (await sessions.start(Counter, "b")).call(Fail("no luck"))
    c = await sessions.start(Counter, "c", metadata={"ch": "x"})
    await c.call(Add(2))
    await sessions.start(Counter, "d", metadata={"ch": "y"})


class TestRoutes:
    async def test_health_ready_and_metrics(self) -> None:
        """/healthz and /readyz answer JSON; /metrics is Prometheus text of the supervisor's registry."""
        async with admin() as (sessions, server), httpx.AsyncClient(base_url=server.url) as http:
            await sessions.start(Counter, "a")
            health = await http.get("/healthz")
            assert (health.status_code, health.json()) == (200, {"status": "ok", "active": 1})
            assert health.headers["content-type"] == "application/json"
            ready = await http.get("/readyz")
            assert (ready.status_code, ready.json()) == (200, {"ready": True, "status": "ok"})
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200
            assert metrics.headers["content-type"].startswith("text/plain")
            assert 'sessionvisor_session_starts_total{type="Counter"} 1.0' in metrics.text
            assert server.metrics_url == server.url + "/metrics"
            head = await http.head("/healthz")
            assert (head.status_code, head.content) == (200, b"")

    async def test_readyz_waits_for_ready(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """/readyz is 503 "starting" until sessions.ready() returns, then 200."""
        gate = anyio.Event()
        async with SessionSupervisor() as sessions:
            original = sessions.ready

            async def ready() -> None:
                await gate.wait()
                await original()

            monkeypatch.setattr(sessions, "ready", ready)
            async with (
                serve_admin(sessions, port=0) as server,
                httpx.AsyncClient(base_url=server.url) as http,
            ):
                before = await http.get("/readyz")
                assert (before.status_code, before.json()) == (503, {"ready": False, "status": "starting"})
                gate.set()
                with anyio.fail_after(10):
                    while (await http.get("/readyz")).status_code != 200:  # noqa: ASYNC110 - polls HTTP
                        await anyio.sleep(0.01)

    async def test_sessions_listing(self) -> None:
        """/sessions filters by status, type and metadata, sorts, pages and bounds by time."""
        async with admin() as (sessions, server), httpx.AsyncClient(base_url=server.url) as http:
            await fill(sessions)

            async def ids(query: str) -> list[str]:
                answer = await http.get("/sessions" + query)
                assert answer.status_code == 200, answer.text
                return [s["id"] for s in answer.json()["sessions"]]

            assert await ids("") == ["a", "b", "c", "d"]
            assert await ids("?sort=-created_at") == ["d", "c", "b", "a"]
            assert await ids("?sort=-updated_at") == ["d", "c", "b", "a"]  # each changed after the last
            assert await ids("?status=running") == ["c", "d"]
            assert await ids("?type=Counter&meta.ch=x") == ["a", "c"]
            assert await ids("?meta.n=1") == ["a"]
            assert await ids("?limit=2&offset=1") == ["b", "c"]
            assert await ids("?created_after=2000-01-01T00:00:00Z&created_before=4102444800") == [
                "a",
                "b",
                "c",
                "d",
            ]
            assert await ids(f"?updated_after={time.time() + 3600}") == []
            page = (await http.get("/sessions?limit=2")).json()
            assert (page["limit"], page["offset"], page["next_offset"]) == (2, 0, 2)
            assert (await http.get("/sessions?limit=10")).json()["next_offset"] is None
            first = page["sessions"][0]
            assert set(first) == {"id", "type", "status", "version", "created_at", "updated_at", "metadata"}
            assert (first["status"], first["version"], first["metadata"]) == (
                "completed",
                2,
                {"ch": "x", "n": 1},
            )

    async def test_one_session_and_its_history(self) -> None:
        """/sessions/{id} is the Inspection as JSON; /sessions/{id}/history its transitions."""
        async with admin() as (sessions, server), httpx.AsyncClient(base_url=server.url) as http:
            await fill(sessions)
            view = (await http.get("/sessions/c")).json()
            assert (view["id"], view["type"], view["status"], view["state"], view["version"]) == (
                "c",
                "Counter",
                "running",
                2,
                1,
            )
            assert view["health"] == "healthy"
            assert view["active"] is True
            assert {
                "mailbox_depth",
                "restarts",
                "age",
                "idle_for",
                "time_in_state",
                "possible_transitions",
            } <= set(view)
            assert view["recent_transitions"][-1]["message_type"] == "Add"
            assert view["recent_transitions"][-1]["status_after"] == "running"
            failed = (await http.get("/sessions/b")).json()
            assert (failed["status"], failed["status_reason"]) == ("failed", "no luck")
            history = (await http.get("/sessions/c/history")).json()
            assert history["session_id"] == "c"
            assert [t["message_type"] for t in history["transitions"]] == ["Add"]

    async def test_a_session_only_in_the_store(self, tmp_path: Path) -> None:
        """A session stored by an earlier process is inspected from the store (state rebuilt)."""
        path = tmp_path / "s.db"
        async with SessionSupervisor(store=SQLiteStore(path)) as sessions:
            await (await sessions.start(Counter, "old")).call(Add(7))
        async with (
            SessionSupervisor(store=SQLiteStore(path), session_types=[Counter]) as sessions,
            serve_admin(sessions, port=0) as server,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            view = (await http.get("/sessions/old")).json()
            assert (view["status"], view["state"], view["active"]) == ("passivated", 7, False)

    async def test_stats(self) -> None:
        """/stats is sessions.stats(): counters, the store's counts, outcomes per type."""
        async with admin() as (sessions, server), httpx.AsyncClient(base_url=server.url) as http:
            await fill(sessions)
            stats = (await http.get("/stats")).json()
            assert stats["host"]["starts"] == 4
            assert stats["store"]["by_status"] == {"completed": 1, "failed": 1, "running": 2}
            counter = stats["outcomes"]["Counter"]
            assert (counter["ended"], counter["completed"], counter["success_rate"]) == (2, 1, 0.5)
            assert counter["events_mean"] == 1.5  # a: Added and its completion; b: its failure
            assert counter["by_status"] == {"completed": 1, "failed": 1, "running": 2}


class TestBadInput:
    async def test_unknown_session_and_route(self) -> None:
        """Unknown ids and routes are 404 with a JSON body that says what is served."""
        async with admin() as (_, server), httpx.AsyncClient(base_url=server.url) as http:
            for path in (
                "/sessions/nope",
                "/sessions/nope/history",
                "/sessions/a%2Fb",
                "/sessions//history",
                "/sessions/a/b",
                "/sessions/a/history/x",
            ):
                answer = await http.get(path)
                assert answer.status_code == 404, path
                assert answer.json()["error"] == "not_found"
            assert (await http.get("/sessions/nope")).json()["id"] == "nope"
            assert (await http.get("/sessions/a%2Fb")).json()["id"] == "a/b"
            for bad in ("%00", "x" * 2000, "%FF"):  # ids no store accepts: a 400 naming the id
                answer = await http.get(f"/sessions/{bad}")
                assert answer.status_code == 400, bad
                assert answer.json()["parameter"] == "id"
            other = await http.get("/nothing/here")
            assert other.status_code == 404
            assert "/sessions/{id}" in other.json()["message"]

    async def test_ids_holding_a_slash(self) -> None:
        """An id holding "/" (or "?", "#", a space) is addressed percent-encoded, history included."""
        async with admin() as (sessions, server), httpx.AsyncClient(base_url=server.url) as http:
            for session_id in ("room/1", "a b?c#d", "history"):
                await (await sessions.start(Counter, session_id)).call(Add(1))
                quoted = urllib.parse.quote(session_id, safe="")
                answer = await http.get(f"/sessions/{quoted}")
                assert (answer.status_code, answer.json()["id"]) == (200, session_id), answer.text
                history = await http.get(f"/sessions/{quoted}/history")
                assert (history.status_code, history.json()["session_id"]) == (200, session_id)
            assert (await http.get("/sessions/room/1")).status_code == 404  # not percent-encoded

    @pytest.mark.parametrize(
        ("query", "parameter"),
        [
            ("limit=x", "limit"),
            ("limit=1001", "limit"),
            ("limit=-1", "limit"),
            ("offset=-5", "offset"),
            ("offset=1e3", "offset"),
            ("status=exploded", "status"),
            ("sort=id", "sort"),
            ("created_after=yesterday", "created_after"),
            ("updated_before=nan", "updated_before"),
            ("colour=red", "colour"),
            ("limit=1&limit=2", "limit"),
            ("meta.=1", "meta."),
        ],
    )
    async def test_bad_query_values(self, query: str, parameter: str) -> None:
        """A bad query value is a 400 whose JSON names the parameter."""
        async with admin() as (_, server), httpx.AsyncClient(base_url=server.url) as http:
            answer = await http.get(f"/sessions?{query}")
            assert answer.status_code == 400
            body = answer.json()
            assert (body["error"], body["parameter"]) == ("bad_request", parameter)
            assert body["message"]

    async def test_routes_without_parameters_and_other_methods(self) -> None:
        """Parameters where none are taken are a 400; anything but GET and HEAD is a 405."""
        async with admin() as (_, server), httpx.AsyncClient(base_url=server.url) as http:
            answer = await http.get("/healthz?verbose=1")
            assert (answer.status_code, answer.json()["parameter"]) == (400, "verbose")
            for method in ("POST", "PUT", "DELETE"):
                refused = await http.request(method, "/sessions", content=b"{}")
                assert refused.status_code == 405
                assert refused.headers["allow"] == "GET, HEAD"
            too_many = await http.get("/sessions?" + "&".join(f"meta.k{i}=1" for i in range(100)))
            assert too_many.status_code == 400

    async def test_one_megabyte_url(self) -> None:
        """A 1 MB URL is refused (the connection closed, or 414), and the server answers the next client."""
        async with admin() as (_, server), httpx.AsyncClient(base_url=server.url) as http:
            stream = await anyio.connect_tcp("127.0.0.1", server.port)
            async with stream:
                request = b"GET /sessions?x=" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
                answer = b""
                with anyio.fail_after(20):
                    try:
                        await stream.send(request)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        pass  # refused while we were still sending: the connection is gone
                    try:
                        while chunk := await stream.receive():
                            answer += chunk
                    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                        pass
            status_line = answer.split(b"\r\n", 1)[0]
            assert answer == b"" or status_line.split()[1] in (b"400", b"414", b"431"), status_line
            assert (await http.get("/healthz")).status_code == 200

    async def test_long_url_in_one_piece_is_414(self) -> None:
        """A URL over half of max_header_bytes that arrives whole is answered 414 in JSON."""
        async with admin(max_header_bytes=4096) as (_, server):
            stream = await anyio.connect_tcp("127.0.0.1", server.port)
            async with stream:
                await stream.send(b"GET /sessions?x=" + b"a" * 3000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
                answer = b""
                with anyio.fail_after(10):
                    while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
                        answer += await stream.receive()
            head, body = answer.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 414")
            assert json.loads(body)["error"] == "uri_too_long"

    async def test_many_slow_clients(self) -> None:
        """200 clients that send half a request and stall: others are answered; memory stays bounded."""
        async with (
            admin(request_timeout=30.0) as (sessions, server),
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            await fill(sessions)
            assert (await http.get("/sessions/a")).status_code == 200  # warm up
            rss_before = rss_bytes()
            streams = []
            try:
                for _ in range(200):
                    stream = await anyio.connect_tcp("127.0.0.1", server.port)
                    streams.append(stream)
                    await stream.send(b"GET /sessions/a HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
                for _ in range(3):  # each trickles one more byte, never finishing its request
                    for stream in streams:
                        await stream.send(b"z")
                    started = time.monotonic()
                    answer = await http.get("/sessions/c")
                    assert answer.status_code == 200
                    assert time.monotonic() - started < 5.0
                grown = rss_bytes() - rss_before
                assert grown < 64 * 1024 * 1024, f"RSS grew by {grown / 1e6:.1f} MB for 200 slow clients"
            finally:
                for stream in streams:
                    await stream.aclose()

    async def test_slow_client_is_cut_off_after_request_timeout(self) -> None:
        """A client that stays silent is disconnected after request_timeout."""
        async with admin(request_timeout=1.0) as (_, server):
            stream = await anyio.connect_tcp("127.0.0.1", server.port)
            async with stream:
                await stream.send(b"GET /healthz HTTP/1.1\r\n")
                closed = False
                with anyio.fail_after(10):
                    try:
                        while await stream.receive():
                            pass
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        closed = True
                assert closed

    async def test_leaving_never_needs_the_deadline(self, caplog: pytest.LogCaptureFixture) -> None:
        """With nothing in progress, leaving stops hypercorn and the readiness watcher at once: the
        5 s deadline that cuts connections that do not let go is never reached (it was, every time)."""
        with caplog.at_level(logging.INFO, logger="supervisors.admin"):
            async with admin() as (_, server), httpx.AsyncClient(base_url=server.url) as http:
                assert (await http.get("/readyz")).status_code == 200
        messages = [r.getMessage() for r in caplog.records if r.name == "supervisors.admin"]
        assert not [m for m in messages if "did not stop" in m]
        assert any(m.startswith("stopped serving the admin endpoint") for m in messages)

    async def test_stops_promptly_with_clients_connected(self) -> None:
        """Leaving the block with idle and half-sent connections open is prompt and leaves no thread."""
        threads_before = our_threads()
        started = time.monotonic()
        async with admin() as (_, server):
            streams = [await anyio.connect_tcp("127.0.0.1", server.port) for _ in range(5)]
            await streams[0].send(b"GET /healthz HTTP/1.1\r\n")
            async with httpx.AsyncClient(base_url=server.url) as http:
                assert (await http.get("/metrics")).status_code == 200
            stopping = time.monotonic()
        assert time.monotonic() - stopping < 6.0
        for stream in streams:
            await stream.aclose()
        assert our_threads() == threads_before
        assert time.monotonic() - started < 30


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class TestSecurity:
    async def test_basic_auth(self) -> None:
        """With basic_auth, every route answers 401 (JSON, with a challenge) until the password is given."""
        async with admin(basic_auth=("ops", "s3cret")) as (_, server):
            async with httpx.AsyncClient(base_url=server.url) as anonymous:
                for path in ("/metrics", "/sessions", "/healthz"):
                    refused = await anonymous.get(path)
                    assert refused.status_code == 401
                    assert refused.headers["www-authenticate"].startswith("Basic ")
                    assert refused.json()["error"] == "unauthorized"
                wrong = await anonymous.get("/sessions", auth=("ops", "guess"))
                assert wrong.status_code == 401
            async with httpx.AsyncClient(base_url=server.url, auth=("ops", "s3cret")) as http:
                assert (await http.get("/sessions")).status_code == 200

    async def test_https(self, certificate: tuple[Path, Path]) -> None:
        """TLS with the given certificate; a plain-HTTP client gets nothing."""
        cert, key = certificate
        async with admin(certfile=cert, keyfile=key) as (_, server):
            assert server.url.startswith("https://127.0.0.1:")
            context = ssl.create_default_context(cafile=str(cert))
            async with httpx.AsyncClient(base_url=server.url, verify=context) as http:
                assert (await http.get("/healthz")).json()["status"] == "ok"
            async with httpx.AsyncClient(base_url=server.url.replace("https", "http")) as plain:
                with pytest.raises(httpx.HTTPError):
                    await plain.get("/healthz")

    async def test_loopback_by_default_and_errors(self, tmp_path: Path) -> None:
        """It binds 127.0.0.1 unless told; a port in use and bad TLS options are clear errors."""
        async with admin() as (sessions, server):
            assert server.host == "127.0.0.1"
            with pytest.raises(OSError, match=r"cannot serve the admin endpoint on 127\.0\.0\.1"):
                async with serve_admin(sessions, port=server.port):
                    pass
            with pytest.raises(ValueError, match="certfile"):
                serve_admin(sessions, keyfile=tmp_path / "k.pem")
            (tmp_path / "bad.pem").write_text("not a certificate")
            with pytest.raises(ValueError, match=r"bad\.pem"):
                async with serve_admin(sessions, port=0, certfile=tmp_path / "bad.pem"):
                    pass
            with pytest.raises(ValueError, match="max_concurrent_requests"):
                serve_admin(sessions, max_concurrent_requests=0)
