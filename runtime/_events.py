"""Event types, upcasters and the JSON codec for events and snapshot states.

Events are attrs classes registered by name and schema version. They are stored as JSON text produced
by a cattrs converter: never pickle, so a log can be read by any process, any version, any language.

What is written is standard JSON that every supported parser reads back exactly: NaN, infinities and
integers outside ``[-2**63, 2**64)`` are refused with :class:`UnencodableValue`, which names where
the value is (issue 17). :func:`check_value` is the same check for other callers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar, cast, dataclass_transform, overload

import attrs
import cattrs
from cattrs.preconf.json import make_converter

from ._exceptions import UnencodableValue, UnknownEventType
from ._records import EventData
from ._status import Status

__all__ = [
    "MAX_EXACT_INT",
    "MIN_EXACT_INT",
    "EventRegistry",
    "StatusChanged",
    "check_value",
    "decode_state",
    "default_registry",
    "encode_state",
    "event",
    "upcaster",
]

T = TypeVar("T")
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_converter = make_converter()
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)

if _c_make_encoder is not None:
    # What ``_encoder.encode`` builds on every call (the C encoder and a closure), built once: more
    # than half the cost of encoding a small event. No circular-reference check (``markers=None``):
    # the converter's output is a tree (a cycle would have failed in ``unstructure`` first).
    _iterencode = _c_make_encoder(
        None,  # markers
        _encoder.default,  # raises TypeError for what JSON cannot hold
        json.encoder.encode_basestring,  # ensure_ascii=False
        None,  # indent
        ":",
        ",",
        False,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan: standard JSON only (NaN and Infinity are refused, see _exact_json)
    )

    def _dumps(value: Any) -> str:
        return "".join(_iterencode(value, 0))

else:  # pragma: no cover - CPython always has the C encoder

    def _dumps(value: Any) -> str:
        return _encoder.encode(value)


# The integers JSON gives back exactly whichever parser reads it: orjson reads integers outside
# [-2**63, 2**64) as (rounded) floats, the stdlib reads any integer exactly; both read this range.
MIN_EXACT_INT: Final = -(2**63)
MAX_EXACT_INT: Final = 2**64 - 1

# An integer outside that range has at least 19 digits, so JSON text without a run of 19 digits holds
# none (a float is written with at most 17 significant digits). A match is only a hint (a string, or
# a small float's leading zeros, can have one too): the walk of check_value decides.
_LONG_DIGITS = re.compile(r"\d{19}")

_NOT_FINITE = "NaN and infinities are not JSON (store None, or a string, instead)"
_BIG_INT = (
    "integers outside [-2**63, 2**64) do not survive every JSON parser (orjson reads them as "
    "rounded floats); store it as a string"
)


def _exact_json(plain: Any, original: object, path: str) -> str:
    """``plain`` (the codec's unstructured ``original``) as JSON text that reads back exactly.

    Raises:
        UnencodableValue: naming the first value under ``path`` that would not.
    """
    try:
        text = _dumps(plain)
    except (ValueError, TypeError) as exc:  # NaN or infinity (allow_nan=False), or not JSON at all
        check_value(original, path)
        raise UnencodableValue(path, original, f"{type(exc).__name__}: {exc}") from exc
    if len(text) >= 19 and _LONG_DIGITS.search(text) is not None:
        check_value(original, path)
    return text


def check_value(value: object, path: str = "value") -> None:
    """Check that ``value`` can be stored as JSON and read back exactly, by any supported parser.

    ``value`` is anything the codec takes (attrs classes, dicts, lists, tuples, sets, Enums,
    datetimes, primitives). Dict keys are not checked: JSON keeps them as strings.

    Args:
        value: what is about to be written (an event, a state, a reply...).
        path: how to name ``value`` in the error (``"reply"``, ``"Scored"``...).

    Raises:
        UnencodableValue: at the first NaN or infinity, integer outside ``[-2**63, 2**64)`` or object
            the codec cannot turn into JSON, with its path (``"Scored.points"``).

    .. versionadded:: 0.2
    """
    found = _first_unencodable(value, path, raw=False)
    if found is not None:
        raise UnencodableValue(*found)


def _first_unencodable(value: object, path: str, *, raw: bool) -> tuple[str, object, str] | None:
    """The first part of ``value`` JSON would not give back exactly: (path, value, reason).

    ``raw``: ``value`` is what the converter left as it is (under a field typed ``object``, say), so
    it must be JSON already: an attrs instance or an Enum there is not encoded.
    """
    if value is None or isinstance(value, (str, bool)):
        return None
    if isinstance(value, int):
        return None if MIN_EXACT_INT <= value <= MAX_EXACT_INT else (path, value, _BIG_INT)
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value, _NOT_FINITE)
    cls = type(value)
    if isinstance(value, Mapping):
        items: Any = ((f"{path}[{key!r}]", item) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", item) for i, item in enumerate(value))
    elif isinstance(value, (set, frozenset)):
        items = ((f"{path}{{{item!r}}}", item) for item in value)
    elif raw:
        return path, value, f"{cls.__qualname__} is not JSON here (the field holding it is not typed as it)"
    elif attrs.has(cls):
        plain = _converter.unstructure(value)
        for field in attrs.fields(cls):
            item = getattr(value, field.name)
            # The converter encodes by the declared type: a field it passed through untouched
            # (typed ``object`` or ``Any``) must hold JSON already.
            untouched = isinstance(plain, dict) and plain.get(field.name, plain) is item
            found = _first_unencodable(item, f"{path}.{field.name}", raw=untouched)
            if found is not None:
                return found
        return None
    else:
        plain = _converter.unstructure(value)  # an Enum, a datetime...: what the codec makes of it
        if plain is value:
            return path, value, f"{cls.__qualname__} is not JSON (make it an attrs class or an Enum)"
        return _first_unencodable(plain, path, raw=True)
    for where, item in items:
        found = _first_unencodable(item, where, raw=raw)
        if found is not None:
            return found
    return None


def _stdlib_loads(text: str) -> Any:
    return json.loads(text)


try:  # orjson (the "fast" extra) parses two to three times faster: replay is mostly parsing
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    _loads = _stdlib_loads
else:

    def _loads(text: str) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            # What the stdlib encoder writes but strict JSON refuses (NaN, Infinity): let it decide.
            return json.loads(text)


def loads(text: str) -> Any:
    """Parse JSON text with the fastest parser available (orjson if installed, else the stdlib)."""
    return _loads(text)


@attrs.frozen
class EventType:
    """A registered event class: the name and schema version it is stored under."""

    name: str
    version: int
    cls: type[Any]


class EventRegistry:
    """Maps event classes to stored names and versions, and back, with upcasters in between.

    One default registry (``default_registry``) is filled by the ``@event`` and ``@upcaster``
    decorators at import time, as ``cattrs`` keeps a default converter; a separate registry can be
    passed to a supervisor to isolate a set of types.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, EventType] = {}
        self._by_cls: dict[type[Any], EventType] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._structure: dict[type[Any], Callable[[Any, Any], Any]] = {}
        self._encoders: dict[type[Any], tuple[str, int, Callable[[Any], Any]]] = {}
        """By class: the stored name, the version and the unstructure hook (one look-up per event)."""

    def register(self, cls: type[Any], *, name: str | None = None, version: int = 1) -> EventType:
        """Register ``cls`` (an attrs class) under ``name`` (default: the class name) and ``version``.

        Raises:
            ValueError: another class is registered under that name already.
        """
        if version < 1:
            raise ValueError(f"event {cls.__qualname__}: version must be >= 1, got {version}")
        name = name or cls.__name__
        known = self._by_name.get(name)
        if known is not None and _same_class(known.cls, cls) is False:
            raise ValueError(
                f"event name {name!r} is taken by {known.cls.__module__}.{known.cls.__qualname__}: "
                f"register {cls.__module__}.{cls.__qualname__} under another name, "
                f"@event(name='...')"
            )
        entry = EventType(name, version, cls)
        self._by_name[name] = entry
        self._by_cls[cls] = entry
        # Hooks are built on first use, once every annotation resolves.
        self._structure.pop(cls, None)
        self._encoders.pop(cls, None)
        return entry

    def add_upcaster(self, name: str, from_version: int, fn: Upcaster) -> None:
        """Register ``fn`` to upgrade a stored ``name`` payload from ``from_version`` to the next."""
        key = (name, from_version)
        if key in self._upcasters and self._upcasters[key] is not fn:
            raise ValueError(f"an upcaster for {name!r} from version {from_version} exists already")
        self._upcasters[key] = fn

    def lookup(self, cls: type[Any]) -> EventType:
        """The registration of ``cls``.

        Raises:
            UnknownEventType: ``cls`` was never registered with ``@event``.
        """
        try:
            return self._by_cls[cls]
        except KeyError:
            raise UnknownEventType(cls.__name__, 0) from None

    def type_name(self, event: object) -> str:
        """The stored name of ``event``'s type."""
        return self.lookup(type(event)).name

    def encode(self, event: object) -> EventData:
        """Encode ``event`` as JSON under its registered name and version.

        Raises:
            UnknownEventType: ``event``'s class was never registered.
            UnencodableValue: a field holds what JSON would not give back exactly (NaN, a huge int,
                an object the codec cannot encode); its path names the event type and field.
        """
        cls = type(event)
        known = self._encoders.get(cls)
        if known is None:
            entry = self._by_cls.get(cls)
            if entry is None:
                raise UnknownEventType(cls.__name__, 0)
            hook = _converter.get_unstructure_hook(cls)
            known = self._encoders[cls] = (entry.name, entry.version, hook)
        name, version, unstructure = known
        plain = unstructure(event)
        # _exact_json, inlined for the path of every recorded event.
        try:
            text = _dumps(plain)
        except (ValueError, TypeError):
            text = _exact_json(plain, event, name)  # raises, naming the field
        if len(text) >= 19 and _LONG_DIGITS.search(text) is not None:
            check_value(event, name)
        return EventData(name, version, text)

    def decode(self, type_name: str, schema_version: int, data: str) -> object:
        """Decode a stored payload, upcasting it to the registered version first.

        Raises:
            UnknownEventType: the name is unknown, the stored version is newer than the registered
                one, or an upcaster in the chain is missing.
            ValueError: the payload is not JSON, or does not fit the event class.
        """
        return self.structure(type_name, schema_version, _loads(data))

    def structure(self, type_name: str, schema_version: int, payload: Any) -> object:
        """``decode`` for a payload already parsed from JSON (replay parses a whole read at once)."""
        entry = self._by_name.get(type_name)
        if entry is None or schema_version > entry.version:
            raise UnknownEventType(type_name, schema_version)
        version = schema_version
        while version < entry.version:
            fn = self._upcasters.get((type_name, version))
            if fn is None:
                raise UnknownEventType(type_name, version)
            payload = fn(payload)
            version += 1
        hook = self._structure.get(entry.cls)
        if hook is None:
            hook = self._structure[entry.cls] = _converter.get_structure_hook(entry.cls)
        try:
            return hook(payload, entry.cls)
        except (cattrs.BaseValidationError, TypeError, KeyError) as exc:
            raise ValueError(
                f"payload of {type_name!r} v{entry.version} does not fit {entry.cls.__qualname__}: {exc}"
            ) from exc

    def known(self) -> list[EventType]:
        """Every registered event type, by name."""
        return sorted(self._by_name.values(), key=lambda e: e.name)


