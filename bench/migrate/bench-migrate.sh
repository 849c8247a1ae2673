#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Replication beside its anchors, same run, same files:
#  (a) initial copy of the image (cvm migrate replicate over loopback TLS) vs `dd bs=4M` and
#      `cp` of the same image: ratio = our time / their time
#  (b) a 1 % scattered change: cvm delta pass vs `rsync --inplace --no-whole-file` of the same
#      change (time and bytes; goal <= 1.0x time, <= 1.05x changed bytes)
# Usage: bench-migrate.sh /path/to/cvm [size_MiB (default 1024)] [dir (default /tmp)]
set -eu
CVM=${1:?usage: bench-migrate.sh /path/to/cvm [size_MiB] [dir]}
MIB=${2:-1024}
DIR=${3:-/tmp}
W=$(mktemp -d "$DIR/cvm-bench-migrate.XXXXXX")
spid=
trap '[[ -n $spid ]] && kill $spid 2>/dev/null; rm -rf "$W"' EXIT
cd "$W"
now() { date +%s%N; }
secs() { awk -v ns="$1" 'BEGIN {printf "%.3f", ns / 1e9}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -days 1 -subj /CN=bench-ca 2>/dev/null
for n in target source; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $n.key -out $n.csr \
    -subj /CN=$n.bench 2>/dev/null
  printf 'subjectAltName=DNS:%s.bench\n' $n >$n.ext
  openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem -days 1 \
    -extfile $n.ext 2>/dev/null
done
# Incompressible data: the worst case for us (zstd gains nothing), the usual one for rsync.
openssl enc -aes-128-ctr -pass pass:bench -nosalt -pbkdf2 \
  -in <(head -c $((MIB * 1024 * 1024)) /dev/zero) -out src.img 2>/dev/null
sync
echo "image_MiB=$MIB dir=$DIR cores=$(nproc) loadavg_before=$(cut -d' ' -f1 /proc/loadavg)"

"$CVM" migrate replicate serve --target tgt.img --state tgt.state --listen 127.0.0.1:0 \
  --ready-file port --cert target.pem --key target.key --ca ca.pem --peer-name source.bench 2>/dev/null &
spid=$!
for _ in $(seq 100); do [[ -s port ]] && break; sleep 0.05; done
send() {
  "$CVM" --json migrate replicate send --image src.img --state src.state \
    --connect "127.0.0.1:$(cat port)" --cert source.pem --key source.key --ca ca.pem \
    --peer-name target.bench
}

# (a) initial copy
t0=$(now); send >init.json; t_init=$(( $(now) - t0 ))
t0=$(now); dd if=src.img of=dd.img bs=4M status=none conv=fsync; t_dd=$(( $(now) - t0 ))
t0=$(now); cp src.img cp.img; sync cp.img; t_cp=$(( $(now) - t0 ))
cmp src.img tgt.img
echo "initial_cvm_s=$(secs $t_init) initial_dd_s=$(secs $t_dd) initial_cp_s=$(secs $t_cp)"
echo "initial_cvm_MBps=$(awk -v b=$((MIB * 1048576)) -v ns=$t_init 'BEGIN{printf "%.0f", b/1e6/(ns/1e9)}')"
echo "ratio=$(ratio $t_init $t_dd) (initial copy time, cvm / dd bs=4M)"
echo "ratio=$(ratio $t_init $t_cp) (initial copy time, cvm / cp)"
rm -f cp.img
mv dd.img rsync.img # rsync's target starts where ours does

# (b) 1 % of the 64 KiB blocks, scattered
python3 - "$MIB" <<'PY'
import random, sys
n = int(sys.argv[1]) * 16
idx = random.Random(1).sample(range(n), n // 100)
rnd = random.Random(2)
with open('src.img', 'r+b') as f:
    for i in idx:
        f.seek(i * 65536)
        f.write(rnd.randbytes(65536))
open('changed', 'w').write(str(len(idx) * 65536))
PY
sync
changed=$(cat changed)
t0=$(now); send >delta.json; t_delta=$(( $(now) - t0 ))
wire=$(jq -r .bytes_wire delta.json)
t0=$(now); rsync --inplace --no-whole-file --stats src.img rsync.img >rsync.txt; t_rsync=$(( $(now) - t0 ))
rs_sent=$(sed -n 's/^Total bytes sent: \([0-9,]*\).*/\1/p' rsync.txt | tr -d ,)
rs_recv=$(sed -n 's/^Total bytes received: \([0-9,]*\).*/\1/p' rsync.txt | tr -d ,)
rs_bytes=$((rs_sent + rs_recv))
cmp src.img tgt.img
cmp src.img rsync.img
echo "changed_bytes=$changed delta_cvm_wire_bytes=$wire delta_rsync_bytes=$rs_bytes"
echo "delta_cvm_s=$(secs $t_delta) delta_rsync_s=$(secs $t_rsync)"
echo "ratio=$(ratio $t_delta $t_rsync) (delta time, cvm / rsync --inplace --no-whole-file; goal <= 1.0)"
echo "ratio=$(ratio $wire $changed) (delta bytes on the wire incl. TLS, cvm / changed; goal <= 1.05)"
echo "ratio=$(ratio $rs_bytes $changed) (delta bytes, rsync / changed)"
