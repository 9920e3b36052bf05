"""Lifecycle notifications: every status change of every session, to whoever subscribes.

Publishing never blocks a session: each subscriber has its own bounded buffer, and what does not
fit is dropped and counted (a slow subscriber loses notifications, never slows the runtime).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self, final

import anyio
import attrs

from ._mailbox import Mailbox
from ._status import Status

__all__ = ["LifecycleEvent", "LifecycleHub", "LifecycleSubscription"]

logger = logging.getLogger(__name__)


@attrs.frozen
class LifecycleEvent:
    """A session changed status.

    Attributes:
        session_id, type: which session.
        status: the new status; ``previous`` the old one (``None`` for a new session).
        reason: why, when known (a pause reason, "idle", "max_age", a failure...).
        version: the session's log length after the change.
        at: wall-clock time (``time.time()``), for display.
        metadata: the session's metadata (what it was started with: user, channel...).

    .. versionchanged:: 0.1 ``metadata``.
    """

    session_id: str
    type: str
    status: Status
    previous: Status | None
    reason: str | None
    version: int
    at: float
    metadata: Mapping[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "session_id": self.session_id,
            "type": self.type,
            "status": self.status.value,
            "previous": None if self.previous is None else self.previous.value,
            "reason": self.reason,
            "version": self.version,
            "at": self.at,
            "metadata": dict(self.metadata),
        }


@final
class LifecycleSubscription:
    """An async iterator of ``LifecycleEvent``\\ s; ends when the supervisor shuts down or on close.

    Use it as ``async with sessions.lifecycle() as events: async for e in events: ...`` or iterate
    ``sessions.lifecycle()`` directly. ``dropped`` counts the events that did not fit its buffer.
    """

    def __init__(self, hub: LifecycleHub, buffer: int) -> None:
        self._hub = hub
        self._box: Mailbox[LifecycleEvent] = Mailbox(buffer)
        self.dropped = 0

    def offer(self, event: LifecycleEvent) -> None:
        try:
            self._box.put_nowait(event)
        except anyio.WouldBlock:
            self.dropped += 1
            self._hub.dropped += 1
        except anyio.ClosedResourceError:
            pass

    def close(self) -> None:
        self._box.close()
        self._hub.unsubscribe(self)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> LifecycleEvent:
        try:
            return await self._box.get()
        except anyio.EndOfStream:
            self._hub.unsubscribe(self)
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@final
class LifecycleHub:
    """Fans lifecycle events out to subscriptions."""

    def __init__(self) -> None:
        self._subscriptions: list[LifecycleSubscription] = []
        self.published = 0
        self.dropped = 0

    def subscribe(self, buffer: int = 1000) -> LifecycleSubscription:
        sub = LifecycleSubscription(self, buffer)
        self._subscriptions.append(sub)
        return sub

    def unsubscribe(self, sub: LifecycleSubscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)

    def publish(self, event: LifecycleEvent) -> None:
        self.published += 1
        for sub in self._subscriptions:
            sub.offer(event)

    def close(self) -> None:
        for sub in list(self._subscriptions):
            sub.close()
