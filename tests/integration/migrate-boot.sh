#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# mbr2gpt end to end on a bootable image: a BIOS/MBR Debian-style disk (the host's Debian
# kernel and initramfs, a busybox init that reports how it booted, Debian's signed shim and
# grub unpacked from their packages, grub.cfg and fstab naming /dev/sda1) is converted, then
# booted with UEFI firmware (OVMF, TCG) on virtio: shim -> grub -> kernel must find the root by
# UUID on vda1. With Secure Boot enforced (Microsoft keys enrolled) the same disk must boot.
# Twin: the unconverted disk does not boot under UEFI. Skips (exit 77) without qemu, OVMF, a
# host kernel or the signed packages.
set -uo pipefail
BUILD=${CVM_BUILD_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/build}
CVM=$BUILD/cvm
skip() { echo "0 passed, 0 failed (skipped: $1)"; exit 77; }
command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64"
OVMF=/usr/share/OVMF
[[ -f $OVMF/OVMF_CODE_4M.fd && -f $OVMF/OVMF_VARS_4M.fd ]] || skip "no OVMF"
KVER=$(ls /boot/vmlinuz-* 2>/dev/null | sed 's|/boot/vmlinuz-||' | sort -V | tail -1)
[[ -n $KVER && -f /boot/initrd.img-$KVER ]] || skip "no host kernel and initramfs"
BUSYBOX=$(command -v busybox) || skip "no busybox"
TMP=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
pass=0 fail=0
check() {
  local name=$1; shift
  if "$@" >/dev/null 2>&1; then pass=$((pass + 1)); echo "ok - $name"
  else fail=$((fail + 1)); echo "not ok - $name"; fi
}
finish() { echo "$pass passed, $fail failed"; [[ $fail -eq 0 ]]; exit $?; }
cd "$TMP"
mkdir -p debs && (cd debs && apt-get download -q shim-signed grub-efi-amd64-signed >/dev/null 2>&1) ||
  skip "cannot fetch shim-signed and grub-efi-amd64-signed with apt-get download"

