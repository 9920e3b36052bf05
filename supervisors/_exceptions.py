"""Every error the supervisor trees raise at their public surface.

Each error builds its message in ``__init__`` from the data it keeps as attributes, so that callers can
both read a sentence that names the supervisor, the child and what to do, and branch on the fields.

.. versionadded:: 0.1
"""

from __future__ import annotations

__all__ = [
    "ChildExists",
    "ChildNotFound",
    "ChildRunning",
    "ChildStartFailed",
    "RestartIntensityExceeded",
    "SupervisorError",
    "SupervisorNotRunning",
]


def _describe(reason: BaseException | None) -> str:
    return "returned normally" if reason is None else f"raised {reason!r}"


class SupervisorError(Exception):
    """Root of every error raised by sessionvisor's supervisors.

    Attributes:
        supervisor: the name of the supervisor the error is about.
    """

    supervisor: str

    def __init__(self, message: str, *, supervisor: str) -> None:
        super().__init__(message)
        self.supervisor = supervisor


class ChildStartFailed(SupervisorError):
    """A child raised, or returned, before calling ``task_status.started()``.

    Raised out of ``Supervisor.run`` when a child fails while the tree starts (the children started
    before it have been stopped, in reverse order, by then), and out of ``start_child`` or
    ``restart_child``. The child's own exception is ``reason`` and also ``__cause__``.

    Attributes:
        child_id: the id of the child that failed to start.
        reason: what the child raised; a ``RuntimeError`` if it returned without calling ``started()``.
    """

    child_id: str
    reason: BaseException

    def __init__(self, *, supervisor: str, child_id: str, reason: BaseException) -> None:
        super().__init__(
            f"supervisor {supervisor!r}: child {child_id!r} failed to start: it {_describe(reason)} "
            "before calling task_status.started(); see the chained exception for the cause, and make "
            "the child call task_status.started() once it is ready",
            supervisor=supervisor,
        )
        self.child_id = child_id
        self.reason = reason
        self.__cause__ = reason


class RestartIntensityExceeded(SupervisorError):
    """More than ``max_restarts`` restarts happened within ``within`` seconds.

    The supervisor has stopped all of its children (in reverse start order) and raises this out of
    ``run``. A parent supervisor treats it like any other crash of its child, so nested limits multiply.
    The last crash's exception, if any, is ``reason`` and also ``__cause__``.

    Attributes:
        child_id: the child whose crash (or failed restart) went over the limit.
        reason: what that child raised, or ``None`` if a permanent child returned normally.
        max_restarts: the supervisor's limit.
        within: the length of the sliding window, in seconds.
    """

    child_id: str
    reason: BaseException | None
    max_restarts: int
    within: float

    def __init__(
        self,
        *,
        supervisor: str,
        child_id: str,
        reason: BaseException | None,
        max_restarts: int,
        within: float,
    ) -> None:
        super().__init__(
            f"supervisor {supervisor!r} gave up after more than {max_restarts} restarts within "
            f"{within:g}s (the last: child {child_id!r} {_describe(reason)}) and stopped its children; "
            "fix the crashing child, or raise max_restarts / within if such bursts are expected",
            supervisor=supervisor,
        )
        self.child_id = child_id
        self.reason = reason
        self.max_restarts = max_restarts
        self.within = within
        self.__cause__ = reason


class ChildNotFound(SupervisorError, LookupError):
    """No child with this id is known to the supervisor.

    Attributes:
        child_id: the id that was asked for.
    """

    child_id: str

    def __init__(self, *, supervisor: str, child_id: str) -> None:
        super().__init__(
            f"supervisor {supervisor!r} has no child {child_id!r}: check the id "
            "(which_children() lists the known ones); temporary children are forgotten once they stop",
            supervisor=supervisor,
        )
        self.child_id = child_id


class ChildExists(SupervisorError):
    """``start_child`` was given an id that the supervisor already knows.

    Attributes:
        child_id: the id that is taken.
        running: whether that child is running now.
    """

    child_id: str
    running: bool

    def __init__(self, *, supervisor: str, child_id: str, running: bool) -> None:
        hint = (
            "it is already running"
            if running
            else f"it is stopped: use restart_child({child_id!r}), or delete_child({child_id!r}) first"
        )
        super().__init__(
            f"supervisor {supervisor!r} already has a child {child_id!r} ({hint}); "
            "give the new child another id",
            supervisor=supervisor,
        )
        self.child_id = child_id
        self.running = running


class ChildRunning(SupervisorError):
    """``restart_child`` or ``delete_child`` was asked about a child that is running (or restarting).

    Attributes:
        child_id: the child's id.
        action: the operation that was refused (``"restart"`` or ``"delete"``).
    """

    child_id: str
    action: str

    def __init__(self, *, supervisor: str, child_id: str, action: str) -> None:
        super().__init__(
            f"supervisor {supervisor!r} cannot {action} child {child_id!r}: it is running or being "
            f"restarted; call terminate_child({child_id!r}) first",
            supervisor=supervisor,
        )
        self.child_id = child_id
        self.action = action


class SupervisorNotRunning(SupervisorError, RuntimeError):
    """A dynamic operation was called on a supervisor that is not running (or is shutting down)."""

    def __init__(self, *, supervisor: str) -> None:
        super().__init__(
            f"supervisor {supervisor!r} is not running: start it first (async with Supervisor(...), or "
            "await task_group.start(supervisor.run)); children cannot be changed while it shuts down",
            supervisor=supervisor,
        )
