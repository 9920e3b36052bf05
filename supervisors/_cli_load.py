"""What the ``sessionvisor`` command loads before it runs: the user's modules and session classes,
and a check that the store it is pointed at is one (it never creates one)."""

from __future__ import annotations

import importlib
import os
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

from runtime import Session, SessionRecord

from ._cli_args import CliError
from ._cli_text import visible

__all__ = ["check_database", "check_schema", "import_app", "session_class", "session_classes"]


def import_app(name: str, what: str) -> Any:
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


def session_classes(modules: Iterable[str]) -> dict[str, list[type[Session[Any]]]]:
    """Session classes by type name: those in the modules' namespaces, then in their submodules."""
    found: dict[str, list[type[Session[Any]]]] = {}

    def add(cls: type[Session[Any]]) -> None:
        classes = found.setdefault(cls.type_name or cls.__name__, [])
        if cls not in classes:
            classes.append(cls)

    names = list(modules)
    for name in names:
        module = import_app(name, "--app")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Session) and value is not Session:
                add(value)
    pending: list[type[Session[Any]]] = list(Session.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if any(cls.__module__ == n or cls.__module__.startswith(n + ".") for n in names):
            add(cls)
    return found


def session_class(record: SessionRecord, apps: Sequence[str]) -> type[Session[Any]]:
    classes = session_classes(apps).get(record.type, [])
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


def check_database(path: str) -> None:
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


def check_schema(dsn: str, schema: str) -> None:
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
            f"cannot reach PostgreSQL at --dsn ({visible(str(exc).strip())}): check the DSN"
        ) from exc
    if not (row and row[0]):
        raise CliError(
            f"schema {schema!r} holds no sessionvisor store: pass --schema NAME of the store's schema "
            "(the schema= given to PostgresStore; default sessionvisor)"
        )
