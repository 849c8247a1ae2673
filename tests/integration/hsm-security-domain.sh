#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Security domain end to end over REST and the CLI: a cvmd started from a config without a
# domain key file is not activated; `cvm hsm init` (activation token, 3 officers, quorum 2)
# creates the domain and the first administrator; a new cvmd process on the same store is
# activated with `cvm hsm activate` from 2 officers' shares (1 share, or shares of another
# domain, are refused) and serves the keys made before; a full backup restores into a second
# store activated with the same domain and is refused by one with another domain; failed
# activation attempts are rate limited. PostgreSQL aware (fresh_store).
source "$(dirname "$0")/lib-cvmd.sh"
CVM=$BUILD/cvm
export HOME=$TMP/home XDG_CONFIG_HOME=
mkdir -p "$HOME"
trap finish EXIT

# start_node NAME: cvmd from a config (not --dev) on state dir $TMP/NAME and store $STORE_URL
# (SQLite in the state dir when empty). Sets URL_NAME, CA_NAME, PID_NAME, PORT_NAME; a restart
# keeps the port, so credentials files (base_url) stay valid.
start_node() {
  local n=$1 port i
  eval "port=\${PORT_$n:-}"
  [[ -n $port ]] || port=$(free_port)
  mkdir -p "$TMP/$n"
  {
    echo "listen = 127.0.0.1:$port"
    echo "state_dir = $TMP/$n/state"
    [[ -n $STORE_URL ]] && echo "store = $STORE_URL"
    echo "services = hsm"
  } >"$TMP/$n/cvmd.conf"
  "$CVMD" --config "$TMP/$n/cvmd.conf" >>"$TMP/$n/log" 2>&1 &
  local pid=$!
  CVMD_PIDS+=("$pid")
  for ((i = 0; i < 600; i++)); do
    grep -q cvmd_started "$TMP/$n/log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q cvmd_started "$TMP/$n/log" || { cat "$TMP/$n/log"; return 1; }
  eval "URL_$n=https://127.0.0.1:$port CA_$n=$TMP/$n/state/tls-cert.pem PID_$n=$pid PORT_$n=$port"
}
# cvm against node NAME without credentials (before activation)
cvmn() { local n=$1 url ca; shift; eval "url=\$URL_$n ca=\$CA_$n"; "$CVM" --url "$url" --ca-cert "$ca" "$@"; }
# status code of a raw request: NAME METHOD PATH [curl args...]; body in $TMP/resp.json
raw() {
  local n=$1 m=$2 p=$3 url ca; shift 3; eval "url=\$URL_$n ca=\$CA_$n"
  curl -s -o "$TMP/resp.json" -w '%{http_code}' --cacert "$ca" -X "$m" "$@" "$url$p?api-version=7.5"
}
code_is() { jq -e --arg c "$1" '.error.code == $c' "$TMP/resp.json" >/dev/null; }

# Officers: three for the domain, three for another domain.
for o in a b c x y z; do
  openssl genrsa -out "$TMP/$o-key.pem" 2048 2>/dev/null
  openssl rsa -in "$TMP/$o-key.pem" -pubout -out "$TMP/$o.pem" 2>/dev/null
done

# ---- 1. a fresh cvmd without a key file is not activated ------------------------------------
fresh_store || { not_ok "create PostgreSQL database"; exit 1; }
STORE1=$STORE_URL
check "cvmd starts from a config without domain_key_file" start_node n1
TOKEN=$TMP/n1/state/activation-token
check "the activation token file is written" test -s "$TOKEN"
check "... mode 0600" test "$(stat -c %a "$TOKEN")" = 600
check "... its path is logged, never its value" \
  bash -c "grep -q 'activation_token_written.*path=$TOKEN' '$TMP/n1/log' && ! grep -qF \"\$(cat '$TOKEN')\" '$TMP/n1/log'"
