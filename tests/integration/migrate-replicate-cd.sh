#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# cvm migrate replicate straight into a confidential disk (issue 7, section 4): a confidential
# disk made by `cvm disk create` with a DES key of a real cvmd --dev; the target serve unwraps
# its secret through the key service and encrypts every block on write. A 256 MiB image
# (random data with a plaintext marker, and a zero hole that must still be written: never-
# written sectors of a confidential disk decrypt to garbage) is replicated, 1 % of its blocks
# changed and replicated again; `cvm disk decrypt` must give the source back byte for byte and
# the marker must never appear in the target file. Failure twins: an identity without the
# unwrap right is refused, a confidential disk of the wrong size is refused, --target together
# with --confidential-disk is a usage error.
source "$(dirname "$0")/lib-cvmd.sh"
CVM=$BUILD/cvm
export HOME=$TMP/home XDG_CONFIG_HOME=
mkdir -p "$HOME"
MARKER=OPENCVM-REPL-PLAINTEXT-MARKER-5d1e
spids=()
kill_serves() { for p in "${spids[@]+"${spids[@]}"}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; }
trap kill_serves EXIT

fails() { # NAME PATTERN cmd...: must exit non-zero with PATTERN in its output
  local name=$1 pat=$2; shift 2
  "$@" >"$TMP/out" 2>&1; local rc=$?
  if [[ $rc -ne 0 ]] && grep -q -- "$pat" "$TMP/out"; then ok "$name"
  else not_ok "$name (exit $rc)"; sed 's/^/    /' "$TMP/out" | tail -3; fi
}
as() { local who=$1; shift; "$CVM" --profile "$TMP/$who.profile" "$@"; }
quiet() { "$@" >/dev/null; }

fresh_store || { not_ok "create test database"; finish; exit 1; }
if [[ -n $STORE_URL ]]; then args=(--store "$STORE_URL"); else args=(--store "sqlite:$TMP/cvmd.db"); fi
check "cvmd --dev starts" start_dev "$TMP/dev.json" "$TMP/cvmd.log" "${args[@]}"
BASE=$(jq -r .base_url "$TMP/dev.json")
check "login admin profile" "$CVM" --profile "$TMP/admin.profile" login --dev-info "$TMP/dev.json"
for who in app1 desid aud; do
  as admin identity create "$who" --secret-out "$TMP/$who.secret" >/dev/null
  cid=$(as admin identity list --json | jq -r --arg n "$who" '(.value // .)[] | select(.name==$n) | .client_id')
  "$CVM" --profile "$TMP/$who.profile" login --dev-info "$TMP/dev.json" --client-id "$cid" \
    --client-secret-file "$TMP/$who.secret" >/dev/null
done
check "app1 is a Crypto User" quiet as admin role assign --role "Crypto User" --principal app1
check "aud is a Crypto Auditor (cannot unwrap)" quiet as admin role assign --role "Managed HSM Crypto Auditor" --principal aud
check "DES key" quiet as app1 key create deskey --kty RSA-HSM --size 3072
check "desid may use the DES key" quiet as admin role assign --role "Managed HSM Crypto Service Encryption User" \
  --principal desid --scope /keys/deskey
check "des create" quiet as app1 des create des1 --type customer --key "$BASE/keys/deskey" --identity desid
# image = 16 MiB header area + the 256 MiB volume the source needs
check "confidential disk for the replica" quiet as app1 disk create --name rep --size 272M --des des1 --path "$TMP/cd.img"
check "a confidential disk of the wrong size" quiet as app1 disk create --name small --size 144M --des des1 --path "$TMP/small.img"

cd "$TMP" || exit 1
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
TLS_T=(--cert pki/target.pem --key pki/target.key --ca pki/ca.pem --peer-name source.test)
TLS_S=(--cert pki/source.pem --key pki/source.key --ca pki/ca.pem --peer-name target.test)

# 256 MiB: 224 MiB pseudorandom data with the marker every 64 KiB, then a 32 MiB zero hole.
python3 - "$MARKER" <<'PY'
import random, sys
m = sys.argv[1].encode()
r = random.Random(7)
with open('src.img', 'wb') as f:
    for i in range(224 * 16):
        b = bytearray(r.randbytes(65536))
        b[100:100 + len(m)] = m
        f.write(b)
    f.truncate(256 << 20)
PY
check "source image is 256 MiB" test "$(stat -c %s src.img)" -eq $((256 << 20))
check "the source carries the plaintext marker (the scans below can fail)" grep -qaF "$MARKER" src.img

serve() { # WHO DISK STATE: background target, waits until it listens; sets $port and $spid
  rm -f port
  "$CVM" --profile "$TMP/$1.profile" migrate replicate serve --confidential-disk "$2" --state "$3" --listen 127.0.0.1:0 \
    --ready-file port "${TLS_T[@]}" 2>>serve.log &
  spid=$!
  spids+=("$spid")
  for _ in $(seq 200); do [[ -s port ]] && break; kill -0 "$spid" 2>/dev/null || break; sleep 0.05; done
  port=$(cat port 2>/dev/null)
  [[ -n $port ]]
}
send() { # STATE OUT: one pass, JSON stats in OUT
  "$CVM" --json migrate replicate send --image src.img --state "$1" --connect "127.0.0.1:$port" \
    "${TLS_S[@]}" >"$2" 2>>send.log
}
stop() { kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null; }
val() { jq -r ".$1" "$2"; }
hdr_sha() { head -c $((16 << 20)) "$1" | sha256sum | cut -d' ' -f1; }
hdr0=$(hdr_sha cd.img)

# ---- initial copy into the confidential disk ----
check "serve --confidential-disk unwraps the secret and listens" serve app1 cd.img t.state
check "initial copy succeeds" send s.state init.json
check "... every block sent, zero blocks too (the disk's holes are not zeros)" \
  test "$(val blocks_sent init.json)" -eq 4096
check "... pass 1" test "$(val pass init.json)" -eq 1
check "no plaintext marker in the target file" bash -c "! grep -qaF '$MARKER' cd.img"

python3 - <<'PY'
import random
r = random.Random(1)
idx = r.sample(range(4096), 41)   # 1 % of the 64 KiB blocks, scattered (some in the hole)
rnd = random.Random(2)
with open('src.img', 'r+b') as f:
    for i in idx:
        f.seek(i * 65536)
        b = bytearray(rnd.randbytes(65536))
        b[0:len(b'OPENCVM-REPL-PLAINTEXT-MARKER-5d1e')] = b'OPENCVM-REPL-PLAINTEXT-MARKER-5d1e'
        f.write(b)
PY
check "delta pass succeeds" send s.state delta.json
check "... exactly the 41 changed blocks sent" test "$(val blocks_sent delta.json)" -eq 41
stop
check "no plaintext marker in the target file after the delta" bash -c "! grep -qaF '$MARKER' cd.img"
check "the LUKS2 header area is untouched" test "$(hdr_sha cd.img)" = "$hdr0"
check "cvm disk verify: header valid, sampled sectors match the source" \
  quiet as app1 disk verify --name rep --source src.img --samples 256
check "cvm disk decrypt" quiet as app1 disk decrypt --name rep --out plain.img
check "decrypted replica equals the source byte for byte" cmp src.img plain.img
rm -f plain.img

# ---- kill -9 of a confidential-disk target mid-pass, then resume ----
check "second confidential disk" quiet as app1 disk create --name rep2 --size 272M --des des1 --path "$TMP/cd2.img"
wait_cursor() { # STATE: until the target has checkpointed something
  for _ in $(seq 600); do
    c=$("$CVM" --json migrate replicate status --state "$1" 2>/dev/null | jq -r .cursor)
    [[ -n $c && $c != null && $c -gt 0 ]] && return 0
    sleep 0.02
  done
  return 1
}
check "serve into the second disk" serve app1 cd2.img t2.state
"$CVM" migrate replicate send --image src.img --state s2.state --connect "127.0.0.1:$port" \
  "${TLS_S[@]}" >/dev/null 2>&1 &
cpid=$!
check "target checkpointed during the first pass" wait_cursor t2.state
kill -9 "$spid"; wait "$spid" 2>/dev/null
wait "$cpid" 2>/dev/null
echo "# killed at cursor $("$CVM" --json migrate replicate status --state t2.state | jq -r .cursor) of 4096"
check "target restarts on the same disk" serve app1 cd2.img t2.state
check "resume after kill -9 of the target" send s2.state r2.json
echo "# resumed from block $(val resumed_from r2.json), sent $(val blocks_sent r2.json)"
stop
check "no plaintext marker in the resumed target" bash -c "! grep -qaF '$MARKER' cd2.img"
check "cvm disk decrypt of the resumed replica" quiet as app1 disk decrypt --name rep2 --out plain2.img
check "... equals the source byte for byte" cmp src.img plain2.img
rm -f plain2.img

# ---- failure twins ----
fails "serve refused for an identity that may not unwrap with the DES key" "Forbidden" \
  as aud migrate replicate serve --confidential-disk cd.img --state a.state --listen 127.0.0.1:0 --ready-file a.port "${TLS_T[@]}"
check "... and it never listened" test ! -e a.port
small0=$(sha256sum small.img | cut -d' ' -f1)
check "serve into a 128 MiB confidential disk" serve app1 small.img sm.state
fails "... the 256 MiB source is refused (volume size)" "256 MiB\\|268435456" \
  "$CVM" migrate replicate send --image src.img --state sm.state --connect "127.0.0.1:$port" "${TLS_S[@]}"
stop
check "... and nothing was written to that disk" test "$(sha256sum small.img | cut -d' ' -f1)" = "$small0"
fails "--target with --confidential-disk is a usage error" "one of --target" \
  "$CVM" migrate replicate serve --target x.img --confidential-disk cd.img --state x.state \
  --listen 127.0.0.1:0 "${TLS_T[@]}"
finish