def _same_class(a: type[Any], b: type[Any]) -> bool:
    # Re-importing a module (or attrs re-creating a slotted class) makes a new class object with the
    # same qualified name: that is the same event, not a clash.
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


default_registry = EventRegistry()


@overload
def event(cls: type[T], /) -> type[T]: ...


@overload
def event(
    *, name: str | None = None, version: int = 1, registry: EventRegistry | None = None
) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(attrs.field,))
def event(
    cls: type[T] | None = None,
    /,
    *,
    name: str | None = None,
    version: int = 1,
    registry: EventRegistry | None = None,
) -> type[T] | Callable[[type[T]], type[T]]:
    """Declare an event type: ``@event`` or ``@event(name="Joined", version=2)``.

    A class that is not an attrs class yet becomes a frozen attrs class. It is registered under its
    name (default: the class name) and schema version.

    .. versionadded:: 0.1
    """

    def wrap(c: type[T]) -> type[T]:
        made: type[Any] = c if attrs.has(c) else attrs.frozen(c)
        (registry or default_registry).register(made, name=name, version=version)
        return cast("type[T]", made)

    return wrap if cls is None else wrap(cls)


def upcaster(
    name: str, *, from_version: int, registry: EventRegistry | None = None
) -> Callable[[Upcaster], Upcaster]:
    """Register a function that upgrades a stored ``name`` payload by one version.

    ``@upcaster("Joined", from_version=1)`` on ``def f(data: dict) -> dict`` turns a version-1 payload
    into a version-2 one; chains (1 -> 2 -> 3) are applied in order during replay.

    .. versionadded:: 0.1
    """

    def wrap(fn: Upcaster) -> Upcaster:
        (registry or default_registry).add_upcaster(name, from_version, fn)
        return fn

    return wrap


