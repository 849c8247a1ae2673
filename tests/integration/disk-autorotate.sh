#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Automatic re-wrap of confidential disks when their DES key rotates, against a real cvmd --dev
# and checked with cryptsetup: a DES with a versionless key URL and two registered disks (one
# held open read-write by QEMU's block layer, as a running VM holds it) -> `cvm key rotate` ->
# within a bounded wait both tokens name the new version, the secret unwrapped with the new
# version opens the keyslot, the data area is byte-identical, one disks/rotate audit record per
# disk (DES identity, old and new version), `cvm des show` reports the pass; a disk whose image
# is gone is skipped with an audited failure while the others go on; a DES pinned to a version
# is never touched; a DES identity whose role was revoked is refused (audited 403), its disk
# unchanged; cvmd killed with SIGKILL in the middle of a pass leaves every disk openable with
# the old or the new version, and the restarted cvmd finishes the pass.
source "$(dirname "$0")/lib-cvmd.sh"
CVM=$BUILD/cvm
export HOME=$TMP/home XDG_CONFIG_HOME=
mkdir -p "$HOME"
command -v cryptsetup >/dev/null || { not_ok "cryptsetup installed"; finish; exit 1; }
OFF=$((16 * 1024 * 1024))
WAIT=${CVM_AUTOROTATE_WAIT:-60} # seconds; cvmd's scheduler ticks every 5 s

fresh_store || { not_ok "create test database"; finish; exit 1; }
if [[ -n $STORE_URL ]]; then store=(--store "$STORE_URL"); else store=(--store "sqlite:$TMP/cvmd.db"); fi
PORT=$(free_port)
start() {
  rm -f "$TMP/dev.json"
  "$CVMD" --dev --listen "127.0.0.1:$PORT" --state-dir "$TMP/state" --dev-info "$TMP/dev.json" \
    "${store[@]}" >>"$TMP/cvmd.log" 2>&1 &
  CVMD_PID=$!
  CVMD_PIDS=("$CVMD_PID") # only the live one: finish() must not signal a reused pid
  wait_file "$TMP/dev.json" 120 "$CVMD_PID"
}
check "cvmd --dev starts" start
BASE=$(jq -r .base_url "$TMP/dev.json")

as() { local who=$1; shift; "$CVM" --profile "$TMP/$who.profile" "$@"; }
quiet() { "$@" >/dev/null; }
data_sha() { tail -c +$((OFF + 1)) "$1" | sha256sum | cut -d' ' -f1; }
# The opencvm-hsm tokens of an image (cryptsetup's own metadata dump).
tokens() { cryptsetup luksDump --dump-json-metadata "$1" | jq -c '[.tokens[] | select(.type=="opencvm-hsm")]'; }
# The versions the tokens name, sorted, comma-separated ("V" when every token names V).
token_version() { tokens "$1" | jq -r 'map(.key_url | sub(".*/"; "")) | unique | join(",")'; }
ntokens() { tokens "$1" | jq length; }
latest() { as app1 key show "$1" --json | jq -r .key.kid | sed 's#.*/##'; }
# opens IMAGE [N]: the N-th token's secret, unwrapped with the version it names (by app1,
# through the key service), opens the keyslot according to cryptsetup.
opens() {
  local img=$1 i=${2:-0} t kid
  t=$(tokens "$img" | jq -c ".[$i]")
  kid=$(jq -r .key_url <<<"$t")
  jq -r .wrapped <<<"$t" | tr '_-' '/+' | python3 -c '
import base64, sys
s = sys.stdin.read().strip(); s += "=" * (-len(s) % 4)
sys.stdout.buffer.write(base64.b64decode(s))' >"$TMP/w.bin" || return 1
  rm -f "$TMP/s.bin"
  as app1 key unwrap "$(sed 's#.*/keys/##; s#/.*##' <<<"$kid")" --version "${kid##*/}" \
    --alg "$(jq -r .alg <<<"$t")" --in "$TMP/w.bin" --out "$TMP/s.bin" >/dev/null &&
    cryptsetup open --test-passphrase --key-file "$TMP/s.bin" "$img"
}
# wait_version VERSION IMAGE...: every image's token names VERSION within $WAIT seconds.
wait_version() {
  local v=$1 i img all; shift
  for ((i = 0; i < WAIT * 5; i++)); do
    all=1
    for img in "$@"; do [[ $(token_version "$img") == "$v" ]] || all=0; done
    [[ $all == 1 ]] && return 0
    sleep 0.2
  done
  return 1
}
audit() { "$CVM" audit export "${store[@]}" --since 0 --out "$TMP/audit.jsonl" >/dev/null; }
# rotations DISK: the disks/rotate records of a disk, one JSON object per line.
rotations() { jq -c --arg d "$1" 'select(.operation=="disks/rotate" and (.detail | fromjson | .disk)==$d)' "$TMP/audit.jsonl"; }

