"""``SessionCell``: what the runtime keeps about one known session, and how messages get to it.

A cell outlives the ``Session`` instances it runs. It owns the mailbox, so a crash keeps the queued
messages; each incarnation is a fresh instance whose state is rebuilt from the store before it takes
the next message. Delivery runs in the sender's task: ``admit`` picks the mailbox (activating the
session if it has no task), ``deliver`` puts the message in it.

Who writes what: the status writer (``_status_writer``) writes ``status``; the journal
(``_journal``) writes ``version`` and ``handled_stored``; ``_reminders`` writes ``reminders`` and
``fired``; ``_idempotency`` writes ``staged``; the actor task (``_actor``) writes the rest while it
runs.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import anyio

from ._exceptions import MailboxFull, SessionError, SessionPaused, SessionStopped, ShuttingDown
from ._history import RawTransition
from ._idempotency import Staged
from ._journal import Journal
from ._mailbox import Envelope, Kind, Mailbox
from ._session import Reply, Session
from ._status import Status
from ._timers import TimerHandle, Timers
from ._window import RestartWindow

if TYPE_CHECKING:
    from ._host import SessionHost
    from ._records import Reminder
    from ._ref import SessionRef

__all__ = ["SessionCell"]

_RUNNING: Final = Status.RUNNING
_FINISH_STATUS: Final = {"completed": Status.COMPLETED, "failed": Status.FAILED}


class SessionCell:
    """Everything the runtime keeps about one known session, across its incarnations."""

    __slots__ = (
        "active",
        "args",
        "cls",
        "deferred",
        "error",
        "fired",
        "handled_stored",
        "handoff",
        "history",
        "host",
        "id",
        "instance",
        "journal",
        "last_active",
        "mailbox",
        "messages",
        "metadata",
        "metrics",
        "reminders",
        "reply",
        "restart_window",
        "restarts",
        "resuming",
        "staged",
        "started_at",
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
        self.handoff: SessionError | None = None
        """Why this node may not run the session now (another node owns it), while inactive."""
        """A quarantine's error, handed (as a copy) to every message that finds the session FAILED."""
        self.version = version
        self.journal = Journal(self)
        self.active = False
        self.mailbox: Mailbox[Envelope] | None = None
        self.instance: Session[Any] | None = None
        self.reply: Reply | None = None
        # Created on first use: most sessions never defer, set a timer or crash, and an idle
        # session should cost little (issue 2 measures 100,000 of them).
        self.deferred: list[Reply] | None = None
        self.timers: Timers | None = None
        self.history: deque[RawTransition] | None = None
        self.stop_reason: str | None = None
        self.restarts = 0
        self.restart_window: RestartWindow | None = None
        """The session's recent crashes (made by the restart strategy at its first crash)."""
        self.messages = 0
        """Messages (calls, casts, infos) handled, across processes when a limit needs it."""
        self.handled_stored = 0
        """The count of handled messages the store has (``max_messages`` is durable)."""
        self.reminders: dict[str, Reminder] | None = None
        """The session's durable reminders by name (read from the store at recovery)."""
        self.fired: Reminder | None = None
        """The reminder being handled: removed in the same append as what its handler records."""
        self.resuming = False
        """Activated at start-up (``resume_on_start``): the next incarnation has ``resumed`` set."""
        self.staged: Staged | None = None
        """The idempotent call being handled: its events wait to be appended with its reply."""
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

    @property
    def state_bytes(self) -> int:
        """``SessionView.state_bytes``: the journal's measure of the state (read by the reapers)."""
        return self.journal.state_bytes

    @property
    def transitions(self) -> int:
        """``SessionView.transitions``: transitions kept in ``history`` (read by the reapers)."""
        history = self.history
        return 0 if history is None else len(history)

    def incarnate(self, instance: Session[Any] | None = None) -> Session[Any]:
        """Bind a new instance of the session's class (or ``instance``, made by ``start``) to it."""
        if instance is None:
            instance = self.cls()
        instance._cell = self
        return instance

    # -- delivery (called by references, in the sender's task) ----------------------------------

    def admit(self, env: Envelope) -> Mailbox[Envelope]:
        """The mailbox to put ``env`` in, activating the session if needed.

        Raises:
            ShuttingDown, SessionStopped, SessionPaused, CorruptEventLog, RecoveryFailed: the session
                takes no such message now.
        """
        host = self.host
        if host.closing:
            host.metrics.rejected("shutting_down")
            raise ShuttingDown(self.id)
        status = self.status
        if status is not _RUNNING:
            if status is Status.PASSIVATED:
                host.statuses.take(self, Status.RUNNING)
            elif status is Status.PAUSED:
                if env.kind not in (Kind.RESUME, Kind.STOP):
                    raise SessionPaused(self.id, self.status_reason)
            else:
                raise self.refusal()
        if not self.active:
            self.activate()
        chain = env.chain
        if not chain or chain[-1] != self.id or host.self_sends_count:
            self.last_active = host.now()
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
        handoff = self.handoff
        if handoff is not None:  # another node owns it: OwnedElsewhere, OwnershipLost
            err = copy.copy(handoff)
            err.__traceback__ = None
            return err
        if self.error is not None:
            err = copy.copy(self.error)
            err.__traceback__ = None
            return err
        if self.status.terminal:
            return SessionStopped(self.id, self.status, self.status_reason)
        if self.status is Status.PAUSED:
            return SessionPaused(self.id, self.status_reason)
        return ShuttingDown(self.id)

    def reject(self, env: Envelope) -> None:
        """Answer a message the session will never process; count casts as dead letters."""
        if env.reply is not None:
            env.reply.fail(self.refusal())
        else:
            self.host.counters.dead_letter(self, env)

    def activate(self, initial: Session[Any] | None = None) -> None:
        """Open the mailbox and spawn the actor task (it recovers before taking messages).

        ``initial`` is the first instance of a new session, its state already initial: it needs no
        recovery.
        """
        backend = self.host.backend
        self.mailbox = Mailbox(
            self.cls.mailbox_size, trio=backend is not None and backend.is_trio, count=self.metrics.queued
        )
        self.active = True
        self.handoff = None
        self.host.spawn_actor(self, initial)

    def disown(self, error: SessionError) -> None:
        """This node lost the session's lease: the actor stops its copy, recording nothing more.

        Queued after the messages already in the mailbox (whose appends the store refuses once the
        lease has moved on); its callers, and those of every later message, get ``error``.
        """
        self.handoff = error
        mailbox = self.mailbox
        if mailbox is None:
            return
        env = Envelope(Kind.DISOWN, error, None, ())
        try:
            mailbox.put_nowait(env)
        except anyio.WouldBlock:
            self.host.spawn(_put_later, mailbox, env)
        except anyio.ClosedResourceError:
            pass

    # -- replies ----------------------------------------------------------------------------------

    def take_reply(self) -> Reply | None:
        """``defer_reply``: hand the reply of the call being handled to the handler."""
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

    def fail_deferred(self, error: SessionError) -> None:
        """Fail every deferred reply still pending (the incarnation that owed them is gone)."""
        deferred, self.deferred = self.deferred, None
        if deferred:
            for reply in deferred:
                reply.fail(error)

    def passivation_allowed(self, decided_at: float) -> bool:
        """Idle since ``decided_at``, nothing queued, nothing unconfirmed (issue 14), no call
        waiting on a deferred reply."""
        mailbox = self.mailbox
        return (
            self.status is _RUNNING
            and self.last_active <= decided_at
            and (mailbox is None or not len(mailbox))
            and not self.journal.unconfirmed
            and not any(not r.done for r in self.deferred or ())
        )

    # -- inside handlers ----------------------------------------------------------------------------

    async def finish(self, instance: Session[Any], how: str, detail: object) -> None:
        """``complete`` / ``fail``: record the terminal status now; the session ends after the turn."""
        status = _FINISH_STATUS[how]
        if self.status.terminal:
            raise SessionStopped(self.id, self.status, self.status_reason)
        if how == "completed":
            await self.host.statuses.record(self, status, None, result=detail)
        else:
            await self.host.statuses.record(self, status, detail)
        self.stop_reason = how

    def request_stop(self, instance: Session[Any], reason: str) -> None:
        if instance is self.instance:
            self.stop_reason = reason

    def send_after(self, instance: Session[Any], delay: float, message: object) -> TimerHandle:
        timers = self.timers
        if timers is None:
            timers = self.timers = Timers(self)
        return timers.start(instance, delay, message)


async def _put_later(mailbox: Mailbox[Envelope], env: Envelope) -> None:
    """Queue ``env`` once the full mailbox has room (nothing, if it closes first)."""
    try:
        await mailbox.put(env)
    except anyio.ClosedResourceError:
        pass
