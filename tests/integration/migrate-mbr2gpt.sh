#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# cvm migrate mbr2gpt round trip: the converted copy passes `sgdisk -v` and fdisk, keeps every
# partition's extents, filesystem UUIDs and data (the root filesystem changes only in
# /etc/fstab and still passes e2fsck), gains a FAT32 ESP, and assesses as UEFI/GPT. Refusals
# (GPT input, LDM, no room without --grow, existing output) leave nothing behind.
set -uo pipefail
BUILD=${CVM_BUILD_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/build}
SRC=${CVM_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
CVM=$BUILD/cvm
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export PATH=$PATH:/usr/sbin:/sbin
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

# part IMG N -> "start size" in sectors (sfdisk reads both MBR and GPT)
part() { sfdisk --json "$1" | jq -r --argjson n "$2" '.partitiontable.partitions[$n - 1] | "\(.start) \(.size)"'; }
extract() { # IMG N OUT
  local s n; read -r s n < <(part "$1" "$2")
  dd if="$1" of="$3" bs=512 skip="$s" count="$n" status=none
}

in=$IMG/mbr-bios.img out=$TMP/gpt.img
check "mbr2gpt --dry-run succeeds" "$CVM" migrate mbr2gpt --in "$in" --out "$out" --dry-run
check "... and writes nothing" test ! -e "$out"
check "mbr2gpt converts mbr-bios" bash -c "'$CVM' migrate mbr2gpt --json --in '$in' --out '$out' > '$TMP/res.json'"
check "result: checksums_equal" jq -e '.checksums_equal == true' "$TMP/res.json"
check "result: two fstab entries rewritten on partition 1" jq -e '.fstab_rewritten == 2 and .fstab_partition == 1' "$TMP/res.json"
check "sgdisk -v: no problems" bash -c "sgdisk -v '$out' | grep -q 'No problems found'"
check "blkid: PTTYPE gpt" is "$(blkid -p -o value -s PTTYPE "$out")" gpt
check "fdisk sees a gpt label" bash -c "fdisk -l '$out' | grep -q 'Disklabel type: gpt'"
check "sfdisk lists 3 partitions" is "$(sfdisk --json "$out" | jq '.partitiontable.partitions | length')" 3
for n in 1 2; do
  check "partition $n keeps its extents" is "$(part "$out" $n)" "$(part "$in" $n)"
  extract "$in" $n "$TMP/in$n"
  extract "$out" $n "$TMP/out$n"
  check "partition $n keeps its filesystem UUID" is "$(blkid -p -o value -s UUID "$TMP/out$n")" "$(blkid -p -o value -s UUID "$TMP/in$n")"
done
check "partition 2 data unchanged (sha256)" is "$(sha256sum <"$TMP/out2")" "$(sha256sum <"$TMP/in2")"
check "partition 1 (root) changed only by the fstab rewrite: e2fsck clean" e2fsck -fn "$TMP/out1"
debugfs -R "cat /etc/fstab" "$TMP/out1" 2>/dev/null >"$TMP/fstab"
check "fstab: no /dev/sd names left" bash -c "! grep -q '^/dev/sd' '$TMP/fstab'"
check "fstab: root by UUID" grep -q '^UUID=11111111-2222-4333-8444-555555555501 / ext4' "$TMP/fstab"
check "fstab: /home by UUID" grep -q '^UUID=11111111-2222-4333-8444-555555555502 /home ext4' "$TMP/fstab"
check "fstab: other lines kept" grep -q '^proc /proc proc' "$TMP/fstab"
check "result: root= rewritten in grub.cfg and /etc/default/grub" jq -e '.cmdline_rewritten == 2' "$TMP/res.json"
check "grub.cfg boots the root by UUID" bash -c \
  "debugfs -R 'cat /boot/grub/grub.cfg' '$TMP/out1' 2>/dev/null | grep -q 'root=UUID=11111111-2222-4333-8444-555555555501 ro'"
check "/etc/default/grub: root by UUID, resume= of another disk left alone" bash -c \
  "debugfs -R 'cat /etc/default/grub' '$TMP/out1' 2>/dev/null | grep -q 'root=UUID=11111111-2222-4333-8444-555555555501 resume=/dev/sda9'"
check "every other file of the root fs unchanged" bash -c \
  "cmp <(debugfs -R 'cat /etc/os-release' '$TMP/in1' 2>/dev/null) <(debugfs -R 'cat /etc/os-release' '$TMP/out1' 2>/dev/null)"
extract "$out" 3 "$TMP/esp"
check "partition 3 is the ESP type" bash -c "sfdisk --json '$out' | jq -e '.partitiontable.partitions[2].type == \"C12A7328-F81F-11D2-BA4B-00A0C93EC93B\"'"
check "ESP holds FAT32" is "$(blkid -p -o value -s VERSION "$TMP/esp")" FAT32
"$CVM" migrate assess --json --image "$out" > "$TMP/after.json"
for c in partition-table firmware fstab-device-names; do
  check "assess after conversion: $c pass" jq -e --arg c $c '.findings[] | select(.check==$c) | .status == "pass"' "$TMP/after.json"
done

check "no signed packages in mbr-bios: no bootloader installed" jq -e '.bootloader_installed == false' "$TMP/res.json"
check "... and the plan names the packages to install" jq -e '.plan | test("shim-signed and grub-efi-amd64-signed")' "$TMP/res.json"

# The image's own signed shim and grub land on the ESP.
sh=$TMP/shim.img
check "mbr2gpt converts mbr-shim" bash -c "'$CVM' migrate mbr2gpt --json --in '$IMG/mbr-shim.img' --out '$sh' > '$TMP/shim.json'"
check "bootloader installed" jq -e '.bootloader_installed == true' "$TMP/shim.json"
read -r esp_start _ < <(part "$sh" 3)
export MTOOLS_SKIP_CHECK=1
m() { mtype -i "$sh@@$((esp_start * 512))" "$1"; }
extract "$sh" 1 "$TMP/shim-root"
debugfs -R "cat /usr/lib/shim/shimx64.efi.signed" "$TMP/shim-root" 2>/dev/null >"$TMP/shim.pkg"
debugfs -R "cat /usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed" "$TMP/shim-root" 2>/dev/null >"$TMP/grub.pkg"
check "ESP: EFI/BOOT/BOOTX64.EFI is the image's shim" cmp <(m ::/EFI/BOOT/BOOTX64.EFI) "$TMP/shim.pkg"
check "ESP: EFI/ubuntu/shimx64.efi is the image's shim" cmp <(m ::/EFI/ubuntu/shimx64.efi) "$TMP/shim.pkg"
check "ESP: EFI/ubuntu/grubx64.efi is the image's signed grub" cmp <(m ::/EFI/ubuntu/grubx64.efi) "$TMP/grub.pkg"
check "ESP: grub.cfg finds /boot/grub by the root UUID" bash -c \
  "mtype -i '$sh@@$((esp_start * 512))' ::/EFI/ubuntu/grub.cfg | grep -q 'search.fs_uuid 11111111-2222-4333-8444-555555555501 root'"
check "converted mbr-shim assesses ready" bash -c "'$CVM' migrate assess --json --image '$sh' | jq -e '.verdict == \"ready\"'"
check "converted mbr-shim: sgdisk -v clean" bash -c "sgdisk -v '$sh' | grep -q 'No problems found'"

# Refusals leave nothing behind.
"$CVM" migrate mbr2gpt --in "$IMG/gpt-uefi.img" --out "$TMP/x.img" >"$TMP/err" 2>&1; rc=$?
check "GPT input refused (exit 1)" is $rc 1
check "... with the reason" grep -q 'already GPT' "$TMP/err"
"$CVM" migrate mbr2gpt --in "$IMG/ldm.img" --out "$TMP/x.img" >"$TMP/err" 2>&1; rc=$?
check "LDM input refused (exit 1)" is $rc 1
check "... with the reason" grep -q 'dynamic disk' "$TMP/err"
"$CVM" migrate mbr2gpt --in "$IMG/mbr-full.img" --out "$TMP/x.img" >"$TMP/err" 2>&1; rc=$?
check "full disk refused without --grow (exit 1)" is $rc 1
check "... saying where the space must come from" grep -q -- '--grow' "$TMP/err"
check "... and no output file" test ! -e "$TMP/x.img"
"$CVM" migrate mbr2gpt --in "$in" --out "$out" >/dev/null 2>&1; rc=$?
check "existing output refused (exit 1)" is $rc 1
"$CVM" migrate mbr2gpt --in "$in" >/dev/null 2>&1; rc=$?
check "missing --out: exit 2" is $rc 2

check "full disk converts with --grow" "$CVM" migrate mbr2gpt --in "$IMG/mbr-full.img" --out "$TMP/grown.img" --grow
check "grown copy is larger by the ESP + 1 MiB" test "$(stat -c %s "$TMP/grown.img")" -gt "$(stat -c %s "$IMG/mbr-full.img")"
check "grown copy: sgdisk -v clean" bash -c "sgdisk -v '$TMP/grown.img' | grep -q 'No problems found'"
check "grown copy keeps partition 2's extents" is "$(part "$TMP/grown.img" 2)" "$(part "$IMG/mbr-full.img" 2)"
finish
