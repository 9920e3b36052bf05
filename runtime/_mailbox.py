"""What travels through a session's bounded mailbox, and the call chain used to detect call cycles."""

from __future__ import annotations

import enum
from contextvars import ContextVar
from typing import TYPE_CHECKING, final

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

if TYPE_CHECKING:
    from ._session import Reply

__all__ = ["CALL_CHAIN", "Envelope", "Kind", "Mailbox", "open_mailbox"]


class Kind(enum.Enum):
    """What a message is, and so which callback handles it."""

    CALL = "call"
    CAST = "cast"
    INFO = "info"
    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"


@final
class Envelope:
    """One message in a mailbox.

    ``chain`` is the call chain of the sender (the sessions waiting on this message, innermost last);
    ``reply`` is set for calls and for the system messages that answer (stop, pause, resume).
    """

    __slots__ = ("chain", "kind", "message", "reply")

    def __init__(self, kind: Kind, message: object, reply: Reply | None, chain: tuple[str, ...]) -> None:
        self.kind = kind
        self.message = message
        self.reply = reply
        self.chain = chain

    def __repr__(self) -> str:
        return f"<Envelope {self.kind.value} {self.message!r}>"


Mailbox = tuple[MemoryObjectSendStream[Envelope], MemoryObjectReceiveStream[Envelope]]


def open_mailbox(size: int) -> Mailbox:
    """A bounded mailbox: anyio's memory object stream, which does the waiting and closing for us."""
    return anyio.create_memory_object_stream[Envelope](size)


CALL_CHAIN: ContextVar[tuple[str, ...]] = ContextVar("sessionvisor_call_chain", default=())
"""The ids of the sessions whose handler the current task runs inside, outermost first.

An actor's task runs with its own id in the chain, and with the caller's chain before it while it
handles a call, so that ``A -> A`` and ``A -> B -> A`` are seen before they deadlock.
"""
