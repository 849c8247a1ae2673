#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Confidential VM end to end under QEMU (TCG unless KVM with SMM is usable), emulated TEE:
#  1. happy path: the guest attests, the orchestrator releases the disk key to the guest's
#     key, the guest unlocks its LUKS2 disk and reaches "cvm-guest: ready"; HTTP answers.
#  2. tampered kernel command line: the launch measurement differs, the key service refuses
#     the release, the guest prints the failed check and powers off; the VM ends failed.
#  3. vTPM state persists across restarts: the guest seals a value in its vTPM in boot 1 and
#     unseals the same value (same SHA-256 on the console) in boot 2 (vm start) and boot 3
#     (vm restart: stop, then start with the recorded launch arguments, transitions audited);
#     the sealed VMGS holds none of the running vTPM's plaintext state.
#  4. confidential data disk: data1 (cvm disk create, same DES key as the OS disk) is unlocked
#     by the guest with the key released for the OS disk, formatted in boot 1 and mounted on
#     /data/data1, where a boot counter grows in every later boot; the host's image never holds
#     the guest's plaintext. A data disk wrapped by another key is refused by vm start; one
#     whose token names the right key but wraps a secret that does not open it stops the boot
#     in the guest (cvm-guest: FAILED data-disk, power-off, nothing mounted).
# Skips (exit 77, counted as skipped) only when /dev/kvm is absent AND a TCG boot exceeds
# CVM_VM_BOOT_BOUND seconds (default 240).
source "$(dirname "$0")/lib-vm.sh"

# ---- 4a. a data disk wrapped by another key: vm start refuses it before anything runs --------
"$CVM" "${KVU[@]}" key create other-key --kty RSA-HSM --size 2048 >/dev/null
"$CVM" "${ADMIN[@]}" role assign --role "Managed HSM Crypto Service Encryption User" --principal cvo \
  --scope /keys/other-key >/dev/null
"$CVM" "${KVU[@]}" des create des2 --type customer --key "$BASE/keys/other-key" --identity cvo >/dev/null
check "data disk data2 on another key (des2)" "$CVM" "${KVU[@]}" disk create --name data2 --size 64M \
  --kind data --des des2 --path "$TMP/data2.img" >/dev/null
check "vm create vm2 (OS disk as vm1, data disk data2)" "$CVM" vm create vm2 \
  --size Standard_DC2ads_v5 --tee emulated --os-disk osdisk --des des1 --data-disk data2 >/dev/null
boot vm2 "$APPEND" "$TMP/refused.log"
wait "$VM_PID"; rc=$?
check "vm start refuses a data disk wrapped by another key (exit $rc)" test $rc -ne 0
check "... naming the disk, its key and the OS disk's key ($(grep -o 'data disk data2: .*' "$TMP/refused.log"))" \
  grep -q "data disk data2: its secret is wrapped by key $BASE/keys/other-key/.*, not by the OS disk's key $KID (the only key released to the guest)" "$TMP/refused.log"
check "... before QEMU ran (vm2 stopped, no console)" bash -c \
  "'$CVM' --json vm show vm2 | jq -e '.state == \"stopped\"' >/dev/null && test ! -e '$CVM_STATE_DIR/vms/vm2/console.log'"
"$CVM" vm create vm3 --size Standard_DC2ads_v5 --tee emulated --os-disk osdisk --des des1 \
  --data-disk nosuchdisk >/dev/null
boot vm3 "$APPEND" "$TMP/refused3.log"
wait "$VM_PID"
check "vm start refuses a data disk the registry does not know, naming it" \
  grep -q "data disk nosuchdisk" "$TMP/refused3.log"
DATA_IMG=$TMP/data1.img
DATA_KB0=$(du -k "$DATA_IMG" | cut -f1)

# ---- 1. happy path --------------------------------------------------------------------------
t0=$(date +%s)
boot vm1 "$APPEND" "$TMP/boot1.log"
if ! wait_console "cvm-guest: ready" "$BOUND"; then
  if [[ ! -e /dev/kvm ]] && ! console | grep -q "cvm-guest: FAILED"; then
    echo "SKIP: no /dev/kvm and the TCG boot did not finish within ${BOUND}s"
    kill "$VM_PID" 2>/dev/null; wait "$VM_PID" 2>/dev/null
    trap - EXIT; finish >/dev/null; exit 77
  fi
  not_ok "boot 1 reaches cvm-guest: ready"
  console | tail -20
