"""Every error the runtime raises at its public surface.

Each error builds its message in ``__init__`` from the data it keeps as attributes, so that callers can
both read a sentence that names the session and what to do, and branch on the fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from ._status import Status

__all__ = [
    "CallCycle",
    "CallTimeout",
    "CorruptEventLog",
    "HandlerMisuse",
    "InvalidReminder",
    "InvalidSessionId",
    "InvalidTimeout",
    "InvalidTransition",
    "MailboxFull",
    "OperationTimeout",
    "OwnedElsewhere",
    "OwnershipLost",
    "RateLimited",
    "RecoveryFailed",
    "SessionCrashed",
    "SessionError",
    "SessionExists",
    "SessionNotEnded",
    "SessionNotFound",
    "SessionPaused",
    "SessionStopped",
    "ShuttingDown",
    "SnapshotRefused",
    "StoreError",
    "TooManySessions",
    "TypeNameTaken",
    "UnencodableValue",
    "UnknownEventType",
    "UnknownSessionType",
    "UnstorableReply",
    "VersionConflict",
]


class SessionError(Exception):
    """Root of every error raised by sessionvisor's runtime.

    Attributes:
        session_id: the session the error is about, or ``None`` when it is about no one session.
    """

    session_id: str | None

    def __init__(self, message: str, *, session_id: str | None = None) -> None:
        super().__init__(message)
        self.session_id = session_id

    def __reduce__(self) -> tuple[object, ...]:
        # The subclasses' __init__ take their data, not the message: rebuild from both, so that
        # copy.copy works for every one of them (the runtime hands each caller its own copy of a
        # quarantine error).
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[SessionError], args: tuple[object, ...], state: dict[str, object]) -> SessionError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class SessionNotFound(SessionError, LookupError):
    """No session with this id is active, passivated or persisted."""

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"session {session_id!r} is not known: start it first with sessions.start(), "
            "or check the id (sessions.list() shows the known ones)",
            session_id=session_id,
        )


class InvalidSessionId(SessionError, ValueError):
    """A session id breaks the rule every store enforces (see :func:`runtime.check_session_id`).

    ``session_id`` is the offending id when it is text (possibly shortened in the message);
    ``problem`` says which part of the rule it breaks.

    .. versionadded:: 0.2
    """

    def __init__(self, session_id: object, problem: str) -> None:
        shown = (
            session_id
            if not isinstance(session_id, str) or len(session_id) <= 80
            else (session_id[:80] + "...")
        )
        super().__init__(
            f"invalid session id {shown!r}: {problem}; a session id is non-empty text of at most "
            "256 bytes in UTF-8, without NUL characters or lone surrogates",
            session_id=session_id if isinstance(session_id, str) else None,
        )
        self.problem = problem


class SessionExists(SessionError):
    """A session with this id already exists (active or persisted)."""

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"session {session_id!r} already exists: use sessions.get({session_id!r}) to talk to it, "
            "or start the new one under another id (or none, to get a generated one)",
            session_id=session_id,
        )


class SessionCrashed(SessionError):
    """The session's handler raised while processing this message.

    The original exception is attached as ``__cause__`` (and as ``reason``). The message that caused the
    crash was dropped; the session restarts from its log and carries on with its next message.
    """

    def __init__(self, session_id: str, reason: BaseException) -> None:
        super().__init__(
            f"session {session_id!r} crashed while handling this message "
            f"({type(reason).__name__}: {reason}); the message was dropped and the session restarts "
            "from its event log, so retry if the operation is still wanted",
            session_id=session_id,
        )
        self.reason = reason


class CallTimeout(SessionError, TimeoutError):
    """No reply arrived within the call's timeout. The handler is not cancelled; its reply is dropped."""

    def __init__(self, session_id: str, timeout: float) -> None:
        super().__init__(
            f"call to session {session_id!r} got no reply within {timeout:g}s; the handler keeps "
            "running and its late reply is dropped: raise the timeout or make the handler answer "
            "sooner (defer_reply)",
            session_id=session_id,
        )
        self.timeout = timeout


class OperationTimeout(CallTimeout):
    """``stop``, ``pause`` or ``resume`` got no answer within its timeout.

    The request stays queued: the session still takes it in turn, after the messages before it.

    .. versionadded:: 0.2
    """

    def __init__(self, session_id: str, operation: str, timeout: float) -> None:
        SessionError.__init__(
            self,
            f"{operation} of session {session_id!r} got no answer within {timeout:g}s; the request "
            f"stays queued and the session still takes it after the messages before it: wait "
            "longer, or look at what keeps the session busy (sessions.inspect)",
            session_id=session_id,
        )
        self.timeout = timeout
        self.operation = operation


