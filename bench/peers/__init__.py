"""One small script per contender of ``python -m bench``, each run as a subprocess that prints JSON.

The scripts for sessionvisor and the raw baselines run with the project's interpreter; those for the
peers (triotp, pykka, eventsourcing) run with the interpreter of the peer's own virtual environment
under ``bench/.venvs/<peer>``, created by :mod:`bench.peers.venvs` (or ``bench/peers/setup.sh``). So
this package, and :mod:`bench.peers._common` which they all share, import nothing but the standard
library at module level.
"""
