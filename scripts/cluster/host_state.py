#!/usr/bin/env python3
"""What a local Kubernetes node can change on this machine, as one comparable snapshot.

    python3 scripts/cluster/host_state.py snapshot FILE [STATE_DIR]   write the snapshot (JSON); STATE_DIR: the
                                                                     cluster's state folder (default .cluster)
    python3 scripts/cluster/host_state.py compare A B   print what differs; exit 1 when anything does

``make cluster-check`` (``cluster.py check``) takes one before the cluster comes up and one after it went down and
compares them; the end-to-end tests do the same around a cluster they start themselves. Both first plant foreign
look-alikes of what a node makes (:func:`plant_foreign`: an iptables chain ``KUBE-PREFOPS-FOREIGN``, a network
namespace ``cni-prefops-foreign``, an empty ``kubepods`` cgroup), so the comparison also shows that ``down`` leaves
alone what it did not make. Covered: network links, addresses and routes, network namespaces, iptables rules (IPv4
and IPv6, counters dropped; a table holding only empty built-in chains counts as absent), the sysctls the nodes'
parts set, cgroups at the top of every hierarchy, mount points, host paths the kubelet and containerd create, the
clusters' runtime folders, and processes of the nodes' programs. Stdlib only.
"""

from __future__ import annotations

import contextlib
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


def runtime_dirs() -> list[str]:
    return sorted(str(p) for p in Path("/run").glob("prefops-*"))


FOREIGN_CHAIN, FOREIGN_NETNS, FOREIGN_CGROUP = "KUBE-PREFOPS-FOREIGN", "cni-prefops-foreign", "kubepods"


def plant_foreign() -> list[str]:
    """Things a node also makes, made here by someone else: what was planted (for :func:`remove_foreign`)."""
    planted = []
    if subprocess.run(["iptables", "-w", "-N", FOREIGN_CHAIN], capture_output=True).returncode == 0:
        subprocess.run(["iptables", "-w", "-A", FOREIGN_CHAIN, "-j", "RETURN"], check=True)
        planted.append("chain")
    if not Path("/run/netns").exists():
        planted.append("netns-dir")
    if "/run/netns" not in mounts():
        planted.append("netns-mount")
    if subprocess.run(["ip", "netns", "add", FOREIGN_NETNS], capture_output=True).returncode == 0:
        planted.append("netns")
    for hierarchy in ("pids", "cpu", "memory"):
        path = Path("/sys/fs/cgroup") / hierarchy / FOREIGN_CGROUP
        if path.parent.is_dir() and not path.exists():
            path.mkdir()
            planted.append(f"cgroup:{path}")
    return planted


def remove_foreign(planted: list[str]) -> None:
    if "chain" in planted:
        subprocess.run(["iptables", "-w", "-F", FOREIGN_CHAIN], capture_output=True)
        subprocess.run(["iptables", "-w", "-X", FOREIGN_CHAIN], capture_output=True)
    if "netns" in planted:
        subprocess.run(["ip", "netns", "delete", FOREIGN_NETNS], capture_output=True)
    if "netns-mount" in planted:  # `ip netns add` made /run/netns a shared mount of itself
        subprocess.run(["umount", "/run/netns"], capture_output=True)
    if "netns-dir" in planted:
        with contextlib.suppress(OSError):
            Path("/run/netns").rmdir()
    for item in planted:
        if item.startswith("cgroup:"):
            with contextlib.suppress(OSError):
                Path(item.removeprefix("cgroup:")).rmdir()


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
        "runtime": runtime_dirs(),
        "processes": processes(state),
    }


#: The service chains a kube-proxy rewrites whole at every sync (iptables-restore): rules another cluster's
#: kube-proxy left there before ``up`` are replaced by ours as any kube-proxy would, so their going is no change of
#: ``down``'s.
PROXY_SERVICE_RULE = re.compile(r"^(nat|filter) (:|-A )KUBE-(SERVICES|NODEPORTS|EXTERNAL-SERVICES|SVC-|SEP-|FW-|XLB-)")


def differences(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """What changed from ``before`` to ``after``, one line each, except the going of stale service rules (above)."""
    found = []
    for key in before.keys() | after.keys():
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            stale = key in ("iptables", "ip6tables")
            gone = [x for x in a if x not in b and not (stale and PROXY_SERVICE_RULE.match(str(x)))]
            found += [f"{key}: gone: {x}" for x in gone] + [f"{key}: new: {x}" for x in b if x not in a]
        elif isinstance(a, dict) and isinstance(b, dict):
            changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            found += [f"{key}: {k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed]
        else:
            found.append(f"{key}: {a!r} -> {b!r}")
    return sorted(found)


def main(argv: list[str]) -> int:
    if len(argv) in (2, 3) and argv[0] == "snapshot":
        state = argv[2] if len(argv) == 3 else str(Path(__file__).resolve().parents[2] / ".cluster")
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
