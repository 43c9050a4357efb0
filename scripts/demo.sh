#!/usr/bin/env bash
# Installs what is missing, creates a demo kit (once) in $DEMO_HOME and runs the operator
# in the foreground. Ctrl-C stops it. Ports and credentials are in $DEMO_HOME/demo.json.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
DEMO_HOME=${DEMO_HOME:-demo-home}
if [ ! -f "$DEMO_HOME/config.toml" ]; then
  .venv/bin/mssante-operator init "$DEMO_HOME"
fi
exec .venv/bin/mssante-operator serve --home "$DEMO_HOME"
