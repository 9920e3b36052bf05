"""Property (issue 14): at any ``pipeline_depth`` from 1 to 16, whatever mix of concurrent calls, casts,
crashes, store failures, passivation and process restarts, no acknowledged event is ever lost and the
session's state is always the fold of its stored log.

Each step is a burst: its messages are sent without waiting for one another, so that several are in
the pipeline at once, while the store takes a varying number of scheduling turns per append (the
commits a pipeline overlaps) and fails the appends the script says. On MemoryStore, and on SQLite
files (fewer examples).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import (
    AppendExtras,
    EventData,
    MemoryStore,
    SessionCrashed,
    SessionError,
    SessionRef,
    SQLiteStore,
    Status,
)
from runtime.abc import EventStore
from runtime.testing import ManualClock
from supervisors import ReaperPolicy, SessionSupervisor
from tests.apps.tagged import Crash, Read, Tag, Tags, tagger, tags_of
from tests.helpers import no_backoff

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # many examples, each several supervisors

POLICY = no_backoff(max_restarts=10_000, within=1.0)


class SlowFlakyStore:
    """A store whose appends take some scheduling turns each, and fail when told to.

    ``open`` makes the inner store anew with ``factory`` (a new process on the same data).
    """

    def __init__(self, factory: Callable[[], EventStore], turns: Sequence[int]) -> None:
        self.factory = factory
        self.inner = factory()
        self.opened = False
        self.turns = list(turns) or [0]
        self.calls = 0
        self.fail_next = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def open(self) -> None:
        if self.opened:
            self.inner = self.factory()
        self.opened = True
        await self.inner.open()

    async def append(
        self,
        session_id: str,
        expected_version: int,
        events: Sequence[EventData],
        *,
        status: Status | None = None,
        extras: AppendExtras | None = None,
    ) -> int:
        self.calls += 1
        for _ in range(self.turns[self.calls % len(self.turns)]):
            await anyio.lowlevel.checkpoint()
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("injected append failure")
        return await self.inner.append(session_id, expected_version, events, status=status, extras=extras)


@attrs.frozen
class CallTag:
    tags: tuple[int, ...]  # one tag: Tag; more: Tags (one atomic record)


@attrs.frozen
class CastTag:
    tag: int


@attrs.frozen
class CallCrash:
    record_first: bool


@attrs.frozen
class CastCrash:
    pass


@attrs.frozen
class StoreFails:
    pass


@attrs.frozen
class Passivate:
    pass


@attrs.frozen
class ProcessRestart:
    pass


in_burst = st.one_of(
    st.builds(CallTag, st.integers(1, 3).map(lambda n: (0,) * n)),
    st.builds(CastTag, st.just(0)),
    st.builds(CallCrash, st.booleans()),
    st.just(CastCrash()),
    st.just(StoreFails()),
)
steps = st.lists(
    st.one_of(
        st.lists(in_burst, min_size=1, max_size=12),
        st.just(Passivate()),
        st.just(ProcessRestart()),
    ),
    max_size=8,
)


depths = st.integers(1, 16)
turn_lists = st.lists(st.integers(0, 4), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth=depths, script=steps, turns=turn_lists)
async def test_acknowledged_events_are_kept_and_the_state_is_the_fold(
    depth: int, script: list[object], turns: list[int]
) -> None:
    """Bursts of concurrent messages with crashes and store failures anywhere, at any depth."""
    memory = MemoryStore()  # one store across process restarts: what it holds is the log
    await run_script(SlowFlakyStore(lambda: memory, turns), depth, script)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth=depths, script=steps, turns=turn_lists)
async def test_the_same_on_sqlite(depth: int, script: list[object], turns: list[int]) -> None:
    """The same on SQLite files (fewer examples: each one is a file and a writer thread)."""
    directory = Path(tempfile.mkdtemp(prefix="sv-pipeline-"))
    try:
        await run_script(SlowFlakyStore(lambda: SQLiteStore(directory / "s.db"), turns), depth, script)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def run_script(store: SlowFlakyStore, depth: int, script: list[object]) -> None:
    clock = ManualClock()
    cls = tagger(depth, snapshot_every=3)
    next_tag = iter(range(1, 1_000_000))
    acknowledged: set[int] = set()

    def supervisor() -> SessionSupervisor:
        return SessionSupervisor(
            store=store,  # type: ignore[arg-type]
            restarts=POLICY,
            session_types=[cls],
            clock=clock,
            reaper=ReaperPolicy(idle_timeout=10),
        )

    sessions = supervisor()
    await sessions.__aenter__()
    try:
        ref = await sessions.start(cls, "p")
        for step in script:
            if isinstance(step, Passivate):
                await clock.advance(11)
                await anyio.wait_all_tasks_blocked()
            elif isinstance(step, ProcessRestart):
                await sessions.__aexit__(None, None, None)
                sessions = supervisor()
                await sessions.__aenter__()
                ref = await sessions.get("p")
            else:
                assert isinstance(step, list)
                async with anyio.create_task_group() as tg:
                    for action in step:
                        match action:
                            case CallTag(tags=tags):
                                fresh = tuple(next(next_tag) for _ in tags)
                                message = Tag(fresh[0]) if len(fresh) == 1 else Tags(fresh)
                                tg.start_soon(call_and_note, ref, message, fresh, acknowledged)
                            case CastTag():
                                await ref.cast(Tag(next(next_tag)))
                            case CallCrash(record_first=record):
                                crash = Crash((next(next_tag),) if record else ())
                                tg.start_soon(call_and_note, ref, crash, (), acknowledged)
                            case CastCrash():
                                await ref.cast(Crash())
                            case StoreFails():
                                store.fail_next += 1
                        await anyio.lowlevel.checkpoint()
            # Whatever happened, the session's state is the fold of what the store holds.
            version, state = await read(ref)
            stored = await store.inner.read("p")
            assert version == len(stored)
            assert state == tags_of(stored)
            missing = acknowledged - set(state)
            assert not missing, f"acknowledged tags lost: {sorted(missing)}"
    finally:
        await sessions.__aexit__(None, None, None)


async def call_and_note(
    ref: SessionRef, message: object, tags: tuple[int, ...], acknowledged: set[int]
) -> None:
    """Call; on a reply (a version), the message's tags are acknowledged."""
    try:
        reply = await ref.call(message, timeout=None)
    except SessionCrashed:
        return
    except SessionError:  # the store's error at depth 1
        return
    assert isinstance(reply, int)
    acknowledged.update(tags)


async def read(ref: SessionRef) -> tuple[int, tuple[int, ...]]:
    """``Read()``, retried while a crash queued by the burst (a cast) is still being restarted from."""
    for _ in range(20):
        try:
            reply = await ref.call(Read(), timeout=None)
        except SessionCrashed:
            continue
        assert isinstance(reply, tuple)
        return reply
    raise AssertionError("the session never answered Read()")
