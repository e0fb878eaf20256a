#!/usr/bin/env bash
# Build the project's images from images/*/Dockerfile: prefops/operator:dev and prefops/trainer:dev (`make images`).
#
#   scripts/images.sh [operator] [trainer]      (default: both)
#
# Engine: docker when `docker info` answers (a running engine), else podman (installed from Debian when missing).
# Base images (PREFOPS_BASE_IMAGES):
#   local     (default) bases built here from Debian packages, no container registry needed: mmdebstrap makes a
#             bookworm root filesystem, imported as an image; scripts/images/base-py.Containerfile adds a venv
#             (the operator's base, standing in for python:3.11-slim-bookworm) and base-torch.Containerfile CPU
#             torch 2.13.0 + g++ (the trainer's, standing in for pytorch/pytorch:2.13.0-cuda12.8-cudnn9-devel).
#   upstream  the Dockerfiles' own defaults, pulled from Docker Hub.
# pip inside the builds (podman) uses this machine's pip configuration: its local wheel folders and indexes are
# mounted read-only, and its CA bundle where one is configured.
#
# Cached by content: an image is rebuilt only when its Dockerfile, a file it copies, its base or its build
# arguments change (the key is the image's label dev.prefops.content); a second run takes seconds. The root
# filesystem tarball is kept in $PREFOPS_CACHE/images (default ~/.cache/prefops/images).
set -euo pipefail
shopt -s inherit_errexit
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
root=$lib_root
conf=$root/scripts/images
cache=$PREFOPS_CACHE/images
bases=${PREFOPS_BASE_IMAGES:-local}
tag=${PREFOPS_IMAGE_TAG:-dev}
label=dev.prefops.content
suite=bookworm
rootfs_packages=python3,python3-venv,ca-certificates,passwd
mirror=http://deb.debian.org/debian
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(operator trainer)
case "$bases" in local | upstream) ;; *) echo "PREFOPS_BASE_IMAGES must be local or upstream, got $bases" >&2; exit 2 ;; esac

digest() { sha256sum | cut -c1-16; }

setup_engine() {
  pull_never=()  # a local base is never looked up in a registry (docker: never pulled unless --pull)
  if has_docker; then
    engine=docker
    return
  fi
  local need=()
  command -v podman >/dev/null || need+=(podman)
  command -v runc >/dev/null || need+=(runc)
  [ "$bases" = upstream ] || command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
  apt_install "${need[@]}"
  engine=podman
  pull_never=(--pull=never)
  export CONTAINERS_CONF=$conf/containers.conf
}