# ---- identities, keys, DES -------------------------------------------------------------------
check "login admin profile" "$CVM" --profile "$TMP/admin.profile" login --dev-info "$TMP/dev.json"
for who in app1 desid desid2; do
  as admin identity create "$who" --secret-out "$TMP/$who.secret" >/dev/null
  cid=$(as admin identity list --json | jq -r --arg n "$who" '(.value // .)[] | select(.name==$n) | .client_id')
  "$CVM" --profile "$TMP/$who.profile" login --dev-info "$TMP/dev.json" --client-id "$cid" \
    --client-secret-file "$TMP/$who.secret" >/dev/null
done
DESID=$(as admin identity list --json | jq -r '(.value // .)[] | select(.name=="desid") | .oid // .object_id')
check "app1 is a Crypto User" as admin role assign --role "Crypto User" --principal app1
for k in autokey pinkey revkey; do
  check "app1 creates $k" as app1 key create "$k" --kty RSA-HSM --size 2048
done
for k in autokey pinkey; do
  as admin role assign --role "Managed HSM Crypto Service Encryption User" --principal desid --scope "/keys/$k" >/dev/null
done
REV_GUID=$(cat /proc/sys/kernel/random/uuid)
check "desid2 gets the Crypto Service Encryption User role on revkey" \
  as admin role assign --role "Managed HSM Crypto Service Encryption User" --principal desid2 \
  --scope /keys/revkey --name "$REV_GUID"
PIN_V=$(latest pinkey)
check "DES auto1: versionless key URL (follows latest)" \
  as app1 des create auto1 --type customer --key "$BASE/keys/autokey" --identity desid
check "DES pin1: pinned to version $PIN_V" \
  as app1 des create pin1 --type customer --key "$BASE/keys/pinkey/$PIN_V" --identity desid
check "DES rev1: versionless, identity desid2" \
  as app1 des create rev1 --type customer --key "$BASE/keys/revkey" --identity desid2
as app1 des show auto1 --json >"$TMP/des.json"
check "des show: auto1 follows latest, no auto-rotation yet" \
  jq -e '.followsLatest==true and (has("lastAutoRotation") | not)' "$TMP/des.json"
check "des show: pin1 does not follow latest" bash -o pipefail -c \
  "'$CVM' --profile '$TMP/app1.profile' des show pin1 --json | jq -e '.followsLatest==false' >/dev/null"

# ---- disks ------------------------------------------------------------------------------------
head -c $((8 * 1024 * 1024)) /dev/urandom >"$TMP/src.raw"
check "disk a1 (encrypted from 8 MiB of data) on auto1" \
  as app1 disk encrypt --in "$TMP/src.raw" --out "$TMP/a1.img" --des auto1 --name a1 --kind data
check "disk a2 on auto1" as app1 disk create --name a2 --size 64M --des auto1 --kind data --path "$TMP/a2.img"
check "disk gone1 on auto1 (its image removed below)" \
  as app1 disk create --name gone1 --size 64M --des auto1 --kind data --path "$TMP/gone1.img"
