"""The local cluster's credentials: two CAs, certificates, one token per component and node, kubeconfigs. Stdlib and
openssl only. Everything is written with umask 077 (cluster.py sets it): readable by root alone.

- The cluster CA signs the apiserver's serving certificate and the apiserver's client certificate towards the
  kubelets (``system:masters``, checked by the kubelets' webhook authorization).
- The etcd CA signs etcd's serving and peer certificates and the apiserver's etcd client certificate: etcd listens
  on TLS only and admits clients with a certificate of its own CA, so a token of the cluster gets nobody into etcd.
- Static tokens, each with the identity the bootstrap RBAC policy or the Node authorizer expects.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from layout import SERVICE_CIDR, Layout
from proc import run

DAYS = "30"


def _ca(pki: Path, name: str, subject: str) -> None:
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS, "-subj", subject,
        "-keyout", pki / f"{name}.key", "-out", pki / f"{name}.crt")  # fmt: skip


def _cert(pki: Path, ca: str, name: str, subject: str, san: str = "", usage: str = "serverAuth,clientAuth") -> None:
    """A key and a certificate for ``subject`` signed by ``ca``."""
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
        "-keyout", pki / f"{name}.key", "-out", pki / f"{name}.csr")  # fmt: skip
    ext = pki / f"{name}.ext"
    ext.write_text(f"extendedKeyUsage={usage}\n" + (f"subjectAltName={san}\n" if san else ""))
    run("openssl", "x509", "-req", "-in", pki / f"{name}.csr", "-CA", pki / f"{ca}.crt", "-CAkey", pki / f"{ca}.key",
        "-CAcreateserial", "-days", DAYS, "-extfile", ext, "-out", pki / f"{name}.crt")  # fmt: skip


def make_pki(layout: Layout) -> Path:
    pki = layout.state / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    _ca(pki, "ca", "/CN=prefops-cluster-ca")
    service_ip = SERVICE_CIDR.rsplit(".", 2)[0] + ".0.1"
    names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
    san = ",".join([f"IP:127.0.0.1,IP:{service_ip},IP:{layout.control_ip},DNS:localhost", *(f"DNS:{n}" for n in names)])
    _cert(pki, "ca", "apiserver", "/CN=kube-apiserver", san, usage="serverAuth")
    _cert(pki, "ca", "kubelet-client", "/CN=kube-apiserver-kubelet-client/O=system:masters", usage="clientAuth")
    run("openssl", "genrsa", "-out", pki / "sa.key", "2048")
    _ca(pki, "etcd-ca", "/CN=prefops-etcd-ca")
    _cert(pki, "etcd-ca", "etcd-server", "/CN=etcd", "IP:127.0.0.1,DNS:localhost")
    _cert(pki, "etcd-ca", "etcd-peer", "/CN=etcd-peer", "IP:127.0.0.1,DNS:localhost")
    _cert(pki, "etcd-ca", "apiserver-etcd-client", "/CN=kube-apiserver-etcd-client", usage="clientAuth")
    return pki


def identities(layout: Layout) -> dict[str, tuple[str, str]]:
    """Credential name → (user, groups) for every component and node."""
    found = {
        "admin": ("prefops-admin", "system:masters"),
        "proxy": ("system:kube-proxy", ""),
        "scheduler": ("system:kube-scheduler", ""),
        "controller-manager": ("system:kube-controller-manager", ""),
        "dns": ("prefops-cluster:dns", ""),
    }
    for node in layout.nodes:
        found[node.name] = (f"system:node:{node.name}", "system:nodes")
    return found


def make_tokens(layout: Layout) -> dict[str, str]:
    """A token per identity, in the apiserver's token file; credential name → token."""
    tokens = {name: secrets.token_hex(24) for name in identities(layout)}
    lines = []
    for name, (user, groups) in identities(layout).items():
        lines.append(f"{tokens[name]},{user},{user}" + (f',"{groups}"' if groups else ""))
    (layout.state / "tokens.csv").write_text("\n".join(lines) + "\n")
    return tokens


def kubeconfig(layout: Layout, path: Path, user: str, token: str) -> None:
    ca = layout.state / "pki" / "ca.crt"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: prefops, cluster: {{server: "{layout.api_server}", certificate-authority: "{ca}"}}}}]
users: [{{name: {user}, user: {{token: "{token}"}}}}]
contexts: [{{name: prefops, context: {{cluster: prefops, user: {user}}}}}]
current-context: prefops
""")


def kubeconfig_path(layout: Layout, name: str) -> Path:
    return layout.kubeconfig if name == "admin" else layout.state / "kubeconfigs" / f"{name}.kubeconfig"


def make_kubeconfigs(layout: Layout, tokens: dict[str, str]) -> None:
    """One kubeconfig per identity; the admin's (``layout.kubeconfig``) last: its presence means complete state."""
    (layout.state / "kubeconfigs").mkdir(exist_ok=True)
    users = identities(layout)
    for name, token in tokens.items():
        if name != "admin":
            kubeconfig(layout, kubeconfig_path(layout, name), users[name][0], token)
    (layout.state / "pki" / "dns.token").write_text(tokens["dns"] + "\n")
    tmp = layout.kubeconfig.with_suffix(".tmp")
    kubeconfig(layout, tmp, users["admin"][0], tokens["admin"])
    tmp.rename(layout.kubeconfig)
