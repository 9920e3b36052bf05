"""A session's journal: the recording path from ``record`` to the store, and its snapshots.

Everything a session writes goes through its ``Journal``: the events a handler records, the status
events the runtime records for it, and the snapshots that keep recoveries short. The journal is the
only writer of the session's version (``SessionCell.version`` and the live instance's ``version``)
and of the instance's state.

Persist before apply, persist before reply: ``record`` encodes the events and checks them against
the state machine, appends them with the expected version, and only once the store acknowledges
applies them to the live instance. ``in_flight`` counts the appends sent to the store and not yet
acknowledged (at most one today: a handler awaits each ``record``). It is where pipelined
persistence (issue 14) keeps the appends it lets overlap, and what snapshots, passivation and stop
must wait for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar, final

import anyio

from ._events import StatusChanged, encode_state
from ._exceptions import (
    HandlerMisuse,
    InvalidTransition,
    OwnershipLost,
    StoreError,
    UnencodableValue,
)
from ._pipeline import Pipeline
from ._records import AppendExtras, EventData, IdempotentReply, Snapshot
from ._reminders import fired_removed, scheduled_with

if TYPE_CHECKING:
    from ._cell import SessionCell
    from ._session import Session
    from ._status import Status

__all__ = ["Journal"]

logger = logging.getLogger(__name__)

_E = TypeVar("_E", bound=Exception)


def _store_error(session_id: str, exc: Exception) -> StoreError:
    """An append's unexpected exception, as the ``StoreError`` that callers see."""
    return StoreError(session_id, "append", f"{type(exc).__name__}: {exc}")


