"""The EventStore protocol, checked the same way against every store."""

from __future__ import annotations

import math
import time

import pytest

from runtime import (
    AppendExtras,
    EventData,
    IdempotentReply,
    InvalidSessionId,
    Outcomes,
    Reminder,
    SessionExists,
    SessionNotFound,
    SessionRecord,
    Snapshot,
    Status,
    VersionConflict,
)
from runtime.abc import EventStore

pytestmark = pytest.mark.anyio


def ev(n: int) -> EventData:
    return EventData("Counted", 1, f'{{"n": {n}}}')


class TestIndex:
    async def test_create_then_get(self, store: EventStore) -> None:
        """create() adds an index entry that get() returns with version 0 and times set."""
        await store.create(SessionRecord("s1", "Game", args={"a": 1}, metadata={"user": "ann"}))
        got = await store.get("s1")
        assert got is not None
        assert (got.id, got.type, got.status, got.version) == ("s1", "Game", Status.RUNNING, 0)
        assert got.args == {"a": 1}
        assert got.metadata == {"user": "ann"}
        assert got.created_at > 0
        assert await store.get("nope") is None

    async def test_duplicate_create(self, store: EventStore) -> None:
        """A second create() of the same id raises SessionExists and changes nothing."""
        await store.create(SessionRecord("s1", "Game", metadata={"v": 1}))
        with pytest.raises(SessionExists):
            await store.create(SessionRecord("s1", "Other", metadata={"v": 2}))
        got = await store.get("s1")
        assert got is not None
        assert got.type == "Game"

    async def test_list_filters_and_pages(self, store: EventStore) -> None:
        """list() filters by status, type and metadata, oldest first, with limit/offset."""
        for i in range(6):
            await store.create(SessionRecord(f"s{i}", "Game" if i % 2 else "Chat", metadata={"ch": i % 3}))
        await store.set_status("s1", Status.PAUSED)
        assert [r.id for r in await store.list()] == [f"s{i}" for i in range(6)]
        assert [r.id for r in await store.list(type="Game")] == ["s1", "s3", "s5"]
        assert [r.id for r in await store.list(status=Status.PAUSED)] == ["s1"]
        assert [r.id for r in await store.list(metadata={"ch": 0})] == ["s0", "s3"]
        assert [r.id for r in await store.list(type="Game", metadata={"ch": 2})] == ["s5"]
        assert [r.id for r in await store.list(limit=2, offset=3)] == ["s3", "s4"]

    async def test_stats(self, store: EventStore) -> None:
        """stats() counts sessions by status and type, events and snapshots."""
        await store.create(SessionRecord("a", "Game"))
        await store.create(SessionRecord("b", "Chat"))
        await store.append("a", 0, [ev(1), ev(2)], status=Status.COMPLETED)
        await store.save_snapshot(Snapshot("a", 2, 1, "{}"))
        stats = await store.stats()
        assert stats.sessions == 2
        assert stats.events == 2
        assert stats.snapshots == 1
        assert dict(stats.by_status) == {"completed": 1, "running": 1}
        assert dict(stats.by_type) == {"Game": 1, "Chat": 1}


