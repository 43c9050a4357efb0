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
# Where the patients' web space answers, and how the demo's active patient logs in.
.venv/bin/python - "$DEMO_HOME" <<'PY'
import json, pathlib, sys
home = pathlib.Path(sys.argv[1])
kit = json.loads((home / "demo.json").read_text(encoding="utf-8"))
web = kit["listeners"]["web"]
patient = next(p for p in kit["patients"] if p["state"] == "active")
print(f"Patient space: https://{web['host']}:{web['port']}/connexion  INS {patient['ins']}, password {patient['password']}")
print(f"  one-time code: .venv/bin/mes-bridge notifications --ins {patient['ins']} --home {home}")
print(f"  (the kit's CA is {home / kit['trust_ca']}; import it in the browser, or accept the warning)")
PY
exec .venv/bin/mssante-operator serve --home "$DEMO_HOME"
