"""``CallDeadlines``, the deadline wheel: buckets, what expiring does to each kind of entry, the watchdog.

On a ``ManualClock`` (so every time is exact), and once on the backend's own clock.
"""

from __future__ import annotations

import anyio
import pytest

from runtime import CallTimeout, OperationTimeout, Reply
from runtime._clock import AnyioClock
from runtime._deadlines import CallDeadlines
from runtime.testing import ManualClock

pytestmark = pytest.mark.anyio

G = 0.005


def wheel(clock: ManualClock) -> CallDeadlines:
    return CallDeadlines(clock, clock.now, granularity=G)


def error_of(reply: Reply) -> BaseException | None:
    """What the caller would raise (``None`` if the reply is pending or sent a value)."""
    if not reply.done:
        return None
    try:
        reply.unwrap()
    except Exception as exc:
        return exc
    return None


class TestExpire:
    def test_a_deadline_fires_at_the_end_of_its_bucket_never_before(self) -> None:
        clock = ManualClock()
        deadlines = wheel(clock)
        reply = Reply("s")
        key = deadlines.add(reply, 0.012, 0.012)
        assert key * G == pytest.approx(0.015)  # the bucket (0.010, 0.015]
        clock.jump(0.012)
        deadlines.expire()
        assert not reply.done  # past the deadline, but its bucket has not ended
        clock.jump(0.003)
        deadlines.expire()
        error = error_of(reply)
        assert isinstance(error, CallTimeout)
        assert not isinstance(error, OperationTimeout)
        assert (error.session_id, error.timeout) == ("s", 0.012)
        assert (deadlines.expired, len(deadlines)) == (1, 0)

    def test_an_operation_fails_with_its_name(self) -> None:
        clock = ManualClock()
        deadlines = wheel(clock)
        reply = Reply("s")
        deadlines.add(reply, 1.0, 1.0, "pause")
        clock.jump(1.0)
        deadlines.expire()
        error = error_of(reply)
        assert isinstance(error, OperationTimeout)
        assert (error.session_id, error.operation, error.timeout) == ("s", "pause", 1.0)

    def test_discarded_entries_never_fire(self) -> None:
        clock = ManualClock()
        deadlines = wheel(clock)
        kept, answered = Reply("kept"), Reply("answered")
        deadlines.add(kept, 0.5, 0.5)
        key = deadlines.add(answered, 0.5, 0.5, "stop")
        assert len(deadlines) == 2
        deadlines.discard(answered, key)
        deadlines.discard(answered, key)  # twice: nothing to forget any more
        assert len(deadlines) == 1
        clock.jump(1)
        deadlines.expire()
        assert isinstance(error_of(kept), CallTimeout)
        assert not answered.done
        assert deadlines.expired == 1

    def test_a_reply_sent_already_is_not_counted(self) -> None:
        clock = ManualClock()
        deadlines = wheel(clock)
        reply = Reply("s")
        deadlines.add(reply, 0.1, 0.1)
        assert reply.send("answer")
        clock.jump(1)
        deadlines.expire()
        assert reply.unwrap() == "answer"
        assert deadlines.expired == 0

    async def test_a_cancel_scope_is_cancelled(self) -> None:
        """A wait that is not a reply (room in a full mailbox) ends when its bucket does."""
        clock = ManualClock()
        deadlines = wheel(clock)
        ended: list[float] = []

        async def wait_for_room() -> None:
            with anyio.CancelScope() as scope:
                deadlines.add(scope, 0.2, 0.2)
                await anyio.sleep_forever()
            assert scope.cancelled_caught
            ended.append(clock.now())

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_room)
            await anyio.wait_all_tasks_blocked()
            clock.jump(0.19)
            deadlines.expire()
            await anyio.wait_all_tasks_blocked()
            assert ended == []
            clock.jump(0.01)
            deadlines.expire()
        assert ended == [pytest.approx(0.2)]
        assert deadlines.expired == 1

    def test_buckets_expire_in_order_and_later_ones_wait(self) -> None:
        clock = ManualClock()
        deadlines = wheel(clock)
        replies = {t: Reply(f"s{t}") for t in (0.3, 0.1, 0.2)}
        for t, reply in replies.items():
            deadlines.add(reply, t, t)
        clock.jump(0.2)
        deadlines.expire()
        assert {t: r.done for t, r in replies.items()} == {0.3: False, 0.1: True, 0.2: True}
        assert len(deadlines) == 1


class TestWatchdog:
    async def test_fires_when_the_injected_clock_says(self) -> None:
        clock = ManualClock()
        deadlines = wheel(clock)
        reply = Reply("s")
        async with anyio.create_task_group() as tg:
            tg.start_soon(deadlines.run)
            await anyio.wait_all_tasks_blocked()
            deadlines.add(reply, 2.0, 2.0)
            await clock.advance(1.99)
            assert not reply.done
            await clock.advance(0.01)
            assert isinstance(error_of(reply), CallTimeout)
            tg.cancel_scope.cancel()

    async def test_an_earlier_deadline_wakes_a_watchdog_waiting_for_a_later_one(self) -> None:
        clock = ManualClock()
        deadlines = wheel(clock)
        late, early = Reply("late"), Reply("early")
        async with anyio.create_task_group() as tg:
            tg.start_soon(deadlines.run)
            deadlines.add(late, 10.0, 10.0)
            await anyio.wait_all_tasks_blocked()  # the watchdog sleeps until 10
            deadlines.add(early, 1.0, 1.0)
            await clock.advance(1.0)
            assert (early.done, late.done) == (True, False)
            await clock.advance(9.0)
            assert late.done
            tg.cancel_scope.cancel()

    async def test_on_the_backends_clock_never_early(self) -> None:
        """With anyio's clock (trio's MockClock on trio, real time on asyncio): the caller's wait ends
        with CallTimeout, and not before the deadline by that clock."""
        deadlines = CallDeadlines(AnyioClock(), anyio.current_time, granularity=G)
        reply = Reply("s")
        async with anyio.create_task_group() as tg:
            tg.start_soon(deadlines.run)
            deadline = anyio.current_time() + 0.02
            deadlines.add(reply, deadline, 0.02)
            await reply.wait()
            assert anyio.current_time() >= deadline
            assert isinstance(error_of(reply), CallTimeout)
            tg.cancel_scope.cancel()
