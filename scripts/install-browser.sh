#!/usr/bin/env bash
# Installs the headless browser that tests/test_browser.py drives: Debian's Chromium and its
# matching chromedriver. Nothing is downloaded outside the distribution's package manager, so
# the versions always match each other. Safe to run again: it does nothing when both are present.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

if [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]]; then
  echo "Chromium and chromedriver are already installed."
else
  # CI runs as root; a developer's machine usually needs sudo.
  SUDO=""
  if [[ "$(id -u)" -ne 0 ]]; then
    SUDO="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  # Without recommends Chromium skips a desktop's worth of services it does not need headless;
  # fonts-liberation is the one recommend that matters: without a font, screenshots show no text.
  $SUDO apt-get install -y --no-install-recommends chromium chromium-driver fonts-liberation
fi

"$CHROMIUM" --version
"$CHROMEDRIVER" --version
