#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# The README's main command, `cvm demo`, end to end on the embedded default (SQLite, emulated
# SEV-SNP, TCG unless KVM): key service, Secure Key Release, then a ConfidentialVM whose OS
# disk key reaches only the attested guest — boot to "cvm-guest: ready", the release and the
# token's claims in the audit log, validate, stop. Afterwards nothing of the run is left:
# no process, no temp dir.
source "$(dirname "$0")/lib-cvmd.sh"
CVM=$BUILD/cvm
for tool in qemu-system-x86_64 swtpm swtpm_setup; do
  command -v "$tool" >/dev/null || { not_ok "$tool installed (scripts/setup installs it)"; finish; exit 1; }
done

t0=$(date +%s)
"$CVM" demo --guest-image "$BUILD/guest-image" >"$TMP/demo.out" 2>"$TMP/demo.err"; rc=$?
secs=$(( $(date +%s) - t0 ))
sed 's/^/    /' "$TMP/demo.out"
[[ $rc -eq 0 ]] || sed 's/^/    stderr: /' "$TMP/demo.err"
check "cvm demo exits 0 (in ${secs}s)" test $rc -eq 0
step() { grep -E "^\[ *[0-9]+\] $1.* ok " "$TMP/demo.out" >/dev/null; }
check "every step ok, none failed" bash -c "! grep -q FAILED '$TMP/demo.out' && grep -c '^\[.*\] .* ok ' '$TMP/demo.out' | grep -qx 27"
check "Secure Key Release to a TEE key" step "Secure Key Release"
check "a replayed token is refused" step "the same token again is refused"
check "the OS disk is encrypted to the DES" step "confidential OS disk"
check "the guest attests, the orchestrator releases, the guest unlocks" step "guest attests; orchestrator releases"
check "the guest reaches cvm-guest: ready" step "switch_root into the unlocked root: cvm-guest: ready"
check "the guest's service answers" step "the guest's HTTP service answers"
check "the release is audited with the token's claims" \
  grep -qE "audit: the release .* ok .*type=sevsnpvm measurement=[0-9a-f]{12}.* debuggable=false" "$TMP/demo.out"
check "cvm vm validate passes" grep -qE "cvm vm validate demo-vm .* ok .*([0-9]+)/\1 checks passed" "$TMP/demo.out"
check "the VM stops and its vTPM is sealed" step "stop: ACPI power-down"
check "the audit chain verifies" step "verify the hash-chained audit log"
dir=$(sed -n 's/^OpenCVM demo: .* state in \(\/tmp\/cvm-demo\.[A-Za-z0-9]*\)$/\1/p' "$TMP/demo.out")
check "the demo's temp dir is removed" test -n "$dir" -a ! -e "$dir"
leftovers() { pgrep -a -f 'qemu-system|swtpm|cvmd' | grep -F -- "${dir:-/nonexistent}"; }
check "no QEMU, swtpm or cvmd of the demo left running" test -z "$(leftovers)"
finish
