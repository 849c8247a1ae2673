#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Key service throughput beside its anchors, in one run on the same cores:
#  (a) key release over HTTPS keep-alive (token check + policy + wrap + JWS + audit) vs
#      `openssl speed rsa2048` sign/s on all cores (each release signs once): goal >= 0.7x
#  (b) GET /keys/{name} over HTTPS keep-alive vs nginx returning a static 200 over TLS, both
#      measured with wrk: goal >= 0.3x
#  (c) unwrapkey RSA-OAEP-256 over HTTPS vs SoftHSM2's in-process C_Decrypt (CKM_RSA_PKCS_OAEP,
#      SHA-256; SoftHSM2 2.6 only does OAEP with SHA-1 and the tool then says oaep_hash=sha1 —
#      the RSA-2048 private-key operation is the cost either way) through PKCS#11, one session
#      per core: goal >= 0.8x
# Every cvmd request is audited (group commit, durable before the answer). State lives on disk
# (/var/tmp), not tmpfs, so the fsyncs are real.
# Usage: bench-hsm.sh CVMD BENCH_HSM_LOAD BENCH_SOFTHSM_OAEP [seconds (default 5)]
set -eu
CVMD=${1:?usage: bench-hsm.sh CVMD BENCH_HSM_LOAD BENCH_SOFTHSM_OAEP [seconds]}
LOAD=${2:?}
SOFTHSM_BENCH=${3:?}
SECS=${4:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
CORES=$(nproc)
THREADS=$((CORES * 16))
W=$(mktemp -d "${CVM_BENCH_DIR:-/var/tmp}/cvm-bench-hsm.XXXXXX") # CVM_BENCH_DIR=/dev/shm: no fsync cost
PIDS=()
cleanup() {
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
echo "cores=$CORES client_threads=$THREADS seconds=$SECS"

"$CVMD" --dev --listen 127.0.0.1:0 --state-dir "$W/state" --dev-info "$W/dev.json" --log-level warn \
  >"$W/cvmd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do [[ -s $W/dev.json ]] && break; sleep 0.1; done
[[ -s $W/dev.json ]] || { echo "cvmd did not start:"; cat "$W/cvmd.log"; exit 1; }
BASE=$(jq -r .base_url "$W/dev.json"); TENANT=$(jq -r .tenant "$W/dev.json"); CA=$(jq -r .ca_cert "$W/dev.json")
token() {
  curl -sf --cacert "$CA" "$BASE/$TENANT/oauth2/v2.0/token" --data-urlencode grant_type=client_credentials \
    --data-urlencode "client_id=$1" --data-urlencode "client_secret=$2" \
    --data-urlencode scope=https://managedhsm.azure.net/.default | jq -r .access_token
}
api() { # METHOD PATH TOKEN [JSON]
  curl -sf --cacert "$CA" -X "$1" -H "Authorization: Bearer $3" -H 'content-type: application/json' \
    ${4:+--data "$4"} "$BASE$2?api-version=7.5"
}
ADMIN=$(token "$(jq -r .client_id "$W/dev.json")" "$(jq -r .client_secret "$W/dev.json")")
api PUT /opencvm/principals/bench "$ADMIN" '{}' >"$W/p.json"
OID=$(jq -r .object_id "$W/p.json")
for role in 21dbd100-6940-42c2-9190-5d6cb909625b 21dbd100-6940-42c2-9190-5d6cb909625c; do
  api PUT "/providers/Microsoft.Authorization/roleAssignments/$(cat /proc/sys/kernel/random/uuid)" "$ADMIN" \
    "{\"properties\":{\"roleDefinitionId\":\"$role\",\"principalId\":\"$OID\"}}" >/dev/null
done
TOK=$(token "$(jq -r .client_id "$W/p.json")" "$(jq -r .client_secret "$W/p.json")")
echo "$TOK" >"$W/token"

# (a) release
NREL=${CVM_BENCH_RELEASES:-4000}
node "$HERE/bench-authority.mjs" "$W" "$NREL" &
PIDS+=($!)
for _ in $(seq 600); do [[ -f $W/authority.ready ]] && break; sleep 0.1; done
POLICY=$(basenc --base64url -w0 <"$W/policy.json" | tr -d '=')
api POST /keys/bench-rel/create "$TOK" \
  "{\"kty\":\"RSA-HSM\",\"key_size\":2048,\"attributes\":{\"exportable\":true},\"release_policy\":{\"data\":\"$POLICY\"}}" >/dev/null
# warm the authority's JWKS cache with one release
head -1 "$W/release-bodies.txt" >"$W/warm.txt"
tail -n +2 "$W/release-bodies.txt" >"$W/bodies.txt"
"$LOAD" "$BASE/keys/bench-rel/release?api-version=7.5" "$W/warm.txt" "$W/token" "$CA" 1 5 >/dev/null
rel=$("$LOAD" "$BASE/keys/bench-rel/release?api-version=7.5" "$W/bodies.txt" "$W/token" "$CA" "$THREADS" "$SECS")
echo "opencvm_release: $rel"
rel_rps=$(sed -n 's/.*rps=//p' <<<"$rel")
sign=$(openssl speed -seconds 3 -multi "$CORES" rsa2048 2>/dev/null | awk '/^rsa 2048 bits/ {print $6}')
echo "openssl_speed_rsa2048_sign_per_s_x$CORES=$sign"

# (b) GET /keys/{name} vs nginx, both with wrk
api POST /keys/bench-get/create "$TOK" '{"kty":"EC","crv":"P-256"}' >/dev/null
WRK_C=$((CORES * 32))
get=$(wrk -t "$CORES" -c "$WRK_C" -d "${SECS}s" -H "Authorization: Bearer $TOK" \
  "$BASE/keys/bench-get?api-version=7.5" | tee "$W/wrk-get.txt" | awk '/^Requests\/sec/ {print $2}')
non2xx=$(awk '/Non-2xx/ {print $NF}' "$W/wrk-get.txt")
echo "opencvm_get_key_rps=$get non2xx=${non2xx:-0}"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -keyout "$W/ng.key" -out "$W/ng.crt" 2>/dev/null
NG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$W/ng"
cat >"$W/ng/nginx.conf" <<CONF
worker_processes $CORES;
pid $W/ng/nginx.pid;
error_log $W/ng/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $W/ng/body; proxy_temp_path $W/ng/proxy; fastcgi_temp_path $W/ng/fcgi;
  uwsgi_temp_path $W/ng/uwsgi; scgi_temp_path $W/ng/scgi;
  server {
    listen 127.0.0.1:$NG_PORT ssl;
    ssl_certificate $W/ng.crt; ssl_certificate_key $W/ng.key;
    keepalive_requests 1000000;
    location / { default_type application/json; return 200 '{"ok":true}'; }
  }
}
CONF
nginx -p "$W/ng" -c "$W/ng/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
for _ in $(seq 50); do curl -sk "https://127.0.0.1:$NG_PORT/" >/dev/null && break; sleep 0.1; done
ng=$(wrk -t "$CORES" -c "$WRK_C" -d "${SECS}s" "https://127.0.0.1:$NG_PORT/" | awk '/^Requests\/sec/ {print $2}')
echo "nginx_static_200_rps=$ng"

# (c) unwrapkey vs SoftHSM2
api POST /keys/bench-rsa/create "$TOK" '{"kty":"RSA-HSM","key_size":2048}' >"$W/rsa.json"
VER=$(jq -r .key.kid "$W/rsa.json" | sed 's#.*/##')
CEK=$(head -c 32 /dev/urandom | basenc --base64url -w0 | tr -d '=')
WRAPPED=$(api POST "/keys/bench-rsa/$VER/wrapkey" "$TOK" "{\"alg\":\"RSA-OAEP-256\",\"value\":\"$CEK\"}" | jq -r .value)
echo "{\"alg\":\"RSA-OAEP-256\",\"value\":\"$WRAPPED\"}" >"$W/unwrap.txt"
unw=$("$LOAD" "$BASE/keys/bench-rsa/$VER/unwrapkey?api-version=7.5" "cycle:$W/unwrap.txt" "$W/token" "$CA" "$THREADS" "$SECS")
echo "opencvm_unwrapkey_rsa_oaep_256: $unw"
unw_rps=$(sed -n 's/.*rps=//p' <<<"$unw")
mkdir -p "$W/softhsm/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$W/softhsm/tokens" >"$W/softhsm/softhsm2.conf"
export SOFTHSM2_CONF=$W/softhsm/softhsm2.conf
softhsm2-util --init-token --free --label bench --pin 1234 --so-pin 123456 >/dev/null
sh=$("$SOFTHSM_BENCH" /usr/lib/softhsm/libsofthsm2.so bench 1234 "$CORES" "$SECS")
echo "softhsm2_c_decrypt_rsa2048_oaep_x$CORES: $sh"
sh_ops=$(sed -n 's/.*ops=//p' <<<"$sh")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }
echo "ratio=$(ratio "$rel_rps" "$sign") release_per_s/openssl_rsa2048_sign_per_s (goal >= 0.7)"
echo "ratio=$(ratio "$get" "$ng") get_key_rps/nginx_static_rps (goal >= 0.3)"
echo "ratio=$(ratio "$unw_rps" "$sh_ops") unwrapkey_rps/softhsm2_decrypt_per_s (goal >= 0.8)"
