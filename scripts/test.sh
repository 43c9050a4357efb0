#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, lints, runs pytest
# (SQLite and a throwaway PostgreSQL cluster, real sockets and TLS on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
