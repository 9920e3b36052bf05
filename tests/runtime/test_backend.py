"""The backend's fast paths read the same clock as anyio and name the backend they run on."""

from __future__ import annotations

import asyncio

import anyio
import pytest
import sniffio

from runtime._backend import current_backend


@pytest.mark.anyio
async def test_now_is_anyios_clock_and_is_trio_names_the_backend() -> None:
    backend = current_backend()
    assert backend.is_trio == (sniffio.current_async_library() == "trio")
    await anyio.sleep(0.01)  # under trio's MockClock the clock jumps: the reading follows it
    before = anyio.current_time()
    now = backend.now()
    after = anyio.current_time()
    assert before <= now <= after


class _ShiftedLoop(asyncio.SelectorEventLoop):
    """A loop with its own clock, as uvloop has: the backend must read it, not time.monotonic."""

    def time(self) -> float:
        return super().time() + 10_000.0


def test_an_asyncio_loop_with_its_own_clock_keeps_it() -> None:
    async def readings() -> tuple[float, float, bool]:
        backend = current_backend()
        return backend.now(), asyncio.get_running_loop().time(), backend.is_trio

    with asyncio.Runner(loop_factory=_ShiftedLoop) as runner:
        now, loop_time, is_trio = runner.run(readings())
    assert not is_trio
    assert loop_time - 1.0 <= now <= loop_time


@pytest.mark.anyio
async def test_checkpoint_yields_and_delivers_cancellation() -> None:
    checkpoint = current_backend().checkpoint
    with anyio.CancelScope() as scope:
        scope.cancel()
        await checkpoint()
        pytest.fail("a cancelled scope's checkpoint returned")
    assert scope.cancelled_caught
    ran: list[int] = []

    async def other() -> None:
        ran.append(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        for _ in range(3):  # trio may run a batch's tasks in either order
            await checkpoint()
        assert ran == [1]
