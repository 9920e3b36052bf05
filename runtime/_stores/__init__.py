"""Event stores: in memory (tests, ephemeral) and SQLite (the embedded default)."""
