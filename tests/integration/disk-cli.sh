#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Confidential disks through the product surface: `cvm des` and `cvm disk` against a real
# cvmd --dev (DES objects and the disk registry in cvmd; wrap/unwrap through the key service),
# checked with the reference implementation (cryptsetup). Covers the DES identity's role check
# (refused without, allowed with), a 200 GiB sparse disk, encryption of raw and qcow2 images
# with a marker, verify, the secret from `cvm key unwrap` opening the keyslot, key rotation +
# `cvm disk rotate` (old version cannot unlock, new can, data unchanged, audited), rekey,
# decrypt (refused without the unwrap right), and the failure twins: wrong DES, corrupted
# header, truncated image, name conflicts; the source is never modified.
source "$(dirname "$0")/lib-cvmd.sh"
CVM=$BUILD/cvm
export HOME=$TMP/home XDG_CONFIG_HOME=
mkdir -p "$HOME"
command -v cryptsetup >/dev/null || { not_ok "cryptsetup installed"; finish; exit 1; }
OFF=$((16 * 1024 * 1024))
MARKER=OPENCVM-PLAINTEXT-MARKER-7f3a9c

fresh_store || { not_ok "create test database"; finish; exit 1; }
if [[ -n $STORE_URL ]]; then args=(--store "$STORE_URL"); else args=(--store "sqlite:$TMP/cvmd.db"); fi
check "cvmd --dev starts" start_dev "$TMP/dev.json" "$TMP/cvmd.log" "${args[@]}"
BASE=$(jq -r .base_url "$TMP/dev.json")

# fails NAME PATTERN cmd...: must exit 1 with PATTERN in its output.
fails() {
  local name=$1 pat=$2; shift 2
  "$@" >"$TMP/out" 2>&1; local rc=$?
  if [[ $rc -eq 1 ]] && grep -q -- "$pat" "$TMP/out"; then ok "$name"
  else not_ok "$name (exit $rc)"; sed 's/^/    /' "$TMP/out" | tail -3; fi
}
sha() { sha256sum "$1" | cut -d' ' -f1; }
data_sha() { tail -c +$((OFF + 1)) "$1" | sha256sum | cut -d' ' -f1; }
as() { local who=$1; shift; "$CVM" --profile "$TMP/$who.profile" "$@"; }
# The opencvm-hsm token of an image as JSON (from cryptsetup's own metadata dump).
token() { cryptsetup luksDump --dump-json-metadata "$1" | jq -c '[.tokens[] | select(.type=="opencvm-hsm")]'; }
# Decode the wrapped secret of the token into a file for `cvm key unwrap`.
wrapped_to() {
  token "$1" | jq -r '.[0].wrapped' | tr '_-' '/+' | python3 -c '
import base64, sys
s = sys.stdin.read().strip(); s += "=" * (-len(s) % 4)
sys.stdout.buffer.write(base64.b64decode(s))' >"$2"
}

# ---- identities: admin manages roles; app1 uses keys; desid is the DES identity; aud reads --
check "login admin profile" "$CVM" --profile "$TMP/admin.profile" login --dev-info "$TMP/dev.json"
for who in app1 desid aud; do
  as admin identity create "$who" --secret-out "$TMP/$who.secret" >/dev/null
  cid=$(as admin identity list --json | jq -r --arg n "$who" '(.value // .)[] | select(.name==$n) | .client_id')
  "$CVM" --profile "$TMP/$who.profile" login --dev-info "$TMP/dev.json" --client-id "$cid" \
    --client-secret-file "$TMP/$who.secret" >/dev/null
done
check "profiles for app1, desid, aud" test -s "$TMP/app1.profile" -a -s "$TMP/desid.profile" -a -s "$TMP/aud.profile"
check "app1 is a Crypto User" as admin role assign --role "Crypto User" --principal app1
check "aud is a Crypto Auditor (reads, cannot unwrap)" as admin role assign --role "Managed HSM Crypto Auditor" --principal aud
check "app1 creates the DES key (RSA 3072)" as app1 key create deskey --kty RSA-HSM --size 3072
check "app1 creates an EC key" as app1 key create eckey --kty EC-HSM --curve P-256

