"""Pipelined persistence (issue 14): a busy session is not bound by the store's commit latency.

With ``pipeline_depth = N > 1`` a session's ``record`` applies its events at once and returns; the
turn's reply (or, for a cast or a timer, nothing) waits in a :class:`Pipeline` with the turn's
events, and the actor takes the next message while up to N earlier turns are unconfirmed. Whatever
the turns recorded while an append was in flight goes to the store as the next append (one
expected-version check, one commit), and once the store has acknowledged an append, and every one
before it, the callers of its turns are answered, in order. At most two appends are in flight: while
the store commits one, the next is queued behind it once the depth is full (the actor can add
nothing more to it), so the store need not wait for the event loop to send it more.

What holds, as at depth 1: a reply is sent only once its own events, and those of every message
before it, are durable; one ``record`` (indeed one turn) is never split between appends. What
differs: a handler sees, and its side effects may act on, state that is not durable yet; and an
append failure crashes the session. Every caller whose events were not durable then gets
``SessionCrashed`` with the store's error as its cause, and the session restarts from its log, so
the state is again the fold of what is stored; messages still queued stay queued.

Anything that must see the log as the state has it (a status change, a snapshot, passivation, the
end of the incarnation) first waits for the pipeline to settle (:meth:`Pipeline.settle`).
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any, final

import anyio

from ._exceptions import OwnershipLost, SessionCrashed, StoreError

if TYPE_CHECKING:
    from ._cell import SessionCell
    from ._mailbox import Envelope, Mailbox
    from ._records import EventData, Snapshot
    from ._session import Reply, Session

__all__ = ["Pipeline"]

logger = logging.getLogger(__name__)


@final
class _Turn:
    """A handled message whose events are not durable yet: what to answer once they are."""

    __slots__ = ("error", "reply", "snapshot", "value")

    def __init__(
        self, reply: Reply | None, value: object, error: BaseException | None, snapshot: Snapshot | None
    ) -> None:
        self.reply = reply
        self.value = value
        self.error = error
        self.snapshot = snapshot


@final
class _Append:
    """One append in flight: how many turns it confirms, and its outcome once the store answered."""

    __slots__ = ("entered", "error", "events", "turns", "version")

    def __init__(self, turns: int, events: int) -> None:
        self.turns = turns
        self.events = events
        self.entered = False
        """Whether its task has called the store (so the store has it before any later one)."""
        self.version: int | None = None
        self.error: Exception | None = None


_MAX_APPENDS = 2
"""Appends of one session in flight at once: one being committed, the next queued behind it."""


@final
class Pipeline:
    """One incarnation's events in flight and the replies waiting for them.

    The actor calls :meth:`add` from ``record``, :meth:`end_turn` after each message, and waits with
    :meth:`wait_room` and :meth:`settle`; each append runs in a task of its own. ``durable`` is the
    version the store has acknowledged (every append up to it); ``failure`` is set once an append
    has failed, after which the incarnation must end.

    Args:
        cell: the session's cell (its id, host, store and mailbox).
        instance: the incarnation this pipeline belongs to.
        depth: how many handled messages may wait for their events at once.
    """

    __slots__ = (
        "_appends",
        "_base",
        "_cell",
        "_recorded",
        "_running",
        "_sent",
        "_turns",
        "_unsent",
        "_unsent_turns",
        "_waiter",
        "depth",
        "durable",
        "failure",
        "instance",
    )

    def __init__(self, cell: SessionCell, instance: Session[Any], depth: int) -> None:
        self._cell = cell
        self.instance = instance
        self.depth = depth
        self.durable = instance._version
        self.failure: StoreError | OwnershipLost | None = None
        self._recorded: list[EventData] | None = None  # by the turn in progress
        self._base = 0  # the version before the turn in progress recorded anything
        self._turns: deque[_Turn] = deque()  # handled, not confirmed; oldest first
        self._unsent: list[EventData] = []  # events of handled turns not sent to the store yet
        self._unsent_turns = 0  # how many of the newest turns those events belong to
        self._sent = self.durable  # the version once every append sent so far is durable
        self._appends: deque[_Append] = deque()  # sent, not confirmed; oldest first
        self._running = 0  # append tasks not finished (a failed pipeline waits for them too)
        self._waiter: anyio.Event | None = None  # the actor, waiting for room or for settling

    def __repr__(self) -> str:
        return (
            f"<Pipeline of {self._cell.id!r}: durable {self.durable}, "
            f"{len(self._turns)}/{self.depth} unconfirmed>"
        )

    @property
    def unconfirmed(self) -> int:
        """Handled messages still waiting for their events (or earlier ones) to be durable."""
        return len(self._turns)

    @property
    def full(self) -> bool:
        return len(self._turns) >= self.depth

    # -- the actor's side ------------------------------------------------------------------------

    def add(self, events: list[EventData], version_before: int) -> None:
        """``record`` at depth > 1: the turn in progress recorded ``events`` (already applied)."""
        recorded = self._recorded
        if recorded is None:
            self._recorded = events
            self._base = version_before
        else:
            recorded += events

    def take_recorded(self) -> list[EventData]:
        """The events recorded by the turn in progress so far, which the caller appends itself."""
        recorded, self._recorded = self._recorded, None
        return recorded or []

    def end_turn(self, reply: Reply | None, value: object = None, error: BaseException | None = None) -> None:
        """The turn ended: answer ``reply`` with ``value`` (or ``error``) once it is confirmed.

        A turn that recorded nothing behind nothing unconfirmed is answered at once.
        """
        recorded, self._recorded = self._recorded, None
        if self.failure is not None:
            # An append failed while this turn ran: its events will never be durable.
            if reply is not None:
                reply.fail(_crashed(self._cell.id, self.failure))
            return
        if recorded is None and not self._turns:
            if reply is not None:
                if error is None:
                    reply.send(value)
                else:
                    reply.fail(error)
            return
        snapshot = None
        if recorded is not None:
            every = self._cell.cls.snapshot_every
            version = self._base + len(recorded)
            if every is not None and version // every != self._base // every:
                # Encoded now, the state as this turn left it; saved once it is durable.
                snapshot = self._cell.journal.encode_snapshot(self.instance)
            self._unsent += recorded
        self._turns.append(_Turn(reply, value, error, snapshot))
        self._unsent_turns += 1
        if self._ready_to_send():
            self._send()

    async def wait_room(self) -> None:
        """Wait while ``depth`` messages are unconfirmed (or until an append fails)."""
        while len(self._turns) >= self.depth and self.failure is None:
            await self._wait()

    async def settle(self) -> None:
        """Wait until every handled message is confirmed, or an append failed and every append in
        flight has finished (so that the log no longer moves).

        Raises:
            StoreError, OwnershipLost: an append failed (the incarnation must end).
        """
        while (self._turns or self._running) and self.failure is None:
            await self._wait()
        if self.failure is not None:
            while self._running:
                await self._wait()
            raise self.failure

    async def _wait(self) -> None:
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = anyio.Event()
        await waiter.wait()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.set()

    # -- appends ---------------------------------------------------------------------------------

    def _ready_to_send(self) -> bool:
        """Whether the turns not sent yet should go to the store now.

        With nothing in flight, at once. Behind an append in flight, only once the depth is full,
        when the actor can add nothing more to them: sent at the first turn, a few turns took a
        commit of their own while the rest of the depth waited behind them (at depth 64 batches of
        32, 32, 1, 31, 32, 1 ...: one commit in three nearly empty, 43,000 events/s against 60,000
        now; bench/README.md, issue 14). Queued when full, the next append is in the store's hands
        before the one in flight is done, so the store does not wait for the event loop either.
        """
        if not self._unsent_turns:
            return False
        appends = self._appends
        if not appends:
            return True
        return len(appends) < _MAX_APPENDS and appends[-1].entered and len(self._turns) >= self.depth

    def _send(self) -> None:
        """Send the turns not sent yet as one append (or confirm them, if they recorded nothing
        behind nothing in flight)."""
        turns, self._unsent_turns = self._unsent_turns, 0
        events, self._unsent = self._unsent, []
        if not events:
            appends = self._appends
            if appends:
                appends[-1].turns += turns  # nothing to write: confirmed with the append before
            else:
                self._confirm(turns)
            return
        append = _Append(turns, len(events))
        self._appends.append(append)
        expected, self._sent = self._sent, self._sent + len(events)
        self._running += 1
        self._cell.host.spawn(self._append, append, expected, events)

    async def _append(self, append: _Append, expected: int, events: list[EventData]) -> None:
        cell = self._cell
        # The store must get the appends in order (the second expects the first's version). This
        # task calls it without yielding first, and only this task may send the next append: it is
        # spawned now, so it starts once this one has handed its events to the store.
        append.entered = True
        if self._ready_to_send():
            self._send()
        began = perf_counter()
        try:
            append.version = await cell.host.store.append(cell.id, expected, events)
        except Exception as exc:
            append.error = exc
        except BaseException:
            # Cancelled (a shutdown past its drain timeout): nobody will confirm these turns.
            self._running -= 1
            self._answer_all(cell.refusal)
            self._wake()
            raise
        self._running -= 1
        if append.error is None:
            cell.host.counters.recorded(cell, append.events, perf_counter() - began)
        if self.failure is None:
            self._advance()
            if self._ready_to_send() and self.failure is None:
                self._send()
        self._wake()

    def _advance(self) -> None:
        """Confirm the appends at the front that the store has answered, in order."""
        appends = self._appends
        while appends:
            front = appends[0]
            if front.error is not None:
                self._fail(front.error)
                return
            if front.version is None:
                return
            appends.popleft()
            self.durable = front.version
            self._confirm(front.turns)

    def _confirm(self, count: int) -> None:
        """The oldest ``count`` turns are durable: answer them in order, save their snapshots."""
        turns = self._turns
        spawn = self._cell.host.spawn
        for _ in range(count):
            turn = turns.popleft()
            reply = turn.reply
            if reply is not None:
                if turn.error is None:
                    reply.send(turn.value)
                else:
                    reply.fail(turn.error)
            if turn.snapshot is not None:
                spawn(self._cell.journal.save_snapshot, turn.snapshot)

    def fail(self, exc: Exception) -> None:
        """An append failed: every unconfirmed caller gets SessionCrashed; the actor must crash."""
        if self.failure is None:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        # Refused because another node owns the session now (OwnershipLost), the callers get that
        # error itself, as at depth 1, so that they can go to the new owner.
        cell = self._cell
        error: StoreError | OwnershipLost
        if isinstance(exc, StoreError | OwnershipLost):
            error = exc
        else:
            error = StoreError(cell.id, "append", f"{type(exc).__name__}: {exc}")
            error.__cause__ = exc
        logger.error(
            "session %r: an append of %d messages' events failed; the session restarts from its log: %s",
            cell.id,
            len(self._turns),
            error,
        )
        self.failure = error
        cell.version = self.durable  # what the log holds: the next incarnation starts from there
        if isinstance(error, OwnershipLost):
            self._answer_all(lambda: copy.copy(error))
        else:
            self._answer_all(lambda: _crashed(cell.id, error))
        mailbox: Mailbox[Envelope] | None = cell.mailbox
        if mailbox is not None:
            mailbox.nudge()  # an actor parked on an empty mailbox must see it and crash

    def _answer_all(self, error: Any) -> None:
        turns, self._turns = self._turns, deque()
        self._appends.clear()
        self._unsent = []
        self._unsent_turns = 0
        for turn in turns:
            if turn.reply is not None:
                turn.reply.fail(error())


def _crashed(session_id: str, exc: BaseException) -> SessionCrashed:
    err = SessionCrashed(session_id, exc)
    err.__cause__ = exc
    return err
