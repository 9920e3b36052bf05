"""Recovery through a real SQLite file (issue 4): restarts, snapshots, upcasters, corruption, conflicts.

Every test writes sessions through a ``SessionSupervisor`` on ``SQLiteStore(path)``, then opens the
same file again, as a new process would. Corruption is made by editing the file with the stdlib
``sqlite3`` module, as bit rot or a careless operator would; the helpers below find a session's rows
whichever way the schema refers to sessions (by id, or by an integer key into the index).
"""

from __future__ import annotations

import copy
import os
import pickle
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, cast

import anyio
import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import (
    CorruptEventLog,
    EventData,
    EventRegistry,
    RecoveryFailed,
    Session,
    SessionCrashed,
    SessionError,
    SessionRef,
    SessionStopped,
    Snapshot,
    SQLiteStore,
    Status,
    StoreError,
    VersionConflict,
    default_registry,
    replay,
)
from runtime._stores import _sqlite_writer
from supervisors import SessionSupervisor
from tests.apps.recovery_app import (
    Added,
    Crash,
    Finish,
    Ledger,
    Named,
    Put,
    Read,
    Tally,
    fold,
    ledger_class,
)
from tests.helpers import NO_BACKOFF, ProxyStore, no_backoff

pytestmark = pytest.mark.anyio

UNLIMITED = no_backoff(max_restarts=1000, within=1.0)


# -- the file, seen through the stdlib sqlite3 module ------------------------------------------------


