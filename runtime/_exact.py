"""Exact snapshots: the type a session's snapshots decode into, and the check that they do so exactly.

A restart must rebuild the state it had, of the same types (DESIGN.md, "Exact restarts"). A snapshot
is JSON, and JSON alone cannot say whether ``[{"points": 3}]`` was a list of ``Scored`` events or of
dicts, so the snapshot type comes from the session class: its type parameter
(``class Room(Session[RoomState])``, ``Session[list[Scored]]``), else ``state_type``, else the type of
what ``initial_state`` returns. Some states still do not survive the trip (an object the codec cannot
structure, a field typed ``object``, NaN): a class whose state does not come back equal, types
included, is refused snapshots (:class:`SnapshotRefused`, logged once, counted) and its sessions
recover from their logs alone, which is always exact.

The check (encode, decode, compare) costs about three snapshots, so it is rationed: a class's first
snapshot is always checked before it is written, the later ones while the checks' share of the
process's time stays within :data:`CHECK_SHARE` (a token bucket), see :class:`SnapshotGuard`.
"""

from __future__ import annotations

import logging
import math
import typing
import weakref
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import cattrs

from ._events import decode_state, encode_state
from ._exceptions import SnapshotRefused, UnencodableValue, describe_value

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["CHECK_SHARE", "Difference", "SnapshotGuard", "declared_state_type", "first_difference"]

logger = logging.getLogger(__name__)

CHECK_SHARE: Final = 0.01
"""The share of the process's time that re-checking snapshots may take (1%, within the 5% budget
that issue 13 allows on the call round trip for history and checks)."""

_BURST: Final = 0.05
"""Seconds of checking that may be banked while idle: a burst after a quiet hour stays bounded."""


# -- the snapshot type --------------------------------------------------------------------------


_declared: weakref.WeakKeyDictionary[type[Any], Any] = weakref.WeakKeyDictionary()


def declared_state_type(cls: type[Any]) -> Any:
    """The state type ``cls`` declares: its ``Session[...]`` parameter, else ``state_type``, else None.

    The parameter is found through generic intermediate classes too
    (``class Base(Session[S])`` then ``class Room(Base[RoomState])``); ``Any`` or an unbound type
    variable declares nothing.
    """
    try:
        return _declared[cls]
    except KeyError:
        pass
    from ._session import Session

    found = _session_parameter(cls, Session, {})
    if found is None:
        found = cls.state_type
    _declared[cls] = found
    return found


def _session_parameter(klass: type[Any], session: type[Any], bound: Mapping[Any, Any]) -> Any:
    """The argument given to ``session``'s parameter on the way from ``klass``, with ``bound`` applied."""
    bases = klass.__dict__.get("__orig_bases__", klass.__bases__)
    for base in bases:
        origin = typing.get_origin(base) or base
        if not isinstance(origin, type) or not issubclass(origin, session):
            continue
        args = tuple(bound.get(a, a) for a in typing.get_args(base))
        if origin is session:
            found = args[0] if args else None
        else:
            params = getattr(origin, "__parameters__", ())
            found = _session_parameter(origin, session, dict(zip(params, args, strict=False)))
        if found is not None and found is not Any and not isinstance(found, TypeVar):
            return found  # else a later base may declare it (class Room(Mixin, Session[RoomState]))
    return None


def snapshot_type(cls: type[Session[Any]], initial: object) -> Any:
    """What ``cls``'s snapshots decode into, ``initial`` being what ``initial_state`` returned."""
    declared = declared_state_type(cls)
    return declared if declared is not None else type(initial)


# -- comparing a state with its round trip ----------------------------------------------------


@attrs.frozen
class Difference:
    """Where a state and its round trip first differ, and the two values there."""

    path: str
    before: object
    after: object

    def describe(self) -> str:
        before, after = self.before, self.after
        if type(before) is not type(after):
            return (
                f"{describe_value(before)} ({type(before).__qualname__}) came back as "
                f"{describe_value(after)} ({type(after).__qualname__})"
            )
        return f"{describe_value(before)} came back as {describe_value(after)}"


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()


