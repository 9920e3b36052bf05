"""The actor task of one active session: recover, take messages one at a time, restart on a crash.

The walk of a call: ``SessionRef.call`` puts an envelope in the cell's mailbox (``_cell``); this
task takes it, runs ``handle_call``, whose ``record`` goes through the session's journal
(``_journal``) to the store, and sends the reply. How incarnations end is in ``_ending``, how they
come back in ``_recovery``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final, cast

import anyio
import anyio.lowlevel

from ._ending import (
    Passivated,
    end_task,
    ending,
    expire,
    passivate,
    shut_down,
    stop_instance,
    terminate,
)
from ._exceptions import (
    CorruptEventLog,
    OwnershipLost,
    RecoveryFailed,
    SessionCrashed,
    SessionError,
    StoreError,
    VersionConflict,
)
from ._history import RawTransition, note_turn
from ._idempotency import Idempotent, idempotent_call
from ._mailbox import CALL_CHAIN, Envelope, Kind
from ._recovery import quarantine_corrupt, recover, restart_after
from ._reminders import DueReminder, refire, remind
from ._session import NoReply
from ._status import Status

if TYPE_CHECKING:
    from ._cell import SessionCell
    from ._pipeline import Pipeline
    from ._session import Session

__all__ = ["run_actor"]

logger = logging.getLogger(__name__)

_CALL: Final = Kind.CALL
_CAST: Final = Kind.CAST
_INFO: Final = Kind.INFO
_RUNNING: Final = Status.RUNNING
_KIND_NAMES: Final[dict[Kind, str]] = {
    kind: kind.value if kind in (Kind.CALL, Kind.CAST, Kind.INFO) else "system" for kind in Kind
}


class _Reload(Exception):
    """This copy of the session is stale (another writer appended): reload it from the store."""


class _Disowned(Exception):
    """This node's lease on the session moved on: stop the copy, record nothing, keep no status."""

    def __init__(self, error: SessionError) -> None:
        super().__init__(error)
        self.error = error


async def run_actor(cell: SessionCell, initial: Session[Any] | None) -> None:
    """The actor task: recover, serve, and on a crash restart until the budget is spent.

    ``initial`` is the first instance of a new session (its state is initial: no recovery).
    """
    CALL_CHAIN.set((cell.id,))
    host = cell.host
    ownership = host.ownership
    try:
        if ownership is not None and not ownership.holds(cell.id):
            # Many nodes: run only under this node's lease (start() took it for a new session).
            try:
                await ownership.acquire(cell.id)
            except SessionError as exc:  # OwnedElsewhere, or the store cannot be reached
                cell.handoff = exc  # every queued message is answered with it (end_task)
                return
        while True:
            instance = cell.incarnate(initial)
            initial = None
            try:
                if instance.version < 0:  # not recovered yet
                    await recover(cell, instance)
            except (CorruptEventLog, RecoveryFailed) as exc:
                await quarantine_corrupt(cell, exc)
                return
            except Exception as exc:
                crash: BaseException | None = exc
                in_recovery = True
                logger.exception("session %r failed to recover", cell.id)
                host.counters.recovery(cell, "error", 0, 0.0)
            else:
                if cell.status.terminal:
                    return
                in_recovery = False
                if cell.resuming:
                    cell.resuming = False
                    instance._resumed = True
                cell.instance = instance
                cell.stop_reason = None
                cell.journal.record_error = None
                try:
                    crash = await _serve(cell, instance)
                except _Reload:
                    # This copy is stale: end it properly (on_stop, timers) before reloading.
                    await stop_instance(cell, instance, "reloaded")
                    continue
                except _Disowned as lost:
                    # Another node owns the session now: this copy ends, recording nothing (the
                    # status is the new owner's to write); messages go to the owner. Appends in
                    # flight finish first (refused, or durable): their callers are answered.
                    await _crash_pipeline(cell.journal.pipeline, lost.error)
                    cell.handoff = lost.error
                    cell.fail_deferred(lost.error)
                    await stop_instance(cell, instance, "ownership lost")
                    host.statuses.take(cell, Status.PASSIVATED, "ownership lost")
                    return
                except Passivated:
                    mailbox = cell.mailbox
                    if mailbox is None or not len(mailbox):
                        # No await between this check and the detach: a message sent from
                        # now on finds the session inactive and starts a new incarnation.
                        cell.mailbox = None
                        cell.active = False
                        return
                    # Messages came while it was passivating: the next incarnation takes them.
                    host.statuses.take(cell, Status.RUNNING, "reactivated")
                    continue
                if crash is None:
                    return
            assert crash is not None
            await stop_instance(cell, instance, "crashed")
            if not await restart_after(cell, crash, in_recovery):
                return
    finally:
        try:
            with anyio.CancelScope(shield=True):
                await end_task(cell)
                if ownership is not None:
                    await _release(cell)
        finally:
            host.actor_ended(cell)