@contextmanager
def sql(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain autocommit connection to the store's file, closed on exit."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn


def _session_clause(conn: sqlite3.Connection) -> str:
    """SQL selecting the rows of session ``:sid`` in ``events`` or ``snapshots``."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    if "session_id" in columns:
        return "session_id = :sid"
    return "session = (SELECT key FROM sessions WHERE id = :sid)"


def edit(path: Path, sid: str, *statements: str, **params: object) -> None:
    """Run ``statements`` on the file; ``{session}`` in them selects session ``sid``'s rows."""
    with sql(path) as conn:
        clause = _session_clause(conn)
        for statement in statements:
            changed = conn.execute(statement.format(session=clause), {"sid": sid, **params}).rowcount
            assert changed == 1, f"{statement!r} changed {changed} rows"


def rows(path: Path, sid: str | None = None) -> list[tuple[Any, ...]]:
    """The events table (or one session's part of it) exactly as stored: text comes back as bytes."""
    with sql(path) as conn:
        conn.text_factory = bytes
        if sid is None:
            return conn.execute("SELECT * FROM events ORDER BY position").fetchall()
        where = _session_clause(conn)
        return conn.execute(f"SELECT * FROM events WHERE {where} ORDER BY position", {"sid": sid}).fetchall()


def versions(path: Path, sid: str) -> list[int]:
    with sql(path) as conn:
        where = _session_clause(conn)
        return [
            v
            for (v,) in conn.execute(
                f"SELECT version FROM events WHERE {where} ORDER BY position", {"sid": sid}
            )
        ]


def added(*ns: int) -> tuple[Added, ...]:
    return tuple(Added(n) for n in ns)


async def read(ref: SessionRef) -> tuple[int, Tally]:
    """The ledger's (version, state)."""
    version, state = cast("tuple[int, Tally]", await ref.call(Read()))
    return version, state


# -- 1. a process restart -----------------------------------------------------------------------------


class TestRoundTrip:
    """More round trips, on SQLite and PostgreSQL: test_recovery_stores.py."""

    async def test_session_without_snapshot_replays_its_whole_log(self, tmp_path: Path) -> None:
        """With its snapshot gone, a session is rebuilt from its first event."""
        path = tmp_path / "s.db"
        evs = [Added(n) for n in range(25)]
        async with SessionSupervisor(store=SQLiteStore(path)) as first:
            ref = await first.start(Ledger, "s")
            for ev in evs:
                await ref.call(Put((ev,)))
        edit(path, "s", "DELETE FROM snapshots WHERE {session}")
        async with SessionSupervisor(store=SQLiteStore(path), session_types=[Ledger]) as second:
            assert await (await second.get("s")).call(Read()) == (25, fold(evs))


# -- 2. snapshots -------------------------------------------------------------------------------------

event_lists = st.lists(
    st.one_of(
        st.builds(Added, st.integers(0, 1000)),
        st.builds(Named, st.text(st.characters(exclude_categories=["Cs"]), max_size=6)),
    ),
    min_size=1,
    max_size=30,
)
batch_plans = st.lists(st.tuples(st.integers(1, 4), st.booleans()), min_size=30, max_size=30)
"""How many events each call records, and whether the session crashes after it."""


class TestSnapshots:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(evs=event_lists, every=st.integers(1, 12), plan=batch_plans)
    async def test_snapshot_plus_tail_equals_full_replay(
        self,
        tmp_path_factory: pytest.TempPathFactory,
        evs: list[object],
        every: int,
        plan: list[tuple[int, bool]],
    ) -> None:
        """From every snapshot the runtime takes, snapshot + tail is the fold of the whole log."""
        cls = ledger_class(every)
        start = Tally(total=7)
        path = tmp_path_factory.mktemp("snap") / "s.db"
        store = ProxyStore(SQLiteStore(path, synchronous="NORMAL"))
        async with SessionSupervisor(store=store, restarts=UNLIMITED) as sessions:
            ref = await sessions.start(cls, "s", {"start": 7})
            done = 0
            for size, crash in plan:
                if done == len(evs):
                    break
                batch = evs[done : done + size]
                done += len(batch)
                assert await ref.call(Put(tuple(batch))) == (done, fold(evs[:done], start))
                if crash:
                    # The restart rebuilds the state from the latest snapshot and the tail after it.
                    with pytest.raises(SessionCrashed):
                        await ref.call(Crash())
                    assert await ref.call(Read()) == (done, fold(evs[:done], start))
        n = len(evs)
        taken = sorted({s.version: s for s in store.snapshots}.values(), key=lambda s: s.version)
        assert taken, "the supervisor snapshots its sessions when it shuts down"
        assert taken[-1].version == n
        plain = SQLiteStore(path)
        await plain.open()
        try:
            record = await plain.get("s")
            assert record is not None
            assert record.version == n
            full = await replay(plain, record, cls(), default_registry, use_snapshot=False)
            assert (full.state, full.version, full.replayed, full.snapshot_version) == (
                fold(evs, start),
                n,
                n,
                0,
            )
            for k in range(n + 1):
                prefix = await replay(
                    plain, record, cls(), default_registry, to_version=k, use_snapshot=False
                )
                assert (prefix.state, prefix.version) == (fold(evs[:k], start), k)
            for snap in taken:
                await plain.save_snapshot(snap)
                got = await replay(plain, record, cls(), default_registry)
                assert (got.state, got.version) == (full.state, n)
                assert (got.snapshot_version, got.replayed) == (snap.version, n - snap.version)
            # The actor recovers the same way from the earliest of them (the longest tail).
            await plain.save_snapshot(taken[0])
        finally:
            await plain.aclose()
        async with SessionSupervisor(
            store=SQLiteStore(path, synchronous="NORMAL"), session_types=[cls]
        ) as again:
            assert await (await again.get("s")).call(Read()) == (n, fold(evs, start))

    async def test_higher_state_version_ignores_older_snapshots(self, tmp_path: Path) -> None:
        """A class with a higher state_version replays the whole log instead of an older snapshot."""
        path = tmp_path / "s.db"
        evs = [Added(n) for n in range(1, 16)]
        async with SessionSupervisor(store=SQLiteStore(path)) as first:
            ref = await first.start(Ledger, "s")
            await ref.call(Put(tuple(evs)))
        # Make the version-1 snapshot lie, so that whoever uses it is seen to.
        liar = '{"total":-1,"count":-1,"names":["from the snapshot"]}'
        edit(path, "s", "UPDATE snapshots SET data = :liar WHERE {session}", liar=liar)
        async with SessionSupervisor(store=SQLiteStore(path), session_types=[Ledger]) as old:
            assert await (await old.get("s")).call(Read()) == (15, Tally(-1, -1, ("from the snapshot",)))

        class LedgerV2(Ledger):
            state_version = 2

        async with SessionSupervisor(store=SQLiteStore(path), session_types=[LedgerV2]) as new:
            record = await new.store.get("s")
            assert record is not None
            got = await replay(new.store, record, LedgerV2(), default_registry)
            assert (got.snapshot_rejected, got.snapshot_version, got.replayed) == ("state_version", 0, 15)
            assert got.state == fold(evs)
            ref = await new.get("s")
            assert await ref.call(Read()) == (15, fold(evs))
            assert await ref.call(Put(added(100))) == (16, fold([*evs, Added(100)]))
        snapshot = await _load_snapshot(path, "s")
        assert (snapshot.version, snapshot.state_version) == (16, 2)

    async def test_undecodable_snapshot_falls_back_to_the_log(self, tmp_path: Path) -> None:
        """A snapshot that cannot be decoded is skipped (and counted): the whole log is replayed."""
        path = tmp_path / "s.db"
        evs = [Added(n) for n in range(1, 13)]
        async with SessionSupervisor(store=SQLiteStore(path)) as first:
            ref = await first.start(Ledger, "s")
            await ref.call(Put(tuple(evs)))
        edit(path, "s", "UPDATE snapshots SET data = '{{\"total\": ' WHERE {session}")
        async with SessionSupervisor(store=SQLiteStore(path), session_types=[Ledger]) as again:
            ref = await again.get("s")
            assert await ref.call(Read()) == (12, fold(evs))
            stats = await again.stats()
            assert (stats.snapshot_failures, stats.quarantined, stats.restarts) == (1, 0, 0)


async def _load_snapshot(path: Path, sid: str) -> Snapshot:
    store = SQLiteStore(path)
    await store.open()
    try:
        snapshot = await store.load_snapshot(sid)
    finally:
        await store.aclose()
    assert snapshot is not None
    return snapshot


# -- 3. upcasters -------------------------------------------------------------------------------------


@attrs.frozen
class ScoredV1:
    points: int


@attrs.frozen
class ScoredV2:
    points: int
    player: str


@attrs.frozen
class ScoredV3:
    points: int
    player: str
    bonus: int


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "player": "anon"}


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "bonus": data["points"] // 10}