st=$(raw n1 GET /keys -H "Authorization: Bearer x.y.z")
check "a key call answers 409 HsmNotActivated" bash -c "[[ $st == 409 ]] && jq -e '.error.code==\"HsmNotActivated\"' '$TMP/resp.json' >/dev/null"
cvmn n1 hsm status >"$TMP/out" 2>&1; rc=$?
check "hsm status without credentials: exit 1, not activated" test $rc -eq 1
check "... and says so" grep -q 'activated *no' "$TMP/out"
check "GET /opencvm/status needs no token" bash -c "[[ \$(curl -s --cacert '$CA_n1' '$URL_n1/opencvm/status' | jq -c .) == '{\"activated\":false,\"security_domain\":false}' ]]"

# ---- 2. init: activation token required -------------------------------------------------
INIT=(hsm init --officer-key "$TMP/a.pem" --officer-key "$TMP/b.pem" --officer-key "$TMP/c.pem" --quorum 2)
st=$(raw n1 POST /securitydomain/download -H 'content-type: application/json' \
  --data "{\"certificates\":[],\"required\":2}")
check "download without the activation token: 401" test "$st" = 401
cvmn n1 "${INIT[@]}" --out "$TMP/sd.json" >"$TMP/out" 2>&1; rc=$?
check "hsm init without --activation-token-file: usage error (exit 2)" test $rc -eq 2
echo wrong-token >"$TMP/wrong.token"
cvmn n1 "${INIT[@]}" --out "$TMP/sd.json" --activation-token-file "$TMP/wrong.token" >"$TMP/out" 2>&1; rc=$?
check "hsm init with a wrong activation token: exit 1" test $rc -eq 1
check "... Forbidden, naming the header" grep -q 'Forbidden.*x-opencvm-activation-token' "$TMP/out"
check "... and nothing was created" test ! -e "$TMP/sd.json"
cvmn n1 hsm init --officer-key "$TMP/a.pem" --officer-key "$TMP/b.pem" --quorum 2 --out "$TMP/sd.json" \
  --activation-token-file "$TOKEN" >"$TMP/out" 2>&1; rc=$?
check "hsm init with two officers: usage error (3..10 required)" test $rc -eq 2
check "hsm init with 3 officer keys, quorum 2" \
  cvmn n1 "${INIT[@]}" --out "$TMP/sd.json" --activation-token-file "$TOKEN" --admin-out "$TMP/admin.json"
check "security domain file is 0600 and has 3 shares, quorum 2" \
  bash -c "[[ \$(stat -c %a '$TMP/sd.json') == 600 ]] && jq -e '.quorum==2 and (.shares|length)==3' '$TMP/sd.json' >/dev/null"
check "admin credentials file is 0600 with a client secret" \
  bash -c "[[ \$(stat -c %a '$TMP/admin.json') == 600 ]] && jq -e '.client_secret|length > 20' '$TMP/admin.json' >/dev/null"
check "the activation token file is removed once activated" test ! -e "$TOKEN"
cvmn n1 "${INIT[@]}" --out "$TMP/sd-again.json" --activation-token-file "$TMP/wrong.token" >"$TMP/out" 2>&1; rc=$?
check "a second init is refused (Conflict)" bash -c "[[ $rc -eq 1 ]] && grep -q Conflict '$TMP/out'"

ADM=(--dev-info "$TMP/admin.json")
check "hsm status as the administrator: activated" bash -c "'$CVM' ${ADM[*]} hsm status --json | jq -e '.activated and .authenticated' >/dev/null"
check "the administrator creates a key user" "$CVM" "${ADM[@]}" identity create app1 --secret-out "$TMP/app1.secret"
check "... and assigns it Crypto User" "$CVM" "${ADM[@]}" role assign --role "Crypto User" --principal app1
APP1=$("$CVM" "${ADM[@]}" identity list --json | jq -r '(.value // .)[] | select(.name=="app1") | .client_id')
USR=("${ADM[@]}" --client-id "$APP1" --client-secret-file "$TMP/app1.secret")
check "the key user creates an RSA key" "$CVM" "${USR[@]}" key create disk --kty RSA-HSM --size 3072
head -c 32 /dev/urandom >"$TMP/secret.bin"
check "... and wraps a secret with it" "$CVM" "${USR[@]}" key wrap disk --alg RSA-OAEP-256 --in "$TMP/secret.bin" --out "$TMP/w.bin"
st=$(raw n1 POST /securitydomain/download -H "Authorization: Bearer $("$CVM" "${ADM[@]}" identity token)" \
  -H 'content-type: application/json' --data '{}')
