#!/usr/bin/env python3
"""Cluster DNS records for the local test cluster, as a hosts file that dnsmasq (``--hostsdir``) reloads.

Debian packages no CoreDNS, so scripts/cluster/cluster.py runs dnsmasq on the control plane's address (the first
node's bridge), fed by this loop: every second it lists Services and Endpoints through the API and writes the A
records CoreDNS would answer:

* ``<service>.<namespace>.svc.cluster.local`` → the ClusterIP, or for a headless Service every endpoint address;
* ``<hostname>.<service>.<namespace>.svc.cluster.local`` → the pod with that ``hostname`` and ``subdomain``.

No SRV records, no external names. Usage: ``dns_sync.py API_SERVER CA_FILE TOKEN_FILE HOSTS_FILE``; stdlib only.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.request
from pathlib import Path

DOMAIN = "svc.cluster.local"


def get(server: str, context: ssl.SSLContext, token: str, path: str) -> list[dict]:
    request = urllib.request.Request(f"{server}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return list(json.load(response)["items"])


def records(services: list[dict], endpoints: list[dict]) -> list[str]:
    """``"IP NAME"`` lines for every Service and named endpoint, sorted and without duplicates."""
    by_name = {(e["metadata"]["namespace"], e["metadata"]["name"]): e for e in endpoints}
    lines = set()
    for service in services:
        namespace, name = service["metadata"]["namespace"], service["metadata"]["name"]
        fqdn = f"{name}.{namespace}.{DOMAIN}"
        cluster_ip = service["spec"].get("clusterIP")
        if cluster_ip and cluster_ip != "None":
            lines.add(f"{cluster_ip} {fqdn}")
        for subset in by_name.get((namespace, name), {}).get("subsets") or []:
            for address in (subset.get("addresses") or []) + (subset.get("notReadyAddresses") or []):
                if cluster_ip == "None":
                    lines.add(f"{address['ip']} {fqdn}")
                if address.get("hostname"):
                    lines.add(f"{address['ip']} {address['hostname']}.{fqdn}")
    return sorted(lines)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)  # dnsmasq reads it as nobody; the records are no secret
    os.replace(tmp, path)


def main(server: str, ca_file: str, token_file: str, hosts_file: str) -> None:
    context = ssl.create_default_context(cafile=ca_file)
    token = Path(token_file).read_text().strip()
    out, last = Path(hosts_file), None
    while True:
        try:
            text = "\n".join(
                records(
                    get(server, context, token, "/api/v1/services"), get(server, context, token, "/api/v1/endpoints")
                )
            )
            if text != last:
                write_atomically(out, text + "\n")
                last = text
        except OSError as e:  # the apiserver restarting: keep the last records, try again
            sys.stderr.write(f"dns-sync: {e}\n")
        time.sleep(1)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
