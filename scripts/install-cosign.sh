#!/usr/bin/env bash
# cosign (Debian 13's cosign 2.5.0, libc6 >= 2.34 only) into $MACI_COSIGN_PREFIX/bin (idempotent).
#
#   scripts/install-cosign.sh            # install (skips when the right version is there)
#   scripts/install-cosign.sh --link     # also symlink /usr/local/bin/cosign
#   scripts/install-cosign.sh --force    # re-download and re-extract
#
# The .deb comes from a PRIVATE apt configuration (own trixie sources list, lists, cache and an
# empty dpkg status), used only for `apt-get download`, which checks the file's SHA256 against
# the signed Packages index; then `dpkg-deb -x`. Nothing is installed with dpkg.
# Offline use (no Rekor, no Fulcio) against a local plain-HTTP registry:
#   COSIGN_PASSWORD=... cosign generate-key-pair --output-key-prefix DIR/cosign
#   COSIGN_PASSWORD=... cosign sign --key DIR/cosign.key --tlog-upload=false \
#       --allow-http-registry -y -a source=... 127.0.0.1:PORT/repo@sha256:...
#   cosign verify --key DIR/cosign.pub --insecure-ignore-tlog=true --allow-http-registry \
#       127.0.0.1:PORT/repo@sha256:...
#
# Environment: MACI_COSIGN_PREFIX (default /opt/maci-cosign), MACI_CACHE_DIR (/var/cache/maci).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C.UTF-8

PREFIX=${MACI_COSIGN_PREFIX:-/opt/maci-cosign}
CACHE_DIR=${MACI_CACHE_DIR:-/var/cache/maci}
APTD=$CACHE_DIR/apt-cosign
# Debian's build reports `GitVersion: devel`, so the version is the .deb's, recorded in VERSIONS.
WANT=${MACI_COSIGN_VERSION:-2.5.0}

log() { printf '[install-cosign] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

[ "$(id -u)" = 0 ] || die "must run as root"

LINK=0 FORCE=0
for a in "$@"; do
    case $a in
        --link) LINK=1 ;; --force) FORCE=1 ;;
        *) echo "usage: $0 [--link] [--force]" >&2; exit 2 ;;
    esac
done

version_ok() {
    [ -x "$PREFIX/bin/cosign" ] || return 1
    grep -Eq "^cosign $WANT[-+~]" "$PREFIX/VERSIONS" 2>/dev/null || return 1
    "$PREFIX/bin/cosign" version >/dev/null 2>&1
}

APT_PRIV=(
    -o "Dir::Etc::sourcelist=$APTD/sources.list"
    -o "Dir::Etc::sourceparts=$APTD/empty.d"
    -o "Dir::Etc::preferencesparts=$APTD/empty.d"
    -o "Dir::State::lists=$APTD/lists"
    -o "Dir::State::status=$APTD/dpkg-status"
    -o "Dir::State::extended_states=$APTD/extended_states"
    -o "Dir::Cache=$APTD/cache"
    -o "Dir::Cache::archives=$APTD/cache/archives"
    -o "APT::Get::List-Cleanup=false"
)

T0=$(now)
if [ "$FORCE" = 0 ] && version_ok; then
    log "present: $PREFIX/bin/cosign ($(cat "$PREFIX/VERSIONS"))"
else
    deb=$(ls -1 "$APTD"/debs/cosign_*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ] || [ "$FORCE" = 1 ]; then
        t=$(now)
        mkdir -p "$APTD/lists/partial" "$APTD/cache/archives/partial" "$APTD/debs" "$APTD/empty.d"
        : >"$APTD/dpkg-status"
        echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main' \
            >"$APTD/sources.list"
        apt-get -q "${APT_PRIV[@]}" update </dev/null >&2
        log "step apt-update: $(since "$t") s"
        t=$(now)
        rm -f "$APTD"/debs/cosign_*.deb
        chown _apt "$APTD/debs" 2>/dev/null || true   # apt downloads as _apt (sandbox)
        (cd "$APTD/debs" && apt-get -q "${APT_PRIV[@]}" download cosign </dev/null >&2)
        deb=$(ls -1 "$APTD"/debs/cosign_*.deb | head -n1)
        log "step download: $(since "$t") s ($deb)"
    fi
    t=$(now)
    x=$(mktemp -d)
    dpkg-deb -x "$deb" "$x"
    [ -f "$x/usr/bin/cosign" ] || { rm -rf "$x"; die "no usr/bin/cosign in $deb"; }
    install -D -m 0755 "$x/usr/bin/cosign" "$PREFIX/bin/cosign.new"
    mv -f "$PREFIX/bin/cosign.new" "$PREFIX/bin/cosign"
    rm -rf "$x"
    echo "cosign $(dpkg-deb -f "$deb" Version) (trixie) sha256:$(sha256sum "$deb" | cut -d' ' -f1)" >"$PREFIX/VERSIONS"
    log "step extract: $(since "$t") s"
    version_ok || die "$PREFIX/bin/cosign: not version $WANT or does not run: $(cat "$PREFIX/VERSIONS"); $("$PREFIX/bin/cosign" version 2>&1 | tail -n3)"
fi
if [ "$LINK" = 1 ]; then
    ln -sfn "$PREFIX/bin/cosign" /usr/local/bin/cosign
    log "linked /usr/local/bin/cosign -> $PREFIX/bin/cosign"
fi
"$PREFIX/bin/cosign" version 2>/dev/null | grep -E '^(GoVersion|Platform):' >&2
log "done in $(since "$T0") s: $PREFIX/bin/cosign ($(du -sh "$PREFIX" | cut -f1))"
