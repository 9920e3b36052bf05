"""Metrics: figures as Prometheus scrapes them over HTTP, registries kept apart, TLS and basic auth."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from runtime import EventData, MemoryStore, SessionRecord
from runtime._mailbox import Mailbox
from runtime._metrics import MESSAGE_KINDS, SessionMetrics, TreeMetrics, serve_metrics
from runtime._stores.sqlite import SQLiteStore, SQLiteStoreStatistics

pytestmark = pytest.mark.anyio

Families = dict[str, Metric]


def fetch(
    url: str, *, auth: tuple[str, str] | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, str, Mapping[str, str]]:
    """GET ``url`` (in a worker thread): status, body and headers, errors included."""
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(), dict(exc.headers)


async def scrape(
    url: str, *, auth: tuple[str, str] | None = None, context: ssl.SSLContext | None = None
) -> Families:
    status, body, headers = await anyio.to_thread.run_sync(lambda: fetch(url, auth=auth, context=context))
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(body)}


def value(families: Families, name: str, **labels: str) -> float:
    """The value of the one sample ``name{labels}``."""
    found = [s.value for f in families.values() for s in f.samples if s.name == name and s.labels == labels]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


def buckets(families: Families, name: str, **labels: str) -> dict[float, float]:
    """Cumulative bucket counts of the histogram ``name{labels}``, by upper bound."""
    return {
        float(s.labels["le"]): s.value
        for f in families.values()
        for s in f.samples
        if s.name == name + "_bucket" and {k: v for k, v in s.labels.items() if k != "le"} == labels
    }


def our_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sessionvisor-metrics")]


class TestSessionMetrics:
    async def test_exact_figures_over_http(self) -> None:
        """Every instrument, driven a known number of times, reads back exactly from a scrape."""
        metrics = SessionMetrics()
        game = metrics.for_type("Game")
        assert metrics.for_type("Game") is game
        chat = metrics.for_type("Chat")
        game.started()
        game.started()
        chat.started()
        game.restarted("RuntimeError")
        game.restarted("RuntimeError")
        game.restarted("KeyError")
        game.recovered("ok", 0.003, 10)
        game.recovered("corrupt", 0.2, 0)
        game.recorded(3, 0.0004)
        game.recorded(1, 0.002)
        for _ in range(3):
            game.handled("call", 0.00005)
        game.handled("cast", 0.3)
        game.handled_observer("info")(0.001)
        game.passivated()
        game.expired("idle")
        metrics.rejected("mailbox_full")
        metrics.rejected("mailbox_full")
        metrics.rejected("too_many_sessions")
        metrics.removed("terminal_ttl")
        metrics.snapshot_failed("encode")
        metrics.dead_letter("Game")
        metrics.observe_sessions(lambda: {("Game", "running"): 2, ("Game", "passivated"): 5})
        # Queued messages are counted by the mailboxes of the type, as they are put and taken.
        first, second = Mailbox[int](10, count=game.queued), Mailbox[int](10, count=game.queued)
        for i in range(5):
            first.put_nowait(i)
            second.put_nowait(i)
        first.get_nowait()
        assert second.poll() == 0
        await second.get()
        assert len(first) + len(second) == 7

        async with serve_metrics(metrics.registry, port=0) as server:
            assert server.port != 0
            assert server.url == f"http://127.0.0.1:{server.port}/metrics"
            f = await scrape(server.url)

        assert value(f, "sessionvisor_session_starts_total", type="Game") == 2
        assert value(f, "sessionvisor_session_starts_total", type="Chat") == 1
        assert value(f, "sessionvisor_session_restarts_total", type="Game", reason="RuntimeError") == 2
        assert value(f, "sessionvisor_session_restarts_total", type="Game", reason="KeyError") == 1
        assert value(f, "sessionvisor_recoveries_total", type="Game", outcome="ok") == 1
        assert value(f, "sessionvisor_recoveries_total", type="Game", outcome="corrupt") == 1
        assert value(f, "sessionvisor_recovery_duration_seconds_count", type="Game") == 2
        assert value(f, "sessionvisor_recovery_duration_seconds_sum", type="Game") == pytest.approx(0.203)
        recovery = buckets(f, "sessionvisor_recovery_duration_seconds", type="Game")
        assert (recovery[0.0025], recovery[0.005], recovery[0.1], recovery[0.25]) == (0, 1, 1, 2)
        assert value(f, "sessionvisor_events_replayed_total", type="Game") == 10
        assert value(f, "sessionvisor_events_recorded_total", type="Game") == 4
        assert value(f, "sessionvisor_append_duration_seconds_count", type="Game") == 2
        append = buckets(f, "sessionvisor_append_duration_seconds", type="Game")
        assert (append[0.00025], append[0.0005], append[0.001], append[0.0025]) == (0, 1, 1, 2)
        assert {k: value(f, "sessionvisor_messages_total", type="Game", kind=k) for k in MESSAGE_KINDS} == {
            "call": 3,
            "cast": 1,
            "info": 1,
            "system": 0,
        }
        assert value(f, "sessionvisor_messages_total", type="Chat", kind="call") == 0
        call = buckets(f, "sessionvisor_message_handling_seconds", type="Game", kind="call")
        assert call[0.0001] == 3
        assert call[float("inf")] == 3
        cast = buckets(f, "sessionvisor_message_handling_seconds", type="Game", kind="cast")
        assert (cast[0.25], cast[0.5]) == (0, 1)
        assert value(f, "sessionvisor_message_handling_seconds_sum", type="Game", kind="cast") == 0.3
        assert value(f, "sessionvisor_passivations_total", type="Game") == 1
        assert value(f, "sessionvisor_expirations_total", type="Game", reason="idle") == 1
        assert value(f, "sessionvisor_dead_letters_total", type="Game") == 1
        assert value(f, "sessionvisor_dead_letters_total", type="Chat") == 0
        assert value(f, "sessionvisor_rejections_total", reason="mailbox_full") == 2
        assert value(f, "sessionvisor_rejections_total", reason="too_many_sessions") == 1
        assert value(f, "sessionvisor_reaper_removals_total", reason="terminal_ttl") == 1
        assert value(f, "sessionvisor_snapshot_failures_total", stage="encode") == 1
        assert value(f, "sessionvisor_sessions", type="Game", status="running") == 2
        assert value(f, "sessionvisor_sessions", type="Game", status="passivated") == 5
        assert value(f, "sessionvisor_mailbox_messages", type="Game") == 7
        assert value(f, "sessionvisor_mailbox_messages", type="Chat") == 0
        assert all(name.startswith("sessionvisor_") for name in f)
        # Bounded labels only: never a session id.
        labels = {k for family in f.values() for s in family.samples for k in s.labels}
        assert labels <= {"type", "status", "kind", "reason", "outcome", "stage", "le"}

    async def test_two_supervisors_do_not_clash(self) -> None:
        """Two SessionMetrics in one process keep their own figures, each on its own endpoint."""
        first, second = SessionMetrics(), SessionMetrics()
        first.for_type("Game").started()
        for _ in range(3):
            second.for_type("Game").started()
        async with (
            serve_metrics(first.registry, port=0) as one,
            serve_metrics(second.registry, port=0) as two,
        ):
            assert one.port != two.port
            f1, f2 = await scrape(one.url), await scrape(two.url)
        assert value(f1, "sessionvisor_session_starts_total", type="Game") == 1
        assert value(f2, "sessionvisor_session_starts_total", type="Game") == 3

    def test_same_registry_twice_is_refused_and_left_intact(self) -> None:
        """A second SessionMetrics on a registry fails clearly and registers nothing."""
        registry = CollectorRegistry()
        metrics = SessionMetrics(registry)
        assert metrics.registry is registry
        before = {m.name for m in registry.collect()}
        with pytest.raises(ValueError, match="holds sessionvisor metrics already"):
            SessionMetrics(registry)
        assert {m.name for m in registry.collect()} == before
        TreeMetrics(registry)  # a different set of names: fine in the same registry

    def test_unknown_message_kind(self) -> None:
        """handled() names the allowed kinds."""
        game = SessionMetrics().for_type("Game")
        with pytest.raises(ValueError, match=r"'call', 'cast', 'info', 'system'"):
            game.handled("rpc", 0.1)
        with pytest.raises(ValueError, match="not 'rpc'"):
            game.handled_observer("rpc")

    def test_free_form_labels_are_bounded(self, caplog: pytest.LogCaptureFixture) -> None:
        """Past 100 distinct reasons the rest count as "other", with one warning."""
        metrics = SessionMetrics()
        game = metrics.for_type("Game")
        with caplog.at_level(logging.WARNING, logger="runtime._metrics"):
            for i in range(150):
                game.restarted(f"Error{i}")
        reasons = {
            s.labels["reason"]: s.value
            for family in metrics.registry.collect()
            for s in family.samples
            if s.name == "sessionvisor_session_restarts_total"
        }
        assert len(reasons) == 101
        assert reasons["other"] == 50
        assert (
            len([r for r in caplog.records if "label values must be bounded" in r.getMessage().lower()]) == 1
        )

    async def test_failing_callback_leaves_the_rest(self, caplog: pytest.LogCaptureFixture) -> None:
        """A callback that raises loses its own family for that scrape, not the others."""
        metrics = SessionMetrics()
        metrics.for_type("Game").started()

        def broken() -> Mapping[tuple[str, str], int]:
            raise RuntimeError("index unavailable")

        metrics.observe_sessions(broken)
        Mailbox[int](1, count=metrics.for_type("Game").queued).put_nowait(1)
        async with serve_metrics(metrics.registry, port=0) as server:
            f = await scrape(server.url)
        assert "sessionvisor_sessions" not in f
        assert value(f, "sessionvisor_mailbox_messages", type="Game") == 1
        assert value(f, "sessionvisor_session_starts_total", type="Game") == 1
        assert any("callback failed" in r.getMessage() for r in caplog.records)


class TestStoreMetrics:
    async def test_group_commit_figures(self) -> None:
        """A store's statistics() become counters, gauges and a cumulative batch-size histogram."""

        class Store:
            def statistics(self) -> SQLiteStoreStatistics:
                return SQLiteStoreStatistics(
                    commits=5,
                    failed_commits=1,
                    isolated_retries=1,
                    operations=14,
                    appends=9,
                    events=20,
                    rejected=2,
                    largest_batch=7,
                    batch_sizes={1: 3, 2: 1, 8: 2},
                    queued=4,
                    idle_readers=2,
                )

        metrics = SessionMetrics()
        metrics.observe_store(Store())
        async with serve_metrics(metrics.registry, port=0) as server:
            f = await scrape(server.url)
        assert value(f, "sessionvisor_store_commits_total") == 5
        assert value(f, "sessionvisor_store_failed_commits_total") == 1
        assert value(f, "sessionvisor_store_isolated_retries_total") == 1
        assert value(f, "sessionvisor_store_operations_total") == 14
        assert value(f, "sessionvisor_store_appends_total") == 9
        assert value(f, "sessionvisor_store_events_total") == 20
        assert value(f, "sessionvisor_store_rejected_operations_total") == 2
        assert value(f, "sessionvisor_store_largest_batch") == 7
        assert value(f, "sessionvisor_store_queued_operations") == 4
        assert value(f, "sessionvisor_store_idle_readers") == 2
        batch = buckets(f, "sessionvisor_store_batch_size")
        assert list(batch) == [float(1 << i) for i in range(13)] + [float("inf")]
        assert (batch[1], batch[2], batch[4], batch[8], batch[4096], batch[float("inf")]) == (
            3,
            4,
            4,
            6,
            6,
            6,
        )

    async def test_real_sqlite_store(self, tmp_path: Path) -> None:
        """The figures of a real SQLiteStore after a create and an append of three events."""
        store = SQLiteStore(tmp_path / "s.db")
        metrics = SessionMetrics()
        metrics.observe_store(store)
        await store.open()
        try:
            await store.create(SessionRecord("s1", "Game"))
            await store.append("s1", 0, [EventData("metrics.E", 1, "{}")] * 3)
            async with serve_metrics(metrics.registry, port=0) as server:
                f = await scrape(server.url)
        finally:
            await store.aclose()
        assert value(f, "sessionvisor_store_commits_total") == 2
        assert value(f, "sessionvisor_store_appends_total") == 1
        assert value(f, "sessionvisor_store_events_total") == 3
        assert buckets(f, "sessionvisor_store_batch_size")[1] == 2

    async def test_store_without_statistics(self) -> None:
        """MemoryStore has no statistics(): no store figures, no error."""
        metrics = SessionMetrics()
        metrics.observe_store(MemoryStore())
        async with serve_metrics(metrics.registry, port=0) as server:
            f = await scrape(server.url)
        assert not [name for name in f if name.startswith("sessionvisor_store_")]