check "disk p1 on pin1" as app1 disk create --name p1 --size 64M --des pin1 --kind data --path "$TMP/p1.img"
check "disk r1 on rev1" as app1 disk create --name r1 --size 64M --des rev1 --kind data --path "$TMP/r1.img"
rm -f "$TMP/gone1.img"
V1=$(token_version "$TMP/a1.img")
check "a1 and a2 wrapped with the same version" test "$(token_version "$TMP/a2.img")" = "$V1"
check "cvm disk show names the key version" bash -o pipefail -c \
  "'$CVM' --profile '$TMP/app1.profile' disk show a1 | grep -q 'key version.*$V1'"
A1_DATA=$(data_sha "$TMP/a1.img"); A2_DATA=$(data_sha "$TMP/a2.img")
P1_TOK=$(tokens "$TMP/p1.img"); R1_TOK=$(tokens "$TMP/r1.img"); R1_DATA=$(data_sha "$TMP/r1.img")

# a2 is the virtio disk of a QEMU VM (created stopped, -S: no guest code needs to run for
# QEMU to hold the image open read-write with its image locks) for the whole rotation.
qemu-system-x86_64 -S -machine q35 -nodefaults -display none -daemonize -pidfile "$TMP/qemu.pid" \
  -drive "file=$TMP/a2.img,format=raw,if=virtio" >"$TMP/qemu.out" 2>&1
QEMU_PID=$(cat "$TMP/qemu.pid" 2>/dev/null)
check "QEMU VM holds a2 open (its write lock refuses a second writer)" bash -c \
  "kill -0 $QEMU_PID && qemu-io -f raw -c quit '$TMP/a2.img' 2>&1 | grep -q 'write\" lock'"

# ---- rotate the key: cvmd follows -------------------------------------------------------------
revoke_and_rotate_rev() {
  as admin role unassign "$REV_GUID" --scope /keys/revkey >/dev/null && as app1 key rotate revkey >/dev/null
}
check "revoke desid2's role, then cvm key rotate revkey" revoke_and_rotate_rev
check "cvm key rotate pinkey" quiet as app1 key rotate pinkey
T0=$(date +%s.%N)
check "cvm key rotate autokey" quiet as app1 key rotate autokey
V2=$(latest autokey)
check "... a new version" bash -c "[[ '$V2' =~ ^[0-9a-f]{32}$ && '$V2' != '$V1' ]]"
check "within ${WAIT}s both disks' tokens name the new version" wait_version "$V2" "$TMP/a1.img" "$TMP/a2.img"
echo "# auto-rotation of a1 and a2 done $(echo "$(date +%s.%N) - $T0" | bc) s after cvm key rotate"
check "the VM still holds a2 open" bash -c \
  "kill -0 $QEMU_PID && qemu-io -f raw -c quit '$TMP/a2.img' 2>&1 | grep -q 'write\" lock'"
kill "$QEMU_PID" 2>/dev/null
for d in a1 a2; do
  check "$d: exactly one opencvm-hsm token" test "$(ntokens "$TMP/$d.img")" -eq 1
  check "$d: the secret unwrapped with the new version opens the keyslot (cryptsetup)" opens "$TMP/$d.img"
  check "$d: registry kid and cvm disk show follow" bash -o pipefail -c \
    "'$CVM' --profile '$TMP/app1.profile' disk show $d --json | jq -e '(.kid | endswith(\"/$V2\")) and .header.key_version==\"$V2\"' >/dev/null"
done
tokens "$TMP/a1.img" | jq -r '.[0].wrapped' | tr '_-' '/+' | python3 -c '
import base64, sys
s = sys.stdin.read().strip(); s += "=" * (-len(s) % 4)
sys.stdout.buffer.write(base64.b64decode(s))' >"$TMP/w-new.bin"
check "the old version no longer unwraps the new wrap" bash -c \
  "! '$CVM' --profile '$TMP/app1.profile' key unwrap autokey --version '$V1' --alg RSA-OAEP-256 --in '$TMP/w-new.bin' --out '$TMP/s-old.bin' 2>/dev/null"
