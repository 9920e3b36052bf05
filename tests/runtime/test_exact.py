"""The snapshot type of a session class, the round-trip comparison, and the guard that refuses."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import attrs
import pytest

from runtime import Session, SnapshotRefused
from runtime._events import decode_state
from runtime._exact import SnapshotGuard, declared_state_type, first_difference, snapshot_type


@attrs.frozen
class Scored:
    points: int


@attrs.define
class RoomState:
    players: list[str] = attrs.Factory(list)


S = TypeVar("S")
T = TypeVar("T")


class Room(Session[RoomState]):
    pass


class Scores(Session[list[Scored]]):
    pass


class Players(Session[dict[int, Scored]]):
    pass


class Undeclared(Session):  # type: ignore[type-arg]  # the point: no parameter
    pass


class Declared(Session[Any]):
    state_type = RoomState


class GenericBase(Session[S]):
    pass


class Pair(Generic[T, S]):
    pass


class Reordered(Pair[int, S], GenericBase[S]):
    pass


class Concrete(GenericBase[RoomState]):
    pass


class Inherits(Concrete):
    pass


class ParameterWins(Session[list[Scored]]):
    state_type = list


class TestDeclaredStateType:
    @pytest.mark.parametrize(
        ("cls", "expected"),
        [
            (Room, RoomState),
            (Scores, list[Scored]),
            (Players, dict[int, Scored]),
            (Undeclared, None),
            (Declared, RoomState),
            (Concrete, RoomState),
            (Inherits, RoomState),
            (GenericBase, None),  # an unbound type variable declares nothing
            (ParameterWins, list[Scored]),
        ],
    )
    def test_parameter_then_state_type(self, cls: type[Any], expected: object) -> None:
        assert declared_state_type(cls) == expected

    def test_through_a_generic_subclass_with_its_own_parameters(self) -> None:
        class Bound(Reordered[RoomState]):
            pass

        assert declared_state_type(Bound) == RoomState

    def test_falls_back_to_the_initial_states_type(self) -> None:
        assert snapshot_type(Undeclared, []) is list
        assert snapshot_type(Scores, []) == list[Scored]


class TestFirstDifference:
    @pytest.mark.parametrize(
        "state",
        [
            RoomState(["ann", "bob"]),
            [Scored(1), Scored(2)],
            {1: Scored(1), 2: Scored(3)},
            {"a": (1, 2.5, None)},
            {frozenset({1, 2}), frozenset()},
            float("nan"),
            None,
        ],
    )
    def test_equal_states(self, state: object) -> None:
        assert first_difference(state, state) is None

    @pytest.mark.parametrize(
        ("before", "after", "path"),
        [
            ([Scored(1), Scored(2)], [Scored(1), {"points": 2}], "state[1]"),
            (RoomState(["a", "b"]), RoomState(["a", "c"]), "state.players[1]"),
            ((1, 2), [1, 2], "state"),
            ({1: "x"}, {"1": "x"}, "state[1]"),
            ({1: "x"}, {1.0: "x"}, "state key 1"),
            ({"a": 1}, {"a": 1, "b": 2}, "state['b']"),
            ([1, 2, 3], [1, 2], "state[2]"),
            ({1, 2}, {1, 2.0}, "state{2}"),
            ({"t": 1}, {"t": True}, "state['t']"),
        ],
    )
    def test_finds_the_first_difference_with_types(self, before: object, after: object, path: str) -> None:
        found = first_difference(before, after)
        assert found is not None
        assert found.path == path


class _Opaque:
    """An object the codec cannot encode (no attrs, no hook)."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Opaque) and other.x == self.x

    __hash__ = None  # type: ignore[assignment]


@attrs.define
class Holder:
    thing: object  # typed ``object``: what comes back is whatever JSON gave


def _session(cls: type[Session[Any]], state: object) -> Session[Any]:
    session = cls()
    session._state = state
    return session


class _Initial(Session[Any]):
    """No declared type: snapshots decode into the type of ``initial_state``'s result."""

    def initial_state(self, args: Mapping[str, Any]) -> object:
        return args["initial"]


