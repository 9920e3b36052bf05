"""sessionvisor's runtime: session actors, their mailboxes and references, events, stores, metrics.

This is the lower layer; it never imports :mod:`supervisors`.
"""

from __future__ import annotations

import logging as _logging

from ._counters import HostStats as HostStats
from ._events import EventRegistry as EventRegistry
from ._events import StatusChanged as StatusChanged
from ._events import default_registry as default_registry
from ._events import event as event
from ._events import upcaster as upcaster
from ._exceptions import CallCycle as CallCycle
from ._exceptions import CallTimeout as CallTimeout
from ._exceptions import CorruptEventLog as CorruptEventLog
from ._exceptions import HandlerMisuse as HandlerMisuse
from ._exceptions import InvalidReminder as InvalidReminder
from ._exceptions import InvalidSessionId as InvalidSessionId
from ._exceptions import InvalidTimeout as InvalidTimeout
from ._exceptions import InvalidTransition as InvalidTransition
from ._exceptions import MailboxFull as MailboxFull
from ._exceptions import OperationTimeout as OperationTimeout
from ._exceptions import OwnedElsewhere as OwnedElsewhere
from ._exceptions import OwnershipLost as OwnershipLost
from ._exceptions import RateLimited as RateLimited
from ._exceptions import RecoveryFailed as RecoveryFailed
from ._exceptions import SessionCrashed as SessionCrashed
from ._exceptions import SessionError as SessionError
from ._exceptions import SessionExists as SessionExists
from ._exceptions import SessionNotEnded as SessionNotEnded
from ._exceptions import SessionNotFound as SessionNotFound
from ._exceptions import SessionPaused as SessionPaused
from ._exceptions import SessionStopped as SessionStopped
from ._exceptions import ShuttingDown as ShuttingDown
from ._exceptions import SnapshotRefused as SnapshotRefused
from ._exceptions import StoreError as StoreError
from ._exceptions import TooManySessions as TooManySessions
from ._exceptions import TypeNameTaken as TypeNameTaken
from ._exceptions import UnencodableValue as UnencodableValue
from ._exceptions import UnknownEventType as UnknownEventType
from ._exceptions import UnknownSessionType as UnknownSessionType
from ._exceptions import UnstorableReply as UnstorableReply
from ._exceptions import VersionConflict as VersionConflict
from ._graph import state_graph as state_graph
from ._history import HistoryConfig as HistoryConfig
from ._history import TransitionRecord as TransitionRecord
from ._ids import check_session_id as check_session_id
from ._inspect import Health as Health
from ._inspect import HealthThresholds as HealthThresholds
from ._inspect import Inspection as Inspection
from ._lifecycle import LifecycleEvent as LifecycleEvent
from ._lifecycle import LifecycleSubscription as LifecycleSubscription
from ._metrics import SessionMetrics as SessionMetrics
from ._metrics import TreeMetrics as TreeMetrics
from ._metrics import TypeMetrics as TypeMetrics
from ._metrics_server import MetricsServer as MetricsServer
from ._metrics_server import serve_metrics as serve_metrics
from ._metrics_text import MetricsExposition as MetricsExposition
from ._options import HostOptions as HostOptions
from ._ownership import Lease as Lease
from ._ownership import NodeInfo as NodeInfo
from ._ownership import Ownership as Ownership
from ._ownership import OwnershipStatistics as OwnershipStatistics
from ._ownership import Renewal as Renewal
from ._records import AppendExtras as AppendExtras
from ._records import EventData as EventData
from ._records import IdempotentReply as IdempotentReply
from ._records import Outcomes as Outcomes
from ._records import Reminder as Reminder
from ._records import SessionRecord as SessionRecord
from ._records import Snapshot as Snapshot
from ._records import StoredEvent as StoredEvent
from ._records import StoredSession as StoredSession
from ._records import StoreStats as StoreStats
from ._ref import SessionRef as SessionRef
from ._replay import Replayed as Replayed
from ._replay import replay as replay
from ._session import NoReply as NoReply
from ._session import Reply as Reply
from ._session import Session as Session
from ._status import Status as Status
from ._stores.memory import MemoryStore as MemoryStore
from ._stores.postgres import PostgresStore as PostgresStore
from ._stores.postgres import PostgresStoreStatistics as PostgresStoreStatistics
from ._stores.sqlite import SQLiteStore as SQLiteStore
from ._stores.sqlite import SQLiteStoreStatistics as SQLiteStoreStatistics
from ._timers import TimerHandle as TimerHandle
from ._window import RestartWindow as RestartWindow

__all__ = [
    "AppendExtras",
    "CallCycle",
    "EventRegistry",
    "Health",
    "HealthThresholds",
    "HistoryConfig",
    "HostOptions",
    "HostStats",
    "IdempotentReply",
    "Inspection",
    "LifecycleEvent",
    "LifecycleSubscription",
    "NoReply",
    "Reminder",
    "Outcomes",
    "Replayed",
    "RestartWindow",
    "Reply",
    "Session",
    "SessionMetrics",
    "SessionRef",
    "StatusChanged",
    "TimerHandle",
    "TransitionRecord",
    "TreeMetrics",
    "TypeMetrics",
    "default_registry",
    "event",
    "replay",
    "serve_metrics",
    "MetricsExposition",
    "state_graph",
    "upcaster",
    "CallTimeout",
    "HandlerMisuse",
    "SessionNotEnded",
    "TypeNameTaken",
    "UnknownSessionType",
    "InvalidTimeout",
    "OperationTimeout",
    "CorruptEventLog",
    "EventData",
    "InvalidSessionId",
    "InvalidReminder",
    "InvalidTransition",
    "check_session_id",
    "MailboxFull",
    "MemoryStore",
    "MetricsServer",
    "Lease",
    "NodeInfo",
    "Ownership",
    "OwnershipStatistics",
    "Renewal",
    "OwnedElsewhere",
    "OwnershipLost",
    "PostgresStore",
    "PostgresStoreStatistics",
    "RateLimited",
    "RecoveryFailed",
    "SessionCrashed",
    "SessionError",
    "SessionExists",
    "SessionNotFound",
    "SessionPaused",
    "SessionRecord",
    "SQLiteStore",
    "SQLiteStoreStatistics",
    "SessionStopped",
    "ShuttingDown",
    "SnapshotRefused",
    "Snapshot",
    "Status",
    "StoreError",
    "StoreStats",
    "StoredEvent",
    "StoredSession",
    "TooManySessions",
    "UnencodableValue",
    "UnknownEventType",
    "UnstorableReply",
    "VersionConflict",
]

_logging.getLogger(__name__).addHandler(_logging.NullHandler())