async def _release(cell: SessionCell) -> None:
    """The incarnations of this node are over: give the lease up, so any node may take the session."""
    ownership = cell.host.ownership
    assert ownership is not None
    try:
        with anyio.move_on_after(cell.host.drain_timeout):
            await ownership.release(cell.id)
    except SessionError:  # the lease then simply expires
        logger.warning("session %r: its lease could not be released", cell.id, exc_info=True)


async def _serve(cell: SessionCell, instance: Session[Any]) -> BaseException | None:
    """Take messages one at a time; return the crash that ended this incarnation, if any.

    With a pipeline (``pipeline_depth`` > 1), each turn's reply is handed to it rather than sent,
    and the next message is taken while up to that many turns wait for their events.
    """
    pipeline = cell.journal.begin(instance)
    try:
        await instance.on_start()
    except Exception as exc:
        logger.exception("session %r crashed in on_start", cell.id)
        return await _crash_pipeline(pipeline, exc)
    if pipeline is not None:
        pipeline.end_turn(None)
    if ending(cell):
        await terminate(cell, instance)  # completed, failed or stopped in on_start
        return None
    host = cell.host
    journal = cell.journal
    mailbox = cell.mailbox
    assert mailbox is not None
    get_nowait = mailbox.get_nowait
    chain_var = CALL_CHAIN
    own = (cell.id,)
    backend = host.backend
    checkpoint = backend.checkpoint if backend is not None else anyio.lowlevel.checkpoint
    now = host.now
    # Per message, one histogram observation for its kind, looked up here once.
    observers = _handled_observers(cell)
    observe_call = observers[_CALL]  # calls without a dict lookup (an Enum hashes in Python)
    limit = host.message_limit
    noting = host.history.enabled
    labelled = noting and bool(cell.cls.transitions)
    streak = 0
    while True:
        if pipeline is not None:
            if pipeline.full:
                await pipeline.wait_room()
            failure = pipeline.failure
            if failure is not None:
                await _crash_pipeline(pipeline, failure)
                if isinstance(failure, OwnershipLost):
                    if host.ownership is not None:
                        host.ownership.note_refusal(cell.id)
                    raise _Disowned(failure)
                return failure
        # ``queued`` is None while the mailbox is empty: tested without a call, on the path every
        # message takes.
        if mailbox.queued:
            env = get_nowait()
            streak += 1
            if streak >= 32:
                # A long queue of handlers that never await would hold the event loop: let
                # other tasks (and cancellation) in now and then.
                streak = 0
                await checkpoint()
        else:
            # Yield once before parking: a sender streaming casts refills the mailbox during
            # that turn, which spares both sides a park and a wake-up per message. Parked
            # outside any except clause, so that an idle session keeps no exception alive.
            streak = 0
            await checkpoint()
            if mailbox.queued:
                env = get_nowait()
            elif pipeline is not None and pipeline.unconfirmed and not mailbox.closed:
                # Idle behind commits in flight: a failed append wakes us (to crash).
                await mailbox.wait()
                continue
            else:
                try:
                    env = await mailbox.get()
                except anyio.EndOfStream:
                    await shut_down(cell, instance)
                    return None
        kind = env.kind
        reply = env.reply
        # A user message (call, cast, info): by identity, as an Enum hashes in Python.
        if kind is _CALL or kind is _CAST or kind is _INFO:
            if cell.status is not _RUNNING:
                cell.reject(env)  # paused since this message was queued
                continue
            cell.messages += 1
        cell.turn_started = now()
        started = perf_counter()
        status_before = cell.status
        version_before = cell.version
        label_before = instance.label(instance.state) if labelled else None
        error: Exception | None = None
        try:
            if kind is _CALL:
                assert reply is not None
                cell.reply = reply
                # The task's own chain is (cell.id,): a call from outside any session (the
                # common case) needs no new context.
                token = chain_var.set(env.chain + own) if env.chain else None
                try:
                    message = env.message
                    if type(message) is Idempotent:
                        result = await idempotent_call(cell, instance, message)
                    else:
                        result = await instance.handle_call(message)
                finally:
                    if token is not None:
                        chain_var.reset(token)
                    cell.reply = None
                if pipeline is not None:
                    pipeline.end_turn(None if result is NoReply else reply, result)
                elif result is not NoReply:
                    reply.send(result)
            elif kind is _CAST:
                await instance.handle_cast(env.message)
                if pipeline is not None:
                    pipeline.end_turn(None)
            elif kind is _INFO:
                message = env.message
                if type(message) is DueReminder:
                    await remind(cell, instance, message.reminder)
                else:
                    await instance.handle_info(message)
                if pipeline is not None:
                    pipeline.end_turn(None)
            else:
                await _system(cell, instance, env)
        except (Passivated, _Disowned):
            raise
        except Exception as exc:
            error = exc
            if exc is journal.record_error:
                # The caller's mistake (InvalidTransition) or the store's failure: nothing was
                # recorded, so the state is intact and the session carries on.
                journal.record_error = None
                refire(cell)  # a reminder whose handler could not record comes back
                if pipeline is not None:
                    pipeline.end_turn(reply, None, exc)  # after what the turn recorded before it
                elif reply is not None:
                    reply.fail(exc)
                if reply is None:
                    logger.warning("session %r: %s", cell.id, exc)
                if isinstance(exc, VersionConflict):
                    cell.fail_deferred(exc)
                    raise _Reload from exc
                if isinstance(exc, OwnershipLost):
                    if host.ownership is not None:
                        host.ownership.note_refusal(cell.id)
                    raise _Disowned(exc) from exc
                continue
            return await _crash_turn(cell, env, exc, pipeline)
        finally:
            cell.turn_started = None
            elapsed = perf_counter() - started
            (observe_call if kind is _CALL else observers[kind])(elapsed)
            if noting:
                history = cell.history
                if history is not None and label_before is None and error is None:
                    # The common turn, appended here: a call to note_turn cost the no-event call
                    # ~0.1 us (2%). The row's layout is _history's RawTransition (mypy checks it).
                    row: RawTransition = (
                        cell.messages,
                        started,
                        kind._value_,
                        type(env.message).__name__,
                        status_before._value_,
                        cell.status._value_,
                        None,
                        None,
                        cell.version - version_before,
                        elapsed,
                        None,
                    )
                    history.append(row)
                else:
                    note_turn(
                        cell,
                        instance,
                        env,
                        started,
                        elapsed,
                        status_before,
                        version_before,
                        label_before,
                        error,
                    )
            # The exception's traceback holds this frame: drop the frame's hold on it, or every
            # crash leaves a reference cycle for the garbage collector (and a p99 spike).
            error = None
        if limit is not None and cell.status is _RUNNING:
            if cell.messages >= limit:
                await expire(cell, Status.TIMED_OUT, f"max_messages ({limit}) reached")
            elif cell.messages != cell.handled_stored:
                # The count is durable: a turn that recorded nothing stores it on its own.
                await journal.append_nothing(instance)
        if ending(cell):
            await terminate(cell, instance)
            return None


