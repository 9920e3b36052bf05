"""sessionvisor's supervisors: supervisor trees, the session supervisor, restart policies, the reaper.

Built on :mod:`runtime`'s public API only.
"""

from __future__ import annotations

from ._restart import Backoff as Backoff
from ._restart import RestartPolicy as RestartPolicy
from ._sessions import SessionSupervisor as SessionSupervisor

__all__: list[str] = [
    "Backoff",
    "RestartPolicy",
    "SessionSupervisor",
]
