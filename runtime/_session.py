"""The ``Session`` behaviour (a GenServer whose state is a fold of its events) and its helpers."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, final

import anyio.lowlevel

from . import _reminders
from ._exceptions import HandlerMisuse
from ._park import Parking
from ._timers import TimerHandle

if TYPE_CHECKING:
    from ._cell import SessionCell
    from ._ref import SessionRef

__all__ = ["NoReply", "Reply", "Session"]

S = TypeVar("S")

logger = logging.getLogger(__name__)


@final
class _NoReplyType:
    """The type of :data:`NoReply`."""

    _instance: ClassVar[_NoReplyType | None] = None

    def __new__(cls) -> _NoReplyType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NoReply"


NoReply = _NoReplyType()
"""Returned by ``handle_call`` after ``defer_reply()``: the answer is sent later through the reply."""


@final
class Reply(Parking):
    """A pending answer to one call. ``defer_reply()`` hands it out; any task may complete it once.

    The caller waits on it parked on a bare future (asyncio) or as a parked task (trio): an
    ``anyio.Event`` per call cost a tenth of a call round trip.

    .. versionadded:: 0.1
    """

    __slots__ = ("_error", "_value", "done", "session_id")

    def __init__(self, session_id: str, *, trio: bool | None = None) -> None:
        self.session_id = session_id
        Parking.__init__(self, trio)  # which backend the caller parks on (found when it waits)
        self._value: object = None
        self._error: BaseException | None = None
        self.done = False
        """Whether the reply was sent or failed already."""

    def send(self, value: object) -> bool:
        """Answer the caller with ``value``. Returns ``False`` (and does nothing) if answered already.

        A caller that timed out is gone: the value is dropped.
        """
        if self.done:
            return False
        self.done = True
        self._value = value
        if self._parked is not None:
            self._wake()
        return True

    def fail(self, error: BaseException) -> bool:
        """Make the caller's ``call`` raise ``error``. Returns ``False`` if answered already."""
        if self.done:
            return False
        self.done = True
        self._error = error
        if self._parked is not None:
            self._wake()
        return True

    def wait(self) -> Awaitable[None]:
        """Wait until the reply is sent or failed (the caller's side; one waiter): ``await reply.wait()``."""
        # Not ``async def``: the park is awaited directly, one coroutine less per call.
        if self.done:
            return anyio.lowlevel.checkpoint()
        return self.park()

    def unwrap(self) -> object:
        """The value sent, or raise the error failed with (once the reply is done)."""
        error, self._error = self._error, None
        if error is not None:
            try:
                raise error
            finally:
                del error  # no frame -> traceback -> frame cycle per failed call
        return self._value

    def __repr__(self) -> str:
        state = "done" if self.done else "pending"
        return f"<Reply to a call on {self.session_id!r}, {state}>"