check "a1: data area unchanged (hash)" test "$(data_sha "$TMP/a1.img")" = "$A1_DATA"
check "a2: data area unchanged (hash)" test "$(data_sha "$TMP/a2.img")" = "$A2_DATA"
check "a1: decrypts to the source" as app1 disk verify --name a1 --source "$TMP/src.raw"

# the failure twins (their passes ran in the same ticks)
sleep 6
audit
for d in a1 a2; do
  check "audit: one disks/rotate for $d as the DES identity, $V1 -> $V2, ok" bash -c \
    "[[ \$(jq -s --arg d $d 'map(select(.operation==\"disks/rotate\" and (.detail|fromjson|.disk)==\$d and .result==\"ok\" and .status==200 and .principal==\"$DESID\" and .key_name==\"autokey\" and .key_version==\"$V2\" and (.detail|fromjson|.oldVersion==\"$V1\" and .newVersion==\"$V2\" and .des==\"auto1\" and .trigger==\"auto\")))|length' '$TMP/audit.jsonl') -eq 1 ]]"
done
check "audit: gone1 (image missing) skipped with a NotFound failure" bash -c \
  "jq -e 'select(.operation==\"disks/rotate\" and (.detail|fromjson|.disk)==\"gone1\" and .status==404 and .result==\"NotFound\")' '$TMP/audit.jsonl' | grep -q ."
check "des show auto1: last auto-rotation to $V2, 2 rotated, 1 failed naming gone1" bash -o pipefail -c \
  "'$CVM' --profile '$TMP/app1.profile' des show auto1 --json | jq -e '.lastAutoRotation | .keyVersion==\"$V2\" and .rotated==2 and .failed==1 and .result==\"failed\" and (.message|startswith(\"gone1\"))' >/dev/null"
check "des show (human) prints the last auto-rotation" bash -o pipefail -c \
  "'$CVM' --profile '$TMP/app1.profile' des show auto1 | grep -q '^last auto-rotation'"
check "pinned DES: p1 untouched (same token, old pinned version)" test "$(tokens "$TMP/p1.img")" = "$P1_TOK"
check "pinned DES: no disks/rotate record for p1" test -z "$(rotations p1)"
check "revoked role: r1's disks/rotate refused, 403 Forbidden, naming the role" bash -c \
  "jq -e 'select(.operation==\"disks/rotate\" and (.detail|fromjson|.disk)==\"r1\" and .status==403 and .result==\"Forbidden\" and (.detail|fromjson|.message|test(\"Crypto Service Encryption User\")))' '$TMP/audit.jsonl' | grep -q ."
check "revoked role: r1's header unchanged" test "$(tokens "$TMP/r1.img")" = "$R1_TOK"
check "revoked role: r1's data unchanged" test "$(data_sha "$TMP/r1.img")" = "$R1_DATA"
check "revoked role: r1 still opens with its old version" opens "$TMP/r1.img"
check "revoked role: registry kid of r1 unchanged" bash -o pipefail -c \
  "'$CVM' --profile '$TMP/app1.profile' disk show r1 --json | jq -e '.kid | endswith(\"$(jq -r '.[0].key_url' <<<"$R1_TOK" | sed 's#.*/##')\")' >/dev/null"
# Each refused try is audited; tries for the same version are spaced by the back-off (30 s,
# then doubling), so a refused disk does not flood the audit log.
check "revoked role: refused tries spaced by at least the 30 s back-off" bash -c \
  "jq -s --arg d r1 '[.[] | select(.operation==\"disks/rotate\" and (.detail|fromjson|.disk)==\$d) | .time_ms] | sort | . as \$t | [range(1; length) | \$t[.] - \$t[. - 1]] | all(. >= 29000)' '$TMP/audit.jsonl' | grep -qx true"
