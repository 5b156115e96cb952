#!/usr/bin/env bash
# The operator e2e suite (e2e/operator/operator.test.ts) on a real cluster: a kind cluster with the
# backbeat image loaded, a single-node Kafka and two MinIO sites (e2e/kind/*.yaml) in namespace
# backbeat-e2e. Needs Docker, kind, kubectl, helm and curl on the host (and what `make install` needs).
#
#   make e2e-kind                     or  bash scripts/e2e-kind.sh
#
# Environment:
#   KIND_CLUSTER=name       the cluster (default backbeat-e2e); reused when it exists already
#   KIND_NODE_IMAGE=image   the kind node image when the cluster is created (default: kind's own)
#   IMAGE=repo:tag          the backbeat image to build and load (default backbeat:<package.json version>)
#   KEEP_CLUSTER=1          keep the cluster at the end (it is deleted otherwise, even a reused one)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLUSTER=${KIND_CLUSTER:-backbeat-e2e}
NS=backbeat-e2e
VERSION=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' package.json)
IMAGE=${IMAGE:-backbeat:$VERSION}
SPEC_FILE=e2e/operator/operator.test.ts
ROLLOUT_TIMEOUT=300s

log() { printf '\n[e2e-kind %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[e2e-kind] error: %s\n' "$*" >&2; exit 1; }

# --- 0. the tools, up front ------------------------------------------------------------------------
missing=
for tool in docker kind kubectl helm curl make; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    printf "[e2e-kind] error: '%s' is required and is not on PATH\n" "$tool" >&2
    missing="$missing $tool"
  fi
done
[ -z "$missing" ] || die "install the missing tool(s):$missing (Docker, kind, kubectl, helm, curl, make), then run again"
docker info >/dev/null 2>&1 || die "'docker' is installed but no Docker engine answers (is the daemon running, may this user use it?)"
[ -n "$VERSION" ] || die "could not read the version from package.json"
case $IMAGE in
  *:latest | *@*) die "IMAGE=$IMAGE: give a tag other than latest (kind-loaded images must not be pulled)" ;;
  *:*) ;;
  *) die "IMAGE=$IMAGE: give it as repository:tag" ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/backbeat-e2e-kind.XXXXXX")
KCFG=$WORK/kubeconfig
export KUBECONFIG=$KCFG
CLUSTER_TOUCHED=
PF_PIDS=()