class Session(Generic[S]):
    """A session: a task-actor whose state is rebuilt from its own event log.

    Subclass it and override the callbacks. The runtime creates a fresh instance (with no arguments)
    whenever the session starts, restarts after a crash, or is reactivated after passivation; all
    state that must survive lives in ``self.state``, which only ``record`` changes.

    Class attributes configure it: ``snapshot_every`` (events between snapshots; ``None`` for no
    snapshot at all, not even on shutdown or passivation: a recovery then replays the whole log),
    ``state_version`` (bump when the state's shape changes; older snapshots are then ignored),
    ``mailbox_size``, ``type_name`` (how the type is stored; defaults to the class name),
    ``state_type`` (what snapshots decode into when the class has no type parameter: the type
    parameter of ``class Room(Session[RoomState])`` wins, and without either the type of
    ``initial_state``'s result is used), and ``transitions`` (an optional state machine over
    ``label(state)``, see ``record``), ``pipeline_depth`` (how many handled messages may wait for
    their events to be committed while the session takes the next one; 1, the default, takes none:
    see ``record``) and ``resume_on_start`` (activate such sessions that were
    running when the last process stopped, as soon as the supervisor starts; ``self.resumed`` is
    then true in ``on_start``).

    A state whose snapshot would not come back equal, of the same types, is never used: its class
    is refused snapshots (``SnapshotRefused``, logged once) and its sessions recover from the log.

    .. versionadded:: 0.1
    """

    snapshot_every: ClassVar[int | None] = 100
    state_version: ClassVar[int] = 1
    mailbox_size: ClassVar[int] = 1000
    type_name: ClassVar[str | None] = None
    state_type: ClassVar[type[Any] | None] = None
    transitions: ClassVar[Mapping[tuple[str, str], str]] = {}
    resume_on_start: ClassVar[bool] = False
    idempotency_keys_kept: ClassVar[int] = 1000
    """How many idempotency keys (with their replies) each session keeps, the newest."""
    pipeline_depth: ClassVar[int] = 1
    """Pipelined persistence (issue 14): with N > 1, ``record`` applies the events at once and the
    session takes the next message while those of up to N handled messages are being committed
    (together, in as few appends as can be). Each reply still waits for its own events, and those
    of every message before it, to be durable. Handlers see state that is not durable yet; an
    append failure crashes the session, failing every caller whose events were not durable.

    .. versionadded:: 0.2
    """

    _cell: SessionCell
    _state: S
    _version: int = -1  # not recovered yet
    _resumed: bool = False

    # -- callbacks ------------------------------------------------------------------------------

    def initial_state(self, args: Mapping[str, Any]) -> S:
        """The state before any event, from the ``args`` given to ``start``. Must be pure."""
        raise NotImplementedError(f"{type(self).__qualname__} must define initial_state(self, args) -> state")

    def apply(self, state: S, event: object) -> S:
        """The state after ``event``. Pure and deterministic: used live and on every replay."""
        return state

    def label(self, state: S) -> str:
        """The state-machine label of ``state``, for ``transitions`` (override with them)."""
        return type(state).__name__

    async def handle_call(self, message: object) -> object:
        """Answer a ``call``; the return value is the reply (``NoReply`` after ``defer_reply``)."""
        raise NotImplementedError(
            f"session {self.id!r} ({type(self).__qualname__}) got a call it does not handle: "
            f"{message!r}; define handle_call"
        )

    async def handle_cast(self, message: object) -> None:
        """Handle a ``cast`` (no reply)."""
        raise NotImplementedError(
            f"session {self.id!r} ({type(self).__qualname__}) got a cast it does not handle: "
            f"{message!r}; define handle_cast"
        )

    async def handle_info(self, message: object) -> None:
        """Handle a timer message (``send_after``) or a runtime notice. Ignored unless overridden."""
        logger.warning("session %r ignored an info message: %r", self.id, message)

    async def on_start(self) -> None:
        """Runs after recovery, before the first queued message, in every incarnation."""

    async def on_stop(self, reason: str) -> None:
        """Runs once when the session stops: "shutdown", "completed", "failed", a stop reason..."""

    # -- inside callbacks -----------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._cell.id

    @property
    def state(self) -> S:
        """The state folded from every event recorded so far."""
        return self._state

    @property
    def version(self) -> int:
        """How many events the session has recorded (its log's length)."""
        return self._version

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self._cell.metadata

    @property
    def ref(self) -> SessionRef:
        """A reference to this session (to hand to others; calling yourself raises CallCycle)."""
        return self._cell.ref

    def record(self, *events: object) -> Coroutine[Any, Any, int]:
        """Durably append ``events`` (atomically, one group commit), then apply them:
        ``await self.record(...)``.

        The state changes only once the store has acknowledged; returns the new version. With
        ``pipeline_depth`` > 1 the events are applied at once and committed after the handler
        returns, in one append with the other messages' (never split); the reply waits for them.

        Raises:
            InvalidTransition: ``transitions`` does not allow one of the events (nothing recorded).
            UnencodableValue: an event holds what JSON would not give back exactly (NaN, an
                infinity, an int outside ``[-2**63, 2**64)``, an object the codec cannot encode);
                ``path`` names the event type and field (nothing recorded).
            StoreError: the store failed (nothing recorded, state unchanged). Letting any of these
                through the handler answers the caller with it and does not crash the session.
                (Pipelined, a failed append crashes the session instead: the handler has returned
                by then.)
        """
        # Not ``async def``: the journal's coroutine is awaited directly, one coroutine (and one more
        # object for the garbage collector to walk) less per event.
        return self._cell.journal.record(self, events)

    def send_after(self, delay: float, message: object) -> TimerHandle:
        """Deliver ``message`` to ``handle_info`` after ``delay`` seconds (on the runtime's clock).

        Timers belong to this incarnation: a crash or stop cancels them (``on_start`` re-arms).
        """
        return self._cell.send_after(self, delay, message)

    async def schedule(self, name: str, delay: float, message: object) -> None:
        """Deliver ``message`` to ``handle_info`` in ``delay`` seconds, durably.

        The reminder is in the store when this returns, and replaces this session's reminder of
        the same ``name``; called while a reminder is being handled (``handle_info`` of a due
        reminder), it is kept with that turn's append instead, which also removes the reminder that
        fired: until then the fired one stays stored, so a crash delivers it again and the handler
        schedules anew (a periodic reminder costs one write per fire). It survives crashes,
        passivation and process restarts, and activates the session when it is due; one that fell
        due while no process ran fires right after the next start. It is removed in the same append
        as the events its ``handle_info`` records (or on its own when it records none): a handler
        that crashes before recording gets it again. ``message`` is a plain JSON value (str,
        numbers, bool, None, lists, dicts) or an instance of an ``@event`` class. ``send_after``
        stays the cheap timer of one incarnation.

        Raises:
            InvalidReminder: ``name`` is not a non-empty str, ``delay`` is negative or not finite,
                or ``message`` cannot be stored as JSON (the error names the field).
            StoreError: the store failed (no reminder was kept).

        .. versionadded:: 0.2
        """
        await _reminders.schedule(self._cell, name, delay, message)

    async def unschedule(self, name: str) -> bool:
        """Remove the reminder ``name`` (durably); ``False`` if there was none.

        .. versionadded:: 0.2
        """
        return await _reminders.unschedule(self._cell, name)

    @property
    def reminders(self) -> Mapping[str, float]:
        """This session's reminders: each name and the seconds until it is due, earliest first.

        .. versionadded:: 0.2
        """
        return _reminders.seconds_left(self._cell)

    @property
    def resumed(self) -> bool:
        """Whether this incarnation was activated at start-up because the session was running when
        the last process stopped (``resume_on_start``); true only in that first incarnation.

        .. versionadded:: 0.2
        """
        return self._resumed

    def defer_reply(self) -> Reply:
        """Take over the reply to the call being handled; return ``NoReply`` and answer later.

        Raises:
            HandlerMisuse: called outside ``handle_call``.
        """
        reply = self._cell.take_reply()
        if reply is None:
            raise HandlerMisuse(self.id, "defer_reply()", "is only possible inside handle_call")
        return reply

    async def complete(self, result: object = None) -> None:
        """End the session as ``COMPLETED`` with ``result``, after the current message."""
        await self._cell.finish(self, "completed", result)

    async def fail(self, reason: str) -> None:
        """End the session as ``FAILED`` (a business failure, not a crash), after this message."""
        await self._cell.finish(self, "failed", reason)

    def stop(self, reason: str = "normal") -> None:
        """End the session as ``STOPPED`` once the current message is handled."""
        self._cell.request_stop(self, reason)

    def __repr__(self) -> str:
        cell = getattr(self, "_cell", None)
        who = repr(cell.id) if cell is not None else "unbound"
        return f"<{type(self).__qualname__} session {who}>"
