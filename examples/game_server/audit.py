"""After the run: count the moves in the store's logs and hold them against the acknowledged ones."""

from __future__ import annotations

import json

import attrs

from runtime.abc import EventStore

__all__ = ["Audit", "count_stored_moves"]

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


async def count_stored_moves(
    store: EventStore,
    run_id: str,
    acked: set[tuple[str, int]],
    uncertain: set[tuple[str, int]],
) -> Audit:
    """Read every log of this run's rooms (``store`` must be open) and compare.

    Args:
        store: the store the run wrote to, opened again after the run.
        run_id: the run's id, in each room's metadata.
        acked: the moves the players were told were recorded.
        uncertain: the moves whose answer was a crash or a timeout.
    """
    stored: set[tuple[str, int]] = set()
    by_status: dict[str, int] = {}
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
