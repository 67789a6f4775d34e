#!/usr/bin/env bash
# `ci build` done BY HAND, for any example: per platform the docker commands `ci`'s platform
# job runs (test image, the test command in a container with its JUnit copied out, release
# image, the model check when the project has one, push), CAPACITY platforms at a time on the
# one daemon (what `ci` does with a runner of that capacity), then the multi-arch index with
# the release tags. What it leaves out is what the tool adds: the verdict, the push by digest
# (no temporary tag), the index verification, the release record.
#
# Inputs (environment): PROJECT (a git checkout), IMAGE (registry/repo), NAME (test image
# name), PLATFORMS and BASES (space-separated, same order), TEST_TARGET, TEST_CMD (shell
# words), JUNIT (path in the test container), RELEASE_TARGET, MODEL_NAME, MODEL_VERSION,
# CHECK_CMD (shell words; empty = no model check), CAPACITY, PUSH (1 = push + index, 0 = build
# only), TAGS (space-separated release tags).
# Writes "<phase> <epoch seconds>" lines to $PROJECT/.hand/marks for the step breakdown.
set -euo pipefail
: "${PROJECT:?}" "${IMAGE:?}" "${NAME:?}" "${PLATFORMS:?}" "${BASES:?}" "${TEST_TARGET:?}"
: "${TEST_CMD:?}" "${JUNIT:?}" "${RELEASE_TARGET:?}" "${CAPACITY:?}" "${PUSH:?}"
cd "$PROJECT"
STATE=$PROJECT/.hand
mkdir -p "$STATE"
: > "$STATE/marks"
SHORT=$(git rev-parse --short=7 HEAD)
export STATE SHORT
mark() { echo "$1 $(date +%s.%N)" >> "$STATE/marks"; }

chain() {
  local platform=$1 base=$2 slug=${1//\//-}
  local box="hand-$slug-$$" release="$IMAGE:hand-$SHORT-$slug"
  mark "$slug:build_test"
  docker buildx build --progress=plain --platform "$platform" --build-arg "BASE=$base" \
    --target "$TEST_TARGET" --load -t "maci-hand/$NAME:$slug" .
  mark "$slug:test"
  # shellcheck disable=SC2086  # TEST_CMD / CHECK_CMD are word lists by design
  docker run --sig-proxy=false --platform "$platform" --name "$box" "maci-hand/$NAME:$slug" \
    $TEST_CMD
  docker cp "$box:$JUNIT" "$STATE/junit-$slug.xml"
  docker rm -f "$box" > /dev/null
  mark "$slug:build_release"
  docker buildx build --progress=plain --platform "$platform" --build-arg "BASE=$base" \
    --build-arg "MODEL_NAME=${MODEL_NAME:-}" --build-arg "MODEL_VERSION=${MODEL_VERSION:-}" \
    --target "$RELEASE_TARGET" --load -t "$release" .
  if [ -n "${CHECK_CMD:-}" ]; then
    mark "$slug:check"
    # shellcheck disable=SC2086
    docker run --rm --platform "$platform" "$release" $CHECK_CMD
  fi
  if [ "$PUSH" = 1 ]; then
    mark "$slug:push"
    docker push "$release"
  fi
  mark "$slug:end"
}
export -f chain mark

mark start
read -r -a plats <<< "$PLATFORMS"
read -r -a bases <<< "$BASES"
for i in "${!plats[@]}"; do echo "${plats[$i]} ${bases[$i]}"; done \
  | xargs -P "$CAPACITY" -L 1 bash -c 'chain "$0" "$1" > "$STATE/${0//\//-}.log" 2>&1'
mark jobs_done

if [ "$PUSH" = 1 ]; then
  refs=()
  for p in "${plats[@]}"; do refs+=("$IMAGE:hand-$SHORT-${p//\//-}"); done
  targs=()
  for t in ${TAGS:-}; do targs+=(-t "$IMAGE:$t"); done
  # imagetools writes the tags concurrently; registry 2.8 answers one of them 500 now and
  # then (a race on the same manifest): retried, and the retry is marked
  for attempt in 1 2 3; do
    docker buildx imagetools create "${targs[@]}" "${refs[@]}" > "$STATE/index.log" 2>&1 && break
    [ "$attempt" = 3 ] && { cat "$STATE/index.log" >&2; exit 1; }
    mark index_retry
  done
fi
mark done
