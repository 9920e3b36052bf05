"""The reaper's timer wheel: exactly the due items, whatever the deadlines and the granularity."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisors._wheel import DeadlineWheel

deadlines = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(
    st.lists(deadlines, max_size=200),
    st.lists(deadlines, min_size=1, max_size=10).map(sorted),
    st.sampled_from([0.01, 0.25, 1.0, 7.5, 1000.0]),
)
def test_pop_due_takes_exactly_what_is_due(
    pushed: list[float], nows: list[float], granularity: float
) -> None:
    """Over passes at increasing times, each item comes out once, in the first pass it is due."""
    wheel: DeadlineWheel[int] = DeadlineWheel(granularity)
    for i, d in enumerate(pushed):
        wheel.push(d, i)
    left = dict(enumerate(pushed))
    for now in nows:
        expected = {i for i, d in left.items() if d <= now}
        assert set(wheel.pop_due(now)) == expected
        for i in expected:
            del left[i]
        assert len(wheel) == len(left)
        assert wheel.next_deadline() == (min(left.values()) if left else math.inf)


def test_rejects_bad_granularity() -> None:
    with pytest.raises(ValueError, match="granularity"):
        DeadlineWheel(0)