check "an activated HSM does not hand out its domain again (409)" bash -c "[[ $st == 409 ]] && jq -e '.error.message|test(\"not stored\")' '$TMP/resp.json' >/dev/null"
check "cvmd 1 stops" stop_pid "$PID_n1"

# ---- 3. a new cvmd process on the same store: activate from shares --------------------------
: >"$TMP/n1/log"
check "a new cvmd starts on the same store" start_node n1
check "... not activated" bash -c "'$CVM' --url '$URL_n1' --ca-cert '$CA_n1' hsm status --json | jq -e '(.activated|not) and .security_domain' >/dev/null"
"$CVM" "${USR[@]}" key show disk >"$TMP/out" 2>&1; rc=$?
check "... a key call is refused (HsmNotActivated)" bash -c "[[ $rc -ne 0 ]] && grep -q HsmNotActivated '$TMP/out'"
st=$(raw n1 GET /securitydomain/upload)
check "GET /securitydomain/upload: RSA-3072 exchange key with x5c" \
  bash -c "[[ $st == 200 ]] && jq -e '.key_format==\"jwk\" and .transfer_key.kty==\"RSA\" and (.transfer_key.x5c|length)==1 and (.transfer_key.n|length)==512' '$TMP/resp.json' >/dev/null"
cvmn n1 hsm activate --security-domain "$TMP/sd.json" --officer-private-key "$TMP/a-key.pem" >"$TMP/out" 2>&1; rc=$?
check "upload of 1 share is refused (exit 1, 400)" bash -c "[[ $rc -eq 1 ]] && grep -q 'HTTP 400.*quorum' '$TMP/out'"

# another domain (its own store) for the wrong-domain cases
fresh_store || { not_ok "create PostgreSQL database"; exit 1; }
check "a second cvmd on another store starts" start_node n2
# Managed HSM's request shape: officers as JWKs carrying their certificate (x5c).
jwks=$(for o in x y z; do
  openssl req -x509 -key "$TMP/$o-key.pem" -subj "/CN=officer $o" -days 1 -outform DER 2>/dev/null | base64 -w0 |
    jq -R '{kty: "RSA", key_ops: ["wrapKey"], alg: "RSA-OAEP-256", x5c: [.]}'
done | jq -s -c '{certificates: {keys: .}, required: 2}')
st=$(raw n2 POST /securitydomain/download -D "$TMP/hdr" -H 'content-type: application/json' \
  -H "x-opencvm-activation-token: $(cat "$TMP/n2/state/activation-token")" --data "$jwks")
check "... init over REST with JWK+x5c officers: 202 with the blob and an administrator" \
  bash -c "[[ $st == 202 ]] && jq -e '(.value|fromjson|.quorum==2) and (.administrator.client_secret|length>20)' '$TMP/resp.json' >/dev/null"
check "... Azure-AsyncOperation names the pending status, which says Success" \
  bash -c "grep -qi '^Azure-AsyncOperation: .*/securitydomain/download/pending' '$TMP/hdr' && [[ \$(curl -s --cacert '$CA_n2' '$URL_n2/securitydomain/download/pending?api-version=7.5' | jq -r .status) == Success ]]"
jq -r .value "$TMP/resp.json" >"$TMP/sd2.json"
jq --arg u "$URL_n2" --arg ca "$CA_n2" '.administrator + {base_url: $u, ca_cert: $ca}' "$TMP/resp.json" >"$TMP/admin2.json"
cvmn n1 hsm activate --security-domain "$TMP/sd2.json" --officer-private-key "$TMP/x-key.pem" \
  --officer-private-key "$TMP/y-key.pem" >"$TMP/out" 2>&1; rc=$?
