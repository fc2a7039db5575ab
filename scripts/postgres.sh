#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the tests (Debian's postgresql package).
#   scripts/postgres.sh start DIR   -> prints two database URLs (unit tests, e2e), one per line;
#                                      installs postgresql with apt if needed
#   scripts/postgres.sh stop DIR
set -euo pipefail
cmd="${1:?start|stop}"; dir="${2:?data directory}"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing postgresql (apt)" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2
fi
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "$cmd" in
  start)
    mkdir -p "$dir"
    [[ $(id -u) == 0 ]] && chown postgres "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >&2
    for db in roomstate_test roomstate_e2e; do
      as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE $db" >&2
      echo "postgresql://postgres@127.0.0.1:$port/$db"
    done
    ;;
  stop)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast stop >&2 || true
    ;;
esac
