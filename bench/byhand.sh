#!/usr/bin/env bash
# The wine release done BY HAND: the same underlying commands `ci run release` runs, along the
# same critical path and with the same parallelism: train, both platform chains at once, smoke
# per platform one after the other, index, deploy commit. With OVERLAP=1 training runs beside
# the chains' test halves and each chain's release build waits for the model (what `ci` does
# when it overlaps the model stage with the platform jobs); OVERLAP=0 trains first.
# What it leaves out is exactly what the tool adds: the gate vs the champion, registering the
# version, the verdict, the temporary-tag push by digest, the deploy guard, the alias move.
#
# Inputs (environment): PROJECT (a git checkout of examples/wine), IMAGE (registry/repo),
# PY (the python with mlflow + scikit-learn), PARAMS (MACI_PARAMS JSON), PAYLOAD (smoke JSON),
# OVERLAP (0 or 1, default 0).
# Writes "<phase> <epoch seconds>" lines to $PROJECT/.hand/marks for the phase breakdown.
set -euo pipefail
: "${PROJECT:?}" "${IMAGE:?}" "${PY:?}" "${PARAMS:?}" "${PAYLOAD:?}"
cd "$PROJECT"
STATE=$PROJECT/.hand
mkdir -p "$STATE" model
SHA=$(git rev-parse HEAD)
SHORT=${SHA:0:7}
mark() { echo "$1 $(date +%s.%N)" >> "$STATE/marks"; }

# 1. train: the script logs its params, metrics and serving model to a fresh MLflow store,
#    then its serving artifact (the local store's files) goes into the build context
train() {
  MLFLOW_EXPERIMENT_NAME=wine MACI_PARAMS="$PARAMS" PYTHONHASHSEED=0 "$PY" train.py \
    > "$STATE/train.log" 2>&1 || return 1
  local run_dir
  run_dir=$(dirname "$(dirname "$(find mlruns -path '*/artifacts/serving/model.json' | head -1)")")
  cp "$run_dir/serving/model.json" model/model.json || return 1
  echo "{\"name\": \"wine-classifier\", \"version\": \"hand\", \"run_id\": \"$(basename "$(dirname "$run_dir")")\"}" \
    > model/registered.json
  mark trained
  touch "$STATE/model.ready"
}
wait_model() {
  while [ ! -e "$STATE/model.ready" ]; do
    [ -e "$STATE/model.failed" ] && return 1
    sleep 0.05
  done
}
mark train
export MLFLOW_TRACKING_URI="sqlite:///$STATE/mlflow.db"
if [ "${OVERLAP:-0}" = 1 ]; then
  { train || { touch "$STATE/model.failed"; exit 1; }; } &
  TRAIN=$!
else
  train
fi

# 2. one chain per platform, both at once: test image, tests in a container (JUnit copied
#    out), release image, push
mark platforms
chain() {
  local arch=$1 name="hand-$1-$$"
  local base="maci/python:bookworm-$arch"
  mark "$arch:build_test"
  docker buildx build --progress=plain --platform "linux/$arch" --build-arg "BASE=$base" \
    --target test --load -t "maci-hand/wine:$arch" .
  mark "$arch:test"
  docker run --sig-proxy=false --platform "linux/$arch" --name "$name" "maci-hand/wine:$arch" \
    python3 -m pytest -q -p no:cacheprovider tests --junitxml=/tmp/maci-junit.xml
  docker cp "$name:/tmp/maci-junit.xml" "$STATE/junit-$arch.xml"
  docker rm -f "$name"
  wait_model
  mark "$arch:build_release"
  docker buildx build --progress=plain --platform "linux/$arch" --build-arg "BASE=$base" \
    --build-arg MODEL_NAME=wine-classifier --build-arg MODEL_VERSION=hand \
    --target runtime --load -t "$IMAGE:hand-$SHORT-$arch" .
  mark "$arch:push"
  docker push "$IMAGE:hand-$SHORT-$arch"
  mark "$arch:end"
}
chain amd64 > "$STATE/amd64.log" 2>&1 &
AMD=$!
chain arm64 > "$STATE/arm64.log" 2>&1 &
ARM=$!
wait "$AMD"
wait "$ARM"
[ "${OVERLAP:-0}" = 1 ] && wait "$TRAIN"

# 3. smoke, one platform after the other: run the image, wait for /health, 40 POSTs with
#    4 at a time, remove the container
mark smoke
echo "$PAYLOAD" > "$STATE/payload.json"
for arch in amd64 arm64; do
  mark "smoke:$arch"
  cid=$(docker run -d --platform "linux/$arch" -p 127.0.0.1::8080 "$IMAGE:hand-$SHORT-$arch")
  port=$(docker port "$cid" 8080/tcp | head -1 | cut -d: -f2)
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null && break
    sleep 0.05
  done
  seq 40 | xargs -P4 -I{} curl -fsS -o /dev/null -H 'Content-Type: application/json' \
    --data @"$STATE/payload.json" "http://127.0.0.1:$port/predict"
  docker rm -f "$cid" > /dev/null
done

# 4. the multi-arch index from the two pushed images, with the release tags
mark index
docker buildx imagetools create -t "$IMAGE:sha-$SHORT" -t "$IMAGE:main" -t "$IMAGE:latest" \
  "$IMAGE:hand-$SHORT-amd64" "$IMAGE:hand-$SHORT-arm64" > "$STATE/index.log" 2>&1
DIGEST=sha256:$(docker buildx imagetools inspect --raw "$IMAGE:sha-$SHORT" | sha256sum | cut -d' ' -f1)

# 5. the deploy commit: a bare deploy repo seeded with k8s/ (as `ci` does on first use),
#    clone, pin the digest, commit, push
mark deploy
if [ ! -d "$STATE/deploy.git" ]; then
  seed=$(mktemp -d)
  cp -r k8s "$seed/"
  git -C "$seed" init -q -b main
  git -C "$seed" add -A
  git -C "$seed" -c commit.gpgsign=false commit -q -m "seed deploy manifests"
  git init -q --bare -b main "$STATE/deploy.git"
  git -C "$seed" push -q "$STATE/deploy.git" HEAD:refs/heads/main
  rm -rf "$seed"
fi
work=$(mktemp -d)
git clone -q --depth 1 --branch main "$STATE/deploy.git" "$work"
sed -i "s|newTag: .*|digest: $DIGEST|" "$work/k8s/kustomization.yaml"
sed -i "0,/value: \"0\"/s//value: \"hand\"/" "$work/k8s/rollout.yaml"
git -C "$work" -c commit.gpgsign=false commit -q -am "deploy wine $SHORT: $IMAGE@$DIGEST"
git -C "$work" push -q origin HEAD:refs/heads/main
rm -rf "$work"
mark done
echo "$DIGEST"