# ---- DES: the identity's role decides ------------------------------------------------------
fails "des create refused: identity lacks the Crypto Service Encryption User role" \
  "Crypto Service Encryption User" as app1 des create des1 --type customer --key "$BASE/keys/deskey" --identity desid
fails "... answered 403 Forbidden" "Forbidden" as app1 des create des1 --type customer --key "$BASE/keys/deskey" --identity desid
check "... and no DES was stored" bash -c "[[ \$('$CVM' --profile '$TMP/app1.profile' des list --json | jq length) -eq 0 ]]"
check "grant desid Crypto Service Encryption User on /keys/deskey" \
  as admin role assign --role "Managed HSM Crypto Service Encryption User" --principal desid --scope /keys/deskey
check "des create allowed with the role" as app1 des create des1 --type customer --key "$BASE/keys/deskey" --identity desid
check "des show: customer key, RSA-OAEP-256, follows latest" bash -o pipefail -c \
  "'$CVM' --profile '$TMP/app1.profile' des show des1 --json | jq -e '.encryptionType==\"ConfidentialVmEncryptedWithCustomerKey\" and .alg==\"RSA-OAEP-256\" and .followsLatest==true' >/dev/null"
fails "des create with an EC key is refused" "RSA or oct" \
  as app1 des create desec --type customer --key "$BASE/keys/eckey" --identity desid
fails "des create with a key of another service is refused" "held by this key service" \
  as app1 des create desx --type customer --key "https://kv.example/keys/deskey" --identity desid
fails "des create with a duplicate name is refused" "already exists" \
  as app1 des create des1 --type customer --key "$BASE/keys/deskey" --identity desid
fails "platform DES refused while desid has no role on its key" "Crypto Service Encryption User" \
  as app1 des create pdes --type platform --identity desid
check "... and no platform key was created" bash -c "! '$CVM' --profile '$TMP/app1.profile' key show des-pdes >/dev/null 2>&1"
check "grant desid the role on /keys/des-pdes" \
  as admin role assign --role "Managed HSM Crypto Service Encryption User" --principal desid --scope /keys/des-pdes
check "platform DES creates its key in cvmd's HSM" as app1 des create pdes --type platform --identity desid
check "... the platform key des-pdes exists" as app1 key show des-pdes
check "des list shows both" bash -o pipefail -c "[[ \$('$CVM' --profile '$TMP/app1.profile' des list --json | jq length) -eq 2 ]]"
check "des list human table" bash -o pipefail -c "'$CVM' --profile '$TMP/app1.profile' des list | grep -q '^NAME'"

# ---- 200 GiB disk, sparse ------------------------------------------------------------------
check "disk create 200G (data disk)" as app1 disk create --name big --size 200G --des des1 --kind data --path "$TMP/big.img"
check "... image size is 200 GiB" test "$(stat -c %s "$TMP/big.img")" -eq $((200 * 1024 * 1024 * 1024))
check "... sparse: under 32 MiB on the host" test "$(du -k "$TMP/big.img" | cut -f1)" -lt 32768
cryptsetup luksDump "$TMP/big.img" >"$TMP/dump.txt" 2>&1
check "cryptsetup luksDump shows the opencvm-hsm token" grep -q "opencvm-hsm" "$TMP/dump.txt"
check "... subsystem opencvm-data" grep -q "Subsystem:.*opencvm-data" "$TMP/dump.txt"
fails "disk create with a taken name is refused" "already exists" \
  as app1 disk create --name big --size 1G --des des1 --path "$TMP/big2.img"
