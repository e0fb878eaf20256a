#!/usr/bin/env python3
"""The local test cluster: Kubernetes 1.20.2 with one or more real nodes on this machine. Run through
``scripts/cluster/cluster.sh``, which installs and builds what ``up`` needs first.

    cluster.py up [--nodes N]               start it (idempotent; a dead node is restored, another size restarts it)
    cluster.py down                         stop everything it started, by PID; undo every change it made to the host
    cluster.py status                       exit 0 when every part runs and every node is Ready
    cluster.py kill-node NAME [--kubelet-only]
                                            the node dies: SIGKILL its kubelet, containerd, shims and every process of
                                            its pods (with --kubelet-only, the kubelet alone: its containers go on);
                                            nothing is removed from the API
    cluster.py restore-node NAME            start what kill-node killed; wait until the node is Ready
    cluster.py check [--nodes N]            up then down, and compare the host before and after (make cluster-check)

The layout (names, addresses, paths) is in layout.py, the command lines in components.py, the host changes and
their undoing in host.py, the nodes' containerd and images in runtime.py. State lives in $PREFOPS_CLUSTER_DIR
(default .cluster/), written with umask 077; the admin kubeconfig is .cluster/kubeconfig. Every process runs with
AWS_EC2_METADATA_DISABLED=true.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import ssl
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import components as c
import host
import pki
import runtime
from layout import ETCD_PORT, Layout, NodeLayout, cgroup_base, default_state
from proc import ClusterError, Procs, kill_cgroup, run, say

ROOT = Path(__file__).resolve().parents[2]
CONTROL = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
SHARED = ("kube-proxy", "dns-sync", "dnsmasq")
NOT_READY_TAINTS = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}


def containerd_name(node: NodeLayout) -> str:
    return f"{node.name}.containerd"


def kubelet_name(node: NodeLayout) -> str:
    return f"{node.name}.kubelet"


class Cluster:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.procs = Procs(layout.state)

    # -- small helpers ---------------------------------------------------------------------------------------------

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return run("kubectl", f"--kubeconfig={self.layout.kubeconfig}", "--request-timeout=10s", *args, stdin=stdin)

    def ready_nodes(self, since: float = 0) -> set[str]:
        """Nodes whose kubelet reported Ready (at ``since``, a time.time(), or later) and that the node controller
        no longer taints as not ready or unreachable: pods can be scheduled there."""
        found = set()
        for node in json.loads(self.kubectl("get", "nodes", "-o", "json"))["items"]:
            ready = any(
                x["type"] == "Ready" and x["status"] == "True" and _epoch(x["lastHeartbeatTime"]) >= int(since)
                for x in node["status"].get("conditions", [])
            )
            if ready and not {t["key"] for t in node["spec"].get("taints", [])} & NOT_READY_TAINTS:
                found.add(node["metadata"]["name"])
        return found

    def etcd_healthy(self) -> bool:
        pki_dir = self.layout.state / "pki"
        context = ssl.create_default_context(cafile=str(pki_dir / "etcd-ca.crt"))
        context.load_cert_chain(pki_dir / "apiserver-etcd-client.crt", pki_dir / "apiserver-etcd-client.key")
        with urllib.request.urlopen(f"https://127.0.0.1:{ETCD_PORT}/health", context=context, timeout=5) as r:
            return bool(json.load(r).get("health") == "true")

    def node_daemons_alive(self, node: NodeLayout) -> bool:
        return self.procs.alive(containerd_name(node)) and self.procs.alive(kubelet_name(node))

    def all_alive(self) -> bool:
        daemons = [n for node in self.layout.nodes for n in (containerd_name(node), kubelet_name(node))]
        names = [*CONTROL, *SHARED, *daemons]
        return all(self.procs.alive(n) for n in names)

    def status(self) -> bool:
        if not self.layout.kubeconfig.exists() or not self.all_alive():
            return False
        try:
            return self.ready_nodes() >= {n.name for n in self.layout.nodes}
        except ClusterError:
            return False

    # -- state -----------------------------------------------------------------------------------------------------

    def make_state(self) -> None:
        if self.layout.kubeconfig.exists():
            return
        say(f"writing certificates, tokens and configuration to {self.layout.state}")
        for sub in ("logs", "pids", "host", "etcd", "kubeconfigs", "apiserver", "volume-plugins"):
            (self.layout.state / sub).mkdir(parents=True, exist_ok=True)
        pki.make_pki(self.layout)
        tokens = pki.make_tokens(self.layout)
        for node in self.layout.nodes:
            c.write_node_config(self.layout, node)
        self.layout.save()
        pki.make_kubeconfigs(self.layout, tokens)  # last: the admin kubeconfig means the state is complete

    # -- starting --------------------------------------------------------------------------------------------------

    def ensure(self, name: str, argv: list[str], **how: Any) -> None:
        """Start ``name`` unless it runs."""
        if not self.procs.alive(name):
            self.procs.start(name, argv, **how)

    def start_control_plane(self) -> None:
        p, layout = self.procs, self.layout
        self.ensure("etcd", c.etcd(layout))
        p.wait_until(30, "etcd", self.etcd_healthy, "etcd")
        self.ensure("kube-apiserver", c.kube_apiserver(layout))
        p.wait_until(60, "kube-apiserver", lambda: self.kubectl("get", "--raw", "/readyz"), "kube-apiserver")
        self.ensure("kube-controller-manager", c.kube_controller_manager(layout))
        self.ensure("kube-scheduler", c.kube_scheduler(layout))
        if not run("kubectl", f"--kubeconfig={layout.kubeconfig}", "get", "clusterrolebinding", "prefops:dns",
                   check=False):  # fmt: skip
            self.kubectl("create", "clusterrolebinding", "prefops:dns", "--clusterrole=system:kube-dns",
                         "--user=prefops-cluster:dns")  # fmt: skip

    def prepare_node(self, ledger: host.Ledger, node: NodeLayout) -> None:
        """The node's host side: bridge, cgroups and mount namespace (each recorded before it is made)."""
        ledger.make_bridge(node)
        ledger.make_cgroups(node)
        ledger.make_mount_ns(node)

    def start_containerd(self, node: NodeLayout) -> None:
        c.images_root(node).mkdir(parents=True, exist_ok=True)
        name = containerd_name(node)
        self.ensure(name, c.containerd(node), mount_ns=node.mount_ns, cgroup=_cgroup(node.daemons_cgroup),
                    env=c.containerd_env())  # fmt: skip
        self.procs.wait_until(30, f"{node.name}'s containerd", lambda: runtime.ctr(node, "version"), name)

    def start_kubelet(self, node: NodeLayout) -> None:
        self.ensure(kubelet_name(node), c.kubelet(self.layout, node), mount_ns=node.mount_ns,
                    cgroup=_cgroup(node.daemons_cgroup))  # fmt: skip

    def start_shared(self) -> None:
        layout = self.layout
        (layout.run / "dns").mkdir(mode=0o755, exist_ok=True)
        (layout.run / "dns").chmod(0o755)
        self.ensure("kube-proxy", c.kube_proxy(layout))
        self.ensure("dns-sync", c.dns_sync(layout))
        self.ensure("dnsmasq", c.dnsmasq(layout))

    def wait_ready(self, nodes: list[NodeLayout], since: float = 0, seconds: float = 120) -> None:
        """Until every node in ``nodes`` is Ready, by a report of its kubelet at ``since`` or later."""
        names = {n.name for n in nodes}
        for node in nodes:
            ready = functools.partial(lambda name: name in self.ready_nodes(since), node.name)
            self.procs.wait_until(seconds, f"node {node.name} Ready", ready, kubelet_name(node))
        say(f"Ready: {', '.join(sorted(names))}")

    def firewall_first(self) -> None:
        """Once kube-proxy has written its FORWARD rules, ours goes before them."""
        self.procs.wait_until(60, "kube-proxy's FORWARD rules", host.kube_proxy_forwards, "kube-proxy")
        if host.firewall_first():
            say(f"moved {host.FIREWALL} ahead of kube-proxy's rules in FORWARD")

    # -- up --------------------------------------------------------------------------------------------------------

    def up(self) -> None:
        os.umask(0o077)
        running = Layout.load(self.layout.state)
        if running == self.layout and self.layout.kubeconfig.exists() and self._control_alive():
            self._warm_up()
            return
        if running is not None or self.procs.names():
            say("found a cluster of another size, or partly running: taking it down first")
            Cluster(running or self.layout).down()
        start = time.monotonic()
        self.make_state()
        ledger = host.Ledger(self.layout)
        ledger.record_before()
        ledger.make_runtime_dir()
        for node in self.layout.nodes:
            self.prepare_node(ledger, node)
        ledger.make_firewall()
        self.start_control_plane()
        for node in self.layout.nodes:
            self.start_containerd(node)
        runtime.import_images(self.layout.nodes)
        for node in self.layout.nodes:
            self.start_kubelet(node)
        self.start_shared()
        self.wait_ready(list(self.layout.nodes))
        self.firewall_first()
        self.procs.wait_until(60, "the default ServiceAccount", lambda: self.kubectl("-n", "default", "get", "sa",
                              "default"), "kube-controller-manager")  # fmt: skip
        took = time.monotonic() - start
        say(f"up in {took:.0f} s: {self.layout.count} node(s) (KUBECONFIG={self.layout.kubeconfig})")

    def _control_alive(self) -> bool:
        return all(self.procs.alive(n) for n in CONTROL)

    def _warm_up(self) -> None:
        since = time.time()
        dead = [n for n in self.layout.nodes if not self.node_daemons_alive(n)]
        for node in dead:
            say(f"{node.name} is down: restoring it")
            self.start_containerd(node)
        runtime.import_images(self.layout.nodes)
        for node in dead:
            self.start_kubelet(node)
        self.start_shared()
        self.wait_ready(dead, since)
        self.wait_ready(list(self.layout.nodes))
        self.firewall_first()
        say(f"up: {self.layout.count} node(s) Ready (KUBECONFIG={self.layout.kubeconfig})")

    # -- a node dies and comes back --------------------------------------------------------------------------------

    def kill_node(self, name: str, kubelet_only: bool) -> None:
        node = self.layout.node(name)
        self.procs.kill(kubelet_name(node))
        if kubelet_only:
            say(f"{name}: killed its kubelet; its containers go on")
            return
        self.procs.kill(containerd_name(node))
        killed = kill_cgroup(_cgroup(node.cgroup))
        say(f"{name}: killed its kubelet, containerd, shims and pods' processes ({killed} processes)")

    def restore_node(self, name: str) -> None:
        node = self.layout.node(name)
        # a kubelet started now must report afresh: the API may still show the node as its last report left it
        since = 0 if self.procs.alive(kubelet_name(node)) else time.time()
        self.start_containerd(node)
        self.start_kubelet(node)
        self.wait_ready([node], since)

    # -- down ------------------------------------------------------------------------------------------------------

    def remove_pods(self) -> None:
        """Let the kubelets stop every pod (CNI teardown, volume unmounts) while they still run."""
        live = [n for n in self.layout.nodes if self.node_daemons_alive(n)]
        if not self.procs.alive("kube-apiserver") or not live:
            return
        run("kubectl", f"--kubeconfig={self.layout.kubeconfig}", "delete", "pods", "--all", "--all-namespaces",
            "--grace-period=0", "--force", "--wait=false", check=False)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(runtime.tasks(n) for n in live):
            time.sleep(0.5)

    def remove_containers(self, node: NodeLayout) -> None:
        """Whatever the kubelet left: tasks, containers and their snapshots."""
        if not self.procs.alive(containerd_name(node)):
            return
        for task in runtime.tasks(node):
            runtime.ctr(node, "tasks", "kill", "-s", "SIGKILL", task, check=False)
        for task in runtime.tasks(node):
            runtime.ctr(node, "tasks", "delete", "-f", task, check=False)
        for container in runtime.ctr(node, "containers", "ls", "-q", check=False).split():
            runtime.ctr(node, "containers", "delete", container, check=False)

    def down(self) -> None:
        p = self.procs
        for name in ("dnsmasq", "dns-sync", "kube-scheduler", "kube-controller-manager"):
            p.stop(name)  # nothing recreates or schedules pods any more
        self.remove_pods()
        p.stop("kube-proxy")
        for node in self.layout.nodes:
            p.stop(kubelet_name(node))
            self.remove_containers(node)
            p.stop(containerd_name(node))
            kill_cgroup(_cgroup(node.cgroup))  # shims and whatever else is left
        p.stop("kube-apiserver")
        p.stop("etcd")
        for name in p.names():  # a part of another layout
            p.stop(name)
        host.undo(self.layout)
        if self.layout.state.is_dir():  # keep the logs for a look after the fact
            for child in self.layout.state.iterdir():
                if child.name != "logs":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        say("down: host restored")


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _cgroup(path: str) -> Path:
    return cgroup_base() / path.strip("/")


