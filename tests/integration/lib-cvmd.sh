# SPDX-License-Identifier: Apache-2.0
# Shared helpers for integration scripts that run a real cvmd (sourced, not executed).
# Provides: pass/fail counters, a per-script temp dir, fresh PostgreSQL databases when
# CVM_TEST_POSTGRES is set, and starting/stopping cvmd --dev with its dev-info JSON.

set -uo pipefail
BUILD=${CVM_BUILD_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/build}
SRC=${CVM_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
CVMD=$BUILD/cvmd
TMP=$(mktemp -d /tmp/cvm-it-XXXXXX)
PASSED=0
FAILED=0
CVMD_PIDS=()
PG_DBS=()

ok() { PASSED=$((PASSED + 1)); echo "ok - $*"; }
not_ok() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else not_ok "$what"; fi; }

finish() {
  local pid
  for pid in "${CVMD_PIDS[@]+"${CVMD_PIDS[@]}"}"; do
    kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  for db in "${PG_DBS[@]+"${PG_DBS[@]}"}"; do
    psql -q "$CVM_TEST_POSTGRES" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
  done
  rm -rf "$TMP"
  echo "$PASSED passed, $FAILED failed"
  [[ $FAILED -eq 0 ]]
}

# Sets STORE_URL for a new cvmd state: a fresh database on the test PostgreSQL when
# configured (dropped at exit), else empty (cvmd then uses SQLite in its state dir).
# Not for $(...): the database list must stay in this shell.
fresh_store() {
  STORE_URL=
  # scripts/test runs the suite once per engine and says which in CVM_TEST_STORE.
  [[ -n ${CVM_TEST_POSTGRES:-} && ${CVM_TEST_STORE:-postgres} == postgres ]] || return 0
  local db="cvm_it_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
  psql -q "$CVM_TEST_POSTGRES" -c "CREATE DATABASE $db" >/dev/null || return 1
  PG_DBS+=("$db")
  STORE_URL="${CVM_TEST_POSTGRES%/*}/$db"
}

# wait_file FILE SECONDS PID: wait until FILE exists (non-empty) while PID lives.
wait_file() {
  local f=$1 secs=$2 pid=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    [[ -s $f ]] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# start_dev INFO_FILE LOG [extra cvmd args...]: starts cvmd --dev, sets CVMD_PID.
start_dev() {
  local info=$1 log=$2; shift 2
  rm -f "$info"
  "$CVMD" --dev --listen 127.0.0.1:0 --dev-info "$info" "$@" >"$log" 2>&1 &
  CVMD_PID=$!
  CVMD_PIDS+=("$CVMD_PID")
  wait_file "$info" 120 "$CVMD_PID"
}

stop_pid() { kill -TERM "$1" 2>/dev/null; wait "$1" 2>/dev/null; }

# A free loopback TCP port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Tenant of a running cvmd, from the 401 challenge.
tenant_of() {
  curl -s -o /dev/null -D - --cacert "$2" "$1/keys?api-version=7.5" |
    sed -n 's/.*authorization="[^"]*\/\([^"/]*\)".*/\1/p' | tr -d '\r'
}
