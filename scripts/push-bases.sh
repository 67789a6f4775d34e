#!/usr/bin/env bash
# Push the local Python base images (maci/python:bookworm-<debian arch>, made by setup-stack.sh)
# to a registry, so engines that pull their bases — a Dagger engine, a remote Docker runner —
# can use them: `base_image = "REGISTRY/maci/python:bookworm-{debian_arch}"`.
#
#   scripts/push-bases.sh 127.0.0.1:5000            # every local maci/python:bookworm-* image
#   MACI_BASE_ARCHES="amd64 arm64 armhf" scripts/push-bases.sh registry.example.com/team
#
# Copies with skopeo from the Docker daemon's store, keeping each image's platform; plain HTTP
# only for loopback registries. Idempotent (an unchanged image is not uploaded again).
set -euo pipefail

DEST=${1:?usage: push-bases.sh REGISTRY[/PREFIX]}
case $DEST in *://*) echo "push-bases: give REGISTRY[/PREFIX] without a scheme, not $DEST" >&2; exit 2 ;; esac
REPO=${MACI_BASE_REPO:-maci/python}
SUITE=${MACI_BASE_SUITE:-bookworm}
command -v skopeo >/dev/null || { echo "push-bases: skopeo missing (apt-get install skopeo)" >&2; exit 1; }

if [ -n "${MACI_BASE_ARCHES:-}" ]; then
    tags=()
    for arch in $MACI_BASE_ARCHES; do tags+=("$SUITE-$arch"); done
else
    mapfile -t tags < <(docker image ls "$REPO" --format '{{.Tag}}' | grep "^$SUITE-" | sort)
fi
[ ${#tags[@]} -gt 0 ] || { echo "push-bases: no local $REPO:$SUITE-* image (run scripts/setup-stack.sh)" >&2; exit 1; }

tls=()
case $DEST in 127.*|localhost*|\[::1\]*) tls=(--dest-tls-verify=false) ;; esac
for tag in "${tags[@]}"; do
    docker image inspect "$REPO:$tag" >/dev/null 2>&1 \
        || { echo "push-bases: $REPO:$tag is not in the local image store" >&2; exit 1; }
    skopeo copy -q "${tls[@]}" "docker-daemon:$REPO:$tag" "docker://$DEST/$REPO:$tag"
    echo "pushed $REPO:$tag -> $DEST/$REPO:$tag"
done