else
  ok "boot 1 reaches cvm-guest: ready in $(( $(date +%s) - t0 ))s (attest -> release -> unlock)"
fi
check "console shows attestation and unlock" bash -c "$(declare -f console); console | grep -q 'cvm-guest: attested' && console | grep -q 'cvm-guest: unlocked'"
check "the release was wrapped to a key inside the vTPM" bash -c "$(declare -f console); console | grep -q 'cvm-guest: ephemeral key in the vTPM (RSA-2048, decrypt-only, non-exportable)'"
check "VM state running" bash -c "'$CVM' --json vm show vm1 | jq -e '.state == \"running\"' >/dev/null"
check "guest HTTP service answers" bash -c "curl -s --max-time 10 http://127.0.0.1:$PORT/ | grep -q 'unlocked through attestation'"
# The temp disk: mapped by cvm-guest under a key of its own, formatted and written by the
# guest; the host's file holds the guest's writes (blocks allocated) but never the plaintext.
TEMP_IMG=$XDG_RUNTIME_DIR/opencvm/vms/vm1/temp.img
check "temp disk encrypted in the guest with an ephemeral key" bash -c "$(declare -f console); console | grep -q 'cvm-guest: temp disk /dev/vd[a-z] encrypted with an ephemeral key'"
check "temp disk formatted and written in the guest" bash -c "$(declare -f console); console | grep -q 'cvm-guest: temp disk on /mnt/resource (4096 marker lines written)'"
check "the host's temp disk file received the guest's writes" test "$(du -k "$TEMP_IMG" 2>/dev/null | cut -f1)" -gt 100
check "... as ciphertext only (no marker in it)" bash -c "! grep -q -a OPENCVM-TEMP-DISK-PLAINTEXT-MARKER '$TEMP_IMG'"
check "data disk: vm start attaches data1" grep -q "^data disk data1: $DATA_IMG (guest: /dev/mapper/data1)" "$TMP/boot1.log"
check "data disk: the guest unlocked it with the released key" bash -c "$(declare -f console); console | grep -q 'cvm-guest: unlocked /dev/vd[a-z] as /dev/mapper/data1'"
check "data disk: formatted in boot 1 and mounted ($(console | grep -a -m1 -o 'cvm-guest: data disk data1 on.*'))" \
  bash -c "$(declare -f console); console | grep -q 'cvm-guest: data disk data1 on /data/data1 (boot 1)'"
check "data disk: a single attestation and release for all disks" test "$(console | grep -c 'cvm-guest: attested')" = 1
# vm validate on the running VM: every check, the launch measurement recomputed from the boot
# artifacts as the reference; and the same VM against another reference fails bootIntegrity.
"$CVM" --json vm validate vm1 --kernel "$IMG/vmlinuz" --initrd "$IMG/initrd.img" --append "$APPEND" \
  --os-image "$TMP/os.img" >"$TMP/validate.json" 2>&1; rc=$?
jq -r '.[] | select(.passed | not) | "    failed: \(.check): \(.detail)"' "$TMP/validate.json" 2>/dev/null
check "vm validate on the running VM: all checks pass (exit $rc)" bash -c \
  "[ $rc -eq 0 ] && jq -e 'map(.passed) | all' '$TMP/validate.json' >/dev/null"
check "... including attestation, bootIntegrity, secureBoot, vTPM and dataDisks" jq -e \
  '[.[] | select(.passed) | .check] | contains(["attestation", "bootIntegrity", "secureBoot", "vTPM", "dataDisks", "diskEncryption"])' \
  "$TMP/validate.json"
"$CVM" --json vm validate vm1 --kernel "$IMG/vmlinuz" --initrd "$IMG/initrd.img" \
  --append "$APPEND init=/bin/sh" --os-image "$TMP/os.img" >"$TMP/validate2.json" 2>&1; rc=$?
check "... against another command line: exit 1, bootIntegrity fails" bash -c \
  "[ $rc -eq 1 ] && jq -e '.[] | select(.check == \"bootIntegrity\") | .passed == false' '$TMP/validate2.json' >/dev/null"
check "vm stop" "$CVM" vm stop vm1
wait "$VM_PID"; rc=$?
check "data disk: the host's image received the guest's writes ($DATA_KB0 -> $(du -k "$DATA_IMG" | cut -f1) KiB)" \
  test "$(du -k "$DATA_IMG" | cut -f1)" -gt $((DATA_KB0 + 100))
