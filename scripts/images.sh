#!/usr/bin/env bash
# scripts/images.sh IMAGE VERSION [NODE_IMAGE]
# Builds the Dockerfile into IMAGE. Without NODE_IMAGE, its base is assembled on this machine (no registry
# needed): Debian minbase with Node and npm, imported once as backbeat-base:<recipe>. npm ci then runs on
# that base plus this machine's CA bundle (whatever it trusts to reach the registry), which stays out of
# the image itself.
set -euo pipefail
image=$1 version=$2 node_image=${3:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$here/docker-engine.sh" start
build_image=$node_image
if [ -z "$node_image" ]; then
  bash "$here/deps.sh" base
  eval "$(bash "$here/deps.sh" --env | grep '^BACKBEAT_BASE_')"
  node_image=$BACKBEAT_BASE_IMAGE build_image=$BACKBEAT_BASE_IMAGE-build
  docker image inspect "$node_image" >/dev/null 2>&1 \
    || docker import --change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'CMD ["node"]' \
         "$BACKBEAT_BASE_ROOTFS" "$node_image" >/dev/null
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/build-ca.crt"
  printf 'FROM %s\nCOPY build-ca.crt /etc/ssl/certs/build-ca.crt\nENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/build-ca.crt\n' "$node_image" \
    | DOCKER_BUILDKIT=0 docker build -q -t "$build_image" -f - "$ctx" >/dev/null
fi
# The classic builder with the host's network: the engine here has no bridge of its own, and npm ci
# needs the registry.
DOCKER_BUILDKIT=0 docker build --network host -t "$image" --build-arg NODE_IMAGE="$node_image" --build-arg BUILD_IMAGE="$build_image" \
  --build-arg VERSION="$version" --build-arg REVISION="$(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  "$here/.."
# The build this one replaced is left untagged: removed, and only images of this project's label are.
docker image prune --force --filter label=org.opencontainers.image.title=backbeat >/dev/null
docker image inspect --format '{{.Id}}' "$image"
