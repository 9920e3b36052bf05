"""``SessionSupervisor``: the API that spawns sessions, and a well-behaved child of a tree."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

import anyio
from anyio.abc import TaskStatus

from runtime import EventRegistry, HistoryConfig, MemoryStore, Session, SessionHost
from runtime.abc import Clock, EventStore

from ._restart import RestartPolicy

__all__ = ["SessionSupervisor"]


class SessionSupervisor(SessionHost):
    """Spawns and supervises sessions: each crashed session is restarted from its event log.

    Use it as ``async with SessionSupervisor(...) as sessions:``, or as a child of a
    :class:`Supervisor` tree (its ``run`` follows anyio's ``task_status`` protocol). Leaving it
    rejects new work with ``ShuttingDown``, lets queued messages finish for up to ``drain_timeout``
    seconds, runs ``on_stop("shutdown")`` once per live session and leaves no task behind.

    Args:
        store: the event store (default: a fresh ``MemoryStore``).
        session_types: classes of sessions that an earlier process may have stored.
        restarts: the per-session restart budget and backoff.
        clock: where timers and backoff read time (default: anyio's clock).
        events: the event registry (default: the one ``@event`` fills).
        drain_timeout: how long shutdown lets queued messages finish.
        max_concurrent_recoveries: how many sessions may replay their logs at once.
        history: how many recent transitions each session keeps.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        *,
        store: EventStore | None = None,
        session_types: Iterable[type[Session[Any]]] = (),
        restarts: RestartPolicy | None = None,
        clock: Clock | None = None,
        events: EventRegistry | None = None,
        drain_timeout: float = 5.0,
        max_concurrent_recoveries: int = 50,
        history: HistoryConfig | None = None,
    ) -> None:
        self.restart_policy = restarts or RestartPolicy()
        super().__init__(
            store=store if store is not None else MemoryStore(),
            restarts=self.restart_policy,
            session_types=session_types,
            clock=clock,
            events=events,
            drain_timeout=drain_timeout,
            max_concurrent_recoveries=max_concurrent_recoveries,
            history=history,
        )

    def __repr__(self) -> str:
        return f"<SessionSupervisor store={self.store!r} sessions={len(self.cells())}>"

    async def run(
        self, *, task_status: TaskStatus[SessionSupervisor] = anyio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Run until cancelled, as a child of a ``Supervisor`` (``await tg.start(sessions.run)``).

        Session crashes stay inside (per-session budgets); only a failure of the supervisor's own
        machinery (its store failing to open, say) escapes, and the tree treats that as its crash.
        """
        async with self:
            task_status.started(self)
            await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover
