#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# HA: two cvmd processes on one PostgreSQL database (same domain key file) serve the same keys,
# tokens and role assignments. Needs CVM_TEST_POSTGRES; skipped (77) without it.
source "$(dirname "$0")/lib-cvmd.sh"
if [[ -z ${CVM_TEST_POSTGRES:-} || ${CVM_TEST_STORE:-postgres} != postgres ]]; then
  echo "CVM_TEST_POSTGRES not set: skipping the HA test"
  rm -rf "$TMP"
  exit 77
fi
trap finish EXIT
fresh_store || { not_ok "create PostgreSQL database"; exit 1; }

start_node() { # N -> sets BASE_N, CA_N
  local n=$1 port
  port=$(free_port)
  mkdir -p "$TMP/n$n"
  cat >"$TMP/n$n/cvmd.conf" <<CONF
listen = 127.0.0.1:$port
state_dir = $TMP/n$n/state
store = $STORE_URL
services = hsm
domain_key_file = $TMP/domain.key
admin_credentials_file = $TMP/admin.json
CONF
  "$CVMD" --config "$TMP/n$n/cvmd.conf" >"$TMP/n$n/log" 2>&1 &
  CVMD_PIDS+=($!)
  local i
  for ((i = 0; i < 600; i++)); do
    grep -q cvmd_started "$TMP/n$n/log" && break
    kill -0 "${CVMD_PIDS[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  grep -q cvmd_started "$TMP/n$n/log" || { cat "$TMP/n$n/log"; return 1; }
  eval "BASE_$n=https://127.0.0.1:$port CA_$n=$TMP/n$n/state/tls-cert.pem"
}
check "node 1 starts (creates the domain)" start_node 1
check "node 2 starts on the same database (unlocks the domain)" start_node 2
check "node 2 did not create a second administrator" bash -c "! grep -q bootstrap_admin_created '$TMP/n2/log'"
TENANT=$(tenant_of "$BASE_1" "$CA_1")
check "both nodes share the tenant" [ "$TENANT" = "$(tenant_of "$BASE_2" "$CA_2")" ]

