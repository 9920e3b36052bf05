"""sessionvisor's example programs: ``python -m examples.game_server``, ``... examples.agent_server``."""
