"""sessionvisor's supervisors: supervisor trees, the session supervisor, restart policies, the reaper.

Built on :mod:`runtime`'s public API only.
"""

from __future__ import annotations

from ._exceptions import ChildExists as ChildExists
from ._exceptions import ChildNotFound as ChildNotFound
from ._exceptions import ChildRunning as ChildRunning
from ._exceptions import ChildStartFailed as ChildStartFailed
from ._exceptions import RestartIntensityExceeded as RestartIntensityExceeded
from ._exceptions import SupervisorError as SupervisorError
from ._exceptions import SupervisorNotRunning as SupervisorNotRunning
from ._reaper import CleanupStats as CleanupStats
from ._reaper import ReaperPolicy as ReaperPolicy
from ._reaper import RemovalReason as RemovalReason
from ._restart import Backoff as Backoff
from ._restart import RestartPolicy as RestartPolicy
from ._sessions import SessionSupervisor as SessionSupervisor
from ._spec import ChildCounts as ChildCounts
from ._spec import ChildInfo as ChildInfo
from ._spec import ChildSpec as ChildSpec
from ._spec import Restart as Restart
from ._spec import Strategy as Strategy
from ._supervisor import Supervisor as Supervisor
from ._webhook import WebhookNotifier as WebhookNotifier
from ._webhook import WebhookStatistics as WebhookStatistics

__all__: list[str] = [
    "Backoff",
    "CleanupStats",
    "ReaperPolicy",
    "RemovalReason",
    "ChildCounts",
    "ChildExists",
    "ChildInfo",
    "ChildNotFound",
    "ChildRunning",
    "ChildSpec",
    "ChildStartFailed",
    "Restart",
    "RestartIntensityExceeded",
    "RestartPolicy",
    "SessionSupervisor",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "SupervisorNotRunning",
    "WebhookNotifier",
    "WebhookStatistics",
]
