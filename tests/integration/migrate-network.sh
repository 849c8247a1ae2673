#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# cvm migrate check-network between two network namespaces this test creates (source and
# target joined by a veth pair; no route anywhere else): open ports pass (443 by a plain
# listener, 9443 by a real `cvm migrate replicate serve`), closed ones fail as refused, a port
# whose packets are dropped (tc netem loss 100%) fails as timed out, names resolve or not, and
# the exit code says whether everything passed. Needs root (ip netns).
set -uo pipefail
BUILD=${CVM_BUILD_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/build}
CVM=$BUILD/cvm
if [[ $(id -u) -ne 0 ]] || ! command -v ip >/dev/null; then
  echo "0 passed, 0 failed (skipped: needs root and iproute2)"; exit 77
fi
TMP=$(mktemp -d)
SRC=cvm-mig-src-$$ TGT=cvm-mig-tgt-$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  ip netns del "$SRC" 2>/dev/null; ip netns del "$TGT" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
pass=0 fail=0
check() {
  local name=$1; shift
  if "$@" >/dev/null 2>&1; then pass=$((pass + 1)); echo "ok - $name"
  else fail=$((fail + 1)); echo "not ok - $name"; fi
}
finish() { echo "$pass passed, $fail failed"; [[ $fail -eq 0 ]]; exit $?; }
is() { [[ $1 == "$2" ]]; }
cd "$TMP"

check "create namespaces" bash -c "ip netns add $SRC && ip netns add $TGT"
check "veth pair between them" bash -c "ip link add s$$ netns $SRC type veth peer name t$$ netns $TGT"
ip -n "$SRC" addr add 10.231.7.1/24 dev s$$; ip -n "$SRC" link set s$$ up; ip -n "$SRC" link set lo up
ip -n "$TGT" addr add 10.231.7.2/24 dev t$$; ip -n "$TGT" link set t$$ up; ip -n "$TGT" link set lo up
check "source has no default route (isolated)" bash -c "! ip -n $SRC route | grep -q default"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -days 1 -subj /CN=net-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout t.key -out t.csr -subj /CN=t 2>/dev/null
openssl x509 -req -in t.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out t.pem -days 1 2>/dev/null
ip netns exec "$TGT" "$CVM" migrate replicate serve --target "$TMP/tgt.img" --state "$TMP/tgt.state" \
  --listen 10.231.7.2:9443 --ready-file "$TMP/ready" --cert t.pem --key t.key --ca ca.pem 2>/dev/null &
pids+=("$!")
ip netns exec "$TGT" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.231.7.2", 443)); s.listen(8)
while True:
    c, _ = s.accept(); c.close()' &
pids+=("$!")
for _ in $(seq 100); do [[ -s ready ]] && ip netns exec "$TGT" ss -ltn | grep -q ':443 ' && break; sleep 0.05; done

cn() { ip netns exec "$SRC" "$CVM" "$@"; }
cn --json migrate check-network --target 10.231.7.2 --resolve localhost --resolve target.invalid >out.json; rc=$?
st() { jq -r --arg c "$1" '.[] | select(.check | startswith($c)) | .status' out.json; }
check "some checks fail: exit 1" is $rc 1
check "443 (key/attestation) passes" is "$(st 'tcp 10.231.7.2:443 ')" pass
check "9443 (replication, cvm serve) passes" is "$(st 'tcp 10.231.7.2:9443 ')" pass
check "22 (SSH) fails: refused" bash -c "jq -e '.[] | select(.check | startswith(\"tcp 10.231.7.2:22 \")) | .status == \"fail\" and (.detail | test(\"refused\"))' out.json"
check "5985 (WinRM) fails" is "$(st 'tcp 10.231.7.2:5985 ')" fail
check "localhost resolves" is "$(st 'dns localhost')" pass
check "an unknown private name does not" is "$(st 'dns target.invalid')" fail
check "only the open ports: exit 0" cn migrate check-network --target 10.231.7.2 --ports 443,9443
cn migrate check-network --target 10.231.7.99 --ports 443 --timeout-ms 300 >/dev/null 2>&1; rc=$?
check "an address with no host behind it fails" is $rc 1
if command -v tc >/dev/null && ip netns exec "$TGT" tc qdisc add dev t$$ root netem loss 100% 2>/dev/null; then
  cn --json migrate check-network --target 10.231.7.2 --ports 443 --timeout-ms 500 >drop.json; rc=$?
  check "dropped packets: fails with a timeout" bash -c "jq -e '.[0].status == \"fail\" and (.[0].detail | test(\"timed out after 500 ms\"))' drop.json"
  ip netns exec "$TGT" tc qdisc del dev t$$ root
  check "after the drop is lifted it passes again" cn migrate check-network --target 10.231.7.2 --ports 443
else
  echo "# skipped the timeout case: tc netem is not available here"
fi
cn migrate check-network --target 10.231.7.2 --ports 70000 >/dev/null 2>&1; rc=$?
check "bad port list: exit 2" is $rc 2
cn migrate check-network >/dev/null 2>&1; rc=$?
check "missing --target: exit 2" is $rc 2
finish
