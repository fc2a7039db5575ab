#!/usr/bin/env bash
# Take the README's screenshots of the web view (docs/screenshots/*.png): the browser test against
# real Synapse and maubot standalone, with its pictures copied there. Needs Debian's chromium and
# chromium-driver (apt install chromium chromium-driver).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
bootstrap_sa13
bootstrap_synapse
ROOMSTATE_SCREENSHOTS="$ROOT/docs/screenshots" ROOMSTATE_E2E_REQUIRED=1 ROOMSTATE_E2E_DATABASE= \
  SYNAPSE_PYTHON="$VENVS/synapse/bin/python" \
  "$VENVS/sa13/bin/python" -m pytest -p no:cacheprovider -q -m e2e tests/e2e/test_web.py "$@"
ls -l docs/screenshots
