"""After the run: count the moves in the store's logs and hold them against the acknowledged ones.

Every move acknowledged to a bot is also appended to a journal beside the database (``<db>.acked``,
one JSON line per move, written before the bot goes on): a run that is killed leaves its
acknowledged moves there, and the next run on the same database checks them too.

On several nodes (PostgreSQL), :func:`check_owners` also reads the fencing epoch each event was
recorded under: a room's log must be one line of versions whose epochs never go back, or two nodes
would have recorded for it at once.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import TextIO

import attrs

from runtime import PostgresStore
from runtime.abc import EventStore

__all__ = ["AckJournal", "Audit", "OwnerAudit", "check_owners", "count_stored_moves", "read_journal"]

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


@attrs.frozen
class OwnerAudit:
    """Who recorded each room's events, from the fencing epochs in the log (several nodes).

    Attributes:
        rooms: rooms whose logs were read.
        leases: rooms whose events were recorded under more than one lease (moved to another node,
            or released and taken again): their epochs must go up along the log.
        forks: rooms whose versions are not 1, 2, 3... (two writers appended the same version).
        went_back: rooms with an event recorded under an older epoch after one under a newer: an
            owner that had lost the room recorded after its successor. Must be empty, as ``forks``.
        unfenced: rooms with events recorded without an epoch (by a process that was not a node).
    """

    rooms: int
    leases: frozenset[str]
    forks: frozenset[str]
    went_back: frozenset[str]
    unfenced: frozenset[str]

    @property
    def ok(self) -> bool:
        return not self.forks and not self.went_back


async def check_owners(store: PostgresStore, runs: Collection[str]) -> OwnerAudit:
    """Read the epochs of every room of ``runs`` (``store`` must be open) and check them."""
    rooms = 0
    leases: set[str] = set()
    forks: set[str] = set()
    went_back: set[str] = set()
    unfenced: set[str] = set()
    for run_id in runs:
        offset = 0
        while True:
            page = await store.list(type="game.Room", metadata={"run": run_id}, limit=_PAGE, offset=offset)
            for record in page:
                rooms += 1
                rows = await store.read_epochs(record.id)
                if [version for version, _ in rows] != list(range(1, len(rows) + 1)):
                    forks.add(record.id)
                epochs = [epoch for _, epoch in rows]
                if None in epochs:
                    unfenced.add(record.id)
                    continue
                fenced = [epoch for epoch in epochs if epoch is not None]
                if fenced != sorted(fenced):
                    went_back.add(record.id)
                if len(set(fenced)) > 1:
                    leases.add(record.id)
            if len(page) < _PAGE:
                break
            offset += _PAGE
    return OwnerAudit(rooms, frozenset(leases), frozenset(forks), frozenset(went_back), frozenset(unfenced))