@final
class Journal:
    """What one session has written and is writing: versions, appends in flight, snapshots."""

    __slots__ = ("cell", "in_flight", "pipeline", "record_error", "snapshot_version", "state_bytes")

    def __init__(self, cell: SessionCell) -> None:
        self.cell = cell
        self.in_flight = 0
        self.pipeline: Pipeline | None = None
        """The live incarnation's pipeline, at ``pipeline_depth`` > 1 (issue 14)."""
        """Appends sent to the store and not acknowledged yet."""
        self.record_error: BaseException | None = None
        """The error the last failed append raised (the caller's, or the store's: not a crash)."""
        self.snapshot_version = 0
        """The version of the newest snapshot known to be saved."""
        self.state_bytes = 0
        """JSON size of the state, estimated (for memory limits)."""

    # -- the state -------------------------------------------------------------------------------

    def adopt(self, instance: Session[Any], state: object, version: int) -> None:
        """Make ``state`` at ``version`` the live instance's (a fresh start or a recovery)."""
        instance._state = state
        instance._version = self.cell.version = version

    def measure(self, state: object) -> None:
        """Estimate the state's JSON size (only when a memory limit needs it)."""
        try:
            self.state_bytes = len(encode_state(state))
        except Exception:
            self.state_bytes = 0

    # -- recording -------------------------------------------------------------------------------

    # -- the pipeline (issue 14) ------------------------------------------------------------------

    def begin(self, instance: Session[Any]) -> Pipeline | None:
        """A new incarnation starts serving: its pipeline, if its class pipelines."""
        depth = self.cell.cls.pipeline_depth
        pipeline = self.pipeline = Pipeline(self.cell, instance, depth) if depth > 1 else None
        return pipeline

    @property
    def unconfirmed(self) -> int:
        """Handled messages whose events (or earlier ones) are not durable yet."""
        pipeline = self.pipeline
        return 0 if pipeline is None else pipeline.unconfirmed

    async def settle(self) -> None:
        """Wait until every event recorded so far is durable (at depth 1 it always is).

        Raises:
            StoreError, OwnershipLost: an append in the pipeline failed (the incarnation must end).
        """
        pipeline = self.pipeline
        if pipeline is not None:
            await pipeline.settle()

    # -- recording -------------------------------------------------------------------------------

    async def record(self, instance: Session[Any], events: Sequence[object]) -> int:
        """``Session.record``: append ``events`` atomically, then apply them; the new version."""
        cell = self.cell
        if instance is not cell.instance:
            raise HandlerMisuse(
                cell.id,
                "record()",
                "called by an incarnation that has ended (a task outliving a crash or stop?); "
                "only the live session may record",
            )
        if self.in_flight:
            raise HandlerMisuse(
                cell.id,
                "record()",
                "is already in progress; record from the session's handlers, one call at a time "
                "(await each record)",
            )
        if not events:
            return instance._version
        host = cell.host
        registry = host.events
        transitions = cell.cls.transitions
        state = instance._state
        encoded: list[EventData] = []
        size = 0
        for ev in events:
            try:
                data = registry.encode(ev)
            except UnencodableValue as exc:
                # The value's fault, as a caller's: nothing recorded, the session carries on.
                refused = UnencodableValue(exc.path, exc.value, exc.reason, session_id=cell.id)
                self.record_error = refused
                raise refused from None
            size += len(data.data)
            if transitions:
                label = instance.label(state)
                if (label, data.type) not in transitions:
                    allowed = tuple(sorted(e for (lb, e) in transitions if lb == label))
                    err = InvalidTransition(cell.id, label, data.type, allowed)
                    self.record_error = err
                    raise err
            state = instance.apply(state, ev)
            encoded.append(data)
        before = instance._version
        pipeline = self.pipeline
        if (
            pipeline is not None
            and pipeline.instance is instance
            and cell.staged is None
            and cell.fired is None
            and host.message_limit is None
        ):
            # Pipelined: applied now, appended after the handler returns, the reply held till then.
            pipeline.add(encoded, before)
            instance._state = state
            version = instance._version = cell.version = before + len(encoded)
            self.state_bytes += size
            return version
        staged = cell.staged
        if staged is not None:
            # An idempotent call: applied now, appended with its reply when the handler returns.
            staged.events += encoded
            instance._state = state
            instance._version = before + len(encoded)
            return instance._version
        began = perf_counter()
        if pipeline is None and cell.fired is None and host.message_limit is None:
            # Depth 1 and nothing to go with the events (``append``'s plain case, inlined: one
            # coroutine less on the path of every recorded event).
            self.in_flight += 1
            try:
                version = await host.store.append(cell.id, before, encoded)
            except (StoreError, OwnershipLost) as exc:  # OwnershipLost: another node owns it now
                self._failed(exc, None)
                raise
            except Exception as exc:
                raise self._failed(_store_error(cell.id, exc), None) from exc
            finally:
                self.in_flight -= 1
        else:
            version = await self.append(before, encoded, None)
        instance._state = state
        instance._version = cell.version = version
        self.state_bytes += size
        host.counters.recorded(cell, len(encoded), perf_counter() - began)
        every = cell.cls.snapshot_every
        if every is not None and version // every != before // every:
            self.snapshot_soon(instance)
        return version

    async def append(
        self,
        expected: int,
        events: list[EventData],
        status: Status | None,
        reply: IdempotentReply | None = None,
    ) -> int:
        """Append to the store after version ``expected``; the store's errors become ``StoreError``.

        With it go, in the same append: the reminder being handled (removed), the events of the
        idempotent call being handled with its ``reply``, the durable message count when there is
        a ``max_messages``, and for a session that ends a deadline due at once (so that the reaper over
        the store looks at it once, for ``retention``).
        """
        cell = self.cell
        host = cell.host
        pipeline = self.pipeline
        if pipeline is not None and (pipeline.instance is not cell.instance or pipeline.failure):
            pipeline = None
        if pipeline is not None:
            # After every event in flight, and with what the turn in progress recorded through
            # the pipeline (in the same append, as the handler wrote them).
            await pipeline.settle()
            recorded = pipeline.take_recorded()
            if recorded:
                expected, events = pipeline.durable, [*recorded, *events]
        fired = cell.fired
        counted = host.message_limit is not None
        staged = cell.staged
        self.in_flight += 1
        try:
            if staged is not None and staged.events:
                # A status change inside an idempotent call takes the call's events along.
                expected, events = staged.version_before, [*staged.events, *events]
            # Due at once (0): whichever clock the next supervisor runs on, it looks at it.
            look_at = 0.0 if status is not None and status.terminal else None
            if fired is None and not counted and reply is None and look_at is None:
                version = await host.store.append(cell.id, expected, events, status=status)
            else:
                extras = AppendExtras(
                    fired=() if fired is None else (fired,),
                    scheduled=() if fired is None else scheduled_with(cell),
                    reply=reply,
                    handled=cell.messages if counted else None,
                    deadline=look_at,
                )
                version = await host.store.append(cell.id, expected, events, status=status, extras=extras)
                if counted:
                    cell.handled_stored = cell.messages
                if fired is not None:
                    fired_removed(cell, fired)
            if staged is not None:
                staged.events = []
                staged.version_before = version
            if pipeline is not None:
                pipeline.durable = version
            return version
        except (StoreError, OwnershipLost) as exc:
            self._failed(exc, pipeline)
            raise
        except Exception as exc:
            raise self._failed(_store_error(cell.id, exc), pipeline) from exc
        finally:
            self.in_flight -= 1

    def _failed(self, err: _E, pipeline: Pipeline | None) -> _E:
        """An append failed with ``err``: the turn's ``record_error`` (not a crash); a pipeline that
        lost an append fails (its state may hold events the log does not: the incarnation crashes)."""
        self.record_error = err
        if pipeline is not None:
            pipeline.fail(err)
        return err

    async def append_nothing(self, instance: Session[Any]) -> None:
        """An append of no events, for what goes with every append (a fired reminder removed, the
        durable message count) when the turn recorded nothing."""
        instance._version = self.cell.version = await self.append(instance._version, [], None)

    async def append_status(self, status: Status, reason: object, result: object = None) -> None:
        """Append a ``StatusChanged`` event (and set the index's status) after the live version.

        Only the status writer calls this: it decides what the change means in memory.
        """
        cell = self.cell
        instance = cell.instance
        expected = cell.version if instance is None else instance._version
        reason_text = None if reason is None else str(reason)
        data = cell.host.events.encode(StatusChanged(status, reason_text, result))
        version = await self.append(expected, [data], status)
        if instance is not None:
            instance._version = version
        cell.version = version

    # -- snapshots -------------------------------------------------------------------------------

    def encode_snapshot(self, instance: Session[Any]) -> Snapshot | None:
        """The snapshot of ``instance``'s state, or ``None`` when its class is refused snapshots."""
        cell = self.cell
        data = cell.host.snapshots.encode(cell.cls, instance, cell.args)
        if data is None:
            return None  # refused (logged once, counted each time), see runtime/_exact.py
        return Snapshot(cell.id, instance._version, cell.cls.state_version, data, time.time())

    def snapshot_soon(self, instance: Session[Any]) -> None:
        """Encode the state now and save it in the background: the reply does not wait for it."""
        snap = self.encode_snapshot(instance)
        if snap is not None:
            self.cell.host.spawn(self.save_snapshot, snap)

    async def snapshot_if_behind(self, instance: Session[Any]) -> None:
        """Before the incarnation ends (passivation, shutdown): save a snapshot if the log is ahead.

        Not for a class without snapshots (``snapshot_every = None``): it replays its log instead.

        Raises:
            StoreError, OwnershipLost: an append in the pipeline failed (the incarnation must end).
        """
        await self.settle()  # never a snapshot of events that are not durable
        if instance._version > self.snapshot_version and self.cell.cls.snapshot_every is not None:
            snap = self.encode_snapshot(instance)
            if snap is not None:
                await self.save_snapshot(snap)

    async def save_snapshot(self, snap: Snapshot) -> None:
        host = self.cell.host
        # Shielded: a shutdown lets a snapshot that is being written finish (bounded by the drain
        # timeout) rather than leave it to chance.
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(host.drain_timeout):
                await host.store.save_snapshot(snap)
            self.snapshot_version = max(self.snapshot_version, snap.version)
        except Exception as exc:
            logger.warning("session %r: snapshot at version %d failed: %s", self.cell.id, snap.version, exc)
            host.counters.snapshot_failure(self.cell, "save")
