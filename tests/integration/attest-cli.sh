#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# cvm attest / cvm tee-emu end to end: every real SEV-SNP, TDX and Azure sample verifies with
# the right chain and a bit-flipped copy fails naming the check; the debug sample fails the
# default policy; `attest show` decodes each; the emulator is trusted only with its directory
# AND pinned fingerprint and is still refused by the default policy; the guest service answers
# both protocols; MAA policy test with line:column errors; PUT /policies needs a policy
# administrator on a real cvmd while GET stays public; cvmd refuses an unpinned emulator.
source "$(dirname "$0")/lib-cvmd.sh"
CVM=$BUILD/cvm
EV=${CVM_EVIDENCE_DIR:-$SRC/../shared/evidence}
export HOME=$TMP/home XDG_CONFIG_HOME=
mkdir -p "$HOME"
# Verdict tables are long: keep the TAP-style lines readable.
check() { local what=$1; shift; if "$@" >/dev/null; then ok "$what"; else not_ok "$what"; fi; }
if [[ ! -d $EV/snp ]]; then
  not_ok "evidence directory $EV present"
  finish
  exit 1
fi

# flip FILE OFFSET OUT: copy FILE with one bit of byte OFFSET inverted.
flip() {
  python3 - "$1" "$2" "$3" <<'EOF'
import sys
d = bytearray(open(sys.argv[1], 'rb').read())
d[int(sys.argv[2], 0)] ^= 0x04
open(sys.argv[3], 'wb').write(d)
EOF
}

# expect_fail WHAT PATTERN cmd...: exit 1 and one stderr line matching PATTERN.
expect_fail() {
  local what=$1 pat=$2; shift 2
  "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
  if [[ $rc -eq 1 && $(wc -l <"$TMP/err") -eq 1 ]] && grep -Eq -- "$pat" "$TMP/err"; then
    ok "$what"
  else
    not_ok "$what (rc=$rc: $(head -c 300 "$TMP/err"))"
  fi
}

# ---- SEV-SNP samples ------------------------------------------------------------------------
# name cert product [extra args]
snp_samples=(
  "virtee-milan vcek.der Milan"
  "trustee-milan vcek.der Milan"
  "trustee-milan-vlek vlek.der Milan --at 2025-06-01"
  "azure-genoa vcek.pem Genoa"
  "oak-genoa-v5 vcek.der Genoa"
  "oak-turin-v5 vcek.der Turin"
)
for s in "${snp_samples[@]}"; do
  read -r name cert product extra <<<"$s"
  d=$EV/snp/$name
  # shellcheck disable=SC2086
  check "snp $name verifies (exit 0)" "$CVM" attest verify --snp-report "$d/report.bin" --vcek "$d/$cert" $extra
  # shellcheck disable=SC2086
  check "snp $name: chain is $product" bash -o pipefail -c \
    "'$CVM' attest verify --snp-report '$d/report.bin' --vcek '$d/$cert' $extra --json | jq -e '.verdict==\"pass\" and .claims[\"x-ms-sevsnpvm-product\"]==\"$product\"' >/dev/null"
  flip "$d/report.bin" 0x90 "$TMP/flip.bin"
  # shellcheck disable=SC2086
  expect_fail "snp $name with a flipped measurement bit fails naming the signature check" \
    '^cvm: attest verify: snp\.report\.signature' \
    "$CVM" attest verify --snp-report "$TMP/flip.bin" --vcek "$d/$cert" $extra
  check "attest show decodes snp $name" bash -o pipefail -c \
    "'$CVM' attest show '$d/report.bin' --json | jq -e '.kind==\"snp-report\"' >/dev/null"
done
d=$EV/snp/virtee-milan
flip "$d/report.bin" 0x2A8 "$TMP/flip.bin"
expect_fail "snp: a flipped signature bit fails naming the signature check" \
  'snp\.report\.signature' "$CVM" attest verify --snp-report "$TMP/flip.bin" --vcek "$d/vcek.der"
expect_fail "snp: a Milan report with a Genoa VCEK fails naming the check" 'snp\.' \
  "$CVM" attest verify --snp-report "$d/report.bin" --vcek "$EV/snp/oak-genoa-v5/vcek.der"
