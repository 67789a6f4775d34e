#!/usr/bin/env bash
# The test command (README, .ci/run): set up the real stack, install, lint, type-check, test.
# Idempotent; on a fresh Debian 12 machine as root it installs everything it needs.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# armhf too: examples/bikes releases linux/arm/v7
MACI_BASE_ARCHES=${MACI_BASE_ARCHES:-amd64 arm64 armhf} bash scripts/setup-stack.sh
source scripts/venv.sh
bash scripts/install-actionlint.sh
bash scripts/install-zizmor.sh
bash scripts/install-gitlab-ci-local.sh

echo "== lint"
.venv/bin/ruff check ci tests examples bench
.venv/bin/mypy ci

echo "== tests"
export PYTHONUNBUFFERED=1
if [ "$#" -gt 0 ]; then
  exec .venv/bin/pytest "$@"
fi
exec .venv/bin/pytest -m "not dagger_real" --timeout=1500 --durations=15 tests