def registry(version: int, *, upcasters: Sequence[int] = ()) -> EventRegistry:
    """A registry where ``rec.Scored`` is at ``version``, with upcasters from the versions given."""
    reg = EventRegistry()
    reg.register({1: ScoredV1, 2: ScoredV2, 3: ScoredV3}[version], name="rec.Scored", version=version)
    for v in upcasters:
        reg.add_upcaster("rec.Scored", v, {1: _v1_to_v2, 2: _v2_to_v3}[v])
    return reg


Entries = tuple[tuple[str, int, int], ...]


class Board(Session[Entries]):
    """A scoreboard of (player, points, bonus), whatever version of ``rec.Scored`` it is given."""

    type_name = "rec.Board"
    snapshot_every = None

    def initial_state(self, args: Mapping[str, Any]) -> Entries:
        return ()

    def apply(self, state: Entries, event: object) -> Entries:
        match event:
            case ScoredV1(points=p):
                return (*state, ("?", p, 0))
            case ScoredV2(points=p, player=who):
                return (*state, (who, p, 0))
            case ScoredV3(points=p, player=who, bonus=b):
                return (*state, (who, p, b))
        raise TypeError(f"not a score: {event!r}")

    async def handle_call(self, message: object) -> object:
        if isinstance(message, Put):
            await self.record(*message.events)
        return self.version, self.state


class BoardV2(Board):
    state_version = 2  # each release changed the state's shape: older snapshots are ignored


class BoardV3(Board):
    state_version = 3


