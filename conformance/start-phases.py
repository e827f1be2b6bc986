#!/usr/bin/env python3
"""Where the start suite's time went, from the containerd log `cargo xtask bench` keeps.

Usage: python3 conformance/start-phases.py .palisade-run/last-bench/containerd.log

For each group of measured pods (bench-cold-runc, bench-warm-palisade, ...) prints, as a
markdown table, the median of each phase: containerd's CRI calls (RunPodSandbox, CreateContainer, StartContainer, from
its own info lines) and, for palisade, the timings its shim logs for the sandbox (sb_) and
the container (c_): labels, prepare (hardening, policies), runc create, attach (the monitor's
watch, waiting for the shim's join), join wait, runc start, and the first holder's load
(load_or_open, attach of the exit tracepoints, ring insert): a phase only some pods went
through (the first holder's load) shows how many in parentheses.
"""

import re
import statistics
import sys
from datetime import datetime

SHIM_FIELDS = [
    "labels_ms", "prepare_ms", "runc_create_ms", "attach_ms", "join_wait_ms", "runc_start_ms",
    "load_or_open_ms", "attach_pin_ms", "tracepoints_ms", "ring_insert_ms",
]


def millis(stamp):
    """An RFC 3339 UTC time stamp (nanoseconds or microseconds) in milliseconds."""
    return datetime.strptime(stamp[:26], "%Y-%m-%dT%H:%M:%S.%f").timestamp() * 1000


def main(path):
    pods, sandbox_pod, container_pod, shim = {}, {}, {}, {}
    with open(path, errors="replace") as f:
        for line in f:
            cri = re.match(r'time="([^"]+)"', line)
            if cri:
                t = millis(cri.group(1))
                if "RunPodSandbox for &PodSandboxMetadata{Name:" in line:
                    name = re.search(r"Name:([^,]+),", line).group(1)
                    got = re.search(r'returns sandbox id \\"([0-9a-f]+)', line)
                    if got:
                        pods.setdefault(name, {})["sandbox_ready"] = t
                        sandbox_pod[got.group(1)] = name
                    else:
                        pods.setdefault(name, {})["asked"] = t
                elif "CreateContainer within sandbox" in line and "returns container id" in line:
                    sb = re.search(r'sandbox \\"([0-9a-f]+)', line).group(1)
                    c = re.search(r'returns container id \\"([0-9a-f]+)', line).group(1)
                    if sb in sandbox_pod:
                        pods[sandbox_pod[sb]]["created"] = t
                        container_pod[c] = sandbox_pod[sb]
                elif "StartContainer for" in line and "returns successfully" in line:
                    c = re.search(r'StartContainer for \\"([0-9a-f]+)', line).group(1)
                    if c in container_pod:
                        pods[container_pod[c]]["started"] = t
                continue
            own = re.match(r"shim=([0-9a-f]+) \S+\s+\w+ (.*)", line)
            if not own:
                continue
            rest = own.group(2)
            who = re.search(r"container=([0-9a-f]+)", rest)
            key = who.group(1) if who else own.group(1)
            for field in SHIM_FIELDS:
                v = re.search(r"\b" + field + r"=([0-9.]+)", rest)
                if v:
                    shim.setdefault(key, {}).setdefault(field, float(v.group(1)))
    groups = {}
    for name, p in pods.items():
        if not all(k in p for k in ("asked", "sandbox_ready", "created", "started")):
            continue
        group = re.sub(r"-\d+$", "", name)
        if group.endswith("warmup") or "idle" in group:
            continue
        row = {
            "total": p["started"] - p["asked"],
            "RunPodSandbox": p["sandbox_ready"] - p["asked"],
            "CreateContainer": p["created"] - p["sandbox_ready"],
            "StartContainer": p["started"] - p["created"],
        }
        sandbox = next(s for s, n in sandbox_pod.items() if n == name)
        container = next(c for c, n in container_pod.items() if n == name)
        for prefix, key in (("sb_", sandbox), ("c_", container)):
            for field, v in shim.get(key, {}).items():
                row[prefix + field] = v
        groups.setdefault(group, []).append(row)
    names = list(groups)
    phases = []
    for rows in groups.values():
        for r in rows:
            phases += [k for k in r if k not in phases]
    print("| phase (median ms; samples when fewer than the pods) | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for k in phases:
        cells = []
        for g in names:
            values = [r[k] for r in groups[g] if k in r]
            if not values:
                cells.append("")
            elif len(values) < len(groups[g]):
                cells.append(f"{statistics.median(values):.1f} ({len(values)})")
            else:
                cells.append(f"{statistics.median(values):.1f}")
        print(f"| {k} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
