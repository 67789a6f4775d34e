#!/usr/bin/env bash
# Install gitlab-ci-local (npm, pinned by version + sha512) for the GitLab template's end-to-end
# test, with the command $PREFIX/bin/gitlab-ci-local (default PREFIX: the project's .venv).
# 4.75.1 calls Node 22's Set methods (union, ...); Debian 12 has Node 20, so the wrapper preloads a
# small polyfill (node --import). It copies the work tree with rsync (apt, installed when root).
# Idempotent; ~1 s when done.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.75.1
INTEGRITY=sha512-ArmGX576uKqTgs4PMCH3FNPED+JhxDLb2Ocb893+aY88RA2sx9gP6L7GvpuHQJkFJRvA5KSq9fD0yyRLaLEydw==
PREFIX=${GITLAB_CI_LOCAL_PREFIX:-$(pwd)/.venv}
DEST=$PREFIX/lib/gitlab-ci-local
BIN=$PREFIX/bin/gitlab-ci-local

log() { printf '[install-gitlab-ci-local] %s\n' "$*" >&2; }

STAMP="$INTEGRITY $(sha256sum "$0" | cut -c1-16)"
if [ -x "$BIN" ] && [ "$(cat "$DEST/.stamp" 2>/dev/null)" = "$STAMP" ] \
        && "$BIN" --version >/dev/null 2>&1 && command -v rsync >/dev/null; then
    log "present: $("$BIN" --version)"
    exit 0
fi

need=()
command -v node >/dev/null && command -v npm >/dev/null || need+=(nodejs npm)
command -v rsync >/dev/null || need+=(rsync)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        log "missing ${need[*]} (install them, or run as root)"; exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "gitlab-ci-local@$VERSION" >/dev/null)
tarball=$(ls "$tmp"/gitlab-ci-local-*.tgz)
got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$got" != "$INTEGRITY" ]; then
    log "integrity mismatch for gitlab-ci-local@$VERSION: $got"; exit 1
fi
rm -rf "$DEST"
mkdir -p "$DEST" "$(dirname "$BIN")"
tar -xzf "$tarball" -C "$DEST" --strip-components=1

cat > "$DEST/set-methods.mjs" <<'JS'
// ES2025 Set methods for Node < 22 (gitlab-ci-local's bundle calls Set.prototype.union).
const methods = {
  union(o) { const r = new Set(this); for (const v of o.keys()) r.add(v); return r; },
  intersection(o) { const r = new Set(); for (const v of this) if (o.has(v)) r.add(v); return r; },
  difference(o) { const r = new Set(); for (const v of this) if (!o.has(v)) r.add(v); return r; },
  symmetricDifference(o) {
    const r = new Set(this);
    for (const v of o.keys()) { if (this.has(v)) r.delete(v); else r.add(v); }
    return r;
  },
  isSubsetOf(o) { for (const v of this) if (!o.has(v)) return false; return true; },
  isSupersetOf(o) { for (const v of o.keys()) if (!this.has(v)) return false; return true; },
  isDisjointFrom(o) { for (const v of this) if (o.has(v)) return false; return true; },
};
for (const [name, fn] of Object.entries(methods)) {
  if (typeof Set.prototype[name] !== "function") {
    Object.defineProperty(Set.prototype, name, { value: fn, writable: true, configurable: true });
  }
}
JS

cat > "$BIN" <<SH
#!/bin/sh
exec node --import "$DEST/set-methods.mjs" "$DEST/dist/index.js" "\$@"
SH
chmod +x "$BIN"
"$BIN" --version >/dev/null
echo "$STAMP" > "$DEST/.stamp"
log "installed gitlab-ci-local $("$BIN" --version) into $DEST"