class TestUpcasters:
    async def test_chain_v1_v2_v3_through_the_store(self, tmp_path: Path) -> None:
        """Payloads stored at v1 and v2 are upgraded in turn (1->2->3) on replay, and stay as stored."""
        path = tmp_path / "s.db"
        async with SessionSupervisor(store=SQLiteStore(path), events=registry(1)) as release1:
            ref = await release1.start(Board, "b")
            assert await ref.call(Put((ScoredV1(5), ScoredV1(15)))) == (2, (("?", 5, 0), ("?", 15, 0)))
        async with SessionSupervisor(
            store=SQLiteStore(path), session_types=[BoardV2], events=registry(2, upcasters=[1])
        ) as release2:
            ref = await release2.get("b")
            assert await ref.call(Put((ScoredV2(7, "ann"),))) == (
                3,
                (("anon", 5, 0), ("anon", 15, 0), ("ann", 7, 0)),
            )
        stored = rows(path, "b")
        async with SessionSupervisor(
            store=SQLiteStore(path), session_types=[BoardV3], events=registry(3, upcasters=[1, 2])
        ) as release3:
            ref = await release3.get("b")
            want = (("anon", 5, 0), ("anon", 15, 1), ("ann", 7, 0))
            assert await ref.call(Read()) == (3, want)
            assert await ref.call(Put((ScoredV3(1, "bob", 9),))) == (4, (*want, ("bob", 1, 9)))
        with sql(path) as conn:
            assert [v for (v,) in conn.execute("SELECT schema_version FROM events ORDER BY position")] == [
                1,
                1,
                2,
                3,
            ]
        assert rows(path, "b")[:3] == stored  # upgraded in memory only: the log is never rewritten

    async def test_missing_link_in_the_chain_quarantines(self, tmp_path: Path) -> None:
        """v1 payloads with only a 2->3 upcaster: CorruptEventLog at the first of them."""
        path = tmp_path / "s.db"
        async with SessionSupervisor(store=SQLiteStore(path), events=registry(1)) as release1:
            await (await release1.start(Board, "b")).call(Put((ScoredV1(5),)))
        async with SessionSupervisor(
            store=SQLiteStore(path), session_types=[BoardV3], events=registry(3, upcasters=[2])
        ) as release3:
            with pytest.raises(CorruptEventLog, match=r"'rec\.Scored' version 1") as info:
                await (await release3.get("b")).call(Read())
            assert (info.value.session_id, info.value.version) == ("b", 1)
            assert (await release3.inspect("b")).status is Status.FAILED


# -- 4. corruption ------------------------------------------------------------------------------------


async def populate(path: Path) -> None:
    """Sessions "bad" and "good", five events each (1..5); "bad" is the one the tests corrupt."""
    async with SessionSupervisor(store=SQLiteStore(path)) as sessions:
        bad = await sessions.start(Ledger, "bad")
        good = await sessions.start(Ledger, "good")
        for n in range(1, 6):
            await bad.call(Put(added(n)))
            await good.call(Put(added(n)))


NO_SNAPSHOT = "DELETE FROM snapshots WHERE {session}"
"""Corrupt events must be replayed to be seen: the shutdown snapshot (at version 5) would cover them."""


@attrs.frozen
class Corruption:
    statements: tuple[str, ...]
    error: type[SessionError]
    version: int
    match: str


CORRUPTIONS = {
    "gap": Corruption(
        (NO_SNAPSHOT, "DELETE FROM events WHERE {session} AND version = 3"),
        CorruptEventLog,
        3,
        r"versions 3\.\.3 are missing \(gap\)",
    ),
    "gap at the start": Corruption(
        (NO_SNAPSHOT, "DELETE FROM events WHERE {session} AND version = 1"), CorruptEventLog, 1, "gap"
    ),
    "payload not JSON": Corruption(
        (NO_SNAPSHOT, "UPDATE events SET data = '{{\"n\": ' WHERE {session} AND version = 2"),
        CorruptEventLog,
        2,
        "cannot be decoded",
    ),
    "payload of another shape": Corruption(
        (NO_SNAPSHOT, "UPDATE events SET data = '{{\"amount\": 2}}' WHERE {session} AND version = 2"),
        CorruptEventLog,
        2,
        "cannot be decoded",
    ),
    "payload not text": Corruption(
        (NO_SNAPSHOT, "UPDATE events SET data = 42 WHERE {session} AND version = 2"),
        CorruptEventLog,
        2,
        "cannot be decoded",
    ),
    "unknown event type": Corruption(
        (NO_SNAPSHOT, "UPDATE events SET type = 'rec.Vanished' WHERE {session} AND version = 4"),
        CorruptEventLog,
        4,
        "'rec.Vanished' version 1 is not registered",
    ),
    "newer schema version": Corruption(
        (NO_SNAPSHOT, "UPDATE events SET schema_version = 7 WHERE {session} AND version = 4"),
        CorruptEventLog,
        4,
        "'rec.Added' version 7 is not registered",
    ),
    "apply raises": Corruption(
        (NO_SNAPSHOT, "UPDATE events SET data = '{{\"n\":-1}}' WHERE {session} AND version = 3"),
        RecoveryFailed,
        3,
        "a negative amount",
    ),
    "truncated tail": Corruption(
        # The last two events go; the shutdown snapshot (at 5) stays and would hide the loss.
        (
            "DELETE FROM events WHERE {session} AND version = 5",
            "DELETE FROM events WHERE {session} AND version = 4",
        ),
        CorruptEventLog,
        4,
        r"truncated tail: the log ends at version 3 but the store acknowledged 5",
    ),
    "snapshot beyond the last event": Corruption(
        ("UPDATE snapshots SET version = 9 WHERE {session}",),
        CorruptEventLog,
        9,
        r"beyond the last event \(5\)",
    ),
}


