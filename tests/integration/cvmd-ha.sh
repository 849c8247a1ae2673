#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# HA: two cvmd processes on one PostgreSQL database (same domain key file) serve the same keys,
# tokens and role assignments. Needs CVM_TEST_POSTGRES; skipped (77) without it.
source "$(dirname "$0")/lib-cvmd.sh"
CVM=$BUILD/cvm
if [[ -z ${CVM_TEST_POSTGRES:-} || ${CVM_TEST_STORE:-postgres} != postgres ]]; then
  echo "CVM_TEST_POSTGRES not set: skipping the HA test"
  rm -rf "$TMP"
  exit 77
fi
trap finish EXIT
fresh_store || { not_ok "create PostgreSQL database"; exit 1; }

start_node() { # N SERVICES [CONFIG LINE]... -> sets BASE_N, CA_N
  local n=$1 services=$2 port ca
  shift 2
  port=$(free_port)
  mkdir -p "$TMP/n$n"
  cat >"$TMP/n$n/cvmd.conf" <<CONF
listen = 127.0.0.1:$port
state_dir = $TMP/n$n/state
store = $STORE_URL
services = $services
domain_key_file = $TMP/domain.key
admin_credentials_file = $TMP/admin.json
CONF
  printf '%s\n' "$@" >>"$TMP/n$n/cvmd.conf"
  "$CVMD" --config "$TMP/n$n/cvmd.conf" >"$TMP/n$n/log" 2>&1 &
  CVMD_PIDS+=($!)
  local i
  for ((i = 0; i < 600; i++)); do
    grep -q cvmd_started "$TMP/n$n/log" && break
    kill -0 "${CVMD_PIDS[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  grep -q cvmd_started "$TMP/n$n/log" || { cat "$TMP/n$n/log"; return 1; }
  ca=$(sed -n 's/^tls_cert = //p' "$TMP/n$n/cvmd.conf")
  eval "BASE_$n=https://127.0.0.1:$port CA_$n=${ca:-$TMP/n$n/state/tls-cert.pem}"
}
# Node 1 also runs the attestation service (trusting a TEE emulator, for Secure Key Release
# below); node 2 serves node 1's TLS certificate, so it trusts node 1 as the token authority.
EMU=$TMP/emu
"$CVM" tee-emu init "$EMU" >"$TMP/emu.out" 2>&1
FP=$(sed -n 's/^ark_sha256 \([0-9a-f]\{64\}\)$/\1/p' "$TMP/emu.out")
check "node 1 starts (creates the domain)" start_node 1 "hsm, attest" \
  "attest_emulator_root = $EMU" "attest_emulator_fingerprint = $FP"
check "node 2 starts on the same database (unlocks the domain)" start_node 2 hsm \
  "tls_cert = $TMP/n1/state/tls-cert.pem" "tls_key = $TMP/n1/state/tls-key.pem"
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

# Secure Key Release: a token released by one node is refused by the other (the replay table
# is in the shared store), in both directions; each node releases a fresh token.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/tee.pem" 2>/dev/null
attest_token() { # NONCE -> a token from node 1 for emulated SEV-SNP evidence binding tee.pem
  python3 - "$CVM" "$EMU" "$TMP/tee.pem" "$1" "$TMP/attest.json" <<'PY' || return 1
import base64, hashlib, json, subprocess, sys
cvm, emu, tee, nonce, out = sys.argv[1:]
b64 = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")
mod = subprocess.run(["openssl", "rsa", "-in", tee, "-noout", "-modulus"], check=True,
                     capture_output=True, text=True).stdout.strip().split("=", 1)[1]
jwk = {"kty": "RSA", "n": b64(bytes.fromhex(mod)), "e": "AQAB",
       "kid": "TpmEphemeralEncryptionKey", "key_ops": ["encrypt"]}
rt = json.dumps({"keys": [jwk], "nonce": nonce}, separators=(",", ":")).encode()
subprocess.run([cvm, "tee-emu", "report", emu, "--report-data", hashlib.sha256(rt).hexdigest(),
                "--measurement", "5a" * 48, "--policy", "30000", "--out", out + ".bin"],
               check=True, capture_output=True)
chain = b"".join(open(f"{emu}/{f}", "rb").read() for f in ("vcek.pem", "ask.pem", "ark.pem"))
ev = json.dumps({"SnpReport": b64(open(out + ".bin", "rb").read()), "VcekCertChain": b64(chain)})
json.dump({"report": b64(ev.encode()), "runtimeData": {"data": b64(rt), "dataType": "JSON"}},
          open(out, "w"))
PY
  curl -s --cacert "$CA_1" -H 'content-type: application/json' --data @"$TMP/attest.json" \
    "$BASE_1/attest/SevSnpVm?api-version=2022-08-01" | jq -r .token
}
R1=$(attest_token r1); R2=$(attest_token r2)
check "node 1 attests emulated SEV-SNP evidence (two tokens)" \
  bash -c "[[ '$R1' == ey* && '$R2' == ey* && '$R1' != '$R2' ]]"
ISS=$(cut -d. -f2 <<<"$R1" | basenc --base64url -d 2>/dev/null | jq -r .iss)
POLICY=$(jq -cn --arg a "$ISS" '{version: "1.0.0", anyOf: [{authority: $a, allOf: [
  {claim: "x-ms-attestation-type", equals: "sevsnpvm"}, {claim: "x-opencvm-emulated", equals: true}]}]}' |
  basenc --base64url | tr -d '=\n')
check "exportable key with a release policy naming node 1's attestation service" \
  [ "$(api 1 POST /keys/ha-skr/create "$T2" "{\"kty\":\"RSA-HSM\",\"key_size\":2048,\"attributes\":{\"exportable\":true},\"release_policy\":{\"data\":\"$POLICY\"}}")" = 200 ]
check "node 1 releases the key for token 1" [ "$(api 1 POST /keys/ha-skr/release "$T2" "{\"target\":\"$R1\"}")" = 200 ]
check "... a JWS" grep -q '^ey' <(jq -r .value "$TMP/resp.json")
check "node 2 refuses token 1 (replay, 403)" [ "$(api 2 POST /keys/ha-skr/release "$T2" "{\"target\":\"$R1\"}")" = 403 ]
check "... naming the reuse" grep -q 'already used' <(jq -r .error.message "$TMP/resp.json")
check "node 2 releases the key for token 2" [ "$(api 2 POST /keys/ha-skr/release "$T2" "{\"target\":\"$R2\"}")" = 200 ]
check "node 1 refuses token 2 (replay, 403)" [ "$(api 1 POST /keys/ha-skr/release "$T2" "{\"target\":\"$R2\"}")" = 403 ]

check "node 2 serves the principal before the role removal" [ "$(api 2 GET /keys/ha-3 "$T2")" = 200 ]
check "role removed on node 1" [ "$(api 1 DELETE "/providers/Microsoft.Authorization/roleAssignments/$RA" "$ADMIN")" = 200 ]
sleep 1.5 # RBAC caches re-check the store generation at most once per second
check "node 2 refuses the principal after the role removal (403)" [ "$(api 2 GET /keys/ha-3 "$T2")" = 403 ]
check "refusal is Forbidden" [ "$(jq -r .error.code "$TMP/resp.json")" = Forbidden ]
for pid in "${CVMD_PIDS[@]}"; do stop_pid "$pid"; done
CVMD_PIDS=()
out=$("$CVMD" --verify-audit --store "$STORE_URL" 2>&1)
check "shared audit chain written by both nodes verifies ($out)" grep -Eq '^audit: [1-9][0-9]* records verified' <<<"$out"
