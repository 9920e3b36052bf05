"""The session actor: one task per active session, its recovery, its turns and its crashes.

A ``SessionCell`` outlives the ``Session`` instances it runs. It owns the mailbox, so a crash keeps the
queued messages; each incarnation is a fresh instance whose state is rebuilt from the store (snapshot
plus event tail) before it takes the next message.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final, cast

import anyio
import anyio.lowlevel

from ._events import StatusChanged, encode_state
from ._exceptions import (
    CorruptEventLog,
    InvalidTransition,
    MailboxFull,
    RecoveryFailed,
    SessionCrashed,
    SessionError,
    SessionPaused,
    SessionStopped,
    ShuttingDown,
    StoreError,
    VersionConflict,
)
from ._history import RawTransition, new_buffer
from ._mailbox import CALL_CHAIN, Envelope, Kind, Mailbox
from ._records import EventData, Snapshot
from ._replay import replay
from ._session import NoReply, Reply, Session, TimerHandle
from ._status import Status

if TYPE_CHECKING:
    from ._host import SessionHost
    from ._ref import SessionRef

__all__ = ["SessionCell"]

logger = logging.getLogger(__name__)

_CALL: Final = Kind.CALL
_CAST: Final = Kind.CAST
_INFO: Final = Kind.INFO
_RUNNING: Final = Status.RUNNING
_FINISH_STATUS: Final = {"completed": Status.COMPLETED, "failed": Status.FAILED}
_KIND_NAMES: Final[dict[Kind, str]] = {
    kind: kind.value if kind in (Kind.CALL, Kind.CAST, Kind.INFO) else "system" for kind in Kind
}
_USER_KINDS: Final = frozenset({Kind.CALL, Kind.CAST, Kind.INFO})


class _Reload(Exception):
    """This copy of the session is stale (another writer appended): reload it from the store."""


class _Passivated(Exception):
    """The incarnation passivated itself: end the task, or start the next one if mail came."""


class SessionCell:
    """Everything the runtime keeps about one known session, across its incarnations."""

    __slots__ = (
        "active",
        "args",
        "cls",
        "deferred",
        "error",
        "history",
        "host",
        "id",
        "instance",
        "last_active",
        "mailbox",
        "messages",
        "metadata",
        "metrics",
        "reaper_marks",
        "record_error",
        "recording",
        "reply",
        "restart_times",
        "restarts",
        "snapshot_version",
        "started_at",
        "state_bytes",
        "status",
        "status_reason",
        "status_since",
        "stop_reason",
        "timers",
        "turn_started",
        "version",
    )

    def __init__(
        self,
        host: SessionHost,
        session_id: str,
        cls: type[Session[Any]],
        args: Mapping[str, Any],
        metadata: Mapping[str, Any],
        status: Status,
        version: int = 0,
    ) -> None:
        now = host.clock.now()
        self.host = host
        self.id = session_id
        self.cls = cls
        self.args = args
        self.metadata = metadata
        self.metrics = host.metrics.for_type(cls.type_name or cls.__name__)
        self.status = status
        self.status_reason: object = None
        self.status_since = now
        self.error: SessionError | None = None
        self.version = version
        self.active = False
        self.mailbox: Mailbox[Envelope] | None = None
        self.instance: Session[Any] | None = None
        self.reply: Reply | None = None
        # Created on first use: most sessions never defer, set a timer or crash, and an idle
        # session should cost little (issue 2 measures 100,000 of them).
        self.deferred: list[Reply] | None = None
        self.timers: set[TimerHandle] | None = None
        self.record_error: BaseException | None = None
        self.history: deque[RawTransition] | None = None
        self.recording = False
        self.stop_reason: str | None = None
        self.restarts = 0
        self.snapshot_version = 0
        self.state_bytes = 0
        """JSON size of the state, estimated (for memory limits)."""
        self.reaper_marks = 0
        """Bit flags owned by the session supervisor's reaper (what it has scheduled)."""
        self.restart_times: list[float] | None = None
        self.messages = 0
        self.turn_started: float | None = None
        """When the turn in progress began (runtime clock), for the 'stuck' health check."""
        self.started_at = now
        self.last_active = now

    def __repr__(self) -> str:
        return f"<SessionCell {self.id!r} {self.cls.__qualname__} {self.status.value}>"

    @property
    def ref(self) -> SessionRef:
        from ._ref import SessionRef

        return SessionRef(self.host, self.id, self)

    @property
    def mailbox_depth(self) -> int:
        mailbox = self.mailbox
        return 0 if mailbox is None else len(mailbox)

    # -- delivery (called by references, in the sender's task) ----------------------------------

    def admit(self, env: Envelope) -> Mailbox[Envelope]:
        """The mailbox to put ``env`` in, activating the session if needed.

        Raises:
            ShuttingDown, SessionStopped, SessionPaused, CorruptEventLog, RecoveryFailed: the session
                takes no such message now.
        """
        if self.host.closing:
            self.host.metrics.rejected("shutting_down")
            raise ShuttingDown(self.id)
        status = self.status
        if status is not _RUNNING:
            if status is Status.PASSIVATED:
                self.set_status(Status.RUNNING)
            elif status is Status.PAUSED:
                if env.kind not in (Kind.RESUME, Kind.STOP):
                    raise SessionPaused(self.id, self.status_reason)
            else:
                raise self.refusal()
        if not self.active:
            self.activate()
        chain = env.chain
        if not chain or chain[-1] != self.id or self.host.self_sends_count:
            self.last_active = self.host.now()
        mailbox = self.mailbox
        assert mailbox is not None
        return mailbox

    async def deliver(self, env: Envelope) -> None:
        """Put ``env`` in the mailbox, waiting while it is full."""
        mailbox = self.admit(env)
        try:
            mailbox.put_nowait(env)
        except anyio.WouldBlock:
            try:
                await mailbox.put(env)
            except anyio.ClosedResourceError:
                raise self.refusal() from None
        except anyio.ClosedResourceError:
            raise self.refusal() from None

    def deliver_nowait(self, env: Envelope) -> None:
        """Put ``env`` in the mailbox now, or raise ``MailboxFull``."""
        mailbox = self.admit(env)
        try:
            mailbox.put_nowait(env)
        except anyio.WouldBlock:
            self.host.metrics.rejected("mailbox_full")
            raise MailboxFull(self.id, self.cls.mailbox_size) from None
        except anyio.ClosedResourceError:
            raise self.refusal() from None

    def refusal(self) -> SessionError:
        """The error for a message this session will not process, given where it is."""
        if self.error is not None:
            err = copy.copy(self.error)
            err.__traceback__ = None
            return err
        if self.status.terminal:
            return SessionStopped(self.id, self.status, self.status_reason)
        if self.status is Status.PAUSED:
            return SessionPaused(self.id, self.status_reason)
        return ShuttingDown(self.id)

    # -- lifecycle ------------------------------------------------------------------------------

    def set_status(self, status: Status, reason: object = None) -> None:
        previous = self.status
        self.status_reason = reason
        if status is not previous:
            self.status = status
            self.status_since = self.host.clock.now()
            self.host.note_status(self, previous, reason)

    def activate(self, initial: Session[Any] | None = None) -> None:
        """Open the mailbox and spawn the actor task (it recovers before taking messages).

        ``initial`` is the first instance of a new session, its state already initial: it needs no
        recovery.
        """
        backend = self.host.backend
        self.mailbox = Mailbox(self.cls.mailbox_size, trio=backend is not None and backend.is_trio)
        self.active = True
        self.host.spawn_actor(self, initial)

    async def run(self, initial: Session[Any] | None) -> None:
        """The actor task: recover, serve, and on a crash restart until the budget is spent."""
        CALL_CHAIN.set((self.id,))
        host = self.host
        try:
            while True:
                if initial is not None:
                    instance, initial = initial, None
                else:
                    instance = self.cls()
                    instance._cell = self
                try:
                    if instance._version < 0:
                        await self._recover(instance)
                except (CorruptEventLog, RecoveryFailed) as exc:
                    await self._quarantine_corrupt(exc)
                    return
                except Exception as exc:
                    crash: BaseException | None = exc
                    in_recovery = True
                    logger.exception("session %r failed to recover", self.id)
                    host.note_recovery(self, "error", 0, 0.0)
                else:
                    if self.status.terminal:
                        return
                    in_recovery = False
                    self.instance = instance
                    self.stop_reason = None
                    self.record_error = None
                    try:
                        crash = await self._serve(instance)
                    except _Reload:
                        # This copy is stale: end it properly (on_stop, timers) before reloading.
                        await self._stop_instance(instance, "reloaded")
                        continue
                    except _Passivated:
                        mailbox = self.mailbox
                        if mailbox is None or not len(mailbox):
                            # No await between this check and the detach: a message sent from
                            # now on finds the session inactive and starts a new incarnation.
                            self.mailbox = None
                            self.active = False
                            return
                        # Messages came while it was passivating: the next incarnation takes them.
                        self.set_status(Status.RUNNING, "reactivated")
                        continue
                    if crash is None:
                        return
                assert crash is not None
                await self._stop_instance(instance, "crashed")
                host.note_crash(self, crash)
                if not await self._restart_after(crash, in_recovery):
                    return
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    await self._end()
            finally:
                host.actor_ended(self)

    async def _serve(self, instance: Session[Any]) -> BaseException | None:
        """Take messages one at a time; return the crash that ended this incarnation, if any."""
        try:
            await instance.on_start()
        except Exception as exc:
            logger.exception("session %r crashed in on_start", self.id)
            return exc
        if self._ending():
            await self._terminate(instance)  # completed, failed or stopped in on_start
            return None
        mailbox = self.mailbox
        assert mailbox is not None
        chain_var = CALL_CHAIN
        own = (self.id,)
        backend = self.host.backend
        checkpoint = backend.checkpoint if backend is not None else anyio.lowlevel.checkpoint
        now = self.host.now
        # Per message, one histogram observation for its kind, looked up here once.
        observers = {kind: self.metrics.handled_observer(name) for kind, name in _KIND_NAMES.items()}
        observe_call = observers[_CALL]  # calls without a dict lookup (an Enum hashes in Python)
        limit = self.host.message_limit
        noting = self.host.history.enabled
        labelled = noting and bool(self.cls.transitions)
        streak = 0
        while True:
            # ``_items`` is the mailbox's queue, None while empty: read directly on this path, which
            # every message takes (``len()`` through ``__len__`` cost as much as the check itself).
            if mailbox._items:
                env = mailbox.get_nowait()
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
                if mailbox._items:
                    env = mailbox.get_nowait()
                else:
                    try:
                        env = await mailbox.get()
                    except anyio.EndOfStream:
                        await self._shut_down(instance)
                        return None
            kind = env.kind
            reply = env.reply
            if self.status is not _RUNNING and kind in _USER_KINDS:
                self.reject(env)  # paused since this message was queued
                continue
            self.messages += 1
            self.turn_started = now()
            started = perf_counter()
            status_before = self.status
            version_before = self.version
            label_before = instance.label(instance._state) if labelled else None
            error: Exception | None = None
            try:
                if kind is _CALL:
                    assert reply is not None
                    self.reply = reply
                    # The task's own chain is (self.id,): a call from outside any session (the
                    # common case) needs no new context.
                    token = chain_var.set(env.chain + own) if env.chain else None
                    try:
                        result = await instance.handle_call(env.message)
                    finally:
                        if token is not None:
                            chain_var.reset(token)
                        self.reply = None
                    if result is not NoReply:
                        reply.send(result)
                elif kind is _CAST:
                    await instance.handle_cast(env.message)
                elif kind is _INFO:
                    await instance.handle_info(env.message)
                else:
                    await self._system(instance, env)
            except _Passivated:
                raise
            except Exception as exc:
                error = exc
                if exc is self.record_error:
                    # The caller's mistake (InvalidTransition) or the store's failure: nothing was
                    # recorded, so the state is intact and the session carries on.
                    self.record_error = None
                    if reply is not None:
                        reply.fail(exc)
                    else:
                        logger.warning("session %r: %s", self.id, exc)
                    if isinstance(exc, VersionConflict):
                        self.fail_deferred(exc)
                        raise _Reload from exc
                    continue
                logger.exception("session %r crashed handling %r", self.id, env)
                if reply is not None:
                    reply.fail(_crashed(self.id, exc))
                self.fail_deferred(_crashed(self.id, exc))
                return exc
            finally:
                self.turn_started = None
                elapsed = perf_counter() - started
                (observe_call if kind is _CALL else observers[kind])(elapsed)
                if noting:
                    history = self.history
                    if history is not None and label_before is None and error is None:
                        # The common case, inline: one tuple per message (see _note_turn).
                        history.append(
                            (
                                self.messages,
                                started,
                                kind._value_,
                                type(env.message).__name__,
                                status_before._value_,
                                self.status._value_,
                                None,
                                None,
                                self.version - version_before,
                                elapsed,
                                None,
                            )
                        )
                    else:
                        self._note_turn(
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
            if limit is not None and self.messages >= limit and self.status is _RUNNING:
                await self._expire(instance, Status.TIMED_OUT, f"max_messages ({limit}) reached")
            if self._ending():
                await self._terminate(instance)
                return None

    def _ending(self) -> bool:
        """Whether the turn just taken ended the session (complete, fail, stop, expiry)."""
        status = self.status
        return self.stop_reason is not None or (status is not _RUNNING and status.terminal)

    def _note_turn(
        self,
        instance: Session[Any],
        env: Envelope,
        started: float,
        duration: float,
        status_before: Status,
        version_before: int,
        label_before: str | None,
        error: Exception | None,
    ) -> None:
        """Keep a transition record of the message just handled (a plain tuple: it is per message).

        Its fields are strings and numbers only, so that the garbage collector stops tracking it at
        its first pass (a ring of 50 per session would otherwise be walked by every full collection).
        """
        history = self.history
        if history is None:
            if self.status is Status.PASSIVATED:
                return  # it just passivated and let its history go: keep it that way
            history = self.history = new_buffer(self.host.history)
        label_after = None
        if label_before is not None:
            try:
                label_after = instance.label(instance._state)
            except Exception:
                label_after = "?"
        history.append(
            (
                self.messages,
                started,
                env.kind._value_,
                type(env.message).__name__,
                status_before._value_,
                self.status._value_,
                label_before,
                label_after,
                self.version - version_before,
                duration,
                None if error is None else f"{type(error).__name__}: {error}",
            )
        )

    async def _system(self, instance: Session[Any], env: Envelope) -> None:
        reply = env.reply
        kind = env.kind
        if kind is Kind.STOP:
            self.stop_reason = str(env.message)
            await self._terminate(instance)
        elif kind is Kind.PAUSE:
            if self.status is _RUNNING:
                await self._record_status(instance, Status.PAUSED, env.message)
        elif kind is Kind.RESUME:
            if self.status is Status.PAUSED:
                await self._record_status(instance, Status.RUNNING, None)
        elif kind is Kind.PASSIVATE:
            decided_at = env.message
            assert isinstance(decided_at, float)
            if self.passivation_allowed(decided_at):
                await self._passivate(instance)
        elif kind is Kind.EXPIRE:
            expiry = env.message
            assert isinstance(expiry, tuple)
            status, reason, idle_since = cast("tuple[Status, str, float | None]", expiry)
            if self.status in (_RUNNING, Status.PAUSED) and (
                idle_since is None or self.last_active <= idle_since
            ):
                await self._expire(instance, status, reason)
        if reply is not None:
            reply.send(None)

    def passivation_allowed(self, decided_at: float) -> bool:
        """Idle since ``decided_at``, nothing queued, no call waiting on a deferred reply."""
        mailbox = self.mailbox
        return (
            self.status is _RUNNING
            and self.last_active <= decided_at
            and (mailbox is None or not len(mailbox))
            and not any(not r.done for r in self.deferred or ())
        )

    async def _passivate(self, instance: Session[Any]) -> None:
        """Snapshot, stop the incarnation, mark it PASSIVATED; the next message reactivates it."""
        if instance._version > 0 and self.snapshot_version != instance._version:
            snap = self._encode_snapshot(instance)
            if snap is not None:
                await self._save_snapshot(snap)
        await self._stop_instance(instance, "passivated")
        # A passivated session keeps almost nothing in memory (issue 5 budgets 1 KB for it): its
        # recent transitions go too. Its log is its durable history.
        self.history = None
        try:
            await self.host.store.set_status(self.id, Status.PASSIVATED)
        except Exception:
            logger.exception("session %r: could not mark it PASSIVATED in the index", self.id)
        self.set_status(Status.PASSIVATED, "idle")
        self.metrics.passivated()
        raise _Passivated

    async def _expire(self, instance: Session[Any], status: Status, reason: str) -> None:
        """End the session in a terminal status the runtime decided (TTLs, limits)."""
        await self._record_status(instance, status, reason)
        self.metrics.expired(status.value)
        self.stop_reason = reason

    async def _terminate(self, instance: Session[Any]) -> None:
        """End after a turn that completed, failed or stopped the session."""
        reason = self.stop_reason
        if not self.status.terminal:
            reason = reason or "normal"
            try:
                await self._record_status(instance, Status.STOPPED, reason)
            except Exception:
                logger.exception("session %r: could not record its stop", self.id)
                self.set_status(Status.STOPPED, reason)
        elif reason is None:
            reason = self.status.value
        await self._stop_instance(instance, reason)

    async def _shut_down(self, instance: Session[Any]) -> None:
        """The supervisor is shutting down and the mailbox is drained: snapshot, then on_stop."""
        if instance._version > self.snapshot_version:
            snap = self._encode_snapshot(instance)
            if snap is not None:
                await self._save_snapshot(snap)
        await self._stop_instance(instance, "shutdown")

    async def _stop_instance(self, instance: Session[Any], reason: str) -> None:
        """Cancel the incarnation's timers and run its ``on_stop`` once."""
        timers, self.timers = self.timers, None
        if timers:
            for timer in timers:
                timer.cancel()
        if self.instance is not instance:
            return
        self.instance = None
        try:
            await instance.on_stop(reason)
        except Exception:
            logger.exception("session %r: on_stop(%r) raised", self.id, reason)

    async def _end(self) -> None:
        """The task is ending: close the mailbox and answer whatever is still queued in it."""
        if self.instance is not None:
            # Cancelled (a shutdown past its drain timeout): the incarnation still gets its on_stop.
            with anyio.move_on_after(self.host.drain_timeout):
                await self._stop_instance(self.instance, "shutdown")
        self.active = False
        mailbox, self.mailbox = self.mailbox, None
        if mailbox is not None:
            mailbox.close()
            while True:
                try:
                    env = mailbox.get_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                self.reject(env)
        error = self.refusal() if (self.status.terminal or self.host.closing) else None
        if error is not None:
            self.fail_deferred(error)

    def reject(self, env: Envelope) -> None:
        """Answer a message the session will never process; count casts as dead letters."""
        if env.reply is not None:
            env.reply.fail(self.refusal())
        else:
            self.host.dead_letter(self, env)

    def fail_deferred(self, error: SessionError) -> None:
        deferred, self.deferred = self.deferred, None
        if deferred:
            for reply in deferred:
                reply.fail(error)

    async def _restart_after(self, crash: BaseException, in_recovery: bool) -> bool:
        """Wait out the backoff and return ``True``, or quarantine the session and return ``False``."""
        clock = self.host.clock
        now = clock.now()
        recent = self.restart_times
        if recent is None:
            recent = self.restart_times = []
        delay = self.host.restarts.restart_delay(recent, now)
        if delay is None:
            await self._quarantine_exhausted(crash, in_recovery)
            return False
        self.restarts += 1
        self.host.note_restart(self, type(crash).__name__)
        if delay > 0:
            await clock.sleep_until(now + delay)
        recent.append(clock.now())
        return True

    async def _quarantine_exhausted(self, crash: BaseException, in_recovery: bool) -> None:
        reason = (
            f"restart limit reached after {self.restarts} restarts "
            f"(last crash: {type(crash).__name__}: {crash})"
        )
        logger.error("session %r quarantined as FAILED: %s", self.id, reason)
        try:
            if not in_recovery:  # (if it could not even be read back, the log is left as it is)
                await self._append_status(self.version, Status.FAILED, reason)
            # The index keeps why, for later processes and the command line (issue 13).
            await self.host.store.set_status(
                self.id, Status.FAILED, reason=reason, error_type=type(crash).__name__
            )
        except Exception:
            logger.exception("session %r: could not record its quarantine", self.id)
        self.set_status(Status.FAILED, reason)
        self.host.note_quarantine(self)

    async def _quarantine_corrupt(self, error: SessionError) -> None:
        logger.error("session %r quarantined as FAILED: %s", self.id, error)
        outcome = "corrupt" if isinstance(error, CorruptEventLog) else "failed"
        self.host.note_recovery(self, outcome, 0, 0.0)
        self.error = error
        self.set_status(Status.FAILED, str(error))
        try:
            # Only the index learns of it (and why, for later processes): the log is never touched.
            await self.host.store.set_status(
                self.id, Status.FAILED, reason=str(error), error_type=type(error).__name__
            )
        except Exception:
            logger.exception("session %r: could not mark it FAILED in the index", self.id)
        self.host.note_quarantine(self)

    # -- recovery -------------------------------------------------------------------------------

    async def _recover(self, instance: Session[Any]) -> None:
        host = self.host
        sid = self.id
        async with host.recovery_limiter:
            started = host.clock.now()
            record = await host.store.get(sid)
            if record is None:
                raise CorruptEventLog(sid, 0, "the session is no longer in the store's index")
            done = await replay(host.store, record, instance, host.events)
            if done.snapshot_rejected == "decode":
                host.note_snapshot_failure(self, "decode")
            instance._state = done.state
            instance._version = self.version = done.version
            self.snapshot_version = done.snapshot_version
            if host.measure_states:
                try:
                    self.state_bytes = len(encode_state(done.state))
                except Exception:
                    self.state_bytes = 0
            if record.status is not self.status and not self.status.terminal:
                if record.status is not Status.PASSIVATED:
                    self.set_status(record.status)
            host.note_recovery(self, "ok", done.replayed, host.clock.now() - started)
        every = self.cls.snapshot_every
        if every is not None and done.replayed > every:
            # A long replay: snapshot now so that the next recovery is short.
            self._snapshot(instance)

    # -- inside handlers ------------------------------------------------------------------------

    async def record(self, instance: Session[Any], events: Sequence[object]) -> int:
        if instance is not self.instance:
            raise SessionError(
                f"session {self.id!r}: record() called by an incarnation that has ended (a task "
                "outliving a crash or stop?); only the live session may record",
                session_id=self.id,
            )
        if self.recording:
            raise SessionError(
                f"session {self.id!r}: record() is already in progress; record from the session's "
                "handlers, one call at a time (await each record)",
                session_id=self.id,
            )
        if not events:
            return instance._version
        registry = self.host.events
        transitions = self.cls.transitions
        state = instance._state
        encoded: list[EventData] = []
        size = 0
        for ev in events:
            data = registry.encode(ev)
            size += len(data.data)
            if transitions:
                label = instance.label(state)
                if (label, data.type) not in transitions:
                    allowed = tuple(sorted(e for (lb, e) in transitions if lb == label))
                    err = InvalidTransition(self.id, label, data.type, allowed)
                    self.record_error = err
                    raise err
            state = instance.apply(state, ev)
            encoded.append(data)
        before = instance._version
        began = perf_counter()
        version = await self._append(before, encoded, None)
        instance._state = state
        instance._version = self.version = version
        self.state_bytes += size
        self.host.note_recorded(self, len(encoded), perf_counter() - began)
        every = self.cls.snapshot_every
        if every is not None and version // every != before // every:
            self._snapshot(instance)
        return version

    async def _append(self, expected: int, events: list[EventData], status: Status | None) -> int:
        self.recording = True
        try:
            return await self.host.store.append(self.id, expected, events, status=status)
        except StoreError as exc:
            self.record_error = exc
            raise
        except Exception as exc:
            err = StoreError(self.id, "append", f"{type(exc).__name__}: {exc}")
            self.record_error = err
            raise err from exc
        finally:
            self.recording = False

    async def _append_status(
        self, version: int, status: Status, reason: object, result: object = None
    ) -> int:
        reason_text = None if reason is None else str(reason)
        data = self.host.events.encode(StatusChanged(status, reason_text, result))
        return await self._append(version, [data], status)

    async def _record_status(
        self, instance: Session[Any], status: Status, reason: object, result: object = None
    ) -> None:
        """Record a status change in the log (and the index), then take it."""
        instance._version = self.version = await self._append_status(
            instance._version, status, reason, result
        )
        self.set_status(status, reason)

    async def finish(self, instance: Session[Any], how: str, detail: object) -> None:
        """``complete`` / ``fail`` from inside a handler: record the terminal status now."""
        status = _FINISH_STATUS[how]
        if self.status.terminal:
            raise SessionStopped(self.id, self.status, self.status_reason)
        if how == "completed":
            await self._record_status(instance, status, None, detail)
            self.status_reason = detail
        else:
            await self._record_status(instance, status, detail)
        self.stop_reason = how

    def request_stop(self, instance: Session[Any], reason: str) -> None:
        if instance is self.instance:
            self.stop_reason = reason

    def take_reply(self) -> Reply | None:
        reply = self.reply
        if reply is None:
            return None
        self.reply = None
        deferred = self.deferred
        if deferred is None:
            deferred = self.deferred = []
        elif len(deferred) > 32:
            deferred[:] = [r for r in deferred if not r.done]
        deferred.append(reply)
        return reply

    def send_after(self, instance: Session[Any], delay: float, message: object) -> TimerHandle:
        if not math.isfinite(delay) or delay < 0:
            raise ValueError(f"session {self.id!r}: send_after delay must be >= 0, got {delay}")
        handle = TimerHandle(self.host.clock.now() + delay, message)
        if self.timers is None:
            self.timers = set()
        self.timers.add(handle)
        self.host.spawn(self._fire, instance, handle)
        return handle

    async def _fire(self, instance: Session[Any], handle: TimerHandle) -> None:
        with handle._scope:
            await self.host.clock.sleep_until(handle.deadline)
            self._forget_timer(handle)
            mailbox = self.mailbox
            if self.instance is instance and mailbox is not None:
                if self.host.self_sends_count:
                    self.last_active = self.host.now()
                try:
                    await mailbox.put(Envelope(_INFO, handle.message, None, ()))
                except anyio.ClosedResourceError:
                    pass
        self._forget_timer(handle)

    def _forget_timer(self, handle: TimerHandle) -> None:
        if self.timers is not None:
            self.timers.discard(handle)

    # -- snapshots ------------------------------------------------------------------------------

    def _encode_snapshot(self, instance: Session[Any]) -> Snapshot | None:
        try:
            data = encode_state(instance._state)
        except Exception as exc:
            logger.warning("session %r: state cannot be encoded for a snapshot: %s", self.id, exc)
            self.host.note_snapshot_failure(self, "encode")
            return None
        return Snapshot(self.id, instance._version, self.cls.state_version, data, time.time())

    def _snapshot(self, instance: Session[Any]) -> None:
        """Encode the state now and save it in the background: the reply does not wait for it."""
        snap = self._encode_snapshot(instance)
        if snap is not None:
            self.host.spawn(self._save_snapshot, snap)

    async def _save_snapshot(self, snap: Snapshot) -> None:
        # Shielded: a shutdown lets a snapshot that is being written finish (bounded by the drain
        # timeout) rather than leave it to chance.
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(self.host.drain_timeout):
                await self.host.store.save_snapshot(snap)
            self.snapshot_version = max(self.snapshot_version, snap.version)
        except Exception as exc:
            logger.warning("session %r: snapshot at version %d failed: %s", self.id, snap.version, exc)
            self.host.note_snapshot_failure(self, "save")


def _crashed(session_id: str, exc: BaseException) -> SessionCrashed:
    err = SessionCrashed(session_id, exc)
    err.__cause__ = exc
    return err