@attrs.frozen
class StatusChanged:
    """The runtime's own event: the session's status changed (recorded in its log, never applied).

    ``reason`` says why (pause reason, failure, stop reason); ``result`` is what ``complete`` was
    given.
    """

    status: Status
    reason: str | None = None
    result: Any = None


STATUS_EVENT = "sessionvisor.StatusChanged"


def register_runtime_events(registry: EventRegistry) -> None:
    """Add the runtime's own event types to ``registry``."""
    registry.register(StatusChanged, name=STATUS_EVENT)


register_runtime_events(default_registry)


def encode_state(state: object) -> str:
    """A session state as JSON text, for snapshots.

    Raises:
        UnencodableValue: a part of the state (named ``state....``) would not read back exactly.
    """
    return _exact_json(_converter.unstructure(state), state, "state")


def decode_state(data: str, state_type: Any) -> Any:
    """A snapshot's JSON text back as a ``state_type`` (a class, or a type such as ``list[Scored]``)."""
    value = _loads(data)
    if state_type is type(None):
        if value is not None:
            raise ValueError(f"expected a null state, got {value!r}")
        return None
    return _converter.structure(value, state_type)


def to_json(value: object, *, path: str = "value") -> str:
    """Any codec-supported value (attrs classes, containers, primitives) as JSON text.

    Raises:
        UnencodableValue: a part of ``value`` (named from ``path``) would not read back exactly.
    """
    return _exact_json(_converter.unstructure(value), value, path)


def unstructure(value: object) -> Any:
    """A codec-supported value as plain JSON-able Python data."""
    return _converter.unstructure(value)