def _handled_observers(cell: SessionCell) -> dict[Kind, Callable[[float], None]]:
    """What observes the handling time of each message kind: one dict per session type and host.

    Made at each incarnation, the dict (Enum keys hash in Python) was 20,000 instructions of every
    crash and restart, 5% (callgrind, bench_session's ``crash_restart``).
    """
    metrics = cell.metrics
    cache = cell.host.handled_observers
    observers = cache.get(metrics)
    if observers is None:
        observers = cache[metrics] = {
            kind: metrics.handled_observer(name) for kind, name in _KIND_NAMES.items()
        }
    return observers


async def _system(cell: SessionCell, instance: Session[Any], env: Envelope) -> None:
    """Stop, pause, resume, passivate, expire: the runtime's own messages, in order with the rest."""
    kind = env.kind
    statuses = cell.host.statuses
    if kind is Kind.STOP:
        cell.stop_reason = str(env.message)
        await terminate(cell, instance)
    elif kind is Kind.PAUSE:
        if cell.status is _RUNNING:
            await statuses.record(cell, Status.PAUSED, env.message)
    elif kind is Kind.RESUME:
        if cell.status is Status.PAUSED:
            await statuses.record(cell, Status.RUNNING, None)
    elif kind is Kind.PASSIVATE:
        decided_at = env.message
        assert isinstance(decided_at, float)
        if cell.passivation_allowed(decided_at):
            await passivate(cell, instance)
    elif kind is Kind.DISOWN:
        assert isinstance(env.message, SessionError)
        raise _Disowned(env.message)
    elif kind is Kind.EXPIRE:
        status, reason, idle_since = cast("tuple[Status, str, float | None]", env.message)
        if cell.status in (_RUNNING, Status.PAUSED) and (
            idle_since is None or cell.last_active <= idle_since
        ):
            await expire(cell, status, reason)
    pipeline = cell.journal.pipeline
    if pipeline is not None:
        pipeline.end_turn(env.reply)
    elif env.reply is not None:
        env.reply.send(None)


