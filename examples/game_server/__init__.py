"""A multiplayer word game over TCP: each game room is a session (``python -m examples.game_server``).

Modules: ``game`` (the room session, its events and rules), ``words`` (the dictionary), ``protocol``
(line-delimited JSON), ``server`` (the TCP server), ``bots`` (bot players), ``audit`` (acknowledged
moves against the store's logs), ``__main__`` (the program: server, bots, metrics, progress, summary).
"""

from __future__ import annotations

# The session class and its events, imported with the package: `sessionvisor --app examples.game_server`
# finds them here (the package's modules need not be named one by one).
from .game import Room as Room

__all__ = ["Room"]
