"""Property: whatever the commands and wherever crashes strike, the state is the fold of the log.

Crashes are injected in handlers (before and after recording), in casts with no caller, in the store
(a failing append, a failing read during recovery) and by restarting the whole process. After every
step the state the session reports must equal a plain fold of what the model says was stored, and
the stored log must hold every acknowledged event, in order.
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import MemoryStore, SessionCrashed, StoreError
from supervisors import SessionSupervisor
from tests.apps.counter import Add, AddMany, AddThenBoom, Boom, Counter, Get
from tests.helpers import ProxyStore, no_backoff

pytestmark = pytest.mark.anyio


@attrs.frozen
class StoreFails:
    """The next append fails."""


@attrs.frozen
class RecoveryFails:
    """The next recovery's read fails (the session is crashed to force one)."""


@attrs.frozen
class ProcessRestart:
    """Leave the supervisor and open a new one on the same store."""


@attrs.frozen
class CastBoom:
    """A crash with no caller."""


commands = st.lists(
    st.one_of(
        st.builds(Add, st.integers(-5, 20)),
        st.builds(AddMany, st.lists(st.integers(0, 9), max_size=4).map(tuple)),
        st.builds(AddThenBoom, st.integers(1, 9)),
        st.just(Boom()),
        st.just(CastBoom()),
        st.just(StoreFails()),
        st.just(RecoveryFails()),
        st.just(ProcessRestart()),
    ),
    max_size=25,
)

POLICY = no_backoff(max_restarts=1000, within=1.0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=commands)
async def test_state_is_the_fold_of_the_log(script: list[object]) -> None:
    """Any command sequence with crashes anywhere ends where a fold of the stored events does."""
    store = ProxyStore(MemoryStore())
    model = 0
    acknowledged: list[int] = []
    sessions = SessionSupervisor(store=store, restarts=POLICY, session_types=[Counter])
    await sessions.__aenter__()
    try:
        ref = await sessions.start(Counter, "p")
        for command in script:
            match command:
                case Add(n=n):
                    model += n
                    assert await ref.call(command) == model
                    acknowledged.append(n)
                case AddMany(ns=ns):
                    model += sum(ns)
                    assert await ref.call(command) == model
                    acknowledged.extend(ns)
                case AddThenBoom(n=n):
                    with pytest.raises(SessionCrashed):
                        await ref.call(command)
                    model += n  # stored before the crash: in the log, though not acknowledged
                case Boom():
                    with pytest.raises(SessionCrashed):
                        await ref.call(command)
                case CastBoom():
                    await ref.cast(Boom())
                case StoreFails():
                    store.fail_append = True
                    with pytest.raises(StoreError, match="injected"):
                        await ref.call(Add(1000))
                    store.fail_append = False
                case RecoveryFails():
                    store.fail_read = True
                    with pytest.raises(SessionCrashed):
                        await ref.call(Boom())
                case ProcessRestart():
                    await sessions.__aexit__(None, None, None)
                    sessions = SessionSupervisor(store=store, restarts=POLICY, session_types=[Counter])
                    await sessions.__aenter__()
                    ref = await sessions.get("p")
            assert await ref.call(Get()) == model
        stored = [int(e.data[5:-1]) for e in await store.read("p") if e.type == "test.Added"]
        assert sum(stored) == model
        it = iter(stored)
        assert all(any(n == s for s in it) for n in acknowledged), "acknowledged events lost"
    finally:
        await sessions.__aexit__(None, None, None)
