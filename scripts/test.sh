#!/usr/bin/env bash
# Set up everything and run all checks and tests:
#   1. ruff (lint, import order, pyupgrade) and mypy (strict, on roomstate/)
#   2. the unit suite under SQLAlchemy 1.3.24 and under 2.x, each on SQLite and on PostgreSQL
#   3. the end-to-end suite (real Synapse + maubot standalone and manager), on SQLite and PostgreSQL
# Extra arguments go to every pytest run.
#   scripts/test.sh            everything
#   scripts/test.sh --unit     checks and unit tests only (no Synapse)
# PostgreSQL: a throwaway server is started from Debian's postgresql package when it is installed
# (`apt install postgresql`; .ci/run does that); without it the PostgreSQL runs are skipped.
# ROOMSTATE_TEST_POSTGRES / ROOMSTATE_E2E_DATABASE=postgresql://... use a server of your own
# (the e2e database is wiped first).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"

run_e2e=1
if [[ "${1:-}" == "--unit" ]]; then run_e2e=0; shift; fi
work="$(mktemp -d /tmp/roomstate-test.XXXXXX)"
chmod 755 "$work"
postgres_started=0
cleanup() {
  if [[ $postgres_started == 1 ]]; then scripts/postgres.sh stop "$work/pg" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
status=0
run=0
pytest_run() {  # python, pytest args...: one pytest run, its JUnit report kept for the summary
  local py="$1"; shift
  run=$((run + 1))
  "$py" -m pytest -p no:cacheprovider --timeout 900 --junit-xml="$work/$run.xml" "$@"
}

bootstrap_sa13
bootstrap_sa2

echo "== checks: ruff and mypy"
"$VENVS/sa2/bin/ruff" check . || status=1
"$VENVS/sa2/bin/ruff" format --check . || status=1
"$VENVS/sa2/bin/mypy" || status=1

if [[ -z "${ROOMSTATE_TEST_POSTGRES:-}" ]] && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  urls="$(scripts/postgres.sh start "$work/pg")"
  postgres_started=1
  export ROOMSTATE_TEST_POSTGRES="$(sed -n 1p <<<"$urls")"
  export ROOMSTATE_E2E_DATABASE="${ROOMSTATE_E2E_DATABASE:-$(sed -n 2p <<<"$urls")}"
fi
if [[ -z "${ROOMSTATE_TEST_POSTGRES:-}" ]]; then
  echo "== PostgreSQL is not installed: its runs are skipped (apt install postgresql to include them)"
fi

for version in sa13 sa2; do
  py="$VENVS/$version/bin/python"
  sa_version="$("$py" -c 'import sqlalchemy; print(sqlalchemy.__version__)')"
  echo "== unit tests, SQLAlchemy $sa_version (SQLite${ROOMSTATE_TEST_POSTGRES:+ and PostgreSQL})"
  pytest_run "$py" -m "not e2e" "$@" || status=1
done

if [[ $run_e2e == 1 ]]; then
  bootstrap_synapse
  synapse_version="$("$VENVS/synapse/bin/python" -c 'import synapse; print(synapse.__version__)')"
  echo "== end-to-end tests (Synapse $synapse_version, maubot standalone + manager, SQLAlchemy 1.3.24, SQLite)"
  SYNAPSE_PYTHON="$VENVS/synapse/bin/python" ROOMSTATE_E2E_REQUIRED=1 ROOMSTATE_E2E_DATABASE= \
    pytest_run "$VENVS/sa13/bin/python" -m e2e -v --durations=0 tests/e2e "$@" || status=1
  if [[ -n "${ROOMSTATE_E2E_DATABASE:-}" ]]; then
    echo "== end-to-end scenarios, maubot standalone on PostgreSQL"
    SYNAPSE_PYTHON="$VENVS/synapse/bin/python" ROOMSTATE_E2E_REQUIRED=1 \
      pytest_run "$VENVS/sa13/bin/python" -m e2e -v --durations=0 tests/e2e/test_scenarios.py -k "not two_thousand" "$@" \
      || status=1
  fi
fi

# One closing line over all runs ("N passed, N failed, N skipped").
"$VENVS/sa13/bin/python" - "$work" "$status" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for path in sorted(glob.glob(sys.argv[1] + "/*.xml")):
    for suite in ET.parse(path).getroot().iter("testsuite"):
        for key in total:
            total[key] += int(suite.get(key, 0))
failed = total["failures"] + total["errors"]
passed = total["tests"] - failed - total["skipped"]
if failed == 0 and sys.argv[2] != "0":
    failed = 1  # a run or check failed without a test report: never print a green line
print(f"{passed} passed, {failed} failed, {total['skipped']} skipped")
PY
exit $status