check "data disk: ... as ciphertext only (no marker in it)" bash -c "! grep -q -a OPENCVM-DATA-DISK-PLAINTEXT-MARKER '$DATA_IMG'"
check "the temp disk is deleted when the boot ends" test ! -e "$TEMP_IMG"
check "vm start returns after power-down" test $rc -eq 0
check "VM state stopped" bash -c "'$CVM' --json vm show vm1 | jq -e '.state == \"stopped\"' >/dev/null"
check "VMGS sealed" test -s "$CVM_STATE_DIR/vms/vm1/vmgs.bin"
check "VMGS key stored only wrapped by the disk key" \
  bash -c "jq -e '.alg == \"RSA-OAEP-256\" and (.kid | test(\"/keys/des-key/\"))' '$CVM_STATE_DIR/vms/vm1/vmgs.key.wrapped' >/dev/null"
check "no plaintext vTPM state left in the runtime dir" test ! -e "$XDG_RUNTIME_DIR/opencvm/vms/vm1/tpm"
check "VMGS holds no plaintext vTPM state" bash -c "! grep -q -a 'tpm2-00.permall' '$CVM_STATE_DIR/vms/vm1/vmgs.bin'"
check "orchestrator release audited" bash -c "sqlite3 '$TMP/cvmd/cvmd.db' \"select count(*) from cvm_audit where operation='vms/release' and result='ok'\" | grep -qx 1"
check "state changes audited" bash -c "sqlite3 '$TMP/cvmd/cvmd.db' \"select count(*) from cvm_audit where operation='vms/state'\" | grep -qv '^0$'"
check "the host holds no plaintext disk secret (cvmd log, store, VM dirs, boot log)" bash -c \
  "! grep -rqa -e '$SECRET_HEX' -e '$SECRET_B64' '$TMP/cvmd' '$TMP/cvmd.log' '$TMP/boot1.log' '$CVM_STATE_DIR' '$XDG_RUNTIME_DIR'"

# ---- 3. vTPM persists across restart: boot 2 (vm start) and boot 3 (vm restart) restore the
# same vTPM; the value the guest sealed in it in boot 1 unseals to the same bytes -------------
VMDIR=$CVM_STATE_DIR/vms/vm1
DB=$TMP/cvmd/cvmd.db
# vtpm_sha sealed|unsealed: the SHA-256 the guest printed for its vTPM value (never the value)
vtpm_sha() { console | sed -n "s/.*cvm-guest: vtpm $1 sha256=\([0-9a-f]\{64\}\).*/\1/p" | tail -n 1; }
vtpm_failed() { console | grep 'cvm-guest: vtpm FAILED' | tail -n 1; }
# hex_chunks FILE: 32-byte windows of FILE (hex, one a line) with at least 16 distinct bytes,
# so zero runs and padding never match by chance
hex_chunks() {
  od -An -v -tx1 -w32 "$1" | tr -d ' ' | awk 'length($0) == 64 { split("", s); n = 0
    for (i = 1; i < 64; i += 2) { b = substr($0, i, 2); if (!(b in s)) { s[b] = 1; n++ } }
    if (n >= 16) print }'
}
# holds_chunk CHUNKS FILE: FILE contains any of the chunks, at any byte offset
holds_chunk() { od -An -v -tx1 "$2" | tr -d ' \n' | grep -q -F -f "$1"; }
EMPTY_SHA=$(printf '' | sha256sum | cut -d' ' -f1)
SEALED=$(vtpm_sha sealed)
check "boot 1: the guest sealed a vTPM value (sha256=${SEALED:-none}) $(vtpm_failed)" \
  test -n "$SEALED" -a "$SEALED" != "$EMPTY_SHA"
cp "$VMDIR/vmgs.bin" "$TMP/vmgs-1.bin"

: > "$VMDIR/console.log"
boot vm1 "$APPEND" "$TMP/boot2.log"
if wait_console "cvm-guest: ready" "$BOUND"; then ok "boot 2 reaches cvm-guest: ready"; else not_ok "boot 2 reaches cvm-guest: ready"; fi
UNSEALED2=$(vtpm_sha unsealed)
check "boot 2: the guest unsealed the value sealed in boot 1 (sha256=${UNSEALED2:-none}) $(vtpm_failed)" \
  test -n "$SEALED" -a "$UNSEALED2" = "$SEALED"
