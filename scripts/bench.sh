#!/usr/bin/env bash
# Run the side-by-side benchmark (numbers only; asserts nothing about speed).
#   scripts/bench.sh               full run under SQLAlchemy 2.x and 1.3.24; redraws docs/full-sync.png
#                                  and docs/restart-cost.png; the web view's page times; the floors of
#                                  the awaited event (benchmarks/floor_variants.py)
#   scripts/bench.sh --quick       small sizes, SQLAlchemy 2.x only, under two minutes (CI runs it)
#   scripts/bench.sh --postgres postgresql://...   also on that PostgreSQL database (it is wiped)
# Results are also written to .bench/*.json.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
quick=0
for arg in "$@"; do [[ "$arg" == "--quick" ]] && quick=1; done
mkdir -p .bench
if [[ $quick == 1 ]]; then
  bootstrap_sa2
  "$VENVS/sa2/bin/python" -m benchmarks.bench --json .bench/quick.json "$@"
  "$VENVS/sa2/bin/python" -m benchmarks.restarts --quick --json .bench/restarts-quick.json
  "$VENVS/sa2/bin/python" -m benchmarks.web --quick --probes 10 --json .bench/web-quick.json
  exit 0
fi
bootstrap_bench
bootstrap_sa13
echo "== SQLAlchemy 2.x"
"$VENVS/bench/bin/python" -m benchmarks.bench --json .bench/sa2.json --plot docs/full-sync.png "$@"
echo "== restarts (SQLAlchemy 2.x)"
"$VENVS/bench/bin/python" -m benchmarks.restarts --json .bench/restarts.json --plot docs/restart-cost.png
echo "== web view: server time per page (SQLAlchemy 2.x)"
"$VENVS/bench/bin/python" -m benchmarks.web --json .bench/web.json
echo "== the awaited member event: roomstate, its floor, a merged schema's floor, mautrix (SQLAlchemy 2.x)"
"$VENVS/bench/bin/python" -m benchmarks.floor_variants
echo "== SQLAlchemy 1.3.24 (maubot's Docker image)"
"$VENVS/sa13/bin/python" -m benchmarks.bench --json .bench/sa13.json --only sync,events,postgres "$@"
