"""``Node``: how a ``SessionSupervisor`` takes part in a store shared by several processes."""

from __future__ import annotations

import attrs

__all__ = ["Node"]


def _check_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value or not value.isprintable():
        raise ValueError(f"Node.{attribute.name} must be a non-empty printable str, not {value!r}")


def _check_ttl(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise ValueError(f"Node.{attribute.name} must be a positive number of seconds, not {value!r}")


@attrs.frozen
class Node:
    """One process among several sharing a ``PostgresStore`` (DESIGN.md, "Many nodes").

    Args:
        name: unique among the processes sharing the store (a restarted process may reuse its name:
            it then fences every copy its predecessor left).
        address: where clients can reach this node (given to them in ``OwnedElsewhere`` so that
            they can be redirected); ``None`` when the application has no such thing.
        lease_ttl: seconds a lease on a session lasts without renewal. A node that stops renewing
            (killed, paused, cut off from the store) loses its sessions after this long; leases are
            renewed every ``lease_ttl / 3``.

    .. versionadded:: 0.2
    """

    name: str = attrs.field(validator=_check_name)
    address: str | None = None
    lease_ttl: float = attrs.field(default=10.0, validator=_check_ttl)
