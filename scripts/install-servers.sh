#!/usr/bin/env bash
# Install (Debian packages) and build (Kubernetes 1.20.2, cached) the real servers the test suite starts: etcd +
# kube-apiserver + kube-controller-manager for the operator, Prometheus for metrics, and the node components
# (kube-scheduler, kubelet, kube-proxy) of the end-to-end tests' cluster (scripts/cluster/cluster.sh), all five
# Kubernetes binaries in one build. The S3 server (moto) comes from PyPI with `make setup`. Idempotent: a second
# run on the same machine takes a second.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
cache=${1:-$PREFOPS_CACHE}
need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
# the machine image may bring its own kubectl; Debian's (1.20) conflicts with it, so only where none is found
command -v kubectl >/dev/null || need+=(kubernetes-client)
apt_install "${need[@]}"
PREFOPS_CACHE=$cache "$here/build-kube.sh" kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy >/dev/null
echo "servers ready: etcd $(etcd --version | head -1 | awk '{print $3}'), prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}'), Kubernetes 1.20.2 in $cache/kube-1.20.2/bin"
