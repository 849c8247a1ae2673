#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The official @azure/keyvault-keys SDK (tests/clients, locked) against a real cvmd --dev, plus a
# second cvmd started from a config file with purge protection, then the audit chain of both.
# Runs against PostgreSQL when CVM_TEST_POSTGRES is set (a fresh database per instance).
source "$(dirname "$0")/lib-cvmd.sh"
trap finish EXIT

CLIENTS=$SRC/tests/clients
if [[ ! -d $CLIENTS/node_modules/@azure/keyvault-keys ]]; then
  not_ok "tests/clients/node_modules missing: run scripts/setup (npm ci in tests/clients)"
  exit 1
fi

# 1. the dev instance (state kept in $TMP so the audit chain can be verified afterwards)
fresh_store || { not_ok "create PostgreSQL database"; exit 1; }
DEV_STORE=$STORE_URL
store_args=()
[[ -n $DEV_STORE ]] && store_args=(--store "$DEV_STORE")
if start_dev "$TMP/dev.json" "$TMP/dev.log" --state-dir "$TMP/dev" "${store_args[@]+"${store_args[@]}"}"; then
  ok "cvmd --dev started and wrote its dev-info"
else
  not_ok "cvmd --dev start"; cat "$TMP/dev.log"; exit 1
fi
DEV_PID=$CVMD_PID
check "dev-info file is 0600" [ "$(stat -c %a "$TMP/dev.json")" = 600 ]
check "dev-info has every field" jq -e '.base_url and .tenant and .ca_cert and .client_id and .client_secret' "$TMP/dev.json" >/dev/null
check "dev-info base_url names the picked port" grep -q '"base_url":"https://127.0.0.1:[1-9][0-9]*"' "$TMP/dev.json"
check "client secret is not in the log" bash -c "! grep -qF \"\$(jq -r .client_secret '$TMP/dev.json')\" '$TMP/dev.log'"

# the attestation service rides along in --dev when cvmd is built with it
if [[ -d $TMP/dev/tee-emulator ]]; then
  DEV_BASE=$(jq -r .base_url "$TMP/dev.json")
  check "attestation OpenID metadata names cvmd as issuer" \
    jq -e --arg b "$DEV_BASE" '.issuer == $b and .jwks_uri == ($b + "/certs")' \
    <(curl -s --cacert "$(jq -r .ca_cert "$TMP/dev.json")" "$DEV_BASE/.well-known/openid-configuration") >/dev/null
  check "dev mode trusts the TEE emulator root explicitly (logged)" grep -q 'event=attest_emulator_trusted' "$TMP/dev.log"
fi

# 2. a configured instance with purge protection
PP=$TMP/pp
mkdir -p "$PP"
PP_PORT=$(free_port)
fresh_store || { not_ok "create PostgreSQL database"; exit 1; }
PP_STORE=$STORE_URL
cat >"$PP/cvmd.conf" <<CONF
# purge-protected instance for the negative purge test
listen = 127.0.0.1:$PP_PORT
state_dir = $PP/state
services = hsm
soft_delete_days = 7
purge_protection = true
domain_key_file = $PP/domain.key
admin_credentials_file = $PP/admin.json
log_level = info
CONF
[[ -n $PP_STORE ]] && echo "store = $PP_STORE" >>"$PP/cvmd.conf"
"$CVMD" --config "$PP/cvmd.conf" >"$PP/log" 2>&1 &
PP_PID=$!
CVMD_PIDS+=("$PP_PID")
if wait_file "$PP/admin.json" 120 "$PP_PID" && sleep 0.5 && grep -q cvmd_started "$PP/log"; then
  ok "cvmd --config (purge protection) started"
else
  not_ok "cvmd --config start"; cat "$PP/log"; exit 1
fi
check "TLS fingerprint logged on first start" grep -q 'event=tls_certificate.*sha256=[0-9a-f]\{64\}' "$PP/log"
check "domain key file is 0600" [ "$(stat -c %a "$PP/domain.key")" = 600 ]
PP_BASE="https://127.0.0.1:$PP_PORT"
PP_TENANT=$(tenant_of "$PP_BASE" "$PP/state/tls-cert.pem")
jq --arg b "$PP_BASE" --arg t "$PP_TENANT" --arg c "$PP/state/tls-cert.pem" \
  '{base_url:$b, tenant:$t, ca_cert:$c, client_id, client_secret}' "$PP/admin.json" >"$PP/info.json"
check "challenge names the tenant" [ -n "$PP_TENANT" ]

# 3. the SDK test
CA=$(jq -r .ca_cert "$TMP/dev.json")
(cd "$CLIENTS" && NODE_EXTRA_CA_CERTS=$CA timeout 600 node keyvault-e2e.mjs "$TMP/dev.json" "$PP/info.json") | tee "$TMP/node.out"
read -r np _ nf _ < <(tail -1 "$TMP/node.out")
if [[ $np =~ ^[0-9]+$ && $nf =~ ^[0-9]+$ && $np -gt 0 ]]; then
  PASSED=$((PASSED + np)); FAILED=$((FAILED + nf))
