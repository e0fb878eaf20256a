# Shell helpers shared by the scripts under scripts/ (`source` it): messages, root, Debian packages, the container
# engine. Keep it small: new logic of any size goes to Python (scripts/cluster/*.py).
# shellcheck shell=bash
lib_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)  # the repository
PREFOPS_CACHE=${PREFOPS_CACHE:-$HOME/.cache/prefops}

say() { echo "$(basename "$0" .sh): $*" >&2; }
die() { say "$*"; exit 1; }

as_root() {  # as_root COMMAND...: run it as root (sudo unless root already)
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {  # apt_install PACKAGE...: install these Debian packages (none given: nothing to do)
  [ $# -gt 0 ] || return 0
  say "installing $* (Debian)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

has_docker() { docker info >/dev/null 2>&1; }

engine() {  # engine ARGS...: the container engine the images are built with: docker when it answers, else podman
  if has_docker; then docker "$@"; else CONTAINERS_CONF=$lib_root/scripts/images/containers.conf podman "$@"; fi
}
