"""Per-session restart policy: a budget of restarts in a sliding window, with exponential backoff."""

from __future__ import annotations

import random

import attrs

from runtime import RestartWindow

__all__ = ["Backoff", "RestartPolicy"]


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be a positive number of seconds, got {value}")


@attrs.frozen(kw_only=True)
class Backoff:
    """Exponential backoff with jitter: ``min(maximum, initial * multiplier**n) * (1 + jitter * U[0,1))``.

    ``n`` counts the restarts already in the window, so the first restart waits about ``initial``.
    ``initial=0`` restarts at once, every time. The result never exceeds ``maximum``.

    .. versionadded:: 0.1
    """

    initial: float = attrs.field(default=0.01, validator=_non_negative)
    maximum: float = attrs.field(default=5.0, validator=_non_negative)
    multiplier: float = attrs.field(default=2.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.2, validator=_non_negative)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay before restart number ``attempt + 1`` within the window."""
        if self.initial == 0:
            return 0.0
        base = min(self.maximum, self.initial * self.multiplier**attempt)
        if self.jitter:
            base *= 1 + self.jitter * (rng or random).random()
        return min(self.maximum, base)


@attrs.frozen(kw_only=True)
class RestartPolicy:
    """How often a crashed session may restart before it is quarantined as ``FAILED``.

    More than ``max_restarts`` crashes within a sliding ``within`` seconds spends the session's
    budget: it is quarantined, and only it (its siblings never notice). Each restart waits
    ``backoff``. The window is the one supervisor trees use (:class:`runtime.RestartWindow`: a
    crash exactly ``within`` seconds after an earlier one still counts with it), and ``within``
    must be positive. Implements :class:`runtime.abc.RestartStrategy`.

    .. versionadded:: 0.1
    """

    max_restarts: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    within: float = attrs.field(default=60.0, validator=_positive)
    backoff: Backoff = attrs.field(factory=Backoff)
    rng: random.Random | None = attrs.field(default=None, eq=False, repr=False)

    def window(self) -> RestartWindow:
        """A new, empty window for one session's crashes."""
        return RestartWindow(self.max_restarts, self.within)

    def restart_delay(self, window: RestartWindow, now: float) -> float | None:
        """Record a crash at ``now``: the backoff before the restart, or ``None`` to quarantine."""
        if not window.record(now):
            return None
        # ``record`` dropped the times before the window: the rest are in it (O(1), not count()).
        return self.backoff.delay(len(window) - 1, self.rng)
