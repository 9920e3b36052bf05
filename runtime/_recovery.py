"""Bringing a session back: its state rebuilt from the store, restarts after crashes, quarantine.

A crashed session restarts (after its backoff) until its restart budget is spent; then, or when its
log cannot be replayed at all, it is quarantined as ``FAILED`` and its siblings never notice.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._exceptions import CorruptEventLog, SessionError
from ._replay import replay
from ._status import Status

if TYPE_CHECKING:
    from ._cell import SessionCell
    from ._session import Session

__all__ = ["quarantine_corrupt", "recover", "restart_after"]

logger = logging.getLogger(__name__)


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
        record = await host.store.get(sid)
        if record is None:
            raise CorruptEventLog(sid, 0, "the session is no longer in the store's index")
        trusted = host.snapshots.trusted(cell.cls)  # a refused class recovers from its log alone
        done = await replay(host.store, record, instance, host.events, use_snapshot=trusted)
        kept = await host.store.reminders(sid)
        cell.reminders = {r.name: r for r in kept} if kept else None
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