class WallClock:
    """Stands in for ``time.time`` (which both stores stamp records with), at hand-picked times."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0.0
        monkeypatch.setattr(time, "time", lambda: self.now)

    def at(self, t: float) -> None:
        self.now = t


async def outcome_fixture(store: EventStore, clock: WallClock) -> None:
    """Five games and a chat, each created, changed and ended at a known wall-clock time.

    ======  =======  ===========  ======  ===================  ========
    id      created  ended at     events  status               duration
    ======  =======  ===========  ======  ===================  ========
    g1      1000     1010         3       completed            10
    g2      1001     1031         1       failed               30
    g3      1002     1022         2       completed            20
    g4      1003     (1050)       5       running              -
    g5      1004     1044         0       timed_out            40
    c1      1005     (1006)       0       paused               -
    ======  =======  ===========  ======  ===================  ========
    """
    for i, sid in enumerate(["g1", "g2", "g3", "g4", "g5"]):
        clock.at(1000 + i)
        await store.create(SessionRecord(sid, "Game"))
    clock.at(1005)
    await store.create(SessionRecord("c1", "Chat"))
    clock.at(1005.5)
    await store.append("g2", 0, [ev(1)])  # its end comes later, through the index alone
    clock.at(1006)
    await store.set_status("c1", Status.PAUSED)
    clock.at(1010)
    await store.append("g1", 0, [ev(1), ev(2), ev(3)], status=Status.COMPLETED)
    clock.at(1022)
    await store.append("g3", 0, [ev(1), ev(2)], status=Status.COMPLETED)
    clock.at(1031)
    await store.set_status("g2", Status.FAILED)
    clock.at(1044)
    await store.set_status("g5", Status.TIMED_OUT)
    clock.at(1050)
    await store.append("g4", 0, [ev(i) for i in range(5)])


class TestOutcomes:
    async def test_outcomes_by_hand(self, store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """outcomes() gives each type's counts, success rate, durations and events, as worked out by hand."""
        await outcome_fixture(store, WallClock(monkeypatch))
        outcomes = await store.outcomes()
        assert sorted(outcomes) == ["Chat", "Game"]
        game = outcomes["Game"]
        assert dict(game.by_status) == {"completed": 2, "failed": 1, "timed_out": 1, "running": 1}
        # Ended: g1 (10 s, 3 events), g3 (20 s, 2), g2 (30 s, 1), g5 (40 s, 0).
        assert (game.ended, game.completed, game.success_rate) == (4, 2, 0.5)
        assert game.duration_mean == pytest.approx(25.0)
        assert game.duration_p50 == pytest.approx(20.0)  # rank ceil(0.50 * 4) = 2
        assert game.duration_p95 == pytest.approx(40.0)  # rank ceil(0.95 * 4) = 4
        assert game.events_mean == pytest.approx(1.5)
        assert outcomes["Chat"] == Outcomes(
            type="Chat",
            by_status={"paused": 1},
            ended=0,
            completed=0,
            success_rate=None,
            duration_mean=None,
            duration_p50=None,
            duration_p95=None,
            events_mean=None,
        )

    async def test_percentiles_of_one_and_of_twenty(
        self, store: EventStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Nearest rank: one ended session is its own p50 and p95; of 20 (1..20 s), p50 is 10 s, p95 19 s."""
        clock = WallClock(monkeypatch)
        clock.at(100)
        await store.create(SessionRecord("solo", "Solo"))
        clock.at(107)
        await store.set_status("solo", Status.ABANDONED)
        for i in range(1, 21):
            clock.at(1000)
            await store.create(SessionRecord(f"m{i:02}", "Many"))
            clock.at(1000 + i)
            await store.set_status(f"m{i:02}", Status.COMPLETED if i % 4 else Status.STOPPED)
        outcomes = await store.outcomes()
        solo = outcomes["Solo"]
        assert (solo.ended, solo.success_rate, solo.duration_p50, solo.duration_p95) == (1, 0.0, 7.0, 7.0)
        many = outcomes["Many"]
        assert (many.ended, many.completed, many.success_rate) == (20, 15, 0.75)
        assert (many.duration_p50, many.duration_p95) == (10.0, 19.0)
        assert many.duration_mean == pytest.approx(10.5)
        assert many.events_mean == 0.0

    async def test_no_sessions(self, store: EventStore) -> None:
        """An empty store has no outcomes."""
        assert dict(await store.outcomes()) == {}


class TestListOrder:
    async def test_sort_orders(self, store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """list() sorts by creation or last change, either way, and pages after sorting."""
        await outcome_fixture(store, WallClock(monkeypatch))
        created = ["g1", "g2", "g3", "g4", "g5", "c1"]
        updated = ["c1", "g1", "g3", "g2", "g5", "g4"]
        assert [r.id for r in await store.list()] == created
        assert [r.id for r in await store.list(descending=True)] == created[::-1]
        assert [r.id for r in await store.list(order_by="updated_at")] == updated
        assert [r.id for r in await store.list(order_by="updated_at", descending=True)] == updated[::-1]
        page = await store.list(order_by="updated_at", descending=True, limit=2, offset=1)
        assert [r.id for r in page] == ["g5", "g2"]
        assert [r.id for r in await store.list(type="Game", descending=True, limit=2)] == ["g5", "g4"]

    async def test_ties_go_by_id(self, store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """Sessions created at the same time come in id order (reversed when descending)."""
        clock = WallClock(monkeypatch)
        clock.at(5)
        for sid in ["b", "c", "a"]:
            await store.create(SessionRecord(sid, "Game"))
        assert [r.id for r in await store.list()] == ["a", "b", "c"]
        assert [r.id for r in await store.list(descending=True)] == ["c", "b", "a"]

    async def test_time_ranges(self, store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
        """Time bounds are half-open: *_after includes its instant, *_before excludes it."""
        await outcome_fixture(store, WallClock(monkeypatch))

        async def ids(**bounds: float | None) -> list[str]:
            return [
                r.id
                for r in await store.list(
                    created_after=bounds.get("created_after"),
                    created_before=bounds.get("created_before"),
                    updated_after=bounds.get("updated_after"),
                    updated_before=bounds.get("updated_before"),
                )
            ]

        assert await ids(created_after=1002) == ["g3", "g4", "g5", "c1"]
        assert await ids(created_before=1002) == ["g1", "g2"]
        assert await ids(created_after=1001, created_before=1003) == ["g2", "g3"]
        # updated_at counts the log's last append as well as the entry's last change.
        assert await ids(updated_after=1031) == ["g2", "g4", "g5"]
        assert await ids(updated_before=1022) == ["g1", "c1"]
        assert await ids(created_after=1001, updated_before=1044) == ["g2", "g3", "c1"]
        assert await ids(created_after=2000) == []

    async def test_unknown_order(self, store: EventStore) -> None:
        """An order_by that is not a column it sorts by is a ValueError, not SQL."""
        with pytest.raises(ValueError, match="order_by"):
            await store.list(order_by="id; DROP TABLE sessions")  # type: ignore[arg-type]


class TestLog:
    async def test_append_and_read(self, store: EventStore) -> None:
        """Appends get consecutive versions; read() slices them inclusively."""
        await store.create(SessionRecord("s", "Game"))
        assert await store.append("s", 0, [ev(1), ev(2)]) == 2
        assert await store.append("s", 2, [ev(3)]) == 3
        events = await store.read("s")
        assert [(e.version, e.data) for e in events] == [
            (1, '{"n": 1}'),
            (2, '{"n": 2}'),
            (3, '{"n": 3}'),
        ]
        assert all(e.session_id == "s" and e.type == "Counted" for e in events)
        assert [e.version for e in await store.read("s", 2)] == [2, 3]
        assert [e.version for e in await store.read("s", 1, 2)] == [1, 2]
        assert list(await store.read("s", 4)) == []
        record = await store.get("s")
        assert record is not None
        assert record.version == 3

    async def test_stale_writer_conflicts(self, store: EventStore) -> None:
        """An append with a stale expected version raises VersionConflict and writes nothing."""
        await store.create(SessionRecord("s", "Game"))
        await store.append("s", 0, [ev(1)])
        with pytest.raises(VersionConflict) as info:
            await store.append("s", 0, [ev(9)])
        assert (info.value.expected, info.value.actual) == (0, 1)
        assert [e.data for e in await store.read("s")] == ['{"n": 1}']

    async def test_append_to_unknown_session(self, store: EventStore) -> None:
        """Appending to a session that was never created raises SessionNotFound."""
        with pytest.raises(SessionNotFound):
            await store.append("ghost", 0, [ev(1)])

    async def test_status_travels_with_append(self, store: EventStore) -> None:
        """append(status=...) updates the index together with the events."""
        await store.create(SessionRecord("s", "Game"))
        await store.append("s", 0, [ev(1)], status=Status.COMPLETED)
        record = await store.get("s")
        assert record is not None
        assert record.status is Status.COMPLETED

    async def test_snapshots(self, store: EventStore) -> None:
        """The latest saved snapshot is the one loaded."""
        await store.create(SessionRecord("s", "Game"))
        assert await store.load_snapshot("s") is None
        await store.save_snapshot(Snapshot("s", 2, 1, '{"a": 1}'))
        await store.save_snapshot(Snapshot("s", 4, 1, '{"a": 2}'))
        snap = await store.load_snapshot("s")
        assert snap is not None
        assert (snap.version, snap.state_version, snap.data) == (4, 1, '{"a": 2}')

    async def test_delete(self, store: EventStore) -> None:
        """delete() removes the entry, the log and the snapshots; unknown ids are ignored."""
        await store.create(SessionRecord("s", "Game"))
        await store.append("s", 0, [ev(1)])
        await store.save_snapshot(Snapshot("s", 1, 1, "{}"))
        await store.delete("s")
        await store.delete("never")
        assert await store.get("s") is None
        assert list(await store.read("s")) == []
        assert await store.load_snapshot("s") is None
        await store.create(SessionRecord("s", "Game"))
        assert await store.append("s", 0, [ev(5)]) == 1


def reminder(session_id: str, name: str, due_at: float, message: str = '{"t":1}') -> Reminder:
    return Reminder(session_id, name, due_at, message)


class TestReminders:
    async def test_set_replaces_by_name_and_lists_earliest_first(self, store: EventStore) -> None:
        """set_reminder() keeps one reminder per (session, name); reminders() lists by due time."""
        await store.create(SessionRecord("s", "Game"))
        await store.set_reminder(reminder("s", "turn", 50.0))
        await store.set_reminder(reminder("s", "ping", 20.0, '{"p":1}'))
        await store.set_reminder(reminder("s", "turn", 10.0, '{"t":2}'))
        assert list(await store.reminders("s")) == [
            reminder("s", "turn", 10.0, '{"t":2}'),
            reminder("s", "ping", 20.0, '{"p":1}'),
        ]
        assert list(await store.reminders("other")) == []

    async def test_unknown_session_is_refused(self, store: EventStore) -> None:
        """A reminder for a session that is not stored raises SessionNotFound."""
        with pytest.raises(SessionNotFound):
            await store.set_reminder(reminder("ghost", "turn", 1.0))

    async def test_due_range_across_sessions(self, store: EventStore) -> None:
        """due_reminders() returns the due ones of every session, earliest first, up to limit."""
        for sid in ("a", "b", "c"):
            await store.create(SessionRecord(sid, "Game"))
        await store.set_reminder(reminder("a", "x", 30.0))
        await store.set_reminder(reminder("b", "x", 10.0))
        await store.set_reminder(reminder("c", "x", 20.0))
        await store.set_reminder(reminder("c", "y", 40.0))
        due = await store.due_reminders(30.0, limit=10)
        assert [(r.session_id, r.due_at) for r in due] == [("b", 10.0), ("c", 20.0), ("a", 30.0)]
        assert [r.session_id for r in await store.due_reminders(30.0, limit=2)] == ["b", "c"]
        assert [r.due_at for r in await store.due_reminders(math.inf, limit=1)] == [10.0]
        assert list(await store.due_reminders(5.0, limit=10)) == []
        # Asking again returns the same: finding due reminders consumes nothing.
        assert len(await store.due_reminders(math.inf, limit=10)) == 4

    async def test_remove_and_replace_leave_no_ghost(self, store: EventStore) -> None:
        """A removed or re-scheduled reminder is no longer due at its old time."""
        await store.create(SessionRecord("s", "Game"))
        await store.set_reminder(reminder("s", "a", 1.0))
        await store.set_reminder(reminder("s", "b", 2.0))
        await store.remove_reminder("s", "a")
        await store.remove_reminder("s", "never")
        await store.set_reminder(reminder("s", "b", 9.0))
        assert list(await store.due_reminders(5.0, limit=10)) == []
        assert [r.name for r in await store.due_reminders(9.0, limit=10)] == ["b"]

    async def test_fired_reminder_goes_with_the_append(self, store: EventStore) -> None:
        """append(extras.fired) removes the reminder only if it is still the one that fired."""
        await store.create(SessionRecord("s", "Game"))
        fired = reminder("s", "turn", 5.0)
        await store.set_reminder(fired)
        await store.set_reminder(reminder("s", "other", 6.0))
        assert await store.append("s", 0, [ev(1)], extras=AppendExtras(fired=(fired,))) == 1
        assert [r.name for r in await store.reminders("s")] == ["other"]
        # Re-scheduled under the same name while its handler ran: the new one stays.
        again = reminder("s", "turn", 7.0)
        await store.set_reminder(again)
        await store.set_reminder(reminder("s", "turn", 8.0))
        await store.append("s", 1, [], extras=AppendExtras(fired=(again,)))
        assert [(r.name, r.due_at) for r in await store.reminders("s")] == [("other", 6.0), ("turn", 8.0)]

    async def test_rejected_append_keeps_the_reminder(self, store: EventStore) -> None:
        """A stale append changes nothing: the reminder it carried stays (it fires again)."""
        await store.create(SessionRecord("s", "Game"))
        fired = reminder("s", "turn", 5.0)
        await store.set_reminder(fired)
        await store.append("s", 0, [ev(1)])
        with pytest.raises(VersionConflict):
            await store.append("s", 0, [ev(2)], extras=AppendExtras(fired=(fired,)))
        assert list(await store.reminders("s")) == [fired]

    async def test_delete_takes_the_reminders(self, store: EventStore) -> None:
        """delete() removes the session's reminders: none is due for a session that is gone."""
        await store.create(SessionRecord("s", "Game"))
        await store.set_reminder(reminder("s", "turn", 5.0))
        await store.delete("s")
        assert list(await store.due_reminders(math.inf, limit=10)) == []
        await store.create(SessionRecord("s", "Game"))
        assert list(await store.reminders("s")) == []


class TestDeadlines:
    async def test_create_sets_and_due_sessions_finds(self, store: EventStore) -> None:
        """A deadline given at create() is found by due_sessions(), earliest first, up to limit."""
        await store.create(SessionRecord("late", "Game", deadline=30.0))
        await store.create(SessionRecord("early", "Game", deadline=10.0))
        await store.create(SessionRecord("never", "Game"))
        due = await store.due_sessions(30.0, limit=10)
        assert [(r.id, r.deadline) for r in due] == [("early", 10.0), ("late", 30.0)]
        assert [r.id for r in await store.due_sessions(20.0, limit=10)] == ["early"]
        assert [r.id for r in await store.due_sessions(math.inf, limit=1)] == ["early"]
        record = await store.get("never")
        assert record is not None
        assert record.deadline is None

    async def test_set_deadline_moves_and_clears(self, store: EventStore) -> None:
        """set_deadline() moves a session in the due order, or out of it with None."""
        await store.create(SessionRecord("a", "Game", deadline=10.0))
        await store.create(SessionRecord("b", "Game", deadline=20.0))
        await store.set_deadline("a", 25.0)
        await store.set_deadline("b", None)
        await store.set_deadline("ghost", 1.0)
        assert [(r.id, r.deadline) for r in await store.due_sessions(math.inf, limit=10)] == [("a", 25.0)]
        assert list(await store.due_sessions(24.0, limit=10)) == []

    async def test_append_carries_deadline_and_count(self, store: EventStore) -> None:
        """append(extras) sets the deadline and the durable message count with the events."""
        await store.create(SessionRecord("s", "Game", deadline=10.0))
        await store.append("s", 0, [ev(1)], extras=AppendExtras(handled=3, deadline=40.0))
        record = await store.get("s")
        assert record is not None
        assert (record.version, record.handled, record.deadline) == (1, 3, 40.0)
        await store.append("s", 1, [], extras=AppendExtras(handled=4))
        record = await store.get("s")
        assert record is not None
        assert (record.version, record.handled, record.deadline) == (1, 4, 40.0)
        assert list(await store.due_sessions(39.0, limit=10)) == []

    async def test_deleted_session_is_not_due(self, store: EventStore) -> None:
        await store.create(SessionRecord("s", "Game", deadline=1.0))
        await store.delete("s")
        assert list(await store.due_sessions(math.inf, limit=10)) == []


class TestReplies:
    async def test_reply_is_kept_with_the_append(self, store: EventStore) -> None:
        """An idempotent reply stored with an append is found under its key, per session."""
        await store.create(SessionRecord("s", "Game"))
        await store.create(SessionRecord("t", "Game"))
        assert await store.load_reply("s", "k1") is None
        await store.append("s", 0, [ev(1)], extras=AppendExtras(reply=IdempotentReply("k1", '{"ok":1}')))
        assert await store.load_reply("s", "k1") == '{"ok":1}'
        assert await store.load_reply("t", "k1") is None

    async def test_rejected_append_keeps_no_reply(self, store: EventStore) -> None:
        await store.create(SessionRecord("s", "Game"))
        await store.append("s", 0, [ev(1)])
        with pytest.raises(VersionConflict):
            await store.append("s", 0, [ev(2)], extras=AppendExtras(reply=IdempotentReply("k", "1")))
        assert await store.load_reply("s", "k") is None

    async def test_only_the_newest_are_kept(self, store: EventStore) -> None:
        """With keep=N, the N newest replies of a session stay and older ones expire."""
        await store.create(SessionRecord("s", "Game"))
        for i in range(5):
            extras = AppendExtras(reply=IdempotentReply(f"k{i}", str(i), keep=3))
            await store.append("s", i, [ev(i)], extras=extras)
        assert [await store.load_reply("s", f"k{i}") for i in range(5)] == [None, None, "2", "3", "4"]

    async def test_delete_takes_the_replies(self, store: EventStore) -> None:
        await store.create(SessionRecord("s", "Game"))
        await store.append("s", 0, [], extras=AppendExtras(reply=IdempotentReply("k", "1")))
        await store.delete("s")
        await store.create(SessionRecord("s", "Game"))
        assert await store.load_reply("s", "k") is None


class TestAcknowledgedHead:
    async def test_head_moves_with_each_append(self, store: EventStore) -> None:
        """get().version is the head the store acknowledged, append after append (and empty ones)."""
        await store.create(SessionRecord("s", "Game", version=99))  # a given version is ignored
        heads = []
        for expected, count in ((0, 2), (2, 0), (2, 3)):
            assert await store.append("s", expected, [ev(n) for n in range(count)]) == expected + count
            record = await store.get("s")
            assert record is not None
            heads.append(record.version)
        assert heads == [2, 2, 5]
        assert (await store.stats()).events == 5

    async def test_conflict_leaves_the_head(self, store: EventStore) -> None:
        """A rejected append moves neither the log nor the head."""
        await store.create(SessionRecord("s", "Game"))
        await store.append("s", 0, [ev(1)])
        with pytest.raises(VersionConflict):
            await store.append("s", 2, [ev(2)])
        record = await store.get("s")
        assert record is not None
        assert record.version == 1
        assert [e.version for e in await store.read("s")] == [1]


class TestStatusReason:
    async def test_set_status_keeps_reason_and_error_type(self, store: EventStore) -> None:
        """set_status(reason=, error_type=) is kept in the index, for list() and get() alike."""
        await store.create(SessionRecord("s", "Game"))
        fresh = await store.get("s")
        assert fresh is not None
        assert (fresh.status_reason, fresh.error_type) == (None, None)
        why = "event log of session 's' is corrupt at version 4: truncated tail \u2026"
        await store.set_status("s", Status.FAILED, reason=why, error_type="CorruptEventLog")
        record = await store.get("s")
        assert record is not None
        assert (record.status, record.status_reason, record.error_type) == (
            Status.FAILED,
            why,
            "CorruptEventLog",
        )
        (listed,) = await store.list(status=Status.FAILED)
        assert (listed.status_reason, listed.error_type) == (why, "CorruptEventLog")

    async def test_later_status_changes_clear_the_reason(self, store: EventStore) -> None:
        """A later set_status without a reason, or a status taken with an append, clears it."""
        await store.create(SessionRecord("a", "Game"))
        await store.create(SessionRecord("b", "Game"))
        for sid in ("a", "b"):
            await store.set_status(sid, Status.PAUSED, reason="operator", error_type=None)
        await store.set_status("a", Status.RUNNING)
        await store.append("b", 0, [ev(1)], status=Status.STOPPED)
        for sid, status in (("a", Status.RUNNING), ("b", Status.STOPPED)):
            record = await store.get(sid)
            assert record is not None
            assert (record.status, record.status_reason, record.error_type) == (status, None, None)

    async def test_plain_append_keeps_the_reason(self, store: EventStore) -> None:
        """An append without a status leaves the status and its reason alone."""
        await store.create(SessionRecord("s", "Game"))
        await store.set_status("s", Status.PAUSED, reason="operator")
        await store.append("s", 0, [ev(1)])
        record = await store.get("s")
        assert record is not None
        assert (record.status, record.status_reason, record.version) == (Status.PAUSED, "operator", 1)


class TestLoadSession:
    async def test_unknown_session(self, store: EventStore) -> None:
        """load_session() of a session that is not stored is None."""
        assert await store.load_session("ghost") is None

    async def test_entry_snapshot_and_tail(self, store: EventStore) -> None:
        """The entry, the latest snapshot, the events after it and the log's end, together."""
        await store.create(SessionRecord("s", "Game", args={"a": 1}))
        await store.append("s", 0, [ev(n) for n in range(1, 6)])
        view = await store.load_session("s")
        assert view is not None
        assert (view.record.id, view.record.args, view.record.version) == ("s", {"a": 1}, 5)
        assert view.snapshot is None
        assert [e.version for e in view.events] == [1, 2, 3, 4, 5]
        assert view.log_version == 5
        await store.save_snapshot(Snapshot("s", 3, 1, '{"n": 3}'))
        view = await store.load_session("s")
        assert view is not None
        assert view.snapshot is not None
        assert (view.snapshot.version, view.snapshot.data) == (3, '{"n": 3}')
        assert [(e.version, e.data) for e in view.events] == [(4, '{"n": 4}'), (5, '{"n": 5}')]
        assert view.events == list(await store.read("s", 4))

    async def test_without_snapshot_and_up_to_a_version(self, store: EventStore) -> None:
        """after_snapshot=False reads from the first event; to_version stops early, not log_version."""
        await store.create(SessionRecord("s", "Game"))
        await store.append("s", 0, [ev(n) for n in range(1, 6)])
        await store.save_snapshot(Snapshot("s", 3, 1, "{}"))
        whole = await store.load_session("s", after_snapshot=False, to_version=2)
        assert whole is not None
        assert whole.snapshot is None
        assert [e.version for e in whole.events] == [1, 2]
        assert whole.log_version == 5
        short = await store.load_session("s", to_version=2)  # before the snapshot: no events after it
        assert short is not None
        assert short.snapshot is not None
        assert list(short.events) == []
        empty = await store.load_session("s", to_version=0)
        assert empty is not None
        assert list(empty.events) == []


VALID_IDS = ["a", "a/b", "a_b", "a?b", "\u00e9t\u00e9", "\U0001f600" * 64, "x" * 256, " \t\n", "..", "%2F"]
INVALID_IDS: list[tuple[object, str]] = [
    ("", "empty"),
    ("x" * 257, "257 bytes"),
    ("\u00e9" * 129, "258 bytes"),
    ("a\x00b", "NUL"),
    ("\ud800", "lone surrogate"),
    ("ok\udfff", "lone surrogate"),
    (b"bytes", "not a str"),
    (7, "not a str"),
]


class TestSessionIds:
    @pytest.mark.parametrize("sid", VALID_IDS, ids=ascii)
    async def test_valid_ids_round_trip(self, store: EventStore, sid: str) -> None:
        """Ids within the rule are stored and found exactly, each under its own entry."""
        await store.create(SessionRecord(sid, "Game"))
        await store.append(sid, 0, [ev(1)])
        record = await store.get(sid)
        assert record is not None
        assert (record.id, record.version) == (sid, 1)
        assert [r.id for r in await store.list()] == [sid]

    async def test_similar_ids_stay_apart(self, store: EventStore) -> None:
        """Ids that a file name would fold together are distinct sessions."""
        for n, sid in enumerate(["a/b", "a_b", "a?b", "A_B"], start=1):
            await store.create(SessionRecord(sid, "Game"))
            await store.append(sid, 0, [ev(n) for _ in range(n)])
        assert sorted((r.id, r.version) for r in await store.list()) == [
            ("A_B", 4),
            ("a/b", 1),
            ("a?b", 3),
            ("a_b", 2),
        ]

    @pytest.mark.parametrize(("sid", "problem"), INVALID_IDS, ids=ascii)
    async def test_invalid_ids_are_refused_alike(self, store: EventStore, sid: str, problem: str) -> None:
        """Every store refuses the same ids with InvalidSessionId, and keeps nothing."""
        with pytest.raises(InvalidSessionId, match=problem) as info:
            await store.create(SessionRecord(sid, "Game"))
        assert isinstance(info.value, ValueError)
        with pytest.raises(InvalidSessionId, match=problem):
            await store.get(sid)
        assert list(await store.list()) == []
