"""Every change the local cluster makes to this machine, written down before it is made (host/ledger.json in the
state folder) and undone by ``down``: only what ``up`` made, never anything that was there before.

- sysctls the kubelet, kube-proxy and the bridge plugin set: their values before, put back;
- host paths the components create whatever their flags say (and the mount points of the nodes' own folders):
  those that did not exist, removed;
- iptables and ip6tables: the chains and rules there were before ``up``. ``down`` deletes the ``KUBE-*`` and
  ``PREFOPS-*`` chains that were not there and the rules that jump to them, and nothing else: a chain such as a
  foreign ``KUBE-FOO`` made before stays;
- the bridges, the nodes' cgroup roots (``/prefops-node-<i>`` in every hierarchy), the runtime folder and the
  mounts made on the host (the runtime folder's own private mount, one mount namespace file per node).
Network namespaces of pods and the pods' mounts live in the nodes' mount namespaces, so the host's ``/run/netns``
and mount table never see them.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import time
from pathlib import Path

from layout import FIREWALL, PRIVATE_DATA, PRIVATE_RUNTIME, Layout, NodeLayout
from proc import ClusterError, run, say

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
)
#: Host paths made by components on the host (the apiserver's default cert dir, the flex volume dir) or as mount
#: points of the nodes' own folders.
HOST_PATHS = (*PRIVATE_DATA, *PRIVATE_RUNTIME, "/run/kubernetes", "/usr/libexec/kubernetes", "/opt/containerd")
TABLES = ("filter", "nat", "mangle", "raw")
OURS = ("KUBE-", "PREFOPS-")
CGROUPS = Path("/sys/fs/cgroup")


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def iptables_save(tool: str, table: str) -> tuple[list[str], list[str]]:
    """(chain names, rules as ``-A CHAIN ...`` lines) of one table; empty when the tool or table is missing."""
    if shutil.which(f"{tool}-save") is None:
        return [], []
    lines = run(f"{tool}-save", "-t", table, check=False).splitlines()
    chains = [line[1:].split()[0] for line in lines if line.startswith(":")]
    return chains, [line for line in lines if line.startswith("-A ")]


def _target(rule: str) -> str | None:
    words = shlex.split(rule)
    for flag in ("-j", "-g"):
        if flag in words and words.index(flag) + 1 < len(words):
            return words[words.index(flag) + 1]
    return None


class Ledger:
    """What ``up`` changed on the host, saved after every change."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.path = layout.state / "host" / "ledger.json"
        self.data: dict[str, object] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)

    def _list(self, key: str) -> list[str]:
        return self.data.setdefault(key, [])  # type: ignore[return-value]

    def _add(self, key: str, value: str) -> None:
        if value not in self._list(key):
            self._list(key).append(value)
            self._save()

    @property
    def exists(self) -> bool:
        return self.path.exists()

    # -- recording what was there ------------------------------------------------------------------------------

    def record_before(self) -> None:
        """The sysctls, absent paths and iptables as they are before anything is changed (first ``up`` only)."""
        if "sysctls" in self.data:
            return
        self.data["iptables"] = {
            f"{tool} {table}": dict(zip(("chains", "rules"), iptables_save(tool, table), strict=True))
            for tool in ("iptables", "ip6tables")
            for table in TABLES
        }
        self.data["absent_paths"] = [p for p in HOST_PATHS if not Path(p).exists()]
        self.data["sysctls"] = {
            s: _sysctl_path(s).read_text().strip() for s in SYSCTLS if _sysctl_path(s).exists()
        }  # last: its presence means the record is complete
        self._save()

    # -- making things -----------------------------------------------------------------------------------------

    def make_runtime_dir(self) -> None:
        """The short runtime folder, a private mount of itself so that mount namespace files can be kept in it."""
        run_dir = self.layout.run
        if not run_dir.exists():
            self._add("dirs", str(run_dir))
            run_dir.mkdir(mode=0o711)
            run_dir.chmod(0o711)  # dnsmasq (as nobody) reads the DNS records under it
        if str(run_dir) not in self._list("mounts"):
            self._add("mounts", str(run_dir))
            run("mount", "--bind", run_dir, run_dir)
            run("mount", "--make-private", run_dir)

    def make_mount_ns(self, node: NodeLayout) -> None:
        """The node's mount namespace: the host's mounts (following later ones) with the node's own folders over
        the paths a kubelet and containerd use whatever their flags say."""
        if str(node.mount_ns) in self._list("mounts"):
            return
        for host_path, own in node.private_mounts().items():
            Path(host_path).mkdir(parents=True, exist_ok=True)
            own.mkdir(parents=True, exist_ok=True)
        node.mount_ns.touch()
        self._add("mounts", str(node.mount_ns))
        binds = " && ".join(f"mount --bind {shlex.quote(str(o))} {h}" for h, o in node.private_mounts().items())
        run("unshare", f"--mount={node.mount_ns}", "--propagation", "slave", "sh", "-c", binds)

    def make_bridge(self, node: NodeLayout) -> None:
        if run("ip", "link", "show", node.bridge, check=False):
            return
        self._add("bridges", node.bridge)
        run("ip", "link", "add", node.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{node.ip}/{node.pod_cidr.split('/')[1]}", "dev", node.bridge)
        run("ip", "link", "set", node.bridge, "up")

    def make_cgroups(self, node: NodeLayout) -> None:
        """The node's cgroup root in every hierarchy (the kubelet requires it to exist), and its daemons' cgroup."""
        for hierarchy in sorted(p for p in CGROUPS.iterdir() if p.is_dir()):
            for cgroup in (node.cgroup, node.daemons_cgroup):
                path = hierarchy / cgroup.strip("/")
                if path.exists():
                    continue
                if cgroup == node.cgroup:
                    self._add("cgroups", str(path))
                path.mkdir()
                if hierarchy.name == "cpuset":  # a cpuset without cpus and mems takes no process
                    for knob in ("cpuset.cpus", "cpuset.mems"):
                        (path / knob).write_text((path.parent / knob).read_text())

    def make_firewall(self) -> None:
        """Pods talk to pods on every node and to this machine; nothing crosses to another interface."""
        if FIREWALL in iptables_save("iptables", "filter")[0]:
            return
        bridges = [n.bridge for n in self.layout.nodes]
        run("iptables", "-w", "-N", FIREWALL)
        for a in bridges:
            for b in bridges:
                run("iptables", "-w", "-A", FIREWALL, "-i", a, "-o", b, "-j", "RETURN")
        for bridge in bridges:
            run("iptables", "-w", "-A", FIREWALL, "-i", bridge, "-j", "DROP")
            run("iptables", "-w", "-A", FIREWALL, "-o", bridge, "-j", "DROP")
        run("iptables", "-w", "-I", "FORWARD", "1", "-j", FIREWALL)


def firewall_first() -> bool:
    """Put the jump to our chain first in FORWARD again (kube-proxy prepends its own rules when it starts, and
    its KUBE-FORWARD accepts marked traffic whatever its destination); whether it had to move."""
    rules = [r for r in iptables_save("iptables", "filter")[1] if r.startswith("-A FORWARD ")]
    ours = f"-A FORWARD -j {FIREWALL}"
    if rules and rules[0] == ours:
        return False
    for _ in range(rules.count(ours)):
        run("iptables", "-w", "-D", "FORWARD", "-j", FIREWALL)
    run("iptables", "-w", "-I", "FORWARD", "1", "-j", FIREWALL)
    return True


def kube_proxy_forwards() -> bool:
    """Whether kube-proxy has written its rules into FORWARD (it does all of them in its first sync)."""
    return any(r.startswith("-A FORWARD ") and "KUBE-FORWARD" in r for r in iptables_save("iptables", "filter")[1])


# -- undoing --------------------------------------------------------------------------------------------------


def undo(layout: Layout) -> None:
    """Put the host back as the ledger says it was; every step goes on when another failed."""
    ledger = Ledger(layout)
    if not ledger.exists:
        return
    for step in (_unmount, _clean_iptables, _remove_cgroups, _remove_bridges, _restore_sysctls, _remove_paths):
        try:
            step(ledger)
        except (ClusterError, OSError) as e:
            say(f"undoing the host: {step.__name__}: {e}")
    ledger.path.unlink()


def _unmount(ledger: Ledger) -> None:
    for mount in reversed(ledger._list("mounts")):
        run("umount", "-l", mount, check=False)
        if mount != str(ledger.layout.run):
            Path(mount).unlink(missing_ok=True)


def _clean_iptables(ledger: Ledger) -> None:
    before: dict[str, dict[str, list[str]]] = ledger.data.get("iptables", {})  # type: ignore[assignment]
    for key, was in before.items():
        tool, table = key.split()
        chains, rules = iptables_save(tool, table)
        new = [c for c in chains if c.startswith(OURS) and c not in was["chains"]]
        for rule in rules:
            chain = rule.split()[1]
            if chain not in new and rule not in was["rules"] and _target(rule) in new:
                run(tool, "-w", "-t", table, "-D", *shlex.split(rule)[1:], check=False)
        for chain in new:
            run(tool, "-w", "-t", table, "-F", chain, check=False)
        for chain in new:
            run(tool, "-w", "-t", table, "-X", chain, check=False)


def _remove_cgroups(ledger: Ledger) -> None:
    for top in ledger._list("cgroups"):
        for path in [*sorted(Path(top).rglob("*"), key=lambda p: len(p.parts), reverse=True), Path(top)]:
            if path.is_dir():
                _rmdir_cgroup(path)


def _rmdir_cgroup(path: Path, seconds: float = 10) -> None:
    """rmdir a cgroup; a cgroup whose last process just died is busy for a moment."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _remove_bridges(ledger: Ledger) -> None:
    for bridge in ledger._list("bridges"):
        # the pods' veths go with their network namespaces, once the nodes' mount namespaces are gone
        deadline = time.monotonic() + 15
        while run("ip", "-o", "link", "show", "master", bridge, check=False).strip() and time.monotonic() < deadline:
            time.sleep(0.2)
        run("ip", "link", "delete", bridge, check=False)


def _restore_sysctls(ledger: Ledger) -> None:
    values: dict[str, str] = ledger.data.get("sysctls", {})  # type: ignore[assignment]
    for name, value in values.items():
        with contextlib.suppress(OSError):
            if _sysctl_path(name).read_text().strip() != value:
                _sysctl_path(name).write_text(value + "\n")


def _remove_paths(ledger: Ledger) -> None:
    for path in [*ledger._list("absent_paths"), *ledger._list("dirs")]:
        if Path(path).is_dir() and not Path(path).is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            Path(path).unlink(missing_ok=True)