expect_fail "snp: the VLEK sample is refused today (expired) naming the chain" 'snp\.chain.*expired' \
  "$CVM" attest verify --snp-report "$EV/snp/trustee-milan-vlek/report.bin" --vlek "$EV/snp/trustee-milan-vlek/vlek.der"
check "snp: explicit --ask/--ark (AMD's own) verify" "$CVM" attest verify --snp-report "$d/report.bin" \
  --vcek "$d/vcek.der" --ask "$EV/amd/milan/ask.pem" --ark "$EV/amd/milan/ark.pem"
expect_fail "snp: explicit Genoa --ask/--ark for a Milan VCEK fail" 'snp\.' \
  "$CVM" attest verify --snp-report "$d/report.bin" --vcek "$d/vcek.der" \
  --ask "$EV/amd/genoa/ask.pem" --ark "$EV/amd/genoa/ark.pem"
"$CVM" attest verify --snp-report "$d/report.bin" --ask "$EV/amd/milan/ask.pem" >/dev/null 2>&1
check "snp: --ask without --ark is a usage error (exit 2)" test $? -eq 2

d=$EV/snp/gosevguest-milan-debug
expect_fail "snp: the debug sample fails the default policy naming debug" 'snp\.policy\.debug' \
  "$CVM" attest verify --snp-report "$d/report.bin" --vcek "$d/vcek.der"
echo '{"allow_debug": true}' >"$TMP/allow-debug.json"
check "snp: the debug sample passes a policy allowing debug" \
  "$CVM" attest verify --snp-report "$d/report.bin" --vcek "$d/vcek.der" --policy "$TMP/allow-debug.json"
echo '{"allow_debugg": true}' >"$TMP/typo.json"
expect_fail "snp: an unknown policy member is refused naming it" 'allow_debugg' \
  "$CVM" attest verify --snp-report "$d/report.bin" --vcek "$d/vcek.der" --policy "$TMP/typo.json"
"$CVM" attest verify --snp-report "$d/report.bin" --vcek "$d/vcek.der" --json >"$TMP/fail.json" 2>/dev/null
check "snp: --json on failure prints verdict fail" jq -e '.verdict=="fail"' "$TMP/fail.json"

# ---- TDX samples ------------------------------------------------------------------------------
for name in gotdx-spr-e4 gotdx-cos113 gotdx-v5 trustee-4 trustee-5 trustee-6 oak; do
  q=$EV/tdx/$name/quote.bin
  check "tdx $name verifies to the Intel root (policy allowing debug TDs)" \
    "$CVM" attest verify --tdx-quote "$q" --policy "$TMP/allow-debug.json"
  flip "$q" 200 "$TMP/flipq.bin"
  expect_fail "tdx $name with a flipped body bit fails naming the check" '^cvm: attest verify: tdx\.' \
    "$CVM" attest verify --tdx-quote "$TMP/flipq.bin" --policy "$TMP/allow-debug.json"
  check "attest show decodes tdx $name" bash -o pipefail -c \
    "'$CVM' attest show '$q' --json | jq -e '.kind==\"tdx-quote\"' >/dev/null"
done
check "tdx: a non-debug TD passes the default policy" "$CVM" attest verify --tdx-quote "$EV/tdx/trustee-5/quote.bin"
expect_fail "tdx: the debuggable TD (trustee-4) fails the default policy naming debug" 'debug' \
  "$CVM" attest verify --tdx-quote "$EV/tdx/trustee-4/quote.bin"
echo '{"allowed_tcb_status": ["UpToDate"]}' >"$TMP/tcb-strict.json"
expect_fail "tdx: collateral with a TCB level the policy refuses fails naming the status" 'NotSupported|tcb' \
  "$CVM" attest verify --tdx-quote "$EV/tdx/gotdx-spr-e4/quote.bin" --tcb-info "$EV/intel/sample_tcbInfo_response" \
  --qe-identity "$EV/intel/sample_qeIdentity_response" --policy "$TMP/tcb-strict.json"
echo '{"allow_debug": true, "allowed_tcb_status": ["NotSupported", "UpToDate"]}' >"$TMP/tcb-lenient.json"
check "tdx: the same collateral under a policy accepting its status shows it" bash -o pipefail -c \
  "'$CVM' attest verify --tdx-quote '$EV/tdx/gotdx-spr-e4/quote.bin' --tcb-info '$EV/intel/sample_tcbInfo_response' --qe-identity '$EV/intel/sample_qeIdentity_response' --policy '$TMP/tcb-lenient.json' --json | jq -e '.claims[\"x-ms-tdx-tcb-status\"]==\"NotSupported\"' >/dev/null"

