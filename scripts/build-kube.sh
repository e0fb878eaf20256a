#!/usr/bin/env bash
# Build Kubernetes v1.20.2 binaries (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy) from Debian bookworm's `kubernetes` source package with Debian's Go, offline, and print their paths.
#
#   scripts/build-kube.sh COMPONENT...        e.g. scripts/build-kube.sh kube-apiserver kubelet
#   scripts/build-kube.sh --source            the path of the source tarball (downloaded when missing)
#
# Everything lands in $PREFOPS_CACHE/kube-1.20.2 (default ~/.cache/prefops): bin/ the binaries, gocache/ Go's
# build cache (shared by every component, so a later build of another one reuses the compiled libraries),
# src/ the downloaded source package. Idempotent: components already in bin/ are not rebuilt; the missing ones
# are built together in ONE `make WHAT=...` (the five share most of their packages: about 12 CPU-minutes and
# 1.5 GB RAM for all five on a fresh machine, against 5-7 minutes for each one built alone). Concurrent calls
# wait for each other (flock).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
[ $# -gt 0 ] || { echo "usage: $0 COMPONENT... | --source" >&2; exit 2; }
only_source=false
[ "$1" != --source ] || { only_source=true; shift; }
for c in "$@"; do
  case "$c" in kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kube-proxy) ;;
    *) echo "unknown component: $c" >&2; exit 2 ;;
  esac
done
ver=1.20.5+really1.20.2-1.1+deb12u1
orig=kubernetes_1.20.5+really1.20.2.orig.tar.gz
root=$PREFOPS_CACHE
cache=$root/kube-1.20.2
mkdir -p "$cache/bin" "$cache/src"
exec 9>"$cache/.lock"
flock 9

missing=()
for c in "$@"; do
  # binaries built one at a time by this script's earlier version: adopt them instead of building again
  legacy=$root/$c-1.20.2/$c
  [ -x "$cache/bin/$c" ] || [ ! -x "$legacy" ] || cp "$legacy" "$cache/bin/$c"
  [ -x "$cache/bin/$c" ] || missing+=("$c")
done

export DEBIAN_FRONTEND=noninteractive
source_tarball() {  # into src/, from an earlier layout of this cache or from Debian (apt-get source)
  cd "$cache/src"
  [ ! -f "$orig" ] || return 0
  local shared
  shared=$(find "$root" -maxdepth 3 -path "*/build/$orig" 2>/dev/null | head -1)
  if [ -n "$shared" ]; then
    cp "$shared" "$orig.tmp" && mv "$orig.tmp" "$orig"
  else
    grep -rqs "^deb-src .*bookworm main" /etc/apt/sources.list /etc/apt/sources.list.d/ \
      || echo "deb-src http://deb.debian.org/debian bookworm main" | as_root tee /etc/apt/sources.list.d/bookworm-src.list >/dev/null
    as_root apt-get update -qq >/dev/null
    apt-get source --download-only "kubernetes=$ver" >/dev/null
  fi
}
if $only_source; then
  source_tarball
  echo "$cache/src/$orig"
  exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v go >/dev/null || ! command -v rsync >/dev/null || [ ! -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]; then
    apt_install golang-go make rsync jq golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev
  fi
  source_tarball
  rm -rf kubernetes-1.20.2 && tar xzf "$orig" && cd kubernetes-1.20.2
  # vendored reflect2 1.0.1 crashes under Go >= 1.18 on the first CRD request; use Debian's reflect2 1.0.2 and
  # json-iterator 1.1.12 (the same versions upstream moved to in Kubernetes 1.24)
  for m in github.com/modern-go/reflect2 github.com/json-iterator/go; do
    rm -rf "vendor/$m"; mkdir -p "vendor/$m"
    find "/usr/share/gocode/src/$m" -maxdepth 1 -type f \( -name '*.go' ! -name '*_test.go' -o -name LICENSE \) -exec cp {} "vendor/$m/" \;
  done
  export GOPROXY=off GOFLAGS=-mod=vendor GO111MODULE=on CGO_ENABLED=0 HOME="$cache/home"
  # hack/lib/golang.sh sets GOCACHE to _output/local/go/cache: make that our cache, which outlives the tree
  mkdir -p "$HOME" "$cache/gocache" _output/local/go
  ln -s "$cache/gocache" _output/local/go/cache
  what=$(printf 'cmd/%s ' "${missing[@]}")
  echo "building ${missing[*]} (log: $cache/build.log)" >&2
  make WHAT="${what% }" >"$cache/build.log" 2>&1 || { tail -20 "$cache/build.log" >&2; exit 1; }
  for c in "${missing[@]}"; do cp "_output/bin/$c" "$cache/bin/$c.tmp" && mv "$cache/bin/$c.tmp" "$cache/bin/$c"; done
  cd "$cache" && rm -rf src/kubernetes-1.20.2
fi
for c in "$@"; do echo "$cache/bin/$c"; done
