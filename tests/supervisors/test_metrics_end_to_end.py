"""The real /metrics of running supervisors, parsed, against what the test did."""

from __future__ import annotations

import urllib.request

import anyio
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from runtime import SessionCrashed, TooManySessions, serve_metrics
from supervisors import Backoff, ReaperPolicy, RestartPolicy, SessionSupervisor
from tests.apps.counter import Add, AddMany, Boom, Counter, Get, WaitFor

pytestmark = pytest.mark.anyio


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    text = await anyio.to_thread.run_sync(get)
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_figures_match_what_happened() -> None:
    """Starts, restarts, recorded events, messages and sessions by status, as scraped."""
    policy = RestartPolicy(backoff=Backoff(initial=0))
    async with SessionSupervisor(restarts=policy, reaper=ReaperPolicy(max_sessions=3)) as sessions:
        async with serve_metrics(sessions.registry, port=0) as server:
            a = await sessions.start(Counter, "a")
            b = await sessions.start(Counter, "b")
            await a.call(Add(1))
            await a.call(AddMany((1, 2, 3)))
            with pytest.raises(SessionCrashed):
                await b.call(Boom())
            await b.call(Get())
            await b.stop()
            await sessions.start(Counter, "c")
            samples = await scrape(f"http://127.0.0.1:{server.port}/metrics")

    t = {"type": "Counter"}
    assert value(samples, "sessionvisor_session_starts_total", **t) == 3
    assert value(samples, "sessionvisor_session_restarts_total", reason="RuntimeError", **t) == 1
    assert value(samples, "sessionvisor_events_recorded_total", **t) == 4
    assert value(samples, "sessionvisor_recoveries_total", outcome="ok", **t) == 1
    assert value(samples, "sessionvisor_messages_total", kind="call", **t) == 4
    assert value(samples, "sessionvisor_messages_total", kind="system", **t) == 1
    assert value(samples, "sessionvisor_sessions", status="running", **t) == 2
    assert value(samples, "sessionvisor_sessions", status="stopped", **t) == 1
    assert value(samples, "sessionvisor_append_duration_seconds_count", **t) == 2  # two record()s
    assert not any("session_id" in dict(labels) for _, labels in samples)


async def test_queued_messages_follow_puts_and_takes() -> None:
    """The mailbox gauge counts what is queued now: while a turn blocks, after a crash, at shutdown."""
    policy = RestartPolicy(backoff=Backoff(initial=0))
    async with SessionSupervisor(restarts=policy) as sessions:
        async with serve_metrics(sessions.registry, port=0) as server:
            url = f"http://127.0.0.1:{server.port}/metrics"
            a = await sessions.start(Counter, "a")
            b = await sessions.start(Counter, "b")
            gate = anyio.Event()
            await a.cast(WaitFor(gate))  # taken: the turn blocks on the gate
            await a.cast(Boom())  # queued behind it, crashes the session when its turn comes
            for n in range(4):
                await a.cast(Add(n))
            await b.cast(WaitFor(gate))
            await b.cast(Add(1))
            await anyio.wait_all_tasks_blocked()  # both actors have taken their first message
            blocked = await scrape(url)
            gate.set()
            assert await a.call(Get()) == 6  # after the crash the mailbox kept the 4 adds
            assert await b.call(Get()) == 1
            drained = await scrape(url)
            gate2 = anyio.Event()
            await a.cast(WaitFor(gate2))
            for n in range(3):
                await a.cast(Add(n))
            await anyio.wait_all_tasks_blocked()
            before_stop = await scrape(url)
            gate2.set()
    # Shut down with nothing blocking: every queued message was handled or answered.
    after = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(sessions.registry).decode())
        for s in family.samples
    }
    t = {"type": "Counter"}
    assert value(blocked, "sessionvisor_mailbox_messages", **t) == 6  # 5 behind a's turn, 1 behind b's
    assert value(drained, "sessionvisor_mailbox_messages", **t) == 0
    assert value(before_stop, "sessionvisor_mailbox_messages", **t) == 3
    assert value(after, "sessionvisor_mailbox_messages", **t) == 0


async def test_two_supervisors_in_one_process() -> None:
    """Each supervisor has its own registry: no clash, no mixing."""
    async with SessionSupervisor() as first, SessionSupervisor() as second:
        await first.start(Counter, "x")
        await second.start(Counter, "y")
        await second.start(Counter, "z")
        async with (
            serve_metrics(first.registry, port=0) as one,
            serve_metrics(second.registry, port=0) as two,
        ):
            s1 = await scrape(f"http://127.0.0.1:{one.port}/metrics")
            s2 = await scrape(f"http://127.0.0.1:{two.port}/metrics")
    assert value(s1, "sessionvisor_session_starts_total", type="Counter") == 1
    assert value(s2, "sessionvisor_session_starts_total", type="Counter") == 2


async def test_rejections_and_reaper_removals() -> None:
    from runtime.testing import ManualClock

    clock = ManualClock()
    policy = ReaperPolicy(max_sessions=1, idle_timeout=10)
    async with SessionSupervisor(clock=clock, reaper=policy) as sessions:
        await sessions.start(Counter, "a")
        with pytest.raises(TooManySessions, match="limit of 1") as info:
            await sessions.start(Counter, "b")
        assert (info.value.session_id, info.value.limit) == ("b", 1)
        await clock.advance(11)
        async with serve_metrics(sessions.registry, port=0) as server:
            samples = await scrape(f"http://127.0.0.1:{server.port}/metrics")
    assert value(samples, "sessionvisor_rejections_total", reason="too_many_sessions") == 1
    assert value(samples, "sessionvisor_reaper_removals_total", reason="idle") == 1
    assert value(samples, "sessionvisor_passivations_total", type="Counter") == 1
