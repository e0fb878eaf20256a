#!/usr/bin/env bash
# Build kube-controller-manager v1.20.2 (for real garbage collection of owned objects in the operator's
# integration tests) from the same Debian bookworm source package as scripts/build-kube-apiserver.sh, and print
# the binary's path. Idempotent; caches in $1 (default ~/.cache/prefops/kube-controller-manager-1.20.2).
# Reuses the source tarball the apiserver build downloaded when it is there. ~5-7 minutes on 2 cores.
set -euo pipefail
cache=${1:-$HOME/.cache/prefops/kube-controller-manager-1.20.2}
bin=$cache/kube-controller-manager
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
  shared=$(dirname "$cache")/kube-apiserver-1.20.2/build/$orig
  if [ -f "$shared" ]; then
    cp "$shared" .
  else
    src=/etc/apt/sources.list.d/bookworm-src.list
    grep -rqs "^deb-src .*bookworm main" /etc/apt/sources.list /etc/apt/sources.list.d/ \
      || echo "deb-src http://deb.debian.org/debian bookworm main" | $sudo tee $src >/dev/null
    $sudo apt-get update -qq >/dev/null
    apt-get source --download-only "kubernetes=$ver" >/dev/null
  fi
fi
rm -rf kubernetes-1.20.2 && tar xzf "$orig" && cd kubernetes-1.20.2
# vendored reflect2 1.0.1 crashes under Go >= 1.18; use Debian's reflect2 1.0.2 and json-iterator 1.1.12
for m in github.com/modern-go/reflect2 github.com/json-iterator/go; do
  rm -rf "vendor/$m"; mkdir -p "vendor/$m"
  find "/usr/share/gocode/src/$m" -maxdepth 1 -type f \( -name '*.go' ! -name '*_test.go' -o -name LICENSE \) -exec cp {} "vendor/$m/" \;
done
export GOPROXY=off GOFLAGS=-mod=vendor GO111MODULE=on CGO_ENABLED=0 GOCACHE="$cache/gocache" HOME="$cache/home"
mkdir -p "$HOME"
make WHAT=cmd/kube-controller-manager >"$cache/build.log" 2>&1 || { tail -20 "$cache/build.log" >&2; exit 1; }
cp _output/bin/kube-controller-manager "$bin"
cd "$cache" && rm -rf build/kubernetes-1.20.2 gocache
echo "$bin"
