"""Durable reminders: how ``Session.schedule`` checks and encodes them, and the scheduler that fires them.

A reminder is kept in the store before ``schedule`` returns (``EventStore.set_reminder``), with its due
time on the wall clock, so that it means the same in the next process. Each host runs one
:class:`ReminderScheduler`: it takes the next due reminders from the store's index by due time (a few
at a time, never every session's) plus the ones scheduled in this process, sleeps until the earliest,
and hands each to the host for delivery to its session's ``handle_info``, activating the session if
needed. The session removes a reminder in the same append as the events its handler records (or in an
append of its own when it records none); until then the reminder stays in the store, so a crash or a
dead process makes it fire again: at least once, never silently lost.
"""

from __future__ import annotations

import enum
import heapq
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, final

import anyio
import attrs
from anyio.abc import TaskStatus

from ._clock import AnyioClock
from ._events import check_value, unstructure
from ._exceptions import InvalidReminder, OwnershipLost, UnencodableValue, UnknownEventType, describe_value
from ._records import Reminder

if TYPE_CHECKING:
    from ._cell import SessionCell
    from ._events import EventRegistry
    from ._session import Session
    from .abc import Clock, EventStore

__all__ = [
    "Delivery",
    "DueReminder",
    "ReminderScheduler",
    "check_reminder",
    "decode_message",
    "encode_message",
    "fired_removed",
    "refire",
    "remind",
    "schedule",
    "scheduled_with",
    "seconds_left",
    "unschedule",
]

logger = logging.getLogger(__name__)


class Delivery(enum.Enum):
    """What became of a reminder handed to the host."""

    QUEUED = "queued"
    """In the session's mailbox: the session removes it once its handler has recorded."""
    GONE = "gone"
    """The session is ended or no longer stored: the reminder can never fire (removed)."""
    LATER = "later"
    """The session takes no message now (paused): try again later."""
    STALE = "stale"
    """The session has replaced or removed that reminder since, or another node owns it now: nothing
    to do here."""


@final
@attrs.frozen
class DueReminder:
    """The envelope message that carries a due reminder to its session's actor."""

    reminder: Reminder


# -- checks and the codec -------------------------------------------------------------------------


def check_reminder(session_id: str, name: object, delay: object) -> float:
    """The delay as a float, or ``InvalidReminder`` naming what is wrong with ``name`` or ``delay``."""
    if not isinstance(name, str) or not name:
        raise InvalidReminder(session_id, name, "name", f"must be a non-empty str, not {name!r}")
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise InvalidReminder(session_id, name, "delay", f"must be a number of seconds, not {delay!r}")
    seconds = float(delay)
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidReminder(session_id, name, "delay", f"must be finite and >= 0, not {delay!r}")
    return seconds


def encode_message(registry: EventRegistry, session_id: str, name: str, message: object) -> str:
    """The reminder's message as JSON text: a registered event type, or a plain JSON value.

    Raises:
        InvalidReminder: the message (or the value at the field it names) cannot be stored as
            JSON and read back exactly (``check_value``): an unregistered class, a NaN or infinity,
            an integer outside ``[-2**63, 2**64)``, a set, bytes...
    """
    if attrs.has(type(message)):
        try:
            entry = registry.lookup(type(message))
        except UnknownEventType:
            raise InvalidReminder(
                session_id,
                name,
                "message",
                f"is a {type(message).__qualname__}, which is not registered: decorate it with "
                "@event (or send a plain JSON value)",
            ) from None
        _check(session_id, name, message)
        payload: object = {"type": entry.name, "version": entry.version, "data": unstructure(message)}
    else:
        _check(session_id, name, message)
        payload = {"json": message}
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except TypeError as exc:  # a plain message holding what only the codec encodes (a set, an Enum)
        raise InvalidReminder(
            session_id,
            name,
            "message",
            f"is not plain JSON ({exc}); use str, numbers, bool, None, lists, dicts or an @event class",
        ) from exc


def decode_message(registry: EventRegistry, text: str) -> object:
    """A stored reminder message back as the object ``schedule`` was given (an equal one)."""
    payload = json.loads(text)
    if "json" in payload:
        return payload["json"]
    return registry.structure(payload["type"], payload["version"], payload["data"])


def _check(session_id: str, name: str, message: object) -> None:
    """The codec's check, its refusal as ``InvalidReminder`` naming the field (``message['at']``)."""
    try:
        check_value(message, "message")
    except UnencodableValue as exc:
        raise InvalidReminder(
            session_id, name, exc.path, f"is {describe_value(exc.value)}: {exc.reason}"
        ) from exc


