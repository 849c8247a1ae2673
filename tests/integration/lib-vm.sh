# SPDX-License-Identifier: Apache-2.0
# Shared setup of the confidential-VM integration scripts (vm-boot.sh, vm-refusals.sh); sourced.
# Builds (or reuses) the guest image, starts cvmd --dev (extra cvmd arguments: VM_CVMD_ARGS),
# creates the key user, the DES key (release policy pinning the launch measurement APPEND
# gives), the orchestrator identity with its roles, the LUKS2 OS disk with its opencvm-hsm
# token, the DES des1 with the data disk data1 and the VM vm1 (OS, data and temp disk);
# defines boot, console and wait_console. Skips (exit 77) when a tool
# is missing.
source "$(dirname "${BASH_SOURCE[0]}")/lib-cvmd.sh"
CVM=$BUILD/cvm
GUEST=${CVM_GUEST_BIN:-$BUILD/cvm-guest}
BOUND=${CVM_VM_BOOT_BOUND:-240}
VM_PID=
# The VM's supervisor (cvm vm start) is ours: stop it by pid before cvmd goes.
cleanup() {
  if [[ -n $VM_PID ]] && kill -0 "$VM_PID" 2>/dev/null; then
    kill -TERM "$VM_PID"; wait "$VM_PID" 2>/dev/null
  fi
}
trap 'cleanup; finish' EXIT

for tool in qemu-system-x86_64 swtpm swtpm_setup cryptsetup basenc; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIP: $tool not installed (scripts/setup installs it)"
    trap - EXIT; rm -rf "$TMP"; exit 77
  fi
done

IMG=${CVM_GUEST_IMAGE_DIR:-$BUILD/guest-image}
check "guest image builds (or is cached)" "$SRC/scripts/build-guest-image" --out "$IMG" --cvm-guest "$GUEST"

start_dev "$TMP/dev.json" "$TMP/cvmd.log" --state-dir "$TMP/cvmd" ${VM_CVMD_ARGS[@]+"${VM_CVMD_ARGS[@]}"} || { not_ok "cvmd --dev starts"; exit 1; }
ok "cvmd --dev starts"
BASE=$(jq -r .base_url "$TMP/dev.json")
TENANT=$(jq -r .tenant "$TMP/dev.json")
CA=$(jq -r .ca_cert "$TMP/dev.json")
EMU=$TMP/cvmd/tee-emulator
ADMIN=(--dev-info "$TMP/dev.json")
# The administrator holds no key permissions: a key user creates and uses the DES key.
"$CVM" "${ADMIN[@]}" identity create kvuser --secret-out "$TMP/kvuser.secret" --json > "$TMP/kvuser.json"
"$CVM" "${ADMIN[@]}" role assign --role "Managed HSM Crypto User" --principal kvuser >/dev/null
KVU=(--url "$BASE" --tenant "$TENANT" --client-id "$(jq -r .client_id "$TMP/kvuser.json")"
     --client-secret-file "$TMP/kvuser.secret" --ca-cert "$CA")
# VM objects live in cvmd's store, beside the key service's audit chain.
export CVM_STATE_DIR=$TMP/state XDG_RUNTIME_DIR=$TMP/run CVM_STORE=sqlite:$TMP/cvmd/cvmd.db
mkdir -p "$CVM_STATE_DIR" "$XDG_RUNTIME_DIR"

APPEND="console=ttyS0 panic=-1 quiet cvm.tee=emulator cvm.vm=vm1 cvm.disk=/dev/vda"
MEAS=$("$CVM" vm measure --kernel "$IMG/vmlinuz" --initrd "$IMG/initrd.img" --append "$APPEND")
check "launch measurement computed" test ${#MEAS} -eq 96

# The disk key: released only to an SEV-SNP VM attested by this cvmd whose launch measurement
# is the pinned one (emulated evidence accepted explicitly, as cvmd --dev trusts the emulator).
jq -n --arg a "$BASE" --arg m "$MEAS" '{version:"1.0.0", anyOf:[{authority:$a, allOf:[
  {claim:"x-ms-attestation-type", equals:"sevsnpvm"},
  {claim:"x-ms-sevsnpvm-is-debuggable", equals:false},
  {claim:"x-opencvm-emulated", equals:true},
  {claim:"x-ms-sevsnpvm-launchmeasurement", equals:$m}]}]}' > "$TMP/policy.json"
"$CVM" "${KVU[@]}" --json key create des-key --kty RSA-HSM --size 2048 --exportable \
  --release-policy "$TMP/policy.json" > "$TMP/key.json"
KID=$(jq -r .key.kid "$TMP/key.json")
check "DES key with a release policy" test -n "$KID" -a "$KID" != null