async def _crash_pipeline(pipeline: Pipeline | None, crash: BaseException) -> BaseException:
    """The incarnation crashed: let the events recorded so far commit (or fail), then crash.

    The earlier messages' callers are answered once their events are durable, as at depth 1, where
    they had their replies already; the events the crashing handler recorded are kept too. The
    restart then reads a log that no append in flight can still extend.
    """
    if pipeline is not None:
        pipeline.end_turn(None)
        try:
            await pipeline.settle()
        except (StoreError, OwnershipLost):
            pass  # its callers have been answered already
    return crash


async def _crash_turn(
    cell: SessionCell, env: Envelope, crash: Exception, pipeline: Pipeline | None
) -> BaseException:
    """A handler raised: log it, fail its caller and every deferred reply, end the incarnation.

    A function of its own rather than lines of ``_serve``: a log record carries the line it was
    made on, and Python 3.11 finds a frame's line by walking its code's line table from the start.
    From ``_serve``, that walk cost 40,000 instructions, 8% of a crash and restart (callgrind,
    bench_session's ``crash_restart``); from here, 600.
    """
    logger.exception("session %r crashed handling %r", cell.id, env)
    refire(cell)
    reply = env.reply
    if reply is not None:
        reply.fail(_crashed(cell.id, crash))
    cell.fail_deferred(_crashed(cell.id, crash))
    return await _crash_pipeline(pipeline, crash)


def _crashed(session_id: str, exc: BaseException) -> SessionCrashed:
    err = SessionCrashed(session_id, exc)
    err.__cause__ = exc
    return err