async def expect_quarantine(path: Path, corruption: Corruption, store: Any = None) -> None:
    """Open the file as a new process would and check that "bad" alone is quarantined, at once."""
    good_state = fold(added(1, 2, 3, 4, 5))
    async with SessionSupervisor(
        store=store or SQLiteStore(path), session_types=[Ledger], restarts=NO_BACKOFF
    ) as sessions:
        bad = await sessions.get("bad")
        errors: list[BaseException] = []

        async def caller() -> None:
            try:
                await bad.call(Read(), timeout=30)
            except Exception as exc:
                errors.append(exc)

        started = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for _ in range(3):  # the first activates the session, the others queue behind it
                tg.start_soon(caller)
        assert anyio.current_time() - started < 1, "callers must not wait for a timeout"
        assert len(errors) == 3
        for err in errors:
            assert isinstance(err, corruption.error), repr(err)
            assert isinstance(err, CorruptEventLog | RecoveryFailed)
            assert (err.session_id, err.version) == ("bad", corruption.version)
            assert "'bad'" in str(err)
        with pytest.raises(corruption.error, match=corruption.match):
            await bad.call(Read(), timeout=30)  # later callers get it at once too
        with pytest.raises(corruption.error):
            await bad.cast(Read())

        await anyio.sleep(0.1)  # nothing restarts it meanwhile
        assert bad.status is Status.FAILED
        view = await sessions.inspect("bad")
        assert (view.status, view.restarts) == (Status.FAILED, 0)
        stats = await sessions.stats()
        assert (stats.restarts, stats.quarantined) == (0, 1)
        record = await sessions.store.get("bad")
        assert record is not None
        assert record.status is Status.FAILED

        good = await sessions.get("good")
        assert await good.call(Read()) == (5, good_state)
        assert await good.call(Put(added(6))) == (6, fold([Added(6)], good_state))
        assert good.status is Status.RUNNING


