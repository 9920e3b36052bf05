"""@event, @upcaster and the JSON codec."""

from __future__ import annotations

import json

import attrs
import pytest

from runtime import EventRegistry, UnknownEventType, event, upcaster
from runtime._events import decode_state, encode_state


@attrs.frozen
class Card:
    suit: str
    rank: int


MODULE_REGISTRY = EventRegistry()


@event(registry=MODULE_REGISTRY)
class Joined:
    player: str


@pytest.fixture
def registry() -> EventRegistry:
    return EventRegistry()


class TestEvent:
    def test_plain_class_becomes_frozen_attrs(self) -> None:
        """@event turns a plain annotated class into a frozen attrs class and registers it."""
        registry = MODULE_REGISTRY
        j = Joined("ann")
        assert attrs.has(type(j))
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            j.player = "bob"  # type: ignore[misc]  # frozen: the point of the test
        data = registry.encode(j)
        assert (data.type, data.schema_version) == ("Joined", 1)
        assert json.loads(data.data) == {"player": "ann"}
        assert registry.decode("Joined", 1, data.data) == j

    def test_name_and_version(self, registry: EventRegistry) -> None:
        """@event(name=..., version=...) stores under that name and version."""

        @event(name="game.Moved", version=3, registry=registry)
        class Moved:
            x: int
            y: int

        data = registry.encode(Moved(1, 2))
        assert (data.type, data.schema_version) == ("game.Moved", 3)

    def test_name_clash(self, registry: EventRegistry) -> None:
        """Two different classes under one name is an error that says what to do."""

        @event(name="Same", registry=registry)
        class A:
            x: int

        with pytest.raises(ValueError, match=r"register .* under another name"):

            @event(name="Same", registry=registry)
            class B:
                y: int

    def test_unregistered_class(self, registry: EventRegistry) -> None:
        """Recording an instance of a class that is not an event: UnknownEventType."""

        @attrs.frozen
        class NotAnEvent:
            x: int

        with pytest.raises(UnknownEventType, match="@event"):
            registry.encode(NotAnEvent(1))

    def test_nested_and_optional_fields(self, registry: EventRegistry) -> None:
        """Containers, nested attrs classes and None round-trip through JSON."""

        @event(registry=registry)
        class Dealt:
            cards: tuple[Card, ...]
            note: str | None = None
            scores: dict[str, int] = attrs.field(factory=dict)

        d = Dealt((Card("h", 1), Card("s", 12)), None, {"ann": 3})
        data = registry.encode(d)
        assert registry.decode("Dealt", 1, data.data) == d


class TestDecodeErrors:
    def test_unknown_name(self, registry: EventRegistry) -> None:
        with pytest.raises(UnknownEventType, match="'Nope' version 1"):
            registry.decode("Nope", 1, "{}")

    def test_newer_than_registered(self, registry: EventRegistry) -> None:
        """A payload from a newer schema than this code knows is refused, not misread."""

        @event(registry=registry)
        class E:
            x: int

        with pytest.raises(UnknownEventType):
            registry.decode("E", 2, '{"x": 1}')

    def test_bad_payload(self, registry: EventRegistry) -> None:
        """Invalid JSON or a payload that does not fit the class raise ValueError."""

        @event(registry=registry)
        class E:
            x: int

        with pytest.raises(ValueError, match="Expecting property name"):
            registry.decode("E", 1, "{not json")
        with pytest.raises(ValueError, match="does not fit"):
            registry.decode("E", 1, '{"y": 1}')


class TestUpcasters:
    def test_chain(self, registry: EventRegistry) -> None:
        """v1 -> v2 -> v3 upcasters run in order; handlers only see the current version."""

        @event(name="Joined", version=3, registry=registry)
        class Joined:
            player: str
            team: str
            seat: int

        @upcaster("Joined", from_version=1, registry=registry)
        def v1_to_v2(data: dict[str, object]) -> dict[str, object]:
            return {**data, "team": "none"}

        @upcaster("Joined", from_version=2, registry=registry)
        def v2_to_v3(data: dict[str, object]) -> dict[str, object]:
            return {**data, "seat": 0}

        assert registry.decode("Joined", 1, '{"player": "ann"}') == Joined("ann", "none", 0)
        assert registry.decode("Joined", 2, '{"player": "b", "team": "red"}') == Joined("b", "red", 0)

    def test_missing_link(self, registry: EventRegistry) -> None:
        """A gap in the chain names the version that has no upcaster."""

        @event(name="Left", version=3, registry=registry)
        class Left:
            player: str

        @upcaster("Left", from_version=2, registry=registry)
        def v2_to_v3(data: dict[str, object]) -> dict[str, object]:
            return data

        with pytest.raises(UnknownEventType, match="from_version=1"):
            registry.decode("Left", 1, '{"player": "x"}')


class TestStates:
    def test_attrs_state_round_trip(self) -> None:
        @attrs.frozen
        class S:
            players: tuple[str, ...]
            scores: dict[str, int]

        s = S(("a", "b"), {"a": 1})
        assert decode_state(encode_state(s), S) == s

    @pytest.mark.parametrize("state", [{"a": [1, 2]}, [1, "x", None], 3, "text", None])
    def test_plain_states(self, state: object) -> None:
        assert decode_state(encode_state(state), type(state)) == state


class TestParsers:
    def test_nan_written_by_the_stdlib_still_decodes(self, registry: EventRegistry) -> None:
        """orjson refuses NaN, which the stdlib encoder writes: decoding falls back, loses nothing."""

        @event(registry=registry)
        class Measured:
            value: float

        data = registry.encode(Measured(float("nan")))
        decoded = registry.decode("Measured", 1, data.data)
        assert isinstance(decoded, Measured)
        assert decoded.value != decoded.value  # NaN

    def test_stdlib_only(self, registry: EventRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without the 'fast' extra the stdlib parser does the same work."""
        import runtime._events as events_module

        monkeypatch.setattr(events_module, "_loads", events_module._stdlib_loads)

        @event(registry=registry)
        class Said:
            text: str

        data = registry.encode(Said("héllo"))
        assert registry.decode("Said", 1, data.data) == Said("héllo")


class TestEncoder:
    """The encoder is the stdlib's C encoder, built once: it must write what ``json.dumps`` writes."""

    @pytest.mark.parametrize(
        "value",
        [
            {"n": 1, "text": 'héllo "quoted" \\ \n', "f": 2.5, "none": None, "flags": [True, False]},
            {"nested": {"list": [1, {"deep": [None]}]}, "empty": {}, "tuple": (1, 2)},
            {1: "int key", 2.5: "float key", None: "null key"},
            {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")},
            {"big": 2**80, "neg": -(2**70)},
            "a string alone",
            42,
            None,
        ],
    )
    def test_writes_what_json_dumps_writes(self, value: object) -> None:
        from runtime._events import _dumps

        assert _dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    @pytest.mark.parametrize("value", [{"s": {1, 2}}, {(1, 2): "tuple key"}, object()])
    def test_refuses_what_json_dumps_refuses(self, value: object) -> None:
        from runtime._events import _dumps

        with pytest.raises(TypeError):
            json.dumps(value)
        with pytest.raises(TypeError):
            _dumps(value)

    def test_an_unencodable_event_names_its_field_type(self, registry: EventRegistry) -> None:
        @event(registry=registry)
        class Holds:
            thing: object

        with pytest.raises(TypeError, match="set is not JSON serializable"):
            registry.encode(Holds({1, 2}))
