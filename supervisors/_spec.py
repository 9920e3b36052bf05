"""What a supervisor is told about its children, and what it tells about them.

``ChildSpec`` describes one child; ``Strategy`` and ``Restart`` are the OTP vocabularies for what a crash
does to its siblings and whether a child comes back; ``ChildInfo`` and ``ChildCounts`` are the frozen
snapshots that ``Supervisor.which_children()`` and ``count_children()`` return.

.. versionadded:: 0.1
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable
from typing import Protocol, cast

import attrs
from anyio.abc import TaskStatus

__all__ = [
    "ChildCounts",
    "ChildInfo",
    "ChildSpec",
    "ChildStart",
    "Restart",
    "Runnable",
    "Strategy",
]


class Strategy(enum.Enum):
    """What a supervisor does to a crashed child's siblings (OTP's restart strategies)."""

    #: Restart only the crashed child.
    ONE_FOR_ONE = "one_for_one"
    #: Stop every other child (in reverse start order), then restart them all (in start order).
    ONE_FOR_ALL = "one_for_all"
    #: Stop the children started after the crashed one (in reverse order), then restart the crashed
    #: child and those after it (in order).
    REST_FOR_ONE = "rest_for_one"


class Restart(enum.Enum):
    """Whether a child that stopped on its own is restarted (OTP's restart types)."""

    #: Always restarted, even after returning normally.
    PERMANENT = "permanent"
    #: Restarted only after it raised; a normal return leaves it stopped (its spec is kept).
    TRANSIENT = "transient"
    #: Never restarted, not even when a sibling's crash stopped it; its spec is then forgotten.
    TEMPORARY = "temporary"


class ChildStart(Protocol):
    """An async callable in anyio's ``task_status`` style, like the ones ``TaskGroup.start`` takes.

    It calls ``task_status.started(value)`` once it is ready (``value`` shows up in
    ``ChildInfo.value``), then runs until it is cancelled, returns or raises.
    """

    def __call__(self, *, task_status: TaskStatus[object]) -> Awaitable[object]: ...


class Runnable(Protocol):
    """An object that runs in anyio's ``task_status`` style: a ``Supervisor``, a ``SessionSupervisor``."""

    def run(self, *, task_status: TaskStatus[object]) -> Awaitable[object]: ...


def _check_start(
    _spec: ChildSpec, _attribute: attrs.Attribute[ChildStart | Runnable], value: ChildStart | Runnable
) -> None:
    if not callable(getattr(value, "run", None)) and not callable(value):
        raise TypeError(
            f"ChildSpec start must be an async callable taking task_status=, or an object with such a "
            f"run method (a Supervisor), not {value!r}"
        )


def _check_id(_spec: ChildSpec, _attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"ChildSpec id must be a non-empty str, not {value!r}")


def _check_shutdown(_spec: ChildSpec, _attribute: attrs.Attribute[float], value: float) -> None:
    if math.isnan(value) or value < 0:
        raise ValueError(
            f"ChildSpec shutdown must be 0 or more seconds (math.inf: wait forever), not {value!r}"
        )


@attrs.frozen
class ChildSpec:
    """One child of a ``Supervisor``.

    Args:
        id: names the child within its supervisor; used by the dynamic operations and in messages.
        start: an async callable in anyio's ``task_status`` style
            (``async def f(*, task_status=anyio.TASK_STATUS_IGNORED)``), or an object with such a
            ``run`` method (a ``Supervisor``, a ``SessionSupervisor``), which is then what runs. Each
            start or restart calls it again.
        restart: whether the child comes back after it stops on its own (see ``Restart``).
        shutdown: seconds the child gets to finish once it is cancelled (its ``finally:`` blocks and
            shielded clean-up run in that time); ``0`` does not wait at all, ``math.inf`` waits as long
            as it takes. A child still running after that is abandoned (see ``Supervisor``).

    Raises:
        TypeError: ``id`` is not a non-empty str, or ``start`` is neither callable nor has a ``run``.
        ValueError: ``shutdown`` is negative or NaN.

    .. versionadded:: 0.1
    """

    id: str = attrs.field(validator=_check_id)
    start: ChildStart | Runnable = attrs.field(validator=_check_start)
    restart: Restart = attrs.field(
        default=Restart.PERMANENT, kw_only=True, validator=attrs.validators.instance_of(Restart)
    )
    shutdown: float = attrs.field(default=5.0, kw_only=True, converter=float, validator=_check_shutdown)

    @property
    def target(self) -> ChildStart:
        """What the supervisor calls (with ``task_status=``) to start the child."""
        run = getattr(self.start, "run", None)
        return cast("ChildStart", run if callable(run) else self.start)

    @property
    def is_supervisor(self) -> bool:
        """Whether the child is a supervisor (an object with a ``run`` method) rather than a worker."""
        return callable(getattr(self.start, "run", None))


@attrs.frozen
class ChildInfo:
    """A snapshot of one child, in the supervisor's start order (like OTP's ``which_children``).

    Attributes:
        id: the child's id.
        running: whether it has started and is neither stopping nor stopped.
        restart: its restart type.
        is_supervisor: whether it is a supervisor (its ``start`` is an object with ``run``).
        value: what it passed to ``task_status.started()`` when it last started (a nested
            ``Supervisor`` passes itself), or ``None`` while it is not running.
        restarts: how many times this supervisor has restarted it since the tree started.

    .. versionadded:: 0.1
    """

    id: str
    running: bool
    restart: Restart
    is_supervisor: bool
    value: object
    restarts: int


@attrs.frozen
class ChildCounts:
    """How many children a supervisor has (like OTP's ``count_children``).

    Attributes:
        specs: children known to the supervisor, running or not.
        active: children running now.
        supervisors: children that are supervisors, running or not.
        workers: children that are not supervisors, running or not.

    .. versionadded:: 0.1
    """

    specs: int
    active: int
    supervisors: int
    workers: int
