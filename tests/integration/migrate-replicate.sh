#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# cvm migrate replicate over loopback TLS with mutual authentication: initial copy of a 1 GiB
# image, a 1 % scattered change moves at most 1.05x the changed bytes, kill -9 of the source and
# of the target mid-transfer both resume from the checkpoint (not from zero), and the target
# ends byte-identical to the source. Refusals: a certificate from another CA, a wrong peer
# name, a source of another size.
set -uo pipefail
BUILD=${CVM_BUILD_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/build}
CVM=$BUILD/cvm
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

mkca() { # DIR: a CA with target.test and source.test certificates
  mkdir -p "$1"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1/ca.key" \
    -out "$1/ca.pem" -days 2 -subj "/CN=$1-ca" 2>/dev/null
  for n in target source; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1/$n.key" \
      -out "$1/$n.csr" -subj "/CN=$n.test" 2>/dev/null
    printf 'subjectAltName=DNS:%s.test\n' $n >"$1/$n.ext"
    openssl x509 -req -in "$1/$n.csr" -CA "$1/ca.pem" -CAkey "$1/ca.key" -CAcreateserial \
      -out "$1/$n.pem" -days 2 -extfile "$1/$n.ext" 2>/dev/null
  done
}
mkca pki
mkca other
TLS_T=(--cert pki/target.pem --key pki/target.key --ca pki/ca.pem --peer-name source.test)
TLS_S=(--cert pki/source.pem --key pki/source.key --ca pki/ca.pem --peer-name target.test)

BS=65536 NB=16384
# 1 GiB: 768 MiB pseudorandom data, then a 256 MiB hole (sparse, as real disks have).
openssl enc -aes-128-ctr -pass pass:cvm -nosalt -pbkdf2 -in <(head -c 768M /dev/zero) -out src.img 2>/dev/null
truncate -s 1G src.img
check "source image is 1 GiB" is "$(stat -c %s src.img)" 1073741824

serve() { # TARGET STATE: background target, waits until it listens; sets $port and $spid
  rm -f port
  "$CVM" migrate replicate serve --target "$1" --state "$2" --listen 127.0.0.1:0 \
    --ready-file port "${TLS_T[@]}" 2>>serve.log &
  spid=$!
  pids+=("$spid")
  for _ in $(seq 100); do [[ -s port ]] && break; sleep 0.05; done
  port=$(cat port)
}
send() { # STATE [extra args]: one pass, JSON stats on stdout
  local st=$1; shift
  "$CVM" --json migrate replicate send --image src.img --state "$st" --connect "127.0.0.1:$port" "${TLS_S[@]}" "$@"
}
stop() { kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null; }
val() { jq -r ".$1" "$2"; }

# ---- initial copy and the 1 % delta ----
serve tgt.img tgt.state
check "initial copy succeeds" bash -c "$(declare -f send); CVM='$CVM' port=$port; TLS_S=(${TLS_S[*]}); send src.state > init.json"
check "initial copy: target equals source" cmp src.img tgt.img
check "initial copy: new states, hashes fetched from the target" is "$(val manifest_fetched init.json)" true
check "initial copy: the hole was not sent (4096 zero blocks skipped)" test "$(val blocks_zero_skipped init.json)" -ge 4096
check "initial copy: pass 1" is "$(val pass init.json)" 1

python3 - <<'PY'
import random
r = random.Random(1)
idx = r.sample(range(16384), 164)   # 1 % of the 64 KiB blocks, scattered
rnd = random.Random(2)
with open('src.img', 'r+b') as f:
    for i in idx:
        f.seek(i * 65536)
        f.write(rnd.randbytes(65536))
open('changed', 'w').write(str(len(idx) * 65536))
PY
changed=$(cat changed)
check "delta pass succeeds" bash -c "$(declare -f send); CVM='$CVM' port=$port; TLS_S=(${TLS_S[*]}); send src.state > delta.json"
check "delta: exactly the 164 changed blocks sent" is "$(val blocks_sent delta.json)" 164
check "delta: no manifest fetch (states agree)" is "$(val manifest_fetched delta.json)" false
wire=$(val bytes_wire delta.json)
echo "# delta: changed=$changed wire=$wire ratio=$(awk -v a=$wire -v b=$changed 'BEGIN{printf "%.4f", a/b}')"
check "delta: bytes on the wire <= 1.05 x changed bytes" awk -v a="$wire" -v b="$changed" 'BEGIN{exit !(a <= 1.05 * b && a > 0)}'
check "delta: target equals source" cmp src.img tgt.img
check "an unchanged source sends nothing" bash -c "$(declare -f send); CVM='$CVM' port=$port; TLS_S=(${TLS_S[*]}); send src.state | jq -e '.blocks_sent == 0'"
check "status shows 3 passes on the target" bash -c "'$CVM' --json migrate replicate status --state tgt.state | jq -e '.passes == 3 and .role == \"target\"'"
stop

