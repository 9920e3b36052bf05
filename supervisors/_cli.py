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
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import anyio

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

from ._cli_args import PROG, CliError, DataError, build_parser
from ._cli_load import check_database, check_schema, import_app, session_class
from ._cli_text import (
    compact,
    field_lines,
    iso_time,
    pretty_state,
    seconds,
    table,
    utc_time,
    visible,
    visible_json,
)

__all__ = ["main"]

logger = logging.getLogger(__name__)

Store = SQLiteStore | PostgresStore


# -- commands -----------------------------------------------------------------------------------


async def _get(store: Store, session_id: str) -> SessionRecord:
    try:
        record = await store.get(session_id)
    except InvalidSessionId as exc:
        raise CliError(str(exc)) from None
    if record is None:
        raise CliError(f"no session {session_id!r} in the store: see `{PROG} list` for the ids it holds")
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
            utc_time(r.created_at),
            utc_time(r.updated_at),
            compact(dict(r.metadata)),
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
    print(table(header, rows))


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
            utc_time(n.heartbeat),
            utc_time(n.started_at),
        )
        for n in await store.nodes()
    ]
    print(table(("NODE", "ADDRESS", "STATE", "LEASES", "HEARTBEAT", "STARTED"), rows))


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
    cls = session_class(record, args.app)
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
        print(field_lines([*entry, ("version", str(record.version))]))
        raise
    snapshot = await store.load_snapshot(record.id)
    fields = [
        *entry,
        ("version", str(record.version)),
        ("created", utc_time(record.created_at)),
        ("updated", utc_time(record.updated_at)),
        ("args", compact(dict(record.args))),
        ("metadata", compact(dict(record.metadata))),
        (
            "snapshot",
            "none"
            if snapshot is None
            else f"version {snapshot.version}, state_version {snapshot.state_version}"
            + ("" if snapshot_version == snapshot.version else " (not used: see the logs)"),
        ),
        *_label_lines(session, state),
    ]
    print(field_lines(fields))
    print("state:")
    print(pretty_state(state))


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
            "recorded_at": iso_time(stored.recorded_at),
            "data": data,
        }
        print(visible_json(json.dumps(line, ensure_ascii=False, separators=(", ", ": "))))


async def _replay(store: Store, args: argparse.Namespace) -> None:
    record = await _get(store, args.id)
    cls = session_class(record, args.app)
    to_version = args.to_version
    if to_version is not None and to_version > record.version:
        print(
            f"{PROG}: note: session {record.id!r} has {record.version} events; showing the last version",
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
    print(field_lines(fields))
    print("state:")
    print(pretty_state(state))


async def _stats(store: Store, args: argparse.Namespace) -> None:
    stats = await store.stats()
    print(
        field_lines(
            [
                ("sessions", str(stats.sessions)),
                ("events", str(stats.events)),
                ("snapshots", str(stats.snapshots)),
            ]
        )
    )
    if stats.by_status:
        print()
        print(table(("STATUS", "SESSIONS"), [(k, str(v)) for k, v in sorted(stats.by_status.items())]))
    if stats.by_type:
        print()
        print(table(("TYPE", "SESSIONS"), [(k, str(v)) for k, v in sorted(stats.by_type.items())]))
    outcomes = await store.outcomes()
    if outcomes:
        print()
        print(
            table(
                ("TYPE", "ENDED", "COMPLETED", "SUCCESS", "MEAN", "P50", "P95", "EVENTS/SESSION"),
                [
                    (
                        name,
                        str(o.ended),
                        str(o.completed),
                        "-" if o.success_rate is None else f"{o.success_rate:.1%}",
                        seconds(o.duration_mean),
                        seconds(o.duration_p50),
                        seconds(o.duration_p95),
                        "-" if o.events_mean is None else f"{o.events_mean:.1f}",
                    )
                    for name, o in sorted(outcomes.items())
                ],
            )
        )


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
        import_app(name, "--app")
    obj: Any = import_app(module_name, "module")
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
            f"output yourself: {PROG} graph {args.target} | dot -Tpng -o {args.png}"
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
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    try:
        if args.command == "graph":
            _graph(args)
        else:
            if args.dsn:
                check_schema(args.dsn, args.schema)
            else:
                check_database(args.db)
            anyio.run(_run, args)
    except CliError as exc:
        print(f"{PROG}: error: {visible(str(exc))}", file=sys.stderr)
        return 2
    except (DataError, StoreError) as exc:
        print(f"{PROG}: error: {visible(str(exc))}", file=sys.stderr)
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