check "boot 2: no new value sealed (the persistent object came back with the vTPM)" \
  test -z "$(vtpm_sha sealed)"
check "boot 2: the data disk kept its data ($(console | grep -a -m1 -o 'cvm-guest: data disk data1 on.*'))" \
  bash -c "$(declare -f console); console | grep -q 'cvm-guest: data disk data1 on /data/data1 (boot 2)'"
# The running vTPM's plaintext state (a test copy) to look for in the sealed VMGS later.
cp "$XDG_RUNTIME_DIR/opencvm/vms/vm1/tpm/tpm2-00.permall" "$TMP/permall" 2>/dev/null
hex_chunks "$TMP/permall" > "$TMP/permall.chunks"
check "plaintext vTPM state of the running VM sampled ($(wc -l < "$TMP/permall.chunks") chunks)" \
  test "$(wc -l < "$TMP/permall.chunks")" -ge 32

# boot 3: vm restart stops boot 2 (its supervisor seals the VMGS) and boots with the arguments
# vm start recorded.
check "launch arguments recorded by vm start (no secret)" bash -c \
  "jq -e '.kernel and .initrd and .append and (has(\"clientSecret\") | not)' '$VMDIR/launch.json' >/dev/null"
SEQ0=$(sqlite3 "$DB" "select max(seq) from cvm_audit")
OLD_PID=$VM_PID
: > "$VMDIR/console.log"
"$CVM" "${ORCH[@]}" vm restart vm1 >"$TMP/boot-restart.log" 2>&1 &
VM_PID=$!
wait "$OLD_PID"; rc=$?
check "vm restart: boot 2's supervisor returns after the power-down" test $rc -eq 0
if wait_console "cvm-guest: ready" "$BOUND"; then ok "boot 3 (vm restart) reaches cvm-guest: ready"; else not_ok "boot 3 (vm restart) reaches cvm-guest: ready"; cat "$TMP/boot-restart.log"; fi
UNSEALED3=$(vtpm_sha unsealed)
check "boot 3: the guest unsealed the same value again (sha256=${UNSEALED3:-none}) $(vtpm_failed)" \
  test -n "$SEALED" -a "$UNSEALED3" = "$SEALED"
check "boot 3: the data disk counts its third boot ($(console | grep -a -m1 -o 'cvm-guest: data disk data1 on.*'))" \
  bash -c "$(declare -f console); console | grep -q 'cvm-guest: data disk data1 on /data/data1 (boot 3)'"
TRANS=$(sqlite3 "$DB" "select detail from cvm_audit where operation='vms/state' and key_name='vm1' and seq > $SEQ0 order by seq" |
  jq -r '"\(.from)>\(.to)" + (if .to == "starting" then "(\(.reason))" else "" end)' | paste -sd' ')
check "vm restart: transitions audited in order ($TRANS)" test "$TRANS" = \
  "running>stopping stopping>stopped stopped>starting(restart) starting>attesting attesting>running"
"$CVM" vm stop vm1 >/dev/null; wait "$VM_PID"
check "boot 1 manufactured the vTPM" grep -q "vTPM: new" "$TMP/boot1.log"
check "boot 2 restored it from the VMGS" grep -q "vTPM: restored from the sealed VMGS" "$TMP/boot2.log"
check "boot 3 (vm restart) restored it from the VMGS" grep -q "vTPM: restored from the sealed VMGS" "$TMP/boot-restart.log"
check "VMGS re-sealed after boots 2 and 3 (fresh IV)" bash -c "! cmp -s '$TMP/vmgs-1.bin' '$VMDIR/vmgs.bin'"
# The chunk search finds plaintext state where it is (a VMGS with the state appended) ...
cat "$VMDIR/vmgs.bin" "$TMP/permall" > "$TMP/vmgs-leaky.bin"
check "the plaintext-state search finds state that is there" holds_chunk "$TMP/permall.chunks" "$TMP/vmgs-leaky.bin"
# ... and none of it in the sealed VMGS files.
check "sealed VMGS (boot 1 and after boot 3) holds no plaintext vTPM state" bash -c \
  "$(declare -f holds_chunk); ! holds_chunk '$TMP/permall.chunks' '$TMP/vmgs-1.bin' && ! holds_chunk '$TMP/permall.chunks' '$VMDIR/vmgs.bin'"