def check(layout: Layout) -> int:
    """``make cluster-check``: up then down, with foreign look-alikes of what a node makes planted before; the host
    after must equal the host before, those included."""
    import host_state

    if Cluster(Layout.load(layout.state) or layout).status():
        raise ClusterError("the cluster is up: make cluster-down first")
    planted = host_state.plant_foreign()
    try:
        before = host_state.snapshot(str(layout.state))
        cluster = Cluster(layout)
        try:
            cluster.up()
        finally:
            cluster.down()
        changed = host_state.differences(before, host_state.snapshot(str(layout.state)))
    finally:
        host_state.remove_foreign(planted)
    sys.stdout.write(("\n".join(changed) if changed else "host state: unchanged") + "\n")
    return 1 if changed else 0


def main(argv: list[str]) -> int:
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    parser = argparse.ArgumentParser(prog="scripts/cluster/cluster.sh", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "check"):
        sub.add_parser(name).add_argument("--nodes", type=int, default=int(os.environ.get("NODES") or 1))
    sub.add_parser("down")
    sub.add_parser("status")
    kill = sub.add_parser("kill-node")
    kill.add_argument("name")
    kill.add_argument("--kubelet-only", action="store_true")
    sub.add_parser("restore-node").add_argument("name")
    args = parser.parse_args(argv)
    state = default_state(ROOT).resolve()
    layout = Layout(state, args.nodes) if args.command in ("up", "check") else Layout.load(state)
    if args.command == "check":
        return check(layout)
    if layout is None and args.command == "status":
        return 1
    if layout is None and args.command == "down":  # nothing was made, or only partly: undo what there is
        layout = Layout(state, 1)
    if layout is None:
        raise ClusterError(f"no cluster in {state}: make cluster first")
    cluster = Cluster(layout)
    if args.command == "up":
        cluster.up()
    elif args.command == "down":
        cluster.down()
    elif args.command == "status":
        return 0 if cluster.status() else 1
    elif args.command == "kill-node":
        cluster.kill_node(args.name, args.kubelet_only)
    else:
        cluster.restore_node(args.name)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (ClusterError, KeyError, ValueError) as e:
        say(str(e).strip("'\""))
        sys.exit(1)
