#!/usr/bin/env bash
# Installs what the operator and its tests need on a fresh Debian machine: system packages
# (only those missing; apt-get update first), then a virtualenv in .venv with the project.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libmagic1 postgresql slapd ldap-utils ca-certificates isync libsasl2-modules chromium fonts-dejavu-core
          postfix opendkim opendkim-tools dovecot-imapd)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # Postfix is a test peer (tests/support/postfix_peer.py runs private instances): no system mail service.
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Where a package started the system-wide daemons anyway (no policy-rc.d), stop them: the tests run
# their own instances on free ports (Dovecot: benchmarks/imap_vs_dovecot.py runs a private one), and
# nothing of ours listens on port 25 or 143.
for service in postfix opendkim dovecot; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
    ${SUDO:-} systemctl disable --now "$service" >/dev/null 2>&1 || true
  elif [ -x "/etc/init.d/$service" ] && "/etc/init.d/$service" status >/dev/null 2>&1; then
    ${SUDO:-} "/etc/init.d/$service" stop >/dev/null 2>&1 || true
  fi
done

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Python dependencies come from the lock (exact versions, hash-checked; scripts/lock.sh remakes it),
# then the project itself without resolving anything else.
stamp=.venv/.installed-$(cat pyproject.toml requirements-dev.lock | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python dependencies into .venv from requirements-dev.lock"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q --require-hashes -r requirements-dev.lock
  .venv/bin/python -m pip install -q --no-deps -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi
