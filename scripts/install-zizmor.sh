#!/usr/bin/env bash
# Install zizmor (GitHub Actions static analysis) from its PyPI wheel into the project's .venv:
# `zizmor --offline .github/` audits the workflows and the composite action without network
# (tests/integration/test_zizmor.py). The wheel is a self-contained binary; pinned to one release so
# a new audit cannot turn the suite red on its own. Idempotent; ~0.1 s when present.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.32.0
# sha256 of the x86_64 wheels on PyPI (manylinux_2_28, musllinux_1_2): pip refuses anything else.
HASHES=(
    84a6acb975accc13408786a2bd274b572537ca19c933ebbc13e78f3988562071
    dd818f99d833b86cd432d5412d620d936b5df074b33404fff8b67acff55d3259
)
VENV=${ZIZMOR_VENV:-$(pwd)/.venv}
BIN=$VENV/bin/zizmor

log() { printf '[install-zizmor] %s\n' "$*" >&2; }

if [ -x "$BIN" ] && [ "$("$BIN" --version 2>/dev/null)" = "zizmor $VERSION" ]; then
    log "present: zizmor $VERSION"
    exit 0
fi
[ -x "$VENV/bin/python" ] || { log "no virtualenv at $VENV (source scripts/venv.sh first)"; exit 1; }
t0=$(date +%s)
req=$(mktemp)
trap 'rm -f "$req"' EXIT
if [ "$(uname -m)" = x86_64 ]; then
    printf 'zizmor==%s' "$VERSION" >"$req"
    printf ' --hash=sha256:%s' "${HASHES[@]}" >>"$req"
    echo >>"$req"
    hashes=(--require-hashes)
else  # no recorded hash for this machine's wheel: the version pin only
    log "$(uname -m): installing zizmor==$VERSION without a hash check"
    echo "zizmor==$VERSION" >"$req"
    hashes=()
fi
"$VENV/bin/python" -m pip install --disable-pip-version-check -q --only-binary=:all: --no-deps \
    "${hashes[@]}" -r "$req"
got=$("$BIN" --version)
[ "$got" = "zizmor $VERSION" ] || { log "installed $BIN reports '$got', want zizmor $VERSION"; exit 1; }
log "installed $got in $(( $(date +%s) - t0 )) s"
