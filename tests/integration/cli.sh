#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The cvm CLI against a real cvmd --dev: login/profile, identities, roles, every key verb,
# failure twins with their exit codes, audit verify/export, and `cvm demo`.
source "$(dirname "$0")/lib-cvmd.sh"
CVM=$BUILD/cvm
export HOME=$TMP/home XDG_CONFIG_HOME=
mkdir -p "$HOME"

fresh_store || { not_ok "create test database"; finish; exit 1; }
STATE=$TMP/state
args=()
if [[ -n $STORE_URL ]]; then args=(--store "$STORE_URL"); AUDIT=(--store "$STORE_URL");
else args=(--store "sqlite:$TMP/cvmd.db"); AUDIT=(--store "sqlite:$TMP/cvmd.db"); fi
check "cvmd --dev starts" start_dev "$TMP/dev.json" "$TMP/cvmd.log" "${args[@]}"

# Secrets never on the command line or in the environment.
out=$("$CVM" key list --client-secret x 2>&1); rc=$?
check "--client-secret on argv is refused (exit 2)" test $rc -eq 2
check "... with a message naming the safe alternative" grep -q -- '--client-secret-file' <<<"$out"
out=$(CVM_CLIENT_SECRET=x "$CVM" --dev-info "$TMP/dev.json" key list 2>&1); rc=$?
check "CVM_CLIENT_SECRET in the environment is refused" test $rc -ne 0

check "login with the dev-info file writes a 0600 profile" \
  "$CVM" login --dev-info "$TMP/dev.json"
check "profile mode is 0600" test "$(stat -c %a "$HOME/.config/opencvm/profile.json")" = 600
check "hsm status via the profile" "$CVM" hsm status

# Identities and roles (the admin manages roles but holds no key permissions).
check "identity create app1" "$CVM" identity create app1 --secret-out "$TMP/app1.secret" --json
"$CVM" identity create app1 >/dev/null 2>&1; rc=$?
check "duplicate identity name is refused" test $rc -ne 0
"$CVM" key create adminkey >/dev/null 2>&1; rc=$?
check "administrator cannot create keys (exit 1, 403)" test $rc -eq 1
check "role def list shows the built-in Crypto User" \
  bash -o pipefail -c "'$CVM' role def list | grep -q 'Managed HSM Crypto User'"
check "role assign Crypto User to app1" "$CVM" role assign --role "Crypto User" --principal app1
check "role assign Crypto Officer to app1" "$CVM" role assign --role "Managed HSM Crypto Officer" --principal app1
"$CVM" role assign --role "No Such Role" --principal app1 >"$TMP/out" 2>&1; rc=$?
check "unknown role is refused (exit 1)" test $rc -eq 1
check "... naming --role" grep -q -- '--role' "$TMP/out"
check "role list shows the assignments" bash -o pipefail -c "'$CVM' role list --json | jq -e '.value | length >= 2' >/dev/null"
cid=$("$CVM" identity list --json | jq -r '(.value // .)[] | select(.name=="app1") | .client_id')
check "identity list finds app1" test -n "$cid"

# Switch to the key user.
check "login as app1 with a secret file" \
  "$CVM" login --dev-info "$TMP/dev.json" --client-id "$cid" --client-secret-file "$TMP/app1.secret"
check "identity token prints a JWT" bash -o pipefail -c "'$CVM' identity token | grep -Eq '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$'"

check "key create RSA-HSM 3072" "$CVM" key create disk --kty RSA-HSM --size 3072 --tag env=test
check "key create EC-HSM P-256" "$CVM" key create sig --kty EC-HSM --curve P-256
check "key create oct-HSM 256" "$CVM" key create aes --kty oct-HSM --size 256
check "key show reports RSA-HSM" bash -o pipefail -c "'$CVM' key show disk --json | jq -e '.key.kty==\"RSA-HSM\" and .tags.env==\"test\"' >/dev/null"
check "key list shows three keys" bash -o pipefail -c "[[ \$('$CVM' key list --json | jq length) -eq 3 ]]"

