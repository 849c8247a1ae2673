#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Console stamping and phase table for bench-vm-boot.sh.

watch OUT.json CONSOLE SUPERVISOR_PID T0 [--qemu-is-supervisor]
    Polls every 5 ms until the console shows "cvm-guest: ready", a "FAILED" line, or the
    supervisor exits. Records (host wall clock): when the QEMU child of the supervisor appears
    (or T0 when the supervisor is QEMU itself), the first console byte (OVMF's first output),
    and every console line as it completes.

report DB MEASURED.json... -- ANCHOR.json...
    Derives the phases and prints the table, the medians and the ratio= lines. DB is cvmd's
    store: the orchestrator's audit records give the host-side release window.

Phase boundaries are the host times the console lines appeared (the serial console is a file
QEMU writes as the guest prints). Only the guest kernel's start is not a line: it is
min over stamped lines of (host time the line was seen - t), where t is the guest's own
stamp: "(t=S.SSSs)" (CLOCK_BOOTTIME) on cvm-guest's tee=, attested and unlocked lines and on
the anchor's init line, and the kernel's "[ S.SSSSSS]" on the lines it prints despite
"quiet". Under TCG on a loaded host the guest clock loses time early in boot (by 2 s in one
run: a kernel line at t=0.036 s mapped the start 2.3 s earlier than cvm-guest's line at
t=9.4 s), so without a kernel line the firmware phase may be overstated and kernel+initrd
understated by that much; the report prints which stamp set the start.
"""
import json
import os
import re
import sqlite3
import statistics
import sys
import time

ESC = re.compile(r"\x1b\[[0-9;=?]*[A-Za-z]")
STAMP = re.compile(r"\(t=([0-9.]+)s\)")
KSTAMP = re.compile(r"^\[\s*([0-9]+\.[0-9]+)\]")


def qemu_child(ppid):
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        comm = st[st.index("(") + 1:st.rindex(")")]
        fields = st[st.rindex(")") + 2:].split()
        if int(fields[1]) == ppid and comm.startswith("qemu-system"):
            return True
    return False


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def watch(out, console, pid, t0, qemu_is_supervisor):
    ev = {"t0": t0, "qemu": t0 if qemu_is_supervisor else None, "first_byte": None,
          "lines": [], "end": None}
    buf = b""
    fh = None
    while True:
        now = time.time()
        if ev["qemu"] is None and qemu_child(pid):
            ev["qemu"] = now
        if fh is None and os.path.exists(console):
            fh = open(console, "rb")
        chunk = fh.read() if fh else b""
        if chunk:
            if ev["first_byte"] is None:
                ev["first_byte"] = now
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = ESC.sub("", line.decode("utf-8", "replace")).strip("\r ")
                if text:
                    ev["lines"].append([now, text])
        done = any(("cvm-guest: ready" in t or "cvm-guest: FAILED" in t or
                    "bench-anchor: FAILED" in t) for _, t in ev["lines"][-4:])
        if done or not alive(pid):
            ev["end"] = now
            break
        time.sleep(0.005)
    with open(out, "w") as f:
        json.dump(ev, f)


def seen(ev, prefix):
    for t, text in ev["lines"]:
        if text.startswith(prefix) or (" " + prefix) in text:
            return t, text
    return None, None


def kernel_start(ev):
    """(host time of the guest kernel's start, the line that bounds it best)."""
    best = None
    for t, text in ev["lines"]:
        m = STAMP.search(text) or KSTAMP.search(text)
        if m and (best is None or t - float(m.group(1)) < best[0]):
            best = (t - float(m.group(1)), text)
    if best is None:
        raise SystemExit("no stamped console line: cannot place the guest kernel's start")
    return best


def release_window(db, t0, t1):
    """Host wall clock (s) of the orchestrator's release request (VM -> attesting) and of its
    audited result (vms/release), within [t0, t1]."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    lo, hi = int(t0 * 1000), int(t1 * 1000) + 1
    req = con.execute("SELECT max(time_ms) FROM cvm_audit WHERE operation='vms/state' AND "
                      "result='ok' AND detail LIKE '%\"to\":\"attesting\"%' AND time_ms BETWEEN ? AND ?",
                      (lo, hi)).fetchone()[0]
    rel = con.execute("SELECT max(time_ms) FROM cvm_audit WHERE operation='vms/release' AND "
                      "result='ok' AND time_ms BETWEEN ? AND ?", (lo, hi)).fetchone()[0]
    con.close()
    return (req / 1000 if req else None), (rel / 1000 if rel else None)


MEASURED = ["host", "firmware", "kernel+initrd", "attestation", "release", "unlock",
            "switch_root", "root_init", "total"]
ANCHOR = ["host", "firmware", "kernel+initrd", "switch_root", "root_init", "total"]


def root_split(ev, start, ready):
    """switch_root: start -> the root's init has its network up ("cvm-guest: network");
    root_init: -> ready (what the root's init does last, e.g. its vTPM seal/unseal)."""
    net, _ = seen(ev, "cvm-guest: network")
    if net is None:
        return ready - start, 0.0
    return net - start, ready - net


def measured_phases(ev, db):
    ready, _ = seen(ev, "cvm-guest: ready")
    if ready is None:
        raise SystemExit(f"measured boot never reached ready: {ev['lines'][-3:]}")
    k, kline = kernel_start(ev)
    g_start, _ = seen(ev, "cvm-guest: tee=")
    g_att, _ = seen(ev, "cvm-guest: attested")
    g_unl, unl_line = seen(ev, "cvm-guest: unlocked")
    req, rel = release_window(db, ev["t0"], ready)
    p = {
        "host": ev["qemu"] - ev["t0"],
        "firmware": k - ev["qemu"],
        "kernel+initrd": g_start - k,
        "attestation": g_att - g_start,
        "release": rel - g_att,
        "unlock": g_unl - rel,
        "total": ready - ev["t0"],
    }
    p["switch_root"], p["root_init"] = root_split(ev, g_unl, ready)
    _, tee_line = seen(ev, "cvm-guest: tee=")
    _, att_line = seen(ev, "cvm-guest: attested")
    g = [float(STAMP.search(x).group(1)) for x in (tee_line, att_line, unl_line)]
    extra = {"orch_release": rel - req, "guest_to_orch": req - g_att,
             "first_byte": ev["first_byte"] - ev["qemu"], "kline": kline,
             "guest_att": g[1] - g[0], "guest_att_unl": g[2] - g[1]}
    return p, extra


def anchor_phases(ev):
    ready, _ = seen(ev, "cvm-guest: ready")
    if ready is None:
        raise SystemExit(f"anchor boot never reached ready: {ev['lines'][-3:]}")
    k, kline = kernel_start(ev)
    g_done, _ = seen(ev, "bench-anchor: initramfs done")
    p = {
        "host": ev["qemu"] - ev["t0"],
        "firmware": k - ev["qemu"],
        "kernel+initrd": g_done - k,
        "total": ready - ev["t0"],
    }
    p["switch_root"], p["root_init"] = root_split(ev, g_done, ready)
    return p, {"first_byte": ev["first_byte"] - ev["qemu"], "kline": kline}


def report(db, measured, anchor):
    rows_m = [measured_phases(json.load(open(f)), db) for f in measured]
    rows_a = [anchor_phases(json.load(open(f))) for f in anchor]
    print("seconds per phase (host wall clock: when each console line appeared)")
    print("%-22s" % "boot" + "".join("%14s" % c for c in MEASURED))
    for i, (p, _) in enumerate(rows_m):
        print("%-22s" % f"confidential #{i + 1}" + "".join("%14.2f" % p[c] for c in MEASURED))
    for i, (p, _) in enumerate(rows_a):
        print("%-22s" % f"anchor #{i + 1}" + "".join(
            ("%14.2f" % p[c]) if c in p else "%14s" % "-" for c in MEASURED))
    med_m = {c: statistics.median(p[c] for p, _ in rows_m) for c in MEASURED}
    med_a = {c: statistics.median(p[c] for p, _ in rows_a) for c in ANCHOR}
    print("%-22s" % "median confidential" + "".join("%14.2f" % med_m[c] for c in MEASURED))
    print("%-22s" % "median anchor" + "".join(
        ("%14.2f" % med_a[c]) if c in med_a else "%14s" % "-" for c in MEASURED))
    for i, (_, x) in enumerate(rows_m):
        print(f"confidential #{i + 1}: release = guest 'attested' -> orchestrator request "
              f"{x['guest_to_orch']:.2f}s + orchestrator release (token, release, audit, state) "
              f"{x['orch_release']:.2f}s; first console byte {x['first_byte']:.2f}s after QEMU start; "
              f"guest clock: attestation {x['guest_att']:.2f}s, attested->unlocked "
              f"{x['guest_att_unl']:.2f}s; kernel start from \"{x['kline'][:48]}\"")
    for i, (_, x) in enumerate(rows_a):
        print(f"anchor #{i + 1}: first console byte {x['first_byte']:.2f}s after QEMU start; "
              f"kernel start from \"{x['kline'][:48]}\"")
    for name, f in (("confidential #1", measured[0]), ("anchor #1", anchor[0])):
        ev = json.load(open(f))
        print(f"{name} console (seconds after start; OVMF output first at "
              f"+{ev['first_byte'] - ev['t0']:.2f}s):")
        for t, text in ev["lines"]:
            print(f"  +{t - ev['t0']:7.2f}s  {text[:110]}")
    print(f"ratio={med_m['total'] / med_a['total']:.2f} total: `cvm vm start` -> ready / "
          f"plain QEMU start -> ready (same kernel, no TEE, no attestation, no LUKS)")
    qm = med_m["total"] - med_m["host"]
    qa = med_a["total"] - med_a["host"]
    print(f"ratio={qm / qa:.2f} QEMU start -> ready, confidential / anchor")


def main():
    if len(sys.argv) >= 6 and sys.argv[1] == "watch":
        watch(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]),
              "--qemu-is-supervisor" in sys.argv[6:])
    elif len(sys.argv) >= 5 and sys.argv[1] == "report" and "--" in sys.argv:
        i = sys.argv.index("--")
        report(sys.argv[2], sys.argv[3:i], sys.argv[i + 1:])
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