class TestSnapshotGuard:
    def test_exact_states_are_encoded(self) -> None:
        stages: list[str] = []
        guard = SnapshotGuard(stages.append, share=None)
        state = [Scored(1), Scored(2)]
        data = guard.encode(Scores, _session(Scores, state), {})
        assert data is not None
        assert decode_state(data, list[Scored]) == state
        assert guard.trusted(Scores)
        assert (stages, guard.checks) == ([], 1)

    def test_inexact_class_refused_once_with_path_and_values(self, caplog: pytest.LogCaptureFixture) -> None:
        """The list of events that came back as dicts (issue 13): refused, logged once, counted."""
        stages: list[str] = []
        guard = SnapshotGuard(stages.append, share=None)
        args: dict[str, object] = {"initial": []}
        with caplog.at_level(logging.ERROR, logger="runtime._exact"):
            assert guard.encode(_Initial, _session(_Initial, [Scored(1)]), args) is None
            assert guard.encode(_Initial, _session(_Initial, [Scored(2)]), args) is None
        refusal = guard.refusal(_Initial)
        assert isinstance(refusal, SnapshotRefused)
        assert (refusal.session_type, refusal.path) == ("_Initial", "state[0]")
        assert (refusal.before, refusal.after) == (Scored(1), {"points": 1})
        assert "Scored(points=1) (Scored) came back as {'points': 1} (dict)" in str(refusal)
        assert not guard.trusted(_Initial)
        assert [r.message for r in caplog.records] == [str(refusal)]
        assert stages == ["inexact", "inexact"]
        assert guard.checks == 1  # refused: no more work for this class

    @pytest.mark.parametrize(
        ("state", "path", "problem"),
        [
            ({"score": float("nan")}, "state['score']", "NaN and infinities"),
            ({"n": 2**64}, "state['n']", "[-2**63, 2**64)"),
            ({"o": _Opaque(1)}, "state['o']", "_Opaque is not JSON"),
            (Holder(RoomState(["a"])), "state.thing", "RoomState is not JSON here"),
            (Holder((1, 2)), "state.thing", "cannot decode a object"),
            ({"when": (1, 2)}, "state['when']", "(1, 2) (tuple) came back as [1, 2] (list)"),
        ],
    )
    def test_refusals_name_the_path(self, state: object, path: str, problem: str) -> None:
        guard = SnapshotGuard(lambda stage: None, share=None)
        assert guard.encode(_Initial, _session(_Initial, state), {"initial": state}) is None
        refusal = guard.refusal(_Initial)
        assert refusal is not None
        assert refusal.path == path
        assert problem in str(refusal)

    def test_undecodable_state_is_refused_with_cattrs_path(self) -> None:
        class Rooms(Session[dict[str, RoomState]]):
            pass

        guard = SnapshotGuard(lambda stage: None, share=None)
        # An attrs field typed list[str] holding ints: encodes, but does not decode as declared.
        state = {"r1": RoomState([1])}  # type: ignore[list-item]
        assert guard.encode(Rooms, _session(Rooms, state), {}) is None
        refusal = guard.refusal(Rooms)
        assert refusal is not None
        assert refusal.path == "state['r1'].players[0]"

    def test_first_snapshot_of_each_class_is_always_checked(self) -> None:
        guard = SnapshotGuard(lambda stage: None, share=0.0)  # no budget at all after the first
        assert guard.encode(Scores, _session(Scores, []), {}) is not None
        assert guard.encode(Room, _session(Room, RoomState()), {}) is not None
        assert guard.checks == 2
        assert guard.encode(Scores, _session(Scores, []), {}) is not None
        assert guard.checks == 2  # the budget is spent: written unchecked

    def test_encoding_failures_are_caught_even_unchecked(self) -> None:
        """NaN and huge ints are found by the encoder itself: no check needed to refuse them."""
        guard = SnapshotGuard(lambda stage: None, share=0.0)
        assert guard.encode(_Initial, _session(_Initial, {"x": 1.0}), {"initial": {}}) is not None
        assert guard.encode(_Initial, _session(_Initial, {"x": float("inf")}), {"initial": {}}) is None
        assert guard.checks == 1
        refusal = guard.refusal(_Initial)
        assert refusal is not None
        assert refusal.path == "state['x']"


class _Mixin(Session[Any]):
    pass


class AfterAMixin(_Mixin, Session[RoomState]):
    pass


def test_a_later_base_declares_what_an_earlier_leaves_open() -> None:
    assert declared_state_type(AfterAMixin) is RoomState