# -- the scheduler --------------------------------------------------------------------------------

_Key = tuple[str, str, float, str]
"""A reminder as the scheduler keeps it: ``(session_id, name, due_at, message)``."""


def _key(reminder: Reminder) -> _Key:
    return (reminder.session_id, reminder.name, reminder.due_at, reminder.message)


@final
class ReminderScheduler:
    """Fires the due reminders of one host's sessions, from the store's due-time index.

    Args:
        store: where reminders are kept.
        clock: the runtime's clock, for sleeping.
        wall: the wall clock reminders are due on (seconds since the epoch).
        deliver: hands a due reminder to its session (``Delivery`` says what became of it).
        horizon: how far ahead (seconds) each read of the store looks.
        batch: the most reminders taken from the store per read.
        retry_after: seconds before a reminder whose session took no message (paused) is tried again.
    """

    def __init__(
        self,
        store: EventStore,
        clock: Clock,
        wall: Callable[[], float],
        deliver: Callable[[Reminder], Awaitable[Delivery]],
        *,
        horizon: float = 30.0,
        batch: int = 1000,
        retry_after: float = 1.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.wall = wall
        self.deliver = deliver
        self.horizon = horizon
        self.batch = batch
        self.retry_after = retry_after
        # Plain tuples of str and float, never the Reminder itself: the collector stops tracking
        # them, so that 10,000 fires a second do not fill its oldest generation (full passes of
        # tens of milliseconds, every few seconds, were the lateness's p99). ``_known`` maps each
        # key to its Reminder, handed over as it is (not made anew per fire).
        self._heap: list[tuple[float, int, _Key]] = []
        self._staged: dict[str, dict[str, tuple[Reminder, Reminder | None]]] = {}
        """Reminders scheduled by reminder turns whose append is not durable yet, per session."""
        self._known: dict[_Key, Reminder] = {}
        """Reminders in the heap or delivered and not settled yet: each is handed over once."""
        self._seq = 0
        self._read_until = -math.inf
        """The store was read up to this due time; later ones come from the next read."""
        self._next_read = -math.inf
        """When (wall clock) the store is read next."""
        self.reads = 0
        """Reads of the store's due reminders so far."""
        self._wake: anyio.Event | None = None
        self._next_wake = math.inf
        self.loaded = anyio.Event()
        """Set once the first read of the store is done (``ready``)."""
        self.fired = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, reminder: Reminder) -> None:
        """A reminder scheduled in this process (it is in the store already)."""
        key = _key(reminder)
        if key in self._known:
            return
        self._known[key] = reminder
        self._seq += 1
        heapq.heappush(self._heap, (reminder.due_at, self._seq, key))
        if reminder.due_at < self._next_wake and self._wake is not None:
            self._wake.set()

    def stage(self, reminder: Reminder, before: Reminder | None) -> None:
        """``reminder`` was scheduled by a reminder's turn: it is kept with the turn's append
        (``before`` is the session's reminder of that name it replaces, if any)."""
        turn = self._staged.get(reminder.session_id)
        if turn is None:
            turn = self._staged[reminder.session_id] = {}
        earlier = turn.get(reminder.name)
        turn[reminder.name] = (reminder, before if earlier is None else earlier[1])

    def unstage(self, session_id: str, name: str) -> None:
        """The turn removed reminder ``name`` (durably): what it had scheduled under it is dropped."""
        turn = self._staged.get(session_id)
        if turn is not None:
            turn.pop(name, None)

    def staged(self, session_id: str) -> list[Reminder]:
        """The reminders the session's current turn scheduled, not kept in the store yet."""
        turn = self._staged.get(session_id)
        return [] if not turn else [r for r, _ in turn.values()]

    def commit_staged(self, session_id: str) -> None:
        """The turn's append kept its reminders: they fire from now on."""
        turn = self._staged.pop(session_id, None)
        if turn:
            for reminder, _ in turn.values():
                self.add(reminder)

    def drop_staged(self, session_id: str) -> list[tuple[Reminder, Reminder | None]]:
        """The turn failed: its reminders were never kept; each with the one it would replace."""
        turn = self._staged.pop(session_id, None)
        return [] if not turn else list(turn.values())

    def settled(self, reminder: Reminder) -> None:
        """The session is done with ``reminder`` (removed, or found replaced)."""
        self._known.pop(_key(reminder), None)

    def retry(self, reminder: Reminder, delay: float = 0.0) -> None:
        """Hand ``reminder`` over again (its handler crashed before recording, or it was refused)."""
        key = _key(reminder)
        self._known.pop(key, None)
        if delay <= 0:
            self.add(reminder)
            return
        self._known[key] = reminder
        self._seq += 1
        # Kept under its own due time, tried again at ``wall() + delay``.
        heapq.heappush(self._heap, (self.wall() + delay, self._seq, key))
        if self._wake is not None:
            self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> NoReturn:
        """Read, sleep, fire; a failing store read is logged and tried again a second later."""
        task_status.started()
        while True:
            try:
                await self._loop()
            except Exception:
                logger.exception("the reminder scheduler failed; trying again in a second")
                self.loaded.set()  # ready() must not wait for a store that fails
                await self.clock.sleep_until(self.clock.now() + 1.0)

    async def _read(self, now: float) -> None:
        until = now + self.horizon
        found = await self.store.due_reminders(until, limit=self.batch)
        known = len(self._known)
        for reminder in found:
            self.add(reminder)
        self.reads += 1
        if len(found) >= self.batch:
            # A full batch may have left later ones behind: read again once the heap has reached
            # the last one taken. If the read brought nothing new (those due are all being
            # handled), not at once: the same ones would come back until their sessions are done.
            self._read_until = found[-1].due_at
            gap = self.retry_after / 10 if len(self._known) == known else 0.0
            self._next_read = max(self._read_until, now + gap)
        else:
            # Everything due within the horizon is in the heap, and what this process schedules
            # joins it directly: the store is read again halfway through (for what other
            # processes left there), never once per fire.
            self._read_until = until
            self._next_read = now + self.horizon / 2
        self.loaded.set()

    async def _loop(self) -> NoReturn:
        while True:
            if self.wall() >= self._next_read:
                await self._read(self.wall())
            heap = self._heap
            while heap and heap[0][0] <= self.wall():
                _, _, key = heapq.heappop(heap)
                reminder = self._known.get(key)
                await self._hand_over(Reminder(*key) if reminder is None else reminder)
            target = min(heap[0][0] if heap else math.inf, self._next_read)
            await self._sleep_until_wall(target)

    async def _hand_over(self, reminder: Reminder) -> None:
        try:
            outcome = await self.deliver(reminder)
        except Exception:
            logger.exception("reminder %r of session %r: delivery failed", reminder.name, reminder.session_id)
            outcome = Delivery.LATER
        if outcome is Delivery.QUEUED:
            self.fired += 1
        elif outcome is Delivery.LATER:
            self.retry(reminder, self.retry_after)
        elif outcome is Delivery.STALE:
            self._known.pop(_key(reminder), None)
        else:
            self._known.pop(_key(reminder), None)
            try:
                await self.store.remove_reminder(reminder.session_id, reminder.name)
            except OwnershipLost:  # another node took the session over: the reminder is its to handle
                logger.debug("reminder %r of %r: owned elsewhere now", reminder.name, reminder.session_id)
            except Exception:
                logger.exception(
                    "reminder %r of session %r: could not remove it", reminder.name, reminder.session_id
                )

    async def _sleep_until_wall(self, target: float) -> None:
        self._next_wake = target
        wake = self._wake = anyio.Event()
        try:
            if target == math.inf:
                await wake.wait()
                return
            delay = max(0.0, target - self.wall())
            if isinstance(self.clock, AnyioClock):
                # anyio's own clock: a cancel scope's deadline, cheaper than an alarm task per
                # sleep (the scheduler sleeps once per distinct due time).
                with anyio.move_on_after(delay):
                    await wake.wait()
                return
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._alarm, self.clock.now() + delay, wake)
                await wake.wait()
                tg.cancel_scope.cancel()
        finally:
            self._wake = None
            self._next_wake = math.inf

    async def _alarm(self, deadline: float, wake: anyio.Event) -> None:
        await self.clock.sleep_until(deadline)
        wake.set()


