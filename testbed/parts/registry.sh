#!/usr/bin/env bash
# Test-bed part "registry": two Debian docker-registry (distribution 2.8) instances on 127.0.0.1,
# one anonymous and one with htpasswd basic auth (random password per test bed), both with
# deletes enabled; then the demo images (testbed/images/demo) are built FROM scratch with
# busybox-static and pushed to both as demo/web and demo/api. Needs the docker part (started here
# when it is not up yet).
# Usage: testbed/parts/registry.sh up|down
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../lib.sh
source "$here/lib.sh"
mkdir -p "$TESTBED_DIR/env.d"
TESTBED_DIR=$(cd "$TESTBED_DIR" && pwd)
R=$TESTBED_DIR/registry
DOCKER=/usr/bin/docker; [ -x "$DOCKER" ] || DOCKER=docker
REGISTRY_USER=testbed
BUSYBOX=${BUSYBOX:-/bin/busybox}

# repo:tag:behavior; `latest` is tagged onto 1.0.0 after the build.
IMAGES=(
  web:1.0.0:ok web:1.0.1:ok web:1.0.2:unhealthy web:1.1.0:ok web:1.2.0:crash web:2.0.0:ok
  api:1.0.0:ok api:1.0.1:ok
)

die() { echo "testbed: registry: $*" >&2; exit 1; }

# write_config DIR PORT: a registry config listening on 127.0.0.1:PORT only.
write_config() {
  local dir=$1 port=$2
  cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  secret: $(random_hex)
  headers:
    X-Content-Type-Options: [nosniff]
YAML
  if [ -f "$dir/htpasswd" ]; then
    cat >>"$dir/config.yml" <<YAML
auth:
  htpasswd:
    realm: testbed-registry
    path: $dir/htpasswd
YAML
  fi
}

# start_registry DIR EXPECTED_CODE: start on a free port (retrying if another test bed took it
# first); prints the port.
start_registry() {
  local dir=$1 code=$2 port pid attempt end
  mkdir -p "$dir/data"
  for attempt in 1 2 3; do
    port=$(free_port)
    write_config "$dir" "$port"
    start_daemon "registry $(basename "$dir")" "$dir/registry.log" "$dir/registry.pid" \
      docker-registry serve "$dir/config.yml" >&2
    pid=$(cat "$dir/registry.pid")
    end=$(( $(date +%s) + 20 ))
    while pid_alive "$pid" && [ "$(date +%s)" -lt "$end" ]; do
      if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/")" = "$code" ]; then
        echo "$port"; return 0
      fi
      sleep 0.05
    done
    stop_pidfile "$dir/registry.pid" 5
    echo "testbed: registry on 127.0.0.1:$port failed (attempt $attempt):" >&2
    tail -n 5 "$dir/registry.log" >&2
  done
  die "could not start $(basename "$dir")"
}

# The rootfs of the demo images: busybox-static, its applet links, start.sh, /www.
make_context() {
  local ctx=$R/ctx app
  [ -x "$BUSYBOX" ] || die "$BUSYBOX missing (apt-get install busybox-static)"
  if ldd "$BUSYBOX" >/dev/null 2>&1; then die "$BUSYBOX is not static (apt-get install busybox-static)"; fi
  rm -rf "$ctx"; mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/www" "$ctx/rootfs/tmp"
  cp "$BUSYBOX" "$ctx/rootfs/bin/busybox"
  for app in sh httpd wget sleep kill cat echo ls ps rm mkdir env true false; do
    ln -s busybox "$ctx/rootfs/bin/$app"
  done
  cp "$here/images/demo/start.sh" "$ctx/rootfs/start.sh"
  chmod 755 "$ctx/rootfs/start.sh"
  cp "$here/images/demo/Dockerfile" "$ctx/Dockerfile"
}

# build NAME VERSION BEHAVIOR TAG: the Dockerfile with overlay2; `docker import` with vfs, where
# the legacy builder needs about a second per metadata step. Both give the same config (import
# takes no STOPSIGNAL; SIGTERM is the default anyway).
build() {
  local name=$1 version=$2 behavior=$3 tag=$4
  if [ "$(cat "$TESTBED_DIR/docker/storage-driver" 2>/dev/null)" = vfs ]; then
    tar -C "$R/ctx/rootfs" -c . | "$DOCKER" import \
      -c 'ENTRYPOINT ["/start.sh"]' \
      -c "ENV APP_NAME=$name APP_VERSION=$version DEFAULT_BEHAVIOR=$behavior PORT=8080 PATH=/bin" \
      -c "LABEL org.opencontainers.image.title=$name org.opencontainers.image.version=$version demo.behavior=$behavior" \
      -c 'HEALTHCHECK --interval=1s --timeout=2s --start-period=3s --retries=2 CMD wget -q -O /dev/null "http://127.0.0.1:${PORT}/healthz" || exit 1' \
      - "$tag" >/dev/null
  else
    DOCKER_BUILDKIT=0 "$DOCKER" build -q --build-arg "NAME=$name" --build-arg "VERSION=$version" \
      --build-arg "BEHAVIOR=$behavior" -t "$tag" "$R/ctx" >/dev/null
  fi
}