class InvalidTimeout(SessionError, ValueError):
    """A timeout that is not a finite number of seconds >= 0 (``None`` means no timeout).

    Raised before anything is sent: the session never sees the message.

    .. versionadded:: 0.2
    """

    def __init__(self, session_id: str, operation: str, timeout: object) -> None:
        super().__init__(
            f"{operation} to session {session_id!r} with timeout={timeout!r}: a timeout is a finite "
            "number of seconds >= 0, or None to wait as long as it takes; nothing was sent",
            session_id=session_id,
        )
        self.operation = operation
        self.timeout = timeout


class CallCycle(SessionError):
    """The call would wait on a session that is itself waiting further up the same call chain."""

    def __init__(self, session_id: str, chain: tuple[str, ...]) -> None:
        path = " -> ".join((*chain, session_id))
        super().__init__(
            f"call to session {session_id!r} would deadlock ({path}): a session cannot call itself "
            "or a session that is waiting on it; use cast, or defer_reply and answer later",
            session_id=session_id,
        )
        self.chain = chain


class MailboxFull(SessionError, anyio.WouldBlock):
    """``cast_nowait`` found the session's bounded mailbox full."""

    def __init__(self, session_id: str, size: int) -> None:
        super().__init__(
            f"mailbox of session {session_id!r} is full ({size} messages): slow down, use cast() "
            "to wait for room, or raise the session class's mailbox_size",
            session_id=session_id,
        )
        self.size = size


class SessionStopped(SessionError):
    """The session is in a terminal status and takes no more messages."""

    def __init__(self, session_id: str, status: Status, reason: object = None) -> None:
        why = f" ({reason})" if reason is not None else ""
        super().__init__(
            f"session {session_id!r} is {status.value}{why} and takes no more messages: start a new "
            "session, or revive() it if it was abandoned or timed out",
            session_id=session_id,
        )
        self.status = status
        self.reason = reason


class SessionPaused(SessionError):
    """The session is paused and processes nothing until it is resumed."""

    def __init__(self, session_id: str, reason: object = None) -> None:
        why = f" ({reason})" if reason is not None else ""
        super().__init__(
            f"session {session_id!r} is paused{why}: call resume() on its reference first",
            session_id=session_id,
        )
        self.reason = reason


class TooManySessions(SessionError):
    """Starting this session would exceed ``ReaperPolicy.max_sessions``."""

    def __init__(self, session_id: str, limit: int) -> None:
        super().__init__(
            f"cannot start session {session_id!r}: the limit of {limit} sessions is reached; "
            "complete or stop idle sessions, raise max_sessions, or use on_limit='evict_idle'",
            session_id=session_id,
        )
        self.limit = limit


class RateLimited(SessionError):
    """Starting this session would exceed ``ReaperPolicy.max_starts_per_second``."""

    def __init__(self, session_id: str, rate: float) -> None:
        super().__init__(
            f"cannot start session {session_id!r}: more than {rate:g} starts per second; "
            "retry shortly or raise max_starts_per_second",
            session_id=session_id,
        )
        self.rate = rate


class ShuttingDown(SessionError):
    """The supervisor is shutting down (or has shut down) and takes no new work."""

    def __init__(self, session_id: str | None = None) -> None:
        who = f" for session {session_id!r}" if session_id is not None else ""
        super().__init__(
            f"the session supervisor is shutting down and takes no new work{who}: retry against "
            "the supervisor that replaces it",
            session_id=session_id,
        )


class StoreError(SessionError):
    """The event store failed; nothing was recorded and the session's state is unchanged."""

    def __init__(self, session_id: str | None, action: str, detail: str) -> None:
        who = f" for session {session_id!r}" if session_id is not None else ""
        super().__init__(
            f"event store failed to {action}{who}: {detail}; nothing was recorded and the state is "
            "unchanged, so the operation can be retried once the store is healthy",
            session_id=session_id,
        )
        self.action = action
        self.detail = detail


class VersionConflict(StoreError):
    """Another writer appended to this session's log: this copy of the session is stale."""

    def __init__(self, session_id: str, expected: int, actual: int) -> None:
        SessionError.__init__(
            self,
            f"session {session_id!r} was written by another writer (expected version {expected}, "
            f"store has {actual}): this copy stopped rather than fork the history; only one "
            "supervisor may own a session at a time, and the next message reloads it from the log",
            session_id=session_id,
        )
        self.action = "append"
        self.detail = f"expected version {expected}, found {actual}"
        self.expected = expected
        self.actual = actual


