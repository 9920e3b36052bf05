"""The bounded mailbox: FIFO, waiting senders in order, closing, cancellation."""

from __future__ import annotations

import anyio
import pytest

from runtime._mailbox import Mailbox

pytestmark = pytest.mark.anyio


class TestMailbox:
    async def test_fifo_and_bound(self) -> None:
        """Items come out in order; put_nowait past the bound raises WouldBlock."""
        box: Mailbox[int] = Mailbox(3)
        for i in range(3):
            box.put_nowait(i)
        with pytest.raises(anyio.WouldBlock):
            box.put_nowait(3)
        assert len(box) == 3
        assert [box.get_nowait() for _ in range(3)] == [0, 1, 2]
        with pytest.raises(anyio.WouldBlock):
            box.get_nowait()
        assert len(box) == 0

    async def test_get_parks_until_put(self) -> None:
        """A receiver waiting on an empty mailbox gets the next item put."""
        box: Mailbox[str] = Mailbox(1)
        got: list[str] = []

        async def receive() -> None:
            got.append(await box.get())

        async with anyio.create_task_group() as tg:
            tg.start_soon(receive)
            await anyio.wait_all_tasks_blocked()
            assert got == []
            box.put_nowait("x")
        assert got == ["x"]

    async def test_waiting_senders_keep_their_order(self) -> None:
        """Senders that wait for room get in in the order they arrived; nobody jumps the queue."""
        box: Mailbox[int] = Mailbox(1)
        box.put_nowait(0)

        async with anyio.create_task_group() as tg:
            for i in (1, 2, 3):
                tg.start_soon(box.put, i)
                await anyio.wait_all_tasks_blocked()
            with pytest.raises(anyio.WouldBlock):
                box.put_nowait(99)  # others are waiting: no overtaking
            got = []
            for _ in range(4):
                got.append(await box.get())
                await anyio.wait_all_tasks_blocked()
        assert got == [0, 1, 2, 3]

    async def test_close_drains_then_ends(self) -> None:
        """After close: puts fail, queued items still come out, then EndOfStream."""
        box: Mailbox[int] = Mailbox(5)
        box.put_nowait(1)
        box.close()
        with pytest.raises(anyio.ClosedResourceError):
            box.put_nowait(2)
        assert await box.get() == 1
        with pytest.raises(anyio.EndOfStream):
            await box.get()

    async def test_close_wakes_parked_receiver_and_waiting_senders(self) -> None:
        """close() ends a parked get() and fails every waiting put()."""
        box: Mailbox[int] = Mailbox(1)
        box.put_nowait(0)
        outcomes: list[str] = []

        async def send() -> None:
            try:
                await box.put(1)
            except anyio.ClosedResourceError:
                outcomes.append("closed")

        async with anyio.create_task_group() as tg:
            tg.start_soon(send)
            tg.start_soon(send)
            await anyio.wait_all_tasks_blocked()
            box.close()
        assert outcomes == ["closed", "closed"]

        empty: Mailbox[int] = Mailbox(1)

        async def receive() -> None:
            try:
                await empty.get()
            except anyio.EndOfStream:
                outcomes.append("end")

        async with anyio.create_task_group() as tg:
            tg.start_soon(receive)
            await anyio.wait_all_tasks_blocked()
            empty.close()
        assert outcomes[-1] == "end"

    async def test_cancelled_receiver_can_park_again(self) -> None:
        """Cancelling a parked get() leaves the mailbox usable."""
        box: Mailbox[int] = Mailbox(1)
        with anyio.move_on_after(0.01):
            await box.get()
        box.put_nowait(7)
        assert await box.get() == 7

    async def test_cancelled_sender_passes_its_slot_on(self) -> None:
        """A waiting sender cancelled just as it is given room hands the room to the next one."""
        box: Mailbox[int] = Mailbox(1)
        box.put_nowait(0)
        scope = anyio.CancelScope()

        async def cancellable_put() -> None:
            with scope:
                await box.put(2)

        with anyio.fail_after(5):  # a lost slot would leave the second sender waiting forever
            async with anyio.create_task_group() as tg:
                tg.start_soon(cancellable_put)
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(box.put, 3)
                await anyio.wait_all_tasks_blocked()
                assert box.get_nowait() == 0  # room for the first waiter...
                scope.cancel()  # ...which is cancelled before it can use it (on most backends)
                got: list[int] = []
                while len(got) < 2 and 3 not in got:
                    got.append(await box.get())
                    await anyio.wait_all_tasks_blocked()
        assert got in ([2, 3], [3])

    def test_size_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match=">= 1"):
            Mailbox(0)
