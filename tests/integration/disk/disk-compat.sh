#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Confidential disks against the reference implementation (cryptsetup 2.6), on plain files
# (no dm-crypt, no root-only device mapper needed):
#  - cryptsetup luksDump reads our images and shows the opencvm-hsm token;
#  - the unwrapped secret opens the keyslot (cryptsetup open --test-passphrase --key-file);
#  - our ciphertext is byte-identical to cryptsetup's own offline encryption
#    (reencrypt --encrypt, detached header, same volume key), 4096- and 512-byte sectors;
#  - cryptsetup's own offline decryption (reencrypt --decrypt, detached header) of our data
#    area gives the source back; and an image cryptsetup formatted and encrypted is readable
#    by our decrypt;
#  - rekey of a cryptsetup image into ours; verify against the source;
#  - marker scan, 200 GiB sparse disk, SIGKILL + resume, rotation, and failure twins.
# Usage: disk-compat.sh /path/to/disk-tool
set -u
TOOL=${1:?usage: disk-compat.sh /path/to/disk-tool}
command -v cryptsetup >/dev/null || { echo "cryptsetup not installed"; echo "0 passed, 1 failed"; exit 1; }
W=$(mktemp -d "${TMPDIR:-/tmp}/cvm-disk-compat.XXXXXX")
trap 'rm -rf "$W"' EXIT
KEYS=$W/keys
mkdir -m 0700 "$KEYS"
URL=https://kv.test/keys/des1
DES=/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/diskEncryptionSets/des1
PASS=0
FAIL=0
OFF=$((16 * 1024 * 1024))
# cryptsetup options that keep its own keyslots cheap too (secrets here are random)
CS_PBKDF=(--pbkdf pbkdf2 --pbkdf-force-iterations 1000)

