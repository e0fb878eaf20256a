#!/usr/bin/env bash
# The local test cluster: Kubernetes 1.20.2 with one or more real nodes on this machine, running the project's own
# images (`make cluster`, `make cluster NODES=2`).
#
#   scripts/cluster/cluster.sh up [--nodes N]        start it (idempotent), wait until every node is Ready
#   scripts/cluster/cluster.sh down                  stop what it started (by PID), undo what it changed on the host
#   scripts/cluster/cluster.sh status                exit 0 when it is up and every node Ready
#   scripts/cluster/cluster.sh kill-node NAME [--kubelet-only]   a node dies (SIGKILL; the API keeps everything)
#   scripts/cluster/cluster.sh restore-node NAME     it comes back
#   scripts/cluster/cluster.sh check [--nodes N]     up and down, comparing the host before and after
#
# This wrapper installs and builds what `up` needs: Debian packages (containerd, runc, CNI plugins, dnsmasq, etcd,
# ...), kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy from Debian's `kubernetes`
# source (scripts/build-kube.sh, cached), the images (scripts/images.sh, cached) and a pause image compiled from the
# Kubernetes source. The rest is cluster.py (see its docstring, and docs/development.md).
set -euo pipefail
shopt -s inherit_errexit
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
source "$here/../lib.sh"

prerequisites() {
  local need=()
  command -v containerd >/dev/null || need+=(containerd)
  command -v runc >/dev/null || need+=(runc)
  [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
  command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
  command -v iptables >/dev/null || need+=(iptables)
  command -v conntrack >/dev/null || need+=(conntrack)
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v openssl >/dev/null || need+=(openssl)
  command -v gcc >/dev/null || need+=(gcc libc6-dev)
  command -v kubectl >/dev/null || need+=(kubernetes-client)
  apt_install "${need[@]}"
  "$lib_root/scripts/build-kube.sh" kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy >/dev/null
  "$lib_root/scripts/images.sh"
}

pause_image() {  # the sandbox ("pause") image as a tarball, compiled from the Kubernetes source with gcc -static
  local dir=$PREFOPS_CACHE/kube-1.20.2/pause image=localhost/prefops-pause:3.4.1
  [ ! -f "$dir/pause.tar" ] || return 0
  mkdir -p "$dir/rootfs"
  tar -xzf "$("$lib_root/scripts/build-kube.sh" --source)" -C "$dir" --strip-components=4 \
    kubernetes-1.20.2/build/pause/linux/pause.c
  gcc -Os -static -DVERSION=3.4.1-prefops -o "$dir/rootfs/pause" "$dir/pause.c"
  tar -C "$dir/rootfs" -cf "$dir/rootfs.tar" pause
  engine import --change 'ENTRYPOINT ["/pause"]' "$dir/rootfs.tar" "$image" >/dev/null
  engine save -o "$dir/pause.tar.tmp" "$image" >/dev/null
  mv "$dir/pause.tar.tmp" "$dir/pause.tar"
}

case "${1:-}" in
  up | check)
    prerequisites
    pause_image
    ;;
esac
exec python3 "$here/cluster.py" "$@"
