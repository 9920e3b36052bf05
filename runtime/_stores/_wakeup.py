"""Waking async callers from a worker thread, cheaply, on asyncio and on trio.

A store's writer thread finishes a whole batch of operations at once. Each operation's caller waits in
its own event loop; the thread must wake them without blocking on the loop (``anyio.from_thread.run_sync``
waits for the loop to answer: one round trip per call). So each caller holds a :class:`Ticket` that
remembers its loop, and :func:`wake_all` makes one non-blocking, thread-safe call per loop per batch
(``loop.call_soon_threadsafe`` on asyncio, ``TrioToken.run_sync_soon`` on trio), which then wakes all
of that loop's callers in the loop's own thread. anyio has the same primitive
(``EventLoopToken.backend_class.run_sync_soon``) but only behind its backend classes and from 4.11 on.

It also keeps trio's ``MockClock`` honest (see :func:`hold_virtual_clock`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import anyio.to_thread

__all__ = ["Ticket", "hold_virtual_clock", "run_in_thread", "wake_all"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


_trio_lowlevel: Any = None
"""``trio.lowlevel``, imported on first use: only where trio runs."""


def _lowlevel() -> Any:
    global _trio_lowlevel
    if _trio_lowlevel is None:
        import trio.lowlevel

        _trio_lowlevel = trio.lowlevel
    return _trio_lowlevel


class Ticket:
    """A caller's place in line for a worker thread.

    Made in the caller's event loop (asyncio or trio); the thread hands it to :func:`wake_all` once
    the work is done, and the caller's :meth:`wait` returns.
    """

    __slots__ = ("_cancelled", "_loop", "_waiter", "_woken")

    def __init__(self) -> None:
        loop = asyncio._get_running_loop()
        if loop is not None:
            self._loop: object = loop
            self._waiter: Any = loop.create_future()
        else:  # trio (anyio runs on nothing else)
            lowlevel = _trio_lowlevel or _lowlevel()
            self._loop = lowlevel.current_trio_token()
            self._waiter = lowlevel.current_task()
        self._woken = False
        self._cancelled = False

    async def wait(self) -> None:
        """Wait until the thread is done with this ticket's work.

        If the caller is cancelled meanwhile, it still waits (shielded) until then, and only then
        lets the cancellation through: the work is in the thread's hands and happens anyway, so the
        caller never leaves while it is still in flight (a session restarted after a cancellation
        replays a settled log, not one that an old append may still extend).
        """
        # Both ways are inline: this is every append's hot path (bench/README.md, issue 4).
        if isinstance(self._waiter, asyncio.Future):
            # Not under anyio.CancelScope(shield=True): on asyncio that costs more than all the
            # rest of an append; a shield is only needed once cancelled.
            try:
                await self._waiter
            except asyncio.CancelledError:
                if not self._woken:
                    # The cancellation cancelled the future too: wait on a fresh one, which the
                    # wake-up (it runs in this thread, so not in between) will set.
                    self._waiter = self._waiter.get_loop().create_future()
                    with anyio.CancelScope(shield=True):
                        await self._waiter
                raise
            return
        # trio: parked with the low-level trap rather than on a trio.Event, so that waking costs
        # one reschedule. A cancellation cannot abort the wait (Abort.FAILED): it is noted, and
        # raised once the work is done (trio's cancel scopes stay cancelled until they exit).
        lowlevel = _trio_lowlevel
        if "trio.testing" in sys.modules:  # a MockClock may be running
            with hold_virtual_clock():
                await lowlevel.wait_task_rescheduled(self._abort_trio)
        else:
            await lowlevel.wait_task_rescheduled(self._abort_trio)
        if self._cancelled:
            await lowlevel.checkpoint()

    def _abort_trio(self, _raise_cancel: object) -> Any:
        self._cancelled = True
        return _trio_lowlevel.Abort.FAILED


def _wake_asyncio(tickets: list[Ticket]) -> None:
    for ticket in tickets:
        ticket._woken = True
        future = ticket._waiter
        if not future.done():
            future.set_result(None)


def _wake_trio(tickets: list[Ticket]) -> None:
    reschedule = _trio_lowlevel.reschedule
    for ticket in tickets:
        ticket._woken = True
        reschedule(ticket._waiter)


def wake_all(tickets: Iterable[Ticket]) -> None:
    """Wake every ticket's caller, with one call into each event loop. Called from the thread."""
    by_loop: dict[object, list[Ticket]] = {}
    for ticket in tickets:
        group = by_loop.get(ticket._loop)
        if group is None:
            by_loop[ticket._loop] = [ticket]
        else:
            group.append(ticket)
    for loop, group in by_loop.items():
        try:
            if isinstance(loop, asyncio.AbstractEventLoop):
                loop.call_soon_threadsafe(_wake_asyncio, group)
            else:
                loop.run_sync_soon(_wake_trio, group)  # type: ignore[attr-defined]
        except RuntimeError:  # the loop has closed (trio.RunFinishedError is a RuntimeError too)
            logger.debug("the event loop of %d callers has finished; not waking them", len(group))


# trio's MockClock(autojump_threshold=0) jumps virtual time to the next deadline as soon as every task
# is blocked, and a task waiting on a worker thread counts as blocked (python-trio/trio#456): while a
# commit takes a few real milliseconds, virtual time would race to every pending timeout and timer, so
# call timeouts and session timers would fire spuriously. Store I/O should take no virtual time at all,
# so while any task waits on one of our threads we lift that clock's autojump threshold, and restore it
# when the last such wait ends. The count is per clock, shared by every store in that trio run.
_held_clocks: weakref.WeakKeyDictionary[object, list[float]] = weakref.WeakKeyDictionary()


@contextmanager
def hold_virtual_clock() -> Iterator[None]:
    """While inside, a trio ``MockClock`` does not autojump (a no-op anywhere else).

    Wrap every wait on a worker thread in it. Enter it in the loop thread.
    """
    testing = sys.modules.get("trio.testing")
    if testing is None:
        yield
        return
    import trio

    try:
        clock = trio.lowlevel.current_clock()
    except RuntimeError:  # not in trio
        clock = None
    if not isinstance(clock, testing.MockClock):
        yield
        return
    held = _held_clocks.get(clock)
    if held is None:
        # [waits in progress, the threshold to restore]
        held = _held_clocks[clock] = [0, clock.autojump_threshold]
        clock.autojump_threshold = math.inf
    held[0] += 1
    try:
        yield
    finally:
        held[0] -= 1
        if held[0] == 0:
            del _held_clocks[clock]
            clock.autojump_threshold = held[1]


async def run_in_thread(fn: Callable[..., T], *args: object) -> T:
    """``anyio.to_thread.run_sync(fn, *args)``, without letting a MockClock jump meanwhile."""
    with hold_virtual_clock():
        return await anyio.to_thread.run_sync(fn, *args)