head -c 32 /dev/urandom >"$TMP/secret.bin"
check "wrap RSA-OAEP-256" "$CVM" key wrap disk --alg RSA-OAEP-256 --in "$TMP/secret.bin" --out "$TMP/w.bin"
check "unwrap RSA-OAEP-256" "$CVM" key unwrap disk --alg RSA-OAEP-256 --in "$TMP/w.bin" --out "$TMP/u.bin"
check "unwrapped equals the original" cmp -s "$TMP/secret.bin" "$TMP/u.bin"
check "wrap A256KW (oct)" "$CVM" key wrap aes --alg A256KW --in "$TMP/secret.bin" --out "$TMP/kw.bin"
check "unwrap A256KW (oct)" "$CVM" key unwrap aes --alg A256KW --in "$TMP/kw.bin" --out "$TMP/kwu.bin"
check "A256KW round trip equal" cmp -s "$TMP/secret.bin" "$TMP/kwu.bin"
echo "hello confidential world" >"$TMP/msg"
check "encrypt A256GCM with params file" "$CVM" key encrypt aes --alg A256GCM --in "$TMP/msg" --out "$TMP/ct" --params "$TMP/gcm.json"
check "decrypt A256GCM" "$CVM" key decrypt aes --alg A256GCM --in "$TMP/ct" --out "$TMP/pt" --params "$TMP/gcm.json"
check "GCM round trip equal" cmp -s "$TMP/msg" "$TMP/pt"
python3 -c 'import sys; p=sys.argv[1]; b=bytearray(open(p,"rb").read()); b[0]^=1; open(p,"wb").write(b)' "$TMP/ct"
"$CVM" key decrypt aes --alg A256GCM --in "$TMP/ct" --out "$TMP/pt2" --params "$TMP/gcm.json" 2>/dev/null; rc=$?
check "tampered GCM ciphertext is refused" test $rc -ne 0
check "tampered decrypt wrote no output" test ! -e "$TMP/pt2"
check "sign ES256" "$CVM" key sign sig --alg ES256 --in "$TMP/msg" --out "$TMP/sig"
check "verify ES256" "$CVM" key verify sig --alg ES256 --in "$TMP/msg" --sig "$TMP/sig"
echo tampered >>"$TMP/msg"
"$CVM" key verify sig --alg ES256 --in "$TMP/msg" --sig "$TMP/sig" >/dev/null; rc=$?
check "verify of a changed message fails (exit 1)" test $rc -eq 1
"$CVM" key sign sig --alg RS256 --in "$TMP/msg" --out "$TMP/sig2" 2>/dev/null; rc=$?
check "RS256 on an EC key is refused" test $rc -eq 1
"$CVM" key show nosuchkey >"$TMP/out" 2>&1; rc=$?
check "unknown key: exit 1" test $rc -eq 1
check "... with KeyNotFound" grep -q KeyNotFound "$TMP/out"
"$CVM" key create 'bad/name' >/dev/null 2>&1; rc=$?
check "a key name with '/' is refused before any request (exit 2)" test $rc -eq 2

check "update: disable" "$CVM" key update sig --disable
"$CVM" key sign sig --alg ES256 --in "$TMP/msg" --out "$TMP/sig3" 2>/dev/null; rc=$?
check "a disabled key refuses to sign" test $rc -eq 1
check "update: enable again" "$CVM" key update sig --enable
check "rotate makes a second version" "$CVM" key rotate disk
check "versions lists two" bash -o pipefail -c "[[ \$('$CVM' key versions disk --json | jq length) -eq 2 ]]"
check "backup" "$CVM" key backup aes --out "$TMP/aes.backup"
check "delete" "$CVM" key delete aes
check "list --deleted shows it" bash -o pipefail -c "'$CVM' key list --deleted --json | jq -e 'map(.kid) | any(test(\"/aes\"))' >/dev/null"
"$CVM" key restore --in "$TMP/aes.backup" >/dev/null 2>&1; rc=$?
check "restore while the name is soft-deleted is refused" test $rc -ne 0
check "purge" "$CVM" key purge aes
check "restore after purge" "$CVM" key restore --in "$TMP/aes.backup"
check "restored key unwraps the earlier wrap" "$CVM" key unwrap aes --alg A256KW --in "$TMP/kw.bin" --out "$TMP/kwu2.bin"
check "restored key round trip equal" cmp -s "$TMP/secret.bin" "$TMP/kwu2.bin"
check "rng 32 bytes" bash -o pipefail -c "[[ \$('$CVM' key rng --count 32 | tr -d '\n' | wc -c) -eq 64 ]]"
"$CVM" key rng --count 0 >/dev/null 2>&1; rc=$?
check "rng --count 0 is a usage error" test $rc -eq 2

check "audit verify" "$CVM" audit verify "${AUDIT[@]}"
check "audit export --out" "$CVM" audit export "${AUDIT[@]}" --since 0 --out "$TMP/audit.jsonl"
check "... writes JSON lines with seq and hash" bash -c "head -1 '$TMP/audit.jsonl' | jq -e '.seq and .hash' >/dev/null"
check "... one line per record" test "$(wc -l <"$TMP/audit.jsonl")" -ge 50

stop_pid "$CVMD_PID"
out=$("$CVM" hsm status 2>&1); rc=$?
check "hsm status with cvmd down: exit 3 (cannot connect)" test $rc -eq 3

# The key-service half of the README's main command (demo.sh runs all of it).
check "cvm demo --no-vm (key-service half) runs end to end" "$CVM" demo --no-vm
finish
