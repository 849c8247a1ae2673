#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Disk encryption throughput on tmpfs, in one run, beside its two anchors:
#  (a) `openssl speed -evp aes-256-xts` on all cores (the cipher alone, no I/O): goal >= 0.7x
#  (b) `cryptsetup reencrypt --encrypt --force-offline-reencrypt` on the same image: goal >= 10x
# Usage: bench-disk.sh /path/to/bench-disk [size_MiB (default 1024)] [dir (default /dev/shm)]
# SECTOR_SIZE=512 measures 512-byte sectors (what images with an MBR or GPT get) instead of 4096,
# for us and both anchors.
set -eu
BIN=${1:?usage: bench-disk.sh /path/to/bench-disk [size_MiB] [dir]}
MIB=${2:-1024}
DIR=${3:-/dev/shm}
CORES=$(nproc)
SS=${SECTOR_SIZE:-4096}
[[ $SS == 512 || $SS == 4096 ]] || { echo "SECTOR_SIZE: 512 or 4096" >&2; exit 2; }
W=$(mktemp -d "$DIR/cvm-bench-disk.XXXXXX")
trap 'rm -rf "$W"' EXIT
echo "image_MiB=$MIB dir=$DIR cores=$CORES sector_size=$SS loadavg_before=$(cut -d' ' -f1 /proc/loadavg)"
head -c $((MIB * 1024 * 1024)) /dev/urandom >"$W/src.raw"

# ours
"$BIN" "$W/src.raw" "$W/enc.img" "$CORES" "$SS" | tee "$W/ours.txt"
ours=$(sed -n 's/^opencvm_encrypt_MBps=//p' "$W/ours.txt")
rm -f "$W/enc.img"

# the I/O alone: a plain copy of the same image on the same file system (what any encryption
# of a file into a new file must at least pay; on tmpfs this is kernel copies and page
# allocation)
t0=$(date +%s%N)
dd if="$W/src.raw" of="$W/copy.raw" bs=4M status=none
cp_ns=$(( $(date +%s%N) - t0 ))
rm -f "$W/copy.raw"
copy=$(awk -v b=$((MIB * 1024 * 1024)) -v ns="$cp_ns" 'BEGIN {printf "%.1f", b / 1e6 / (ns / 1e9)}')
echo "plain_copy_dd_4M_MBps=$copy"

# (a) the cipher alone, blocks of one LUKS2 sector, all cores. -elapsed: wall-clock
# like every other figure here (openssl speed divides by CPU time by default, which hides
# whatever else the machine is doing).
speed=$(openssl speed -elapsed -evp aes-256-xts -bytes "$SS" -seconds 3 -multi "$CORES" 2>/dev/null |
	awk '/^AES-256-XTS/ || /^aes-256-xts/ {v=$NF} END {sub(/k$/, "", v); printf "%.1f", v * 1000 / 1e6}')
echo "openssl_speed_aes256xts_${SS}B_x${CORES}_MBps=$speed"
# the same per CPU-second (openssl speed's default divides by CPU time), one process
speed1=$(openssl speed -evp aes-256-xts -bytes "$SS" -seconds 3 2>/dev/null |
	awk '/^AES-256-XTS/ || /^aes-256-xts/ {v=$NF} END {sub(/k$/, "", v); printf "%.1f", v * 1000 / 1e6}')
echo "openssl_speed_aes256xts_${SS}B_MB_per_cpu_s=$speed1"
ours_cpu=$(sed -n 's/^opencvm_encrypt_MB_per_cpu_s=//p' "$W/ours.txt")

# (b) cryptsetup's offline in-place encryption of the same image (same sector size, cheap
# PBKDF so key derivation does not count)
cp "$W/src.raw" "$W/cs.img"
truncate -s +32M "$W/cs.img"
head -c 32 /dev/urandom >"$W/cs.key"
t0=$(date +%s%N)
cryptsetup reencrypt --encrypt --type luks2 --reduce-device-size 32M --sector-size "$SS" \
	--force-offline-reencrypt --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
	--key-file "$W/cs.key" -q "$W/cs.img"
cs_s=$(( $(date +%s%N) - t0 ))
cs=$(awk -v b=$((MIB * 1024 * 1024)) -v ns="$cs_s" 'BEGIN {printf "%.1f", b / 1e6 / (ns / 1e9)}')
echo "cryptsetup_reencrypt_encrypt_seconds=$(awk -v ns="$cs_s" 'BEGIN {printf "%.3f", ns / 1e9}')"
echo "cryptsetup_reencrypt_encrypt_MBps=$cs"

echo "loadavg_after=$(cut -d' ' -f1 /proc/loadavg)"
awk -v o="$ours" -v s="$speed" -v c="$cs" -v p="$copy" -v oc="$ours_cpu" -v s1="$speed1" 'BEGIN {
	printf "ratio=%.2f opencvm_encrypt/plain_copy (the I/O ceiling)\n", o / p
	printf "ratio=%.2f opencvm_encrypt_per_cpu_s/openssl_speed_per_cpu_s (load-independent)\n", oc / s1
	printf "ratio=%.2f opencvm_encrypt/openssl_speed_x_cores (goal >= 0.7)\n", o / s
	printf "ratio=%.2f opencvm_encrypt/cryptsetup_reencrypt (goal >= 10)\n", o / c
}'
