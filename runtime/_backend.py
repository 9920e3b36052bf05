"""The running backend's own fast paths, looked up once per host instead of once per message.

anyio resolves the backend on every ``anyio.current_time()`` and ``anyio.lowlevel.checkpoint()``
(about half a microsecond each); on a session's hot path (every cast and call) that is worth binding
once, when the host starts inside its event loop.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Awaitable, Callable, Generator

import attrs
import sniffio
import trio

__all__ = ["Backend", "current_backend"]


@attrs.frozen
class Backend:
    """What the runtime needs of the event loop it runs in."""

    name: str
    now: Callable[[], float]
    """Same clock as ``anyio.current_time()`` (so trio's MockClock drives it)."""
    checkpoint: Callable[[], Awaitable[None]]
    """Same as ``anyio.lowlevel.checkpoint()``: yield to the scheduler, honour cancellation."""

    is_trio: bool = attrs.field(init=False)
    """``name == "trio"``, kept as a field: it is read on every call (a property was a call more)."""

    @is_trio.default
    def _is_trio(self) -> bool:
        return self.name == "trio"


@types.coroutine
def _asyncio_checkpoint() -> Generator[None, None, None]:
    """``await asyncio.sleep(0)`` without its two frames: the bare yield it ends in (asyncio's task
    runs again at the next turn of the loop, and a pending cancellation is delivered there)."""
    yield


def current_backend() -> Backend:
    """The backend of the running event loop."""
    name = sniffio.current_async_library()
    if name == "trio":
        return Backend("trio", trio.current_time, trio.lowlevel.checkpoint)
    if name == "asyncio":
        loop = asyncio.get_running_loop()
        # asyncio's own loops read time.monotonic() in a Python method: read it directly, a frame
        # less per reading (three per call). A loop with its own clock (uvloop) keeps it.
        now = time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        return Backend("asyncio", now, _asyncio_checkpoint)
    raise RuntimeError(f"sessionvisor runs on asyncio or trio, not {name!r}")
