"""What both example servers need: their store, and quiet logs for the crashes they cause on purpose."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import sniffio

from runtime import SQLiteStore, StoreError
from runtime.abc import EventStore
from supervisors import Config, ConfigError, load_config

__all__ = ["HideOnPurpose", "count_tasks", "load_or_exit", "open_store", "store_opens"]


def open_store(
    db: str | None, config: Config, default_path: str, *, new: bool = False
) -> tuple[EventStore, str | None]:
    """The store for this run and its file (``None`` in memory).

    ``--db`` wins; else the config's store; else ``default_path``. An existing file is always kept
    (a restart carries on where the last run stopped, killed or not), unless ``new`` is true: the
    explicit ``--new-db`` removes it first.
    """
    if config.store.kind == "memory" and db is None:
        return config.store.build(), None
    path = db if db is not None else (config.store.path or default_path)
    if new:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + suffix)
    if db is not None:
        return SQLiteStore(db, synchronous=config.store.synchronous), db
    return config.store.build(path), path


def count_tasks() -> int:
    """The tasks alive in this event loop, on either backend (for progress lines and leak hunts)."""
    if sniffio.current_async_library() == "trio":
        import trio

        root = trio.lowlevel.current_root_task()
        count, pending = 0, [] if root is None else [root]
        while pending:
            task = pending.pop()
            count += 1
            pending.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
        return count
    import asyncio

    return len(asyncio.all_tasks())


async def store_opens(path: str | None, config: Config) -> bool:
    """Whether the store's file opens; if not, one line on stderr says why (the caller exits 2).

    Checked before the supervisor opens it, so that a bad ``--db`` or ``store.path`` (a missing
    directory, a file that is not a database) is a usage error, not a traceback.
    """
    if path is None:
        return True
    probe = SQLiteStore(path, synchronous=config.store.synchronous)
    try:
        await probe.open()
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    finally:
        await probe.aclose()
    return True


class HideOnPurpose(logging.Filter):
    """Drops log records of exceptions a demo raises on purpose (it counts them in its summary)."""

    def __init__(self, *kinds: type[BaseException]) -> None:
        super().__init__()
        self.kinds = kinds

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], self.kinds))


def load_or_exit(path: str | None, default: Config, *on_purpose: type[BaseException]) -> Config:
    """The configuration (``default`` without a file; exit 2 on a bad one), and quiet logging.

    Logs warnings and worse, leaving out the exceptions the demo raises ``on_purpose``.
    """
    try:
        config = load_config(path) if path else default
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        print(f"error: cannot read the configuration {path!r}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(HideOnPurpose(*on_purpose))
    return config
