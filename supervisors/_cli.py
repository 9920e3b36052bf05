"""The ``sessionvisor`` command: look into a store file offline (no session is activated).

    sessionvisor --db sessions.db list --status running --meta channel=c1
    sessionvisor --db sessions.db --app mygame.sessions show game-42
    sessionvisor --db sessions.db history game-42
    sessionvisor --db sessions.db --app mygame.sessions replay game-42 --to 10
    sessionvisor --db sessions.db stats
    sessionvisor --dsn postgresql://app@127.0.0.1/app nodes
    sessionvisor --dsn postgresql://app@127.0.0.1/app list --status running
    sessionvisor graph mygame.sessions:Game --png game.png

``--dsn`` reads a ``PostgresStore`` (``--schema``, default ``sessionvisor``) instead of an SQLite file;
then ``list`` shows which node owns each session, and ``nodes`` lists the nodes sharing the store.

``--app MODULE`` imports the modules that define your session classes and their ``@event`` types
(repeat it for several). Sessions' states are rebuilt with :func:`runtime.replay`, exactly as a
recovery would, without writing anything.

Exit status: 0 on success, 1 when the store or the log is broken (a corrupt log, a failing
``apply``), 2 for a usage error (a missing file, an unknown id, module or session type).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

import anyio
from cattrs.preconf.json import make_converter

# Until runtime exports it (issue 6).
from runtime import (
    InvalidSessionId,
    PostgresStore,
    SessionError,
    SessionRecord,
    SQLiteStore,
    Status,
    StoreError,
    default_registry,
    replay,
    state_graph,
)
from runtime import Session as _Session

__all__ = ["main"]

logger = logging.getLogger(__name__)

_PROG = "sessionvisor"
Store = SQLiteStore | PostgresStore
_converter = make_converter()


class CliError(Exception):
    """A usage error: printed on stderr, exit status 2."""


class DataError(Exception):
    """The store or a log is broken: printed on stderr, exit status 1."""


# -- arguments ----------------------------------------------------------------------------------


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 or more")
    return value


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _when(text: str) -> float:
    """A point in time: ISO 8601 (UTC unless it says otherwise), or a duration ago (``90s``, ``1h``)."""
    number, unit = text[:-1], text[-1:].lower()
    if unit in _UNITS:
        try:
            ago = float(number)
        except ValueError:
            pass
        else:
            if ago < 0 or ago != ago or ago == float("inf"):
                raise argparse.ArgumentTypeError(f"{text!r}: give a finite duration of 0 or more")
            return time.time() - ago * _UNITS[unit]
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO 8601 time (2026-11-30T12:00:00Z) nor a duration ago (30m, 1h, 2d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _meta(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. --meta channel=c1)")
    # The value is JSON when it parses (n=3 is the number 3, flag=true a boolean, n='"3"' the string),
    # else the text itself (channel=c1).
    try:
        value: object = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Look into a sessionvisor SQLite store offline: list sessions, show one, print "
        "its history, replay it to a version, count, draw a session class's state machine.",
    )
    parser.add_argument(
        "--db",
        default="sessions.db",
        metavar="PATH",
        help="the store's SQLite file (default: sessions.db); it is never created",
    )
    parser.add_argument(
        "--dsn",
        metavar="DSN",
        help="read a PostgresStore at this libpq DSN (e.g. postgresql://app@127.0.0.1:5432/app) "
        "instead of --db; its schema is never created",
    )
    parser.add_argument(
        "--schema",
        default="sessionvisor",
        metavar="NAME",
        help="the PostgresStore's schema (with --dsn; default: sessionvisor)",
    )
    parser.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (dotted name) for its Session classes and @event types; repeatable. "
        "Needed by show and replay",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "list",
        help="sessions in the store, oldest first, as a table",
        epilog="Times are ISO 8601 (UTC unless an offset is given) or a duration ago: "
        "--updated-after 1h lists the sessions that changed in the last hour.",
    )
    p.add_argument("--status", choices=[s.value for s in Status], help="only sessions in this status")
    p.add_argument("--type", help="only sessions of this type (its type_name)")
    p.add_argument(
        "--meta",
        action="append",
        type=_meta,
        default=[],
        metavar="KEY=VALUE",
        help="only sessions whose metadata has KEY equal to VALUE (JSON, or plain text); repeatable",
    )
    p.add_argument("--limit", type=_non_negative, help="at most this many sessions")
    p.add_argument("--offset", type=_non_negative, default=0, help="skip this many first")
    p.add_argument(
        "--sort",
        choices=["created", "updated"],
        default="created",
        help="sort by creation time (the default) or by last change",
    )
    p.add_argument("--desc", action="store_true", help="newest first")
    for bound, meaning in (
        ("created-after", "created at or after WHEN"),
        ("created-before", "created before WHEN"),
        ("updated-after", "last changed at or after WHEN"),
        ("updated-before", "last changed before WHEN"),
    ):
        p.add_argument(f"--{bound}", type=_when, metavar="WHEN", help=f"only sessions {meaning}")

    p = commands.add_parser("show", help="one session: its index entry and its state (needs --app)")
    p.add_argument("id", help="the session id")

    p = commands.add_parser("history", help="a session's events as JSON lines")
    p.add_argument("id", help="the session id")
    p.add_argument("--from", dest="from_version", type=_non_negative, default=1, metavar="VERSION")
    p.add_argument("--to", dest="to_version", type=_non_negative, metavar="VERSION")

    p = commands.add_parser("replay", help="a session's state after VERSION events (needs --app)")
    p.add_argument("id", help="the session id")
    p.add_argument("--to", dest="to_version", type=_non_negative, metavar="VERSION", help="default: the last")
    p.add_argument(
        "--no-snapshot", action="store_true", help="fold the whole log instead of starting from a snapshot"
    )

    commands.add_parser(
        "stats",
        help="counts of sessions by status and type, of events and snapshots, and outcomes per type",
    )

    commands.add_parser("nodes", help="the nodes sharing a PostgresStore, alive or not (needs --dsn)")

    p = commands.add_parser("graph", help="a session class's transitions as Graphviz DOT")
    p.add_argument("target", metavar="MODULE:CLASS", help="e.g. mygame.sessions:Game")
    p.add_argument("--png", metavar="FILE", help="render to FILE with Graphviz's dot instead")
    return parser


# -- helpers ------------------------------------------------------------------------------------


def _import(name: str, what: str) -> Any:
    """Import module ``name`` (the current directory first, as ``python -m`` would)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise CliError(
                f"{what} {name!r}: no module named {exc.name!r}; give the dotted name of the module "
                f"that defines your sessions, and run from the directory that contains it (or set "
                f"PYTHONPATH)"
            ) from None
        raise CliError(f"{what} {name!r} could not be imported: {exc}") from exc
    except Exception as exc:
        raise CliError(f"{what} {name!r} raised while being imported: {type(exc).__name__}: {exc}") from exc


