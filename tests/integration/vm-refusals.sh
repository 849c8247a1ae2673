#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Confidential VM refusals under QEMU, emulated TEE (setup shared with vm-boot.sh: lib-vm.sh).
# The VM must not get its disk key, must say why and must end stopped; the refusal is audited:
#  d. the DES key disabled and e. expired: `cvm vm start` refuses at its pre-flight check,
#     naming the key and why, before QEMU runs (no boot);
#  a. debuggable SEV-SNP guest policy (--snp-policy with bit 19): the attestation service
#     refuses the evidence, the guest prints "FAILED attest" (audited as vms/attest);
#  b. emulated evidence under a release policy that does not name x-opencvm-emulated: the key
#     service refuses the release, "FAILED release" (vms/release and keys/release refused);
#  c. the orchestrator's Release User role revoked: the release is refused (403);
#  f. cvmd killed with SIGKILL while the guest boots and restarted on the same state and port:
#     the boot completes or fails cleanly, the VM ends stopped, the audit chain verifies and the
#     VM row agrees with its audited transitions.
# Skips (exit 77) when a tool is missing, or without /dev/kvm when a TCG boot exceeds
# CVM_VM_BOOT_BOUND seconds (default 240).
CVMD_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
VM_CVMD_ARGS=(--listen "127.0.0.1:$CVMD_PORT") # (f) restarts cvmd where the orchestrator looks
source "$(dirname "$0")/lib-vm.sh"
DB=$TMP/cvmd/cvmd.db
T_START=$(date +%s)

sql() { sqlite3 "$DB" "$1"; }
vm_state() { "$CVM" --json vm show vm1 | jq -r .state; }
# audited OP COND: number of records of operation OP (about vm1 for vms/*) matching COND.
audited() { sql "select count(*) from cvm_audit where operation='$1' and $2"; }
# start_sync LOG [options...]: a vm start expected to be refused before launching; sets RC.
start_sync() {
  local log=$1; shift
  boot vm1 "$APPEND" "$log" "$@"
  wait "$VM_PID"; RC=$?
}
# boot_refused CASE LOG PATTERN [options...]: a boot the guest must end with PATTERN on its
# console.
boot_refused() {
  local what=$1 log=$2 pat=$3; shift 3
  [[ -e $CVM_STATE_DIR/vms/vm1/console.log ]] && : > "$CVM_STATE_DIR/vms/vm1/console.log"
  boot vm1 "$APPEND" "$log" "$@"
  if ! wait_console "cvm-guest: FAILED" "$BOUND" && [[ ! -e /dev/kvm ]]; then
    echo "SKIP: no /dev/kvm and the TCG boot did not reach cvm-guest within ${BOUND}s"
    kill "$VM_PID" 2>/dev/null; wait "$VM_PID" 2>/dev/null
    trap - EXIT; finish >/dev/null; exit 77
  fi
  wait "$VM_PID"; RC=$?
  console | grep -a 'cvm-guest: FAILED' | head -1
  check "$what: console names the failed check" bash -c "$(declare -f console); console | grep -q '$pat'" ||
    { cat "$log"; console | tail -5; }
  check "$what: never ready" bash -c "$(declare -f console); ! console | grep -q 'cvm-guest: ready'"
  check "$what: VM ends stopped" test "$(vm_state)" = stopped
}
set_key() { "$CVM" "${KVU[@]}" key update des-key "$@" >/dev/null; }

# ---- d. DES key disabled: refused before QEMU --------------------------------------------------
check "d: DES key disabled" set_key --disable
start_sync "$TMP/d.log"
cat "$TMP/d.log"
check "d: vm start fails" test "$RC" -ne 0
check "d: the message names the key and why" grep -q 'disk key des-key is disabled' "$TMP/d.log"
check "d: QEMU never launched" bash -c "! grep -q '^starting vm1' '$TMP/d.log' && test ! -e '$CVM_STATE_DIR/vms/vm1/console.log'"
check "d: VM still stopped" test "$(vm_state)" = stopped
check "d: refusal audited (vms/release KeyDisabled, stage preflight)" test "$(audited vms/release \
  "result='KeyDisabled' and json_extract(detail,'\$.stage')='preflight'")" = 1
check "d: DES key enabled again" set_key --enable

# ---- e. DES key expired: refused before QEMU ---------------------------------------------------
check "e: DES key expired (exp an hour ago)" set_key --exp $(( $(date +%s) - 3600 ))
start_sync "$TMP/e.log"
cat "$TMP/e.log"
check "e: vm start fails" test "$RC" -ne 0
check "e: the message names the key and why" grep -q 'disk key des-key expired at' "$TMP/e.log"
check "e: QEMU never launched" bash -c "! grep -q '^starting vm1' '$TMP/e.log' && test ! -e '$CVM_STATE_DIR/vms/vm1/console.log'"
check "e: VM still stopped" test "$(vm_state)" = stopped
check "e: refusal audited (vms/release KeyExpired)" test "$(audited vms/release "result='KeyExpired'")" = 1
check "e: DES key valid again (exp in 30 days)" set_key --exp $(( $(date +%s) + 30 * 86400 ))

