"""``SessionRef``: how the rest of the program talks to a session."""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import anyio
import anyio.lowlevel

from ._exceptions import CallCycle, CallTimeout, InvalidTimeout, OperationTimeout
from ._idempotency import Idempotent
from ._mailbox import CALL_CHAIN, Envelope, Kind
from ._session import Reply

if TYPE_CHECKING:
    from ._cell import SessionCell
    from ._host import SessionHost
    from ._status import Status

__all__ = ["SessionRef"]

_CALL = Kind.CALL
_INF = float("inf")
_CAST = Kind.CAST


@final
class SessionRef:
    """A reference to a session, valid across its restarts and passivation.

    Get one from ``sessions.start``, ``sessions.get`` or ``sessions.ref``. A message to a passivated
    session (or, after a process restart, a persisted one) activates it transparently.

    .. versionadded:: 0.1
    """

    __slots__ = ("_cell", "_host", "id")

    def __init__(self, host: SessionHost, session_id: str, cell: SessionCell | None = None) -> None:
        self._host = host
        self._cell = cell
        self.id = session_id

    def __repr__(self) -> str:
        return f"SessionRef({self.id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionRef):
            return NotImplemented
        return self.id == other.id and self._host is other._host

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def status(self) -> Status | None:
        """The session's status as this process knows it (``None`` if it was never looked up)."""
        cell = self._cell or self._host.cached(self.id)
        return None if cell is None else cell.status

    async def _resolve(self) -> SessionCell:
        cell = self._cell
        if cell is None or self._host.cached(self.id) is not cell:
            cell = self._cell = await self._host.cell(self.id)
        return cell

    async def call(
        self, message: object, *, timeout: float | None = 5.0, idempotency_key: str | None = None
    ) -> object:
        """Send ``message`` to ``handle_call`` and return its reply.

        With ``idempotency_key``, the call may be retried safely (after a timeout, a crash or a
        restart of the process): the events the handler records and its reply (as JSON) are
        stored in one append under the key, and a later call with the same key to this session
        returns that stored reply (as its JSON value: an attrs reply comes back as a dict)
        without running the handler. The handler sees its own events at once, but they become
        durable together, when it returns; if it raises, none of them is kept. The newest
        ``Session.idempotency_keys_kept`` keys of each session are kept (1,000 by default).

        .. versionchanged:: 0.2
           ``idempotency_key``.

        ``timeout`` is read on the supervisor's clock (an injected ``ManualClock`` moves it).

        Raises:
            CallTimeout: no reply within ``timeout`` seconds (the handler keeps running; its reply
                is dropped).
            InvalidTimeout: ``timeout`` is not a finite number >= 0 or ``None`` (nothing is sent).
            CallCycle: the target is already waiting further up this call chain.
            SessionCrashed: the handler raised (the original exception is the ``__cause__``).
            SessionNotFound, SessionStopped, SessionPaused, ShuttingDown: it was not delivered.
        """
        chain = CALL_CHAIN.get()
        if chain and self.id in chain:
            raise CallCycle(self.id, chain)
        if idempotency_key is not None:
            if not isinstance(idempotency_key, str) or not idempotency_key:
                raise ValueError(f"idempotency_key must be a non-empty str, not {idempotency_key!r}")
            message = Idempotent(idempotency_key, message)
        cell = self._cell
        if cell is None or cell.host.cached(self.id) is not cell:
            cell = await self._resolve()
        backend = cell.host.backend
        reply = Reply(self.id, trio=None if backend is None else backend.is_trio)
        env = Envelope(_CALL, message, reply, chain)
        if timeout is None:
            await cell.deliver(env)
            await reply.wait()
        else:
            if not 0 <= timeout < _INF:  # NaN fails both comparisons
                raise InvalidTimeout(self.id, "call", timeout)
            deadlines = cell.host.deadlines
            deadline = deadlines.now() + timeout
            mailbox = cell.admit(env)
            try:
                mailbox.put_nowait(env)
            except anyio.WouldBlock:
                # A full mailbox: wait for room within the timeout (the slow path has a scope).
                if not await _deliver_by(cell, env, deadline, timeout):
                    reply.done = True
                    raise CallTimeout(self.id, timeout) from None
            except anyio.ClosedResourceError:
                raise cell.refusal() from None
            key = deadlines.add(reply, deadline, timeout)
            try:
                # ``reply.wait()``, inlined: one call less per call.
                if reply.done:
                    await anyio.lowlevel.checkpoint()
                else:
                    await reply.park()
            finally:
                deadlines.discard(reply, key)
                reply.done = True  # a late reply, if any, goes nowhere
        return reply.unwrap()

    async def cast(self, message: object) -> None:
        """Send ``message`` to ``handle_cast``, waiting while the mailbox is full."""
        cell = self._cell
        if cell is None or cell.host.cached(self.id) is not cell:
            cell = await self._resolve()
        backend = cell.host.backend
        # A cast always yields once (as anyio's stream send does), even when the mailbox has room.
        await (backend.checkpoint() if backend is not None else anyio.lowlevel.checkpoint())
        await cell.deliver(Envelope(_CAST, message, None, CALL_CHAIN.get()))

    def cast_nowait(self, message: object) -> None:
        """Send ``message`` to ``handle_cast`` now.

        Raises:
            MailboxFull: the mailbox is full (subclasses ``anyio.WouldBlock``).
            SessionNotFound: the session is not loaded in this process (use ``await cast()``).
        """
        cell = self._cell
        if cell is None or cell.host.cached(self.id) is not cell:
            cell = self._cell = self._host.cell_nowait(self.id)
        cell.deliver_nowait(Envelope(_CAST, message, None, CALL_CHAIN.get()))

    async def _system(self, kind: Kind, message: object, timeout: float | None) -> None:
        operation = kind.value
        if timeout is not None and not 0 <= timeout < _INF:
            raise InvalidTimeout(self.id, operation, timeout)
        cell = await self._resolve()
        if kind is Kind.STOP and cell.status.terminal:
            return  # stopped (or otherwise ended) already: stopping again changes nothing
        reply = Reply(self.id)
        env = Envelope(kind, message, reply, CALL_CHAIN.get())
        if timeout is None:
            await cell.deliver(env)
            await reply.wait()
        else:
            deadlines = cell.host.deadlines
            deadline = deadlines.now() + timeout
            if not await _deliver_by(cell, env, deadline, timeout):
                raise OperationTimeout(self.id, operation, timeout)
            key = deadlines.add(reply, deadline, timeout, operation)
            try:
                await reply.wait()
            finally:
                deadlines.discard(reply, key)
                reply.done = True
        reply.unwrap()

    async def stop(self, reason: str = "normal", *, timeout: float | None = 5.0) -> None:
        """Stop the session as ``STOPPED`` after the messages queued before this one.

        Stopping a session that has ended already (stopped, completed, timed out...) does nothing.

        Raises:
            OperationTimeout: no answer within ``timeout`` seconds (the request stays queued).
            InvalidTimeout: ``timeout`` is not a finite number >= 0 or ``None``.
        """
        await self._system(Kind.STOP, reason, timeout)

    async def pause(self, reason: str | None = None, *, timeout: float | None = 5.0) -> None:
        """Pause the session: it processes nothing, and messages raise ``SessionPaused``.

        Raises:
            OperationTimeout: no answer within ``timeout`` seconds (the request stays queued).
            InvalidTimeout: ``timeout`` is not a finite number >= 0 or ``None``.
        """
        await self._system(Kind.PAUSE, reason, timeout)

    async def resume(self, *, timeout: float | None = 5.0) -> None:
        """Resume a paused session.

        Raises:
            OperationTimeout: no answer within ``timeout`` seconds (the request stays queued).
            InvalidTimeout: ``timeout`` is not a finite number >= 0 or ``None``.
        """
        await self._system(Kind.RESUME, None, timeout)


async def _deliver_by(cell: SessionCell, env: Envelope, deadline: float, timeout: float) -> bool:
    """Deliver ``env``, waiting for room until ``deadline`` on the host's clock; ``False`` if late."""
    deadlines = cell.host.deadlines
    with anyio.CancelScope() as scope:
        key = deadlines.add(scope, deadline, timeout)
        try:
            await cell.deliver(env)
        finally:
            deadlines.discard(scope, key)
    return not scope.cancelled_caught
