#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# cvm migrate assess against the images scripts/build-test-images makes: each gets its verdict
# and the findings that explain it; libblkid agrees with our table parser; failure twins
# (missing image, bad arguments, damaged GPT, qcow2 input).
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

IMG=$TMP/img
check "build-test-images builds all images" "$SRC/scripts/build-test-images" "$IMG"
assess() { "$CVM" migrate assess --json --image "$@"; }
# status CHECK JSON-FILE -> pass|warn|fail
status() { jq -r --arg c "$1" '.findings[] | select(.check == $c) | .status' "$2"; }
verdict() { jq -r .verdict "$1"; }
is() { [[ $1 == "$2" ]]; }

required=(partition-table dynamic-disk os-disk-size firmware fstab-device-names os-supported
          kernel-sev-snp kernel-tdx secure-boot-loader)
for name in mbr-bios gpt-uefi ldm oversize old-kernel; do
  check "$name: assess exits 0 with JSON" bash -c "'$CVM' migrate assess --json --image '$IMG/$name.img' > '$TMP/$name.json'"
  for c in "${required[@]}"; do
    check "$name: finding $c present" jq -e --arg c "$c" 'any(.findings[]; .check == $c)' "$TMP/$name.json"
  done
  check "$name: every warn/fail has a remediation, every pass none" jq -e \
    'all(.findings[]; (.status == "pass") == (.remediation == ""))' "$TMP/$name.json"
  check "$name: statuses are pass/warn/fail" jq -e \
    'all(.findings[]; .status == "pass" or .status == "warn" or .status == "fail")' "$TMP/$name.json"
done

j=$TMP/mbr-bios.json
check "mbr-bios: verdict ready-with-remediation" is "$(verdict $j)" ready-with-remediation
check "mbr-bios: partition-table warn (MBR)" is "$(status partition-table $j)" warn
check "mbr-bios: remediation names mbr2gpt" jq -e '.findings[] | select(.check=="partition-table") | .remediation | test("mbr2gpt")' $j
check "mbr-bios: firmware warn (BIOS)" is "$(status firmware $j)" warn
check "mbr-bios: facts.firmware bios" is "$(jq -r .facts.firmware $j)" bios
check "mbr-bios: fstab-device-names warn" is "$(status fstab-device-names $j)" warn
check "mbr-bios: fstab remediation gives the UUID of /dev/sda1" jq -e \
  '.findings[] | select(.check=="fstab-device-names") | .remediation | test("/dev/sda1 with UUID=11111111-2222-4333-8444-555555555501")' $j
check "mbr-bios: fstab finding also names the kernel command line" jq -e \
  '.findings[] | select(.check=="fstab-device-names") | .detail | test("kernel command line: /boot/grub/grub.cfg root=/dev/sda1")' $j
check "mbr-bios: secure-boot-loader warn (no shim)" is "$(status secure-boot-loader $j)" warn
check "mbr-bios: kernel-sev-snp pass" is "$(status kernel-sev-snp $j)" pass
check "mbr-bios: no fail anywhere" jq -e 'all(.findings[]; .status != "fail")' $j
check "mbr-bios: os facts read from os-release" is "$(jq -r '.facts.os_id + " " + .facts.os_version' $j)" "ubuntu 22.04"

j=$TMP/gpt-uefi.json
check "gpt-uefi: verdict ready" is "$(verdict $j)" ready
check "gpt-uefi: every finding passes" jq -e 'all(.findings[]; .status == "pass")' $j
check "gpt-uefi: ESP is partition 1, root partition 2" is "$(jq -r '"\(.facts.esp_partition) \(.facts.root_partition)"' $j)" "1 2"
check "gpt-uefi: kernel version from /boot/config-*" is "$(jq -r .facts.kernel $j)" 6.8.0-31-generic

j=$TMP/ldm.json
check "ldm: verdict not-ready" is "$(verdict $j)" not-ready
check "ldm: dynamic-disk fail" is "$(status dynamic-disk $j)" fail

j=$TMP/oversize.json
check "oversize: verdict not-ready" is "$(verdict $j)" not-ready
check "oversize: os-disk-size fail" is "$(status os-disk-size $j)" fail
check "oversize: the size is the only failure" jq -e '[.findings[] | select(.status != "pass") | .check] == ["os-disk-size"]' $j
check "oversize: under an 8 TiB limit it is ready" bash -c \
  "'$CVM' migrate assess --json --max-os-disk-gib 8192 --image '$IMG/oversize.img' | jq -e '.verdict == \"ready\"'"

j=$TMP/old-kernel.json
check "old-kernel: verdict not-ready" is "$(verdict $j)" not-ready
check "old-kernel: kernel-sev-snp fail" is "$(status kernel-sev-snp $j)" fail
check "old-kernel: kernel-tdx fail" is "$(status kernel-tdx $j)" fail
check "old-kernel: OS itself is supported (20.04)" is "$(status os-supported $j)" pass
check "old-kernel: kernel remediation names a package" jq -e \
  '.findings[] | select(.check=="kernel-sev-snp") | .remediation | test("apt-get install")' $j

# Cross-check: libblkid reads the same table type our parser does.
for name in mbr-bios gpt-uefi old-kernel; do
  ours=$(jq -r .facts.partition_table "$TMP/$name.json")
  theirs=$(blkid -p -o value -s PTTYPE "$IMG/$name.img")
  [[ $theirs == dos ]] && theirs=mbr
  check "$name: libblkid agrees on the table ($ours)" is "$ours" "$theirs"
done

# Human output.
check "table output shows the verdict line" bash -c "'$CVM' migrate assess --image '$IMG/mbr-bios.img' | grep -q '^verdict: *ready-with-remediation'"

# Failure twins.
"$CVM" migrate assess --image "$TMP/nope.img" >/dev/null 2>&1; rc=$?
check "missing image: exit 1" is $rc 1
"$CVM" migrate assess >/dev/null 2>&1; rc=$?
check "no --image: exit 2 (usage)" is $rc 2
"$CVM" migrate assess --image "$IMG/gpt-uefi.img" --max-os-disk-gib zero >/dev/null 2>&1; rc=$?
check "bad --max-os-disk-gib: exit 2" is $rc 2
cp --sparse=always "$IMG/gpt-uefi.img" "$TMP/bad.img"
printf '\xff' | dd of="$TMP/bad.img" bs=1 seek=$((512 + 40)) conv=notrunc status=none
assess "$TMP/bad.img" > "$TMP/bad.json"
check "damaged primary GPT: partition-table fail" is "$(status partition-table $TMP/bad.json)" fail
check "... detail says the backup GPT is valid" jq -e \
  '.findings[] | select(.check=="partition-table") | .detail | test("backup GPT at LBA [0-9]+ is valid")' "$TMP/bad.json"
check "... verdict not-ready" is "$(verdict $TMP/bad.json)" not-ready
if command -v qemu-img >/dev/null; then
  qemu-img convert -f raw -O qcow2 "$IMG/gpt-uefi.img" "$TMP/gpt.qcow2"
  assess "$TMP/gpt.qcow2" > "$TMP/qcow.json"
  check "qcow2 input: format qcow2" is "$(jq -r .facts.format $TMP/qcow.json)" qcow2
  check "qcow2 input: verdict ready like its raw twin" is "$(verdict $TMP/qcow.json)" ready
  check "qcow2 input: no temporary left behind" bash -c "! ls /tmp/cvm-assess-* 2>/dev/null | grep -q ."
fi
finish