# A malformed guest policy is refused before anything runs, naming the option.
start_sync "$TMP/p1.log" --snp-policy 0x80000
check "--snp-policy without bit 17 refused" bash -c "test $RC -ne 0 && grep -q -- '--snp-policy: 0x80000: bit 17 must be set' '$TMP/p1.log'"
start_sync "$TMP/p2.log" --snp-policy 0xdebug
check "--snp-policy not hexadecimal refused" bash -c "test $RC -ne 0 && grep -q -- '--snp-policy: expected a hexadecimal' '$TMP/p2.log'"

# ---- a. debuggable guest policy ----------------------------------------------------------------
boot_refused a "$TMP/a.log" 'cvm-guest: FAILED attest:.*snp.policy.debug' --snp-policy 0xB0000
check "a: vm start warned about the debug policy" grep -q 'allows debugging' "$TMP/a.log"
check "a: refusal audited (vms/attest, not ok)" test "$(audited vms/attest "result<>'ok'")" = 1
check "a: no release was asked for" test "$(audited vms/release \
  "coalesce(json_extract(detail,'\$.stage'),'') <> 'preflight'")" = 0

# ---- b. emulated evidence, release policy without x-opencvm-emulated ---------------------------
jq 'del(.anyOf[0].allOf[] | select(.claim == "x-opencvm-emulated"))' "$TMP/policy.json" > "$TMP/policy-hw.json"
check "b: release policy no longer names x-opencvm-emulated" set_key --release-policy "$TMP/policy-hw.json"
rel0=$(audited vms/release "result<>'ok'")
kr0=$(audited keys/release "result<>'ok'")
boot_refused b "$TMP/b.log" 'cvm-guest: FAILED release:.*does not accept emulated evidence'
check "b: refusal audited by the orchestrator (vms/release)" test "$(audited vms/release "result<>'ok'")" = $((rel0 + 1))
check "b: refusal audited by the key service (keys/release)" test "$(audited keys/release "result<>'ok'")" = $((kr0 + 1))
check "b: release policy restored" set_key --release-policy "$TMP/policy.json"

# ---- c. Release User role revoked --------------------------------------------------------------
CVO_OID=$(jq -r .object_id "$TMP/cvo.json")
RA=$("$CVM" "${ADMIN[@]}" --json role list --scope /keys/des-key | jq -r --arg p "$CVO_OID" \
  '.value[] | select(.properties.principalId == $p and (.properties.roleDefinitionId | endswith("21dbd100-6940-42c2-9190-5d6cb909625c"))) | .name')
check "c: Release User role revoked" "$CVM" "${ADMIN[@]}" role unassign "$RA" --scope /keys/des-key
rel0=$(audited vms/release "result<>'ok'")
kr0=$(audited keys/release "result<>'ok'")
boot_refused c "$TMP/c.log" 'cvm-guest: FAILED release:.*HTTP 403'
check "c: refusal audited by the orchestrator (vms/release)" test "$(audited vms/release "result<>'ok'")" = $((rel0 + 1))
check "c: refusal audited by the key service (keys/release)" test "$(audited keys/release "result<>'ok'")" = $((kr0 + 1))
check "c: Release User role assigned again" "$CVM" "${ADMIN[@]}" role assign \
  --role "Managed HSM Crypto Service Release User" --principal cvo --scope /keys/des-key

# ---- f. cvmd killed (SIGKILL) and restarted while the guest boots ------------------------------
: > "$CVM_STATE_DIR/vms/vm1/console.log"
boot vm1 "$APPEND" "$TMP/f.log"
if wait_console "cvm-guest: tee=" "$BOUND"; then ok "f: guest agent running"; else not_ok "f: guest agent running"; fi
kill -KILL "$CVMD_PID"; wait "$CVMD_PID" 2>/dev/null
CVMD_PIDS=() # the killed pid must not be signalled again at exit
echo "f: cvmd killed at: $(console | grep -a 'cvm-guest:' | tail -1)"
start_dev "$TMP/dev.json" "$TMP/cvmd2.log" --state-dir "$TMP/cvmd" "${VM_CVMD_ARGS[@]}"
check "f: cvmd restarts on the same state and port" test "$(jq -r .base_url "$TMP/dev.json")" = "$BASE"
if wait_console "cvm-guest: ready\|cvm-guest: FAILED" "$BOUND"; then
  ok "f: the boot ended: $(console | grep -a -m1 -o 'cvm-guest: ready\|cvm-guest: FAILED.*')"
else
  not_ok "f: the boot ended (ready or FAILED)"
fi
if console | grep -q 'cvm-guest: ready'; then
  check "f: VM running after a completed boot" test "$(vm_state)" = running
  "$CVM" vm stop vm1 >/dev/null
fi
wait "$VM_PID"
check "f: VM ends stopped (never stuck starting/attesting)" test "$(vm_state)" = stopped
check "f: audit chain verifies" "$CVM" audit verify --store "sqlite:$DB"
GEN=$("$CVM" --json vm show vm1 | jq -r .generation)
check "f: VM row agrees with its audited transitions (generation $GEN)" test \
  "$(audited vms/state "key_name='vm1' and result='ok'")" = $((GEN - 1))
check "f: last audited transition is to stopped" test "$(sql "select json_extract(detail,'\$.to') \
  from cvm_audit where operation='vms/state' and key_name='vm1' and result='ok' order by rowid desc limit 1")" = stopped
check "f: key service answers after the restart" "$CVM" "${KVU[@]}" key show des-key

echo "vm-refusals: $(( $(date +%s) - T_START ))s after setup"
cleanup
trap - EXIT
finish
