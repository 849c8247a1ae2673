# SPDX-License-Identifier: Apache-2.0
# Shared by bench-vm-release.sh and bench-vm-boot.sh: a cvmd --dev in $W, the identities and
# roles of tests/integration/vm-boot.sh, the DES key with a release policy, and a VM object.
# Callers set CVMD, CVM and W, and source this file; PIDS collects background processes.
PIDS=()
cleanup() {
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

load1() { cut -d' ' -f1 /proc/loadavg; }

# start_cvmd: cvmd --dev with its state (store, audit, emulator) under $W/cvmd.
start_cvmd() {
  "$CVMD" --dev --listen 127.0.0.1:0 --state-dir "$W/cvmd" --dev-info "$W/dev.json" --log-level warn \
    >"$W/cvmd.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 600); do [[ -s $W/dev.json ]] && break; sleep 0.1; done
  [[ -s $W/dev.json ]] || { echo "cvmd did not start:"; cat "$W/cvmd.log"; exit 1; }
  BASE=$(jq -r .base_url "$W/dev.json"); TENANT=$(jq -r .tenant "$W/dev.json"); CA=$(jq -r .ca_cert "$W/dev.json")
  EMU=$W/cvmd/tee-emulator
  ADMIN=(--dev-info "$W/dev.json")
  export CVM_STATE_DIR=$W/state XDG_RUNTIME_DIR=$W/run CVM_STORE=sqlite:$W/cvmd/cvmd.db
  mkdir -p "$CVM_STATE_DIR" "$XDG_RUNTIME_DIR"
}

# setup_des_key MEASUREMENT_HEX: a key user creates des-key (RSA-HSM 2048, exportable) released
# only to an emulated, non-debuggable SEV-SNP VM with that launch measurement; the orchestrator
# identity "cvo" holds only Crypto Service Release User (+ Encryption User for the VMGS key, as
# in vm-boot.sh) on it. Sets KID, KVU (key user options) and ORCH (orchestrator options).
setup_des_key() {
  "$CVM" "${ADMIN[@]}" identity create kvuser --secret-out "$W/kvuser.secret" --json >"$W/kvuser.json"
  "$CVM" "${ADMIN[@]}" role assign --role "Managed HSM Crypto User" --principal kvuser >/dev/null
  KVU=(--url "$BASE" --tenant "$TENANT" --client-id "$(jq -r .client_id "$W/kvuser.json")"
       --client-secret-file "$W/kvuser.secret" --ca-cert "$CA")
  jq -n --arg a "$BASE" --arg m "$1" '{version:"1.0.0", anyOf:[{authority:$a, allOf:[
    {claim:"x-ms-attestation-type", equals:"sevsnpvm"},
    {claim:"x-ms-sevsnpvm-is-debuggable", equals:false},
    {claim:"x-opencvm-emulated", equals:true},
    {claim:"x-ms-sevsnpvm-launchmeasurement", equals:$m}]}]}' >"$W/policy.json"
  "$CVM" "${KVU[@]}" --json key create des-key --kty RSA-HSM --size 2048 --exportable \
    --release-policy "$W/policy.json" >"$W/key.json"
  KID=$(jq -r .key.kid "$W/key.json")
  [[ -n $KID && $KID != null ]] || { echo "DES key not created"; exit 1; }
  "$CVM" "${ADMIN[@]}" --json identity create cvo --kind managed --secret-out "$W/cvo.secret" >"$W/cvo.json"
  CVO=$(jq -r .client_id "$W/cvo.json")
  "$CVM" "${ADMIN[@]}" role assign --role "Managed HSM Crypto Service Release User" --principal cvo \
    --scope /keys/des-key >/dev/null
  "$CVM" "${ADMIN[@]}" role assign --role "Managed HSM Crypto Service Encryption User" --principal cvo \
    --scope /keys/des-key >/dev/null
  ORCH=(--url "$BASE" --tenant "$TENANT" --client-id "$CVO" --client-secret-file "$W/cvo.secret" --ca-cert "$CA")
}

# wrap_disk_secret: a random 32-byte disk secret, wrapped by des-key (RSA-OAEP-256) into
# $W/wrapped.b64u; SECRET_SHA256 is its digest. The plaintext stays in $W/secret for the caller.
wrap_disk_secret() {
  head -c 32 /dev/urandom >"$W/secret"
  "$CVM" "${KVU[@]}" key wrap des-key --alg RSA-OAEP-256 --in "$W/secret" --out "$W/wrapped" >/dev/null
  basenc --base64url -w0 "$W/wrapped" | tr -d '=' >"$W/wrapped.b64u"
  SECRET_SHA256=$(sha256sum "$W/secret" | cut -d' ' -f1)
}
