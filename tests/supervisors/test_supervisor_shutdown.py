"""Supervisor trees: stopping children gracefully, then abandoning those that outlast their shutdown."""

from __future__ import annotations

import logging
import math

import anyio
import pytest

from supervisors import ChildSpec, Strategy, Supervisor

from .test_supervisor import Log, Worker, workers

pytestmark = pytest.mark.anyio


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


class TestShutdown:
    async def test_each_child_is_waited_for_in_turn(self, anyio_backend_name: str) -> None:
        """A child's clean-up finishes before the next child (in reverse order) is stopped."""
        log = Log(anyio_backend_name)
        a, c = workers(log, "a", "c")
        b = Worker(log, "b", cleanup=2)
        with log.guard():
            async with Supervisor([ChildSpec("a", a), ChildSpec("b", b), ChildSpec("c", c)]):
                pass
            log.add("exited")
        log.assert_timed(
            [
                *[("start a", 0), ("start b", 0), ("start c", 0)],
                *[("stop c", 0), ("stop b", 0), ("cleaned b", 2), ("stop a", 2), ("exited", 2)],
            ]
        )

    async def test_outlasting_shutdown_abandons_the_child(
        self, anyio_backend_name: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """After its shutdown the next child is stopped; run still waits for the abandoned task."""
        log = Log(anyio_backend_name)
        a, c = workers(log, "a", "c")
        b = Worker(log, "b", cleanup=10)
        children = [ChildSpec("a", a), ChildSpec("b", b, shutdown=1 * log.unit), ChildSpec("c", c)]
        with log.guard():
            async with Supervisor(children, name="tree"):
                pass
            log.add("exited")
        log.assert_timed(
            [
                *[("start a", 0), ("start b", 0), ("start c", 0)],
                *[("stop c", 0), ("stop b", 0), ("stop a", 1), ("cleaned b", 10), ("exited", 10)],
            ]
        )
        (warning,) = _warnings(caplog)
        assert "'tree'" in warning
        assert "'b'" in warning
        assert "abandoning" in warning

    async def test_infinite_shutdown_waits(self, anyio_backend_name: str) -> None:
        """shutdown=math.inf waits for the child's clean-up however long it takes."""
        log = Log(anyio_backend_name)
        (a,) = workers(log, "a")
        b = Worker(log, "b", cleanup=100)
        with log.guard(500):
            async with Supervisor([ChildSpec("a", a), ChildSpec("b", b, shutdown=math.inf)]):
                pass
        log.assert_timed([("start a", 0), ("start b", 0), ("stop b", 0), ("cleaned b", 100), ("stop a", 100)])

    async def test_zero_shutdown_does_not_wait(
        self, anyio_backend_name: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """shutdown=0 cancels and moves on at once, without a warning."""
        log = Log(anyio_backend_name)
        (a,) = workers(log, "a")
        b = Worker(log, "b", cleanup=2)
        with log.guard():
            async with Supervisor([ChildSpec("a", a), ChildSpec("b", b, shutdown=0)]):
                pass
        log.assert_timed([("start a", 0), ("start b", 0), ("stop b", 0), ("stop a", 0), ("cleaned b", 2)])
        assert _warnings(caplog) == []

    async def test_abandoned_child_is_replaced_on_restart(self, anyio_backend_name: str) -> None:
        """A restart does not wait past a sibling's shutdown: its replacement starts meanwhile."""
        log = Log(anyio_backend_name)
        (a,) = workers(log, "a")
        b = Worker(log, "b", cleanup=10)
        children = [ChildSpec("a", a), ChildSpec("b", b, shutdown=1 * log.unit)]
        with log.guard():
            async with Supervisor(children, strategy=Strategy.ONE_FOR_ALL):
                a.crash()
                await anyio.sleep(20 * log.unit)
                log.add("body done")
        log.assert_timed(
            [
                *[("start a", 0), ("start b", 0), ("crash a", 0), ("stop b", 0)],
                *[("start a", 1), ("start b", 1), ("cleaned b", 10), ("body done", 20)],
                *[("stop b", 20), ("stop a", 21), ("cleaned b", 30)],
            ]
        )

    async def test_nested_tree_stops_depth_first_in_reverse(self, anyio_backend_name: str) -> None:
        """Stopping a tree stops a child supervisor's own children, in reverse, at its turn."""
        log = Log(anyio_backend_name)
        x, a, b, y = workers(log, "x", "a", "b", "y")
        inner = Supervisor([ChildSpec("a", a), ChildSpec("b", b)])
        children = [ChildSpec("x", x), ChildSpec("inner", inner, shutdown=math.inf), ChildSpec("y", y)]
        with log.guard():
            async with Supervisor(children) as outer:
                (inner_info,) = [info for info in outer.which_children() if info.is_supervisor]
                assert inner_info.value is inner
        assert log.events == [
            *["start x", "start a", "start b", "start y"],
            *["stop y", "stop b", "stop a", "stop x"],
        ]