check "upload of 2 shares of another domain is refused (exit 1, 400)" \
  bash -c "[[ $rc -eq 1 ]] && grep -q 'HTTP 400.*does not match' '$TMP/out'"
st=$(raw n1 GET /securitydomain/upload/pending)
check "... the pending status says Failed" bash -c "[[ $st == 200 ]] && jq -e '.status==\"Failed\"' '$TMP/resp.json' >/dev/null"
cvmn n1 hsm activate --security-domain "$TMP/sd.json" --officer-private-key "$TMP/a-key.pem" \
  --officer-private-key "$TMP/x-key.pem" >"$TMP/out" 2>&1; rc=$?
check "an officer key without a share in this domain is refused locally" \
  bash -c "[[ $rc -eq 1 ]] && grep -q 'no share is encrypted to this officer key' '$TMP/out'"
check "upload of 2 correct shares activates" cvmn n1 hsm activate --security-domain "$TMP/sd.json" \
  --officer-private-key "$TMP/b-key.pem" --officer-private-key "$TMP/c-key.pem"
st=$(raw n1 GET /securitydomain/upload/pending)
check "... the pending status says Success" bash -c "[[ $st == 200 ]] && jq -e '.status==\"Success\"' '$TMP/resp.json' >/dev/null"
check "... the key unwraps the earlier wrap" "$CVM" "${USR[@]}" key unwrap disk --alg RSA-OAEP-256 --in "$TMP/w.bin" --out "$TMP/u.bin"
check "... to the original secret" cmp -s "$TMP/secret.bin" "$TMP/u.bin"
cvmn n1 hsm activate --security-domain "$TMP/sd.json" --officer-private-key "$TMP/b-key.pem" \
  --officer-private-key "$TMP/c-key.pem" >"$TMP/out" 2>&1; rc=$?
check "upload to an activated HSM is refused (Conflict)" bash -c "[[ $rc -eq 1 ]] && grep -q Conflict '$TMP/out'"
check "no second administrator was created on the same store" bash -c "[[ \$('$CVM' ${ADM[*]} identity list --json | jq '[(.value // .)[] | select(.name==\"administrator\")] | length') == 1 ]]"

# ---- 4. full backup, restore into a store activated with the same domain ---------------------
"$CVM" "${ADM[@]}" hsm backup --dir "$TMP/n1/state/backups" --json >"$TMP/backup.json"; rc=$?
FOLDER=$(jq -r .jobId "$TMP/backup.json" 2>/dev/null)
check "full backup (cvm hsm backup)" bash -c "[[ $rc -eq 0 && -s '$TMP/n1/state/backups/$FOLDER/manifest.json' ]]"
fresh_store || { not_ok "create PostgreSQL database"; exit 1; }
check "a third cvmd on an empty store starts" start_node n3
cvmn n3 hsm activate --security-domain "$TMP/sd.json" --officer-private-key "$TMP/a-key.pem" \
  --officer-private-key "$TMP/c-key.pem" --activation-token-file "$TMP/wrong.token" >"$TMP/out" 2>&1; rc=$?
check "activating an empty store with a wrong activation token is refused" bash -c "[[ $rc -eq 1 ]] && grep -q Forbidden '$TMP/out'"
st=$(raw n3 POST /securitydomain/upload -H 'content-type: application/json' --data '{"value":"not json"}')
check "upload whose value is not JSON: 400 naming value" bash -c "[[ $st == 400 ]] && jq -e '.error.message|startswith(\"value\")' '$TMP/resp.json' >/dev/null"
st=$(raw n3 POST /securitydomain/upload -H 'content-type: application/json' --data '{"value":"{\"shares\":[\"AAAA\",\"BBBB\"]}"}')
check "upload of shares not encrypted to the exchange key: 400 saying so" bash -c "[[ $st == 400 ]] && jq -e '.error.message|contains(\"exchange key\")' '$TMP/resp.json' >/dev/null"
check "... and left it un-activated" bash -c "'$CVM' --url '$URL_n3' --ca-cert '$CA_n3' hsm status --json | jq -e '(.activated|not) and (.security_domain|not)' >/dev/null"
check "the empty store is activated with the same domain (+ a first administrator)" \
  cvmn n3 hsm activate --security-domain "$TMP/sd.json" --officer-private-key "$TMP/a-key.pem" \
  --officer-private-key "$TMP/c-key.pem" --activation-token-file "$TMP/n3/state/activation-token" --admin-out "$TMP/admin3.json"
