"""``cluster-down`` is judged by comparing host snapshots (scripts/cluster/host_state.py): pure comparisons here."""

from __future__ import annotations

from support.kube import cluster_script

host_state = cluster_script("host_state")

STALE = [
    "nat :KUBE-SVC-6J7QAIYPOU7D6IUP -",
    "nat -A KUBE-SERVICES -d 10.97.197.45/32 -p tcp -m tcp --dport 8080 -j KUBE-SVC-6J7QAIYPOU7D6IUP",
    "nat -A KUBE-SEP-4SI3FSKSGM2ALK2N -p tcp -m tcp -j DNAT --to-destination 10.244.2.26:8080",
]
FOREIGN = ["filter :KUBE-PREFOPS-FOREIGN -", "nat -A POSTROUTING -s 10.9.0.0/16 -j MASQUERADE"]


def test_service_rules_another_clusters_kube_proxy_left_may_go_but_nothing_else_may():
    before = {"iptables": FOREIGN + STALE, "netns": ["cni-prefops-foreign"]}
    assert host_state.differences(before, {"iptables": FOREIGN, "netns": ["cni-prefops-foreign"]}) == []
    after = {"iptables": FOREIGN[:1], "netns": []}
    assert host_state.differences(before, after) == [
        "iptables: gone: nat -A POSTROUTING -s 10.9.0.0/16 -j MASQUERADE",
        "netns: gone: cni-prefops-foreign",
    ]


def test_service_rules_left_behind_by_down_are_changes():
    assert host_state.differences({"iptables": FOREIGN}, {"iptables": FOREIGN + STALE[:1]}) == [
        "iptables: new: nat :KUBE-SVC-6J7QAIYPOU7D6IUP -"
    ]