# ---- Azure CVMs (HCL report + vTPM quote) ---------------------------------------------------
# The evidence JSON files bundle the HCL report, TPM quote and VCEK: split them into the files
# an operator would have.
split_azure() {
  python3 - "$1" "$2" <<'EOF'
import base64, json, sys
j = json.load(open(sys.argv[1]))
out = sys.argv[2]
def raw(v):
    return bytes(v) if isinstance(v, list) else base64.urlsafe_b64decode(v + '=' * (-len(v) % 4))
open(out + '.hcl', 'wb').write(raw(j.get('report', j.get('hcl_report'))))
json.dump(j.get('quote', j.get('tpm_quote')), open(out + '.quote.json', 'w'))
if 'td_quote' in j:
    open(out + '.tdq', 'wb').write(raw(j['td_quote']))
v = j.get('vcek')
if v:
    open(out + '.vcek', 'wb').write(v.encode() if v.startswith('-----') else raw(v))
EOF
}
for f in snp-milan/evidence-v0.json snp-milan-v1/evidence-v1.json snp-milan-v2/evidence-v2.json \
         snp-genoa/evidence-genoa.json tdx/evidence-v0.json tdx/evidence-v1.json; do
  n=$TMP/az-${f//\//-}
  split_azure "$EV/azure/$f" "$n" || { not_ok "split $f"; continue; }
  args=(--hcl-report "$n.hcl" --tpm-quote "$n.quote.json")
  [[ -f $n.vcek ]] && args+=(--vcek "$n.vcek")
  [[ -f $n.tdq ]] && args+=(--td-quote "$n.tdq")
  check "azure $f verifies end to end" "$CVM" attest verify "${args[@]}"
  flip "$n.hcl" $((0x4D4 + 30)) "$TMP/flip.hcl"
  expect_fail "azure $f with a flipped runtime-data bit fails naming the binding" 'runtime_data|report_data' \
    "$CVM" attest verify "${args[@]/$n.hcl/$TMP/flip.hcl}"
  check "attest show decodes the azure $f HCL report" bash -o pipefail -c \
    "'$CVM' attest show '$n.hcl' --json | jq -e '.kind==\"hcl-report\"' >/dev/null"
done
n=$TMP/az-snp-milan-evidence-v0.json
expect_fail "azure: a wrong nonce fails naming extraData" 'extraData' \
  "$CVM" attest verify --hcl-report "$n.hcl" --tpm-quote "$n.quote.json" --vcek "$n.vcek" --nonce 00112233
check "azure: the standalone TDX files verify (hcl-report.bin + td-quote.bin + tpm-quote-v1.json)" \
  "$CVM" attest verify --hcl-report "$EV/azure/tdx/hcl-report.bin" --td-quote "$EV/azure/tdx/td-quote.bin" \
  --tpm-quote "$EV/azure/tdx/tpm-quote-v1.json"
expect_fail "azure: an SNP HCL report without its quote's PCRs matching fails" 'tpm\.|pcr' \
  "$CVM" attest verify --hcl-report "$EV/azure/snp-milan/hcl-report.bin" --tpm-quote "$EV/azure/tdx/tpm-quote-v1.json" \
  --vcek "$EV/azure/snp-milan/vcek.pem"
check "attest show decodes a TPM quote" bash -o pipefail -c \
  "'$CVM' attest show '$EV/azure/snp-milan/tpm-quote.msg' | grep -q tpm-quote"
"$CVM" attest show "$EV/snp/virtee-milan/vcek.der" >/dev/null 2>&1
check "attest show refuses a certificate (not evidence, exit 1)" test $? -eq 1

# ---- TEE emulator -----------------------------------------------------------------------------
EMU=$TMP/emu
"$CVM" tee-emu init "$EMU" --product turin --tdx >"$TMP/init.out" 2>&1
check "tee-emu init (Turin + TDX)" test $? -eq 0
FP=$(sed -n 's/^ark_sha256 \([0-9a-f]\{64\}\)$/\1/p' "$TMP/init.out")
TFP=$(sed -n 's/^tdx_root_sha256 \([0-9a-f]\{64\}\)$/\1/p' "$TMP/init.out")
check "tee-emu init prints the ARK fingerprint" test ${#FP} -eq 64
check "... which is the SHA-256 of ark.pem's DER" test "$FP" = \
  "$(openssl x509 -in "$EMU/ark.pem" -outform der | sha256sum | cut -d' ' -f1)"
"$CVM" tee-emu init "$EMU" >/dev/null 2>&1
check "tee-emu init refuses to overwrite an emulator" test $? -eq 1
RD=$(printf 'a5%.0s' {1..32})
MEAS=$(printf '3c%.0s' {1..48})
check "tee-emu report" "$CVM" tee-emu report "$EMU" --report-data "$RD" --measurement "$MEAS" \
  --host-data "$(printf '77%.0s' {1..32})" --policy 0x30000 --vmpl 0 --out "$TMP/emu.bin"
"$CVM" tee-emu report "$EMU" --report-data "$RD" --measurement 3c3c --out "$TMP/x.bin" >/dev/null 2>&1
check "tee-emu report refuses a short measurement (exit 2)" test $? -eq 2
expect_fail "emulated report without --emulator-root fails at the chain" 'snp\.chain' \
  "$CVM" attest verify --snp-report "$TMP/emu.bin" --vcek "$EMU/vcek.pem"
"$CVM" attest verify --snp-report "$TMP/emu.bin" --vcek "$EMU/vcek.pem" --emulator-root "$EMU" >/dev/null 2>&1
check "--emulator-root without --emulator-fingerprint is a usage error (exit 2)" test $? -eq 2
WRONG=$(printf '0%.0s' {1..64})
expect_fail "emulated report with a wrong fingerprint fails naming the pin" 'fingerprint' \
  "$CVM" attest verify --snp-report "$TMP/emu.bin" --vcek "$EMU/vcek.pem" --emulator-root "$EMU" \
  --emulator-fingerprint "$WRONG" --policy <(echo '{"allow_emulated": true}')
expect_fail "emulated report with root+fingerprint is still refused by the default policy" 'snp\.emulated' \
  "$CVM" attest verify --snp-report "$TMP/emu.bin" --vcek "$EMU/vcek.pem" --emulator-root "$EMU" \
  --emulator-fingerprint "$FP"
echo '{"allow_emulated": true}' >"$TMP/allow-emu.json"
check "emulated report verifies with root+fingerprint and a policy allowing emulation" bash -o pipefail -c \
  "'$CVM' attest verify --snp-report '$TMP/emu.bin' --vcek '$EMU/vcek.pem' --emulator-root '$EMU' --emulator-fingerprint '$FP' --policy '$TMP/allow-emu.json' --json | jq -e '.claims[\"x-opencvm-emulated\"]==true and .claims[\"x-ms-sevsnpvm-product\"]==\"Turin\" and .claims[\"x-ms-sevsnpvm-launchmeasurement\"]==\"$MEAS\"' >/dev/null"
flip "$TMP/emu.bin" 0x90 "$TMP/emuflip.bin"
expect_fail "a flipped emulated report fails naming the signature" 'snp\.report\.signature' \
  "$CVM" attest verify --snp-report "$TMP/emuflip.bin" --vcek "$EMU/vcek.pem" --emulator-root "$EMU" \
  --emulator-fingerprint "$FP" --policy "$TMP/allow-emu.json"
check "emulated report verifies from a KDS-layout --certs-dir" "$CVM" attest verify --snp-report "$TMP/emu.bin" \
  --certs-dir "$EMU" --emulator-root "$EMU" --emulator-fingerprint "$FP" --policy "$TMP/allow-emu.json"
check "tee-emu crl (nothing revoked)" "$CVM" tee-emu crl "$EMU"
check "emulated report verifies against the emulator's CRL" "$CVM" attest verify --snp-report "$TMP/emu.bin" \
  --vcek "$EMU/vcek.pem" --crl "$EMU/crl.pem" --emulator-root "$EMU" --emulator-fingerprint "$FP" \
  --policy "$TMP/allow-emu.json"
check "tee-emu crl --revoke-vcek" "$CVM" tee-emu crl "$EMU" --revoke-vcek
expect_fail "a revoked VCEK fails naming revocation" 'revoked' \
  "$CVM" attest verify --snp-report "$TMP/emu.bin" --vcek "$EMU/vcek.pem" --crl "$EMU/crl.pem" \
  --emulator-root "$EMU" --emulator-fingerprint "$FP" --policy "$TMP/allow-emu.json"
check "attest show decodes the emulated report" bash -o pipefail -c \
  "'$CVM' attest show '$TMP/emu.bin' | grep -q snp-report"

MRTD=$(printf '5e%.0s' {1..48})
check "tee-emu quote (TDX)" "$CVM" tee-emu quote "$EMU" --report-data "$RD" --mrtd "$MRTD" --out "$TMP/emuq.bin"
expect_fail "emulated TDX quote without the emulator root fails at the PCK chain" 'tdx\.pck' \
  "$CVM" attest verify --tdx-quote "$TMP/emuq.bin"
expect_fail "emulated TDX quote under its pinned root is refused by the default policy" 'tdx\.emulated' \
  "$CVM" attest verify --tdx-quote "$TMP/emuq.bin" --emulator-root "$EMU" --emulator-fingerprint "$TFP"
check "emulated TDX quote verifies with root+fingerprint and a policy allowing emulation" bash -o pipefail -c \
  "'$CVM' attest verify --tdx-quote '$TMP/emuq.bin' --emulator-root '$EMU' --emulator-fingerprint '$TFP' --policy '$TMP/allow-emu.json' --json | jq -e '.claims[\"x-ms-tdx-mrtd\"]==\"$MRTD\"' >/dev/null"

# Service mode: the cvm-guest line protocol and the JSON protocol on one unix socket.
SOCK=$TMP/tee.sock
"$CVM" tee-emu serve "$EMU" --socket "$SOCK" --measurement "$MEAS" --mrtd "$MRTD" --once \
  2>"$TMP/serve.log" &
SERVE_PID=$!
for _ in $(seq 50); do [[ -S $SOCK ]] && break; sleep 0.1; done
check "tee-emu serve listens" test -S "$SOCK"
python3 - "$SOCK" "$TMP" "$RD$RD" <<'EOF' >"$TMP/client.log" 2>&1
import base64, json, socket, sys
sock, tmp, rd = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX)
s.connect(sock)
f = s.makefile('rwb')
def ask(line):
    f.write(line.encode() + b'\n'); f.flush()
    return f.readline().decode().rstrip('\n')
r = ask('SNP_REPORT ' + rd)
assert r.startswith('OK '), r
open(tmp + '/srv-line.bin', 'wb').write(bytes.fromhex(r[3:]))
r = ask('VCEK')
assert r.startswith('OK '), r
open(tmp + '/srv-chain.pem', 'wb').write(bytes.fromhex(r[3:]))
j = json.loads(ask(json.dumps({"tee": "sev-snp", "report_data": rd})))
open(tmp + '/srv-json.bin', 'wb').write(base64.urlsafe_b64decode(j['report'] + '=' * (-len(j['report']) % 4)))
j = json.loads(ask(json.dumps({"tee": "tdx", "report_data": rd})))
open(tmp + '/srv-q.bin', 'wb').write(base64.urlsafe_b64decode(j['quote'] + '=' * (-len(j['quote']) % 4)))
j = json.loads(ask(json.dumps({"tee": "sev-snp", "report_data": "zz"})))
assert 'error' in j, j
r = ask('SNP_REPORT 00')
assert r.startswith('ERR '), r
print('client ok')
EOF
check "guest client talks both protocols (errors answered, not fatal)" grep -q 'client ok' "$TMP/client.log"
wait "$SERVE_PID"
check "tee-emu serve --once exits 0 after the connection" test $? -eq 0
check "tee-emu serve removes its socket" test ! -e "$SOCK"
for f in srv-line.bin srv-json.bin; do
  check "served report ($f) verifies with the served chain, its measurement fixed by the host" bash -o pipefail -c \
    "'$CVM' attest verify --snp-report '$TMP/$f' --vcek '$TMP/srv-chain.pem' --emulator-root '$EMU' --emulator-fingerprint '$FP' --policy '$TMP/allow-emu.json' --json | jq -e '.claims[\"x-ms-sevsnpvm-launchmeasurement\"]==\"$MEAS\" and .claims[\"x-ms-sevsnpvm-reportdata\"]==\"$RD$RD\"' >/dev/null"
done
check "served TDX quote verifies under the pinned TDX root" "$CVM" attest verify --tdx-quote "$TMP/srv-q.bin" \
  --emulator-root "$EMU" --emulator-fingerprint "$TFP" --policy "$TMP/allow-emu.json"
touch "$TMP/notasock"
"$CVM" tee-emu serve "$EMU" --socket "$TMP/notasock" >/dev/null 2>&1
check "tee-emu serve refuses to replace a regular file" test $? -eq 1
"$CVM" tee-emu serve "$TMP/nothing" --socket "$TMP/s2" >/dev/null 2>&1
check "tee-emu serve refuses a directory without an emulator" test $? -eq 1

# ---- MAA policy test --------------------------------------------------------------------------
cat >"$TMP/good.maa" <<'EOF'
version=1.0;
authorizationrules {
  c:[type=="x-ms-sevsnpvm-is-debuggable", value==false] => permit();
};
issuancerules {
  c:[type=="x-ms-sevsnpvm-launchmeasurement"] => issue(type="measurement", value=c.value);
};
EOF
printf 'version=1.0;\nauthorizationrules {\n  c:[type=="x-ms-sevsnpvm-is-debuggable", value==false] => permit()\n};\n' >"$TMP/bad.maa"
d=$EV/snp/virtee-milan
"$CVM" attest verify --snp-report "$d/report.bin" --vcek "$d/vcek.der" --json >"$TMP/claims.json"
d=$EV/snp/gosevguest-milan-debug
"$CVM" attest verify --snp-report "$d/report.bin" --vcek "$d/vcek.der" --policy "$TMP/allow-debug.json" \
  --json >"$TMP/claims-debug.json"
check "policy test permits the claims of a non-debug report and issues the measurement" bash -o pipefail -c \
  "'$CVM' attest policy test --policy '$TMP/good.maa' --claims '$TMP/claims.json' --json | jq -e '.permitted and (.issued.measurement | length == 96)' >/dev/null"
"$CVM" attest policy test --policy "$TMP/good.maa" --claims "$TMP/claims-debug.json" >"$TMP/out" 2>&1
check "policy test denies a debuggable guest (exit 1)" test $? -eq 1
check "... and says denied" grep -q denied "$TMP/out"
expect_fail "policy test with a bad policy prints FILE:line:column" 'bad\.maa:4:1: ' \
  "$CVM" attest policy test --policy "$TMP/bad.maa" --claims "$TMP/claims.json"

# ---- cvmd: attestation policies over REST ----------------------------------------------------
fresh_store || { not_ok "create test database"; finish; exit 1; }
args=(--store "${STORE_URL:-sqlite:$TMP/cvmd.db}")
if start_dev "$TMP/dev.json" "$TMP/cvmd.log" "${args[@]}"; then
  ok "cvmd --dev starts"
  URL=$(jq -r .base_url "$TMP/dev.json")
  CA=$(jq -r .ca_cert "$TMP/dev.json")
  check "login as the bootstrap administrator" "$CVM" login --dev-info "$TMP/dev.json"
  check "policy set SevSnpVm as administrator" "$CVM" attest policy set SevSnpVm --policy "$TMP/good.maa"
  check "policy get SevSnpVm returns the text" bash -o pipefail -c \
    "'$CVM' attest policy get SevSnpVm | grep -q 'x-ms-sevsnpvm-is-debuggable'"
  expect_fail "policy set with a bad policy is refused locally with line:column" 'bad\.maa:4:1: ' \
    "$CVM" attest policy set SevSnpVm --policy "$TMP/bad.maa"
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CA" "$URL/policies/SevSnpVm?api-version=2022-08-01")
  check "GET /policies/SevSnpVm is public (200)" test "$code" = 200
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CA" -X PUT -H 'Content-Type: text/plain' \
    --data-binary @"$TMP/good.maa" "$URL/policies/SevSnpVm?api-version=2022-08-01")
  check "PUT /policies/SevSnpVm without a token is refused (401)" test "$code" = 401
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$CA" -X PUT -H 'Content-Type: text/plain' \
    --data-binary @"$TMP/good.maa" "$URL/POLICIES/SevSnpVm/?api-version=2022-08-01")
  check "... also when spelled /POLICIES/SevSnpVm/ (401)" test "$code" = 401
  "$CVM" identity create user1 --secret-out "$TMP/user1.secret" >/dev/null 2>&1
  "$CVM" role assign --role "Managed HSM Crypto User" --principal user1 >/dev/null 2>&1
  cid=$("$CVM" identity list --json | jq -r '(.value // .)[] | select(.name=="user1") | .client_id')
  uoid=$("$CVM" identity list --json | jq -r '(.value // .)[] | select(.name=="user1") | .oid')
  check "login as a Crypto User" "$CVM" login --dev-info "$TMP/dev.json" --client-id "$cid" \
    --client-secret-file "$TMP/user1.secret"
  expect_fail "policy set as a Crypto User is forbidden (exit 1, 403)" 'Forbidden' \
    "$CVM" attest policy set SevSnpVm --policy "$TMP/good.maa"
  check "policy get works for any caller" "$CVM" attest policy get SevSnpVm --out "$TMP/got.maa"
  check "... and returns what the administrator set" cmp -s "$TMP/good.maa" "$TMP/got.maa"
  stop_pid "$CVMD_PID"
  # Every policy PUT, allowed or refused, left one audit record: who, which type, the outcome
  # and the SHA-256 of the policy (never its text).
  "$CVM" audit export --store "${args[1]}" --since 0 --out "$TMP/audit.jsonl" >/dev/null 2>&1
  H=$(sha256sum <"$TMP/good.maa" | cut -d' ' -f1)
  P='select(.operation=="policies/set")'
  check "audit: the administrator's policy set (200, SevSnpVm, SHA-256 of the policy)" \
    jq -s -e --arg h "$H" "map($P | select(.status==200 and .result==\"ok\" and .key_name==\"SevSnpVm\" and (.principal|length)==36 and (.detail|fromjson|.policy_sha256)==\$h)) | length==1" "$TMP/audit.jsonl"
  check "audit: both PUTs without a token refused (401, no principal)" \
    jq -s -e "map($P | select(.status==401 and .result==\"Unauthorized\" and .principal==null)) | length==2" "$TMP/audit.jsonl"
  check "audit: the Crypto User's refusal (403) names that principal" \
    jq -s -e --arg o "$uoid" "map($P | select(.status==403 and .result==\"Forbidden\" and .principal==\$o and .key_name==\"SevSnpVm\")) | length==1" "$TMP/audit.jsonl"
  check "audit: no record holds the policy text" bash -c "! grep -q 'is-debuggable' '$TMP/audit.jsonl'"
  out=$("$CVMD" --verify-audit --store "${args[1]}" 2>&1)
  check "audit chain verifies ($out)" grep -Eq '^audit: [1-9][0-9]* records verified' <<<"$out"
else
  not_ok "cvmd --dev starts ($(tail -3 "$TMP/cvmd.log"))"
fi

# cvmd outside --dev: the emulator directory alone is not trusted.
CONF=$TMP/cvmd.conf
write_conf() {
  { echo "state_dir = $TMP/state-$1"; echo "listen = 127.0.0.1:0"
    echo "store = sqlite:$TMP/state-$1.db"; echo "attest_emulator_root = $EMU"
    [[ -n $2 ]] && echo "attest_emulator_fingerprint = $2"; } >"$CONF"
}
# run_cvmd NAME: cvmd with $CONF; a refused start exits by itself, a good one is stopped.
run_cvmd() {
  "$CVMD" --config "$CONF" >"$TMP/cvmd-$1.log" 2>&1 &
  local pid=$! i
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    grep -q cvmd_started "$TMP/cvmd-$1.log" && break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then stop_pid "$pid"; return 0; fi
  wait "$pid"; return 1
}
write_conf nofp ""
run_cvmd nofp
check "cvmd refuses attest_emulator_root without attest_emulator_fingerprint" test $? -eq 1
check "... naming attest_emulator_fingerprint" grep -q attest_emulator_fingerprint "$TMP/cvmd-nofp.log"
write_conf wrongfp "$WRONG"
run_cvmd wrongfp
check "cvmd refuses a fingerprint that does not match the emulator" test $? -eq 1
check "... naming both values" grep -q "$FP" "$TMP/cvmd-wrongfp.log"
write_conf goodfp "$FP"
run_cvmd goodfp
check "cvmd starts with the emulator root and its pinned fingerprint" test $? -eq 0
check "... and logs the trusted emulator" grep -q attest_emulator_trusted "$TMP/cvmd-goodfp.log"

finish