check "... and made no image" test ! -e "$TMP/big2.img"
fails "disk create with an unknown DES" "not found" as app1 disk create --name x1 --size 1G --des nosuch --path "$TMP/x1.img"
check "... and made no image" test ! -e "$TMP/x1.img"
check "temp disk: no DES, no token" as app1 disk create --name tmp1 --size 64M --kind temp --path "$TMP/tmp1.img"
check "... luksDump shows no opencvm-hsm token" bash -c "! cryptsetup luksDump '$TMP/tmp1.img' | grep -q opencvm-hsm"
check "platform-key disk" as app1 disk create --name pd --size 1G --des pdes --path "$TMP/pd.img"
check "... wrapped with des-pdes" bash -o pipefail -c "'$CVM' --profile '$TMP/app1.profile' disk show pd --json | jq -e '.kid | test(\"/keys/des-pdes/[0-9a-f]{32}$\")' >/dev/null"

# ---- encrypt images with a marker --------------------------------------------------------
python3 - "$TMP/src.raw" "$MARKER" <<'EOF'
import sys
m = sys.argv[2].encode()
block = (m * (4096 // len(m) + 1))[:4096]
with open(sys.argv[1], "wb") as f:
    for i in range(24 * 256):  # 24 MiB
        f.write(block)
EOF
SRC_SHA=$(sha "$TMP/src.raw")
check "source has the marker" grep -q "$MARKER" "$TMP/src.raw"
check "disk encrypt raw -> registered d1" as app1 disk encrypt --in "$TMP/src.raw" --out "$TMP/d1.img" --des des1 --name d1
check "... no marker anywhere in the output" bash -c "! grep -q '$MARKER' '$TMP/d1.img'"
check "... no .partial left" test ! -e "$TMP/d1.img.partial"
check "disk verify d1 against the source" as app1 disk verify --name d1 --source "$TMP/src.raw"
qemu-img convert -q -f raw -O qcow2 "$TMP/src.raw" "$TMP/src.qcow2"
check "disk encrypt qcow2 (converted through a temp raw file)" \
  as app1 disk encrypt --in "$TMP/src.qcow2" --out "$TMP/q1.img" --des des1 --name q1 --json
check "... temp raw file removed" test ! -e "$TMP/q1.img.convert-raw"
check "... no marker in the output" bash -c "! grep -q '$MARKER' '$TMP/q1.img'"
check "... verifies against the raw source" as app1 disk verify --name q1 --source "$TMP/src.raw"
wrapped_to "$TMP/d1.img" "$TMP/w1.bin"
KID1=$(token "$TMP/d1.img" | jq -r '.[0].key_url'); V1=${KID1##*/}
check "token kid is versioned" bash -c "[[ '$V1' =~ ^[0-9a-f]{32}$ ]]"
check "cvm key unwrap gives the secret (0600 file)" \
  as app1 key unwrap deskey --version "$V1" --alg RSA-OAEP-256 --in "$TMP/w1.bin" --out "$TMP/s1.bin"
check "... mode 0600" test "$(stat -c %a "$TMP/s1.bin")" = 600
check "cryptsetup --test-passphrase accepts the unwrapped secret" \
  cryptsetup open --test-passphrase --key-file "$TMP/s1.bin" "$TMP/d1.img"
head -c 32 /dev/urandom >"$TMP/bad.bin"
check "... and refuses a random one" bash -c "! cryptsetup open --test-passphrase --key-file '$TMP/bad.bin' '$TMP/d1.img' 2>/dev/null"
check "disk decrypt d1 (Crypto User may unwrap)" as app1 disk decrypt --name d1 --out "$TMP/d1.plain"
check "... equals the source byte for byte" cmp -s "$TMP/src.raw" "$TMP/d1.plain"
check "... written 0600" test "$(stat -c %a "$TMP/d1.plain")" = 600
fails "disk decrypt refused for an identity without unwrap" "Forbidden" \
  as aud disk decrypt --name d1 --out "$TMP/aud.plain"
check "... and wrote nothing" test ! -e "$TMP/aud.plain"
check "auditor may still show the disk" as aud disk show d1
check "disk list (table)" bash -o pipefail -c "'$CVM' --profile '$TMP/app1.profile' disk list | grep -q '^d1 '"
check "disk list --json has 5 disks" bash -o pipefail -c "[[ \$('$CVM' --profile '$TMP/app1.profile' disk list --json | jq length) -eq 5 ]]"

check "progress bar with rate and ETA when stderr is a terminal" bash -c \
  "script -qec \"'$CVM' --profile '$TMP/app1.profile' disk encrypt --in '$TMP/src.raw' --out '$TMP/tty.img' --des des1\" /dev/null | grep -q 'ETA'"
check "... and none when it is not" bash -c \
  "! '$CVM' --profile '$TMP/app1.profile' disk encrypt --in '$TMP/src.raw' --out '$TMP/notty.img' --des des1 2>&1 | grep -q 'ETA'"
check "... both outputs exist" test -s "$TMP/tty.img" -a -s "$TMP/notty.img"
rm -f "$TMP/tty.img" "$TMP/notty.img"

# SIGKILL in the middle of an encryption, then the same command again: it resumes from the
# checkpoint and the result verifies against the source (the kill may land after the end on a
# fast machine; the outcome must be right either way).
head -c $((384 * 1024 * 1024)) /dev/urandom >"$TMP/big.raw"
BIG_SHA=$(sha "$TMP/big.raw")
"$CVM" --profile "$TMP/app1.profile" disk encrypt --in "$TMP/big.raw" --out "$TMP/k.img" --des des1 --name k1 >/dev/null 2>&1 &
kpid=$!
# kill shortly after the data pass has started (the .partial exists), not after a fixed delay:
# key service round trips take a variable time and the data pass itself may take well under a
# second
for _ in $(seq 300); do [[ -e $TMP/k.img.partial ]] && break; sleep 0.05; done
sleep 0.2
kill -KILL "$kpid" 2>/dev/null; wait "$kpid" 2>/dev/null
if [[ -e $TMP/k.img.partial ]] || ! as app1 disk show k1 >/dev/null 2>&1; then
  [[ -e $TMP/k.img.partial ]] && echo "# killed mid-run: resuming from $TMP/k.img.partial"
  check "encrypt again after SIGKILL completes" \
    as app1 disk encrypt --in "$TMP/big.raw" --out "$TMP/k.img" --des des1 --name k1
else
  # the first run had finished and registered k1 before the kill (encrypting again into the
  # same name is refused): the checks below then apply to that run's image
  echo "# the kill landed after the end: checking the first run's image"
fi
check "... no .partial left" test ! -e "$TMP/k.img.partial"
check "... verifies against the source" as app1 disk verify --name k1 --source "$TMP/big.raw" --samples 256
check "... source unchanged" test "$(sha "$TMP/big.raw")" = "$BIG_SHA"
as app1 disk delete --name k1 --remove-image >/dev/null
rm -f "$TMP/big.raw"

# --used-only: an ext4 image whose free blocks stay unwritten; the file system survives.
mkdir -p "$TMP/fsroot" && echo "$MARKER used-only" >"$TMP/fsroot/hello.txt"
mkfs.ext4 -q -F -b 4096 -d "$TMP/fsroot" "$TMP/fs.raw" 64M
check "encrypt --used-only an ext4 image" \
  as app1 disk encrypt --in "$TMP/fs.raw" --out "$TMP/fs.img" --des des1 --name fs1 --used-only --kind data
check "... smaller on the host than the full encryption" \
  test "$(du -k "$TMP/fs.img" | cut -f1)" -lt $(( (64 + 16) * 1024 ))
check "... decrypts to a clean file system" bash -c \
  "'$CVM' --profile '$TMP/app1.profile' disk decrypt --name fs1 --out '$TMP/fs.plain' >/dev/null && e2fsck -fn '$TMP/fs.plain' >/dev/null"
check "... with the file's content" bash -c "debugfs -R 'cat /hello.txt' '$TMP/fs.plain' 2>/dev/null | grep -q 'used-only'"
check "... and no marker in the ciphertext" bash -c "! grep -q '$MARKER' '$TMP/fs.img'"
check "disk delete fs1 --remove-image --json" bash -o pipefail -c \
  "'$CVM' --profile '$TMP/app1.profile' disk delete --name fs1 --remove-image --json | jq -e '.deleted and .image_removed' >/dev/null"

# ---- rotation: new key version, re-wrap, data untouched -------------------------------------
D1_DATA=$(data_sha "$TMP/d1.img")
check "cvm key rotate deskey" as app1 key rotate deskey
check "disk rotate d1" as app1 disk rotate --name d1
KID2=$(token "$TMP/d1.img" | jq -r '.[0].key_url'); V2=${KID2##*/}
check "... the token now names the new version" bash -c "[[ '$V2' =~ ^[0-9a-f]{32}$ && '$V2' != '$V1' ]]"
check "... exactly one opencvm-hsm token remains" bash -c "[[ \$(cryptsetup luksDump --dump-json-metadata '$TMP/d1.img' | jq '[.tokens[] | select(.type==\"opencvm-hsm\")] | length') -eq 1 ]]"
check "... the registry records the new kid" bash -o pipefail -c "'$CVM' --profile '$TMP/app1.profile' disk show d1 --json | jq -e '.kid | endswith(\"$V2\")' >/dev/null"
wrapped_to "$TMP/d1.img" "$TMP/w2.bin"
fails "old key version cannot unlock the rotated disk" "" \
  as app1 key unwrap deskey --version "$V1" --alg RSA-OAEP-256 --in "$TMP/w2.bin" --out "$TMP/s-old.bin"
check "new key version unlocks it" \
  as app1 key unwrap deskey --version "$V2" --alg RSA-OAEP-256 --in "$TMP/w2.bin" --out "$TMP/s2.bin"
check "... cryptsetup accepts the secret from the new version" \
  cryptsetup open --test-passphrase --key-file "$TMP/s2.bin" "$TMP/d1.img"
check "data area unchanged by rotation (hash)" test "$(data_sha "$TMP/d1.img")" = "$D1_DATA"
check "disk verify after rotation" as app1 disk verify --name d1 --source "$TMP/src.raw"
check "rotate again: already current" bash -o pipefail -c "'$CVM' --profile '$TMP/app1.profile' disk rotate --name d1 --json | jq -e '.rotated==false' >/dev/null"
check "audit export" "$CVM" audit export "${args[@]}" --since 0 --out "$TMP/audit.jsonl"
check "audit: disks/update with the new key version" \
  bash -c "jq -e 'select(.operation==\"disks/update\" and .key_version==\"$V2\" and .result==\"ok\")' '$TMP/audit.jsonl' | grep -q ."
check "audit: wrapkey with the new version" \
  bash -c "jq -e 'select(.operation==\"keys/wrapkey\" and .key_version==\"$V2\")' '$TMP/audit.jsonl' | grep -q ."
check "audit: the refused DES create" \
  bash -c "jq -e 'select(.operation==\"diskEncryptionSets/write\" and .status==403)' '$TMP/audit.jsonl' | grep -q ."
check "audit chain verifies" "$CVM" audit verify "${args[@]}"

# ---- rekey: new volume key, same data ------------------------------------------------------
OLD_UUID=$(cryptsetup luksUUID "$TMP/q1.img")
check "disk rekey q1" as app1 disk rekey --name q1
check "... new LUKS2 uuid" test "$(cryptsetup luksUUID "$TMP/q1.img")" != "$OLD_UUID"
check "... still verifies against the source" as app1 disk verify --name q1 --source "$TMP/src.raw"
check "... no temp image left" test ! -e "$TMP/q1.img.rekey"

# ---- bad input: clear errors, source never modified ----------------------------------------
fails "encrypt with a wrong DES" "not found" \
  as app1 disk encrypt --in "$TMP/src.raw" --out "$TMP/w.img" --des nosuch --name w1
check "... made no output" test ! -e "$TMP/w.img" -a ! -e "$TMP/w.img.partial"
fails "encrypt onto an existing file" "exists" \
  as app1 disk encrypt --in "$TMP/src.raw" --out "$TMP/d1.img" --des des1
cp "$TMP/d1.img" "$TMP/d1.bak"
# LUKS2 keeps two binary headers (primary "LUKS\xba\xbe", secondary "SKUL\xba\xbe"): with one
# damaged libcryptsetup recovers from the other, so damage both.
python3 - "$TMP/d1.img" <<'EOF'
import sys
with open(sys.argv[1], "r+b") as f:
    head = f.read(1 << 20)
    for magic in (b"LUKS\xba\xbe", b"SKUL\xba\xbe"):
        i = head.find(magic)
        while i >= 0:
            f.seek(i); f.write(b"XXXXXX"); i = head.find(magic, i + 1)
EOF
fails "verify of a corrupted header: not a LUKS2 image" "LUKS" as app1 disk verify --name d1
check "... the stock tool agrees" bash -c "! cryptsetup isLuks '$TMP/d1.img'"
cp "$TMP/d1.bak" "$TMP/d1.img"
truncate -s $((OFF + 4096)) "$TMP/d1.img"
fails "verify of a truncated image" "truncated" as app1 disk verify --name d1
fails "verify of a truncated image against its source" "truncated" \
  as app1 disk verify --name d1 --source "$TMP/src.raw"
cp "$TMP/d1.bak" "$TMP/d1.img"
check "restored image verifies again" as app1 disk verify --name d1
head -c 100000 /dev/urandom >"$TMP/odd.raw"
fails "encrypt of a source that is not a whole number of sectors" "" \
  as app1 disk encrypt --in "$TMP/odd.raw" --out "$TMP/odd.img" --des des1
check "source never modified" test "$(sha "$TMP/src.raw")" = "$SRC_SHA"
fails "des delete refused while disks use it" "used by disk" as app1 des delete des1
check "disk delete tmp1 --remove-image" as app1 disk delete --name tmp1 --remove-image
check "... image removed" test ! -e "$TMP/tmp1.img"
check "disk delete pd, then des delete pdes" bash -c "'$CVM' --profile '$TMP/app1.profile' disk delete --name pd && '$CVM' --profile '$TMP/app1.profile' des delete pdes"
CA=$(jq -r .ca_cert "$TMP/dev.json")
check "DES routes without a bearer token: 401 with the challenge" bash -c \
  "curl -s -D - -o /dev/null --cacert '$CA' '$BASE/opencvm/diskEncryptionSets' | grep -qi '^www-authenticate: Bearer'"
TOKEN=$(as app1 identity token)
check "REST: a malformed DES name is refused (400 naming the field)" bash -c \
  "curl -s --cacert '$CA' -X PUT -H 'Authorization: Bearer $TOKEN' -H 'Content-Type: application/json' -d '{\"encryptionType\":\"platform\",\"identity\":\"desid\"}' '$BASE/opencvm/diskEncryptionSets/bad%21name' | jq -e '.error.code==\"BadParameter\" and (.error.message | startswith(\"name:\"))' >/dev/null"
check "REST: a missing field is named" bash -c \
  "curl -s --cacert '$CA' -X PUT -H 'Authorization: Bearer $TOKEN' -H 'Content-Type: application/json' -d '{\"encryptionType\":\"platform\"}' '$BASE/opencvm/diskEncryptionSets/ok1' | jq -e '.error.message | startswith(\"identity\")' >/dev/null"
finish
