#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Attestation + key release round trip of a booting confidential VM, minus QEMU (see
# bench-vm-release.c), N times against a running cvmd --dev set up as
# tests/integration/vm-boot.sh does, beside its anchor in the same run: an HTTPS POST of the
# attest body's size to nginx (static 200, fresh TLS connection per request, same client code),
# interleaved one for one with the round trips. Prints p50/p90/p99/max/mean, the per-phase split
# and ratio= p50(round trip) / p50(HTTPS POST). State lives on disk (/var/tmp): every audit
# record and VM state change is a real fsync.
# Usage: bench-vm-release.sh CVMD CVM BENCH_VM_RELEASE [N (default 1000)] [warmup (default 10)]
set -eu
CVMD=${1:?usage: bench-vm-release.sh CVMD CVM BENCH_VM_RELEASE [N] [warmup]}
CVM=${2:?}
BENCH=${3:?}
N=${4:-1000}
WARMUP=${5:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d "${CVM_BENCH_DIR:-/var/tmp}/cvm-bench-vm-release.XXXXXX")
source "$HERE/lib-bench-vm.sh"
echo "cores=$(nproc) round_trips=$N warmup=$WARMUP start=$(date -u +%FT%TZ) load1=$(load1)"

start_cvmd
MEAS=$(head -c 48 /dev/urandom | od -An -tx1 -v | tr -d ' \n')
setup_des_key "$MEAS"
wrap_disk_secret
shred -u "$W/secret"
"$CVM" vm create vm1 --size Standard_DC2as_v5 --tee emulated --os-disk osdisk --des des1 >/dev/null

# nginx: TLS, static 200 (the approach of bench/hsm/bench-hsm.sh).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$W/ng.key" -out "$W/ng.crt" 2>/dev/null
NG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$W/ng"
cat >"$W/ng/nginx.conf" <<CONF
worker_processes 1;
pid $W/ng/nginx.pid;
error_log $W/ng/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $W/ng/body; proxy_temp_path $W/ng/proxy; fastcgi_temp_path $W/ng/fcgi;
  uwsgi_temp_path $W/ng/uwsgi; scgi_temp_path $W/ng/scgi;
  client_max_body_size 1m;
  client_body_buffer_size 1m;
  server {
    listen 127.0.0.1:$NG_PORT ssl;
    ssl_certificate $W/ng.crt; ssl_certificate_key $W/ng.key;
    location / { default_type application/json; return 200 '{"ok":true}'; }
  }
}
CONF
nginx -p "$W/ng" -c "$W/ng/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
for _ in $(seq 50); do curl -s --cacert "$W/ng.crt" "https://127.0.0.1:$NG_PORT/" >/dev/null && break; sleep 0.1; done

"$BENCH" --emulator-dir "$EMU" --url "$BASE" --tenant "$TENANT" --client-id "$CVO" \
  --client-secret-file "$W/cvo.secret" --ca-cert "$CA" --kid "$KID" --store "$CVM_STORE" --vm vm1 \
  --measurement "$MEAS" --wrapped-file "$W/wrapped.b64u" --secret-sha256 "$SECRET_SHA256" \
  --anchor-url "https://127.0.0.1:$NG_PORT/" --anchor-ca "$W/ng.crt" --n "$N" --warmup "$WARMUP"
echo "releases_audited_ok=$(sqlite3 "$W/cvmd/cvmd.db" "select count(*) from cvm_audit where operation='vms/release' and result='ok'")"
echo "end=$(date -u +%FT%TZ) load1=$(load1)"
