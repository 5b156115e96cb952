#!/usr/bin/env bash
# scripts/isolated.sh CMD...
# Runs CMD in a network, mount and pid namespace of its own, where the test node lives: loopback and an
# internal bridge (cni0, $NODE_IP/24) and no route out, so no test traffic can leave the machine. It
# checks that before CMD starts. Everything the run creates inside (pods' network namespaces, mounts,
# processes, iptables rules) goes with the namespaces when CMD ends, however it ends; what lives outside
# them (the kubelet's cgroups, the kernel settings the kubelet would change) is created here and removed
# afterwards, by this script or, should it be killed, by its guardian.
#
# CMD sees BACKBEAT_NODE_IP (the bridge's address, which the node, Kafka and the S3 servers bind),
# BACKBEAT_NODE_CGROUP (the cgroup root prepared for the kubelet, in every hierarchy) and BACKBEAT_TEST_TMP
# (a folder of this run's, removed afterwards unless BACKBEAT_KEEP_TEST_DIR is set).
set -euo pipefail
NODE_IP=10.244.0.1
# Kernel settings the kubelet sets to these values at start (setupKernelTunables); they are global, not
# per namespace. Inside, each /proc/sys file is covered by a private file that already holds the value,
# so the kubelet finds what it wants and the machine's settings never change.
TUNABLES=(vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000)

# cleanup ID TMP: removes the run's cgroups (their processes died with the pid namespace) and folder.
cleanup() {
  local id=$1 left=1 h
  [ -n "${BACKBEAT_KEEP_TEST_DIR:-}" ] || rm -rf "$2"
  for _ in $(seq 40); do
    left=0
    for h in /sys/fs/cgroup/*/"backbeat-node-$id"; do
      [ -d "$h" ] || continue
      find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || left=1
    done
    [ "$left" = 0 ] && return 0
    sleep 0.25
  done
  echo "isolated: cgroups of run $id still busy: $(ls -d /sys/fs/cgroup/*/"backbeat-node-$id" 2>/dev/null)" >&2
  return 1
}

case ${1:-} in
  --guard)
    # --guard OWNER_PID ID TMP: once the owner is gone, however it ended, cleans up after it.
    owner=$2
    while kill -0 "$owner" 2>/dev/null; do sleep 0.5; done
    cleanup "$3" "$4"
    exit
    ;;
  --inner)
    shift
    # pid 1 of the new pid namespace: when it exits, the kernel kills everything left inside.
    mount -t tmpfs -o mode=755 tmpfs /run   # private /run (containerd, /run/netns) seen only here
    ip link set lo up
    ip link add cni0 type bridge
    ip addr add "$NODE_IP/24" dev cni0
    ip link set cni0 up
    links=$(ip -o link show | awk -F': ' '{print $2}' | sort | tr '\n' ' ')
    [ "$links" = "cni0 lo " ] || { echo "isolated: unexpected links in the test namespace: $links" >&2; exit 1; }
    if ip route show default | grep -q . || ip route get 192.0.2.1 >/dev/null 2>&1; then
      echo "isolated: the test namespace has a route out; refusing to start" >&2
      exit 1
    fi
    dir=$(mktemp -d)
    for t in "${TUNABLES[@]}"; do
      f=$dir/${t%%=*}; mkdir -p "$(dirname "$f")"; echo "${t#*=}" >"$f"
      mount --bind "$f" "/proc/sys/${t%%=*}"
    done
    export BACKBEAT_NODE_IP=$NODE_IP
    rc=0
    "$@" || rc=$?
    # What CMD left to finish by itself (the harness's guardian, after a killed test run) gets a moment:
    # leaving, pid 1 kills whatever is still in the namespace.
    for _ in $(seq 60); do [ "$(pgrep -c .)" -le 2 ] && break; sleep 0.25; done
    exit "$rc"
    ;;
esac

[ "$(id -u)" = 0 ] || { echo 'isolated: needs root (namespaces, cgroups)' >&2; exit 2; }
[ $# -gt 0 ] || { echo 'usage: scripts/isolated.sh CMD...' >&2; exit 2; }
id=$$
tmp=$(mktemp -d "${BACKBEAT_TEST_TMP:-${TMPDIR:-/tmp}}/backbeat-isolated-XXXXXX")
before=$(for t in "${TUNABLES[@]}"; do printf '%s=%s ' "${t%%=*}" "$(cat "/proc/sys/${t%%=*}")"; done)
# The kubelet's cgroup root must exist in every hierarchy; a cpuset needs its CPUs and memory nodes.
# Its CPU weight is that of the cores the node offers, as a real node's kubepods has beside the system's
# processes: with the default (one process's weight), all the pods together got no more CPU than any one
# of the run's servers, and the operator's event loop stalled for seconds at a time (its lease lost).
for h in /sys/fs/cgroup/*/; do
  case $h in */unified/) continue ;; esac
  mkdir "$h/backbeat-node-$id"
  if [ -f "$h/cpuset.cpus" ]; then
    cat "$h/cpuset.cpus" >"$h/backbeat-node-$id/cpuset.cpus"
    cat "$h/cpuset.mems" >"$h/backbeat-node-$id/cpuset.mems"
  fi
  if [ -f "$h/cpu.shares" ]; then echo $((1024 * $(nproc))) >"$h/backbeat-node-$id/cpu.shares"; fi
done
setsid bash "$0" --guard $$ "$id" "$tmp" </dev/null >/dev/null 2>&1 &
guard=$!
export BACKBEAT_NODE_CGROUP=/backbeat-node-$id BACKBEAT_TEST_TMP=$tmp
unshare --fork --pid --kill-child --mount-proc --net --mount --propagation private bash "$0" --inner "$@" &
inner=$!
trap 'kill -TERM "$inner" 2>/dev/null' INT TERM HUP
rc=0
while kill -0 "$inner" 2>/dev/null; do wait "$inner" && rc=0 || rc=$?; done
cleanup "$id" "$tmp" || rc=1
kill "$guard" 2>/dev/null || true
after=$(for t in "${TUNABLES[@]}"; do printf '%s=%s ' "${t%%=*}" "$(cat "/proc/sys/${t%%=*}")"; done)
# What the run could have left: the proof that it left nothing.
left=$(
  [ "$before" = "$after" ] || echo "kernel settings: before $before, after $after"
  ls -d /sys/fs/cgroup/*/"backbeat-node-$id" 2>/dev/null
  grep -F "$tmp" /proc/self/mountinfo
  pgrep -af "$tmp" | grep -v "^$guard "
  ip -o link show cni0 2>/dev/null
  true
)
if [ -n "$left" ]; then
  echo "isolated: the run left this behind:" >&2
  echo "$left" >&2
  rc=1
else
  echo "isolated: nothing of the run is left (cgroups, mounts, processes, bridge, kernel settings: $after)" >&2
fi
exit "$rc"
