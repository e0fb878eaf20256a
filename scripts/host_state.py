#!/usr/bin/env python3
"""What a local Kubernetes node can change on this machine, as one comparable snapshot.

    python3 scripts/host_state.py snapshot FILE [NODE_DIR]   write the snapshot (JSON); NODE_DIR: the node's
                                                             state folder (default .cluster)
    python3 scripts/host_state.py compare A B        print what differs; exit 1 when anything does

``make cluster-check`` takes one before ``make cluster`` and one after ``make cluster-down`` and compares them;
the end-to-end tests do the same around a node they start themselves. Covered: network links, addresses and
routes, network namespaces, iptables rules (IPv4 and IPv6, counters dropped; a table holding only empty
built-in chains counts as absent), the sysctls the node's parts set, cgroups at the top of every hierarchy, mount
points, host paths the kubelet and containerd create, and processes of the node's programs. Stdlib only.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
)
PATHS = (
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/run/netns",
    "/run/containerd",
    "/run/kubernetes",
    "/opt/containerd",
    "/usr/libexec/kubernetes",
    "/etc/kubernetes",
    "/etc/cni/net.d",
)
#: Programs only a node runs, and programs the test suite also runs elsewhere (those count when they name the
#: node's state folder).
NODE_PROGRAMS = ("kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "dnsmasq")
SHARED_PROGRAMS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "dns_sync.py")


def run(*argv: str) -> str:
    if shutil.which(argv[0]) is None:
        return ""
    return subprocess.run(argv, capture_output=True, text=True).stdout


def links() -> list[str]:
    return sorted(
        f"{link['ifname']} {link.get('link_type')} {','.join(sorted(link.get('flags', [])))} {link.get('master', '')}"
        for link in json.loads(run("ip", "-j", "link", "show") or "[]")
    )


def addresses() -> list[str]:
    return sorted(
        f"{a['ifname']} {i['local']}/{i['prefixlen']}"
        for a in json.loads(run("ip", "-j", "addr", "show") or "[]")
        for i in a.get("addr_info", [])
    )


def routes() -> list[str]:
    lines = run("ip", "route", "show", "table", "all") + run("ip", "-6", "route", "show", "table", "all")
    return sorted(re.sub(r"\s+(linkdown|expires \S+)", "", line).strip() for line in lines.splitlines())


def iptables(tool: str) -> list[str]:
    """``TABLE RULE`` lines; a table with nothing but empty ACCEPT built-in chains is left out (as if never made)."""
    tables: dict[str, list[str]] = {}
    table = None
    for line in run(f"{tool}-save").splitlines():
        if line.startswith("*"):
            table = line[1:]
            tables[table] = []
        elif table and line.startswith(("-A", ":")):
            tables[table].append(re.sub(r"\s\[\d+:\d+\]$", "", line))
    builtin = re.compile(r"^:(INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ACCEPT$")
    return sorted(f"{t} {r}" for t, rules in tables.items() if not all(builtin.match(r) for r in rules) for r in rules)


def sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        path = Path("/proc/sys") / name.replace(".", "/")
        values[name] = path.read_text().strip() if path.exists() else "(absent)"
    return values


def cgroups() -> list[str]:
    base = Path("/sys/fs/cgroup")
    found = [str(p) for p in base.glob("*/*") if p.is_dir()] + [str(p) for p in base.glob("*") if p.is_dir()]
    return sorted(found)


def mounts() -> list[str]:
    return sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())


def paths() -> dict[str, list[str] | None]:
    return {p: sorted(c.name for c in Path(p).iterdir()) if Path(p).is_dir() else None for p in PATHS}


def processes(state: str) -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        names = {Path(a.decode(errors="replace")).name for a in argv[:2] if a}
        line = " ".join(a.decode(errors="replace") for a in argv if a)
        if names & set(NODE_PROGRAMS) or (names & set(SHARED_PROGRAMS) and state in line):
            found.append(line[:300])
    return sorted(found)


def snapshot(state: str) -> dict[str, object]:
    return {
        "links": links(),
        "addresses": addresses(),
        "routes": routes(),
        "netns": sorted(run("ip", "netns", "list").split()),
        "iptables": iptables("iptables"),
        "ip6tables": iptables("ip6tables"),
        "sysctls": sysctls(),
        "cgroups": cgroups(),
        "mounts": mounts(),
        "paths": paths(),
        "processes": processes(state),
    }


def differences(before: dict[str, object], after: dict[str, object]) -> list[str]:
    found = []
    for key in before.keys() | after.keys():
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            found += [f"{key}: gone: {x}" for x in a if x not in b] + [f"{key}: new: {x}" for x in b if x not in a]
        elif isinstance(a, dict) and isinstance(b, dict):
            changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            found += [f"{key}: {k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed]
        else:
            found.append(f"{key}: {a!r} -> {b!r}")
    return sorted(found)


def main(argv: list[str]) -> int:
    if len(argv) in (2, 3) and argv[0] == "snapshot":
        state = argv[2] if len(argv) == 3 else str(Path(__file__).resolve().parents[1] / ".cluster")
        Path(argv[1]).write_text(json.dumps(snapshot(state), indent=1, sort_keys=True))
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        found = differences(*(json.loads(Path(p).read_text()) for p in argv[1:]))
        sys.stdout.write(("\n".join(found) if found else "host state: unchanged") + "\n")
        return 1 if found else 0
    sys.stderr.write(__doc__ or "")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
