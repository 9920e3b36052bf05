"""@event, @upcaster and the JSON codec."""

from __future__ import annotations

import json

import attrs
import pytest

from runtime import EventRegistry, UnencodableValue, UnknownEventType, event, upcaster
from runtime._events import MAX_EXACT_INT, MIN_EXACT_INT, check_value, decode_state, encode_state, to_json


@attrs.frozen
class Card:
    suit: str
    rank: int


@attrs.frozen
class Reading:
    at: int
    value: float


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
    def test_nan_in_an_old_log_still_decodes(self, registry: EventRegistry) -> None:
        """orjson refuses NaN, which earlier versions wrote: decoding falls back, loses nothing."""

        @event(registry=registry)
        class Measured:
            value: float

        decoded = registry.decode("Measured", 1, '{"value":NaN}')
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

    def test_an_unencodable_event_names_its_field(self, registry: EventRegistry) -> None:
        @event(registry=registry)
        class Holds:
            thing: object

        with pytest.raises(UnencodableValue, match=r"Holds\.thing = <object .*object is not JSON") as info:
            registry.encode(Holds(object()))
        assert info.value.path == "Holds.thing"


def _no_constants(name: str) -> object:
    raise AssertionError(f"{name} written: not standard JSON")


@pytest.fixture(params=["orjson", "stdlib"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Decode with one parser only: orjson (the "fast" extra) or the stdlib (without it)."""
    import runtime._events as events_module

    if request.param == "orjson":
        orjson = pytest.importorskip("orjson")
        monkeypatch.setattr(events_module, "_loads", orjson.loads)
    else:
        monkeypatch.setattr(events_module, "_loads", events_module._stdlib_loads)
    return str(request.param)


class TestExactNumbers:
    """Issue 17: what is written reads back exactly, with or without orjson, or is refused by name."""

    @pytest.mark.parametrize("n", [0, -1, MIN_EXACT_INT, MAX_EXACT_INT, 2**63, 2**53 + 1, 10**18, -(10**18)])
    def test_ints_in_range_come_back_exactly(self, registry: EventRegistry, parser: str, n: int) -> None:
        @event(registry=registry)
        class Set:
            value: int

        data = registry.encode(Set(n))
        decoded = registry.decode("Set", 1, data.data)
        assert decoded == Set(n)
        assert type(decoded.value) is int

    @pytest.mark.parametrize(
        "n",
        [2**64 + 1, MAX_EXACT_INT + 1, MIN_EXACT_INT - 1, -(10**30), 10**5000],
        ids=["2**64+1", "2**64", "-2**63-1", "-10**30", "10**5000"],
    )
    def test_ints_out_of_range_are_refused_by_field(
        self, registry: EventRegistry, parser: str, n: int
    ) -> None:
        @event(registry=registry)
        class Set:
            label: str
            value: int

        with pytest.raises(UnencodableValue, match=r"^Set\.value = .* \[-2\*\*63, 2\*\*64\)") as info:
            registry.encode(Set("x", n))
        assert (info.value.path, info.value.value) == ("Set.value", n)
        assert isinstance(info.value, ValueError)

    @pytest.mark.parametrize("x", [float("nan"), float("inf"), float("-inf")])
    def test_nan_and_infinities_are_refused_by_field(self, registry: EventRegistry, x: float) -> None:
        @event(registry=registry)
        class Measured:
            readings: list[Reading]

        with pytest.raises(UnencodableValue, match="NaN and infinities are not JSON") as info:
            registry.encode(Measured([Reading(1, 2.5), Reading(2, x)]))
        assert info.value.path == "Measured.readings[1].value"

    def test_floats_come_back_exactly(self, registry: EventRegistry, parser: str) -> None:
        @event(registry=registry)
        class Floats:
            values: tuple[float, ...]

        values = (0.1, -0.0, 1e300, 5e-324, 0.0001234567890123456, 2.0**70, 1 / 3)
        decoded = registry.decode("Floats", 1, registry.encode(Floats(values)).data)
        assert decoded == Floats(values)
        assert [repr(v) for v in decoded.values] == [repr(v) for v in values]

    def test_long_digit_strings_are_not_numbers(self, registry: EventRegistry, parser: str) -> None:
        """A string of many digits (an id, say) is no integer: it is stored as it is."""

        @event(registry=registry)
        class Named:
            id: str
            under: dict[str, int]

        named = Named("1" * 40, {"9" * 30: 1})
        assert registry.decode("Named", 1, registry.encode(named).data) == named

    def test_written_json_is_standard(self, registry: EventRegistry) -> None:
        @event(registry=registry)
        class Mixed:
            f: float
            n: int

        text = registry.encode(Mixed(1e308, MAX_EXACT_INT)).data
        assert json.loads(text, parse_constant=_no_constants) == {"f": 1e308, "n": MAX_EXACT_INT}

    def test_states_and_values_are_checked_alike(self) -> None:
        """Snapshots (encode_state) and other stored values (to_json, check_value) name the path."""
        with pytest.raises(UnencodableValue) as info:
            encode_state({"players": [{"score": 2**70}]})
        assert info.value.path == "state['players'][0]['score']"
        with pytest.raises(UnencodableValue) as info:
            to_json((1, {2.5, float("inf")}), path="reply")
        assert info.value.path == "reply[1]{inf}"
        with pytest.raises(UnencodableValue, match="complex is not JSON") as info:
            check_value({"z": 1j}, "message")
        assert info.value.path == "message['z']"
        check_value({"big key": 1, 2**80: "keys are strings in JSON"}, "message")
