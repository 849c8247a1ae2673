#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# `cvm vm start` to "cvm-guest: ready" of a confidential VM (emulated SEV-SNP TEE, vTPM, LUKS2
# OS disk whose key is released through attestation; the setup of tests/integration/vm-boot.sh),
# split into phases, beside its anchor in the same run: a plain QEMU boot of the same kernel
# and the same root filesystem, unencrypted, without TEE, vTPM, attestation or LUKS. The anchor
# runs the QEMU command line cvm_vm_qemu_argv builds for the same VM without a TEE (same
# machine, accelerator, Secure Boot OVMF, vCPUs, memory, virtio disk and network) and the same
# initramfs whose /init does everything the real one does (modules, the 1 s wait for ports,
# DHCP) except `cvm-guest unlock`, then mounts the plain root and switch_roots into the same
# /sbin/init, which prints "cvm-guest: ready". Confidential and anchor boots alternate so
# both see the same machine load.
#
# Phases (seconds, host wall clock; boot-phases.py derives them):
#   host          `cvm vm start` -> QEMU started (orchestrator token, VMGS key through the key
#                 service, VMGS unseal or vTPM manufacture, swtpm, emulated-TEE socket)
#   firmware      QEMU started -> guest kernel started (OVMF, Secure Boot, direct kernel boot)
#   kernel+initrd guest kernel -> cvm-guest starts (modules, 1 s port wait, DHCP)
#   attestation   cvm-guest start -> "cvm-guest: attested" (disk token, RSA key, SNP report,
#                 /attest/SevSnpVm through the orchestrator)
#   release       "attested" -> the orchestrator's release audited (host)
#   unlock        -> "cvm-guest: unlocked" (reply to the guest, unwrap, LUKS2 activation)
#   switch_root   "unlocked" -> "cvm-guest: network" (mount, switch_root, the root's init up
#                 to its network and HTTP server)
#   root_init     -> "cvm-guest: ready" (the rest of the root's init, e.g. its vTPM use)
# The anchor has host, firmware, kernel+initrd (to the point where cvm-guest would start),
# switch_root and root_init.
# The host stamps every console line when it appears; the guest kernel's start is placed from
# the guest's own stamps (cvm-guest's "(t=S.SSSs)", CLOCK_BOOTTIME; see boot-phases.py).
# Never part of `meson test`; TCG boots take 30-120 s each.
# Usage: bench-vm-boot.sh CVMD CVM CVM_GUEST BENCH_VM_ANCHOR_ARGV [boots (default 1)]
# Env: CVM_GUEST_IMAGE_DIR (default: guest-image beside CVM_GUEST, built or reused by
# scripts/build-guest-image), CVM_BENCH_DIR (default /var/tmp).
set -eu
CVMD=${1:?usage: bench-vm-boot.sh CVMD CVM CVM_GUEST BENCH_VM_ANCHOR_ARGV [boots]}
CVM=${2:?}
GUEST=${3:?}
ANCHOR_ARGV=${4:?}
BOOTS=${5:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
PHASES=$HERE/boot-phases.py
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd # as `cvm vm start` (src/cli/vm.c)
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.ms.fd
VCPUS=2 MEM=768 # Standard_DC2as_v5's vCPUs; the memory tests/integration/vm-boot.sh gives it
W=$(mktemp -d "${CVM_BENCH_DIR:-/var/tmp}/cvm-bench-vm-boot.XXXXXX")
source "$HERE/lib-bench-vm.sh"
for tool in qemu-system-x86_64 swtpm swtpm_setup cryptsetup basenc cpio python3; do
  command -v "$tool" >/dev/null || { echo "bench-vm-boot: $tool not installed"; exit 1; }
done
echo "cores=$(nproc) boots=$BOOTS start=$(date -u +%FT%TZ) load1=$(load1)"

IMG=${CVM_GUEST_IMAGE_DIR:-$(dirname "$GUEST")/guest-image}
"$SRC/scripts/build-guest-image" --out "$IMG" --cvm-guest "$GUEST"
IMG=$(cd "$IMG" && pwd)

start_cvmd
APPEND="console=ttyS0 panic=-1 quiet cvm.tee=emulator cvm.vm=vm1 cvm.disk=/dev/vda"
MEAS=$("$CVM" vm measure --kernel "$IMG/vmlinuz" --initrd "$IMG/initrd.img" --append "$APPEND")
setup_des_key "$MEAS"
# The confidential OS disk, as tests/integration/vm-boot.sh builds it.
cp "$IMG/rootfs.img" "$W/os.img"
truncate -s +32M "$W/os.img"
wrap_disk_secret
cryptsetup reencrypt --encrypt --force-offline-reencrypt --type luks2 --reduce-device-size 32M \
  --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$W/secret" --batch-mode \
  "$W/os.img" >/dev/null 2>&1
shred -u "$W/secret"
jq -n --arg k "$KID" --arg w "$(cat "$W/wrapped.b64u")" '{type:"opencvm-hsm", keyslots:["0"],
  key_url:$k, alg:"RSA-OAEP-256", wrapped:$w, des:"des1", version:1}' >"$W/token.json"
