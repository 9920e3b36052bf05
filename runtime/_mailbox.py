"""What travels through a session's bounded mailbox, and the call chain used to detect call cycles."""

from __future__ import annotations

import enum
from collections import deque
from contextvars import ContextVar
from typing import TYPE_CHECKING, Generic, TypeVar, final

import anyio
import anyio.lowlevel

from ._park import Parking

if TYPE_CHECKING:
    from ._session import Reply

__all__ = ["CALL_CHAIN", "Envelope", "Kind", "Mailbox", "QueuedCount"]

T = TypeVar("T")


class Kind(enum.Enum):
    """What a message is, and so which callback handles it."""

    CALL = "call"
    CAST = "cast"
    INFO = "info"
    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"
    PASSIVATE = "passivate"
    EXPIRE = "expire"
    DISOWN = "disown"
    """This node's lease on the session moved on: stop the copy without recording anything."""


@final
class Envelope:
    """One message in a mailbox.

    ``chain`` is the call chain of the sender (the sessions waiting on this message, innermost last);
    ``reply`` is set for calls and for the system messages that answer (stop, pause, resume).
    """

    __slots__ = ("chain", "kind", "message", "reply")

    def __init__(self, kind: Kind, message: object, reply: Reply | None, chain: tuple[str, ...]) -> None:
        self.kind = kind
        self.message = message
        self.reply = reply
        self.chain = chain

    def __repr__(self) -> str:
        return f"<Envelope {self.kind.value} {self.message!r}>"


@final
class QueuedCount:
    """Items queued, kept by the mailboxes that share it (one per session type: a scrape reads it).

    Kept on put and take rather than summed at scrape time: with 100,000 loaded sessions a walk of
    every mailbox cost a scrape 66 ms of the event loop's GIL. An addition per put and per take is
    a few tens of nanoseconds on a call that costs microseconds.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class Mailbox(Parking, Generic[T]):
    r"""A bounded FIFO with one receiver (the actor) and any number of senders.

    Why not anyio's memory object stream: an idle session is a receiver parked on an empty mailbox,
    and there may be 100,000 of them. A stream pair with its state, an ``anyio.Event`` per wait (an
    ``asyncio.Event`` holds a deque) and its waiter sets costs about 4 KB per idle receiver; this
    parks on a bare future (asyncio) or the task itself (trio) and keeps no buffer while empty, so
    an idle mailbox costs a few hundred bytes. Senders that find it full wait on ``anyio.Event``\ s:
    that path is rare and need not be lean.

    Errors are anyio's: ``WouldBlock`` (full / empty), ``ClosedResourceError`` (put after close),
    ``EndOfStream`` (get after close once drained).
    """

    __slots__ = ("_closed", "_count", "_room", "queued", "size")

    def __init__(self, size: int, *, trio: bool | None = None, count: QueuedCount | None = None) -> None:
        if size < 1:
            raise ValueError(f"mailbox size must be >= 1, got {size}")
        self.size = size
        Parking.__init__(self, trio)  # which backend parks the receiver (found at first park if None)
        self.queued: deque[T] | None = None
        """The queued items, oldest first; ``None`` while empty (an empty deque costs 760 bytes).

        Read-only outside this class: the actor's loop tests it to take the next message without a
        call (``len()`` through ``__len__`` cost as much as the rest of the check).
        """
        self._closed = False
        self._room: deque[anyio.Event] | None = None  # senders waiting for room, oldest first
        self._count = QueuedCount() if count is None else count
        """Added to on every put, taken from on every take (shared by a type's mailboxes)."""

    def __len__(self) -> int:
        items = self.queued
        return 0 if items is None else len(items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put_nowait(self, item: T) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        items = self.queued
        if self._room or (items is not None and len(items) >= self.size):
            raise anyio.WouldBlock  # full, or senders wait for room before us (FIFO among them)
        if items is None:
            items = self.queued = deque()
        items.append(item)
        self._count.value += 1
        if self._parked is not None:
            self._wake()

    async def put(self, item: T) -> None:
        """Put ``item``, waiting (in order with other waiting senders) while the mailbox is full."""
        await anyio.lowlevel.checkpoint()
        try:
            self.put_nowait(item)
            return
        except anyio.WouldBlock:
            pass
        room = anyio.Event()
        waiting = self._room
        if waiting is None:
            waiting = self._room = deque()
        waiting.append(room)
        try:
            await room.wait()
        except BaseException:
            waiting.remove(room)
            if not waiting:
                self._room = None
            self._pass_room()  # the slot we may have been given goes to the next in line
            raise
        waiting.remove(room)
        if not waiting:
            self._room = None
        if self._closed:
            raise anyio.ClosedResourceError
        # Woken for a free slot, which put_nowait cannot take while we were waiting: it is ours.
        items = self.queued
        if items is None:
            items = self.queued = deque()
        items.append(item)
        self._count.value += 1
        if self._parked is not None:
            self._wake()

    def poll(self) -> T | None:
        """The next item, or ``None`` if the mailbox is empty (items are never ``None``)."""
        items = self.queued
        if not items:
            return None
        item = items.popleft()
        self._count.value -= 1
        if not items:
            self.queued = None
        if self._room:
            self._pass_room()
        return item

    def get_nowait(self) -> T:
        items = self.queued
        if items:
            item = items.popleft()
            self._count.value -= 1
            if not items:
                self.queued = None  # an empty deque costs 760 bytes: keep none while idle
            if self._room:
                self._pass_room()
            return item
        if self._closed:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def get(self) -> T:
        """The next item, parking the receiver while the mailbox is empty."""
        while True:
            item = self.poll()
            if item is not None:
                return item
            if self._closed:
                raise anyio.EndOfStream
            await self.park()

    async def wait(self) -> None:
        """Park the receiver until an item is put, the mailbox closes, or :meth:`nudge` is called.

        Returns at once if an item is queued or the mailbox is closed.
        """
        if self.queued or self._closed:
            return
        await self.park()

    def nudge(self) -> None:
        """Wake the receiver if it is parked (``get`` parks again while the mailbox is empty)."""
        if self._parked is not None:
            self._wake()

    def close(self) -> None:
        """No more puts; the receiver drains what is queued, then gets ``EndOfStream``."""
        self._closed = True
        if self._parked is not None:
            self._wake()
        room = self._room
        if room:
            for event in room:
                event.set()

    def _pass_room(self) -> None:
        """Wake as many waiting senders, oldest first, as there are free slots."""
        room = self._room
        if not room:
            return
        free = self.size - len(self)
        for event in room:
            if free <= 0:
                break
            event.set()
            free -= 1


CALL_CHAIN: ContextVar[tuple[str, ...]] = ContextVar("sessionvisor_call_chain", default=())
"""The ids of the sessions whose handler the current task runs inside, outermost first.

An actor's task runs with its own id in the chain, and with the caller's chain before it while it
handles a call, so that ``A -> A`` and ``A -> B -> A`` are seen before they deadlock.
"""
