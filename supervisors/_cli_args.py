"""The ``sessionvisor`` command's arguments and its two kinds of failure."""

from __future__ import annotations

import argparse
import datetime
import json
import time

from runtime import Status

__all__ = ["PROG", "CliError", "DataError", "build_parser"]

PROG = "sessionvisor"


class CliError(Exception):
    """A usage error: printed on stderr, exit status 2."""


class DataError(Exception):
    """The store or a log is broken: printed on stderr, exit status 1."""


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
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
