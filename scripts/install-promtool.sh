#!/usr/bin/env bash
# Installs promtool, which tests/test_alerting.py uses to check the Prometheus alerting rules of
# docs/guides/operations.md and to unit-test that each fires. Debian ships it in the prometheus package; no server is started
# (no systemd here). Safe to run again: it does nothing when promtool is present.
set -euo pipefail

if command -v promtool >/dev/null; then
  echo "promtool is already installed."
else
  SUDO=""
  if [[ "$(id -u)" -ne 0 ]]; then
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends prometheus
fi

promtool --version | head -n 1
