"""Configuration from a TOML file: the store, the reaper, restarts, history, metrics, shutdown.

One file describes a deployment; ``load_config(path).session_supervisor(session_types=[...])`` builds
the ``SessionSupervisor`` it describes. Every key is checked when the file is read: an unknown key or a
bad value raises ``ConfigError`` naming the key (``reaper.idle_timout: unknown key (did you mean
idle_timeout?)``), so that a typo never silently leaves a limit off.

.. code-block:: toml

    [store]
    kind = "sqlite"              # or "memory"
    path = "sessions.db"         # relative to the working directory
    synchronous = "FULL"         # or "NORMAL"

    [supervisor]
    drain_timeout = 5.0
    max_concurrent_recoveries = 50

    [reaper]                     # ReaperPolicy's fields; leave one out for "no limit"
    idle_timeout = 300
    abandon_after = 3600

    [restarts]                   # RestartPolicy
    max_restarts = 5
    within = 60.0

    [restarts.backoff]           # Backoff
    initial = 0.01

    [history]                    # HistoryConfig
    max_transitions = 50

    [metrics]                    # where the application serves /metrics
    enabled = true
    host = "127.0.0.1"
    port = 9464
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar

import attrs
from prometheus_client import CollectorRegistry

from runtime import EventRegistry, HealthThresholds, HistoryConfig, MemoryStore, Session, SQLiteStore
from runtime.abc import Clock, EventStore

from ._node import Node
from ._reaper import ReaperPolicy
from ._restart import Backoff, RestartPolicy
from ._sessions import SessionSupervisor

__all__ = ["Config", "ConfigError", "MetricsConfig", "StoreConfig", "load_config", "parse_config"]

T = TypeVar("T")

DEFAULT_DB = "sessionvisor.db"
"""The SQLite file used when neither the configuration nor the application names one."""


MAX_CONFIG_BYTES = 1024 * 1024
"""The largest configuration file read (a larger one, or /dev/zero, is not a configuration)."""

_ONE_LINE = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F) if c != 0x09}


class ConfigError(ValueError):
    """A configuration file is unreadable, or one of its keys is unknown or has a bad value.

    Attributes:
        key: the dotted key at fault (``"reaper.idle_timeout"``), or ``""`` for the whole file.
        problem: what is wrong with it.
        source: the file it came from, when known.

    .. versionadded:: 0.1
    """

    key: str
    problem: str
    source: str | None

    def __init__(self, key: str, problem: str, *, source: str | None = None) -> None:
        where = f"{source}: " if source else ""
        message = f"{where}{key}: {problem}" if key else f"{where}{problem}"
        # One line, always: a line break in a file name or a quoted message cannot split the report.
        super().__init__(message.translate(_ONE_LINE))
        self.key = key
        self.problem = problem
        self.source = source


@attrs.frozen(kw_only=True)
class StoreConfig:
    """Which event store to use.

    Attributes:
        kind: ``"sqlite"`` (the embedded default) or ``"memory"`` (nothing survives the process).
        path: the SQLite file; ``None`` leaves the choice to the application (``DEFAULT_DB`` unless
            it passes another ``default_path``). Relative to the working directory.
        synchronous: SQLite's ``synchronous`` level: ``"FULL"`` (durable against power loss) or
            ``"NORMAL"`` (durable against a crash of the process).

    .. versionadded:: 0.1
    """

    kind: Literal["sqlite", "memory"] = "sqlite"
    path: str | None = None
    synchronous: Literal["FULL", "NORMAL"] = "FULL"

    def build(self, default_path: str | os.PathLike[str] = DEFAULT_DB) -> EventStore:
        """A new, unopened store (the supervisor opens and closes it)."""
        if self.kind == "memory":
            return MemoryStore()
        path = self.path if self.path is not None else default_path
        return SQLiteStore(path, synchronous=self.synchronous)


@attrs.frozen(kw_only=True)
class MetricsConfig:
    """Where the application serves Prometheus metrics (``runtime.serve_metrics``).

    .. versionadded:: 0.1
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9464