# -- a session's side -----------------------------------------------------------------------------


async def schedule(cell: SessionCell, name: object, delay: object, message: object) -> Reminder:
    """``Session.schedule``: check, encode, store (durable on return), then tell the scheduler.

    Bad input raises ``InvalidReminder``; like ``InvalidTransition``, letting it through the handler
    answers the caller with it and does not crash the session (nothing was stored).
    """
    host = cell.host
    try:
        seconds = check_reminder(cell.id, name, delay)
        assert isinstance(name, str)
        text = encode_message(host.events, cell.id, name, message)
    except InvalidReminder as exc:
        cell.journal.record_error = exc
        raise
    reminder = Reminder(cell.id, name, host.wall() + seconds, text)
    kept = cell.reminders
    scheduler = host.reminder_scheduler
    if cell.fired is not None:
        # A reminder's turn: the new one goes in the turn's append. The fired reminder stays in
        # the store until that append, so if it is lost the turn runs again and schedules anew.
        scheduler.stage(reminder, None if kept is None else kept.get(name))
    else:
        await host.store.set_reminder(reminder)
        scheduler.add(reminder)
    if kept is None:
        kept = cell.reminders = {}
    kept[name] = reminder
    return reminder


async def unschedule(cell: SessionCell, name: object) -> bool:
    """``Session.unschedule``: remove the reminder from the store; whether there was one."""
    if not isinstance(name, str) or not name:
        err = cell.journal.record_error = InvalidReminder(
            cell.id, name, "name", f"must be a non-empty str, not {name!r}"
        )
        raise err
    kept = cell.reminders
    had = kept is not None and name in kept
    host = cell.host
    await host.store.remove_reminder(cell.id, name)
    host.reminder_scheduler.unstage(cell.id, name)
    if kept is not None:
        kept.pop(name, None)
    return had


