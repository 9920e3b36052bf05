"""sessionvisor's supervisors: supervisor trees, the session supervisor, restart policies, the reaper.

Built on :mod:`runtime`'s public API only.
"""

from __future__ import annotations

from ._admin import AdminServer as AdminServer
from ._admin import serve_admin as serve_admin
from ._config import Config as Config
from ._config import ConfigError as ConfigError
from ._config import MetricsConfig as MetricsConfig
from ._config import StoreConfig as StoreConfig
from ._config import load_config as load_config
from ._config import parse_config as parse_config
from ._exceptions import ChildExists as ChildExists
from ._exceptions import ChildNotFound as ChildNotFound
from ._exceptions import ChildRunning as ChildRunning
from ._exceptions import ChildStartFailed as ChildStartFailed
from ._exceptions import RestartIntensityExceeded as RestartIntensityExceeded
from ._exceptions import SupervisorError as SupervisorError
from ._exceptions import SupervisorNotRunning as SupervisorNotRunning
from ._node import Node as Node
from ._reaper import CleanupStats as CleanupStats
from ._reaper import ReaperPolicy as ReaperPolicy
from ._reaper import RemovalReason as RemovalReason
from ._reaper import export_file_name as export_file_name
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
    "AdminServer",
    "Backoff",
    "CleanupStats",
    "MetricsConfig",
    "Node",
    "ReaperPolicy",
    "RemovalReason",
    "ChildCounts",
    "ChildExists",
    "ChildInfo",
    "ChildNotFound",
    "ChildRunning",
    "ChildSpec",
    "ChildStartFailed",
    "Config",
    "ConfigError",
    "Restart",
    "RestartIntensityExceeded",
    "RestartPolicy",
    "SessionSupervisor",
    "StoreConfig",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "SupervisorNotRunning",
    "WebhookNotifier",
    "WebhookStatistics",
    "export_file_name",
    "load_config",
    "parse_config",
    "serve_admin",
]