class TestCorruption:
    @pytest.mark.parametrize(
        "error",
        [
            CorruptEventLog("s", 3, "versions 3..3 are missing (gap)"),
            RecoveryFailed("s", 3, ValueError("no")),
        ],
    )
    def test_quarantine_errors_can_be_copied(self, error: CorruptEventLog | RecoveryFailed) -> None:
        """Each caller of a quarantined session gets a copy of its error: copies keep every field."""
        for clone in (copy.copy(error), pickle.loads(pickle.dumps(error))):
            assert type(clone) is type(error)
            assert (str(clone), clone.session_id, clone.version) == (str(error), "s", 3)

    @pytest.mark.parametrize("name", list(CORRUPTIONS))
    async def test_quarantined_at_once_and_log_untouched(self, tmp_path: Path, name: str) -> None:
        """Each corruption: FAILED with the error naming session and version, no restarts, log intact."""
        path = tmp_path / "s.db"
        await populate(path)
        corruption = CORRUPTIONS[name]
        edit(path, "bad", *corruption.statements)
        before, before_all = rows(path, "bad"), rows(path)
        await expect_quarantine(path, corruption)
        assert rows(path, "bad") == before
        after_all = rows(path)
        assert after_all[: len(before_all)] == before_all  # only "good"'s new event was added
        assert len(after_all) == len(before_all) + 1
        # A later process finds it FAILED in the index and does not try again.
        async with SessionSupervisor(store=SQLiteStore(path), session_types=[Ledger]) as later:
            bad = await later.get("bad")
            assert bad.status is Status.FAILED
            with pytest.raises(SessionError, match="'bad'"):
                await bad.call(Read())
            assert (await later.stats()).restarts == 0
        assert rows(path, "bad") == before

    async def test_duplicate_version(self, tmp_path: Path) -> None:
        """A duplicate version cannot be written into the file: events are UNIQUE (session, version).

        So the file refuses one (checked here), and the runtime's own check is shown on a store
        whose ``read`` repeats an event, as a store without that constraint could.
        """
        path = tmp_path / "s.db"
        await populate(path)
        edit(path, "bad", NO_SNAPSHOT)
        before_all = rows(path)
        with sql(path) as conn:
            columns = [row[1] for row in conn.execute("PRAGMA table_info(events)")][1:]
            copy = ", ".join(columns)
            clause = _session_clause(conn)
            with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
                conn.execute(
                    f"INSERT INTO events ({copy}) SELECT {copy} FROM events WHERE {clause} AND version = 3",
                    {"sid": "bad"},
                )
        assert rows(path) == before_all
        store = ProxyStore(SQLiteStore(path))
        store.repeat_on_read = 3
        await expect_quarantine(
            path, Corruption((), CorruptEventLog, 4, "version 3 appears again \\(duplicate\\)"), store
        )
        assert rows(path)[: len(before_all)] == before_all

    async def test_payload_not_utf8(self, tmp_path: Path) -> None:
        """A payload whose bytes are not UTF-8 (bit rot) is an undecodable payload like any other."""
        path = tmp_path / "s.db"
        await populate(path)
        edit(
            path,
            "bad",
            NO_SNAPSHOT,
            "UPDATE events SET data = CAST(X'7B226E223AFF7D' AS TEXT) WHERE {session} AND version = 2",
        )
        before = rows(path, "bad")
        try:
            await expect_quarantine(path, Corruption((), CorruptEventLog, 2, "cannot be decoded"))
        finally:
            assert rows(path, "bad") == before


def index_row(path: Path, sid: str) -> dict[str, Any]:
    """The session's index entry exactly as stored (text as bytes), by column."""
    with sql(path) as conn:
        conn.text_factory = bytes
        cursor = conn.execute("SELECT * FROM sessions WHERE id = ?", (sid,))
        names = [d[0] for d in cursor.description]
        row = cursor.fetchone()
    assert row is not None
    return dict(zip(names, row, strict=True))


class TestTruncatedTail:
    async def test_lost_tail_quarantines_and_changes_nothing(self, tmp_path: Path) -> None:
        """The last two events deleted with sqlite3: the next activation quarantines, nothing is repaired.

        The shutdown snapshot (at version 5) covers the lost events, so only the acknowledged
        head in the index can tell. The log stays as it is, the head is not "fixed" to match it,
        and only the status and its reason change in the index.
        """
        path = tmp_path / "s.db"
        await populate(path)
        edit(
            path,
            "bad",
            "DELETE FROM events WHERE {session} AND version = 5",
            "DELETE FROM events WHERE {session} AND version = 4",
        )
        log_before, entry_before = rows(path), index_row(path, "bad")
        assert entry_before["version"] == 5
        async with SessionSupervisor(store=SQLiteStore(path), session_types=[Ledger]) as sessions:
            bad = await sessions.get("bad")
            with pytest.raises(CorruptEventLog, match="truncated") as info:
                await bad.call(Read())
            assert (info.value.session_id, info.value.version) == ("bad", 4)
            assert "the log ends at version 3 but the store acknowledged 5" in str(info.value)
            good = await sessions.get("good")
            assert await good.call(Read()) == (5, fold(added(1, 2, 3, 4, 5)))
        log_after, entry_after = rows(path), index_row(path, "bad")
        assert log_after == log_before
        changed = {k for k in entry_before if entry_before[k] != entry_after[k]}
        assert changed == {"status", "status_reason", "error_type", "updated_at"}
        assert (entry_after["status"], entry_after["error_type"]) == (b"failed", b"CorruptEventLog")
        assert entry_after["status_reason"] == str(info.value).encode()

        # A later process: FAILED from the index, with why; it reads and writes nothing more.
        async with SessionSupervisor(store=SQLiteStore(path), session_types=[Ledger]) as later:
            view = await later.inspect("bad")
            assert (view.status, view.status_reason) == (Status.FAILED, str(info.value))
            with pytest.raises(SessionStopped, match="truncated tail"):
                await (await later.get("bad")).call(Read())
        assert (rows(path), index_row(path, "bad")) == (log_after, entry_after)

    async def test_head_is_not_taken_from_the_log(self, tmp_path: Path) -> None:
        """Appends after a lost tail are refused: the head, not the log, says where the next one goes."""
        path = tmp_path / "s.db"
        await populate(path)
        edit(path, "bad", "DELETE FROM events WHERE {session} AND version = 5")
        store = SQLiteStore(path)
        await store.open()
        try:
            with pytest.raises(VersionConflict) as info:
                await store.append("bad", 4, [EventData("rec.Added", 1, '{"n": 9}')])
            assert (info.value.expected, info.value.actual) == (4, 5)
        finally:
            await store.aclose()
        assert versions(path, "bad") == [1, 2, 3, 4]