# ---- kill -9 of the source mid-transfer ----
wait_cursor() { # STATE: until the target has checkpointed something
  for _ in $(seq 600); do
    c=$("$CVM" --json migrate replicate status --state "$1" 2>/dev/null | jq -r .cursor)
    [[ -n $c && $c != null && $c -gt 0 ]] && return 0
    sleep 0.05
  done
  return 1
}
serve k1.img k1.state
"$CVM" migrate replicate send --image src.img --state ks1.state --connect "127.0.0.1:$port" "${TLS_S[@]}" >/dev/null 2>&1 &
cpid=$!
pids+=("$cpid")
check "source: target checkpointed during the first pass" wait_cursor k1.state
kill -9 "$cpid"; wait "$cpid" 2>/dev/null
cur=$("$CVM" --json migrate replicate status --state k1.state | jq -r .cursor)
check "source killed mid-pass (cursor $cur of $NB)" test "$cur" -lt "$NB"
check "resume after kill -9 of the source" bash -c "$(declare -f send); CVM='$CVM' port=$port; TLS_S=(${TLS_S[*]}); send ks1.state > r1.json"
check "... resumed from a checkpoint, not from zero" test "$(val resumed_from r1.json)" -gt 0
check "... sent fewer blocks than a full copy" test "$(val blocks_sent r1.json)" -lt $((NB - 4096))
check "... target equals source" cmp src.img k1.img
stop

# ---- kill -9 of the target mid-transfer ----
serve k2.img k2.state
"$CVM" migrate replicate send --image src.img --state ks2.state --connect "127.0.0.1:$port" "${TLS_S[@]}" >/dev/null 2>&1 &
cpid=$!
pids+=("$cpid")
check "target: checkpointed during the first pass" wait_cursor k2.state
# Kill the target while it holds written-but-unsynced blocks: freeze it, look, and
# thaw and retry if the freeze landed just after a SYNC emptied the list.
stop_with_inflight() {
  for _ in $(seq 200); do
    kill -STOP "$spid"
    [[ -s k2.state.inflight ]] && return 0
    kill -CONT "$spid"; sleep 0.01
  done
  return 1
}
check "target frozen with unacknowledged blocks" stop_with_inflight
kill -9 "$spid"; wait "$spid" 2>/dev/null
wait "$cpid"; rc=$?
check "the source fails when the target dies (exit 1)" is $rc 1
serve k2.img k2.state
check "the killed target left its unacknowledged blocks listed" test -s k2.state.inflight
check "resume after kill -9 of the target" bash -c "$(declare -f send); CVM='$CVM' port=$port; TLS_S=(${TLS_S[*]}); send ks2.state > r2.json"
check "... resumed from a checkpoint, not from zero" test "$(val resumed_from r2.json)" -gt 0
check "... after fetching the target's hashes (stale)" is "$(val manifest_fetched r2.json)" true
check "... and the target is no longer stale" bash -c \
  "'$CVM' --json migrate replicate status --state k2.state | jq -e '.stale == false'"
check "... target equals source" cmp src.img k2.img

# ---- refusals ----
"$CVM" migrate replicate send --image src.img --state x.state --connect "127.0.0.1:$port" \
  --cert other/source.pem --key other/source.key --ca pki/ca.pem --peer-name target.test >/dev/null 2>&1; rc=$?
check "source certificate from another CA is refused" is $rc 1
"$CVM" migrate replicate send --image src.img --state x.state --connect "127.0.0.1:$port" \
  --cert pki/source.pem --key pki/source.key --ca pki/ca.pem --peer-name other.test >/dev/null 2>&1; rc=$?
check "target without the expected name is refused (exit 3: peer not authenticated)" is $rc 3
"$CVM" migrate replicate send --image src.img --state x.state --connect "127.0.0.1:$port" \
  --cert pki/source.pem --key pki/source.key --ca other/ca.pem --peer-name target.test >/dev/null 2>&1; rc=$?
check "target certificate not from our CA is refused (exit 3)" is $rc 3
truncate -s 512M small.img
"$CVM" migrate replicate send --image small.img --state y.state --connect "127.0.0.1:$port" "${TLS_S[@]}" >err 2>&1; rc=$?
check "a source of another size is refused" is $rc 1
check "... naming the sizes" grep -q 'is 1073741824 bytes, the source 536870912' err
check "target unchanged by the refusals" cmp src.img k2.img
"$CVM" migrate replicate send --image src.img --state z.state --connect "127.0.0.1:$port" "${TLS_S[@]}" --block-size 1000 >/dev/null 2>&1; rc=$?
check "block size not a power of two: exit 2" is $rc 2
stop
finish
