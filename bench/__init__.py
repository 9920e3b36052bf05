"""sessionvisor's benchmarks.

``python -m bench`` runs the comparison against the peers (issue 8; see :mod:`bench.__main__`);
``bench/bench_session.py`` and the other ``bench_*.py`` scripts are the per-feature benchmarks.
Nothing here is imported by the library.
"""