mkdir -p tree/{bin,sbin,etc,proc,sys,dev,boot/grub,tmp,run}
for d in debs/*.deb; do dpkg-deb -x "$d" tree; done
cp "$BUSYBOX" tree/bin/busybox
ln -s busybox tree/bin/sh
cat >tree/sbin/init <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "CVM-BOOT-OK cmdline: $(/bin/busybox cat /proc/cmdline)"
echo "CVM-BOOT-ROOT $(/bin/busybox grep ' / ' /proc/mounts)"
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t tmpfs tmpfs /run
for n in $(/bin/busybox ls /sys/class/net); do [ "$n" = lo ] || IF=$n; done
/bin/busybox ip link set lo up
/bin/busybox ip link set "$IF" up && /bin/busybox ip addr add 10.0.2.15/24 dev "$IF"
/bin/busybox mkdir -p /run/www && echo cvm-service-ok >/run/www/index.html
/bin/busybox httpd -p 80 -h /run/www && echo "CVM-SERVICE-UP $IF"
/bin/busybox sleep 30
/bin/busybox poweroff -f
INIT
chmod 755 tree/sbin/init
printf 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n' >tree/etc/os-release
printf '/dev/sda1 / ext4 defaults 0 1\n' >tree/etc/fstab
cp "/boot/vmlinuz-$KVER" "/boot/initrd.img-$KVER" tree/boot/
[[ -f /boot/config-$KVER ]] && cp "/boot/config-$KVER" tree/boot/
cat >tree/boot/grub/grub.cfg <<CFG
set timeout=0
menuentry "Debian" {
  linux /boot/vmlinuz-$KVER root=/dev/sda1 ro console=ttyS0 init=/sbin/init
  initrd /boot/initrd.img-$KVER
}
CFG
truncate -s 512M bios.img
mke2fs -q -F -t ext4 -E offset=1048576 -d tree bios.img 300M
printf 'label: dos\nunit: sectors\n\nstart=2048, size=614400, type=83, bootable\n' | sfdisk -q bios.img 2>/dev/null
check "mbr2gpt converts the BIOS disk" bash -c "'$CVM' --json migrate mbr2gpt --in bios.img --out uefi.img > res.json"
check "... installing the image's own signed shim and grub" jq -e '.bootloader_installed == true' res.json
check "... and rewriting root=/dev/sda1 in grub.cfg" jq -e '.cmdline_rewritten == 1 and .fstab_rewritten == 1' res.json
sha256sum <uefi.img >uefi.sum
"$CVM" --json migrate assess --image uefi.img >assess.json
for c in partition-table firmware fstab-device-names secure-boot-loader; do
  check "converted disk: $c passes" jq -e --arg c $c '.findings[] | select(.check == $c) | .status == "pass"' assess.json
done

boot() { # IMG LOG CODE VARS [extra qemu args]: boot until power-off or 900 s
  local img=$1 log=$2 code=$3 vars=$4; shift 4
  cp "$OVMF/$vars" "$log.vars"
  timeout 900 qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 1 "$@" \
    -drive if=pflash,format=raw,unit=0,readonly=on,file="$OVMF/$code" \
    -drive if=pflash,format=raw,unit=1,file="$log.vars" \
    -drive file="$img",format=raw,if=virtio,snapshot=on \
    -display none -serial file:"$log" -no-reboot >/dev/null 2>&1
}
boot uefi.img uefi.log OVMF_CODE_4M.fd OVMF_VARS_4M.fd -machine q35
check "UEFI boot reaches init" grep -q 'CVM-BOOT-OK' uefi.log
check "... kernel got root=UUID= (rewritten by mbr2gpt)" grep -q 'CVM-BOOT-OK cmdline: .*root=UUID=' uefi.log
check "... and mounted it from the virtio disk (vda1, was sda1)" grep -q 'CVM-BOOT-ROOT /dev/vda1 / ext4' uefi.log

if [[ -f $OVMF/OVMF_CODE_4M.secboot.fd && -f $OVMF/OVMF_VARS_4M.ms.fd ]]; then
  boot uefi.img sb.log OVMF_CODE_4M.secboot.fd OVMF_VARS_4M.ms.fd -machine q35,smm=on \
    -global driver=cfi.pflash01,property=secure,value=on
  check "Secure Boot (Microsoft keys enrolled): boots through shim" grep -q 'CVM-BOOT-OK' sb.log
  check "... with Secure Boot enforced (kernel says so, lockdown on)" grep -q 'secureboot: Secure boot enabled' sb.log
  check "... Debian's Secure Boot CA in the kernel keyring" grep -q "Debian Secure Boot CA" sb.log
fi

# Test migration: boot the replica in a namespace made for it, check, record, clean up.
S=(--state-dir "$TMP/state")
mkdir -p state
"$CVM" migrate project create p "${S[@]}" >/dev/null && "$CVM" migrate server add p web --image "$TMP/bios.img" "${S[@]}" >/dev/null
"$CVM" migrate server assess p web "${S[@]}" >/dev/null
"$CVM" migrate server set-phase p web replicating "${S[@]}" >/dev/null
"$CVM" --json migrate test p web --replica uefi.img --secure-boot --service-port 80 --expect CVM-SERVICE-UP \
  --timeout 600 "${S[@]}" >test.json 2>test.err; rc=$?
check "test migration passes (exit 0)" test $rc -eq 0
for c in isolated boots secure-boot fstab-by-uuid firmware service; do
  check "test migration: $c" jq -e --arg c $c '.checks[] | select(.check == $c) | .status == "pass"' test.json
done
check "server moved to test-migrated" bash -c "'$CVM' --json migrate server show p web ${S[*]} | jq -e '.phase == \"test-migrated\"'"
check "the test namespace is gone" bash -c "! ip netns list | grep -q cvm-test-"
check "the replica was not written (snapshot)" cmp <(sha256sum <uefi.img) <(echo "$(cat uefi.sum)")
"$CVM" migrate server set-phase p web replicating "${S[@]}" >/dev/null
"$CVM" --json migrate test p web --replica uefi.img --service-port 81 --expect CVM-SERVICE-UP \
  --timeout 600 "${S[@]}" >noservice.json 2>/dev/null; rc=$?
check "twin: nothing listens on guest port 81: the test fails (exit 1)" test $rc -eq 1
check "... on the service check alone" jq -e '[.checks[] | select(.status == "fail") | .check] == ["service"]' noservice.json
"$CVM" migrate server set-phase p web replicating "${S[@]}" >/dev/null
"$CVM" --json migrate test p web --replica bios.img --timeout 60 --expect CVM-SERVICE-UP "${S[@]}" >bad.json 2>/dev/null; rc=$?
check "twin: testing the unconverted disk fails (exit 1)" test $rc -eq 1
check "... boots and firmware fail" jq -e '[.checks[] | select(.status == "fail") | .check] | index("boots") != null and index("firmware") != null' bad.json
check "... and the server is marked failed" bash -c "'$CVM' --json migrate server show p web ${S[*]} | jq -e '.phase == \"failed\"'"

# Twin: without the conversion UEFI finds nothing to boot.
timeout 60 qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 1 -machine q35 \
  -drive if=pflash,format=raw,unit=0,readonly=on,file="$OVMF/OVMF_CODE_4M.fd" \
  -drive if=pflash,format=raw,unit=1,file=uefi.log.vars \
  -drive file=bios.img,format=raw,if=virtio,snapshot=on -display none -serial file:bios.log \
  -no-reboot >/dev/null 2>&1
check "the unconverted MBR disk does not boot under UEFI" bash -c "! grep -q CVM-BOOT-OK bios.log"
finish
