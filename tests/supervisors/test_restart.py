"""RestartPolicy and Backoff: pure functions of time, tested without a loop."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisors import Backoff, RestartPolicy


class TestBackoff:
    @pytest.mark.parametrize(
        ("attempt", "expected"), [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (30, 1.0)]
    )
    def test_exponential_capped(self, attempt: int, expected: float) -> None:
        b = Backoff(initial=0.1, maximum=1.0, multiplier=2.0, jitter=0)
        assert b.delay(attempt) == pytest.approx(expected)

    def test_zero_initial_restarts_at_once(self) -> None:
        assert Backoff(initial=0).delay(10) == 0

    @given(st.integers(0, 50), st.floats(0, 1))
    def test_jitter_stays_within_bounds(self, attempt: int, jitter: float) -> None:
        b = Backoff(initial=0.01, maximum=5.0, multiplier=2.0, jitter=jitter)
        base = min(5.0, 0.01 * 2.0**attempt)
        d = b.delay(attempt, random.Random(attempt))
        assert base <= d <= min(5.0, base * (1 + jitter)) + 1e-12

    def test_rejects_negative(self) -> None:
        with pytest.raises(ValueError, match="initial"):
            Backoff(initial=-1)


class TestRestartPolicy:
    def test_budget_within_window(self) -> None:
        """max_restarts restarts fit in the window; the next crash quarantines."""
        p = RestartPolicy(max_restarts=3, within=10.0, backoff=Backoff(initial=0))
        window = p.window()
        assert [p.restart_delay(window, t) for t in (0.0, 1.0, 2.0, 3.0)] == [0, 0, 0, None]

    def test_window_slides(self) -> None:
        """Crashes older than `within` no longer count."""
        p = RestartPolicy(max_restarts=2, within=10.0, backoff=Backoff(initial=0))
        window = p.window()
        assert [p.restart_delay(window, t) for t in (0.0, 5.0, 10.5)] == [0, 0, 0]
        assert window.times == (5.0, 10.5)

    def test_window_edge_counts_as_trees_do(self) -> None:
        """A crash exactly `within` after an earlier one counts with it (OTP's boundary, as in trees)."""
        p = RestartPolicy(max_restarts=1, within=10.0, backoff=Backoff(initial=0))
        window = p.window()
        assert [p.restart_delay(window, t) for t in (0.0, 10.0)] == [0, None]
        window = p.window()
        assert [p.restart_delay(window, t) for t in (0.0, 10.000001)] == [0, 0]

    @pytest.mark.parametrize("within", [0, 0.0, -1.0, math.nan])
    def test_within_must_be_positive(self, within: float) -> None:
        """within=0 used to mean unlimited restarts; it is refused now, as trees refuse it."""
        with pytest.raises(ValueError, match="within must be a positive number of seconds"):
            RestartPolicy(within=within)

    def test_backoff_grows_with_restarts_in_window(self) -> None:
        backoff = Backoff(initial=1, maximum=100, multiplier=3, jitter=0)
        p = RestartPolicy(max_restarts=5, within=60.0, backoff=backoff)
        window = p.window()
        assert [p.restart_delay(window, t) for t in (0.0, 1.0, 2.0)] == [1, 3, 9]

    @given(st.lists(st.floats(0, 1000), max_size=30).map(sorted))
    def test_never_more_than_budget_in_any_window(self, times: list[float]) -> None:
        """A crash restarts only while at most max_restarts crashes fall in [t - within, t]."""
        p = RestartPolicy(max_restarts=3, within=10.0, backoff=Backoff(initial=0))
        window = p.window()
        for i, now in enumerate(times):
            in_window = sum(1 for t in times[: i + 1] if t >= now - 10.0)
            verdict = p.restart_delay(window, now)
            assert (verdict is None) == (in_window > 3)
            if verdict is None:
                break

    def test_zero_budget_quarantines_at_first_crash(self) -> None:
        p = RestartPolicy(max_restarts=0)
        assert p.restart_delay(p.window(), 0) is None
