#!/usr/bin/env bash
# Run the side-by-side benchmark under both SQLAlchemy versions (numbers only; asserts nothing
# about speed). Options go to benchmarks/bench.py: --quick (< 2 min, what CI runs), --postgres URL.
# The full run also redraws docs/full-sync.png.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
quick=0
for arg in "$@"; do [[ "$arg" == "--quick" ]] && quick=1; done
bootstrap_bench
bootstrap_sa13
mkdir -p .bench
plot=()
[[ $quick == 0 ]] && plot=(--plot docs/full-sync.png)
echo "== SQLAlchemy 2.x"
"$VENVS/bench/bin/python" -m benchmarks.bench --json .bench/sa2.json "${plot[@]}" "$@"
echo "== SQLAlchemy 1.3.24 (maubot's Docker image)"
"$VENVS/sa13/bin/python" -m benchmarks.bench --json .bench/sa13.json --only sync,events,postgres "$@"
