#!/usr/bin/env bash
# Remakes the dependency locks from pyproject.toml: requirements.lock (what the services need, for a
# deployment) and requirements-dev.lock (the same versions plus the test tools; bootstrap installs it).
# Exact versions with their hashes. Without arguments, versions already locked are kept when they still
# satisfy pyproject.toml; `./scripts/lock.sh --upgrade` takes the newest allowed ones. Then run
# ./scripts/test.sh: it installs the new lock and runs the suite against it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/pip-compile ] || ./scripts/bootstrap.sh
common=(--quiet --strip-extras --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links "$@")
.venv/bin/pip-compile "${common[@]}" -o requirements.lock pyproject.toml
.venv/bin/pip-compile "${common[@]}" --extra dev -c requirements.lock -o requirements-dev.lock pyproject.toml
echo "lock: requirements.lock ($(grep -c '==' requirements.lock) packages), requirements-dev.lock ($(grep -c '==' requirements-dev.lock))"
