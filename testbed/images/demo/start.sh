#!/bin/sh
# Demo web app of the test bed (busybox httpd). Serves /healthz and /version on $BIND:$PORT.
# Env: PORT (default 8080), BIND (default 127.0.0.1),
#      BEHAVIOR = ok (/healthz 200) | unhealthy (/healthz 404) | crash (exits 1 after CRASH_AFTER s)
PORT="${PORT:-8080}"
BIND="${BIND:-127.0.0.1}"
BEHAVIOR="${BEHAVIOR:-${DEFAULT_BEHAVIOR:-ok}}"
echo "$APP_NAME $APP_VERSION behavior=$BEHAVIOR listening on $BIND:$PORT"
case "$BEHAVIOR" in
  crash)
    sleep "${CRASH_AFTER:-1}"
    echo "$APP_NAME $APP_VERSION: simulated crash on start" >&2
    exit 1 ;;
  unhealthy) rm -f /www/healthz ;;
  *) echo ok > /www/healthz ;;
esac
echo "$APP_VERSION" > /www/version
httpd -f -p "$BIND:$PORT" -h /www &
child=$!
# PID 1 ignores SIGTERM without a handler: forward it so `docker stop` takes milliseconds.
trap 'kill -TERM $child 2>/dev/null; wait $child; exit 0' TERM INT
wait $child
