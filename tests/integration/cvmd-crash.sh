#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Crash test: clients create and use keys in a loop while cvmd is killed with SIGKILL at random
# points (15 times) and restarted on the same state. Afterwards every key whose create returned
# 200 must exist and work, and the audit chain must verify.
source "$(dirname "$0")/lib-cvmd.sh"
trap 'kill ${WORKERS[@]+"${WORKERS[@]}"} 2>/dev/null; finish' EXIT
KILLS=${CVM_CRASH_KILLS:-15}
WORKERS=()

fresh_store || { not_ok "create PostgreSQL database"; exit 1; }
STORE=$STORE_URL
PORT=$(free_port)
args=(--listen "127.0.0.1:$PORT" --state-dir "$TMP/state")
[[ -n $STORE ]] && args+=(--store "$STORE")

start() {
  rm -f "$TMP/dev.json"
  "$CVMD" --dev "${args[@]}" --dev-info "$TMP/dev.json" >>"$TMP/cvmd.log" 2>&1 &
  CVMD_PID=$!
  CVMD_PIDS=("$CVMD_PID") # only the live one: finish() must not signal a reused pid
  wait_file "$TMP/dev.json" 120 "$CVMD_PID"
}
start || { not_ok "first start"; cat "$TMP/cvmd.log"; exit 1; }
ok "first start"
BASE=$(jq -r .base_url "$TMP/dev.json"); TENANT=$(jq -r .tenant "$TMP/dev.json")
CA=$TMP/state/tls-cert.pem

token() {
  curl -s --cacert "$CA" "$BASE/$TENANT/oauth2/v2.0/token" --data-urlencode grant_type=client_credentials \
    --data-urlencode "client_id=$1" --data-urlencode "client_secret=$2" \
    --data-urlencode scope=https://managedhsm.azure.net/.default | jq -r .access_token
}
# api METHOD PATH TOKEN [JSON] OUTFILE -> status
api() {
  local m=$1 p=$2 t=$3 body=$4 out=$5
  curl -s -m 20 -o "$out" -w '%{http_code}' --cacert "$CA" -X "$m" -H "Authorization: Bearer $t" \
    -H 'content-type: application/json' ${body:+--data "$body"} "$BASE$p?api-version=7.5"
}
ADMIN=$(token "$(jq -r .client_id "$TMP/dev.json")" "$(jq -r .client_secret "$TMP/dev.json")")
api PUT /opencvm/principals/crash-worker "$ADMIN" '{}' "$TMP/worker.json" >/dev/null
WOID=$(jq -r .object_id "$TMP/worker.json")
st=$(api PUT "/providers/Microsoft.Authorization/roleAssignments/$(cat /proc/sys/kernel/random/uuid)" "$ADMIN" \
  "{\"properties\":{\"roleDefinitionId\":\"21dbd100-6940-42c2-9190-5d6cb909625b\",\"principalId\":\"$WOID\"}}" "$TMP/ra.json")
check "worker identity has Crypto User" [ "$st" = 201 ]
WTOK=$(token "$(jq -r .client_id "$TMP/worker.json")" "$(jq -r .client_secret "$TMP/worker.json")")
DIGEST=$(printf 'crash' | openssl dgst -sha256 -binary | basenc --base64url | tr -d '=')

# worker N: create key, record it only after a 200, then use it (errors while cvmd is down are
# expected and ignored).
worker() {
  local n=$1 i=0 st
  while :; do
    i=$((i + 1))
    local name="crash-$n-$i"
    st=$(api POST "/keys/$name/create" "$WTOK" '{"kty":"EC","crv":"P-256"}' "$TMP/w$n.json")
    [[ $st == 200 ]] && echo "$name" >>"$TMP/created-$n.txt"
    api POST "/keys/$name/$(jq -r '.key.kid' "$TMP/w$n.json" 2>/dev/null | sed 's#.*/##')/sign" "$WTOK" \
      "{\"alg\":\"ES256\",\"value\":\"$DIGEST\"}" /dev/null >/dev/null 2>&1
  done
}
worker 1 & WORKERS+=($!)
worker 2 & WORKERS+=($!)

restarts=0
for ((k = 1; k <= KILLS; k++)); do
  sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.3 + (r % 200) / 100 }')"
  kill -KILL "$CVMD_PID"; wait "$CVMD_PID" 2>/dev/null
  if start; then restarts=$((restarts + 1)); else break; fi
done
check "restarted after each of $KILLS SIGKILLs ($restarts)" [ "$restarts" = "$KILLS" ]
sleep 1
kill "${WORKERS[@]}" 2>/dev/null; wait "${WORKERS[@]}" 2>/dev/null; WORKERS=()

cat "$TMP"/created-*.txt >"$TMP/created.txt" 2>/dev/null
total=$(wc -l <"$TMP/created.txt")
check "keys were created during the run ($total)" [ "$total" -gt "$KILLS" ]
missing=0; broken=0
while read -r name; do
  st=$(api GET "/keys/$name" "$WTOK" "" "$TMP/get.json")
  if [[ $st != 200 ]]; then missing=$((missing + 1)); echo "missing: $name ($st)"; continue; fi
  ver=$(jq -r .key.kid "$TMP/get.json" | sed 's#.*/##')
  st=$(api POST "/keys/$name/$ver/sign" "$WTOK" "{\"alg\":\"ES256\",\"value\":\"$DIGEST\"}" "$TMP/sig.json")
  sig=$(jq -r .value "$TMP/sig.json")
  st2=$(api POST "/keys/$name/$ver/verify" "$WTOK" "{\"alg\":\"ES256\",\"digest\":\"$DIGEST\",\"value\":\"$sig\"}" "$TMP/ver.json")
  [[ $st == 200 && $st2 == 200 && $(jq -r .value "$TMP/ver.json") == true ]] || { broken=$((broken + 1)); echo "broken: $name"; }
done <"$TMP/created.txt"
check "every key whose create returned 200 exists ($missing missing of $total)" [ "$missing" = 0 ]
check "every such key signs and verifies ($broken broken)" [ "$broken" = 0 ]
stop_pid "$CVMD_PID"
out=$("$CVMD" --verify-audit --store "${STORE:-sqlite:$TMP/state/cvmd.db}" 2>&1)
check "audit chain verifies after $KILLS SIGKILLs ($out)" grep -Eq '^audit: [1-9][0-9]* records verified' <<<"$out"