class TestTreeMetrics:
    async def test_restarts_and_escalations(self) -> None:
        """Tree figures by supervisor and child name."""
        tree = TreeMetrics()
        tree.restarted("root", "db")
        tree.restarted("root", "db")
        tree.restarted("workers", "w1")
        tree.escalated("workers")
        async with serve_metrics(tree.registry, port=0) as server:
            f = await scrape(server.url)
        assert value(f, "sessionvisor_supervisor_restarts_total", supervisor="root", child="db") == 2
        assert value(f, "sessionvisor_supervisor_restarts_total", supervisor="workers", child="w1") == 1
        assert value(f, "sessionvisor_supervisor_escalations_total", supervisor="workers") == 1


class TestServeMetrics:
    async def test_stops_and_leaves_no_thread(self) -> None:
        """Leaving the block joins the accept thread and every request thread, and frees the port."""
        metrics = SessionMetrics()
        async with serve_metrics(metrics.registry, port=0) as server:
            assert our_threads()
            for _ in range(3):
                await scrape(server.url)
        assert our_threads() == []
        with socket.create_server(("127.0.0.1", server.port)):  # the port is free again
            pass

    async def test_stops_when_cancelled(self) -> None:
        """A cancelled block still shuts the server down."""
        with anyio.CancelScope() as scope:
            async with serve_metrics(CollectorRegistry(), port=0):
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert our_threads() == []

    async def test_silent_client_does_not_hold_the_exit(self) -> None:
        """A client that connects and never sends anything holds no thread, and does not delay the exit."""
        with socket.socket() as silent:
            async with serve_metrics(CollectorRegistry(), port=0) as server:
                silent.connect(("127.0.0.1", server.port))
                await anyio.to_thread.run_sync(time.sleep, 0.2)  # accepted, and read from (nothing)
                assert our_threads() == [f"sessionvisor-metrics:{server.port}"]
                started = time.monotonic()
            assert time.monotonic() - started < 5  # request_timeout is 10 s
            assert our_threads() == []

    async def test_only_metrics_path(self) -> None:
        """Other paths get 404 with a hint."""
        async with serve_metrics(CollectorRegistry(), port=0) as server:
            status, body, _ = await anyio.to_thread.run_sync(fetch, f"http://127.0.0.1:{server.port}/other")
        assert (status, body) == (404, "404 Not Found: metrics are served on /metrics\n")

    async def test_port_in_use(self) -> None:
        """A taken port fails with an OSError that says what to do."""
        async with serve_metrics(CollectorRegistry(), port=0) as server:
            with pytest.raises(OSError, match=r"port=0 picks a free one"):
                async with serve_metrics(CollectorRegistry(), port=server.port):
                    pass  # pragma: no cover

    async def test_basic_auth(self) -> None:
        """401 without or with wrong credentials, the figures with the right ones."""
        registry = CollectorRegistry()
        async with serve_metrics(registry, port=0, basic_auth=("prom", "s3cret")) as server:
            status, _, headers = await anyio.to_thread.run_sync(fetch, server.url)
            assert status == 401
            assert headers["WWW-Authenticate"].startswith("Basic ")
            wrong = await anyio.to_thread.run_sync(lambda: fetch(server.url, auth=("prom", "nope")))
            assert wrong[0] == 401
            status, _, _ = await anyio.to_thread.run_sync(lambda: fetch(server.url, auth=("prom", "s3cret")))
            assert status == 200

    async def test_tls_options_are_checked(self) -> None:
        """Half-given TLS options fail before anything is bound."""
        with pytest.raises(ValueError, match="need certfile"):
            async with serve_metrics(CollectorRegistry(), port=0, keyfile="key.pem"):
                pass  # pragma: no cover
        with pytest.raises(ValueError, match="client_cafile"):
            async with serve_metrics(
                CollectorRegistry(), port=0, certfile="c.pem", client_auth_required=True
            ):
                pass  # pragma: no cover
        with pytest.raises(ValueError, match="cannot load the certificate"):
            async with serve_metrics(CollectorRegistry(), port=0, certfile="/nonexistent/cert.pem"):
                pass  # pragma: no cover


