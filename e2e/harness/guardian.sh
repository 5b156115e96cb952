#!/usr/bin/env bash
# guardian.sh OWNER_PID RUN_DIR
# Started (in its own session) by the test harness. When OWNER_PID is gone, however it ended, SIGKILL
# included, it stops every process group recorded in RUN_DIR/pids and removes RUN_DIR, so no component
# outlives the run that started it.
set -u
owner=$1 dir=$2
while kill -0 "$owner" 2>/dev/null; do sleep 0.5; done
groups() { cat "$dir"/pids/*.pid 2>/dev/null; }
for g in $(groups); do kill -TERM -- "-$g" 2>/dev/null; done
for _ in $(seq 20); do
  alive=0
  for g in $(groups); do kill -0 -- "-$g" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.25
done
for g in $(groups); do kill -KILL -- "-$g" 2>/dev/null; done
rm -rf "$dir"