diagnostics() {
  log "diagnostics: what ran in namespace $NS"
  kubectl get nodes -o wide || true
  kubectl -n "$NS" get all -o wide || true
  kubectl -n "$NS" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 40 || true
  local pod
  for pod in $(kubectl -n "$NS" get pods -o name 2>/dev/null); do
    echo "--- logs of $pod (last 60 lines per container) ---" >&2
    kubectl -n "$NS" logs "$pod" --all-containers --prefix --tail=60 >&2 || true
  done
  for f in "$WORK"/pf-*.log; do
    [ -f "$f" ] || continue
    echo "--- $(basename "$f") ---" >&2
    tail -n 20 "$f" >&2 || true
  done
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  local pid
  for pid in ${PF_PIDS[@]+"${PF_PIDS[@]}"}; do kill "$pid" 2>/dev/null; done
  for pid in ${PF_PIDS[@]+"${PF_PIDS[@]}"}; do wait "$pid" 2>/dev/null; done
  if [ -n "$CLUSTER_TOUCHED" ]; then
    [ "$rc" -eq 0 ] || diagnostics
    if [ "${KEEP_CLUSTER:-}" = 1 ]; then
      log "KEEP_CLUSTER=1: keeping kind cluster '$CLUSTER' (kubeconfig: kind get kubeconfig --name $CLUSTER; delete: kind delete cluster --name $CLUSTER)"
    else
      log "deleting kind cluster '$CLUSTER' (KEEP_CLUSTER=1 keeps it)"
      kind delete cluster --name "$CLUSTER" --kubeconfig "$KCFG"
    fi
  fi
  rm -rf "$WORK"
  if [ "$rc" -eq 0 ]; then log "passed"; else log "FAILED (exit status $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. what runs on the host: npm dependencies, then the image (before any cluster work) ----------
log "installing the npm dependencies (make install)"
make install

log "building image $IMAGE (make images)"
make images IMAGE="$IMAGE"

# --- 2. the cluster --------------------------------------------------------------------------------
CLUSTER_TOUCHED=1
if kind get clusters 2>/dev/null | grep -qxF "$CLUSTER"; then
  log "reusing kind cluster '$CLUSTER'"
else
  log "creating kind cluster '$CLUSTER'"
  create=(kind create cluster --name "$CLUSTER" --kubeconfig "$KCFG" --wait 180s)
  [ -z "${KIND_NODE_IMAGE:-}" ] || create+=(--image "$KIND_NODE_IMAGE")
  "${create[@]}"
fi
kind get kubeconfig --name "$CLUSTER" >"$KCFG"
kubectl wait --for=condition=Ready nodes --all --timeout=180s

log "loading image $IMAGE into the cluster"
kind load docker-image "$IMAGE" --name "$CLUSTER"

# --- 3. Kafka, then the MinIO sites (site-a connects to Kafka as it starts) ------------------------
log "deploying Kafka (e2e/kind/kafka.yaml)"
kubectl apply -f e2e/kind/kafka.yaml
kubectl -n "$NS" rollout status deployment/kafka --timeout="$ROLLOUT_TIMEOUT"

log "deploying MinIO site-a and site-b (e2e/kind/minio.yaml)"
kubectl apply -f e2e/kind/minio.yaml
for site in site-a site-b; do
  kubectl -n "$NS" rollout status "deployment/$site" --timeout="$ROLLOUT_TIMEOUT"
done

# --- 4. the sites on the host, through port-forwards -----------------------------------------------
# A loopback port nothing listens on (bash's /dev/tcp connect fails).
free_port() {
  local port i
  for i in $(seq 1 200); do
    port=$((20000 + RANDOM % 30000))
    [ "$port" != "${1:-}" ] || continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

# forward SERVICE PORT LOG: keeps 127.0.0.1:PORT forwarded to SERVICE:9000 until it is sent TERM
# (kubectl port-forward exits after some connection errors; it is started again on the same port).
forward() {
  local svc=$1 port=$2 out=$3
  pf_child=
  trap 'if [ -n "$pf_child" ]; then kill "$pf_child" 2>/dev/null || true; fi; exit 0' TERM
  while :; do
    kubectl -n "$NS" port-forward --address 127.0.0.1 "service/$svc" "$port:9000" >>"$out" 2>&1 &
    pf_child=$!
    wait "$pf_child" || true
    pf_child=
    echo "[$(date +%H:%M:%S)] port-forward to $svc ended; starting it again" >>"$out"
    sleep 1
  done
}

wait_ready() {
  local url=$1 i
  for i in $(seq 1 60); do
    curl -fsS -o /dev/null --max-time 2 "$url/minio/health/ready" 2>/dev/null && return 0
    sleep 1
  done
  die "no answer from $url/minio/health/ready within 60 s (port-forward logs follow)"
}

PORT_A=$(free_port) || die "found no free local port"
PORT_B=$(free_port "$PORT_A") || die "found no free local port"
log "port-forwarding site-a to 127.0.0.1:$PORT_A and site-b to 127.0.0.1:$PORT_B"
forward site-a "$PORT_A" "$WORK/pf-site-a.log" &
PF_PIDS+=($!)
forward site-b "$PORT_B" "$WORK/pf-site-b.log" &
PF_PIDS+=($!)
wait_ready "http://127.0.0.1:$PORT_A"
wait_ready "http://127.0.0.1:$PORT_B"

# --- 5. the suite ----------------------------------------------------------------------------------
# The suite's own kubectl and helm (e2e/harness/binaries.ts) are the host's, unless set otherwise.
export BACKBEAT_KUBECTL=${BACKBEAT_KUBECTL:-$(command -v kubectl)}
export BACKBEAT_HELM=${BACKBEAT_HELM:-$(command -v helm)}

log "running $SPEC_FILE against kind cluster '$CLUSTER'"
BACKBEAT_E2E_CLUSTER=external \
KUBECONFIG="$KCFG" \
BACKBEAT_E2E_NAMESPACE="$NS" \
BACKBEAT_E2E_IMAGE="$IMAGE" \
BACKBEAT_E2E_KAFKA_BROKERS="kafka.$NS.svc.cluster.local:9092" \
BACKBEAT_E2E_SITE_A_URL="http://127.0.0.1:$PORT_A" \
BACKBEAT_E2E_SITE_A_ENDPOINT="http://site-a.$NS.svc.cluster.local:9000" \
BACKBEAT_E2E_SITE_B_URL="http://127.0.0.1:$PORT_B" \
BACKBEAT_E2E_SITE_B_ENDPOINT="http://site-b.$NS.svc.cluster.local:9000" \
  make test-only SPEC="$SPEC_FILE"