cp -r "$TMP/n1/state/backups/$FOLDER" "$TMP/n3/state/backups/"
check "full restore into it (cvm hsm restore)" "$CVM" --dev-info "$TMP/admin3.json" hsm restore --dir "$TMP/n3/state/backups" --folder "$FOLDER"
check "... a key user there" "$CVM" --dev-info "$TMP/admin3.json" identity create app3 --secret-out "$TMP/app3.secret"
check "... with Crypto User" "$CVM" --dev-info "$TMP/admin3.json" role assign --role "Crypto User" --principal app3
APP3=$("$CVM" --dev-info "$TMP/admin3.json" identity list --json | jq -r '(.value // .)[] | select(.name=="app3") | .client_id')
check "... unwraps the wrap made on the first store" "$CVM" --dev-info "$TMP/admin3.json" --client-id "$APP3" \
  --client-secret-file "$TMP/app3.secret" key unwrap disk --alg RSA-OAEP-256 --in "$TMP/w.bin" --out "$TMP/u3.bin"
check "... to the original secret" cmp -s "$TMP/secret.bin" "$TMP/u3.bin"
cp -r "$TMP/n1/state/backups/$FOLDER" "$TMP/n2/state/backups/"
"$CVM" --dev-info "$TMP/admin2.json" hsm restore --dir "$TMP/n2/state/backups" --folder "$FOLDER" >"$TMP/out" 2>&1; rc=$?
check "restore into a store with another domain is refused" test $rc -eq 1

# ---- 5. failed activation attempts are rate limited ---------------------------------------
fresh_store || { not_ok "create PostgreSQL database"; exit 1; }
check "a fourth cvmd on an empty store starts" start_node n4
st=$(raw n4 POST /securitydomain/download -H "x-opencvm-activation-token: $(cat "$TMP/n4/state/activation-token")" \
  -H 'content-type: application/json' --data "{\"certificates\":[$(printf '{"kty":"RSA","x5c":["bm90IGEgY2VydA=="]},%.0s' 1 2)$(jq -Rs . "$TMP/a.pem")],\"required\":2}")
check "a JWK whose x5c is not a certificate: 400 naming certificates[0]" \
  bash -c "[[ $st == 400 ]] && jq -e '.error.message|contains(\"certificates[0]\")' '$TMP/resp.json' >/dev/null"
check "... and the token still works afterwards (nothing changed)" test -s "$TMP/n4/state/activation-token"
for i in 1 2 3 4 5; do
  raw n4 POST /securitydomain/download -H 'x-opencvm-activation-token: guess' >/dev/null
done
st=$(raw n4 POST /securitydomain/download -H "x-opencvm-activation-token: $(cat "$TMP/n4/state/activation-token")" \
  -H 'content-type: application/json' --data '{}')
check "after 5 failures even the right token waits (429 TooManyRequests)" bash -c "[[ $st == 429 ]] && jq -e '.error.code==\"TooManyRequests\"' '$TMP/resp.json' >/dev/null"

if [[ -n $STORE1 ]]; then AUD=(--store "$STORE1"); else AUD=(--state-dir "$TMP/n1/state"); fi
check "the audit chain of the first store verifies" "$CVM" audit verify "${AUD[@]}"
check "... and recorded the security domain calls" \
  bash -c "'$CVM' audit export ${AUD[*]} | grep -q 'securitydomain/upload'"
