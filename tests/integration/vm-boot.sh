#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Confidential VM end to end under QEMU (TCG unless KVM with SMM is usable), emulated TEE:
#  1. happy path: the guest attests, the orchestrator releases the disk key to the guest's
#     key, the guest unlocks its LUKS2 disk and reaches "cvm-guest: ready"; HTTP answers.
#  2. tampered kernel command line: the launch measurement differs, the key service refuses
#     the release, the guest prints the failed check and powers off; the VM ends failed.
#  3. vTPM state persists across restarts: boot 1 seals the VMGS, boot 2 restores it (the
#     same vTPM: EK unchanged), and the sealed VMGS holds no plaintext vTPM state.
# Skips (exit 77, counted as skipped) only when /dev/kvm is absent AND a TCG boot exceeds
# CVM_VM_BOOT_BOUND seconds (default 240).
source "$(dirname "$0")/lib-vm.sh"

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
check "VM state running" bash -c "'$CVM' --json vm show vm1 | jq -e '.state == \"running\"' >/dev/null"
check "guest HTTP service answers" bash -c "curl -s --max-time 10 http://127.0.0.1:$PORT/ | grep -q 'unlocked through attestation'"
check "vm stop" "$CVM" vm stop vm1
wait "$VM_PID"; rc=$?
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

# ---- 3. vTPM persists across restart (boot 2 restores the same vTPM) -----------------------
cp "$CVM_STATE_DIR/vms/vm1/vmgs.bin" "$TMP/vmgs-1.bin"
: > "$CVM_STATE_DIR/vms/vm1/console.log"
boot vm1 "$APPEND" "$TMP/boot2.log"
if wait_console "cvm-guest: ready" "$BOUND"; then ok "boot 2 reaches cvm-guest: ready"; else not_ok "boot 2 reaches cvm-guest: ready"; fi
"$CVM" vm stop vm1 >/dev/null; wait "$VM_PID"
check "boot 1 manufactured the vTPM" grep -q "vTPM: new" "$TMP/boot1.log"
check "boot 2 restored it from the VMGS" grep -q "vTPM: restored from the sealed VMGS" "$TMP/boot2.log"
check "VMGS re-sealed after boot 2 (fresh IV)" bash -c "! cmp -s '$TMP/vmgs-1.bin' '$CVM_STATE_DIR/vms/vm1/vmgs.bin'"

# ---- 2. tampered kernel command line --------------------------------------------------------
: > "$CVM_STATE_DIR/vms/vm1/console.log"
boot vm1 "$APPEND init=/bin/sh" "$TMP/boot3.log"
wait_console "cvm-guest: FAILED" "$BOUND"
wait "$VM_PID"
check "tampered cmdline: release refused, named on the console" bash -c "$(declare -f console); console | grep -q 'cvm-guest: FAILED release:.*release policy'"
check "tampered cmdline: never ready" bash -c "$(declare -f console); ! console | grep -q 'cvm-guest: ready'"
check "tampered cmdline: VM recorded the refusal" bash -c "sqlite3 '$TMP/cvmd/cvmd.db' \"select count(*) from cvm_audit where operation='vms/release' and result<>'ok'\" | grep -qx 1"
check "VM ends stopped after the failed boot" bash -c "'$CVM' --json vm show vm1 | jq -e '.state == \"stopped\"' >/dev/null"

cleanup
trap - EXIT
finish
