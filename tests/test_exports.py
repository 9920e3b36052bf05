"""Each package's __all__ lists exactly its public names, and they all resolve."""

from __future__ import annotations

import types

import pytest

import runtime
import runtime.abc
import supervisors


@pytest.mark.parametrize("module", [runtime, runtime.abc, supervisors])
def test_all_matches_public_names(module: types.ModuleType) -> None:
    ours = {"runtime", "supervisors"}
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and str(getattr(value, "__module__", "")).split(".")[0] in ours
    }
    assert sorted(module.__all__) == sorted(public)


@pytest.mark.parametrize("module", [runtime, runtime.abc, supervisors])
def test_all_names_resolve(module: types.ModuleType) -> None:
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_design_names_are_public() -> None:
    """The names DESIGN.md promises are importable from where it says."""
    for name in (
        "Session",
        "SessionRef",
        "event",
        "upcaster",
        "MemoryStore",
        "Status",
        "NoReply",
        "SessionError",
        "SessionNotFound",
        "SessionExists",
        "SessionCrashed",
        "CallTimeout",
        "CallCycle",
        "MailboxFull",
        "SessionStopped",
        "SessionPaused",
        "TooManySessions",
        "RateLimited",
        "ShuttingDown",
        "VersionConflict",
        "CorruptEventLog",
        "RecoveryFailed",
        "UnknownEventType",
        "InvalidTransition",
        "Inspection",
        "Health",
    ):
        assert hasattr(runtime, name), name
    for name in (
        "SessionSupervisor",
        "RestartPolicy",
        "Backoff",
        "Supervisor",
        "ChildSpec",
        "Strategy",
        "Restart",
        "RestartIntensityExceeded",
    ):
        assert hasattr(supervisors, name), name
    assert hasattr(runtime.abc, "EventStore")


def test_internals_are_not_exported() -> None:
    """The host and the session cell are the runtime's machinery: supervisors builds on them from
    their modules, users go through SessionSupervisor and SessionRef."""
    for name in ("SessionHost", "SessionCell"):
        assert not hasattr(runtime, name), name
        assert name not in runtime.__all__


def test_runtime_never_imports_supervisors() -> None:
    """The layering rule: runtime is the lower layer."""
    import pathlib

    root = pathlib.Path(runtime.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "import supervisors" not in text, path
        assert "from supervisors" not in text, path
