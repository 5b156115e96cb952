#!/usr/bin/env bash
# scripts/node-images.sh IMAGE VERSION [NODE_IMAGE]
# The images the test node runs, in one archive its containerd imports: the product's image (built by
# scripts/images.sh) and a pause image made from the cached kubenode pause binary. Written to
# $BACKBEAT_NODE_IMAGES with images.json (the image's name and ID, and the hash of the sources it was built
# from); rewritten only when the image changed.
# Stops the Docker engine afterwards if this script started it.
#   scripts/node-images.sh --sources      prints the hash of what the image is built from (Dockerfile and
#                                         the build context's files), which images.json records
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sources() {
  (cd "$here/.." && find Dockerfile package.json package-lock.json lib workers cli operator -type f \
    -not -name '*.test.ts' -not -path '*/node_modules/*' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
}
if [ "${1:-}" = --sources ]; then sources; exit 0; fi
image=$1 version=$2 node_image=${3:-}
eval "$(bash "$here/deps.sh" --env | grep -E '^BACKBEAT_(CACHE|KUBENODE|NODE_IMAGES)=')"
engine_running_before=0
docker info >/dev/null 2>&1 && engine_running_before=1
[ "$engine_running_before" = 1 ] || trap 'bash "$here/docker-engine.sh" stop' EXIT
bash "$here/images.sh" "$image" "$version" "$node_image" >/dev/null
pause=backbeat.local/pause:$(basename "$BACKBEAT_KUBENODE" | sed 's/^kubenode-//')
docker image inspect "$pause" >/dev/null 2>&1 \
  || tar -C "$BACKBEAT_KUBENODE" -c pause | docker import --change 'ENTRYPOINT ["/pause"]' - "$pause" >/dev/null
id=$(docker image inspect --format '{{.Id}}' "$image")
out=$BACKBEAT_NODE_IMAGES
mkdir -p "$out"
want=$(printf '{"image":"%s","imageId":"%s","pause":"%s","tar":"%s","sources":"%s"}' "$image" "$id" "$pause" "$out/images.tar" "$(sources)")
if [ "$(cat "$out/images.json" 2>/dev/null)" != "$want" ] || [ ! -f "$out/images.tar" ]; then
  docker save -o "$out/images.tar.tmp" "$image" "$pause"
  mv "$out/images.tar.tmp" "$out/images.tar"
  echo "$want" >"$out/images.json"
fi
echo "node images: $image ($id) and $pause in $out/images.tar"