class CorruptEventLog(SessionError):
    """The stored log cannot be replayed as it is (gap, duplicate, undecodable payload, ...)."""

    def __init__(self, session_id: str, version: int, problem: str) -> None:
        super().__init__(
            f"event log of session {session_id!r} is corrupt at version {version}: {problem}; the "
            "session is quarantined as FAILED and its log left untouched: inspect it with "
            f"`sessionvisor history {session_id}` and repair or delete it",
            session_id=session_id,
        )
        self.version = version
        self.problem = problem


class RecoveryFailed(SessionError):
    """Replaying the log raised (``apply`` or ``initial_state`` failed on stored events)."""

    def __init__(self, session_id: str, version: int, reason: BaseException) -> None:
        super().__init__(
            f"session {session_id!r} could not be recovered: replaying event {version} raised "
            f"{type(reason).__name__}: {reason}; the session is quarantined as FAILED and its log "
            "left untouched: fix apply() (it must accept every stored event) or add an upcaster",
            session_id=session_id,
        )
        self.version = version
        self.reason = reason


class UnknownEventType(SessionError, LookupError):
    """An event type name/version is not registered and no upcaster leads to a registered one."""

    def __init__(self, type_name: str, version: int, session_id: str | None = None) -> None:
        who = f" in session {session_id!r}" if session_id is not None else ""
        super().__init__(
            f"event type {type_name!r} version {version}{who} is not registered: import the module "
            "that declares it with @event (or pass --app to the command line), or register an "
            f"@upcaster({type_name!r}, from_version={version})",
            session_id=session_id,
        )
        self.type_name = type_name
        self.version = version


class InvalidTransition(SessionError, ValueError):
    """The session's declared state machine does not allow this event in its current state."""

    def __init__(self, session_id: str, label: str, event_type: str, allowed: tuple[str, ...]) -> None:
        may = ", ".join(allowed) if allowed else "none"
        super().__init__(
            f"session {session_id!r} cannot record {event_type!r} while {label!r} (allowed there: "
            f"{may}); nothing was recorded and the session carries on",
            session_id=session_id,
        )
        self.label = label
        self.event_type = event_type
        self.allowed = allowed


class OwnedElsewhere(SessionError):
    """Another live node owns this session: send the message there (``node``, ``address``).

    .. versionadded:: 0.2
    """

    def __init__(self, session_id: str, node: str, address: str | None) -> None:
        where = f" at {address}" if address else ""
        super().__init__(
            f"session {session_id!r} is owned by node {node!r}{where}: send the message there (a "
            "client can be redirected to that address); the lease moves only once that node "
            "releases it or stops renewing it",
            session_id=session_id,
        )
        self.node = node
        self.address = address


class OwnershipLost(SessionError):
    """This node's lease on the session moved on: this copy stopped, and nothing it recorded since is kept.

    ``epoch`` is the lease's epoch this node held (``None``: it held none); ``owner`` is the node that
    holds the lease now (``None`` when nobody does, or when that is not known).

    .. versionadded:: 0.2
    """

    def __init__(self, session_id: str, node: str, epoch: int | None, owner: str | None = None) -> None:
        now = f"node {owner!r} owns it now" if owner else "no node owns it now"
        lease = "holds no lease on" if epoch is None else f"lost its lease (epoch {epoch}) on"
        super().__init__(
            f"node {node!r} {lease} session {session_id!r} ({now}): this copy stopped without "
            "recording anything more, so nothing acknowledged is lost; send the message again, to the "
            "session's owner (sessions.locate() says where)",
            session_id=session_id,
        )
        self.node = node
        self.epoch = epoch
        self.owner = owner


class UnencodableValue(SessionError, ValueError):
    """A value the JSON codec would not give back exactly: refused before anything is written.

    NaN and infinities (not JSON), integers outside ``[-2**63, 2**64)`` (the range every supported
    parser reads back exactly) and objects the codec cannot turn into JSON.

    Attributes:
        path: where the value is, e.g. ``"Scored.points"`` (an event's type and field) or
            ``"state.players[2].joined_at"``.
        value: the value itself.
        reason: why it cannot be stored.

    .. versionadded:: 0.2
    """

    def __init__(self, path: str, value: object, reason: str, *, session_id: str | None = None) -> None:
        who = f"session {session_id!r}: " if session_id is not None else ""
        super().__init__(
            f"{who}{path} = {describe_value(value)} cannot be stored exactly as JSON: {reason}; "
            "nothing was written",
            session_id=session_id,
        )
        self.path = path
        self.value = value
        self.reason = reason