ok() { PASS=$((PASS + 1)); echo "ok   - $1"; }
ko() { FAIL=$((FAIL + 1)); echo "FAIL - $1"; }
check() { local name=$1; shift; if "$@" >"$W/last.out" 2>&1; then ok "$name"; else ko "$name"; sed 's/^/       /' "$W/last.out" | tail -5; fi; }
check_fails() { local name=$1; shift; if "$@" >"$W/last.out" 2>&1; then ko "$name (unexpected success)"; else ok "$name"; fi; }
# check_err NAME PATTERN cmd...: must fail with PATTERN in its output
check_err() {
	local name=$1 pat=$2; shift 2
	if "$@" >"$W/last.out" 2>&1; then ko "$name (unexpected success)"
	elif grep -q -- "$pat" "$W/last.out"; then ok "$name"
	else ko "$name (wrong error)"; sed 's/^/       /' "$W/last.out" | tail -3; fi
}
payload() { tail -c +$((OFF + 1)) "$1"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
# a secret file exactly as the guest would hold it after release: mode 0600, never in argv
unlock() { "$TOOL" unlock "$1" "$KEYS" "$2" && [ "$(stat -c %a "$2")" = 600 ]; }

"$TOOL" keygen "$KEYS" des1 v1 RSA-OAEP-256 || { echo "keygen failed"; exit 1; }

# ---- 1. a 200 GiB confidential OS disk, sparse -------------------------------------------
t0=$(date +%s%N)
check "create 200 GiB os disk" "$TOOL" create "$W/big.img" $((200 * 1024 * 1024 * 1024)) "$KEYS" "$URL" RSA-OAEP-256 "$DES" os
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
used=$(du -k "$W/big.img" | cut -f1)
check "200 GiB disk created in ${ms} ms using ${used} KiB" test "$ms" -lt 10000 -a "$used" -lt 32768
check "luksDump reads the 200 GiB disk" cryptsetup luksDump "$W/big.img"
cryptsetup luksDump "$W/big.img" >"$W/dump.txt" 2>&1
check "luksDump shows the opencvm-hsm token" grep -q "opencvm-hsm" "$W/dump.txt"
check "luksDump shows subsystem opencvm-os" grep -q "Subsystem:.*opencvm-os" "$W/dump.txt"
check "luksDump shows aes-xts-plain64, 4096-byte sectors" grep -q "sector: 4096" "$W/dump.txt"
check "unwrapped secret in a 0600 file" unlock "$W/big.img" "$W/big.key"
check "cryptsetup accepts the unwrapped secret" cryptsetup open --test-passphrase --key-file "$W/big.key" "$W/big.img"
head -c 32 /dev/urandom >"$W/random.key"
check_fails "cryptsetup refuses another 32-byte secret" cryptsetup open --test-passphrase --key-file "$W/random.key" "$W/big.img"
rm -f "$W/big.img"

# ---- 2. encrypt an image full of a known marker ------------------------------------------
yes "OPENCVM-PLAINTEXT-MARKER-0123456789" | head -c $((64 * 1024 * 1024)) >"$W/src.raw"
SRC_SHA=$(sha "$W/src.raw")
check "encrypt 64 MiB image" "$TOOL" encrypt "$W/src.raw" "$W/enc.img" "$KEYS" "$URL" RSA-OAEP-256 "$DES" threads=2
check "marker occurs in the source" grep -q -a -F "OPENCVM-PLAINTEXT-MARKER" "$W/src.raw"
n=$(grep -a -o -F "PLAINTEXT-MARKER" "$W/enc.img" | wc -l)
check "zero marker occurrences after encryption (found $n)" test "$n" -eq 0
check "luksDump reads the encrypted image" cryptsetup luksDump "$W/enc.img"
check "unlock the encrypted image" unlock "$W/enc.img" "$W/enc.key"
check "cryptsetup accepts the unwrapped secret" cryptsetup open --test-passphrase --key-file "$W/enc.key" "$W/enc.img"
check "volume key dump with the secret" cryptsetup luksDump --dump-volume-key --volume-key-file "$W/enc.vk" --key-file "$W/enc.key" -q "$W/enc.img"
chmod 600 "$W/enc.vk"

# an independent computation: sampled sectors decrypted with Python's AES-XTS, tweak = plain64
# of the offset in 512-byte units (what dm-crypt uses for LUKS2), volume key read from its file
if python3 -c "import cryptography" 2>/dev/null; then
	check "sampled sectors decrypt with an independent AES-XTS (python cryptography)" python3 - "$W/enc.vk" "$W/enc.img" "$W/src.raw" <<'PY'
import random, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
vk = open(sys.argv[1], "rb").read()
img, src = open(sys.argv[2], "rb"), open(sys.argv[3], "rb")
off, ss = 16 << 20, 4096
n = (64 << 20) // ss
for s in [0, 1, n - 1] + random.sample(range(n), 29):
    img.seek(off + s * ss); ct = img.read(ss)
    src.seek(s * ss); want = src.read(ss)
    d = Cipher(algorithms.AES(vk), modes.XTS((s * ss // 512).to_bytes(16, "little"))).decryptor()
    if d.update(ct) + d.finalize() != want:
        sys.exit("sector %d differs" % s)
PY
fi

# cryptsetup's own offline encryption of the same source with the same volume key
cp "$W/src.raw" "$W/ref.raw"
check "cryptsetup reencrypt --encrypt (detached header, our volume key)" \
	cryptsetup reencrypt --encrypt --type luks2 --header "$W/ref.hdr" --volume-key-file "$W/enc.vk" \
	--key-file "$W/enc.key" --sector-size 4096 --force-offline-reencrypt -q "${CS_PBKDF[@]}" "$W/ref.raw"
payload "$W/enc.img" >"$W/enc.payload"
check "our ciphertext is byte-identical to cryptsetup's (4096-byte sectors)" cmp "$W/enc.payload" "$W/ref.raw"

# cryptsetup's own offline decryption of our data area
check "detached header for our data area" cryptsetup luksFormat --type luks2 --header "$W/dec.hdr" \
	--volume-key-file "$W/enc.vk" --key-file "$W/enc.key" --sector-size 4096 -q "${CS_PBKDF[@]}" "$W/enc.payload"
check "cryptsetup reencrypt --decrypt of our data area" cryptsetup reencrypt --decrypt --header "$W/dec.hdr" \
	--key-file "$W/enc.key" --force-offline-reencrypt -q "$W/enc.payload"
check "cryptsetup's decryption equals the source" cmp "$W/enc.payload" "$W/src.raw"
check "verify: every sector decrypts to the source" "$TOOL" verify "$W/enc.img" "$W/enc.key" "$W/src.raw" 16384
cp "$W/src.raw" "$W/mod.raw"
printf 'X' | dd of="$W/mod.raw" bs=1 seek=$((32 * 1024 * 1024 + 5)) conv=notrunc status=none
check_err "verify: one changed source byte is caught" "sector 8192 does not decrypt" "$TOOL" verify "$W/enc.img" "$W/enc.key" "$W/mod.raw" 16384
rm -f "$W/mod.raw"
check "our decrypt" "$TOOL" decrypt "$W/enc.img" "$W/dec.raw" "$W/enc.key"
check "our decryption equals the source" cmp "$W/dec.raw" "$W/src.raw"
rm -f "$W/enc.payload" "$W/ref.raw" "$W/dec.raw"

# ---- 3. 512-byte sectors (source with a partition table) ---------------------------------
head -c $((8 * 1024 * 1024)) /dev/urandom >"$W/mbr.raw"
printf '\x55\xaa' | dd of="$W/mbr.raw" bs=1 seek=510 conv=notrunc status=none
check "encrypt image with an MBR" "$TOOL" encrypt "$W/mbr.raw" "$W/mbr.img" "$KEYS" "$URL" RSA-OAEP-256 "$DES"
check "auto sector size is 512 behind a partition table" sh -c "cryptsetup luksDump '$W/mbr.img' | grep -q 'sector: 512'"
unlock "$W/mbr.img" "$W/mbr.key"
cryptsetup luksDump --dump-volume-key --volume-key-file "$W/mbr.vk" --key-file "$W/mbr.key" -q "$W/mbr.img" >/dev/null 2>&1
cp "$W/mbr.raw" "$W/ref.raw"
cryptsetup reencrypt --encrypt --type luks2 --header "$W/ref512.hdr" --volume-key-file "$W/mbr.vk" \
	--key-file "$W/mbr.key" --sector-size 512 --force-offline-reencrypt -q "${CS_PBKDF[@]}" "$W/ref.raw" >/dev/null 2>&1
payload "$W/mbr.img" >"$W/mbr.payload"
check "our ciphertext is byte-identical to cryptsetup's (512-byte sectors)" cmp "$W/mbr.payload" "$W/ref.raw"
rm -f "$W/mbr.payload" "$W/ref.raw"

# ---- 4. the reverse: an image cryptsetup formatted and encrypted --------------------------
head -c 32 /dev/urandom >"$W/cs.key"
for ss in 512 4096; do
	head -c $((24 * 1024 * 1024)) /dev/urandom >"$W/cs.plain"
	cp "$W/cs.plain" "$W/cs.img"
	truncate -s +32M "$W/cs.img"
	check "cryptsetup reencrypt --encrypt in place ($ss-byte sectors)" cryptsetup reencrypt --encrypt --type luks2 \
		--reduce-device-size 32M --sector-size $ss --force-offline-reencrypt --key-file "$W/cs.key" -q "${CS_PBKDF[@]}" "$W/cs.img"
	rm -f "$W/cs.out"
	check "our decrypt reads cryptsetup's image ($ss)" "$TOOL" decrypt "$W/cs.img" "$W/cs.out" "$W/cs.key"
	check "cryptsetup's image decrypts to the source ($ss)" cmp -n $((24 * 1024 * 1024)) "$W/cs.out" "$W/cs.plain"
	# rekey it into a confidential disk of ours: new volume key, secret wrapped by the DES key
	rm -f "$W/rk.img" "$W/rk.out"
	check "rekey cryptsetup's image into ours ($ss)" "$TOOL" rekey "$W/cs.img" "$W/rk.img" "$W/cs.key" "$KEYS" "$URL" RSA-OAEP-256 "$DES"
	unlock "$W/rk.img" "$W/rk.key"
	check "rekeyed image opens with the new secret in cryptsetup ($ss)" cryptsetup open --test-passphrase --key-file "$W/rk.key" "$W/rk.img"
	check_fails "the old key file no longer opens it ($ss)" cryptsetup open --test-passphrase --key-file "$W/cs.key" "$W/rk.img"
	check "rekeyed image keeps the data ($ss)" sh -c "'$TOOL' decrypt '$W/rk.img' '$W/rk.out' '$W/rk.key' && cmp -n $((24 * 1024 * 1024)) '$W/rk.out' '$W/cs.plain'"
done
rm -f "$W/cs.out" "$W/cs.img" "$W/cs.plain" "$W/rk.img" "$W/rk.out"

# ---- 4b. --used-only: only blocks ext4 uses are written ------------------------------------
if command -v mkfs.ext4 >/dev/null && command -v sfdisk >/dev/null; then
	mkdir -p "$W/tree/etc"
	yes "OPENCVM-PLAINTEXT-MARKER-in-a-file" | head -c $((3 * 1024 * 1024)) >"$W/tree/etc/big.txt"
	echo hello >"$W/tree/etc/hostname"
	# a GPT image: partition 1 raw (not a file system), partition 2 ext4 with the tree
	truncate -s 96M "$W/gpt.raw"
	printf 'label: gpt\nstart=2048, size=16384, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\nstart=18432, size=176128\n' |
		sfdisk -q "$W/gpt.raw" >/dev/null 2>&1
	head -c $((8 * 1024 * 1024)) /dev/urandom | dd of="$W/gpt.raw" bs=512 seek=2048 conv=notrunc status=none
	mkfs.ext4 -q -F -d "$W/tree" -E offset=$((18432 * 512)) "$W/gpt.raw" $((176128 / 2))k >/dev/null 2>&1
	check "used_only encrypt of a GPT image with ext4" "$TOOL" encrypt "$W/gpt.raw" "$W/gpt.img" "$KEYS" "$URL" RSA-OAEP-256 "$DES" used_only
	used=$(du -k "$W/gpt.img" | cut -f1)
	check "used_only image is small (${used} KiB for a 96 MiB source)" test "$used" -lt $((16 * 1024 + 40 * 1024))
	n=$(grep -a -o -F "PLAINTEXT-MARKER" "$W/gpt.img" | wc -l)
	check "no plaintext marker in the used_only image (found $n)" test "$n" -eq 0
	unlock "$W/gpt.img" "$W/gpt.key"
	check "used_only image decrypts" "$TOOL" decrypt "$W/gpt.img" "$W/gpt.dec" "$W/gpt.key"
	check "partition table and raw partition are exact" cmp -n $(((2048 + 16384) * 512)) "$W/gpt.dec" "$W/gpt.raw"
	dd if="$W/gpt.dec" of="$W/p2.dec" bs=512 skip=18432 count=176128 status=none
	check "the ext4 file system is clean after decryption" e2fsck -fn "$W/p2.dec"
	check "file contents survive used_only" sh -c "debugfs -R 'cat /etc/big.txt' '$W/p2.dec' 2>/dev/null | cmp - '$W/tree/etc/big.txt'"
	# failure twin: a file system that was not cleanly unmounted is refused, nothing created
	dd if="$W/gpt.raw" of="$W/p2.raw" bs=512 skip=18432 count=176128 status=none
	debugfs -w -R "ssv state 0" "$W/p2.raw" >/dev/null 2>&1
	check_err "used_only refuses an unclean file system" "not cleanly" "$TOOL" encrypt "$W/p2.raw" "$W/p2.img" "$KEYS" "$URL" RSA-OAEP-256 "$DES" used_only
	check "nothing created for the refused used_only run" test ! -e "$W/p2.img" -a ! -e "$W/p2.img.partial"
	rm -rf "$W/tree" "$W/gpt.raw" "$W/gpt.img" "$W/gpt.dec" "$W/p2.dec" "$W/p2.raw"
fi

# ---- 5. SIGKILL at random points, then resume ---------------------------------------------
python3 -c "import sys; sys.stdout.buffer.write(bytes((i * 37 + 11) % 256 for i in range(64)))" >"$W/fixed.vk"
head -c $((320 * 1024 * 1024)) /dev/urandom >"$W/k.raw"
K_SHA=$(sha "$W/k.raw")
kills=0
for attempt in $(seq 1 30); do
	"$TOOL" encrypt "$W/k.raw" "$W/k.img" "$KEYS" "$URL" RSA-OAEP-256 "$DES" threads=2 chunk=262144 \
		ckpt_ms=20 vkfile="$W/fixed.vk" 2>"$W/k.err" &
	pid=$!
	# Wait until the data phase has begun (header and progress token written), however
	# loaded the machine is, then kill at a random point shortly after.
	for _ in $(seq 1 500); do
		kill -0 "$pid" 2>/dev/null || break
		"$TOOL" info "$W/k.img.partial" 2>/dev/null | grep -q complete=0 && break
		sleep 0.02
	done
	sleep "$(printf 0.%02d $((RANDOM % 15)))" # 0 .. 0.14 s into the data phase
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	if [ -e "$W/k.img" ]; then
		rm -f "$W/k.img" # finished before the kill: that run does not count, start over
		kills=0
		continue
	fi
	# killed before the header was complete: the next run starts over (also tested, but only a
	# kill inside the data phase counts here)
	"$TOOL" info "$W/k.img.partial" 2>/dev/null | grep -q complete=0 || continue
	kills=$((kills + 1))
	[ $kills -ge 3 ] && break
done
check "killed the same encryption $kills times in a row" test "$kills" -ge 3
check "interrupted image is not at the destination name" test ! -e "$W/k.img"
check "interrupted image is detectably incomplete" sh -c "'$TOOL' info '$W/k.img.partial' | grep -q complete=0"
check_err "an incomplete image is refused" "has not finished" "$TOOL" unlock "$W/k.img.partial" "$KEYS" "$W/x.key"
check "resume completes" "$TOOL" encrypt "$W/k.raw" "$W/k.img" "$KEYS" "$URL" RSA-OAEP-256 "$DES" threads=2 vkfile="$W/fixed.vk"
check "no partial file left" test ! -e "$W/k.img.partial"
check "uninterrupted run" "$TOOL" encrypt "$W/k.raw" "$W/k2.img" "$KEYS" "$URL" RSA-OAEP-256 "$DES" threads=1 vkfile="$W/fixed.vk"
check "resumed data area identical to an uninterrupted run" cmp <(payload "$W/k.img") <(payload "$W/k2.img")
unlock "$W/k.img" "$W/k.key"
check "resumed image decrypts to the source" sh -c "'$TOOL' decrypt '$W/k.img' '$W/k.dec' '$W/k.key' && cmp '$W/k.dec' '$W/k.raw'"
check "source never modified by encrypt" test "$(sha "$W/k.raw")" = "$K_SHA"
rm -f "$W/k.img" "$W/k2.img" "$W/k.dec" "$W/k.raw"

# ---- 6. failure twins ------------------------------------------------------------------------
cp "$W/enc.img" "$W/t.img"
mv "$KEYS/des1-v1.pem" "$KEYS/des1-v1.pem.real"
"$TOOL" keygen "$KEYS" des1 v1 RSA-OAEP-256
check_err "wrong key-wrap key is refused" "unwrap secret with https://kv.test/keys/des1/v1" "$TOOL" unlock "$W/t.img" "$KEYS" "$W/x.key"
mv "$KEYS/des1-v1.pem.real" "$KEYS/des1-v1.pem"
check_err "a key that does not exist is refused" "KeyNotFound" "$TOOL" encrypt "$W/src.raw" "$W/nokey.img" "$KEYS" https://kv.test/keys/none RSA-OAEP-256 "$DES"
check "nothing left behind by the refused encrypt" test ! -e "$W/nokey.img" -a ! -e "$W/nokey.img.partial"
if command -v qemu-img >/dev/null; then
	qemu-img create -q -f qcow2 "$W/src.qcow2" 64M
	check_err "a qcow2 source is refused with a hint" "qemu-img convert -O raw" "$TOOL" encrypt "$W/src.qcow2" "$W/q.img" "$KEYS" "$URL" RSA-OAEP-256 "$DES"
	qemu-img convert -O raw "$W/src.qcow2" "$W/src-conv.raw"
	check "the converted raw image encrypts" "$TOOL" encrypt "$W/src-conv.raw" "$W/q.img" "$KEYS" "$URL" RSA-OAEP-256 "$DES"
	rm -f "$W/src.qcow2" "$W/src-conv.raw" "$W/q.img"
fi
check_err "a LUKS image is not encrypted again" "already a LUKS volume" "$TOOL" encrypt "$W/enc.img" "$W/again.img" "$KEYS" "$URL" RSA-OAEP-256 "$DES"
# corrupted token JSON: a token cryptsetup accepts, we do not
tid=$(cryptsetup luksDump "$W/t.img" | awk '/opencvm-hsm/ {gsub(":","",$1); print $1; exit}')
cryptsetup token export --token-id "$tid" "$W/t.img" >"$W/tok.json"
sed 's/"alg":"RSA-OAEP-256"/"alg":"RSA1_5"/' "$W/tok.json" >"$W/tok-bad.json"
cryptsetup token remove --token-id "$tid" "$W/t.img"
check "cryptsetup imports a malformed opencvm-hsm token" cryptsetup token import --json-file "$W/tok-bad.json" "$W/t.img"
check_err "corrupted token JSON is refused naming the field" "opencvm-hsm token: alg" "$TOOL" unlock "$W/t.img" "$KEYS" "$W/x.key"
# corrupted header: both copies of the JSON area
cp "$W/enc.img" "$W/h.img"
printf 'ZZZZZZZZZZZZZZZZZZZZ' | dd of="$W/h.img" bs=1 seek=4200 conv=notrunc status=none
printf 'ZZZZZZZZZZZZZZZZZZZZ' | dd of="$W/h.img" bs=1 seek=$((16384 + 4200)) conv=notrunc status=none
check_err "corrupted header is refused" "not a valid LUKS2 image" "$TOOL" unlock "$W/h.img" "$KEYS" "$W/x.key"
check_err "corrupted header: decrypt refused" "not a valid LUKS2 image" "$TOOL" decrypt "$W/h.img" "$W/h.out" "$W/enc.key"
# truncated image
cp "$W/enc.img" "$W/tr.img"
truncate -s $((OFF + 4096 * 10 + 100)) "$W/tr.img"
check_err "truncated image is refused" "truncated image" "$TOOL" decrypt "$W/tr.img" "$W/tr.out" "$W/enc.key"
check "no output left by refused decrypts" test ! -e "$W/tr.out" -a ! -e "$W/h.out"
check_err "encrypt refuses an existing destination" "already exists" "$TOOL" encrypt "$W/src.raw" "$W/enc.img" "$KEYS" "$URL" RSA-OAEP-256 "$DES"
check "source never modified" test "$(sha "$W/src.raw")" = "$SRC_SHA"

# ---- 7. rotation: re-wrap for a new key version, data untouched ----------------------------
before=$(payload "$W/enc.img" | sha256sum)
"$TOOL" keygen "$KEYS" des1 v2 RSA-OAEP-256
check "rotate to the latest key version" "$TOOL" rotate "$W/enc.img" "$KEYS" "$URL" RSA-OAEP-256
check "token now names v2" sh -c "'$TOOL' info '$W/enc.img' | grep -qx 'key_url=$URL/v2'"
check "exactly one opencvm-hsm token" test "$(cryptsetup luksDump "$W/enc.img" | grep -c 'opencvm-hsm')" -eq 1
mv "$KEYS/des1-v1.pem" "$W/v1.pem.retired"
check "unlock with v2 only" unlock "$W/enc.img" "$W/enc2.key"
check "same secret after rotation" cmp "$W/enc.key" "$W/enc2.key"
check "cryptsetup accepts it" cryptsetup open --test-passphrase --key-file "$W/enc2.key" "$W/enc.img"
check "data area untouched by rotation" test "$(payload "$W/enc.img" | sha256sum)" = "$before"
mv "$KEYS/des1-v2.pem" "$W/v2.pem.retired"
mv "$W/v1.pem.retired" "$KEYS/des1-v1.pem"
check_err "the old key version no longer unlocks" "des1/v2" "$TOOL" unlock "$W/enc.img" "$KEYS" "$W/x.key"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
