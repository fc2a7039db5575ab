#!/usr/bin/env bash
# Set up and start a local demo: Synapse on 127.0.0.1:8008 + maubot standalone running roomstate.
# Prints the homeserver URL and a user to log in with. Options: see `scripts/demo.sh --help`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
for arg in "$@"; do  # the options need nothing installed
  if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then exec "$PYTHON" -m roomstate_dev.demo --help; fi
done
bootstrap_sa13
bootstrap_synapse
SYNAPSE_PYTHON="$VENVS/synapse/bin/python" exec "$VENVS/sa13/bin/python" -m roomstate_dev.demo "$@"
