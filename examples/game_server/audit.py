"""After the run: count the moves in the store's logs and hold them against the acknowledged ones.

Every move acknowledged to a bot is also appended to a journal beside the database (``<db>.acked``,
one JSON line per move, written before the bot goes on): a run that is killed leaves its
acknowledged moves there, and the next run on the same database checks them too.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import TextIO

import attrs

from runtime.abc import EventStore

__all__ = ["AckJournal", "Audit", "count_stored_moves", "read_journal"]

_PAGE = 500


@attrs.frozen
class Audit:
    """Moves acknowledged to players against moves stored, each as a (room, turn) pair.

    Attributes:
        stored: every ``game.Played`` event in the logs of this run's rooms.
        acked_not_stored: acknowledged moves missing from the store: lost moves. Must be empty.
        stored_not_acked: moves stored whose answer never reached the player.
        explained: those of ``stored_not_acked`` whose answer was a crash or a timeout (the move
            was recorded, then the room crashed before replying).
        by_status: this run's rooms by final status.
    """

    stored: frozenset[tuple[str, int]]
    acked_not_stored: frozenset[tuple[str, int]]
    stored_not_acked: frozenset[tuple[str, int]]
    explained: frozenset[tuple[str, int]]
    by_status: dict[str, int]

    @property
    def unexplained(self) -> frozenset[tuple[str, int]]:
        return self.stored_not_acked - self.explained

    @property
    def ok(self) -> bool:
        return not self.acked_not_stored and not self.unexplained


class AckJournal:
    """Appends each acknowledged move to a file as it happens (flushed: a killed run keeps them)."""

    def __init__(self, path: str, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        self._file: TextIO = open(path, "a", encoding="utf-8")  # closed by close()
        if self._file.tell() and not _ends_with_newline(path):
            self._file.write("\n")  # a line cut short by a kill stays alone (and is skipped)

    def note(self, room: str, turn: int) -> None:
        self._file.write(json.dumps({"run": self.run_id, "room": room, "turn": turn}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as raw:
        raw.seek(-1, 2)
        return raw.read(1) == b"\n"


def read_journal(path: str) -> dict[str, set[tuple[str, int]]]:
    """The acknowledged moves in a journal, by run (a line cut short by a kill is skipped)."""
    runs: dict[str, set[tuple[str, int]]] = {}
    try:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                try:
                    entry = json.loads(line)
                    runs.setdefault(str(entry["run"]), set()).add((str(entry["room"]), int(entry["turn"])))
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    return runs


async def count_stored_moves(
    store: EventStore,
    runs: Collection[str],
    acked: set[tuple[str, int]],
    uncertain: set[tuple[str, int]],
) -> Audit:
    """Read every log of the rooms of ``runs`` (``store`` must be open) and compare.

    Args:
        store: the store the runs wrote to, opened again after the run.
        runs: the runs' ids, in each room's metadata.
        acked: the moves the players were told were recorded.
        uncertain: the moves whose answer was a crash or a timeout (or never came: a killed run).
    """
    stored: set[tuple[str, int]] = set()
    by_status: dict[str, int] = {}
    for run_id in runs:
        offset = 0
        while True:
            page = await store.list(type="game.Room", metadata={"run": run_id}, limit=_PAGE, offset=offset)
            for record in page:
                by_status[record.status.value] = by_status.get(record.status.value, 0) + 1
                for stored_event in await store.read(record.id):
                    if stored_event.type == "game.Played":
                        stored.add((record.id, int(json.loads(stored_event.data)["turn"])))
            if len(page) < _PAGE:
                break
            offset += _PAGE
    stored_not_acked = stored - acked
    return Audit(
        stored=frozenset(stored),
        acked_not_stored=frozenset(acked - stored),
        stored_not_acked=frozenset(stored_not_acked),
        explained=frozenset(stored_not_acked & uncertain),
        by_status=by_status,
    )