# Both nodes are addressed by one service name, as behind a load balancer: tokens name the
# issuer {base}/{tenant}/v2.0 with base from the Host header, so every node accepts them.
VIP=cvm-ha.test
# api NODE METHOD PATH TOKEN [JSON] -> status; body in $TMP/resp.json
api() {
  local base ca data=()
  eval "base=\$BASE_$1 ca=\$CA_$1"
  [[ $# -ge 5 ]] && data=(-H 'content-type: application/json' --data "$5")
  curl -s -o "$TMP/resp.json" -w '%{http_code}' --cacert "$ca" -X "$2" -H "Authorization: Bearer $4" -H "Host: $VIP" \
    "${data[@]+"${data[@]}"}" "$base$3?api-version=7.5"
}
token() { # NODE CLIENT_ID SECRET
  local base ca
  eval "base=\$BASE_$1 ca=\$CA_$1"
  curl -s --cacert "$ca" -H "Host: $VIP" "$base/$TENANT/oauth2/v2.0/token" --data-urlencode grant_type=client_credentials \
    --data-urlencode "client_id=$2" --data-urlencode "client_secret=$3" \
    --data-urlencode scope=https://managedhsm.azure.net/.default | jq -r .access_token
}
ADMIN=$(token 1 "$(jq -r .client_id "$TMP/admin.json")" "$(jq -r .client_secret "$TMP/admin.json")")
api 1 PUT /opencvm/principals/ha-app "$ADMIN" '{}' >/dev/null
cp "$TMP/resp.json" "$TMP/app.json"
RA=$(cat /proc/sys/kernel/random/uuid)
st=$(api 1 PUT "/providers/Microsoft.Authorization/roleAssignments/$RA" "$ADMIN" \
  "{\"properties\":{\"roleDefinitionId\":\"21dbd100-6940-42c2-9190-5d6cb909625b\",\"principalId\":\"$(jq -r .object_id "$TMP/app.json")\"}}")
check "role assigned on node 1" [ "$st" = 201 ]
T2=$(token 2 "$(jq -r .client_id "$TMP/app.json")" "$(jq -r .client_secret "$TMP/app.json")")
check "node 2 issues a token to a principal created on node 1" [ -n "$T2" ] && [ "$T2" != null ]
DIGEST=$(printf 'ha' | openssl dgst -sha256 -binary | basenc --base64url | tr -d '=')
created=0
for i in $(seq 10); do
  [[ $(api 1 POST "/keys/ha-$i/create" "$T2" '{"kty":"EC","crv":"P-256"}') == 200 ]] && created=$((created + 1))
done
check "node 1 accepts node 2's token and creates 10 keys" [ "$created" = 10 ]
served=0
for i in $(seq 10); do
  [[ $(api 2 GET "/keys/ha-$i" "$T2") == 200 ]] || continue
  ver=$(jq -r .key.kid "$TMP/resp.json" | sed 's#.*/##')
  [[ $(api 2 POST "/keys/ha-$i/$ver/sign" "$T2" "{\"alg\":\"ES256\",\"value\":\"$DIGEST\"}") == 200 ]] || continue
  sig=$(jq -r .value "$TMP/resp.json")
  [[ $(api 1 POST "/keys/ha-$i/$ver/verify" "$T2" "{\"alg\":\"ES256\",\"digest\":\"$DIGEST\",\"value\":\"$sig\"}") == 200 ]] &&
    [[ $(jq -r .value "$TMP/resp.json") == true ]] && served=$((served + 1))
done
check "node 2 serves and signs with every key; node 1 verifies ($served/10)" [ "$served" = 10 ]
check "node 2 lists the keys created on node 1" [ "$(api 2 GET /keys "$T2")" = 200 ]
check "the listing has all 10" [ "$(jq '[.value[] | select(.kid | test("/keys/ha-"))] | length' "$TMP/resp.json")" = 10 ]
check "delete on node 2" [ "$(api 2 DELETE /keys/ha-1 "$T2")" = 200 ]
check "node 1 sees the deletion (404)" [ "$(api 1 GET /keys/ha-1 "$T2")" = 404 ]
check "new version of ha-2 on node 1" [ "$(api 1 POST /keys/ha-2/create "$T2" '{"kty":"EC","crv":"P-256"}')" = 200 ]
v_new=$(jq -r .key.kid "$TMP/resp.json" | sed 's#.*/##')
check "kid names the service name, version is 32 hex" grep -Eq "^https://$VIP/keys/ha-2/[0-9a-f]{32}\$" <(jq -r .key.kid "$TMP/resp.json")
api 2 GET /keys/ha-2 "$T2" >/dev/null
check "latest version agrees across nodes" [ "$(jq -r .key.kid "$TMP/resp.json" | sed 's#.*/##')" = "$v_new" ]
check "node 2 serves the principal before the role removal" [ "$(api 2 GET /keys/ha-3 "$T2")" = 200 ]
check "role removed on node 1" [ "$(api 1 DELETE "/providers/Microsoft.Authorization/roleAssignments/$RA" "$ADMIN")" = 200 ]
sleep 1.5 # RBAC caches re-check the store generation at most once per second
check "node 2 refuses the principal after the role removal (403)" [ "$(api 2 GET /keys/ha-3 "$T2")" = 403 ]
check "refusal is Forbidden" [ "$(jq -r .error.code "$TMP/resp.json")" = Forbidden ]
for pid in "${CVMD_PIDS[@]}"; do stop_pid "$pid"; done
CVMD_PIDS=()
out=$("$CVMD" --verify-audit --store "$STORE_URL" 2>&1)
check "shared audit chain written by both nodes verifies ($out)" grep -Eq '^audit: [1-9][0-9]* records verified' <<<"$out"
