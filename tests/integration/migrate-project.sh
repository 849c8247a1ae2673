#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Migration projects: servers move through the phase state machine, persisted in the store;
# transitions the table forbids are refused (and change nothing); a not-ready server cannot
# start replicating; every change is in the hash-chained audit log, which verifies.
set -uo pipefail
BUILD=${CVM_BUILD_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/build}
SRC=${CVM_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
CVM=$BUILD/cvm
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0
check() {
  local name=$1; shift
  if "$@" >/dev/null 2>&1; then pass=$((pass + 1)); echo "ok - $name"
  else fail=$((fail + 1)); echo "not ok - $name"; fi
}
finish() { echo "$pass passed, $fail failed"; [[ $fail -eq 0 ]]; exit $?; }
is() { [[ $1 == "$2" ]]; }
IMG=$TMP/img
check "build-test-images" "$SRC/scripts/build-test-images" "$IMG"
S=(--state-dir "$TMP/state")
mkdir -p "$TMP/state"
m() { "$CVM" migrate "$@" "${S[@]}"; }
phase() { "$CVM" --json migrate server show "$1" "$2" "${S[@]}" | jq -r .phase; }

check "project create" m project create wave1
m project create wave1 >/dev/null 2>&1; rc=$?
check "duplicate project refused (exit 1)" is $rc 1
m project create 'bad name' >/dev/null 2>&1; rc=$?
check "invalid project name refused" is $rc 1
check "server add web1 (MBR/BIOS image)" m server add wave1 web1 --image "$IMG/mbr-bios.img"
check "server add db1 (LDM image)" m server add wave1 db1 --image "$IMG/ldm.img"
m server add nope web2 --image "$IMG/gpt-uefi.img" >/dev/null 2>&1; rc=$?
check "server in a missing project refused" is $rc 1
m server add wave1 web1 --image "$IMG/gpt-uefi.img" >/dev/null 2>&1; rc=$?
check "duplicate server refused" is $rc 1
check "new server is discovered" is "$(phase wave1 web1)" discovered

m server set-phase wave1 web1 replicating >"$TMP/err" 2>&1; rc=$?
check "discovered -> replicating refused (exit 1)" is $rc 1
check "... naming the allowed phases" grep -q 'allowed: assessed, failed' "$TMP/err"
check "... and nothing changed" is "$(phase wave1 web1)" discovered

check "assess web1" bash -c "'$CVM' --json migrate server assess wave1 web1 ${S[*]} > '$TMP/web1.json'"
check "assess stores the verdict" is "$("$CVM" --json migrate server show wave1 web1 "${S[@]}" | jq -r .verdict)" ready-with-remediation
check "assess output is the readiness report" jq -e '.verdict == "ready-with-remediation" and (.findings | length) >= 9' "$TMP/web1.json"
check "web1 assessed" is "$(phase wave1 web1)" assessed

check "assess db1" m server assess wave1 db1
m server set-phase wave1 db1 replicating >"$TMP/err" 2>&1; rc=$?
check "not-ready server cannot replicate (exit 1)" is $rc 1
check "... told to remediate first" grep -q 'assessed not-ready' "$TMP/err"
check "db1 can be marked failed" m server set-phase wave1 db1 failed --reason "dynamic disk"
check "failed remembers where it failed" is "$("$CVM" --json migrate server show wave1 db1 "${S[@]}" | jq -r .failed_from)" assessed

for p in remediated assessed replicating test-migrated cutover-ready cut-over; do
  check "web1 -> $p" m server set-phase wave1 web1 $p --reason "step $p"
done
m server set-phase wave1 web1 replicating >/dev/null 2>&1; rc=$?
check "cut-over -> replicating refused" is $rc 1
check "web1 -> rolled-back (validation failed)" m server set-phase wave1 web1 rolled-back --reason "attestation failed"
check "rolled-back remembers cut-over" is "$("$CVM" --json migrate server show wave1 web1 "${S[@]}" | jq -r .failed_from)" cut-over
for p in replicating test-migrated cutover-ready cut-over decommissioned; do
  check "web1 -> $p (second attempt)" m server set-phase wave1 web1 $p
done
m server set-phase wave1 web1 assessed >/dev/null 2>&1; rc=$?
check "decommissioned is final" is $rc 1
m server set-phase wave1 web1 nowhere >/dev/null 2>&1; rc=$?
check "unknown phase: exit 2" is $rc 2
check "list shows both servers" bash -c "'$CVM' --json migrate server list wave1 ${S[*]} | jq -e 'length == 2 and .[0].name == \"db1\" and .[1].phase == \"decommissioned\"'"

check "audit chain verifies" "$CVM" audit verify "${S[@]}"
"$CVM" audit export "${S[@]}" >"$TMP/audit.jsonl"
check "audit: project creation recorded" grep -q '"operation":"migrate/projects/create"' "$TMP/audit.jsonl"
check "audit: assessments recorded with verdicts" bash -c "grep '\"migrate/servers/assess\"' '$TMP/audit.jsonl' | grep -q 'not-ready'"
check "audit: 13 transitions recorded" is "$(grep -c '"operation":"migrate/servers/transition"' "$TMP/audit.jsonl")" 13
check "audit: rollback reason recorded" grep -q 'attestation failed' "$TMP/audit.jsonl"
check "audit: refused transitions left no record (1 + 2 + 2 + 13 records)" is "$(wc -l <"$TMP/audit.jsonl")" 18
finish