# -- 5. two supervisors on one file -------------------------------------------------------------------


class TestTwoWriters:
    """More, on SQLite and PostgreSQL: test_recovery_stores.py."""

    async def test_recovery_races_the_other_writers_snapshots(self, tmp_path: Path) -> None:
        """One supervisor records and snapshots at every event while another recovers the same
        sessions, 200 times: recovery reads one view of the file, so no healthy session FAILs.

        Read apart, the index and then the snapshot, recovery saw the other writer's newer
        snapshot "beyond the last event" and quarantined healthy sessions (issue 17, 2 in 10).
        """
        path = tmp_path / "s.db"
        hot = ledger_class(1)  # a snapshot with every event
        ids = ["s0", "s1"]
        async with (
            SessionSupervisor(store=SQLiteStore(path), session_types=[hot]) as a,
            SessionSupervisor(store=SQLiteStore(path), session_types=[hot], restarts=UNLIMITED) as b,
        ):
            for sid in ids:
                await (await a.start(hot, sid)).call(Put(added(1)))
            seen = dict.fromkeys(ids, 1)

            async def recover(sid: str) -> None:
                copy = await b.get(sid)
                with pytest.raises(SessionCrashed):
                    await copy.call(Crash())  # its next message waits for a new recovery
                version, state = cast("tuple[int, Tally]", await copy.call(Read(), timeout=60))
                assert version >= seen[sid]
                assert state == fold(added(*range(1, version + 1)))
                seen[sid] = version

            for n in range(2, 202):  # each round: an append and a snapshot in a, a recovery in b
                async with anyio.create_task_group() as tg:
                    for sid in ids:
                        tg.start_soon(a.ref(sid).call, Put(added(n)))
                        tg.start_soon(recover, sid)
            for sid in ids:
                await recover(sid)
            assert seen == dict.fromkeys(ids, 201)
            assert (await b.stats()).quarantined == 0
            assert list(await a.store.list(status=Status.FAILED)) == []


# -- 6. store failures --------------------------------------------------------------------------------