exists() { $engine image inspect "$1" >/dev/null 2>&1; }
image_id() { $engine image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
content_label() { $engine image inspect --format "{{index .Config.Labels \"$label\"}}" "$1" 2>/dev/null || true; }

# The host's pip configuration for builds: a pip.conf mounted at /etc/pip.conf and its local folders read-only.
pip_mounts() {
  mounts=()
  [ "$engine" = podman ] || return 0
  pip_dir=$(mktemp -d)
  trap 'rm -rf "$pip_dir"' EXIT
  python3 - "$pip_dir/pip.conf" >"$pip_dir/paths" <<'EOF'
import subprocess, sys
from pathlib import Path
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
lists, scalars = {"find-links": [], "extra-index-url": [], "constraint": []}, {}
for line in out.splitlines():
    key, _, value = line.partition("=")
    key, value = key.rsplit(".", 1)[-1], value.strip().strip("'\"")
    if key in lists:
        lists[key] += [v for v in value.split() if v not in lists[key]]
    elif key in ("index-url", "cert", "default-timeout", "trusted-host"):
        scalars.setdefault(key, value)
conf = ["[global]"] + [f"{k} = {v}" for k, v in scalars.items()]
conf += [f"{k} = {' '.join(v)}" for k, v in lists.items() if v]
Path(sys.argv[1]).write_text("\n".join(conf) + "\n")
# local folders to mount: an index's pages link to files beside it (../../files/...), so its parent
indexes = [scalars.get("index-url", ""), *lists["extra-index-url"]]
for value in [*scalars.values(), *(v for vs in lists.values() for v in vs)]:
    path = Path(value.removeprefix("file://"))
    if path.is_absolute() and path.exists():
        print(path.parent if value in indexes and path.is_dir() else path)
EOF
  mounts+=(-v "$pip_dir/pip.conf:/etc/pip.conf:ro")
  local path
  while read -r path; do mounts+=(-v "$path:$path:ro"); done < <(sort -u "$pip_dir/paths")
}

build() {  # build IMAGE_REF KEY CONTEXT [podman build args...]: unless IMAGE_REF already has KEY
  local ref=$1 key=$2 context=$3
  shift 3
  if [ "$(content_label "$ref")" = "$key" ]; then
    say "$ref is up to date"
    return
  fi
  local old
  old=$(image_id "$ref")
  say "building $ref"
  local start=$SECONDS
  $engine build --network=host --label "$label=$key" -t "$ref" "${mounts[@]}" "$@" "$context" >&2 ||
    die "building $ref failed"
  say "built $ref in $((SECONDS - start)) s"
  # the replaced image, unless something still uses it
  if [ -n "$old" ] && [ "$old" != "$(image_id "$ref")" ]; then $engine rmi "$old" >/dev/null 2>&1 || true; fi
}

rootfs_image() {  # a Debian root filesystem from packages, as an image
  local key ref tar
  key=$(echo "$suite $rootfs_packages $mirror" | digest)
  ref=localhost/prefops-rootfs:$suite-$key
  if ! exists "$ref"; then
    tar=$cache/rootfs-$suite-$key.tar
    if [ ! -f "$tar" ]; then
      say "mmdebstrap $suite ($rootfs_packages)"
      mkdir -p "$cache"
      mmdebstrap --quiet --variant=minbase --include="$rootfs_packages" --format=tar "$suite" "$tar.tmp" \
        "deb $mirror $suite main" "deb $mirror $suite-updates main" \
        "deb ${mirror%/debian}/debian-security $suite-security main" || die "mmdebstrap failed"
      mv "$tar.tmp" "$tar"
    fi
    $engine import "$tar" "$ref" >/dev/null || die "importing $tar failed"
  fi
  echo "$ref|$key"
}

local_base() {  # local_base NAME PARENT_REF PARENT_KEY ARG: scripts/images/NAME.Containerfile over the parent
  local name=$1 parent=$2 parent_key=$3 arg=$4 key
  key=$( (echo "$parent_key" && cat "$conf/$name.Containerfile") | digest)
  local ref=localhost/prefops-$name:$key
  exists "$ref" || build "$ref" "$key" "$conf" -f "$conf/$name.Containerfile" "${pull_never[@]}" --build-arg "$arg=$parent"
  echo "$ref|$key"
}

copied_files_digest() {  # every file the Dockerfile COPYs from the repository, less what .dockerignore leaves out
  local dockerfile=$1
  local sources
  sources=$(awk 'toupper($1) == "COPY" { for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' "$dockerfile")
  # shellcheck disable=SC2086
  (cd "$root" && find $sources -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 | sort -z | xargs -0 sha256sum) | digest
}

app_image() {  # app_image NAME BASE_REF BASE_KEY
  local name=$1 base=$2 base_key=$3
  local dockerfile=$root/images/$name/Dockerfile key
  key=$( (cat "$dockerfile" "$root/.dockerignore" && copied_files_digest "$dockerfile" && echo "$base_key") | digest)
  local args=(-f "$dockerfile")
  if [ -n "$base" ]; then args+=("${pull_never[@]}" --build-arg "BASE_IMAGE=$base"); fi
  # docker names an image without a registry docker.io/...; so do we, so the node finds it under the same name
  build "docker.io/prefops/$name:$tag" "$key" "$root" "${args[@]}"
}

main() {
  setup_engine
  pip_mounts
  local start=$SECONDS rootfs py torch
  if [ "$bases" = local ]; then
    rootfs=$(rootfs_image)
    py=$(local_base base-py "${rootfs%|*}" "${rootfs#*|}" ROOTFS)
  fi
  for name in "${names[@]}"; do
    case "$name" in
      operator)
        if [ "$bases" = local ]; then app_image operator "${py%|*}" "${py#*|}"; else app_image operator "" upstream; fi ;;
      trainer)
        if [ "$bases" = local ]; then
          torch=$(local_base base-torch "${py%|*}" "${py#*|}" BASE)
          app_image trainer "${torch%|*}" "${torch#*|}"
        else
          app_image trainer "" upstream
        fi ;;
      *) echo "unknown image: $name (operator or trainer)" >&2; exit 2 ;;
    esac
  done
  say "done in $((SECONDS - start)) s ($engine, $bases bases): $(printf 'prefops/%s:'"$tag"' ' "${names[@]}")"
}

main
