"""A session whose state is the tuple of the tags it recorded: the pipelining tests' subject (issue 14).

Every tag is unique in a test, so the log says exactly which call or cast got in, and the state must
be the fold of the log: ``tuple(tag for each stored event)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from runtime import Session, StoredEvent, default_registry, event


@event(name="pipe.Tagged")
class Tagged:
    tag: int


@attrs.frozen
class Tag:
    """Record ``Tagged(tag)``; a call's reply is the version after it."""

    tag: int


@attrs.frozen
class Tags:
    """Record one ``Tagged`` per tag in one ``record`` (atomic); a call's reply is the version."""

    tags: tuple[int, ...]


@attrs.frozen
class Read:
    """The reply is ``(version, state)``."""


@attrs.frozen
class Later:
    """Send ``message`` to ``handle_info`` after ``delay`` seconds (``send_after``)."""

    delay: float
    message: object


@attrs.frozen
class Crash:
    """Record ``tags`` (if any), then raise."""

    tags: tuple[int, ...] = ()


class Tagger(Session[tuple[int, ...]]):
    """Folds ``Tagged`` events into the tuple of their tags."""

    type_name = "pipe.Tagger"
    snapshot_every = 5

    def initial_state(self, args: Mapping[str, Any]) -> tuple[int, ...]:
        return ()

    def apply(self, state: tuple[int, ...], event: object) -> tuple[int, ...]:
        assert isinstance(event, Tagged)
        return (*state, event.tag)

    async def _handle(self, message: object) -> object:
        match message:
            case Tag(tag=tag):
                return await self.record(Tagged(tag))
            case Tags(tags=tags):
                return await self.record(*(Tagged(t) for t in tags))
            case Read():
                return self.version, self.state
            case Later(delay=delay, message=later):
                self.send_after(delay, later)
                return None
            case Crash(tags=tags):
                if tags:
                    await self.record(*(Tagged(t) for t in tags))
                raise RuntimeError("crash requested")
        raise ValueError(f"unexpected message {message!r}")

    async def handle_call(self, message: object) -> object:
        return await self._handle(message)

    async def handle_cast(self, message: object) -> None:
        await self._handle(message)

    async def handle_info(self, message: object) -> None:
        await self._handle(message)


def tagger(depth: int, snapshot_every: int | None = 5) -> type[Tagger]:
    """A ``Tagger`` (same type name) with ``pipeline_depth = depth``."""
    attributes = {"pipeline_depth": depth, "snapshot_every": snapshot_every}
    return type(f"Tagger{depth}", (Tagger,), attributes)


def tags_of(stored: Iterable[StoredEvent]) -> tuple[int, ...]:
    """The tags of a stored log's ``Tagged`` events, in order (status changes are skipped)."""
    out = []
    for e in stored:
        if e.type == "pipe.Tagged":
            decoded = default_registry.decode(e.type, e.schema_version, e.data)
            assert isinstance(decoded, Tagged)
            out.append(decoded.tag)
    return tuple(out)
