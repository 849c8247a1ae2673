#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Cutover of a server replicated from a running QEMU VM: a validation failure rolls back (the
# source runs again, the endpoint stays, phase rolled-back, audited with the reason); the
# retry freezes the source, ships the last writes, validates the replica (readiness verdict +
# a validator comparing it with the frozen source), moves the endpoint to the target,
# decommissions the source and reports the downtime. A server that is not cutover-ready is
# refused before anything is touched.
set -uo pipefail
BUILD=${CVM_BUILD_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/build}
SRC=${CVM_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
CVM=$BUILD/cvm
command -v qemu-system-x86_64 >/dev/null || { echo "0 passed, 0 failed (skipped: no qemu-system-x86_64)"; exit 77; }
TMP=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
pass=0 fail=0
check() {
  local name=$1; shift
  if "$@" >/dev/null 2>&1; then pass=$((pass + 1)); echo "ok - $name"
  else fail=$((fail + 1)); echo "not ok - $name"; fi
}
finish() { echo "$pass passed, $fail failed"; [[ $fail -eq 0 ]]; exit $?; }
is() { [[ $1 == "$2" ]]; }
cd "$TMP"
"$SRC/scripts/build-test-images" img >/dev/null 2>&1
cp --sparse=always img/gpt-uefi.img vm.img

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -days 2 -subj /CN=cut-ca 2>/dev/null
for n in target source; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $n.key -out $n.csr \
    -subj /CN=$n.test 2>/dev/null
  printf 'subjectAltName=DNS:%s.test\n' $n >$n.ext
  openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem -days 2 \
    -extfile $n.ext 2>/dev/null
done
cat >qmp.py <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rw')
def cmd(c, **a):
    f.write(json.dumps({"execute": c, "arguments": a} if a else {"execute": c}) + "\n"); f.flush()
    while True:
        l = json.loads(f.readline())
        if 'return' in l or 'error' in l:
            return l
f.readline(); cmd("qmp_capabilities")
if sys.argv[2] == 'write':   # blocks in the unpartitioned space after the root partition
    for k in range(int(sys.argv[3])):
        cmd("human-monitor-command", **{"command-line": 'qemu-io disk0 "write -P %d %d 64k"' % (int(sys.argv[4]) + k, (200 << 20) + k * 3 * 65536)})
    cmd("human-monitor-command", **{"command-line": "qemu-io disk0 flush"})
elif sys.argv[2] == 'status':
    print(cmd("query-status")["return"]["status"])
PY
qemu-system-x86_64 -M none -nodefaults -display none -qmp unix:q.qmp,server=on,wait=off \
  -blockdev driver=file,filename=vm.img,node-name=f0 -blockdev driver=raw,file=f0,node-name=disk0 \
  >/dev/null 2>&1 &
vpid=$!
pids+=("$vpid")
for _ in $(seq 100); do [[ -S q.qmp ]] && break; sleep 0.05; done
"$CVM" migrate replicate serve --target replica.img --state replica.state --listen 127.0.0.1:0 \
  --ready-file port --cert target.pem --key target.key --ca ca.pem --peer-name source.test 2>/dev/null &
pids+=("$!")
for _ in $(seq 100); do [[ -s port ]] && break; sleep 0.05; done
S=(--state-dir "$TMP/state")
mkdir -p state
m() { "$CVM" migrate "$@" "${S[@]}"; }
REPL=(--qmp q.qmp --node disk0 --state src.state --connect "127.0.0.1:$(cat port)" --cert source.pem
      --key source.key --ca ca.pem --peer-name target.test --replica replica.img)
echo '{"web": "192.0.2.10", "db": "192.0.2.11"}' >endpoints.json
printf '#!/bin/sh\ncmp -s "%s/vm.img" "$1"\n' "$TMP" >same-as-source
chmod +x same-as-source

check "project and server" bash -c "'$CVM' migrate project create p ${S[*]} && '$CVM' migrate server add p web --image '$TMP/vm.img' ${S[*]}"
check "assess: ready" bash -c "'$CVM' --json migrate server assess p web ${S[*]} | jq -e '.verdict == \"ready\"'"
check "replicating" m server set-phase p web replicating
check "initial copy from the running VM" bash -c "'$CVM' migrate replicate send ${REPL[*]:0:14} >/dev/null"

"$CVM" migrate cutover p web "${REPL[@]}" "${S[@]}" >out 2>&1; rc=$?
check "cutover before cutover-ready is refused (exit 1)" is $rc 1
check "... and the source was not paused" is "$(python3 qmp.py q.qmp status)" running
check "test-migrated" m server set-phase p web test-migrated --reason "replica checked"
check "cutover-ready" m server set-phase p web cutover-ready

check "guest writes 5 blocks" python3 qmp.py q.qmp write 5 10
"$CVM" --json migrate cutover p web "${REPL[@]}" --validator /bin/false --endpoints endpoints.json \
  --name web --target-addr 198.51.100.7 "${S[@]}" >rb.json 2>rb.err; rc=$?
check "failed validation: exit 1" is $rc 1
check "... rolled back" jq -e '.rolled_back == true and .cut_over == false' rb.json
check "... the reason names the validator" jq -e '.reason | test("validator /bin/false rejected")' rb.json
check "... the source VM runs again" is "$(python3 qmp.py q.qmp status)" running
check "... the endpoint did not move" is "$(jq -r .web endpoints.json)" 192.0.2.10
check "... phase rolled-back" is "$("$CVM" --json migrate server show p web "${S[@]}" | jq -r .phase)" rolled-back
check "... the final sync had shipped the 5 writes" jq -e '.final_sync_blocks == 5' rb.json

check "back to replicating, test-migrated, cutover-ready" bash -c \
  "for p in replicating test-migrated cutover-ready; do '$CVM' migrate server set-phase p web \$p ${S[*]} || exit 1; done"

# The target confidential VM must pass vm validate's checks: one that never booted (no
# attestation of a current boot, no vTPM, no encrypted OS disk) makes the cutover roll back.
check "target VM object (never started)" "$CVM" vm create tvm --size Standard_DC2as_v5 --tee emulated \
  --os-disk tvm-os --des des1 "${S[@]}"
"$CVM" --json migrate cutover p web "${REPL[@]}" --validator "$TMP/same-as-source" --target-vm tvm \
  --reference-measurement "$(printf 'ab%.0s' {1..48})" --endpoints endpoints.json --name web \
  --target-addr 198.51.100.7 "${S[@]}" >tv.json 2>tv.err; rc=$?
check "target VM fails validation: exit 1, rolled back" bash -c \
  "[ $rc -eq 1 ] && jq -e '.rolled_back == true and .cut_over == false' tv.json >/dev/null"
check "... the reason names the VM and its failed checks" jq -e \
  '.reason | test("target VM tvm failed validation: .*attestation \\(not running.*bootIntegrity")' tv.json
check "... the source VM runs again, the endpoint did not move" bash -c \
  "[ \"\$(python3 qmp.py q.qmp status)\" = running ] && [ \"\$(jq -r .web endpoints.json)\" = 192.0.2.10 ]"
check "back to cutover-ready again" bash -c \
  "for p in replicating test-migrated cutover-ready; do '$CVM' migrate server set-phase p web \$p ${S[*]} || exit 1; done"
check "guest writes 3 more blocks" python3 qmp.py q.qmp write 3 40
"$CVM" --json migrate cutover p web "${REPL[@]}" --validator "$TMP/same-as-source" \
  --endpoints endpoints.json --name web --target-addr 198.51.100.7 "${S[@]}" >co.json 2>co.err; rc=$?
check "cutover succeeds (exit 0)" is $rc 0
check "... cut over with a downtime figure" jq -e '.cut_over == true and .downtime_ms > 0 and .downtime_ms >= .final_sync_ms' co.json
check "... the final sync shipped the 3 writes" jq -e '.final_sync_blocks == 3' co.json
check "... the endpoint moved to the target" is "$(jq -r .web endpoints.json)" 198.51.100.7
check "... other endpoints untouched" is "$(jq -r .db endpoints.json)" 192.0.2.11
check "... the replica equals the source disk" cmp vm.img replica.img
wait "$vpid" 2>/dev/null
check "... the source VM was stopped (decommissioned)" bash -c "! kill -0 $vpid"
check "... phase decommissioned" is "$("$CVM" --json migrate server show p web "${S[@]}" | jq -r .phase)" decommissioned
check "audit chain verifies" "$CVM" audit verify "${S[@]}"
"$CVM" audit export "${S[@]}" >audit.jsonl
check "audit: the rollback and its reason" grep -q 'rollback after [0-9]* ms of downtime: validator' audit.jsonl
check "audit: the cutover with its downtime" grep -q 'downtime [0-9]* ms (freeze' audit.jsonl
finish
