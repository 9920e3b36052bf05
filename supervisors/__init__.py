"""sessionvisor's supervisors: supervisor trees, the session supervisor, restart policies, the reaper.

Built on :mod:`runtime`'s public API only.
"""

from __future__ import annotations

__all__: list[str] = []
