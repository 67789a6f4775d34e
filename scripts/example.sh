#!/usr/bin/env bash
# The main command (README): set up the real stack, start a local registry on 127.0.0.1:5000,
# and run the whole release of examples/wine with embedded defaults (sqlite MLflow under
# examples/wine/.maci, a local bare git repo as deploy remote). Idempotent; run as root.
# Extra arguments go to `ci run` (e.g. scripts/example.sh --dry-run, --json, -p linux/amd64).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-stack.sh
source scripts/venv.sh

REG_PORT=${MACI_REGISTRY_PORT:-5000}
REG_DIR=${MACI_REGISTRY_DIR:-/var/lib/maci/registry}
REG_PID=/var/run/maci-registry.pid
if ! curl -fsS "http://127.0.0.1:${REG_PORT}/v2/" >/dev/null 2>&1; then
  mkdir -p "$REG_DIR"
  cat > "$REG_DIR/config.yml" <<YAML
version: 0.1
log: { level: warn }
storage:
  filesystem: { rootdirectory: $REG_DIR/data }
  delete: { enabled: true }
http: { addr: 127.0.0.1:${REG_PORT} }
YAML
  setsid docker-registry serve "$REG_DIR/config.yml" >"$REG_DIR/registry.log" 2>&1 < /dev/null &
  echo $! > "$REG_PID"
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:${REG_PORT}/v2/" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:${REG_PORT}/v2/" >/dev/null || { echo "registry did not start" >&2; exit 1; }
  echo "registry: http://127.0.0.1:${REG_PORT} (pid $(cat "$REG_PID"), data $REG_DIR/data)"
fi

# The bases also in the registry: a Dagger engine pulls them from there
# (MACI_BUILD__BASE_IMAGE=127.0.0.1:5000/maci/python:bookworm-{debian_arch} ci run --engine dagger).
bash scripts/push-bases.sh "127.0.0.1:${REG_PORT}" >/dev/null

cd examples/wine
exec ../../.venv/bin/ci run release "$@"
