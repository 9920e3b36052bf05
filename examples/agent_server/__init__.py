"""AI-agent conversations as sessions (``python -m examples.agent_server``).

Modules: ``conversation`` (the session, its events), ``model`` (the deterministic stand-in for a
model, and its tools), ``receiver`` (a local webhook receiver), ``__main__`` (the program).
"""