_LEAVES: Final = frozenset({str, int, float, bool, bytes, type(None)})
_attrs_fields: weakref.WeakKeyDictionary[type[Any], tuple[str, ...] | None] = weakref.WeakKeyDictionary()


def _attrs_names(cls: type[Any]) -> tuple[str, ...] | None:
    """The field names of an attrs class, or ``None`` for any other class (cached: per value)."""
    try:
        return _attrs_fields[cls]
    except KeyError:
        names = tuple(f.name for f in attrs.fields(cls)) if attrs.has(cls) else None
        _attrs_fields[cls] = names
        return names
    except TypeError:  # not weakly referenceable
        return tuple(f.name for f in attrs.fields(cls)) if attrs.has(cls) else None


def first_difference(before: object, after: object, path: str = "state") -> Difference | None:
    """The first place where ``after`` differs from ``before``, types included; ``None`` if nowhere.

    Compared recursively, so that a list that became a tuple, an attrs instance that became a dict
    or an int key that became a str is caught even where ``==`` would not see it.
    """
    cls = type(before)
    if type(after) is not cls:
        return Difference(path, before, after)
    if cls in _LEAVES:
        if before == after or (cls is float and math.isnan(before) and math.isnan(after)):  # type: ignore[arg-type]
            return None
        return Difference(path, before, after)
    names = _attrs_names(cls)
    if names is not None:
        for name in names:
            found = first_difference(getattr(before, name), getattr(after, name), f"{path}.{name}")
            if found is not None:
                return found
        return None
    if isinstance(before, dict):
        assert isinstance(after, dict)
        keys_after = {key: key for key in after}
        for key, item in before.items():
            where = f"{path}[{key!r}]"
            if key not in keys_after:
                return Difference(where, item, MISSING)
            key_after = keys_after.pop(key)
            if type(key_after) is not type(key):
                return Difference(f"{path} key {key!r}", key, key_after)
            found = first_difference(item, after[key_after], where)
            if found is not None:
                return found
        for key in keys_after:
            return Difference(f"{path}[{key!r}]", MISSING, after[key])
        return None
    if isinstance(before, (list, tuple)):
        assert isinstance(after, (list, tuple))
        for i, (a, b) in enumerate(zip(before, after, strict=False)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found is not None:
                return found
        if len(before) != len(after):
            i = min(len(before), len(after))
            return Difference(
                f"{path}[{i}]",
                before[i] if i < len(before) else MISSING,
                after[i] if i < len(after) else MISSING,
            )
        return None
    if isinstance(before, (set, frozenset)):
        assert isinstance(after, (set, frozenset))
        typed_after = {(type(x), x) for x in after}
        for item in before:
            if (type(item), item) not in typed_after:
                return Difference(f"{path}{{{item!r}}}", item, MISSING)
        if len(after) != len(before):
            return Difference(path, before, after)
        return None
    try:
        equal = bool(before == after)
    except Exception:
        equal = False
    return None if equal else Difference(path, before, after)


# -- the guard --------------------------------------------------------------------------------


class SnapshotGuard:
    """Encodes snapshots for one host, checking per session class that they round-trip exactly.

    A class's first snapshot is always checked before it is written; later ones while the checks'
    time stays within ``share`` of the time elapsed (a token bucket that banks at most ``burst``
    seconds), because a state's types rarely change once a first snapshot came back equal, while a
    large state's check costs three snapshots. ``share=None`` checks every snapshot (tests).

    Args:
        note_failure: told the stage of each snapshot not written ("inexact"), for the metrics.
        share: the share of time checks may take; ``None`` for every snapshot.
        burst: the most checking time banked while no snapshots are taken.
    """

    def __init__(
        self,
        note_failure: Callable[[str], None],
        *,
        share: float | None = CHECK_SHARE,
        burst: float = _BURST,
    ) -> None:
        self._note_failure = note_failure
        self._share = share
        self._burst = burst
        self._refused: dict[type[Any], SnapshotRefused] = {}
        # Per class: [tokens (seconds of checking allowed now), when they were last topped up].
        self._budget: dict[type[Any], list[float]] = {}
        self.checks = 0
        """How many round trips were checked."""

    def refusal(self, cls: type[Session[Any]]) -> SnapshotRefused | None:
        """Why ``cls`` is refused snapshots, or ``None`` if it is not."""
        return self._refused.get(cls)

    def trusted(self, cls: type[Session[Any]]) -> bool:
        """Whether ``cls``'s stored snapshots may be used for recovery (it was not refused)."""
        return cls not in self._refused

    def encode(self, cls: type[Session[Any]], session: Session[Any], args: Mapping[str, Any]) -> str | None:
        """``session``'s state as snapshot JSON, or ``None`` when ``cls`` is (now) refused snapshots.

        The first refusal of a class is logged as an error; every snapshot not written is counted.
        """
        if cls in self._refused:
            self._note_failure("inexact")
            return None
        state = session._state
        try:
            data = encode_state(state)
        except UnencodableValue as exc:
            self._refuse(cls, SnapshotRefused(_type_name(cls), exc.path, exc.value, None, exc.reason))
            return None
        if self._due(cls):
            began = perf_counter()
            refused = self._check(cls, session, args, state, data)
            self._spend(cls, perf_counter() - began)
            if refused is not None:
                self._refuse(cls, refused)
                return None
        return data

    def _due(self, cls: type[Any]) -> bool:
        share = self._share
        if share is None:
            return True
        budget = self._budget.get(cls)
        now = perf_counter()
        if budget is None:
            self._budget[cls] = [0.0, now]  # a class's first snapshot: always checked
            return True
        tokens, since = budget
        budget[0] = tokens = min(self._burst, tokens + share * (now - since))
        budget[1] = now
        return tokens >= 0.0

    def _spend(self, cls: type[Any], seconds: float) -> None:
        self.checks += 1
        budget = self._budget.get(cls)
        if budget is not None:
            budget[0] -= seconds

    def _check(
        self,
        cls: type[Session[Any]],
        session: Session[Any],
        args: Mapping[str, Any],
        state: object,
        data: str,
    ) -> SnapshotRefused | None:
        name = _type_name(cls)
        target = declared_state_type(cls)
        if target is None:
            try:
                target = type(session.initial_state(args))
            except Exception as exc:  # it is pure: it raised at start too, or never will
                return SnapshotRefused(name, "state", state, None, f"initial_state raised {exc!r}")
        try:
            restored = decode_state(data, target)
        except cattrs.BaseValidationError as exc:
            problem = cattrs.transform_error(exc, path="state")[0]
            message, _, path = problem.rpartition(" @ ")
            return SnapshotRefused(name, path or "state", state, None, f"it cannot be decoded: {message}")
        except cattrs.StructureHandlerNotFoundError as exc:
            path = _field_of_type(target, exc.type_, "state") or "state"
            return SnapshotRefused(
                name, path, state, None, f"the codec cannot decode a {_type_label(exc.type_)}: declare a type"
            )
        except Exception as exc:
            return SnapshotRefused(
                name, "state", state, None, f"it cannot be decoded as {_type_label(target)}: {exc!r}"
            )
        diff = first_difference(state, restored)
        if diff is None:
            return None
        return SnapshotRefused(name, diff.path, diff.before, diff.after, diff.describe())

    def _refuse(self, cls: type[Any], error: SnapshotRefused) -> None:
        self._refused[cls] = error
        logger.error("%s", error)
        self._note_failure("inexact")


def _field_of_type(tp: Any, wanted: Any, path: str, depth: int = 0) -> str | None:
    """The path of the first attrs field under ``tp`` declared as ``wanted``, to name in errors."""
    if depth > 8:
        return None
    if isinstance(tp, type) and attrs.has(tp):
        for field in attrs.fields(attrs.resolve_types(tp)):
            where = f"{path}.{field.name}"
            if field.type == wanted:
                return where
            found = _field_of_type(field.type, wanted, where, depth + 1)
            if found is not None:
                return found
        return None
    for arg in typing.get_args(tp):
        found = _field_of_type(arg, wanted, f"{path}[...]", depth + 1)
        if found is not None:
            return found
    return None


def _type_name(cls: type[Session[Any]]) -> str:
    return cls.type_name or cls.__name__


def _type_label(tp: Any) -> str:
    return tp.__qualname__ if isinstance(tp, type) else repr(tp)
