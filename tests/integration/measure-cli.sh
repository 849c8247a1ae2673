#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# cvm measure snp end to end: the published sev-snp-measure-go vector through the CLI, the
# pinned digest of Debian's OVMF, usage errors, and the operator flow: measure, pin the
# digest in a policy, then `cvm attest verify` accepts an emulator report carrying it and
# refuses one carrying another launch's digest.
source "$(dirname "$0")/lib-cvmd.sh"
CVM=$BUILD/cvm
OVMF=/usr/share/OVMF/OVMF_CODE.fd
if [[ ! -r $OVMF ]]; then
  echo "$OVMF missing (Debian package ovmf): skipped"
  rm -rf "$TMP"
  exit 77
fi

# Same metadata as sev-snp-measure-go guest/testdata/ovmf_img_1.json; OVMF pages given as
# the published precomputed digest, EC2 VMM, 2 vCPUs -> the published launch digest.
check "published vector (sev-snp-measure-go TestLaunchDigestFromMetadataWrapper)" test \
  "$("$CVM" measure snp --ovmf "$OVMF" --vcpus 2 --vcpu-type EPYC-v4 --vmm-type ec2 \
     --ovmf-hash a58211791a556a630a4319dc9e2ea96cc0e9784dd9f20a4fadf81b26c98d163fcdcb6703884bbbb80d7b1de45b3d84d0)" \
  = 4c6e33087d08fa770259484dddbef367086a15c3e2cf10038dc97229d39c942671c2e22b300178f8de594a3f2fa59303

# Pinned for Debian 12 ovmf 2022.11-6+deb12u2 (see tests/unit/attest/test-measure.c).
if [[ $(sha256sum "$OVMF" | cut -d' ' -f1) == d9b568def24088c92f34b5479e0ed7e44d0a4d4cea8a0f5716719180bba48106 ]]; then
  check "Debian OVMF, 4 x EPYC-Milan: pinned digest" test \
    "$("$CVM" measure snp --ovmf "$OVMF" --vcpus 4 --vcpu-type EPYC-Milan)" \
    = cc2b38913550ecd41aadbcf2a5d309ae9d3cb0455c9e1f72892f6b18cfaea3f2e4f46a28b61ca0353724ee707c73177c
fi
check "--json carries the digest and the OVMF sections" bash -o pipefail -c \
  "'$CVM' --json measure snp --ovmf '$OVMF' --vcpus 1 --vcpu-type epyc-v4 | jq -e '(.measurement|length)==96 and .vcpuSig==\"0x800f12\" and (.ovmf.sections|length)==5 and .ovmf.resetEip==\"0x80b004\"' >/dev/null"

"$CVM" measure snp --ovmf "$OVMF" --vcpus 1 --vcpu-type EPYC-Nope >/dev/null 2>"$TMP/err"
check "unknown --vcpu-type fails (exit 1) naming the option" bash -c "[[ $? -eq 1 ]] && grep -q -- '--vcpu-type' '$TMP/err'"
"$CVM" measure snp --ovmf "$OVMF" --vcpus 1 --vcpu-type EPYC-v4 --kernel /dev/null >/dev/null 2>"$TMP/err"
check "direct kernel boot with a non-AmdSev OVMF fails naming SNP_KERNEL_HASHES" bash -c "[[ $? -eq 1 ]] && grep -q SNP_KERNEL_HASHES '$TMP/err'"
"$CVM" measure snp --ovmf "$OVMF" --vcpu-type EPYC-v4 >/dev/null 2>&1
check "missing --vcpus is a usage error (exit 2)" test $? -eq 2
"$CVM" measure snp --ovmf "$OVMF" --vcpus 1 --vcpu-type EPYC-v4 --ovmf-hash 00 >/dev/null 2>&1
check "a short --ovmf-hash is a usage error (exit 2)" test $? -eq 2

# Operator flow: measure, pin, verify.
quiet() { "$@" >/dev/null; }
LD=$("$CVM" measure snp --ovmf "$OVMF" --vcpus 2 --vcpu-type EPYC-Genoa --guest-features 0x1)
OTHER=$("$CVM" measure snp --ovmf "$OVMF" --vcpus 3 --vcpu-type EPYC-Genoa --guest-features 0x1)
check "another vCPU count measures differently" test "$LD" != "$OTHER"
EMU=$TMP/emu
"$CVM" tee-emu init "$EMU" --product genoa >"$TMP/init.out" 2>&1
FP=$(sed -n 's/^ark_sha256 \([0-9a-f]\{64\}\)$/\1/p' "$TMP/init.out")
check "tee-emu init" test ${#FP} -eq 64
echo "{\"allow_emulated\": true, \"measurements\": [\"$LD\"]}" >"$TMP/pin.json"
"$CVM" tee-emu report "$EMU" --report-data "$(printf '11%.0s' {1..64})" --measurement "$LD" \
  --out "$TMP/good.bin" >/dev/null
"$CVM" tee-emu report "$EMU" --report-data "$(printf '11%.0s' {1..64})" --measurement "$OTHER" \
  --out "$TMP/other.bin" >/dev/null
check "attest verify accepts the report carrying the pinned digest" quiet "$CVM" attest verify \
  --snp-report "$TMP/good.bin" --vcek "$EMU/vcek.pem" --emulator-root "$EMU" \
  --emulator-fingerprint "$FP" --policy "$TMP/pin.json"
"$CVM" attest verify --snp-report "$TMP/other.bin" --vcek "$EMU/vcek.pem" --emulator-root "$EMU" \
  --emulator-fingerprint "$FP" --policy "$TMP/pin.json" >/dev/null 2>"$TMP/err"
check "attest verify refuses another launch's digest (exit 1, names the measurement)" \
  bash -c "[[ $? -eq 1 ]] && grep -qi measurement '$TMP/err'"
finish
