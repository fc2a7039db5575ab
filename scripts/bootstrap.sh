#!/usr/bin/env bash
# Create the virtualenvs the tests and the demo use (idempotent). Sourced by test.sh and demo.sh.
#   $VENVS/sa13     maubot + SQLAlchemy 1.3.24 (what the official maubot Docker image has)
#   $VENVS/sa2      maubot + the latest SQLAlchemy 2.x (what `pip install maubot sqlalchemy` gives)
#   $VENVS/synapse  matrix-synapse, for the end-to-end suite and the demo
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENVS="${ROOMSTATE_VENVS:-$ROOT/.venvs}"
PYTHON="${PYTHON:-python3}"

make_venv() {  # name, pip requirements...
  local name="$1"; shift
  local dir="$VENVS/$name" stamp="$VENVS/$name/.roomstate-installed"
  # what the venv was made from: the arguments, and the content of any requirements file
  local want="$* $(cat "$ROOT/requirements-dev.txt" | sha256sum | cut -c1-16)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return; fi
  echo "== setting up $dir" >&2
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  echo "$want" > "$stamp"
}

bootstrap_sa13() { make_venv sa13 -r "$ROOT/requirements-dev.txt" "SQLAlchemy==1.3.24"; }
bootstrap_sa2() { make_venv sa2 -r "$ROOT/requirements-dev.txt" "SQLAlchemy>=2,<3"; }

bootstrap_synapse() {
  make_venv synapse "matrix-synapse"
}