check "des show rev1: last auto-rotation failed" bash -o pipefail -c \
  "'$CVM' --profile '$TMP/app1.profile' des show rev1 --json | jq -e '.lastAutoRotation | .failed==1 and .rotated==0' >/dev/null"
check "a second cvm disk rotate of a1 (manual path) finds it current" bash -o pipefail -c \
  "'$CVM' --profile '$TMP/app1.profile' disk rotate --name a1 --json | jq -e '.kid | endswith(\"/$V2\")' >/dev/null"

# ---- SIGKILL in the middle of a pass ------------------------------------------------------------
IMGS=("$TMP/a1.img" "$TMP/a2.img")
for i in 1 2 3 4 5 6; do
  as app1 disk create --name k$i --size 64M --des auto1 --kind data --path "$TMP/k$i.img" >/dev/null
  IMGS+=("$TMP/k$i.img")
done
check "six more disks on auto1" test -e "$TMP/k6.img"
before=$(grep -c disk_autorotated "$TMP/cvmd.log")
check "cvm key rotate autokey again" quiet as app1 key rotate autokey
V3=$(latest autokey)
# Kill cvmd as soon as the first disk of the pass is done (the kill may land after the end on a
# fast machine; the outcome must be right either way).
for ((i = 0; i < WAIT * 50; i++)); do
  (($(grep -c disk_autorotated "$TMP/cvmd.log") > before)) && break
  sleep 0.02
done
kill -KILL "$CVMD_PID"; wait "$CVMD_PID" 2>/dev/null
mkdir -p "$TMP/snap"
for img in "${IMGS[@]}"; do cp --sparse=always "$img" "$TMP/snap/"; done
n_old=0; n_new=0; n_both=0
both=$(printf '%s\n' "$V2" "$V3" | sort | paste -sd,)
for img in "${IMGS[@]}"; do
  case $(token_version "$img") in
    "$V2") n_old=$((n_old + 1)) ;; "$V3") n_new=$((n_new + 1)) ;; "$both") n_both=$((n_both + 1)) ;;
  esac
done
echo "# killed mid-pass: $n_new disk(s) on the new version, $n_old on the old one, $n_both with both tokens"
check "after SIGKILL every disk has tokens for the old or the new version only" \
  test $((n_old + n_new + n_both)) -eq ${#IMGS[@]}
check "cvmd restarts on the same state" start
ok_all=1
for img in "$TMP"/snap/*.img; do
  for ((t = 0; t < $(ntokens "$img"); t++)); do opens "$img" "$t" || { ok_all=0; echo "# $img token $t"; }; done
done
check "every token left by the killed pass opens its disk (cryptsetup, as found after the kill)" test $ok_all -eq 1
check "the restarted cvmd finishes the pass (lease of the killed claim expires)" \
  env WAIT=$((WAIT + 60)) bash -c "$(declare -f wait_version token_version tokens); wait_version '$V3' ${IMGS[*]}"
for img in "${IMGS[@]}"; do
  [[ $(ntokens "$img") -eq 1 ]] || echo "# $img: $(ntokens "$img") tokens"
done
check "... one token per disk" bash -c "$(declare -f tokens ntokens); for i in ${IMGS[*]}; do [[ \$(ntokens \$i) -eq 1 ]] || exit 1; done"
check "... a1 opens with the new version" opens "$TMP/a1.img"
check "... a1's data still unchanged" test "$(data_sha "$TMP/a1.img")" = "$A1_DATA"
audit
check "audit: a disks/rotate ok record to $V3 for each of the 8 disks" bash -c \
  "[[ \$(jq -s 'map(select(.operation==\"disks/rotate\" and .key_version==\"$V3\" and .result==\"ok\") | .detail|fromjson|.disk) | unique | length' '$TMP/audit.jsonl') -eq 8 ]]"
check "audit chain verifies" "$CVM" audit verify "${store[@]}"
finish
