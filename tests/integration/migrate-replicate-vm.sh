#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Agentless replication from a running QEMU: the first pass reads the whole disk over NBD,
# later passes read only the blocks QEMU's dirty bitmap marks (guest writes made through the
# block layer with qemu-io), a failed pass loses no change (the bitmap is folded back), a VM
# restart (bitmaps lost) falls back to a full read that still sends nothing unchanged, and the
# target ends byte-identical to the VM's disk.
set -uo pipefail
BUILD=${CVM_BUILD_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/build}
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

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -days 2 -subj /CN=vm-ca 2>/dev/null
for n in target source; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $n.key -out $n.csr \
    -subj /CN=$n.test 2>/dev/null
  printf 'subjectAltName=DNS:%s.test\n' $n >$n.ext
  openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem -days 2 \
    -extfile $n.ext 2>/dev/null
done
SIZE=$((256 << 20)) NB=4096
openssl enc -aes-128-ctr -pass pass:vm -nosalt -pbkdf2 -in <(head -c 192M /dev/zero) -out vm.img 2>/dev/null
truncate -s $SIZE vm.img

cat >qmp.py <<'PY'
import json, random, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rw')
def cmd(c, **a):
    f.write(json.dumps({"execute": c, "arguments": a} if a else {"execute": c}) + "\n"); f.flush()
    while True:
        l = json.loads(f.readline())
        if 'return' in l or 'error' in l:
            return l
f.readline(); cmd("qmp_capabilities")
if sys.argv[2] == 'write':   # N distinct 64 KiB blocks, contents that differ from before
    n, seed = int(sys.argv[3]), int(sys.argv[4])
    r = random.Random(seed)
    for i in r.sample(range(%d // 65536), n):
        res = cmd("human-monitor-command", **{"command-line": 'qemu-io disk0 "write -P %%d %%d 64k"' %% (seed %% 250 + 1, i * 65536)})
        assert 'error' not in res, res
    cmd("human-monitor-command", **{"command-line": "qemu-io disk0 flush"})
else:
    cmd("quit")
PY
sed -i "s/%d \/\/ 65536/$SIZE \/\/ 65536/; s/%%/%/g" qmp.py

vm() {
  rm -f q.qmp
  qemu-system-x86_64 -M none -nodefaults -display none -qmp unix:q.qmp,server=on,wait=off \
    -blockdev driver=file,filename=vm.img,node-name=f0 -blockdev driver=raw,file=f0,node-name=disk0 \
    >/dev/null 2>&1 &
  vpid=$!
  pids+=("$vpid")
  for _ in $(seq 100); do [[ -S q.qmp ]] && break; sleep 0.05; done
}
rm -f port
"$CVM" migrate replicate serve --target tgt.img --state tgt.state --listen 127.0.0.1:0 --ready-file port \
  --cert target.pem --key target.key --ca ca.pem --peer-name source.test 2>serve.log &
pids+=("$!")
for _ in $(seq 100); do [[ -s port ]] && break; sleep 0.05; done
send() {
  "$CVM" --json migrate replicate send --qmp q.qmp --node disk0 --state src.state \
    --connect "127.0.0.1:${1:-$(cat port)}" --cert source.pem --key source.key --ca ca.pem --peer-name target.test
}
val() { jq -r ".$1" "$2"; }

vm
check "first pass from the running VM" bash -c "$(declare -f send); CVM='$CVM'; send > p1.json"
check "first pass reads the whole disk over NBD" is "$(val blocks_read p1.json)" $NB
check "... with no bitmap to narrow it" is "$(val dirty_bitmap p1.json)" false
check "... and skips the 1024 zero blocks" is "$(val blocks_zero_skipped p1.json)" 1024

check "guest writes 40 scattered blocks" python3 qmp.py q.qmp write 40 7
check "second pass" bash -c "$(declare -f send); CVM='$CVM'; send > p2.json"
check "... narrowed by the dirty bitmap" is "$(val dirty_bitmap p2.json)" true
check "... reads only the 40 dirty blocks" is "$(val blocks_read p2.json)" 40
check "... and sends them" is "$(val blocks_sent p2.json)" 40

check "an idle VM: next pass reads nothing" bash -c "$(declare -f send); CVM='$CVM'; send | jq -e '.blocks_read == 0 and .blocks_sent == 0'"

check "guest writes 25 more blocks" python3 qmp.py q.qmp write 25 9
send 1 >/dev/null 2>&1; rc=$?
check "a pass that cannot reach the target fails (exit 3, cannot connect)" is $rc 3
check "the next pass still has all 25 changes (bitmap folded back)" bash -c \
  "$(declare -f send); CVM='$CVM'; send | jq -e '.blocks_read == 25 and .blocks_sent == 25'"

check "VM shuts down" python3 qmp.py q.qmp quit
wait "$vpid" 2>/dev/null
check "target equals the VM's disk" cmp vm.img tgt.img

vm
check "after a VM restart (bitmap gone) the pass reads everything" bash -c \
  "$(declare -f send); CVM='$CVM'; send | jq -e '.dirty_bitmap == false and .blocks_read == $NB and .blocks_sent == 0'"
check "VM shuts down again" python3 qmp.py q.qmp quit
wait "$vpid" 2>/dev/null
check "target still equals the VM's disk" cmp vm.img tgt.img
finish
