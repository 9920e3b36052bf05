"""A session that schedules durable reminders on request and records what they bring."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from runtime import Session, event
from runtime.abc import Clock


@event(name="test.Ping")
class Ping:
    """A reminder's message."""

    label: str


@event(name="test.Pinged")
class Pinged:
    label: str


class Alarm(Session[list[str]]):
    """Calls: ("schedule", name, delay, label), ("unschedule", name), "reminders", "state", "crash".

    A reminder with label "quiet" records nothing; a label in ``crash_once`` crashes its handler
    the first time (before recording).
    """

    clock: ClassVar[Clock | None] = None
    fired: ClassVar[list[tuple[str, float, str]]] = []
    """(session id, time on ``clock``, label) of every delivery."""
    crash_once: ClassVar[set[str]] = set()
    starts: ClassVar[list[tuple[str, bool]]] = []
    """(session id, resumed) of every on_start."""

    def initial_state(self, args: Mapping[str, Any]) -> list[str]:
        return []

    def apply(self, state: list[str], event: object) -> list[str]:
        assert isinstance(event, Pinged)
        return [*state, event.label]

    async def on_start(self) -> None:
        Alarm.starts.append((self.id, self.resumed))

    async def handle_call(self, message: object) -> object:
        match message:
            case ("schedule", str(name), delay, str(label)):
                await self.schedule(name, delay, Ping(label))  # type: ignore[arg-type]
                return None
            case ("schedule_raw", name, delay, payload):
                await self.schedule(name, delay, payload)  # type: ignore[arg-type]
                return None
            case ("unschedule", name):
                return await self.unschedule(name)  # type: ignore[arg-type]
            case "reminders":
                return dict(self.reminders)
            case "state":
                return self.state
            case "crash":
                raise RuntimeError("asked to crash")
        raise ValueError(message)

    async def handle_info(self, message: object) -> None:
        now = Alarm.clock.now() if Alarm.clock is not None else 0.0
        label = message.label if isinstance(message, Ping) else repr(message)
        Alarm.fired.append((self.id, now, label))
        if label in Alarm.crash_once:
            Alarm.crash_once.discard(label)
            raise RuntimeError(f"crash on {label}")
        if label != "quiet":
            await self.record(Pinged(label))


class Resumable(Alarm):
    """An ``Alarm`` that is activated at start-up when it was running."""

    resume_on_start = True