@attrs.frozen(kw_only=True)
class Config:
    """A whole configuration, as read by :func:`load_config`. Every part has its usual defaults.

    .. versionadded:: 0.1
    """

    store: StoreConfig = attrs.field(factory=StoreConfig)
    reaper: ReaperPolicy = attrs.field(factory=ReaperPolicy)
    restarts: RestartPolicy = attrs.field(factory=RestartPolicy)
    history: HistoryConfig = attrs.field(factory=HistoryConfig)
    metrics: MetricsConfig = attrs.field(factory=MetricsConfig)
    drain_timeout: float = 5.0
    max_concurrent_recoveries: int = 50
    source: str | None = None
    """The file this configuration was read from, if any."""

    def session_supervisor(
        self,
        *,
        session_types: Iterable[type[Session[Any]]] = (),
        store: EventStore | None = None,
        default_path: str | os.PathLike[str] = DEFAULT_DB,
        reaper: ReaperPolicy | None = None,
        restarts: RestartPolicy | None = None,
        history: HistoryConfig | None = None,
        health: HealthThresholds | None = None,
        registry: CollectorRegistry | None = None,
        clock: Clock | None = None,
        events: EventRegistry | None = None,
        drain_timeout: float | None = None,
        max_concurrent_recoveries: int | None = None,
        node: Node | None = None,
    ) -> SessionSupervisor:
        """A ``SessionSupervisor`` as configured; each keyword given overrides the file.

        Args:
            session_types: the session classes stored sessions may have (never in a file).
            store: use this store instead of building the configured one.
            default_path: the SQLite file when the configuration names none.
            reaper, restarts, history, drain_timeout, max_concurrent_recoveries: as
                ``SessionSupervisor`` takes them, instead of the configured ones.
            health, registry, clock, events: passed to ``SessionSupervisor`` (not in files).
            node: this process as one node among several sharing ``store`` (not in files).
        """
        policy = reaper if reaper is not None else self.reaper
        options = SessionSupervisor.host_options(
            policy,
            restarts=restarts if restarts is not None else self.restarts,
            clock=clock,
            events=events,
            drain_timeout=self.drain_timeout if drain_timeout is None else drain_timeout,
            max_concurrent_recoveries=(
                self.max_concurrent_recoveries
                if max_concurrent_recoveries is None
                else max_concurrent_recoveries
            ),
            history=history if history is not None else self.history,
            health=health,
        )
        return SessionSupervisor(
            store=store if store is not None else self.store.build(default_path),
            session_types=session_types,
            reaper=policy,
            registry=registry,
            node=node,
            options=options,
        )


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check a TOML configuration file.

    Raises:
        OSError: the file cannot be read.
        ConfigError: it is not UTF-8 TOML (or larger than ``MAX_CONFIG_BYTES``), or a key is unknown
            or has a bad value (the message, one line, names the file and the key).

    .. versionadded:: 0.1
    """
    source = os.fspath(path)
    with open(source, "rb") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            "", f"larger than {MAX_CONFIG_BYTES} bytes: not a configuration file", source=source
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "", f"not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8", source=source
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"not valid TOML: {exc}", source=source) from None
    except RecursionError:
        raise ConfigError("", "not valid TOML: arrays or tables nested too deeply", source=source) from None
    return parse_config(data, source=source)


def parse_config(data: Mapping[str, Any], *, source: str | None = None) -> Config:
    """Check a configuration already parsed (``tomllib.loads(text)``) and build the ``Config``.

    Raises:
        ConfigError: a key is unknown or has a bad value.

    .. versionadded:: 0.1
    """
    try:
        return _Parser(source).config(data)
    except ConfigError as exc:
        if exc.source is None and source is not None:
            raise ConfigError(exc.key, exc.problem, source=source) from None
        raise


# -- checking -------------------------------------------------------------------------------------

Check = Callable[[str, object], object]


def _kind(value: object) -> str:
    return "a boolean" if isinstance(value, bool) else type(value).__name__


def _number(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, f"must be a number, got {value!r} ({_kind(value)})")
    if not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value!r}")
    return value


def _integer(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"must be an integer, got {value!r} ({_kind(value)})")
    return value


def _positive(read: Callable[[str, object], float]) -> Check:
    def check(key: str, value: object) -> object:
        number = read(key, value)
        if number <= 0:
            raise ConfigError(key, f"must be > 0, got {value!r} (leave the key out for no limit)")
        return number

    return check


def _at_least(read: Callable[[str, object], float], low: float) -> Check:
    def check(key: str, value: object) -> object:
        number = read(key, value)
        if number < low:
            raise ConfigError(key, f"must be >= {low:g}, got {value!r}")
        return number

    return check


def _boolean(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r} ({_kind(value)})")
    return value


def _string(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, got {value!r} ({_kind(value)})")
    if not value:
        raise ConfigError(key, "must not be empty")
    return value


def _one_of(*choices: str, upper: bool = False) -> Check:
    def check(key: str, value: object) -> object:
        text = _string(key, value)
        if upper:
            text = text.upper()
        if text not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise ConfigError(key, f"must be one of {listed}, got {value!r}")
        return text

    return check


def _port(key: str, value: object) -> int:
    port = _integer(key, value)
    if not 0 <= port <= 65535:
        raise ConfigError(key, f"must be a port number from 0 to 65535 (0: any free port), got {port}")
    return port


_POSITIVE_NUMBER = _positive(_number)
_POSITIVE_INT = _positive(_integer)

_SECTIONS = ("store", "supervisor", "reaper", "restarts", "history", "metrics")

_STORE: dict[str, Check] = {
    "kind": _one_of("sqlite", "memory"),
    "path": _string,
    "synchronous": _one_of("FULL", "NORMAL", upper=True),
}
_SUPERVISOR: dict[str, Check] = {
    "drain_timeout": _at_least(_number, 0),
    "max_concurrent_recoveries": _at_least(_integer, 1),
}
# ReaperPolicy's own fields; one the policy gains later (not listed here) is still accepted, and
# checked by the policy's own validators.
_REAPER: dict[str, Check] = {
    "idle_timeout": _POSITIVE_NUMBER,
    "abandon_after": _POSITIVE_NUMBER,
    "max_age": _POSITIVE_NUMBER,
    "max_messages": _POSITIVE_INT,
    "paused_ttl": _POSITIVE_NUMBER,
    "terminal_ttl": _POSITIVE_NUMBER,
    "retention": _POSITIVE_NUMBER,
    "export_dir": _string,
    "max_sessions": _POSITIVE_INT,
    "on_limit": _one_of("reject", "evict_idle"),
    "max_memory_bytes": _POSITIVE_INT,
    "memory_check_interval": _POSITIVE_NUMBER,
    "max_starts_per_second": _POSITIVE_NUMBER,
    "max_resumes_per_second": _POSITIVE_NUMBER,
    "idle_counts_self_sends": _boolean,
}
_RESTARTS: dict[str, Check] = {
    "max_restarts": _at_least(_integer, 0),
    "within": _POSITIVE_NUMBER,
}
_BACKOFF: dict[str, Check] = {
    "initial": _at_least(_number, 0),
    "maximum": _at_least(_number, 0),
    "multiplier": _at_least(_number, 0),
    "jitter": _at_least(_number, 0),
}
_HISTORY: dict[str, Check] = {
    "enabled": _boolean,
    "max_transitions": _at_least(_integer, 1),
}
_METRICS: dict[str, Check] = {
    "enabled": _boolean,
    "host": _string,
    "port": _port,
}


def _unknown(key: str, name: str, known: Iterable[str], what: str = "key") -> ConfigError:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if not close and len(name) >= 3:  # "drain" for drain_timeout, "max_restart" for max_restarts
        close = [k for k in known if k.startswith(name) or name.startswith(k)][:1]
    hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(sorted(known))})"
    return ConfigError(key, f"unknown {what}{hint}")


class _Parser:
    def __init__(self, source: str | None) -> None:
        self.source = source

    def config(self, data: object) -> Config:
        if not isinstance(data, Mapping):
            raise ConfigError("", f"must be a table of sections, got {_kind(data)}")
        for name in data:
            if name not in _SECTIONS:
                raise _unknown(name, name, _SECTIONS, "section")
        store = self.section(data, "store", _STORE)
        if store.get("kind") == "memory":
            for key in ("path", "synchronous"):
                if key in store:
                    raise ConfigError(f"store.{key}", 'only applies to kind = "sqlite"')
        supervisor = self.section(data, "supervisor", _SUPERVISOR)
        restarts = self.section(data, "restarts", _RESTARTS, subsections=("backoff",))
        backoff = self.section(restarts, "backoff", _BACKOFF, prefix="restarts.")
        restarts.pop("backoff", None)
        if backoff:
            restarts["backoff"] = self.build(Backoff, "restarts.backoff", backoff)
        metrics = self.section(data, "metrics", _METRICS)
        parts: dict[str, object] = {
            "store": self.build(StoreConfig, "store", store),
            "reaper": self.build(ReaperPolicy, "reaper", self.reaper(data)),
            "restarts": self.build(RestartPolicy, "restarts", restarts),
            "history": self.build(HistoryConfig, "history", self.section(data, "history", _HISTORY)),
            "metrics": self.build(MetricsConfig, "metrics", metrics),
            "source": self.source,
        }
        return self.build(Config, "supervisor", {**parts, **supervisor})

    def reaper(self, data: Mapping[str, Any]) -> dict[str, object]:
        fields = {f.name for f in attrs.fields(ReaperPolicy)}
        checks = {name: check for name, check in _REAPER.items() if name in fields}
        extra = fields - checks.keys()
        return self.section(data, "reaper", checks, passthrough=extra)

    def section(
        self,
        data: Mapping[str, Any],
        name: str,
        checks: Mapping[str, Check],
        *,
        prefix: str = "",
        subsections: Iterable[str] = (),
        passthrough: Iterable[str] = (),
    ) -> dict[str, object]:
        key = prefix + name
        table = data.get(name)
        if table is None:
            return {}
        if not isinstance(table, Mapping):
            raise ConfigError(key, f"must be a table ([{key}]), got {table!r} ({_kind(table)})")
        subsections = tuple(subsections)
        passthrough = tuple(passthrough)
        known = (*checks, *subsections, *passthrough)
        out: dict[str, object] = {}
        for field, value in table.items():
            dotted = f"{key}.{field}"
            if field in checks:
                out[field] = checks[field](dotted, value)
            elif field in subsections or field in passthrough:
                out[field] = value
            else:
                raise _unknown(dotted, field, known)
        return out

    def build(self, cls: Callable[..., T], key: str, values: Mapping[str, object]) -> T:
        """``cls(**values)``, with whatever its own validators reject reported under ``key``."""
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(key, str(exc)) from None
