#!/usr/bin/env bash
# A SECOND Docker daemon — Docker Engine 26 with the containerd image store — side by side with
# the system's (Debian 12's docker.io 20.10 on /var/run/docker.sock, which is never touched).
#
#   scripts/install-docker26.sh install   # extract the binaries into $PREFIX (idempotent)
#   scripts/install-docker26.sh start     # install if needed, start, wait until `docker info` answers
#   scripts/install-docker26.sh stop      # stop the daemon started here (by its pid), drop its bridge
#   scripts/install-docker26.sh status    # versions, pid, storage driver; exit 1 when not running
#   scripts/install-docker26.sh env       # prints `export DOCKER_HOST=...` for eval
#
# Binaries come from Debian packages, fetched with a PRIVATE apt configuration (own sources list,
# lists, cache and an empty dpkg status) used only for `apt-get download` — the system's apt state
# never sees trixie. `apt-get download` checks each .deb against the SHA256 in the signed
# Release/Packages metadata, so a corrupt or tampered .deb is refused. Then `dpkg-deb -x`:
#   * trixie   docker.io 26.1.5  -> dockerd, docker-proxy           (libc6 >= 2.34)
#   * trixie   containerd 1.7.24 -> containerd, containerd-shim-runc-v2, ctr (libc6 >= 2.34)
#   * trixie   tini              -> tini-static, used as docker-init (static)
#   * bookworm runc 1.1.5        -> runc. NOT trixie's runc 1.1.15: it needs GLIBC_2.38 and
#                                  bookworm has 2.36 ("version `GLIBC_2.38' not found").
# Nothing is installed with dpkg, nothing is written under /usr.
#
# The daemon: its own socket, data-root, exec-root, pidfile, log and its own containerd (started
# and stopped by dockerd itself; socket $EXEC_ROOT/containerd/containerd.sock), configured only
# by $PREFIX/etc/daemon.json (`--config-file`, so /etc/docker/daemon.json is never read) with
# "features": {"containerd-snapshotter": true}. iptables, ip-masq and ip-forward are off.
# Its bridge is its own (`ip link add $BRIDGE type bridge` on a free 172.31.x.0/24): NEVER
# `--bridge none`, which makes dockerd delete the shared docker0 bridge of the system daemon.
#
# Use it with the system docker CLI and buildx plugin:
#   DOCKER_HOST=unix:///run/maci-docker26/docker.sock docker buildx build ...
#
# Environment (defaults):
#   MACI_D26_PREFIX    /opt/maci-docker26          binaries (bin/), daemon.json (etc/), VERSIONS
#   MACI_D26_RUN       /run/maci-docker26          docker.sock, dockerd.pid, exec/ (exec-root)
#   MACI_D26_DATA      /var/lib/maci-docker26      data-root (containerd content + snapshots)
#   MACI_D26_LOG       /var/log/maci-docker26.log
#   MACI_D26_BRIDGE    maci26br0
#   MACI_CACHE_DIR     /var/cache/maci             private apt state in $MACI_CACHE_DIR/apt-docker26
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C.UTF-8

PREFIX=${MACI_D26_PREFIX:-/opt/maci-docker26}
RUN_DIR=${MACI_D26_RUN:-/run/maci-docker26}
DATA_ROOT=${MACI_D26_DATA:-/var/lib/maci-docker26}
LOG=${MACI_D26_LOG:-/var/log/maci-docker26.log}
BRIDGE=${MACI_D26_BRIDGE:-maci26br0}
CACHE_DIR=${MACI_CACHE_DIR:-/var/cache/maci}
APTD=$CACHE_DIR/apt-docker26

SOCK=$RUN_DIR/docker.sock
PIDFILE=$RUN_DIR/dockerd.pid
EXEC_ROOT=$RUN_DIR/exec
CONFIG=$PREFIX/etc/daemon.json
BIN=$PREFIX/bin

# package  suite  files to take (path in the .deb -> name in $BIN)
PACKAGES=(
    "docker.io trixie usr/sbin/dockerd:dockerd usr/sbin/docker-proxy:docker-proxy"
    "containerd trixie usr/bin/containerd:containerd usr/bin/containerd-shim-runc-v2:containerd-shim-runc-v2 usr/bin/ctr:ctr"
    "tini trixie usr/bin/tini-static:docker-init"
    "runc bookworm usr/sbin/runc:runc"
)

