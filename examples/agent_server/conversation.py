"""An AI-agent conversation as a session: every message, tool call and approval is an event.

A user's ``Ask`` records their message and starts the agent loop: one iteration per message the
conversation sends itself (``send_after(0, Step())``), each deciding (``model.decide``) to call a
tool, ask for approval, answer or give up. The ``Ask`` is answered (``defer_reply``) when the agent
answers, needs approval, or gives up. Each iteration is a message, so ``ReaperPolicy(max_messages=N)``
bounds them: a conversation that loops ends as ``TIMED_OUT``.

A crash (a tool outage) restarts the conversation from its log: the tool calls already recorded are
not made again, and ``on_start`` picks the loop up where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from runtime import NoReply, Reply, Session, event

from .model import Answer, AskApproval, CallTool, GiveUp, Seen, Toolbox, decide

__all__ = [
    "ApprovalGiven",
    "ApprovalRequested",
    "Ask",
    "AwaitAnswer",
    "Conversation",
    "ConversationState",
    "MessageAdded",
    "Review",
    "Step",
    "ToolCalled",
]

Answered = dict[str, object]

MAX_QUESTION = 4000
"""The longest question a conversation takes, in characters (a longer one is refused, not recorded)."""
MAX_REVIEWER = 64

# -- events ---------------------------------------------------------------------------------------


@event(name="agent.MessageAdded")
class MessageAdded:
    """A message of the conversation: ``role`` is "user" or "assistant"."""

    role: str
    content: str
    timestamp: float


@event(name="agent.ToolCalled")
class ToolCalled:
    tool: str
    arguments: dict[str, str]
    output: str
    timestamp: float


@event(name="agent.ApprovalRequested")
class ApprovalRequested:
    tool: str
    arguments: dict[str, str]
    reason: str
    timestamp: float


@event(name="agent.ApprovalGiven")
class ApprovalGiven:
    approved: bool
    reviewer: str
    timestamp: float


# -- state ------------------------------------------------------------------------------------------


@attrs.frozen
class ConversationState:
    messages: tuple[MessageAdded, ...] = ()
    tool_calls: tuple[ToolCalled, ...] = ()
    """The tool calls since the last user message."""
    pending: ApprovalRequested | None = None
    approval: bool | None = None
    iterations: int = 0
    answer: str | None = None

    @property
    def thinking(self) -> bool:
        """The user is waiting and the agent has more to do (not waiting for a human)."""
        return (
            self.answer is None
            and self.pending is None
            and bool(self.messages)
            and (self.messages[-1].role == "user" or self.approval is not None or bool(self.tool_calls))
        )


# -- messages ---------------------------------------------------------------------------------------


@attrs.frozen
class Ask:
    text: str


@attrs.frozen
class AwaitAnswer:
    """Answered like ``Ask`` (after a crash took the ``Ask``'s reply)."""


@attrs.frozen
class Review:
    approved: bool
    reviewer: str


@attrs.frozen
class Step:
    """To itself: one iteration of the agent loop."""


# -- the session --------------------------------------------------------------------------------------


class Conversation(Session[ConversationState]):
    type_name = "agent.Conversation"
    snapshot_every = 20
    toolbox: ClassVar[Toolbox] = Toolbox()

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Reply] = []

    def initial_state(self, args: Mapping[str, Any]) -> ConversationState:
        return ConversationState()

    def apply(self, state: ConversationState, event: object) -> ConversationState:
        match event:
            case MessageAdded(role="user"):
                return ConversationState(messages=(*state.messages, event), iterations=state.iterations)
            case MessageAdded(role="assistant", content=content):
                return attrs.evolve(
                    state, messages=(*state.messages, event), answer=content, iterations=state.iterations + 1
                )
            case ToolCalled():
                return attrs.evolve(
                    state, tool_calls=(*state.tool_calls, event), iterations=state.iterations + 1
                )
            case ApprovalRequested():
                return attrs.evolve(state, pending=event, iterations=state.iterations + 1)
            case ApprovalGiven(approved=approved):
                return attrs.evolve(state, pending=None, approval=approved)
        return state

    async def on_start(self) -> None:
        if self.state.thinking:
            # Restarted (or reactivated) in the middle of the loop: carry on from the log.
            self.send_after(0, Step())

    async def handle_call(self, message: object) -> object:
        state = self.state
        match message:
            case Ask(text=text):
                if (problem := _bad_text(text, MAX_QUESTION)) is not None:
                    return {"status": "rejected", "field": "text", "message": f"a question {problem}"}
                if state.thinking or state.pending is not None:
                    return {"status": "busy", "message": "the agent is still on the last question"}
                await self.record(MessageAdded("user", text, time.time()))
                self.send_after(0, Step())
                return self.wait()
            case AwaitAnswer():
                if state.pending is not None:
                    return self.needs_approval(state.pending)
                return self.wait()
            case Review(approved=approved, reviewer=reviewer):
                if not _is_bool(approved):  # attrs does not check types: a message may come from JSON
                    return {"status": "rejected", "field": "approved", "message": "approved is true or false"}
                if (problem := _bad_text(reviewer, MAX_REVIEWER)) is not None:
                    return {"status": "rejected", "field": "reviewer", "message": f"a reviewer {problem}"}
                if state.pending is None:
                    return {"status": "error", "message": "nothing is waiting for approval"}
                await self.record(ApprovalGiven(approved, reviewer, time.time()))
                self.send_after(0, Step())
                return self.wait()
        # An answer, not a crash: a caller's mistake must not spend the conversation's restarts.
        return {"status": "error", "message": f"unexpected call {type(message).__name__}"}

    def wait(self) -> object:
        self.waiting.append(self.defer_reply())
        return NoReply

    def tell(self, answer: Answered) -> None:
        waiting, self.waiting = self.waiting, []
        for reply in waiting:
            reply.send(answer)

    @staticmethod
    def needs_approval(request: ApprovalRequested) -> Answered:
        return {
            "status": "needs_approval",
            "tool": request.tool,
            "arguments": dict(request.arguments),
            "reason": request.reason,
        }

    async def handle_info(self, message: object) -> None:
        if not isinstance(message, Step) or not self.state.thinking:
            return
        state = self.state
        question = next(m.content for m in reversed(state.messages) if m.role == "user")
        seen = Seen(
            question,
            tuple((c.tool, c.arguments, c.output) for c in state.tool_calls),
            state.approval,
        )
        match decide(seen):
            case CallTool(tool=tool, arguments=arguments):
                # A tool outage raises here: the conversation crashes and retries after its restart.
                output = await self.toolbox.run(self.id, tool, arguments)
                await self.record(ToolCalled(tool, dict(arguments), output, time.time()))
                self.send_after(0, Step())
            case AskApproval(tool=tool, arguments=arguments, reason=reason):
                request = ApprovalRequested(tool, dict(arguments), reason, time.time())
                await self.record(request)
                self.tell(self.needs_approval(request))
            case Answer(text=text):
                await self.record(MessageAdded("assistant", text, time.time()))
                self.tell({"status": "answered", "answer": text, "iterations": self.state.iterations})
                await self.complete({"answer": text, "iterations": self.state.iterations})
            case GiveUp(reason=reason):
                await self.record(MessageAdded("assistant", f"Sorry, I cannot: {reason}.", time.time()))
                self.tell({"status": "gave_up", "reason": reason, "iterations": self.state.iterations})
                await self.fail(reason)


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _bad_text(text: object, longest: int) -> str | None:
    """What is wrong with ``text`` as a user's text (``None``: nothing): it is recorded as an event."""
    if not isinstance(text, str):
        return f"is text, not {type(text).__name__}"
    if not text.strip():
        return "is not empty"
    if len(text) > longest:
        return f"is {longest} characters at most, got {len(text)}"
    try:
        text.encode()
    except UnicodeEncodeError:
        return "is valid Unicode (a lone surrogate is not)"
    if "\x00" in text:
        return "has no NUL character"
    return None