def _session_classes(modules: Iterable[str]) -> dict[str, list[type[_Session[Any]]]]:
    """Session classes by type name: those in the modules' namespaces, then in their submodules."""
    found: dict[str, list[type[_Session[Any]]]] = {}

    def add(cls: type[_Session[Any]]) -> None:
        classes = found.setdefault(cls.type_name or cls.__name__, [])
        if cls not in classes:
            classes.append(cls)

    names = list(modules)
    for name in names:
        module = _import(name, "--app")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, _Session) and value is not _Session:
                add(value)
    pending: list[type[_Session[Any]]] = list(_Session.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if any(cls.__module__ == n or cls.__module__.startswith(n + ".") for n in names):
            add(cls)
    return found


def _session_class(record: SessionRecord, apps: Sequence[str]) -> type[_Session[Any]]:
    classes = _session_classes(apps).get(record.type, [])
    if len(classes) == 1:
        return classes[0]
    if classes:
        raise CliError(
            f"session {record.id!r} is of type {record.type!r}, which several classes claim "
            f"({', '.join(f'{c.__module__}.{c.__qualname__}' for c in classes)}); pass only the "
            f"--app that defines the right one"
        )
    where = f"none of --app {', '.join(apps)} defines it" if apps else "no --app was given"
    raise CliError(
        f"session {record.id!r} is of type {record.type!r} and {where}: pass --app MODULE, the module "
        f"that defines that Session class (type_name {record.type!r}) and its @event types"
    )


def _time(timestamp: float) -> str:
    if not timestamp:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat().replace("+00:00", "Z")


def _compact(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=repr)
    return _visible_json(text)


def _pretty_state(state: object) -> str:
    try:
        plain = _converter.unstructure(state)
        return _visible_json(json.dumps(plain, ensure_ascii=False, indent=2, default=repr))
    except Exception:
        return _visible(repr(state))


def _visible(text: str) -> str:
    """``text`` with every character that is not printable escaped, as ``repr`` would.

    Ids, types, labels and messages come from the store, that is from whoever named the sessions:
    an escape sequence among them must not run in the terminal (recolour it, move the cursor, set
    its title), nor a line break forge a row of a table (issue 17). Control and format characters
    (C0, DEL, C1, bidi overrides), line and paragraph separators, non-ASCII spaces and lone
    surrogates come out as ``\\x1b``, ``\\n``, ``\\u202e``...
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if char in "\n\r\t":
        return repr(char)[1:-1]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _visible_json(text: str) -> str:
    """JSON text (one line, or indented) with what is not printable inside its strings escaped as JSON.

    ``json.dumps(ensure_ascii=False)`` escapes C0 controls only; DEL, C1 controls, bidi overrides and
    line separators would reach the terminal raw. Outside strings JSON has only printable ASCII and,
    indented, line breaks: those are kept.
    """
    if all(c.isprintable() or c == "\n" for c in text):
        return text
    out = []
    for c in text:
        if c.isprintable() or c == "\n":
            out.append(c)
        else:
            out.append(json.dumps(c))  # "\u009b", or a surrogate pair beyond the BMP
            out[-1] = out[-1][1:-1]
    return "".join(out)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(header), *([_visible(c) for c in r] for r in rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _fields(pairs: Iterable[tuple[str, str]]) -> str:
    pairs = list(pairs)
    width = max(len(k) for k, _ in pairs) + 1
    return "\n".join(f"{(k + ':').ljust(width)} {_visible(v)}" for k, v in pairs)


def _check_database(path: str) -> None:
    """Refuse what is not an existing sessionvisor file, before SQLiteStore would create one."""
    if not os.path.exists(path):
        raise CliError(
            f"no database at {path!r}: pass --db PATH of an existing store (the file given to "
            f"SQLiteStore); sessionvisor does not create one here"
        )
    if not os.path.isfile(path):
        raise CliError(f"{path!r} is not a file: pass --db PATH of a store's SQLite file")
    try:
        conn = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sessions'"
            )
            ours = row.fetchone()[0] == 1
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise CliError(
            f"{path!r} cannot be read as an SQLite database ({exc}): pass --db PATH of a store"
        ) from exc
    if not ours:
        raise CliError(f"{path!r} is not a sessionvisor store (it has no sessions table): check --db")


def _check_schema(dsn: str, schema: str) -> None:
    """Refuse a server that does not answer or a schema that holds no store, before opening one."""
    try:
        import psycopg
    except ImportError:
        raise CliError("--dsn needs psycopg: pip install 'sessionvisor[postgres]'") from None
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT to_regclass(format('%%I.schema_version', %s::text)) IS NOT NULL", (schema,)
            ).fetchone()
    except psycopg.Error as exc:
        raise CliError(
            f"cannot reach PostgreSQL at --dsn ({_visible(str(exc).strip())}): check the DSN"
        ) from exc
    if not (row and row[0]):
        raise CliError(
            f"schema {schema!r} holds no sessionvisor store: pass --schema NAME of the store's schema "
            "(the schema= given to PostgresStore; default sessionvisor)"
        )


# -- commands -----------------------------------------------------------------------------------


async def _get(store: Store, session_id: str) -> SessionRecord:
    try:
        record = await store.get(session_id)
    except InvalidSessionId as exc:
        raise CliError(str(exc)) from None
    if record is None:
        raise CliError(f"no session {session_id!r} in the store: see `{_PROG} list` for the ids it holds")
    return record


async def _list(store: Store, args: argparse.Namespace) -> None:
    records = await store.list(
        status=None if args.status is None else Status(args.status),
        type=args.type,
        metadata=dict(args.meta) or None,
        limit=args.limit,
        offset=args.offset,
        order_by="updated_at" if args.sort == "updated" else "created_at",
        descending=args.desc,
        created_after=args.created_after,
        created_before=args.created_before,
        updated_after=args.updated_after,
        updated_before=args.updated_before,
    )
    rows: list[tuple[str, ...]] = [
        (
            r.id,
            r.type,
            r.status.value,
            str(r.version),
            _time(r.created_at),
            _time(r.updated_at),
            _compact(dict(r.metadata)),
        )
        for r in records
    ]
    header: tuple[str, ...] = ("ID", "TYPE", "STATUS", "VERSION", "CREATED", "UPDATED", "METADATA")
    if any(r.status_reason is not None for r in records):
        # Why quarantined sessions FAILED, as the index keeps it (issue 13).
        header += ("REASON",)
        rows = [(*row, _reason(r)) for row, r in zip(rows, records, strict=True)]
    if isinstance(store, PostgresStore):  # many nodes: who owns each session right now
        owners = await store.owners([r.id for r in records])
        header = (*header, "NODE")
        rows = [
            (*row, owners[r.id].node if r.id in owners else "-") for row, r in zip(rows, records, strict=True)
        ]
    print(_table(header, rows))


def _reason(record: SessionRecord) -> str:
    """``ErrorType: reason`` as the index keeps it, or ``-``."""
    if record.status_reason is None:
        return "-"
    if record.error_type is None:
        return record.status_reason
    return f"{record.error_type}: {record.status_reason}"


async def _nodes(store: Store, args: argparse.Namespace) -> None:
    if not isinstance(store, PostgresStore):
        raise CliError("nodes needs a PostgresStore: pass --dsn DSN (an SQLite store has one process)")
    rows = [
        (
            n.name,
            n.address or "-",
            "alive" if n.alive else "dead",
            str(n.leases),
            _time(n.heartbeat),
            _time(n.started_at),
        )
        for n in await store.nodes()
    ]
    print(_table(("NODE", "ADDRESS", "STATE", "LEASES", "HEARTBEAT", "STARTED"), rows))


async def _state(
    store: Store,
    record: SessionRecord,
    cls: type[_Session[Any]],
    *,
    to_version: int | None = None,
    use_snapshot: bool = True,
) -> tuple[_Session[Any], Any, int, int]:
    """(instance, state, version, snapshot version) rebuilt by runtime.replay."""
    session = cls()
    try:
        replayed = await replay(
            store, record, session, default_registry, to_version=to_version, use_snapshot=use_snapshot
        )
    except SessionError as exc:  # CorruptEventLog, RecoveryFailed
        raise DataError(str(exc)) from exc
    return session, replayed.state, replayed.version, replayed.snapshot_version


def _label_lines(session: _Session[Any], state: object) -> list[tuple[str, str]]:
    transitions = type(session).transitions
    if not transitions:
        return []
    try:
        label = session.label(state)
    except Exception as exc:
        return [("label", f"<label() raised {type(exc).__name__}: {exc}>")]
    allowed = sorted(event for (lb, event) in transitions if lb == label)
    return [("label", label), ("allowed events", ", ".join(allowed) or "none (final)")]


async def _show(store: Store, args: argparse.Namespace) -> None:
    record = await _get(store, args.id)
    cls = _session_class(record, args.app)
    entry = [
        ("id", record.id),
        ("type", record.type),
        ("status", record.status.value),
        *([("reason", _reason(record))] if record.status_reason is not None else []),
    ]
    try:
        session, state, _, snapshot_version = await _state(store, record, cls)
    except DataError:
        # A quarantined session's log often cannot be replayed: say what the index knows first.
        print(_fields([*entry, ("version", str(record.version))]))
        raise
    snapshot = await store.load_snapshot(record.id)
    fields = [
        *entry,
        ("version", str(record.version)),
        ("created", _time(record.created_at)),
        ("updated", _time(record.updated_at)),
        ("args", _compact(dict(record.args))),
        ("metadata", _compact(dict(record.metadata))),
        (
            "snapshot",
            "none"
            if snapshot is None
            else f"version {snapshot.version}, state_version {snapshot.state_version}"
            + ("" if snapshot_version == snapshot.version else " (not used: see the logs)"),
        ),
        *_label_lines(session, state),
    ]
    print(_fields(fields))
    print("state:")
    print(_pretty_state(state))


async def _history(store: Store, args: argparse.Namespace) -> None:
    record = await _get(store, args.id)
    for stored in await store.read(record.id, max(args.from_version, 1), args.to_version):
        try:
            data: object = json.loads(stored.data)
        except ValueError:
            data = stored.data  # shown as stored: replay would report it as a corrupt payload
        line = {
            "version": stored.version,
            "type": stored.type,
            "schema_version": stored.schema_version,
            "recorded_at": _iso(stored.recorded_at),
            "data": data,
        }
        print(_visible_json(json.dumps(line, ensure_ascii=False, separators=(", ", ": "))))


async def _replay(store: Store, args: argparse.Namespace) -> None:
    record = await _get(store, args.id)
    cls = _session_class(record, args.app)
    to_version = args.to_version
    if to_version is not None and to_version > record.version:
        print(
            f"{_PROG}: note: session {record.id!r} has {record.version} events; showing the last version",
            file=sys.stderr,
        )
        to_version = record.version
    session, state, version, snapshot_version = await _state(
        store, record, cls, to_version=to_version, use_snapshot=not args.no_snapshot
    )
    start = f"the snapshot at version {snapshot_version}" if snapshot_version else "the first event"
    fields = [
        ("id", record.id),
        ("version", f"{version} of {record.version}"),
        ("replayed from", start),
        *_label_lines(session, state),
    ]
    print(_fields(fields))
    print("state:")
    print(_pretty_state(state))


async def _stats(store: Store, args: argparse.Namespace) -> None:
    stats = await store.stats()
    print(
        _fields(
            [
                ("sessions", str(stats.sessions)),
                ("events", str(stats.events)),
                ("snapshots", str(stats.snapshots)),
            ]
        )
    )
    if stats.by_status:
        print()
        print(_table(("STATUS", "SESSIONS"), [(k, str(v)) for k, v in sorted(stats.by_status.items())]))
    if stats.by_type:
        print()
        print(_table(("TYPE", "SESSIONS"), [(k, str(v)) for k, v in sorted(stats.by_type.items())]))
    outcomes = await store.outcomes()
    if outcomes:
        print()
        print(
            _table(
                ("TYPE", "ENDED", "COMPLETED", "SUCCESS", "MEAN", "P50", "P95", "EVENTS/SESSION"),
                [
                    (
                        name,
                        str(o.ended),
                        str(o.completed),
                        "-" if o.success_rate is None else f"{o.success_rate:.1%}",
                        _seconds(o.duration_mean),
                        _seconds(o.duration_p50),
                        _seconds(o.duration_p95),
                        "-" if o.events_mean is None else f"{o.events_mean:.1f}",
                    )
                    for name, o in sorted(outcomes.items())
                ],
            )
        )


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}s" if value < 100 else f"{value:.0f}s"


_COMMANDS = {
    "list": _list,
    "show": _show,
    "history": _history,
    "replay": _replay,
    "stats": _stats,
    "nodes": _nodes,
}


async def _run(args: argparse.Namespace) -> None:
    store: Store = PostgresStore(args.dsn, schema=args.schema) if args.dsn else SQLiteStore(args.db)
    await store.open()
    try:
        await _COMMANDS[args.command](store, args)
    finally:
        await store.aclose()


def _graph(args: argparse.Namespace) -> None:
    module_name, sep, attr = args.target.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"{args.target!r} is not MODULE:CLASS (e.g. mygame.sessions:Game)")
    for name in args.app:
        _import(name, "--app")
    obj: Any = _import(module_name, "module")
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(f"module {module_name!r} has no {attr!r}: check the class name") from None
    if not (isinstance(obj, type) and issubclass(obj, _Session)):
        raise CliError(f"{args.target} is not a Session subclass")
    try:
        dot = state_graph(obj)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if args.png is None:
        sys.stdout.write(dot)
        return
    executable = shutil.which("dot")
    if executable is None:
        raise CliError(
            "--png needs Graphviz's dot program, which is not installed (or not on PATH): install "
            "Graphviz (apt install graphviz, brew install graphviz), or drop --png and render the DOT "
            f"output yourself: {_PROG} graph {args.target} | dot -Tpng -o {args.png}"
        )
    done = subprocess.run(
        [executable, "-Tpng", "-o", args.png], input=dot.encode(), capture_output=True, check=False
    )
    if done.returncode != 0:
        raise DataError(
            f"dot failed (exit status {done.returncode}): {done.stderr.decode(errors='replace').strip()}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sessionvisor`` command with ``argv`` (default: ``sys.argv[1:]``); returns its exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.WARNING, format=f"{_PROG}: %(levelname)s: %(message)s")
    try:
        if args.command == "graph":
            _graph(args)
        else:
            if args.dsn:
                _check_schema(args.dsn, args.schema)
            else:
                _check_database(args.db)
            anyio.run(_run, args)
    except CliError as exc:
        print(f"{_PROG}: error: {_visible(str(exc))}", file=sys.stderr)
        return 2
    except (DataError, StoreError) as exc:
        print(f"{_PROG}: error: {_visible(str(exc))}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `sessionvisor history ID | head`: stop quietly, as cat would
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that flushing stdout at exit does not fail again
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
