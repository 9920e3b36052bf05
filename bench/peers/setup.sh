#!/bin/sh
# Create (or re-create) the peers' virtual environments under bench/.venvs/<peer>, from PyPI, with the
# versions pinned in bench/peers/requirements-<peer>.txt. Usage: bench/peers/setup.sh [PEER ...]
# PYTHON picks the interpreter the venvs are made from (default: python3); use the project's, so that
# every contender runs on the same Python.
set -eu
cd "$(dirname "$0")/../.."
exec "${PYTHON:-python3}" -m bench.peers.venvs "$@"
