#!/usr/bin/env bash
# A real single-node Kubernetes 1.20.2 on this machine, running the project's own images (`make cluster`).
#
#   scripts/cluster.sh up       start it (idempotent), wait until the node is Ready, import both images
#   scripts/cluster.sh down     stop everything it started (by PID) and undo every change it made to the host
#   scripts/cluster.sh status   exit 0 when it is up and the node Ready
#
# Parts: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy built from Debian's
# `kubernetes` source package (scripts/build-kube.sh, cached); Debian's containerd + runc + CNI plugins; cluster
# DNS from dnsmasq fed by scripts/cluster/dns_sync.py; a pause image compiled from the Kubernetes source.
# The images prefops/operator:dev and prefops/trainer:dev (scripts/images.sh) are imported into the node's
# containerd, again only when their image ID changed.
#
# Network: the node is the bridge prefops0 (10.244.0.1, pods 10.244.0.0/24, Services 10.97.0.0/16). Every server
# binds that address or loopback; pods get routes to the pod and Service ranges only (no default route), and a
# FORWARD rule drops whatever would cross between the bridge and another interface: nothing leaves the machine.
# Every Kubernetes component runs with AWS_EC2_METADATA_DISABLED=true (kubelet 1.20 otherwise asks
# 169.254.169.254 for ECR credentials at start).
#
# State (certificates, kubeconfigs, etcd, logs, PIDs) lives in $PREFOPS_CLUSTER_DIR (default .cluster/); the
# admin kubeconfig is .cluster/kubeconfig. The node's images live in $PREFOPS_CACHE/node (kept by `down`).
set -euo pipefail
shopt -s inherit_errexit
root=$(cd "$(dirname "$0")/.." && pwd)
conf=$root/scripts/cluster
cache=${PREFOPS_CACHE:-$HOME/.cache/prefops}
state=${PREFOPS_CLUSTER_DIR:-$root/.cluster}
images_root=$cache/node/containerd
bin=$cache/kube-1.20.2/bin
NODE=prefops-node BRIDGE=prefops0 NODE_IP=10.244.0.1 POD_CIDR=10.244.0.0/24 SERVICE_CIDR=10.97.0.0/16
API_PORT=36443 ETCD_PORT=32379
API=https://$NODE_IP:$API_PORT
PAUSE=localhost/prefops-pause:3.4.1
IMAGES=(docker.io/prefops/operator:dev docker.io/prefops/trainer:dev)
FIREWALL=PREFOPS-NODE
# what kubelet, kube-proxy and the bridge plugin change; `up` records the values, `down` puts them back
SYSCTLS=(net.ipv4.ip_forward net.ipv4.conf.all.route_localnet vm.overcommit_memory vm.panic_on_oom kernel.panic
  kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# host paths the kubelet and containerd create whatever their configuration says; `down` removes those it created
HOST_PATHS=(/var/log/pods /var/log/containers /var/lib/cni /run/netns /run/containerd /run/kubernetes
  /var/lib/kubelet /usr/libexec/kubernetes)
export AWS_EC2_METADATA_DISABLED=true

say() { echo "cluster: $*" >&2; }
die() { say "$*"; exit 1; }
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo

# -- processes -----------------------------------------------------------------------------------------------

alive() { [ -f "$state/pids/$1" ] && kill -0 "$(cat "$state/pids/$1")" 2>/dev/null; }

start() {  # start NAME COMMAND...: in its own session, log in logs/NAME.log, PID in pids/NAME
  local name=$1
  shift
  setsid "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$state/pids/$name"
}

stop() {  # stop NAME: SIGTERM, SIGKILL after 15 s
  local name=$1 pid i
  [ -f "$state/pids/$name" ] || return 0
  pid=$(cat "$state/pids/$name")
  if kill "$pid" 2>/dev/null; then
    for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    say "stopped $name ($pid)"
  fi
  rm -f "$state/pids/$name"
}

wait_until() {  # wait_until SECONDS WHAT PROCESS COMMAND...: poll COMMAND; fail early when PROCESS died
  local seconds=$1 what=$2 process=$3 i
  shift 3
  for i in $(seq $((seconds * 2))); do
    "$@" >/dev/null 2>&1 && return 0
    [ -z "$process" ] || alive "$process" || die "$process exited; $state/logs/$process.log ends:
$(tail -20 "$state/logs/$process.log")"
    sleep 0.5
  done
  die "timed out after ${seconds}s waiting for $what"
}

# -- prerequisites ---------------------------------------------------------------------------------------------

install_packages() {
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
  [ ${#need[@]} -gt 0 ] || return 0
  say "installing ${need[*]} (Debian)"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

engine() {  # the container engine scripts/images.sh built the images with
  if docker info >/dev/null 2>&1; then docker "$@"; else CONTAINERS_CONF=$root/scripts/images/containers.conf podman "$@"; fi
}

pause_image() {  # the sandbox ("pause") image, compiled from the Kubernetes source with gcc -static
  local dir=$cache/kube-1.20.2/pause
  if [ ! -f "$dir/pause.tar" ]; then
    mkdir -p "$dir/rootfs"
    tar -xzf "$("$root/scripts/build-kube.sh" --source)" -C "$dir" --strip-components=4 \
      kubernetes-1.20.2/build/pause/linux/pause.c
    gcc -Os -static -DVERSION=3.4.1-prefops -o "$dir/rootfs/pause" "$dir/pause.c"
    tar -C "$dir/rootfs" -cf "$dir/rootfs.tar" pause
    engine import --change 'ENTRYPOINT ["/pause"]' "$dir/rootfs.tar" "$PAUSE" >/dev/null
    engine save -o "$dir/pause.tar.tmp" "$PAUSE" >/dev/null
    mv "$dir/pause.tar.tmp" "$dir/pause.tar"
  fi
  echo "$dir/pause.tar"
}

# -- state: certificates, tokens, kubeconfigs, configuration files --------------------------------------------

fill() {  # fill TEMPLATE OUT: replace @NAME@ placeholders
  sed -e "s|@STATE@|$state|g" -e "s|@ROOT@|$images_root|g" -e "s|@PAUSE@|$PAUSE|g" -e "s|@BRIDGE@|$BRIDGE|g" \
    -e "s|@NODE_IP@|$NODE_IP|g" -e "s|@POD_CIDR@|$POD_CIDR|g" -e "s|@SERVICE_CIDR@|$SERVICE_CIDR|g" \
    -e "s|@RUNC@|$(command -v runc)|g" "$1" >"$2"
}

cert() {  # cert NAME SUBJECT [SAN]: a key and a certificate signed by the cluster CA
  local pki=$state/pki name=$1 subject=$2 san=${3:-}
  openssl req -newkey rsa:2048 -nodes -subj "$subject" -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
  local ext=()
  if [ -n "$san" ]; then echo "subjectAltName=$san" >"$pki/$name.ext"; ext=(-extfile "$pki/$name.ext"); fi
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 30 \
    "${ext[@]}" -out "$pki/$name.crt" 2>/dev/null
}

kubeconfig() {  # kubeconfig FILE USER TOKEN
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: prefops-node, cluster: {server: "$API", certificate-authority: "$state/pki/ca.crt"}}]
users: [{name: $2, user: {token: "$3"}}]
contexts: [{name: prefops-node, context: {cluster: prefops-node, user: $2}}]
current-context: prefops-node
EOF
}

make_state() {
  [ -f "$state/kubeconfig" ] && return 0
  say "writing certificates, tokens and configuration to $state"
  mkdir -p "$state"/{pki,logs,pids,host,etcd,kubelet/root,kubelet/pki,kubelet/volume-plugins,containerd/state,cni/net.d,cni/ipam,dns}
  chmod 700 "$state/pki"
  local pki=$state/pki
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=prefops-node-ca -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  cert apiserver /CN=kube-apiserver "IP:127.0.0.1,IP:${SERVICE_CIDR%.0/16}.1,IP:$NODE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # the apiserver's identity towards the kubelet (logs, exec): system:masters, checked by the kubelet's webhook
  cert kubelet-client "/CN=kube-apiserver-kubelet-client/O=system:masters"
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  # one token per component, each with the identity the bootstrap RBAC policy (or the Node authorizer) expects
  local -A tokens
  local who
  for who in admin kubelet proxy scheduler controller-manager dns; do tokens[$who]=$(openssl rand -hex 24); done
  cat >"$state/tokens.csv" <<EOF
${tokens[admin]},prefops-admin,prefops-admin,"system:masters"
${tokens[kubelet]},system:node:$NODE,system:node:$NODE,"system:nodes"
${tokens[proxy]},system:kube-proxy,system:kube-proxy
${tokens[scheduler]},system:kube-scheduler,system:kube-scheduler
${tokens[controller-manager]},system:kube-controller-manager,system:kube-controller-manager
${tokens[dns]},prefops-node:dns,prefops-node:dns
EOF
  chmod 600 "$state/tokens.csv"
  kubeconfig "$state/kubelet.kubeconfig" "system:node:$NODE" "${tokens[kubelet]}"
  kubeconfig "$state/proxy.kubeconfig" system:kube-proxy "${tokens[proxy]}"
  kubeconfig "$state/scheduler.kubeconfig" system:kube-scheduler "${tokens[scheduler]}"
  kubeconfig "$state/controller-manager.kubeconfig" system:kube-controller-manager "${tokens[controller-manager]}"
  echo "${tokens[dns]}" >"$pki/dns.token"
  fill "$conf/containerd.toml" "$state/containerd/config.toml"
  fill "$conf/cni.conflist" "$state/cni/net.d/10-prefops-node.conflist"
  fill "$conf/kubelet.yaml" "$state/kubelet/config.yaml"
  printf 'nameserver %s\n' "$NODE_IP" >"$state/kubelet/resolv.conf"
  kubeconfig "$state/kubeconfig.tmp" prefops-admin "${tokens[admin]}"
  mv "$state/kubeconfig.tmp" "$state/kubeconfig"  # last: its presence means the state is complete
}

# -- host changes (each recorded in host/, undone by `down`) -------------------------------------------------

record_host() {
  [ -f "$state/host/sysctl" ] && return 0
  local s p
  for s in "${SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$state/host/sysctl.tmp"
  for p in "${HOST_PATHS[@]}"; do [ -e "$p" ] || echo "$p"; done >"$state/host/absent-paths"
  mv "$state/host/sysctl.tmp" "$state/host/sysctl"
}

network_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    $sudo ip link add "$BRIDGE" type bridge
    $sudo ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
  fi
  $sudo ip link set "$BRIDGE" up
  # pods talk to each other and to this machine's node address; nothing crosses to another interface
  if ! $sudo iptables -w -n -L "$FIREWALL" >/dev/null 2>&1; then
    $sudo iptables -w -N "$FIREWALL"
    $sudo iptables -w -A "$FIREWALL" -i "$BRIDGE" ! -o "$BRIDGE" -j DROP
    $sudo iptables -w -A "$FIREWALL" -o "$BRIDGE" ! -i "$BRIDGE" -j DROP
    $sudo iptables -w -I FORWARD -j "$FIREWALL"
  fi
}

# -- the servers ------------------------------------------------------------------------------------------------

start_control_plane() {
  alive etcd || start etcd etcd --name prefops-node --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:32380 --initial-advertise-peer-urls http://127.0.0.1:32380 \
    --initial-cluster prefops-node=http://127.0.0.1:32380 --log-level warn
  wait_until 30 etcd etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"
  local pki=$state/pki
  alive kube-apiserver || start kube-apiserver "$bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port="$API_PORT" --insecure-port=0 \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" --client-ca-file="$pki/ca.crt" \
    --kubelet-client-certificate="$pki/kubelet-client.crt" --kubelet-client-key="$pki/kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP --token-auth-file="$state/tokens.csv" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-cluster-ip-range="$SERVICE_CIDR" --service-node-port-range=36000-36099 \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$pki/sa.key" \
    --service-account-signing-key-file="$pki/sa.key" --enable-priority-and-fairness=false --v=1
  wait_until 60 kube-apiserver kube-apiserver kctl get --raw /readyz
  alive kube-controller-manager || start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig="$state/controller-manager.kubeconfig" --leader-elect=false --port=0 --secure-port=0 \
    --use-service-account-credentials=true --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" --node-monitor-grace-period=2m --flex-volume-plugin-dir="$state/kubelet/volume-plugins" \
    --v=1 \
    --controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token,endpoint,endpointslice,replicaset,deployment,statefulset,job,podgc,nodelifecycle,clusterrole-aggregation,ttl
  alive kube-scheduler || start kube-scheduler "$bin/kube-scheduler" --kubeconfig="$state/scheduler.kubeconfig" \
    --leader-elect=false --port=0 --secure-port=0 --v=1
  # cluster DNS reads Services and Endpoints only
  kctl get clusterrolebinding prefops-node:dns >/dev/null 2>&1 ||
    kctl create clusterrolebinding prefops-node:dns --clusterrole=system:kube-dns --user=prefops-node:dns >/dev/null
}

ctr_() { ctr --address "$state/containerd/containerd.sock" --namespace k8s.io "$@"; }

start_containerd() {
  mkdir -p "$images_root"
  alive containerd || start containerd containerd --config "$state/containerd/config.toml"
  wait_until 30 containerd containerd ctr_ version
}

node_image_id() {  # the config digest (= image ID) of an image in the node's containerd, empty when absent
  local digest
  digest=$(ctr_ images ls "name==$1" 2>/dev/null | awk 'NR == 2 { print $3 }')
  [ -n "$digest" ] || return 0
  ctr_ content get "$digest" | python3 -c 'import json, sys; print(json.load(sys.stdin)["config"]["digest"])'
}

import_images() {
  [ -n "$(node_image_id "$PAUSE")" ] || ctr_ images import "$(pause_image)" >/dev/null
  local image id start
  for image in "${IMAGES[@]}"; do
    id=$(engine image inspect --format '{{.Id}}' "$image" 2>/dev/null) || die "no image $image: run make images"
    [ "$(node_image_id "$image")" = "sha256:${id#sha256:}" ] && continue
    say "importing $image into the node"
    start=$SECONDS
    engine save "$image" | ctr_ images import - >/dev/null
    [ "$(node_image_id "$image")" = "sha256:${id#sha256:}" ] || die "importing $image gave another image ID"
    say "imported $image in $((SECONDS - start)) s"
  done
  prune_images
}

prune_images() {  # versions replaced by an import, held by the kubelet's ID reference only: their layers go
  local keep ref
  keep=$(for ref in "$PAUSE" "${IMAGES[@]}"; do node_image_id "$ref"; done)
  for ref in $(ctr_ images ls -q | grep '^sha256:' || true); do
    grep -qx "$ref" <<<"$keep" || ctr_ images rm --sync "$ref" >/dev/null 2>&1 || true
  done
}

start_node() {
  alive kubelet || start kubelet "$bin/kubelet" --kubeconfig="$state/kubelet.kubeconfig" \
    --config="$state/kubelet/config.yaml" --container-runtime=remote \
    --container-runtime-endpoint="unix://$state/containerd/containerd.sock" --runtime-request-timeout=10m \
    --root-dir="$state/kubelet/root" --cert-dir="$state/kubelet/pki" --hostname-override="$NODE" \
    --node-ip="$NODE_IP" --pod-infra-container-image="$PAUSE" --v=1
  alive kube-proxy || start kube-proxy "$bin/kube-proxy" --kubeconfig="$state/proxy.kubeconfig" \
    --hostname-override="$NODE" --cluster-cidr="$POD_CIDR" --proxy-mode=iptables --masquerade-all=true \
    --nodeport-addresses="$NODE_IP/32" --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 \
    --conntrack-tcp-timeout-close-wait=0 --metrics-bind-address=127.0.0.1:30249 \
    --healthz-bind-address=127.0.0.1:30256 --bind-address=127.0.0.1 --v=1
  alive dns-sync || start dns-sync python3 "$conf/dns_sync.py" "$API" "$state/pki/ca.crt" "$state/pki/dns.token" \
    "$state/dns/cluster.hosts"
  alive dnsmasq || start dnsmasq dnsmasq --keep-in-foreground --log-facility=- --user=nobody --group=nogroup --pid-file= \
    --listen-address="$NODE_IP" --bind-interfaces --port=53 --no-resolv --no-hosts --local=/cluster.local/ \
    --domain-needed --bogus-priv --hostsdir="$state/dns"
}

kctl() { kubectl --kubeconfig="$state/kubeconfig" "$@"; }

node_ready() {
  [ "$(kctl get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

all_alive() {
  local p
  for p in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy dns-sync dnsmasq; do
    alive "$p" || return 1
  done
}

up() {
  if [ -f "$state/kubeconfig" ] && all_alive && node_ready; then
    "$root/scripts/images.sh"  # the current sources: seconds when nothing changed
    import_images
    say "up: node $NODE Ready (KUBECONFIG=$state/kubeconfig)"
    return
  fi
  if [ -d "$state/pids" ] && [ -n "$(ls -A "$state/pids")" ]; then
    say "found a partly running node: taking it down first"
    down
  fi
  local start=$SECONDS
  install_packages
  "$root/scripts/build-kube.sh" kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy >/dev/null
  "$root/scripts/images.sh"
  make_state
  record_host
  network_up
  start_control_plane
  start_containerd
  import_images
  start_node
  wait_until 120 "node $NODE Ready" kubelet node_ready
  wait_until 60 "the default ServiceAccount" kube-controller-manager kctl -n default get serviceaccount default
  say "up in $((SECONDS - start)) s: node $NODE Ready (KUBECONFIG=$state/kubeconfig)"
}

# -- down -------------------------------------------------------------------------------------------------------

remove_pods() {  # let the kubelet stop every pod (CNI teardown, volume unmounts) while it still runs
  alive kube-apiserver && alive kubelet || return 0
  kctl delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
  local i
  for i in $(seq 120); do
    [ -n "$(ctr_ tasks ls -q 2>/dev/null)" ] || break
    sleep 0.5
  done
}

remove_containers() {  # whatever the kubelet left: tasks, containers and their snapshots
  alive containerd || return 0
  local id
  for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
  for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
}

stop_shims() {  # containerd's shims outlive it; ours name our socket on their command line
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $state/containerd/containerd.sock" || true); do
    kill -9 "$pid" 2>/dev/null || true
  done
}

unmount_state() {  # mounts left under the state folder, deepest first
  local mount
  for mount in $(awk -v s="$state/" -v r="$images_root/" 'index($5, s) == 1 || index($5, r) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
    $sudo umount -l "$mount" 2>/dev/null || true
  done
}

clean_netns() {  # network namespaces of pods the kubelet did not stop
  local ns
  for ns in /run/netns/cni-*; do
    [ -e "$ns" ] || continue
    $sudo umount "$ns" 2>/dev/null || true
    rm -f "$ns"
  done
}

our_chains() {  # our_chains TOOL TABLE: the chains kube-proxy, the kubelet and this script made
  $sudo "$1-save" -t "$2" 2>/dev/null | awk -v f="$FIREWALL" '/^:/ { c = substr($1, 2); if (c ~ /^KUBE-/ || c == f) print c }'
}

clean_iptables() {  # our chains in every table, and the rules of built-in chains that jump to them
  local tool table chain rule
  for tool in iptables ip6tables; do
    command -v "$tool" >/dev/null || continue
    for table in filter nat mangle raw; do
      { $sudo "$tool-save" -t "$table" 2>/dev/null || true; } | { grep -E -- "^-A [A-Z]+ .*-j (KUBE-|$FIREWALL)" || true; } |
        { grep -E -v "^-A (KUBE-|$FIREWALL)" || true; } | while read -r rule; do
          # iptables-save quotes as a shell does (comments with spaces)
          eval "$sudo $tool -w -t $table -D ${rule#-A }" 2>/dev/null || true
        done
      for chain in $(our_chains "$tool" "$table"); do $sudo "$tool" -w -t "$table" -F "$chain" 2>/dev/null || true; done
      for chain in $(our_chains "$tool" "$table"); do $sudo "$tool" -w -t "$table" -X "$chain" 2>/dev/null || true; done
    done
  done
}

clean_cgroups() {  # the kubelet's kubepods hierarchy in every controller, deepest first
  local dir
  for dir in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$dir" ] || continue
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

restore_host() {
  local line p
  if [ -f "$state/host/sysctl" ]; then
    while IFS= read -r line; do $sudo sysctl -q -w "$line" >/dev/null || true; done <"$state/host/sysctl"
  fi
  if [ -f "$state/host/absent-paths" ]; then
    while IFS= read -r p; do $sudo rm -rf "$p"; done <"$state/host/absent-paths"
  fi
  ! ip link show "$BRIDGE" >/dev/null 2>&1 || $sudo ip link delete "$BRIDGE"
  rm -f "$state/host/sysctl" "$state/host/absent-paths"
}

down() {
  stop dnsmasq
  stop dns-sync
  # nothing recreates or schedules pods any more, then the kubelet stops the ones there are
  stop kube-scheduler
  stop kube-controller-manager
  remove_pods
  stop kube-proxy
  stop kubelet
  remove_containers
  stop containerd
  stop_shims
  stop kube-apiserver
  stop etcd
  if [ -d "$state/host" ]; then  # only what `up` changed: nothing when it never ran
    unmount_state
    clean_netns
    clean_iptables
    clean_cgroups
    restore_host
  fi
  # keep the logs for a look after the fact; everything else of this node goes
  if [ -d "$state" ]; then
    find "$state" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
  fi
  say "down: host restored"
}

status() {
  [ -f "$state/kubeconfig" ] && all_alive && node_ready
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
