"""The restart window (trees' intensity, sessions' budget), tested synchronously with plain numbers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime import RestartWindow as RestartIntensity


def _record_all(intensity: RestartIntensity, times: list[float]) -> list[bool]:
    return [intensity.record(t) for t in times]


class TestRecord:
    @pytest.mark.parametrize(
        ("max_restarts", "within", "times", "expected"),
        [
            pytest.param(3, 5.0, [0, 0, 0], [True, True, True], id="up-to-the-limit"),
            pytest.param(3, 5.0, [0, 0, 0, 0], [True, True, True, False], id="one-over"),
            pytest.param(0, 5.0, [0], [False], id="zero-allows-none"),
            pytest.param(1, 5.0, [0, 6, 12, 18], [True] * 4, id="spread-wider-than-window"),
            pytest.param(1, 5.0, [0, 3], [True, False], id="two-inside-window"),
            pytest.param(1, 5.0, [0, 5], [True, False], id="window-edge-is-inclusive"),
            pytest.param(1, 5.0, [0, 5.000001], [True, True], id="just-past-the-edge"),
            pytest.param(2, 10.0, [0, 4, 11, 15, 16], [True, True, True, True, False], id="sliding"),
            pytest.param(2, 10.0, [0, 1, 2, 30, 31], [True, True, False, True, True], id="recovers"),
        ],
    )
    def test_table(self, max_restarts: int, within: float, times: list[float], expected: list[bool]) -> None:
        """Each recorded restart is allowed while at most max_restarts fall in [now - within, now]."""
        assert _record_all(RestartIntensity(max_restarts, within), times) == expected

    def test_keeps_at_most_max_plus_one(self) -> None:
        """A long burst does not grow the window past max_restarts + 1 entries."""
        intensity = RestartIntensity(2, 100.0)
        _record_all(intensity, [float(t) for t in range(1000)])
        assert intensity.count(999.0) == 3

    def test_count_does_not_record(self) -> None:
        """count() reports the window without adding to it."""
        intensity = RestartIntensity(5, 10.0)
        _record_all(intensity, [0.0, 4.0, 8.0])
        assert intensity.count(12.0) == 2
        assert intensity.count(12.0) == 2
        assert intensity.count(30.0) == 0

    def test_reset(self) -> None:
        """reset() forgets every restart."""
        intensity = RestartIntensity(1, 5.0)
        _record_all(intensity, [0.0, 1.0])
        intensity.reset()
        assert intensity.record(2.0)


class TestValidation:
    @pytest.mark.parametrize(
        ("max_restarts", "within", "match"),
        [
            (-1, 5.0, "max_restarts"),
            (3, 0.0, "within"),
            (3, -1.0, "within"),
            (3, math.nan, "within"),
        ],
    )
    def test_rejects(self, max_restarts: int, within: float, match: str) -> None:
        """Negative limits and non-positive windows are refused with a message naming the argument."""
        with pytest.raises(ValueError, match=match):
            RestartIntensity(max_restarts, within)

    def test_properties(self) -> None:
        """The limits read back as given."""
        intensity = RestartIntensity(4, 2.5)
        assert (intensity.max_restarts, intensity.within) == (4, 2.5)


@st.composite
def _scenarios(draw: st.DrawFn) -> tuple[int, float, list[float]]:
    max_restarts = draw(st.integers(min_value=0, max_value=6))
    within = draw(st.sampled_from([0.5, 1.0, 2.5, 5.0, 60.0]))
    gaps = draw(st.lists(st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.5, 5.0, 7.0]), max_size=40))
    times = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    return max_restarts, within, times


@given(_scenarios())
def test_matches_the_naive_model(scenario: tuple[int, float, list[float]]) -> None:
    """record(now) agrees with counting every earlier restart in [now - within, now] by hand."""
    max_restarts, within, times = scenario
    intensity = RestartIntensity(max_restarts, within)
    for index, now in enumerate(times):
        in_window = sum(1 for t in times[: index + 1] if t >= now - within)
        assert intensity.record(now) is (in_window <= max_restarts)
        assert intensity.count(now) == min(in_window, max_restarts + 1)
