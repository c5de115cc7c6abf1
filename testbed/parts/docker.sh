#!/usr/bin/env bash
# Test-bed part "docker": a private Debian dockerd on its own unix socket, data-root and exec-root.
# Loopback only: --bridge=none and no iptables/NAT, so containers can only use network_mode=host.
# CAUTION: with --bridge=none dockerd deletes a link named docker0 in its network namespace, i.e.
# the default bridge of a system dockerd on the same host (docs/test-bed.md). Do not run a system
# dockerd next to the test bed (block its service start with policy-rc.d / systemctl disable).
# Usage: testbed/parts/docker.sh up|down|restart   Env: TESTBED_DOCKER_STORAGE_DRIVER (default overlay2)
# restart: stop dockerd by PID and start it again with the same socket, data-root and flags, as a
# host's `systemctl restart docker` does. live-restore is off (the Debian default), so dockerd
# stops every container on the way down; on the way up only those with a restart policy
# (always, unless-stopped, on-failure after a non-zero exit) are started again.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../lib.sh
source "$here/lib.sh"
mkdir -p "$TESTBED_DIR"
TESTBED_DIR=$(cd "$TESTBED_DIR" && pwd)
D=$TESTBED_DIR/docker
SOCK=$D/docker.sock
# Debian's CLI matches the 20.10 daemon; a newer CLI first in PATH works too (legacy builder).
DOCKER=/usr/bin/docker; [ -x "$DOCKER" ] || DOCKER=docker