log() { printf '[install-docker26] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
step() { # name command... : runs it, prints measured seconds
    local name=$1 t0
    shift
    t0=$(now)
    "$@"
    log "step $name: $(since "$t0") s"
}

[ "$(id -u)" = 0 ] || die "must run as root"

d26() { DOCKER_HOST="unix://$SOCK" DOCKER_CONTEXT='' timeout "${D26_TIMEOUT:-10}" docker "$@" </dev/null; }
up() { d26 info --format '{{.ServerVersion}}' >/dev/null 2>&1; }
pid_alive() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

# ------------------------------------------------------------------------------------- install
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

installed() { # every binary present and runnable
    local p f
    for p in "${PACKAGES[@]}"; do
        for f in ${p#* * }; do [ -x "$BIN/${f#*:}" ] || return 1; done
    done
    [ -f "$CONFIG" ] && [ -f "$PREFIX/VERSIONS" ]
}

apt_update() {
    mkdir -p "$APTD/lists/partial" "$APTD/cache/archives/partial" "$APTD/debs" "$APTD/empty.d"
    : >"$APTD/dpkg-status"   # empty: apt must not mix in the host's installed packages
    {
        echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main'
        echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main'
    } >"$APTD/sources.list"
    apt-get -q "${APT_PRIV[@]}" update </dev/null >&2
}

download_debs() {
    local p name suite specs=() missing=0
    for p in "${PACKAGES[@]}"; do
        read -r name suite _ <<<"$p"
        specs+=("$name/$suite")
        ls "$APTD"/debs/"${name}"_*.deb >/dev/null 2>&1 || missing=1
    done
    [ "$missing" = 1 ] || { log "debs cached in $APTD/debs"; return 0; }
    rm -f "$APTD"/debs/*.deb
    chown _apt "$APTD/debs" 2>/dev/null || true   # apt downloads as _apt (sandbox)
    # `apt-get download` verifies each file's SHA256 against the signed Packages index.
    (cd "$APTD/debs" && apt-get -q "${APT_PRIV[@]}" download "${specs[@]}" </dev/null >&2)
}

extract() {
    local p name suite files deb x f src dst
    mkdir -p "$BIN" "$PREFIX/etc"
    : >"$PREFIX/VERSIONS.new"
    for p in "${PACKAGES[@]}"; do
        read -r name suite files <<<"$p"
        deb=$(ls -1 "$APTD"/debs/"${name}"_*.deb | head -n1)
        x=$(mktemp -d)
        dpkg-deb -x "$deb" "$x"
        for f in $files; do
            src=${f%%:*} dst=${f#*:}
            [ -f "$x/$src" ] || { rm -rf "$x"; die "no $src in $deb"; }
            install -m 0755 "$x/$src" "$BIN/$dst.new"
            mv -f "$BIN/$dst.new" "$BIN/$dst"
        done
        rm -rf "$x"
        echo "$name $(dpkg-deb -f "$deb" Version) ($suite) sha256:$(sha256sum "$deb" | cut -d' ' -f1)" >>"$PREFIX/VERSIONS.new"
    done
    mv -f "$PREFIX/VERSIONS.new" "$PREFIX/VERSIONS"
}

write_config() {
    # Everything in the file (none of it as flags: dockerd refuses an option given both ways).
    cat >"$CONFIG.new" <<EOF
{
  "features": {"containerd-snapshotter": true},
  "hosts": ["unix://$SOCK"],
  "data-root": "$DATA_ROOT",
  "exec-root": "$EXEC_ROOT",
  "pidfile": "$PIDFILE",
  "bridge": "$BRIDGE",
  "iptables": false,
  "ip-masq": false,
  "ip-forward": false,
  "init-path": "$BIN/docker-init",
  "userland-proxy-path": "$BIN/docker-proxy",
  "cgroup-parent": "/maci-docker26",
  "insecure-registries": ["127.0.0.0/8"],
  "log-level": "info"
}
EOF
    mv -f "$CONFIG.new" "$CONFIG"
}

check_binaries() {
    "$BIN/dockerd" --version >&2
    "$BIN/containerd" --version >&2
    "$BIN/runc" --version | head -n1 >&2
    "$BIN/docker-init" --version >&2
}

cmd_install() {
    local t0
    t0=$(now)
    if installed && [ "${1:-}" != --force ]; then
        log "already installed in $PREFIX ($(tr '\n' ';' <"$PREFIX/VERSIONS"))"
        write_config
        return 0
    fi
    local need_update=0 p name
    for p in "${PACKAGES[@]}"; do
        read -r name _ <<<"$p"
        ls "$APTD"/debs/"${name}"_*.deb >/dev/null 2>&1 || need_update=1
    done
    if [ "$need_update" = 1 ]; then step apt-update apt_update; fi
    step download download_debs
    step extract extract
    step config write_config
    step check check_binaries
    log "installed in $PREFIX in $(since "$t0") s; size $(du -sh "$PREFIX" | cut -f1)"
}

# --------------------------------------------------------------------------------------- start
free_subnet() {
    local routes n
    routes=$(ip -4 route)
    for n in 254 253 252 251 250; do   # the test fixtures take 172.31.200-249
        [[ $routes == *"172.31.$n."* ]] || { echo "172.31.$n"; return 0; }
    done
    die "no free 172.31.250-254.0/24 for $BRIDGE"
}

bridge_up() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        local net
        net=$(free_subnet)
        ip link add name "$BRIDGE" type bridge
        ip addr add "$net.1/24" dev "$BRIDGE"
        log "bridge $BRIDGE $net.1/24"
    fi
    ip link set "$BRIDGE" up
}

cmd_start() {
    installed || cmd_install
    write_config
    if up; then log "already running (pid $(cat "$PIDFILE" 2>/dev/null || echo '?'))"; return 0; fi
    if pid_alive; then die "dockerd pid $(cat "$PIDFILE") is alive but does not answer on $SOCK; see $LOG"; fi
    rm -f "$PIDFILE" "$SOCK"
    mkdir -p "$RUN_DIR" "$DATA_ROOT" "$(dirname "$LOG")"
    step bridge bridge_up
    local t0 dpid deadline
    t0=$(now)
    # PATH: dockerd finds containerd, containerd finds containerd-shim-runc-v2, the shim runc.
    # setsid: own session (survives this script); the background job execs in place: $! = dockerd.
    env -u DOCKER_HOST -u NOTIFY_SOCKET PATH="$BIN:/usr/sbin:/usr/bin:/sbin:/bin" \
        setsid "$BIN/dockerd" --config-file "$CONFIG" </dev/null >>"$LOG" 2>&1 &
    dpid=$!
    deadline=$(( $(date +%s) + 60 ))
    until up; do
        if ! kill -0 "$dpid" 2>/dev/null; then tail -n 30 "$LOG" >&2; die "dockerd exited during startup"; fi
        [ "$(date +%s)" -lt "$deadline" ] || { tail -n 30 "$LOG" >&2; die "not ready after 60 s"; }
        sleep 0.1
    done
    log "step daemon-start: $(since "$t0") s (pid $dpid, socket $SOCK)"
    local drv
    drv=$(d26 info --format '{{.Driver}} {{.DriverStatus}}')
    [[ $drv == *io.containerd.snapshotter.v1* ]] || die "not using the containerd image store: $drv"
}

# ---------------------------------------------------------------------------------------- stop
cmd_stop() {
    local pid i
    if pid_alive; then
        pid=$(cat "$PIDFILE")
        log "stopping dockerd pid $pid"
        kill -TERM "$pid"
        for i in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then log "dockerd $pid still alive after 30 s: SIGKILL"; kill -KILL "$pid"; fi
    else
        log "not running"
    fi
    rm -f "$PIDFILE" "$SOCK"
    ip link del "$BRIDGE" 2>/dev/null || true
}

cmd_status() {
    [ -f "$PREFIX/VERSIONS" ] && sed 's/^/installed: /' "$PREFIX/VERSIONS" || echo "installed: no"
    [ -d "$PREFIX" ] && echo "prefix size: $(du -sh "$PREFIX" | cut -f1)"
    [ -d "$DATA_ROOT" ] && echo "data-root size: $(du -sh "$DATA_ROOT" 2>/dev/null | cut -f1)"
    if up; then
        echo "running: pid $(cat "$PIDFILE" 2>/dev/null) socket $SOCK"
        d26 version --format 'server {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}}'
        d26 info --format 'driver {{.Driver}} {{.DriverStatus}} containerd {{.ContainerdCommit.ID}} runc {{.RuncCommit.ID}}'
    else
        echo "running: no"
        return 1
    fi
}

case ${1:-} in
    install) shift; cmd_install "$@" ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export DOCKER_HOST=unix://$SOCK" ;;
    *) echo "usage: $0 install [--force] | start | stop | status | env" >&2; exit 2 ;;
esac
