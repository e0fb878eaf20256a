#!/usr/bin/env bash
# Build one Kubernetes v1.20.2 server binary (kube-apiserver, or kube-controller-manager for real garbage
# collection of owned objects) from Debian bookworm's `kubernetes` source package with Debian's Go, offline,
# and print its path. Idempotent; caches in $2 (default ~/.cache/prefops/<component>-1.20.2). 4.5-7 minutes
# and ~1.3 GB RAM per component the first time on 2 cores; the source tarball is downloaded once and shared.
#
#   scripts/build-kube.sh kube-apiserver [CACHE_DIR]
#   scripts/build-kube.sh kube-controller-manager [CACHE_DIR]
set -euo pipefail
component=${1:?usage: $0 kube-apiserver|kube-controller-manager [CACHE_DIR]}
case "$component" in kube-apiserver | kube-controller-manager) ;; *) echo "unknown component: $component" >&2; exit 2 ;; esac
cache=${2:-$HOME/.cache/prefops/$component-1.20.2}
bin=$cache/$component
[ -x "$bin" ] && { echo "$bin"; exit 0; }
ver=1.20.5+really1.20.2-1.1+deb12u1
orig=kubernetes_1.20.5+really1.20.2.orig.tar.gz
mkdir -p "$cache/build"; cd "$cache/build"
export DEBIAN_FRONTEND=noninteractive
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]; then
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends golang-go make rsync jq \
    golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev >/dev/null
fi
if [ ! -f "$orig" ]; then
  # the other component's build may have downloaded the tarball already
  shared=$(find "$(dirname "$cache")" -maxdepth 3 -path "*-1.20.2/build/$orig" 2>/dev/null | head -1)
  if [ -n "$shared" ]; then
    cp "$shared" .
  else
    grep -rqs "^deb-src .*bookworm main" /etc/apt/sources.list /etc/apt/sources.list.d/ \
      || echo "deb-src http://deb.debian.org/debian bookworm main" | $sudo tee /etc/apt/sources.list.d/bookworm-src.list >/dev/null
    $sudo apt-get update -qq >/dev/null
    apt-get source --download-only "kubernetes=$ver" >/dev/null
  fi
fi
rm -rf kubernetes-1.20.2 && tar xzf "$orig" && cd kubernetes-1.20.2
# vendored reflect2 1.0.1 crashes under Go >= 1.18 on the first CRD request; use Debian's reflect2 1.0.2 and
# json-iterator 1.1.12 (the same versions upstream moved to in Kubernetes 1.24)
for m in github.com/modern-go/reflect2 github.com/json-iterator/go; do
  rm -rf "vendor/$m"; mkdir -p "vendor/$m"
  find "/usr/share/gocode/src/$m" -maxdepth 1 -type f \( -name '*.go' ! -name '*_test.go' -o -name LICENSE \) -exec cp {} "vendor/$m/" \;
done
export GOPROXY=off GOFLAGS=-mod=vendor GO111MODULE=on CGO_ENABLED=0 GOCACHE="$cache/gocache" HOME="$cache/home"
mkdir -p "$HOME"
make WHAT="cmd/$component" >"$cache/build.log" 2>&1 || { tail -20 "$cache/build.log" >&2; exit 1; }
cp "_output/bin/$component" "$bin"
cd "$cache" && rm -rf build/kubernetes-1.20.2 gocache
echo "$bin"