class TestStoreFailures:
    async def test_failed_append_leaves_state_and_session_alone(self, tmp_path: Path) -> None:
        """An append that fails: StoreError to the caller, state unchanged, the session runs on."""
        path = tmp_path / "s.db"
        store = ProxyStore(SQLiteStore(path))
        async with SessionSupervisor(store=store, restarts=NO_BACKOFF) as sessions:
            ref = await sessions.start(Ledger, "s")
            assert await ref.call(Put(added(1, 2))) == (2, fold(added(1, 2)))
            before = rows(path, "s")
            store.fail_append = True
            with pytest.raises(StoreError, match=r"'s'.*injected append failure") as info:
                await ref.call(Put(added(10, 20, 30)))
            assert isinstance(info.value.__cause__, OSError)
            assert await ref.call(Read()) == (2, fold(added(1, 2)))
            assert rows(path, "s") == before
            store.fail_append = False
            assert await ref.call(Put(added(3))) == (3, fold(added(1, 2, 3)))
            view = await sessions.inspect("s")
            assert (view.status, view.restarts) == (Status.RUNNING, 0)
        assert versions(path, "s") == [1, 2, 3]

    async def test_deleted_database_acknowledges_nothing_more(self, tmp_path: Path) -> None:
        """The file (and -wal, -shm) deleted under running sessions: every later call gets StoreError."""
        path = tmp_path / "s.db"
        async with SessionSupervisor(store=SQLiteStore(path), restarts=NO_BACKOFF) as sessions:
            refs = [await sessions.start(Ledger, f"s{n}") for n in range(3)]
            for ref in refs:
                assert await ref.call(Put(added(1))) == (1, fold(added(1)))
            for suffix in ("", "-wal", "-shm"):
                os.unlink(f"{path}{suffix}")
            for n in range(2, 12):
                for ref in refs:
                    with pytest.raises(StoreError, match=r"s\.db' was deleted"):
                        await ref.call(Put(added(n)))
            assert [await ref.call(Read()) for ref in refs] == [(1, fold(added(1)))] * 3

    async def test_failed_commit_in_sqlite_is_rolled_back(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """SQLite itself failing the commit: StoreError, nothing of the batch stored, next append fine."""
        path = tmp_path / "s.db"
        real_commit = _sqlite_writer.commit
        failures: list[Exception] = []

        def commit(conn: sqlite3.Connection) -> None:
            if failures:
                raise failures.pop()
            real_commit(conn)

        monkeypatch.setattr(_sqlite_writer, "commit", commit)
        async with SessionSupervisor(store=SQLiteStore(path), restarts=NO_BACKOFF) as sessions:
            ref = await sessions.start(Ledger, "s")
            await ref.call(Put(added(1)))
            failures.append(sqlite3.OperationalError("disk I/O error"))
            with pytest.raises(StoreError, match="disk I/O error") as info:
                await ref.call(Put(added(5, 6)))
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            assert await ref.call(Read()) == (1, fold(added(1)))
            assert versions(path, "s") == [1]
            assert await ref.call(Put(added(2))) == (2, fold(added(1, 2)))
            assert (await sessions.inspect("s")).restarts == 0

    async def test_failed_read_during_recovery_is_retried(self, tmp_path: Path) -> None:
        """A read failing while a session recovers is a crash: it restarts and the caller is answered."""
        path = tmp_path / "s.db"
        async with SessionSupervisor(store=SQLiteStore(path)) as first:
            await (await first.start(Ledger, "s")).call(Put(added(4, 5)))
        store = ProxyStore(SQLiteStore(path))
        async with SessionSupervisor(store=store, session_types=[Ledger], restarts=NO_BACKOFF) as again:
            ref = await again.get("s")
            store.fail_read = True
            assert await ref.call(Read(), timeout=30) == (2, fold(added(4, 5)))
            assert (await again.inspect("s")).restarts == 1

    async def test_failed_snapshot_costs_only_a_longer_replay(self, tmp_path: Path) -> None:
        """Snapshots failing to save are counted; the session runs on and recovers from its log."""
        path = tmp_path / "s.db"
        store = ProxyStore(SQLiteStore(path))
        store.fail_snapshot = True
        evs = added(*range(1, 25))
        async with SessionSupervisor(store=store, restarts=NO_BACKOFF) as sessions:
            ref = await sessions.start(Ledger, "s")
            for ev in evs:
                await ref.call(Put((ev,)))
            with pytest.raises(SessionCrashed):
                await ref.call(Crash())
            assert await ref.call(Read()) == (24, fold(evs))
            assert (await sessions.stats()).snapshot_failures >= 2
        assert await _load_snapshot_or_none(path, "s") is None


async def _load_snapshot_or_none(path: Path, sid: str) -> Snapshot | None:
    store = SQLiteStore(path)
    await store.open()
    try:
        return await store.load_snapshot(sid)
    finally:
        await store.aclose()


# -- 7. a registry of one's own -----------------------------------------------------------------------


async def test_own_registry_records_status_changes(tmp_path: Path) -> None:
    """A supervisor with an isolated EventRegistry can complete a session, and recover it after."""
    reg = EventRegistry()
    for cls in (Added, Named):
        reg.register(cls, name=default_registry.lookup(cls).name)
    path = tmp_path / "s.db"
    async with SessionSupervisor(store=SQLiteStore(path), events=reg) as sessions:
        ref = await sessions.start(Ledger, "s")
        await ref.call(Put(added(1)))
        assert await ref.call(Finish()) == "finished"
    async with SessionSupervisor(store=SQLiteStore(path), events=reg, session_types=[Ledger]) as again:
        ref = await again.get("s")
        assert ref.status is Status.COMPLETED
