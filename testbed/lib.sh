# Shared helpers for testbed/up, testbed/down and the parts. Sourced, not run.
# shellcheck shell=bash
TESTBED_PARTS=(docker registry postgres prometheus k8s)
_testbed_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export TESTBED_DIR=${TESTBED_DIR:-$_testbed_root/.testbed}
export TESTBED_CACHE=${TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/safe-updater-testbed}

# A free TCP port on 127.0.0.1 (the kernel picks it; a part binds it right after).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_for SECONDS CMD...: run CMD every 0.1 s until it succeeds or the time is up.
wait_for() {
  local limit=$1; shift
  local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$end" ]; then return 1; fi
    sleep 0.1
  done
}

# A process that has exited but is not reaped yet (State: Z) counts as gone.
pid_alive() {
  local pid=$1
  [ -r "/proc/$pid/status" ] || return 1
  ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status"
}

# stop_pidfile FILE [SECONDS]: TERM the PID in FILE, wait, then KILL; remove FILE.
stop_pidfile() {
  local file=$1 limit=${2:-10}
  [ -f "$file" ] || return 0
  local pid; pid=$(cat "$file")
  if [ -n "$pid" ] && pid_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    local end=$(( $(date +%s) + limit ))
    while pid_alive "$pid" && [ "$(date +%s)" -lt "$end" ]; do sleep 0.1; done
    if pid_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
  fi
  rm -f "$file"
}

# start_daemon NAME LOGFILE PIDFILE CMD...: start CMD detached in its own session, record its PID.
start_daemon() {
  local name=$1 log=$2 pidfile=$3; shift 3
  setsid "$@" >"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  echo "testbed: started $name (pid $(cat "$pidfile"))"
}

# Concatenate each part's env lines into $TESTBED_DIR/env.
write_env() {
  mkdir -p "$TESTBED_DIR/env.d"
  {
    echo "export TESTBED_DIR=$TESTBED_DIR"
    for part in "${TESTBED_PARTS[@]}"; do
      if [ -f "$TESTBED_DIR/env.d/$part.env" ]; then cat "$TESTBED_DIR/env.d/$part.env"; fi
    done
  } >"$TESTBED_DIR/env"
}

# pids_with_arg TEXT COMM...: PIDs of live processes named COMM (any of them) whose command line
# contains TEXT, e.g. a part's own directory. For clean-up by PID after a daemon's crash.
pids_with_arg() {
  local text=$1; shift
  local dir pid comm want
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    [ "$pid" != $$ ] || continue
    read -r comm 2>/dev/null <"$dir/comm" || continue
    for want in "$@"; do
      if [ "$comm" = "$want" ] && tr '\0' ' ' 2>/dev/null <"$dir/cmdline" | grep -qF -- "$text" \
          && pid_alive "$pid"; then
        echo "$pid"
      fi
    done
  done
}

# umount_under DIR: lazily unmount everything mounted at or below DIR (deepest first).
umount_under() {
  local dir=$1 m
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd -P)
  awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r | \
    while read -r m; do
      umount -l "$m" 2>/dev/null && echo "testbed: unmounted $m"
    done
  return 0
}

# random_hex: 32 random hex characters (passwords and secrets of one test bed).
random_hex() {
  python3 -c 'import secrets; print(secrets.token_hex(16))'
}