rm -f "$TMP/permall" "$TMP/vmgs-leaky.bin"
check "data disk: after three boots the host's image still holds no marker" bash -c \
  "! grep -q -a OPENCVM-DATA-DISK-PLAINTEXT-MARKER '$DATA_IMG'"
check "vm restart of a stopped VM is refused, naming the state" bash -c \
  "'$CVM' vm restart vm1 2>&1 | grep -q 'VM vm1 is stopped; restart needs a running VM'"

# ---- 2. tampered kernel command line --------------------------------------------------------
: > "$CVM_STATE_DIR/vms/vm1/console.log"
boot vm1 "$APPEND init=/bin/sh" "$TMP/boot3.log"
wait_console "cvm-guest: FAILED" "$BOUND"
wait "$VM_PID"
check "tampered cmdline: release refused, named on the console" bash -c "$(declare -f console); console | grep -q 'cvm-guest: FAILED release:.*release policy'"
check "tampered cmdline: never ready" bash -c "$(declare -f console); ! console | grep -q 'cvm-guest: ready'"
check "tampered cmdline: no data disk unlocked" bash -c "$(declare -f console); ! console | grep -q 'mapper/data1'"
check "tampered cmdline: VM recorded the refusal" bash -c "sqlite3 '$TMP/cvmd/cvmd.db' \"select count(*) from cvm_audit where operation='vms/release' and result<>'ok'\" | grep -qx 1"
check "VM ends stopped after the failed boot" bash -c "'$CVM' --json vm show vm1 | jq -e '.state == \"stopped\"' >/dev/null"

# ---- 4b. a data disk whose token names the released key but whose secret does not open it ---
# (the host checks the key; only the guest can find out that the secret is wrong)
check "data disk data3 (cvm disk create, des1)" "$CVM" "${KVU[@]}" disk create --name data3 --size 64M \
  --kind data --des des1 --path "$TMP/data3.img" >/dev/null
TOKEN_ID=$(cryptsetup luksDump --dump-json-metadata "$TMP/data3.img" |
  jq -r '.tokens | to_entries[] | select(.value.type == "opencvm-hsm") | .key')
head -c 32 /dev/urandom > "$TMP/wrong-secret"
"$CVM" "${KVU[@]}" key wrap des-key --alg RSA-OAEP-256 --in "$TMP/wrong-secret" --out "$TMP/wrong-wrapped" >/dev/null
shred -u "$TMP/wrong-secret"
cryptsetup luksDump --dump-json-metadata "$TMP/data3.img" |
  jq --arg id "$TOKEN_ID" --arg w "$(basenc --base64url -w0 "$TMP/wrong-wrapped" | tr -d '=')" \
    '.tokens[$id] | .wrapped = $w' > "$TMP/wrong-token.json"
check "data3's token now wraps a secret that is not its keyslot's" bash -c \
  "cryptsetup token remove --token-id '$TOKEN_ID' '$TMP/data3.img' && cryptsetup token import --json-file '$TMP/wrong-token.json' '$TMP/data3.img'"
"$CVM" vm create vm4 --size Standard_DC2ads_v5 --tee emulated --os-disk osdisk --des des1 \
  --data-disk data3 >/dev/null
boot vm4 "$APPEND" "$TMP/boot4.log"
console4() { strings "$CVM_STATE_DIR/vms/vm4/console.log" 2>/dev/null; }
for ((i = 0; i < BOUND; i++)); do
  console4 | grep -q 'cvm-guest: FAILED\|cvm-guest: ready' && break
  kill -0 "$VM_PID" 2>/dev/null || break
  sleep 1
done
wait "$VM_PID"
check "wrong data disk secret: the guest names the disk and the failed unlock ($(console4 | grep -a -m1 -o 'cvm-guest: FAILED.*'))" \
  bash -c "$(declare -f console4); console4 | grep -q 'cvm-guest: FAILED data-disk: /dev/vd[a-z] (serial data3): the released key does not open any keyslot'"
check "wrong data disk secret: unlocked the OS disk first, never ready, nothing mounted" bash -c \
  "$(declare -f console4); console4 | grep -q 'cvm-guest: unlocked /dev/vda as /dev/mapper/root' && ! console4 | grep -q 'cvm-guest: ready\|data disk data3 on'"
check "wrong data disk secret: the VM powered off and ends stopped" bash -c \
  "'$CVM' --json vm show vm4 | jq -e '.state == \"stopped\"' >/dev/null"

cleanup
trap - EXIT
finish
