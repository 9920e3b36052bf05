"""AI-agent conversations as sessions (``python -m examples.agent_server``).

Modules: ``conversation`` (the session, its events), ``model`` (the deterministic stand-in for a
model, and its tools), ``receiver`` (a local webhook receiver), ``__main__`` (the program).
"""

from __future__ import annotations

# The session class and its events, imported with the package: `sessionvisor --app examples.agent_server`
# finds them here (the package's modules need not be named one by one).
from .conversation import Conversation as Conversation

__all__ = ["Conversation"]