def seconds_left(cell: SessionCell) -> dict[str, float]:
    """``Session.reminders``: each reminder's name and the seconds until it is due (0 if overdue)."""
    kept = cell.reminders
    if not kept:
        return {}
    now = cell.host.wall()
    return {name: max(0.0, r.due_at - now) for name, r in sorted(kept.items(), key=lambda i: i[1].due_at)}


async def remind(cell: SessionCell, instance: Session[Any], reminder: Reminder) -> None:
    """Hand a due reminder to ``handle_info``; remove it with what the handler records."""
    host = cell.host
    kept = cell.reminders
    if kept is None or kept.get(reminder.name) != reminder:
        host.reminder_scheduler.settled(reminder)  # replaced or removed since it was read
        return
    message = decode_message(host.events, reminder.message)
    cell.fired = reminder
    host.metrics.reminder_fired(cell.cls.type_name or cell.cls.__name__, host.wall() - reminder.due_at)
    await instance.handle_info(message)
    if cell.fired is not reminder:
        return  # removed with what the handler recorded (and what it scheduled kept)
    scheduler = host.reminder_scheduler
    staged = scheduler.staged(cell.id)
    if staged and len(staged) == 1 and staged[0].name == reminder.name:
        # Scheduled again under its name and nothing recorded (a periodic reminder): the new
        # one replaces the one that fired in one write, which removes it as well.
        await host.store.set_reminder(staged[0])
        fired_removed(cell, reminder)
    elif staged:
        if not cell.status.terminal:
            await cell.journal.append_nothing(instance)  # the fired one and the new ones
    elif kept.get(reminder.name) != reminder:
        # Removed by the handler (``unschedule``): nothing left to remove.
        cell.fired = None
        scheduler.settled(reminder)
    elif not cell.status.terminal:
        # The handler recorded nothing: the reminder goes in an append of its own.
        await cell.journal.append_nothing(instance)


def scheduled_with(cell: SessionCell) -> tuple[Reminder, ...]:
    """The reminders the turn being recorded scheduled, to keep in its append (``AppendExtras``)."""
    return tuple(cell.host.reminder_scheduler.staged(cell.id))


def fired_removed(cell: SessionCell, reminder: Reminder) -> None:
    """The append that removes the reminder being handled (and keeps those its turn scheduled) is
    durable."""
    cell.fired = None
    kept = cell.reminders
    if kept is not None and kept.get(reminder.name) == reminder:
        del kept[reminder.name]
    scheduler = cell.host.reminder_scheduler
    scheduler.settled(reminder)
    scheduler.commit_staged(cell.id)


def refire(cell: SessionCell) -> None:
    """The turn of a reminder ended without recording (a crash, a failed append): it fires again,
    and what it scheduled is forgotten (the next turn schedules it again)."""
    fired, cell.fired = cell.fired, None
    if fired is not None:
        scheduler = cell.host.reminder_scheduler
        kept = cell.reminders
        for reminder, before in scheduler.drop_staged(cell.id):
            if kept is None:
                break
            if before is None:
                kept.pop(reminder.name, None)
            else:
                kept[reminder.name] = before
        scheduler.retry(fired)