docker_api_ok() { DOCKER_HOST=unix://$SOCK DOCKER_CONFIG=$D/config "$DOCKER" version --format '{{.Server.Version}}'; }

# launch DRIVER: start dockerd on the existing data-root; 0 when its API answers.
launch() {
  local driver=$1
  mkdir -p "$D/data" "$D/exec" "$D/config"
  rm -f "$SOCK" "$D/exec/dockerd.pid"
  # shutdown-timeout: seconds dockerd gives running containers on its own SIGTERM.
  start_daemon dockerd "$D/dockerd.log" "$D/dockerd.pid" dockerd \
    --host "unix://$SOCK" --data-root "$D/data" --exec-root "$D/exec" \
    --pidfile "$D/exec/dockerd.pid" --config-file "$D/daemon.json" \
    --storage-driver "$driver" \
    --bridge=none --iptables=false --ip-masq=false --ip-forward=false --ip6tables=false \
    --userland-proxy=false --shutdown-timeout 5 --log-level warn
  local pid; pid=$(cat "$D/dockerd.pid")
  local end=$(( $(date +%s) + 60 ))
  until docker_api_ok >/dev/null 2>&1; do
    if ! pid_alive "$pid" || [ "$(date +%s)" -ge "$end" ]; then
      echo "testbed: dockerd ($driver) did not come up; last log lines:" >&2
      tail -n 15 "$D/dockerd.log" >&2
      stop_pidfile "$D/dockerd.pid" 10
      return 1
    fi
    sleep 0.1
  done
}

# start DRIVER: a fresh data-root, dockerd with that storage driver; 0 when it stores a layer.
start() {
  local driver=$1
  rm -rf "$D/data" "$D/exec"
  launch "$driver" || return 1
  # overlay2 can "start" and only fail on the first layer; prove it with a one-file import.
  if ! tar -C "$D" -c daemon.json | DOCKER_HOST=unix://$SOCK DOCKER_CONFIG=$D/config "$DOCKER" import - testbed-probe:latest >/dev/null 2>&1; then
    echo "testbed: dockerd with $driver cannot store a layer" >&2
    stop_pidfile "$D/dockerd.pid" 15
    return 1
  fi
  DOCKER_HOST=unix://$SOCK "$DOCKER" rmi testbed-probe:latest >/dev/null 2>&1 || true
  echo "$driver" >"$D/storage-driver"
}

up() {
  if [ -f "$D/dockerd.pid" ] && pid_alive "$(cat "$D/dockerd.pid")"; then
    echo "testbed: dockerd already running (pid $(cat "$D/dockerd.pid"))"
  else
    command -v dockerd >/dev/null || { echo "testbed: dockerd missing (apt-get install docker.io)" >&2; exit 1; }
    mkdir -p "$D"
    echo '{}' >"$D/daemon.json"        # so /etc/docker/daemon.json is never read
    local driver=${TESTBED_DOCKER_STORAGE_DRIVER:-overlay2}
    if ! start "$driver"; then
      if [ "$driver" = vfs ]; then exit 1; fi
      echo "testbed: falling back to the vfs storage driver (images are then made with docker import)" >&2
      start_cleanup
      start vfs || exit 1
    fi
  fi
  cat >"$TESTBED_DIR/env.d/docker.env" <<ENV
export DOCKER_HOST=unix://$SOCK
export DOCKER_CONFIG=$D/config
export TESTBED_DOCKER_STORAGE_DRIVER=$(cat "$D/storage-driver")
ENV
  echo "testbed: dockerd on unix://$SOCK ($(cat "$D/storage-driver"))"
}

# Kill the processes dockerd left behind (managed containerd, shims), found by our exec-root in
# their command line, by PID.
kill_leftovers() {
  local pid
  for pid in $(pids_with_arg "$D/" containerd containerd-shim containerd-shim-runc-v2 runc docker-proxy dockerd); do
    kill -KILL "$pid" 2>/dev/null || true
  done
}

start_cleanup() {
  kill_leftovers
  umount_under "$D"
}

down() {
  [ -d "$D" ] || return 0
  if [ -f "$D/dockerd.pid" ] && pid_alive "$(cat "$D/dockerd.pid")" && [ -S "$SOCK" ]; then
    # Remove containers first: quick (start.sh traps SIGTERM), and no restart policy survives.
    local ids
    ids=$(DOCKER_HOST=unix://$SOCK timeout 20 "$DOCKER" ps -aq 2>/dev/null || true)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086
      DOCKER_HOST=unix://$SOCK timeout 30 "$DOCKER" rm -f $ids >/dev/null 2>&1 || true
    fi
  fi
  stop_pidfile "$D/dockerd.pid" 30
  # dockerd's managed containerd stops with it; anything left is killed by PID.
  local end=$(( $(date +%s) + 5 ))
  while [ -n "$(pids_with_arg "$D/" containerd containerd-shim-runc-v2)" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 0.1; done
  kill_leftovers
  # dockerd leaves exec/netns/default (an nsfs bind mount) mounted; overlay mounts on a crash.
  umount_under "$D"
  rm -rf "$D"
  echo "testbed: docker down"
}

# Same socket, data-root, exec-root and flags; containers and images survive on disk.
restart() {
  [ -f "$D/storage-driver" ] || { echo "testbed: docker is not up in $D (testbed/up docker)" >&2; exit 1; }
  [ -z "${1:-}" ] || [ "$1" = dockerd ] || { echo "testbed: docker has one component: dockerd" >&2; exit 2; }
  # A dockerd that died already is simply started again.
  # dockerd stops its containers within --shutdown-timeout (5 s), then itself and containerd.
  stop_pidfile "$D/dockerd.pid" 30
  local end=$(( $(date +%s) + 10 ))
  while [ -n "$(pids_with_arg "$D/" containerd containerd-shim-runc-v2)" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 0.1; done
  kill_leftovers
  # The nsfs bind mount of the old daemon must go, or the new one fails to set up netns.
  umount_under "$D/exec"
  launch "$(cat "$D/storage-driver")" || exit 1
  echo "testbed: dockerd restarted (pid $(cat "$D/dockerd.pid")) on unix://$SOCK"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  restart) restart "${2:-}" ;;
  *) echo "usage: $0 up|down|restart" >&2; exit 2 ;;
esac
