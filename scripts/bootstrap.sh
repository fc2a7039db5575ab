#!/usr/bin/env bash
# Create the virtualenvs the tests, benchmarks and the demo use, from the exact pins in
# requirements/*.txt (idempotent: a venv is rebuilt only when its pins change). Sourced by
# test.sh, demo.sh and bench.sh.
#   $VENVS/sa13     maubot + SQLAlchemy 1.3.24 (what the official maubot Docker image has) + test tools
#   $VENVS/sa2      maubot + SQLAlchemy 2.x (what `pip install maubot sqlalchemy` gives) + test tools
#   $VENVS/synapse  matrix-synapse, for the end-to-end suite and the demo
#   $VENVS/bench    sa2 + matplotlib, for benchmarks/
# Sizes on disk (du --block-size=MB, Python 3.11, these pins): sa13 281 MB, sa2 298 MB (selenium,
# for the browser tests, is 45 MB of each), synapse 251 MB; test.sh sets up the first three
# (830 MB), demo.sh sa13 and synapse (530 MB).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENVS="${ROOMSTATE_VENVS:-$ROOT/.venvs}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "roomstate needs Python 3.10 or newer as \$PYTHON (found: $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi

make_venv() {  # name, requirements file, what it is for
  local name="$1" requirements="$2" purpose="$3"
  local dir="$VENVS/$name" stamp="$VENVS/$name/.roomstate-installed"
  local want; want="$("$PYTHON" --version 2>&1) $(sha256sum "$requirements" | cut -c1-16)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return; fi
  local total; total=$(grep -c '==' "$requirements")
  echo "== setting up .venvs/$name: $purpose ($total packages from $(basename "$requirements"))" >&2
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check --upgrade pip >&2
  # pip's own output, reduced to one line per package, so that a first run shows how far it is
  "$dir/bin/pip" install --disable-pip-version-check --progress-bar off -r "$requirements" 2>&1 \
    | awk -v total="$total" '
        /^(Collecting|Processing) / {
          n++; count = split($2, path, "/"); name = path[count]; sub(/-(cp|py)[0-9].*$/, "", name)
          printf "   [%d/%d] %s\n", n, total, name; fflush() }
        /^Installing collected packages/ { print "   installing ..."; fflush() }
        /^Successfully installed/ { print "   done"; fflush() }
        /^ERROR/ { print; fflush() }' >&2
  if ! "$dir/bin/python" -c 'import sys' 2>/dev/null || ! "$dir/bin/pip" check >/dev/null 2>&1; then
    echo "   installing into .venvs/$name failed; run: $dir/bin/pip install -r $requirements" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
}

bootstrap_sa13() { make_venv sa13 "$ROOT/requirements/sa13.txt" "maubot, SQLAlchemy 1.3, test tools (~280 MB)"; }
bootstrap_sa2() { make_venv sa2 "$ROOT/requirements/sa2.txt" "maubot, SQLAlchemy 2, test tools (~300 MB)"; }
bootstrap_synapse() { make_venv synapse "$ROOT/requirements/synapse.txt" "the Synapse homeserver (~250 MB)"; }
bootstrap_bench() { make_venv bench "$ROOT/requirements/bench.txt" "benchmarks and plotting (~255 MB + matplotlib)"; }