up() {
  for b in docker-registry htpasswd curl python3; do
    command -v "$b" >/dev/null || die "$b missing (scripts/install-system-deps)"
  done
  if [ -f "$R/anon/registry.pid" ] && pid_alive "$(cat "$R/anon/registry.pid")"; then
    die "already running in $R (testbed/down registry first)"
  fi
  # The docker part builds and pushes; start it if it is not up.
  if ! { [ -f "$TESTBED_DIR/env.d/docker.env" ] && [ -f "$TESTBED_DIR/docker/dockerd.pid" ] \
      && pid_alive "$(cat "$TESTBED_DIR/docker/dockerd.pid")"; }; then
    echo "testbed: registry needs the docker part; starting it"
    bash "$here/parts/docker.sh" up || die "the docker part did not start"
  fi
  # shellcheck disable=SC1091
  source "$TESTBED_DIR/env.d/docker.env"
  mkdir -p "$R/anon" "$R/auth"

  local port auth_port password t
  port=$(start_registry "$R/anon" 200)
  password=$(random_hex)
  # -i: the password comes from stdin, never argv. -B: bcrypt, the only hash distribution takes.
  htpasswd -B -i -c "$R/auth/htpasswd" "$REGISTRY_USER" <<<"$password" 2>/dev/null
  auth_port=$(start_registry "$R/auth" 401)
  echo "testbed: registries on 127.0.0.1:$port (anonymous) and 127.0.0.1:$auth_port (basic auth)"
  printf '%s' "$password" | "$DOCKER" login -u "$REGISTRY_USER" --password-stdin \
    "localhost:$auth_port" >/dev/null 2>&1 || die "docker login to localhost:$auth_port failed"

  t=$(date +%s%N)
  make_context
  local spec repo version behavior local_tags=() reg bpids=() j
  # The first build fills the builder's cache with the common steps; the rest run in parallel.
  for spec in "${IMAGES[@]}"; do
    IFS=: read -r repo version behavior <<<"$spec"
    build "demo-$repo" "$version" "$behavior" "testbed-demo/$repo:$version" \
      2>"$R/build.err.${#bpids[@]}" &
    bpids+=($!)
    local_tags+=("testbed-demo/$repo:$version")
    if [ ${#bpids[@]} = 1 ]; then
      wait "${bpids[0]}" || die "build of ${local_tags[0]} failed: $(cat "$R/build.err.0")"
    fi
  done
  for j in "${!bpids[@]}"; do
    wait "${bpids[$j]}" || die "build of ${local_tags[$j]} failed: $(cat "$R/build.err.$j")"
    rm -f "$R/build.err.$j"
  done
  "$DOCKER" tag testbed-demo/web:1.0.0 testbed-demo/web:latest
  local_tags+=(testbed-demo/web:latest)
  echo "testbed: built ${#local_tags[@]} demo images in $(( ($(date +%s%N) - t) / 1000000 )) ms"

  t=$(date +%s%N)
  local pushes=() pids=() p
  for reg in "localhost:$port" "localhost:$auth_port"; do
    for p in "${local_tags[@]}"; do
      "$DOCKER" tag "$p" "$reg/demo/${p#testbed-demo/}"
      pushes+=("$reg/demo/${p#testbed-demo/}")
    done
  done
  # Push in parallel: all tags share one layer, so each push is a config blob and a manifest.
  for p in "${pushes[@]}"; do
    "$DOCKER" push -q "$p" >/dev/null 2>"$R/push.err.$$.${#pids[@]}" &
    pids+=($!)
  done
  local failed=0 i
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "testbed: push of ${pushes[$i]} failed: $(cat "$R/push.err.$$.$i")" >&2; failed=1
    fi
    rm -f "$R/push.err.$$.$i"
  done
  [ $failed = 0 ] || die "pushes failed"
  # The engine starts with no images: tests pull what they run, as a real update does.
  "$DOCKER" rmi "${local_tags[@]}" "${pushes[@]}" >/dev/null
  echo "testbed: pushed ${#pushes[@]} tags in $(( ($(date +%s%N) - t) / 1000000 )) ms"

  umask 077
  cat >"$TESTBED_DIR/env.d/registry.env" <<ENV
export TESTBED_REGISTRY=localhost:$port
export TESTBED_REGISTRY_URL=http://127.0.0.1:$port
export TESTBED_IMAGE_REPO=localhost:$port/demo/web
export TESTBED_API_IMAGE_REPO=localhost:$port/demo/api
export TESTBED_REGISTRY_AUTH=localhost:$auth_port
export TESTBED_REGISTRY_AUTH_URL=http://127.0.0.1:$auth_port
export TESTBED_REGISTRY_USER=$REGISTRY_USER
export TESTBED_REGISTRY_PASSWORD=$password
ENV
}

down() {
  [ -d "$R" ] || return 0
  stop_pidfile "$R/anon/registry.pid" 10
  stop_pidfile "$R/auth/registry.pid" 10
  umount_under "$R"
  rm -rf "$R"
  echo "testbed: registry down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