cryptsetup token import --json-file "$W/token.json" "$W/os.img"
"$CVM" vm create vm1 --size Standard_DC2as_v5 --tee emulated --os-disk osdisk --des des1 >/dev/null

# The anchor's initramfs: the same one with /init doing everything but cvm-guest and LUKS.
mkdir -p "$W/anchor-ir"
(cd "$W/anchor-ir" && gzip -dc "$IMG/initrd.img" | cpio -idm --quiet)
cat >"$W/anchor-ir/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "$m" 2>/dev/null; done < /modules.order
sleep 1
ifconfig lo up
ifconfig eth0 up 2>/dev/null && udhcpc -q -n -t 10 -i eth0 -s /usr/share/udhcpc/default.script >/dev/null 2>&1
echo "bench-anchor: initramfs done (t=$(cut -d' ' -f1 /proc/uptime)s)"
mount -t ext4 -o ro /dev/vda /newroot || { echo "bench-anchor: FAILED mount"; poweroff -f; }
umount /sys /proc
exec switch_root /newroot /sbin/init
INIT
chmod 755 "$W/anchor-ir/init"
(cd "$W/anchor-ir" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) |
  gzip -1n >"$W/anchor-initrd.img"
cp "$IMG/rootfs.img" "$W/anchor-root.img"

CONSOLE=$CVM_STATE_DIR/vms/vm1/console.log
confidential_boot() { # N
  rm -f "$CONSOLE"
  local t0=$EPOCHREALTIME
  "$CVM" "${ORCH[@]}" vm start vm1 --kernel "$IMG/vmlinuz" --initrd "$IMG/initrd.img" \
    --append "$APPEND" --os-image "$W/os.img" --emulator-dir "$EMU" --memory-mib "$MEM" \
    --timeout 900 >"$W/boot$1.log" 2>&1 &
  local pid=$!
  python3 "$PHASES" watch "$W/confidential$1.json" "$CONSOLE" "$pid" "$t0"
  "$CVM" vm stop vm1 >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || true
  grep -q "cvm-guest: ready" "$CONSOLE" || { echo "confidential boot $1 failed:"; tail -5 "$CONSOLE"; exit 1; }
  echo "confidential boot $1: ready ($(grep -c . "$CONSOLE") console lines) load1=$(load1)"
}
anchor_boot() { # N
  local log=$W/anchor$1.console
  rm -f "$log"
  cp "$OVMF_VARS" "$W/anchor-vars.fd"
  mapfile -t argv < <("$ANCHOR_ARGV" anchor "$VCPUS" "$MEM" "$OVMF_CODE" "$W/anchor-vars.fd" \
    "$IMG/vmlinuz" "$W/anchor-initrd.img" "console=ttyS0 panic=-1 quiet" "$W/anchor-root.img" "$log")
  [[ $1 != 1 ]] || echo "machine: $(printf '%s\n' "${argv[@]}" | grep -A1 -x -- -machine | tail -1)"
  local t0=$EPOCHREALTIME
  "${argv[@]}" >"$W/anchor$1.log" 2>&1 &
  local pid=$!
  python3 "$PHASES" watch "$W/anchor$1.json" "$log" "$pid" "$t0" --qemu-is-supervisor
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || true
  grep -q "cvm-guest: ready" "$log" || { echo "anchor boot $1 failed:"; tail -5 "$log"; exit 1; }
  echo "anchor boot $1: ready load1=$(load1)"
}
for ((i = 1; i <= BOOTS; i++)); do
  confidential_boot "$i"
  anchor_boot "$i"
done
M=() A=()
for ((i = 1; i <= BOOTS; i++)); do M+=("$W/confidential$i.json"); A+=("$W/anchor$i.json"); done
python3 "$PHASES" report "$W/cvmd/cvmd.db" "${M[@]}" -- "${A[@]}"
echo "first boot manufactures the vTPM; later boots restore it from the sealed VMGS"
echo "end=$(date -u +%FT%TZ) load1=$(load1)"