else
  not_ok "node test did not report a summary"
fi

# 4. purge protection stays on even when the config later says off
stop_pid "$PP_PID"
sed -i 's/^purge_protection = true/purge_protection = false/' "$PP/cvmd.conf"
"$CVMD" --config "$PP/cvmd.conf" >"$PP/log2" 2>&1 &
PP_PID=$!
CVMD_PIDS+=("$PP_PID")
for _ in $(seq 100); do grep -q cvmd_started "$PP/log2" && break; sleep 0.1; done
# api METHOD PATH TOKEN [JSON]: prints the status, body in $TMP/resp.json
api() {
  local data=()
  [[ $# -ge 4 ]] && data=(-H 'content-type: application/json' --data "$4")
  curl -s -o "$TMP/resp.json" -w '%{http_code}' --cacert "$PP/state/tls-cert.pem" -X "$1" \
    -H "Authorization: Bearer $3" "${data[@]+"${data[@]}"}" "$PP_BASE$2"
}
token() {
  curl -s --cacert "$PP/state/tls-cert.pem" "$PP_BASE/$PP_TENANT/oauth2/v2.0/token" \
    --data-urlencode grant_type=client_credentials --data-urlencode "client_id=$1" \
    --data-urlencode "client_secret=$2" --data-urlencode scope=https://managedhsm.azure.net/.default |
    jq -r .access_token
}
tok=$(token "$(jq -r .client_id "$PP/admin.json")" "$(jq -r .client_secret "$PP/admin.json")")
check "restart with the same domain key file: admin token issued" [ -n "$tok" ] && [ "$tok" != null ]
check "administrator cannot list deleted keys (403, separation of duties)" \
  [ "$(api GET '/deletedkeys?api-version=7.5' "$tok")" = 403 ]
api PUT '/opencvm/principals/officer2?api-version=7.5' "$tok" '{}' >/dev/null
o_id=$(jq -r .client_id "$TMP/resp.json"); o_sec=$(jq -r .client_secret "$TMP/resp.json"); o_oid=$(jq -r .object_id "$TMP/resp.json")
for role in 21dbd100-6940-42c2-9190-5d6cb909625b 515eb02d-2335-4d2d-92f2-b1cbdf9c3778; do
  api PUT "/providers/Microsoft.Authorization/roleAssignments/$(cat /proc/sys/kernel/random/uuid)?api-version=7.5" "$tok" \
    "{\"properties\":{\"roleDefinitionId\":\"$role\",\"principalId\":\"$o_oid\"}}" >/dev/null
done
otok=$(token "$o_id" "$o_sec")
check "create after restart" [ "$(api POST '/keys/pp2/create?api-version=7.5' "$otok" '{"kty":"EC"}')" = 200 ]
check "delete after restart" [ "$(api DELETE '/keys/pp2?api-version=7.5' "$otok")" = 200 ]
check "recoveryLevel still not purgeable with purge_protection = false in the config" \
  bash -c "! jq -r .attributes.recoveryLevel '$TMP/resp.json' | grep -q Purgeable"
check "purge still refused (403)" [ "$(api DELETE '/deletedkeys/pp2?api-version=7.5' "$otok")" = 403 ]
check "purge refusal is Forbidden" [ "$(jq -r .error.code "$TMP/resp.json")" = Forbidden ]
# full backup / restore through REST (the administrator's role covers them)
bdir=$PP/state/backups
check "full backup with a foreign container is refused (400 naming storageResourceUri)" \
  [ "$(api POST '/backup?api-version=7.5' "$tok" '{"storageResourceUri":"https://acct.blob.example/c"}')" = 400 ]
check "... naming the field" grep -q storageResourceUri "$TMP/resp.json"
check "full backup (202)" [ "$(api POST '/backup?api-version=7.5' "$tok" "{\"storageResourceUri\":\"file://$bdir\"}")" = 202 ]
job=$(jq -r .jobId "$TMP/resp.json")
check "backup job succeeded ($job)" [ "$(jq -r .status "$TMP/resp.json")" = Succeeded ]
check "backup job status (200)" [ "$(api GET "/backup/$job/pending?api-version=7.5" "$tok")" = 200 ]
check "unknown job (404)" [ "$(api GET "/backup/mhsm-nope/pending?api-version=7.5" "$tok")" = 404 ]
check "recover pp2 after the backup" [ "$(api POST '/deletedkeys/pp2/recover?api-version=7.5' "$otok")" = 200 ]
check "pp2 is live" [ "$(api GET '/keys/pp2?api-version=7.5' "$otok")" = 200 ]
check "full restore (202)" [ "$(api PUT '/restore?api-version=7.5' "$tok" "{\"folderToRestore\":\"$job\"}")" = 202 ]
check "after the restore pp2 is deleted again, as in the backup (404)" [ "$(api GET '/keys/pp2?api-version=7.5' "$otok")" = 404 ]
check "restore of a path outside the backup dir is refused (400)" \
  [ "$(api PUT '/restore?api-version=7.5' "$tok" '{"folderToRestore":"../../etc"}')" = 400 ]
check "a key user cannot start a full backup (403)" \
  [ "$(api POST '/backup?api-version=7.5' "$otok" "{\"storageResourceUri\":\"file://$bdir\"}")" = 403 ]
# kid base URL: a usable Host header is echoed, an unusable one falls back to the listen URL
st=$(curl -s -o "$TMP/resp.json" -w '%{http_code}' --cacert "$PP/state/tls-cert.pem" -H "Authorization: Bearer $otok" \
  -H 'Host: bad_host' "$PP_BASE/keys/pp3/create?api-version=7.5" -H 'content-type: application/json' --data '{"kty":"EC"}')
check "unusable Host header: kid uses the configured base URL" grep -q "\"kid\":\"$PP_BASE/keys/pp3/" "$TMP/resp.json"
# tokens name their issuer from the Host too, so ask for one through the same name
htok=$(curl -s --cacert "$PP/state/tls-cert.pem" -H 'Host: hsm.example:8443' "$PP_BASE/$PP_TENANT/oauth2/v2.0/token" \
  --data-urlencode grant_type=client_credentials --data-urlencode "client_id=$o_id" \
  --data-urlencode "client_secret=$o_sec" --data-urlencode scope=https://managedhsm.azure.net/.default | jq -r .access_token)
st=$(curl -s -o "$TMP/resp.json" -w '%{http_code}' --cacert "$PP/state/tls-cert.pem" -H "Authorization: Bearer $htok" \
  -H 'Host: hsm.example:8443' "$PP_BASE/keys/pp3?api-version=7.5")
check "usable Host header: kid names it" grep -q '"kid":"https://hsm.example:8443/keys/pp3/' "$TMP/resp.json"
stop_pid "$PP_PID"

# config errors name the line; no state is touched
printf 'listen = 127.0.0.1:0\nstate_dir = %s\nsoft_delete_days = 3\n' "$TMP/bad" >"$TMP/bad.conf"
out=$("$CVMD" --config "$TMP/bad.conf" 2>&1); rc=$?
check "bad config: exit 1 naming line 3 ($out)" bash -c "[ $rc = 1 ] && grep -q 'line 3: soft_delete_days' <<<\"\$1\"" _ "$out"
printf 'listen = 127.0.0.1:0\nstate_dir = %s\nunknown_key = 1\n' "$TMP/bad" >"$TMP/bad.conf"
out=$("$CVMD" --config "$TMP/bad.conf" 2>&1); rc=$?
check "unknown config key refused ($out)" bash -c "[ $rc = 1 ] && grep -q 'unknown key' <<<\"\$1\"" _ "$out"
check "the example config parses" bash -c "sed 's#^state_dir = .*#state_dir = $TMP/ex#' '$SRC/contrib/cvmd.conf.example' >'$TMP/ex.conf' && \
  '$CVMD' --check-config --config '$TMP/ex.conf' | grep -q 'config: ok'"

# --dev without --dev-info: JSON on stdout, temp state removed on SIGTERM
"$CVMD" --dev --listen 127.0.0.1:0 >"$TMP/stdout.json" 2>"$TMP/dev2.log" &
D2=$!; CVMD_PIDS+=("$D2")
wait_file "$TMP/stdout.json" 120 "$D2"
check "dev JSON on stdout" jq -e '.base_url and .client_secret' "$TMP/stdout.json" >/dev/null
d2state=$(dirname "$(jq -r .ca_cert "$TMP/stdout.json")")
check "throw-away state dir exists while running" [ -d "$d2state" ]
stop_pid "$D2"
check "throw-away state dir removed at exit" [ ! -e "$d2state" ]

# 5. graceful stop and audit chain
stop_pid "$DEV_PID"; rc=$?
check "SIGTERM stops cvmd --dev cleanly (exit $rc)" [ "$rc" = 0 ]
check "cvmd_stopped logged" grep -q 'event=cvmd_stopped' "$TMP/dev.log"
dev_store=${DEV_STORE:-sqlite:$TMP/dev/cvmd.db}
out=$("$CVMD" --verify-audit --store "$dev_store" 2>&1)
check "audit chain of the dev instance verifies ($out)" grep -Eq '^audit: [1-9][0-9]* records verified' <<<"$out"
pp_store=${PP_STORE:-sqlite:$PP/state/cvmd.db}
out=$("$CVMD" --verify-audit --store "$pp_store" 2>&1)
check "audit chain of the configured instance verifies ($out)" grep -Eq '^audit: [1-9][0-9]* records verified' <<<"$out"
if [[ -z $DEV_STORE ]]; then
  # tamper with one record: verification must fail
  cp "$TMP/dev/cvmd.db" "$TMP/tampered.db"
  sqlite3 "$TMP/tampered.db" "UPDATE cvm_audit SET principal='someone-else' WHERE seq=(SELECT MIN(seq)+3 FROM cvm_audit)"
  out=$("$CVMD" --verify-audit --store "sqlite:$TMP/tampered.db" 2>&1); rc=$?
  check "edited audit record is detected ($out)" [ "$rc" != 0 ]
fi