class SnapshotRefused(SessionError):
    """A session class's state does not come back from its snapshot exactly: no snapshots for it.

    Raised (and logged once, and counted in ``sessionvisor_snapshot_failures{stage="inexact"}``)
    when a snapshot's round trip changes the state: a value or a type differs, or the state cannot
    be encoded or decoded at all. Its sessions then recover from their logs alone, which is exact
    but slower for long logs.

    Attributes:
        session_type: the session class's stored type name.
        path: where the first difference is, e.g. ``"state.players[2].joined_at"``.
        before: the value in the live state.
        after: what the snapshot gave back (``None`` when it could not be encoded or decoded).
        problem: what went wrong, in words.

    .. versionadded:: 0.2
    """

    def __init__(self, session_type: str, path: str, before: object, after: object, problem: str) -> None:
        super().__init__(
            f"snapshots of {session_type} are refused: its state does not come back exactly from "
            f"a snapshot at {path}: {problem}. Its sessions recover from their logs instead (exact, "
            f"slower for long logs). Declare the state's type ({session_type}(Session[MyState]) or "
            "state_type = ...), or keep the state to what the codec round-trips: attrs classes, "
            "lists, tuples, dicts, sets, Enums, datetimes, finite floats, ints in [-2**63, 2**64)"
        )
        self.session_type = session_type
        self.path = path
        self.before = before
        self.after = after
        self.problem = problem


def describe_value(value: object, limit: int = 80) -> str:
    """A short ``repr`` of ``value`` for error messages (a huge int as its size, not its digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        sign = "-" if value < 0 else ""
        return f"{sign}<an integer of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not hide the error being reported
        text = f"<{type(value).__qualname__} object, repr failed: {type(exc).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InvalidReminder(SessionError, ValueError):
    """``schedule`` was given a reminder that cannot be kept: nothing was stored.

    Attributes:
        name: the reminder's name as given.
        field: what is wrong: ``"name"``, ``"delay"``, or where in the message the value that
            cannot be stored as JSON is (``"message"``, ``"message['deadline']"``, ``"message.label"``).
        problem: why, in words.

    .. versionadded:: 0.2
    """

    def __init__(self, session_id: str, name: object, field: str, problem: str) -> None:
        super().__init__(
            f"session {session_id!r}: reminder {name!r} cannot be scheduled: {field} {problem}",
            session_id=session_id,
        )
        self.name = name
        self.field = field
        self.problem = problem


class UnstorableReply(SessionError, ValueError):
    """The reply of an idempotent call cannot be stored as JSON: nothing of the call was kept.

    Attributes:
        key: the call's idempotency key.
        field: where the value JSON cannot hold is (``"reply"``, ``"reply['scores'][2]"``).
        problem: why, in words.

    .. versionadded:: 0.2
    """

    def __init__(self, session_id: str, key: str, field: str, problem: str) -> None:
        super().__init__(
            f"session {session_id!r}: the reply to the call with idempotency key {key!r} cannot be "
            f"stored: {field} {problem}; nothing of the call was kept (return JSON values)",
            session_id=session_id,
        )
        self.key = key
        self.field = field
        self.problem = problem


class UnknownSessionType(SessionError, LookupError):
    """A stored session's type is not among the classes this supervisor knows.

    .. versionadded:: 0.2
    """

    def __init__(self, session_id: str, type_name: str) -> None:
        super().__init__(
            f"session {session_id!r} is of type {type_name!r}, which this supervisor does not know: "
            "pass its class in session_types=[...]",
            session_id=session_id,
        )
        self.type_name = type_name


class TypeNameTaken(SessionError, ValueError):
    """Two session classes claim the same ``type_name``.

    .. versionadded:: 0.2
    """

    def __init__(self, type_name: str, registered: str, other: str) -> None:
        super().__init__(
            f"session type name {type_name!r} is used by {registered} already: give {other} another type_name"
        )
        self.type_name = type_name
        self.registered = registered
        self.other = other


class SessionNotEnded(SessionError):
    """Only an ended session can be deleted; this one is live.

    .. versionadded:: 0.2
    """

    def __init__(self, session_id: str, status: Status) -> None:
        super().__init__(
            f"session {session_id!r} is {status.value}: only ended sessions can be deleted; stop it first",
            session_id=session_id,
        )
        self.status = status


class HandlerMisuse(SessionError, RuntimeError):
    """A session helper was used where it cannot work (``defer_reply`` outside ``handle_call``,
    ``record`` from an ended incarnation or while another ``record`` is in progress).

    .. versionadded:: 0.2
    """

    def __init__(self, session_id: str, operation: str, problem: str) -> None:
        super().__init__(f"session {session_id!r}: {operation} {problem}", session_id=session_id)
        self.operation = operation
        self.problem = problem
