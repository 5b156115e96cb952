#!/usr/bin/env bash
# scripts/docker-engine.sh start|stop
# `start` makes sure a Docker engine answers: if none does, it starts Debian's dockerd with no network
# set-up of its own (no iptables rules, no forwarding, no bridge: builds use the host network, containers
# run with --network none), and records that it did. `stop` stops only an engine that `start` started.
set -euo pipefail
CACHE=${BACKBEAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/backbeat}
STATE=$CACHE/dockerd
mkdir -p "$STATE"

case ${1:-} in
  start)
    docker info >/dev/null 2>&1 && exit 0
    command -v dockerd >/dev/null || { echo 'docker-engine: no dockerd (make deps installs docker.io from Debian)' >&2; exit 2; }
    setsid dockerd --iptables=false --ip-forward=false --bridge=none --pidfile "$STATE/dockerd.pid" \
      >"$STATE/dockerd.log" 2>&1 </dev/null &
    echo $! >"$STATE/started-by-backbeat"
    for _ in $(seq 120); do
      docker info >/dev/null 2>&1 && exit 0
      kill -0 "$(cat "$STATE/started-by-backbeat")" 2>/dev/null || break
      sleep 0.5
    done
    echo "docker-engine: dockerd did not answer; its log:" >&2
    tail -20 "$STATE/dockerd.log" >&2
    exit 1
    ;;
  stop)
    [ -f "$STATE/started-by-backbeat" ] || exit 0
    pid=$(cat "$STATE/started-by-backbeat")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
    # dockerd leaves its own network namespace mounted behind it.
    if grep -q " /run/docker/netns/default " /proc/self/mounts; then umount /run/docker/netns/default; fi
    rm -f "$STATE/started-by-backbeat"
    ;;
  *) echo 'usage: scripts/docker-engine.sh start|stop' >&2; exit 2 ;;
esac