# The orchestrator's identity holds only the Release User role on that key.
"$CVM" "${ADMIN[@]}" --json identity create cvo --kind managed --secret-out "$TMP/cvo.secret" > "$TMP/cvo.json"
CVO=$(jq -r .client_id "$TMP/cvo.json")
check "orchestrator identity" test -n "$CVO" -a "$CVO" != null
check "Release User role for the orchestrator" "$CVM" "${ADMIN[@]}" role assign \
  --role "Managed HSM Crypto Service Release User" --principal cvo --scope /keys/des-key
# ... and wrap/unwrap on it for the VMGS key (never the key material itself).
check "Encryption User role for the orchestrator" "$CVM" "${ADMIN[@]}" role assign \
  --role "Managed HSM Crypto Service Encryption User" --principal cvo --scope /keys/des-key
ORCH=(--url "$BASE" --tenant "$TENANT" --client-id "$CVO" --client-secret-file "$TMP/cvo.secret" --ca-cert "$CA")

# Confidential OS disk: the root filesystem inside LUKS2 (cryptsetup's offline encryption;
# it refuses the whole GPT image as "broken LUKS metadata"), keyslot passphrase = a random
# secret wrapped by the DES key in an opencvm-hsm token (disk.h format).
cp "$IMG/rootfs.img" "$TMP/os.img"
truncate -s +32M "$TMP/os.img"
head -c 32 /dev/urandom > "$TMP/secret"
cryptsetup reencrypt --encrypt --force-offline-reencrypt --type luks2 --reduce-device-size 32M \
  --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$TMP/secret" --batch-mode \
  "$TMP/os.img" >/dev/null 2>&1
check "OS disk encrypted (LUKS2)" cryptsetup isLuks --type luks2 "$TMP/os.img"
"$CVM" "${KVU[@]}" key wrap des-key --alg RSA-OAEP-256 --in "$TMP/secret" --out "$TMP/wrapped" >/dev/null
WRAPPED=$(basenc --base64url -w0 "$TMP/wrapped" | tr -d '=')
jq -n --arg k "$KID" --arg w "$WRAPPED" '{type:"opencvm-hsm", keyslots:["0"], key_url:$k,
  alg:"RSA-OAEP-256", wrapped:$w, des:"des1", version:1}' > "$TMP/token.json"
check "opencvm-hsm token on the disk" cryptsetup token import --json-file "$TMP/token.json" "$TMP/os.img"
SECRET_HEX=$(od -An -tx1 -v "$TMP/secret" | tr -d ' \n')
SECRET_B64=$(basenc --base64url -w0 "$TMP/secret" | tr -d '=')
shred -u "$TMP/secret"

# The DES des1 pinned to the key version the OS disk's token names (its identity is the
# orchestrator's, which holds the Encryption User role on the key) and a confidential data disk
# on it, made by `cvm disk create`: its secret is wrapped by the same key, so the guest unlocks
# it with the key released for the OS disk.
check "DES des1 on the disk key" "$CVM" "${KVU[@]}" des create des1 --type customer --key "$KID" \
  --identity cvo >/dev/null
check "data disk data1 (cvm disk create --kind data --des des1)" "$CVM" "${KVU[@]}" disk create \
  --name data1 --size 64M --kind data --des des1 --path "$TMP/data1.img" >/dev/null

# A "d" size: the VM also gets a temp disk, fresh and under an ephemeral guest key each boot.
check "vm create" "$CVM" vm create vm1 --size Standard_DC2ads_v5 --tee emulated --os-disk osdisk \
  --des des1 --temp-disk --data-disk data1 >/dev/null
PORT=$(free_port)

# boot NAME APPEND LOG [vm start options...]: one boot in the background; sets VM_PID.
boot() {
  "$CVM" "${ORCH[@]}" vm start "$1" --kernel "$IMG/vmlinuz" --initrd "$IMG/initrd.img" \
    --append "$2" --os-image "$TMP/os.img" --emulator-dir "$EMU" \
    --memory-mib 768 --timeout 600 --hostfwd-port "$PORT" "${@:4}" >"$3" 2>&1 &
  VM_PID=$!
}
console() { strings "$CVM_STATE_DIR/vms/vm1/console.log" 2>/dev/null; }
# wait_console PATTERN SECONDS: until the console shows PATTERN or the VM process ends.
wait_console() {
  local i
  for ((i = 0; i < $2; i++)); do
    console | grep -q "$1" && return 0
    kill -0 "$VM_PID" 2>/dev/null || { console | grep -q "$1"; return; }
    sleep 1
  done
  return 1
}
