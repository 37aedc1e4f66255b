#!/usr/bin/env bash
# Regenerates the admin screenshots the documentation shows (docs/images/), from the browser test:
# it drives the real admin in headless Chromium and saves every step in artifacts/screenshots/;
# the steps below are copied under the names the pages use. Look at each before committing.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-browser.sh
rm -rf artifacts/screenshots
.venv/bin/python -m pytest -q tests/test_browser.py

# artifacts/screenshots/<step>.png -> docs/images/<name>.png
while read -r step name; do
  cp "artifacts/screenshots/$step.png" "docs/images/$name.png"
  echo "docs/images/$name.png (step $step)"
done <<'STEPS'
02-opportunities admin-opportunities
02b-opportunity admin-opportunity
20-opportunity-with-timeline admin-opportunity-timeline
22-contact admin-contact
06-reprocessed admin-deliveries
05-delivery-body admin-delivery
07b-overview-of-a-connection admin-overview
08-connections admin-connections
STEPS
