#!/usr/bin/env bash
# Test-bed part "postgres": Debian PostgreSQL 15 in its own data directory, on 127.0.0.1 and a
# unix socket in the part directory, with a password-protected user and the database safe_updater.
# initdb and the server refuse to run as root, so they run as the `postgres` OS user (the Debian
# package creates it; override with TESTBED_POSTGRES_OS_USER).
# Usage: testbed/parts/postgres.sh up|down|restart
# restart: fast shutdown (SIGINT: open sessions are ended, transactions rolled back) by PID,
# then the same server again on the same port and data directory, so the env file stays valid.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../lib.sh
source "$here/lib.sh"
mkdir -p "$TESTBED_DIR/env.d"
TESTBED_DIR=$(cd "$TESTBED_DIR" && pwd)
P=$TESTBED_DIR/postgres
PGBIN=${TESTBED_POSTGRES_BIN:-/usr/lib/postgresql/15/bin}
OS_USER=${TESTBED_POSTGRES_OS_USER:-postgres}
DB_USER=testbed
DB_NAME=safe_updater

die() { echo "testbed: postgres: $*" >&2; exit 1; }

# launch PORT: the server on the existing data directory; 0 once it accepts connections.
launch() {
  local port=$1 pid end
  # Speed over durability: a test database is thrown away anyway.
  start_daemon postgres "$P/postgres.log" "$P/postgres.pid" \
    setpriv --reuid="$OS_USER" --regid="$OS_USER" --init-groups -- \
    "$PGBIN/postgres" -D "$P/data" -c listen_addresses=127.0.0.1 -c port="$port" \
    -c unix_socket_directories="$P/run" -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB
  pid=$(cat "$P/postgres.pid")
  end=$(( $(date +%s) + 30 ))
  while pid_alive "$pid" && [ "$(date +%s)" -lt "$end" ]; do
    if "$PGBIN/pg_isready" -q -h "$P/run" -p "$port"; then return 0; fi
    sleep 0.1
  done
  return 1
}
as_os_user() { setpriv --reuid="$OS_USER" --regid="$OS_USER" --init-groups -- "$@"; }

up() {
  [ -x "$PGBIN/postgres" ] || die "$PGBIN/postgres missing (apt-get install postgresql-15)"
  id "$OS_USER" >/dev/null 2>&1 || die "OS user $OS_USER missing (set TESTBED_POSTGRES_OS_USER)"
  if [ -f "$P/postgres.pid" ] && pid_alive "$(cat "$P/postgres.pid")"; then
    die "already running in $P (testbed/down postgres first)"
  fi
  rm -rf "$P"; mkdir -p "$P/run"
  as_os_user test -x "$P" || die "$OS_USER cannot reach $P: use a TESTBED_DIR whose parents are world-executable"
  local password; password=$(random_hex)
  umask 077
  printf '%s\n' "$password" >"$P/pwfile"
  chown -R "$OS_USER:" "$P"
  # Password (scram) over TCP; trust on the part's own socket, which only root and $OS_USER reach.
  as_os_user "$PGBIN/initdb" -D "$P/data" -U "$DB_USER" --pwfile="$P/pwfile" -E UTF8 \
    --locale=C.UTF-8 --auth-host=scram-sha-256 --auth-local=trust --no-sync >"$P/initdb.log" 2>&1 \
    || { cat "$P/initdb.log" >&2; die "initdb failed"; }
  rm -f "$P/pwfile"
  local port attempt ok=0
  for attempt in 1 2 3; do
    port=$(free_port)
    if launch "$port"; then ok=1; break; fi
    stop_postgres
    echo "testbed: postgres on 127.0.0.1:$port failed (attempt $attempt):" >&2
    tail -n 5 "$P/postgres.log" >&2
  done
  [ $ok = 1 ] || die "could not start"
  "$PGBIN/createdb" -h "$P/run" -p "$port" -U "$DB_USER" "$DB_NAME"
  cat >"$TESTBED_DIR/env.d/postgres.env" <<ENV
export TESTBED_POSTGRES_URL=postgresql+psycopg://$DB_USER:$password@127.0.0.1:$port/$DB_NAME
export TESTBED_POSTGRES_ADMIN_URL=postgresql+psycopg://$DB_USER:$password@127.0.0.1:$port/postgres
export TESTBED_POSTGRES_SOCKET_DIR=$P/run
export TESTBED_POSTGRES_PORT=$port
ENV
  echo "testbed: postgres on 127.0.0.1:$port, database $DB_NAME"
}

# Immediate shutdown (SIGQUIT): open client connections do not hold it up and no checkpoint is
# written (the data is deleted next anyway); TERM/KILL after that.
stop_postgres() {
  local f=$P/postgres.pid pid end
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if pid_alive "$pid"; then
    kill -QUIT "$pid" 2>/dev/null || true
    end=$(( $(date +%s) + 10 ))
    while pid_alive "$pid" && [ "$(date +%s)" -lt "$end" ]; do sleep 0.05; done
  fi
  stop_pidfile "$f" 5
}

# Same port, data directory and password: $TESTBED_DIR/env stays valid for every client.
restart() {
  [ -z "${1:-}" ] || [ "$1" = postgres ] || die "postgres has one component: postgres"
  local port
  port=$(sed -n 's/^export TESTBED_POSTGRES_PORT=//p' "$TESTBED_DIR/env.d/postgres.env")
  [ -n "$port" ] || die "no port in $TESTBED_DIR/env.d/postgres.env (testbed/up postgres)"
  local f=$P/postgres.pid pid end
  if [ -f "$f" ] && pid_alive "$(cat "$f")"; then
    pid=$(cat "$f")
    kill -INT "$pid" 2>/dev/null || true   # fast shutdown, with a checkpoint
    end=$(( $(date +%s) + 30 ))
    while pid_alive "$pid" && [ "$(date +%s)" -lt "$end" ]; do sleep 0.05; done
  fi
  stop_pidfile "$f" 5
  # The port was ours a moment ago; another process may take it meanwhile, which is an error
  # here (clients have the port in their URLs), not a reason to pick another one.
  launch "$port" || { tail -n 5 "$P/postgres.log" >&2; die "could not start again on 127.0.0.1:$port"; }
  echo "testbed: postgres restarted (pid $(cat "$f")) on 127.0.0.1:$port"
}

down() {
  [ -d "$P" ] || return 0
  stop_postgres
  umount_under "$P"
  rm -rf "$P"
  echo "testbed: postgres down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  restart) restart "${2:-}" ;;
  *) echo "usage: $0 up|down|restart" >&2; exit 2 ;;
esac
