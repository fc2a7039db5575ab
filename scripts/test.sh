#!/usr/bin/env bash
# Set up everything and run all tests: the unit suite under SQLAlchemy 1.3.24 and 2.x, then the
# end-to-end suite (real Synapse + maubot). Extra arguments go to every pytest run.
#   scripts/test.sh            everything
#   scripts/test.sh --unit     unit tests only (no Synapse)
# Env: ROOMSTATE_TEST_DATABASE=postgresql://...  also runs the unit suite on that database;
#      ROOMSTATE_E2E_DATABASE=postgresql://...   also runs the e2e scenarios with maubot standalone
#                                                on that database (it is wiped first).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"

run_e2e=1
if [[ "${1:-}" == "--unit" ]]; then run_e2e=0; shift; fi
reports="$(mktemp -d)"
trap 'rm -rf "$reports"' EXIT
run=0
pytest_run() {  # python, pytest args...: one pytest run, its JUnit report kept for the summary
  local py="$1"; shift
  run=$((run + 1))
  "$py" -m pytest -p no:cacheprovider --junit-xml="$reports/$run.xml" "$@"
}

bootstrap_sa13
bootstrap_sa2
status=0
for version in sa13 sa2; do
  py="$VENVS/$version/bin/python"
  sa_version="$("$py" -c 'import sqlalchemy; print(sqlalchemy.__version__)')"
  echo "== unit tests, SQLite, SQLAlchemy $sa_version"
  ROOMSTATE_TEST_DATABASE= pytest_run "$py" -m "not e2e" "$@" || status=1
  if [[ -n "${ROOMSTATE_TEST_DATABASE:-}" ]]; then
    echo "== unit tests, $ROOMSTATE_TEST_DATABASE, SQLAlchemy $sa_version"
    pytest_run "$py" -m "not e2e" "$@" || status=1
  fi
done

if [[ $run_e2e == 1 ]]; then
  bootstrap_synapse
  echo "== end-to-end tests (Synapse $("$VENVS/synapse/bin/python" -c 'import synapse; print(synapse.__version__)'), maubot standalone + manager, SQLAlchemy 1.3.24)"
  SYNAPSE_PYTHON="$VENVS/synapse/bin/python" ROOMSTATE_E2E_REQUIRED=1 ROOMSTATE_E2E_DATABASE= \
    pytest_run "$VENVS/sa13/bin/python" -m e2e -v --durations=0 tests/e2e "$@" || status=1
  if [[ -n "${ROOMSTATE_E2E_DATABASE:-}" ]]; then
    echo "== end-to-end scenarios, maubot standalone on $ROOMSTATE_E2E_DATABASE"
    SYNAPSE_PYTHON="$VENVS/synapse/bin/python" ROOMSTATE_E2E_REQUIRED=1 \
      pytest_run "$VENVS/sa13/bin/python" -m e2e -v --durations=0 tests/e2e/test_scenarios.py -k "not two_thousand" "$@" || status=1
  fi
fi

# One closing line over all runs ("N passed, N failed, N skipped").
"$VENVS/sa13/bin/python" - "$reports" "$status" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for path in sorted(glob.glob(sys.argv[1] + "/*.xml")):
    for suite in ET.parse(path).getroot().iter("testsuite"):
        for key in total:
            total[key] += int(suite.get(key, 0))
failed = total["failures"] + total["errors"]
passed = total["tests"] - failed - total["skipped"]
if failed == 0 and sys.argv[2] != "0":
    failed = 1  # a run failed without a report (e.g. a crash): never print a green line
print(f"{passed} passed, {failed} failed, {total['skipped']} skipped")
PY
exit $status
