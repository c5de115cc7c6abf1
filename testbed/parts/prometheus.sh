#!/usr/bin/env bash
# Test-bed part "prometheus": the Debian Prometheus server on 127.0.0.1, its own config and TSDB
# in the part directory, scrape and evaluation interval 1 s, lifecycle API on (POST /-/reload).
# Tests add scrape targets by writing file_sd JSON files into $TESTBED_PROMETHEUS_SD_DIR
# (any *.json there; TESTBED_PROMETHEUS_SD_FILE is the default one), re-read every second.
# Usage: testbed/parts/prometheus.sh up|down
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../lib.sh
source "$here/lib.sh"
mkdir -p "$TESTBED_DIR/env.d"
TESTBED_DIR=$(cd "$TESTBED_DIR" && pwd)
P=$TESTBED_DIR/prometheus
PROMETHEUS=${TESTBED_PROMETHEUS_BIN:-/usr/bin/prometheus}

die() { echo "testbed: prometheus: $*" >&2; exit 1; }

up() {
  [ -x "$PROMETHEUS" ] || die "$PROMETHEUS missing (apt-get install prometheus)"
  if [ -f "$P/prometheus.pid" ] && pid_alive "$(cat "$P/prometheus.pid")"; then
    die "already running in $P (testbed/down prometheus first)"
  fi
  rm -rf "$P"; mkdir -p "$P/data" "$P/sd"
  echo '[]' >"$P/sd/targets.json"
  local port attempt pid end ok=0
  for attempt in 1 2 3; do
    port=$(free_port)
    cat >"$P/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$port"]
  - job_name: testbed
    file_sd_configs:
      - files: ["$P/sd/*.json"]
        refresh_interval: 1s
YAML
    start_daemon prometheus "$P/prometheus.log" "$P/prometheus.pid" "$PROMETHEUS" \
      --config.file="$P/prometheus.yml" --storage.tsdb.path="$P/data" \
      --storage.tsdb.retention.time=1d --web.listen-address="127.0.0.1:$port" \
      --web.enable-lifecycle --web.enable-admin-api --log.level=warn
    pid=$(cat "$P/prometheus.pid")
    end=$(( $(date +%s) + 30 ))
    while pid_alive "$pid" && [ "$(date +%s)" -lt "$end" ]; do
      if curl -fs -o /dev/null "http://127.0.0.1:$port/-/ready"; then ok=1; break; fi
      sleep 0.1
    done
    [ $ok = 1 ] && break
    stop_pidfile "$P/prometheus.pid" 10
    echo "testbed: prometheus on 127.0.0.1:$port failed (attempt $attempt):" >&2
    tail -n 5 "$P/prometheus.log" >&2
  done
  [ $ok = 1 ] || die "could not start"
  cat >"$TESTBED_DIR/env.d/prometheus.env" <<ENV
export TESTBED_PROMETHEUS_URL=http://127.0.0.1:$port
export TESTBED_PROMETHEUS_SD_DIR=$P/sd
export TESTBED_PROMETHEUS_SD_FILE=$P/sd/targets.json
ENV
  echo "testbed: prometheus on 127.0.0.1:$port"
}

down() {
  [ -d "$P" ] || return 0
  stop_pidfile "$P/prometheus.pid" 15
  umount_under "$P"
  rm -rf "$P"
  echo "testbed: prometheus down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
