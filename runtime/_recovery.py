"""Bringing a session back: its state rebuilt from the store, restarts after crashes, quarantine.

A crashed session restarts (after its backoff) until its restart budget is spent; then, or when its
log cannot be replayed at all, it is quarantined as ``FAILED`` and its siblings never notice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.lowlevel

from ._exceptions import CorruptEventLog, RecoveryFailed, SessionError, ShuttingDown
from ._replay import fold
from ._status import Status

if TYPE_CHECKING:
    from ._cell import SessionCell
    from ._records import StoredSession
    from ._session import Session
    from .abc import EventStore

__all__ = ["ViewLoader", "quarantine_corrupt", "recover", "restart_after"]

logger = logging.getLogger(__name__)

_BATCH = 64
"""The most sessions one ``load_sessions`` reads."""


class _Wait:
    __slots__ = ("done", "error", "view")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.view: StoredSession | None = None
        self.error: BaseException | None = None


@final
class ViewLoader:
    """Reads what recoveries need, the recoveries waiting at the same time in one store call.

    A recovery is one read (``EventStore.load_session``: entry, snapshot, log, reminders). When many
    run at once (10,000 resumed at start-up), each read was a trip to a worker thread, and the
    threads fought over the interpreter; a store with ``load_sessions`` (the three stores here)
    reads every waiting session in one trip, up to 64 (a recovery waiting alone is read with
    ``load_session``, at once, without a hop through the loader). A store without it is asked one
    by one.
    One loader per host, its loop a task of the host.
    """

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._waiting: dict[bool, list[tuple[str, _Wait]]] = {True: [], False: []}
        self._wake: anyio.Event | None = None
        self._in_flight = 0
        """Reads under way, made by recoveries themselves or by the loader."""
        self.reads = 0
        """Store calls made (``load_sessions`` or ``load_session``)."""

    @property
    def batched(self) -> bool:
        """Whether the store reads several sessions at once (then ``run`` must run)."""
        return callable(getattr(self.store, "load_sessions", None))

    def _batch(self) -> Callable[..., Awaitable[Sequence[StoredSession | None]]]:
        # Looked up at each read, not bound once: a store wrapper may swap what it wraps.
        batch: Callable[..., Awaitable[Sequence[StoredSession | None]]] = self.store.load_sessions  # type: ignore[attr-defined]
        return batch

    async def load(self, session_id: str, after_snapshot: bool) -> StoredSession | None:
        """The session's view, read alone or with the others waiting meanwhile.

        With no read in flight and none waiting, the recovery reads at once itself (a crash
        restarts without two hops through the loader's task); those that come while a read is in
        flight wait and are read together.
        """
        if self._wake is None or not (self._in_flight or self._waiting[True] or self._waiting[False]):
            self.reads += 1
            self._in_flight += 1
            try:
                return await self.store.load_session(session_id, after_snapshot=after_snapshot)
            finally:
                self._in_flight -= 1
        wait = _Wait()
        self._waiting[after_snapshot].append((session_id, wait))
        self._wake.set()
        await wait.done.wait()
        if wait.error is not None:
            raise wait.error
        return wait.view

    async def run(self) -> None:
        """Serve the waiting recoveries until cancelled (the host's task; only if ``batched``)."""
        try:
            while True:
                self._wake = wake = anyio.Event()
                if not (self._waiting[True] or self._waiting[False]):
                    await wake.wait()
                for after_snapshot, waiting in self._waiting.items():
                    while waiting:
                        taken, waiting[:] = waiting[:_BATCH], waiting[_BATCH:]
                        await self._read(self._batch(), after_snapshot, taken)
                await anyio.lowlevel.checkpoint()
        finally:
            self._wake = None
            for waiting in self._waiting.values():
                for _, wait in waiting:
                    wait.error = ShuttingDown()
                    wait.done.set()
                waiting.clear()

    async def _read(
        self,
        batch: Callable[..., Awaitable[Sequence[StoredSession | None]]],
        after_snapshot: bool,
        taken: list[tuple[str, _Wait]],
    ) -> None:
        self.reads += 1
        self._in_flight += 1
        try:
            if len(taken) == 1:  # alone: the ordinary read (what a store wrapper may watch)
                views: Sequence[StoredSession | None] = [
                    await self.store.load_session(taken[0][0], after_snapshot=after_snapshot)
                ]
            else:
                views = await batch([sid for sid, _ in taken], after_snapshot=after_snapshot)
        except BaseException as exc:
            # A store failure goes to each of its recoveries; a cancellation (the host closing)
            # is the loader's own: they are told the host is shutting down.
            for _, wait in taken:
                wait.error = exc if isinstance(exc, Exception) else ShuttingDown()
                wait.done.set()
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._in_flight -= 1
        for (_, wait), view in zip(taken, views, strict=True):
            wait.view = view
            wait.done.set()


async def recover(cell: SessionCell, instance: Session[Any]) -> None:
    """Rebuild ``instance``'s state from the snapshot and the tail of the log.

    Raises:
        CorruptEventLog, RecoveryFailed: the log cannot be replayed (quarantine, do not restart).
    """
    host = cell.host
    sid = cell.id
    journal = cell.journal
    async with host.recovery_limiter:
        started = host.clock.now()
        trusted = host.snapshots.trusted(cell.cls)  # a refused class recovers from its log alone
        # One read: the index entry, the snapshot, the log after it and the reminders, in one view,
        # shared with the recoveries running meanwhile (``args`` never change: the cell's serve).
        try:
            state = instance.initial_state(cell.args)
        except Exception as exc:
            raise RecoveryFailed(sid, 0, exc) from exc
        view = await host.views.load(sid, trusted)
        done = await fold(host.store, sid, state, instance, host.events, view)
        record = done.record
        assert record is not None  # replay read it (CorruptEventLog when it is gone)
        kept = done.reminders
        if kept is None:  # a store that does not read them with the log
            kept = await host.store.reminders(sid)
        cell.reminders = {r.name: r for r in kept} if kept else None
        for reminder in kept:  # due here now (a session taken over from a dead node, say)
            host.reminder_scheduler.add(reminder)
        if done.snapshot_rejected == "decode":
            host.counters.snapshot_failure(cell, "decode")
        journal.adopt(instance, done.state, done.version)
        journal.snapshot_version = done.snapshot_version
        if host.measure_states:
            journal.measure(done.state)
        if record.status is not cell.status and not cell.status.terminal:
            if record.status is not Status.PASSIVATED:
                host.statuses.take(cell, record.status)
        host.counters.recovery(cell, "ok", done.replayed, host.clock.now() - started)
    every = cell.cls.snapshot_every
    if every is not None and done.replayed > every:
        # A long replay: snapshot now so that the next recovery is short.
        journal.snapshot_soon(instance)


async def restart_after(cell: SessionCell, crash: BaseException, in_recovery: bool) -> bool:
    """Wait out the backoff and return ``True``, or quarantine the session and return ``False``."""
    host = cell.host
    clock = host.clock
    now = clock.now()
    window = cell.restart_window
    if window is None:
        window = cell.restart_window = host.restarts.window()
    delay = host.restarts.restart_delay(window, now)
    if delay is None:
        await _quarantine_exhausted(cell, crash, in_recovery)
        return False
    cell.restarts += 1
    host.counters.restarted(cell, type(crash).__name__)
    if delay > 0:
        await clock.sleep_until(now + delay)
    return True


async def _quarantine_exhausted(cell: SessionCell, crash: BaseException, in_recovery: bool) -> None:
    reason = (
        f"restart limit reached after {cell.restarts} restarts (last crash: {type(crash).__name__}: {crash})"
    )
    logger.error("session %r quarantined as FAILED: %s", cell.id, reason)
    statuses = cell.host.statuses
    # The index keeps why, for later processes and the command line (issue 13).
    error_type = type(crash).__name__
    if in_recovery:
        # It could not even be read back: leave the log as it is, mark only the index.
        await statuses.mark(cell, Status.FAILED, reason, error_type=error_type)
    else:
        await statuses.record(cell, Status.FAILED, reason, required=False, error_type=error_type)
    cell.host.counters.quarantine(cell)


async def quarantine_corrupt(cell: SessionCell, error: SessionError) -> None:
    """The log cannot be replayed: ``FAILED`` in the index only, the log itself is never touched."""
    logger.error("session %r quarantined as FAILED: %s", cell.id, error)
    outcome = "corrupt" if isinstance(error, CorruptEventLog) else "failed"
    cell.host.counters.recovery(cell, outcome, 0, 0.0)
    cell.error = error
    await cell.host.statuses.mark(cell, Status.FAILED, str(error), error_type=type(error).__name__)
    cell.host.counters.quarantine(cell)