class TestTLS:
    async def test_https_with_basic_auth(self, certificate: tuple[Path, Path]) -> None:
        """HTTPS verified against the certificate; basic auth on top."""
        cert, key = certificate
        metrics = SessionMetrics()
        metrics.for_type("Game").started()
        client = ssl.create_default_context(cafile=str(cert))
        async with serve_metrics(
            metrics.registry, port=0, certfile=cert, keyfile=key, basic_auth=("prom", "pw")
        ) as server:
            assert server.url.startswith("https://127.0.0.1:")
            status, _, _ = await anyio.to_thread.run_sync(lambda: fetch(server.url, context=client))
            assert status == 401
            f = await scrape(server.url, auth=("prom", "pw"), context=client)
            with pytest.raises((OSError, http.client.HTTPException)):  # no plain HTTP on a TLS port
                await anyio.to_thread.run_sync(
                    lambda: fetch(f"http://127.0.0.1:{server.port}/metrics", auth=("prom", "pw"))
                )
        assert value(f, "sessionvisor_session_starts_total", type="Game") == 1
        assert our_threads() == []


def test_grafana_dashboard_uses_only_real_series() -> None:
    """Every series the example dashboard queries is one these instruments produce."""
    dashboard = json.loads(
        (Path(__file__).parents[2] / "examples/grafana/sessionvisor-dashboard.json").read_text()
    )
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", ())]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = {name for expr in exprs for name in re.findall(r"\bsessionvisor_[a-z_]+", expr)}

    registry = CollectorRegistry()
    metrics = SessionMetrics(registry)
    game = metrics.for_type("Game")
    game.restarted("RuntimeError")
    game.recovered("ok", 0.01, 1)
    game.expired("idle")
    game.quarantined()
    metrics.rejected("mailbox_full")
    metrics.removed("terminal_ttl")
    metrics.snapshot_failed("encode")
    metrics.observe_sessions(lambda: {("Game", "running"): 1})
    Mailbox[int](1, count=game.queued).put_nowait(1)
    metrics.observe_store(SQLiteStore("unused.db"))  # statistics() works before open()
    tree = TreeMetrics(registry)
    tree.restarted("root", "child")
    tree.escalated("root")
    produced = {s.name for family in registry.collect() for s in family.samples}
    assert len(used) > 20
    assert used <= produced, used - produced
