#!/usr/bin/env bash
# A real remote Docker runner on this machine: `DOCKER_HOST=ssh://root@ADDR` (run as root).
#
#   scripts/netns-runner.sh up NAME [IMAGE...]     bring it up (idempotent), print its env file
#   scripts/netns-runner.sh forward NAME PORT...   make 127.0.0.1:PORT inside reach 127.0.0.1:PORT
#   scripts/netns-runner.sh cut NAME [host|runner] take a side of the veth down (runner cut off)
#   scripts/netns-runner.sh restore NAME           bring both sides back up
#   scripts/netns-runner.sh status NAME            exit 0 when `docker info` answers over ssh
#   scripts/netns-runner.sh down NAME              stop everything by recorded pid, remove it all
#
# What `up` makes (every step checks first, so a second `up` only repairs what is missing):
#   * network namespace `maci-NAME` and a veth pair with a /30 out of 10.213.0.0/16
#     (10.213.K.0/30: K from NAME, moved on while another interface uses it; MACI_NETNS_K
#     forces it): the host side 10.213.K.1 on `mrKh`, the runner 10.213.K.2 on `mrKn`;
#   * sshd (Debian openssh-server) inside, listening on 10.213.K.2:22 only, with its own
#     config, host key and authorized key (nothing in /etc/ssh is read or changed). sshd_config
#     `SetEnv DOCKER_HOST=unix://STATE/docker.sock` points the `docker system dial-stdio` that
#     the docker CLI runs over ssh at the runner's daemon (not this host's /var/run/docker.sock,
#     which is the same file inside: a namespace has its own network, not its own files);
#   * the client side: a key pair in STATE and ONE Host block for 10.213.K.2 in
#     /root/.ssh/config (between `# >>> maci-netns NAME` / `# <<<` markers, first in the file
#     so its values win): the key, a known_hosts file holding the runner's host key
#     (StrictHostKeyChecking yes: nothing to accept), BatchMode, ConnectTimeout 5 (plain ssh
#     only: the docker CLI passes its own `-o ConnectTimeout=30`, which wins), and
#     ServerAliveInterval 2 / ServerAliveCountMax 3: a cut link ends the ssh (and so the docker
#     CLI call) after ~6 s. Without keepalives it never ends: a build's connection only waits
#     for output, has nothing to retransmit, and TCP never gives up (measured: still hanging
#     after 11 min, and SIGTERM does not end buildx). The docker CLI runs the system `ssh` for
#     an ssh:// host, and ssh reads the passwd home's config (not $HOME), so plain
#     `ssh root@10.213.K.2` and `DOCKER_HOST=ssh://root@10.213.K.2 docker info` work;
#   * a second dockerd inside: own --data-root, --exec-root, --pidfile, unix socket and an
#     empty --config-file, --iptables=false --ip-masq=false. Its default bridge (docker0) is
#     made in the namespace, which has nothing else, so it cannot clash with this host's;
#   * the IMAGEs (default: MACI_NETNS_IMAGES, else maci/python:bookworm-amd64, the sample app's
#     amd64 base) copied from this host's daemon with `docker save | docker -H ssh://… load`,
#     skipped when the runner already has the same image id. That is most of the cost of `up`
#     (measured on 2 busy cores: 13–25 s of 15–28 s; the rest ~2 s); a second `up` takes ~3 s.
#   * an `unreachable` route for the /30 (metric 4242, under the veth's own route): with the
#     host side down its route goes, and the runner's address must fail here (No route to
#     host), never go out to the default gateway.
# The daemons enter only the namespace's network (nsenter --net); see NET_EXEC below.
#
# The registry: image refs name it as 127.0.0.1:PORT, and the runner's daemon must push under
# that same name (127.0.0.0/8 is also what dockerd treats as an insecure, plain-HTTP registry).
# `forward NAME PORT` starts two socat forwarders: inside, 127.0.0.1:PORT → 10.213.K.1:PORT;
# here, 10.213.K.1:PORT → 127.0.0.1:PORT. The registry keeps listening on loopback only, and
# cutting the link cuts the runner's registry traffic too, as on a real remote host.
#
# Every process is started with setsid (its pid is its process group) and recorded under
# STATE/pids; `down` signals those, then whatever still runs in the namespace (containerd,
# shims, ssh sessions, socat children: all started by the daemons started here), deletes the
# veth pair and the namespace, removes the ssh config block and STATE. `up` writes STATE/env
# (shell syntax) with the addresses, names and the seconds each phase took.
#
# Environment: MACI_NETNS_STATE (default /tmp/maci-netns; STATE is $MACI_NETNS_STATE/NAME),
#              MACI_NETNS_IMAGES (space-separated images for `up` without IMAGE arguments),
#              MACI_NETNS_K (third octet of the /30).
set -euo pipefail
export LC_ALL=C

log() { printf '[netns-runner] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

usage() {
    sed -n '4,9p' "$0" >&2
    exit 2
}

[ $# -ge 2 ] || usage
CMD=$1
NAME=$2
shift 2
[[ $NAME =~ ^[a-z0-9][a-z0-9-]{0,15}$ ]] || die "NAME must match [a-z0-9][a-z0-9-]{0,15}: $NAME"
[ "$(id -u)" = 0 ] || die "must run as root"

NS=maci-$NAME
STATE=${MACI_NETNS_STATE:-/tmp/maci-netns}/$NAME
PIDS=$STATE/pids
SSH_DIR=$(getent passwd root | cut -d: -f6)/.ssh
SSH_CONFIG=$SSH_DIR/config
MARK_BEGIN="# >>> maci-netns $NAME"
MARK_END="# <<< maci-netns $NAME"
SOCK=$STATE/docker.sock

ns_exists() { [ -e "/var/run/netns/$NS" ]; }
alive() { # pidfile -> 0 when that process runs
    local pid
    [ -f "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}
in_ns() { ip netns exec "$NS" "$@"; }
# Daemons enter only the network namespace: `ip netns exec` also gives its command a mount
# namespace of its own with a fresh /sys, which hides /sys/fs/cgroup from dockerd ("Devices
# cgroup isn't mounted"); nsenter --net keeps this host's mounts (like the second-dockerd test
# fixture, the daemon's overlay mounts live under STATE/data and go when it stops).
NET_EXEC=(nsenter "--net=/var/run/netns/$NS")
start_bg() { # pidfile logfile cmd... -> started in its own session; pid recorded
    local pidfile=$1 logfile=$2
    shift 2
    # The background job is not a process group leader, so setsid execs in place, and so
    # does `ip netns exec`: $! is the daemon's own pid (and its process group).
    setsid "$@" </dev/null >>"$logfile" 2>&1 &
    echo "$!" >"$pidfile"
}
wait_for() { # seconds what pidfile cmd...
    local secs=$1 what=$2 pidfile=$3 deadline
    shift 3
    deadline=$(( $(date +%s) + secs ))
    until "$@" >/dev/null 2>&1 </dev/null; do
        if [ -n "$pidfile" ] && ! alive "$pidfile"; then
            die "$what exited during startup (see $STATE/*.log)"
        fi
        [ "$(date +%s)" -lt "$deadline" ] || die "$what not ready after ${secs}s"
        sleep 0.1
    done
}
remote_docker() { DOCKER_HOST=ssh://root@$ADDR DOCKER_CONTEXT= docker "$@"; }
local_docker() { env -u DOCKER_HOST -u DOCKER_CONTEXT docker "$@"; }

load_env() {
    [ -f "$STATE/env" ] || return 1
    # shellcheck disable=SC1091
    . "$STATE/env"
    K=$MACI_NETNS_K ADDR=$MACI_NETNS_ADDR HOST_ADDR=$MACI_NETNS_HOST_ADDR
    VH=$MACI_NETNS_VETH_HOST VN=$MACI_NETNS_VETH_NS
}

pick_k() { # -> K of a 10.213.K.0/30 no other interface uses
    local k used
    if [ -n "${MACI_NETNS_K:-}" ]; then echo "$MACI_NETNS_K"; return; fi
    k=$(( $(printf '%s' "$NAME" | cksum | cut -d' ' -f1) % 200 + 20 ))
    used=$(ip -4 -o addr show; ip -4 route show)
    for _ in $(seq 200); do
        grep -q "10\.213\.$k\.[0-9]" <<<"$used" || { echo "$k"; return; }
        k=$(( k % 250 + 1 ))
    done
    die "no free 10.213.K.0/30"
}

write_env() {
    {
        echo "MACI_NETNS_NAME=$NAME"
        echo "MACI_NETNS_NS=$NS"
        echo "MACI_NETNS_K=$K"
        echo "MACI_NETNS_ADDR=$ADDR"
        echo "MACI_NETNS_HOST_ADDR=$HOST_ADDR"
        echo "MACI_NETNS_VETH_HOST=$VH"
        echo "MACI_NETNS_VETH_NS=$VN"
        echo "MACI_NETNS_DOCKER_HOST=ssh://root@$ADDR"
        echo "MACI_NETNS_DOCKER_SOCK=unix://$SOCK"
        echo "MACI_NETNS_STATE=$STATE"
        for kv in "${TIMES[@]}"; do echo "$kv"; done
    } >"$STATE/env.tmp"
    mv -f "$STATE/env.tmp" "$STATE/env"
}

ssh_block_remove() {
    [ -f "$SSH_CONFIG" ] || return 0
    awk -v b="$MARK_BEGIN" -v e="$MARK_END" '
        $0 == b { skip = 1; next }
        $0 == e { skip = 0; next }
        !skip { print }' "$SSH_CONFIG" >"$SSH_CONFIG.maci-tmp"
    cat "$SSH_CONFIG.maci-tmp" >"$SSH_CONFIG"   # keeps the file's owner and mode
    rm -f "$SSH_CONFIG.maci-tmp"
    [ -s "$SSH_CONFIG" ] || rm -f "$SSH_CONFIG"   # nothing but our block was in it
}

ssh_block_add() {
    mkdir -p "$SSH_DIR"
    chmod 700 "$SSH_DIR"
    ssh_block_remove
    touch "$SSH_CONFIG"
    chmod 600 "$SSH_CONFIG"
    {
        echo "$MARK_BEGIN"
        echo "Host $ADDR"
        echo "    User root"
        echo "    IdentityFile $STATE/id_ed25519"
        echo "    IdentitiesOnly yes"
        echo "    UserKnownHostsFile $STATE/known_hosts"
        echo "    StrictHostKeyChecking yes"
        echo "    BatchMode yes"
        echo "    ConnectTimeout 5"
        echo "    ServerAliveInterval 2"
        echo "    ServerAliveCountMax 3"
        # a Host block runs to the next one: `Host *` keeps the file's own leading lines global
        echo "Host *"
        echo "$MARK_END"
        cat "$SSH_CONFIG"
    } >"$SSH_CONFIG.maci-tmp"
    cat "$SSH_CONFIG.maci-tmp" >"$SSH_CONFIG"   # keeps the file's owner and mode
    rm -f "$SSH_CONFIG.maci-tmp"
}

# ------------------------------------------------------------------------------------ up

cmd_up() {
    local t0 t phase_t images img lid rid
    t0=$(now)
    TIMES=()
    command -v sshd >/dev/null || command -v /usr/sbin/sshd >/dev/null \
        || die "sshd missing: install openssh-server (scripts/setup-stack.sh)"
    command -v socat >/dev/null || die "socat missing (scripts/setup-stack.sh)"
    command -v dockerd >/dev/null || die "dockerd missing"
    mkdir -p "$STATE" "$PIDS"
    chmod 700 "$STATE"

    # 1. namespace + veth pair ---------------------------------------------------------
    t=$(now)
    if ! load_env 2>/dev/null; then
        K=$(pick_k)
        ADDR=10.213.$K.2 HOST_ADDR=10.213.$K.1 VH=mr${K}h VN=mr${K}n
    fi
    ns_exists || ip netns add "$NS"
    if ! ip link show "$VH" >/dev/null 2>&1; then
        in_ns ip link del "$VN" 2>/dev/null || true
        ip link add "$VH" type veth peer name "$VN" netns "$NS"
    fi
    # With the host side down (`cut`) its connected route goes, and without this one the
    # runner's address would be sent to the default gateway: the /30 must never leave this host.
    ip route replace unreachable "10.213.$K.0/30" metric 4242
    ip addr replace "$HOST_ADDR/30" dev "$VH"
    ip link set "$VH" up
    in_ns ip addr replace "$ADDR/30" dev "$VN"
    in_ns ip link set "$VN" up
    in_ns ip link set lo up
    TIMES+=("MACI_NETNS_T_NETNS=$(since "$t")")
    write_env

    # 2. keys and the client's ssh config ----------------------------------------------
    t=$(now)
    [ -f "$STATE/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "maci-netns-$NAME" -f "$STATE/id_ed25519"
    [ -f "$STATE/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C "maci-netns-$NAME-host" -f "$STATE/ssh_host_ed25519_key"
    cp "$STATE/id_ed25519.pub" "$STATE/authorized_keys"
    echo "$ADDR $(cut -d' ' -f1,2 "$STATE/ssh_host_ed25519_key.pub")" >"$STATE/known_hosts"
    ssh_block_add
    TIMES+=("MACI_NETNS_T_KEYS=$(since "$t")")

    # 3. the runner's dockerd ----------------------------------------------------------
    t=$(now)
    if ! alive "$PIDS/dockerd"; then
        echo '{}' >"$STATE/daemon.json"
        rm -f "$STATE/dockerd.pid" "$SOCK"
        start_bg "$PIDS/dockerd" "$STATE/dockerd.log" "${NET_EXEC[@]}" dockerd \
            --config-file "$STATE/daemon.json" --data-root "$STATE/data" \
            --exec-root "$STATE/exec" --pidfile "$STATE/dockerd.pid" -H "unix://$SOCK" \
            --iptables=false --ip-masq=false
    fi
    wait_for 60 dockerd "$PIDS/dockerd" local_docker -H "unix://$SOCK" info --format '{{.ServerVersion}}'
    TIMES+=("MACI_NETNS_T_DOCKERD=$(since "$t")")

    # 4. sshd ------------------------------------------------------------------------------
    t=$(now)
    if ! alive "$PIDS/sshd"; then
        mkdir -p /run/sshd   # sshd's privilege separation directory
        chmod 755 /run/sshd
        cat >"$STATE/sshd_config" <<EOF
# sshd of the maci-netns runner $NAME (scripts/netns-runner.sh); nothing from /etc/ssh
ListenAddress $ADDR:22
HostKey $STATE/ssh_host_ed25519_key
AuthorizedKeysFile $STATE/authorized_keys
PidFile none
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
# the docker CLI opens one ssh connection per API connection
MaxStartups 100:30:200
MaxSessions 100
# a client that vanished (link cut) is dropped, with its dial-stdio, after ~15 s
ClientAliveInterval 5
ClientAliveCountMax 3
SetEnv DOCKER_HOST=unix://$SOCK
LogLevel VERBOSE
EOF
        /usr/sbin/sshd -t -f "$STATE/sshd_config" || die "sshd_config rejected"
        start_bg "$PIDS/sshd" "$STATE/sshd.log" "${NET_EXEC[@]}" /usr/sbin/sshd -D -e -f "$STATE/sshd_config"
    fi
    wait_for 20 sshd "$PIDS/sshd" ssh "root@$ADDR" true
    TIMES+=("MACI_NETNS_T_SSHD=$(since "$t")")

    t=$(now)
    phase_t=$(remote_docker info --format '{{.ServerVersion}} {{.OSType}}/{{.Architecture}}') \
        || die "DOCKER_HOST=ssh://root@$ADDR docker info failed"
    log "ssh://root@$ADDR answers: docker $phase_t"
    TIMES+=("MACI_NETNS_T_DOCKER_INFO=$(since "$t")")

    # 5. base images -----------------------------------------------------------------------
    t=$(now)
    if [ $# -gt 0 ]; then images=("$@"); else read -r -a images <<<"${MACI_NETNS_IMAGES:-maci/python:bookworm-amd64}"; fi
    for img in "${images[@]}"; do
        lid=$(local_docker image inspect -f '{{.Id}}' "$img" 2>/dev/null) || die "image $img not in this host's daemon"
        rid=$(remote_docker image inspect -f '{{.Id}}' "$img" 2>/dev/null || true)
        [ "$lid" = "$rid" ] && continue
        log "copying $img into the runner (docker save | docker -H ssh://root@$ADDR load)"
        local_docker save "$img" | remote_docker load -q >&2
    done
    TIMES+=("MACI_NETNS_T_IMAGES=$(since "$t")")
    TIMES+=("MACI_NETNS_UP_SECONDS=$(since "$t0")")
    write_env
    log "up in $(since "$t0")s: DOCKER_HOST=ssh://root@$ADDR (state $STATE)"
    cat "$STATE/env"
}

# ------------------------------------------------------------------------------- forward

cmd_forward() {
    local port
    load_env || die "runner $NAME is not up"
    [ $# -gt 0 ] || die "forward NAME PORT..."
    for port in "$@"; do
        [[ $port =~ ^[0-9]+$ ]] || die "not a port: $port"
        if ! alive "$PIDS/fwd-$port-host"; then
            start_bg "$PIDS/fwd-$port-host" "$STATE/socat-$port.log" \
                socat "TCP-LISTEN:$port,bind=$HOST_ADDR,reuseaddr,fork" "TCP:127.0.0.1:$port"
        fi
        if ! alive "$PIDS/fwd-$port-ns"; then
            start_bg "$PIDS/fwd-$port-ns" "$STATE/socat-$port.log" "${NET_EXEC[@]}" \
                socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" "TCP:$HOST_ADDR:$port"
        fi
        wait_for 10 "forwarder $port (host side)" "$PIDS/fwd-$port-host" \
            bash -c "ss -Hltn 'sport = :$port' | grep -q '$HOST_ADDR:$port'"
        wait_for 10 "forwarder $port (runner side)" "$PIDS/fwd-$port-ns" \
            bash -c "ip netns exec '$NS' ss -Hltn 'sport = :$port' | grep -q '127.0.0.1:$port'"
        log "runner $NAME: 127.0.0.1:$port → $HOST_ADDR:$port → this host's 127.0.0.1:$port"
    done
}

# ------------------------------------------------------------------- cut, restore, status

# `cut NAME` takes the host side down: its route goes, the /30 falls on the `unreachable` route,
# new connections fail at once (No route to host) and an open ssh connection hears nothing more
# (its keepalives end it). `cut NAME runner` takes the runner's side down instead: the host side
# keeps its route with no carrier, packets vanish silently, new connections wait for ARP
# (No route to host after a few seconds): a host that died on the LAN.
cmd_cut() {
    load_env || die "runner $NAME is not up"
    case ${1:-host} in
        host) ip link set "$VH" down; log "cut: $VH (host side) down" ;;
        runner) in_ns ip link set "$VN" down; log "cut: $VN (runner side) down" ;;
        *) die "cut NAME [host|runner]" ;;
    esac
}
cmd_restore() {
    load_env || die "runner $NAME is not up"
    in_ns ip link set "$VN" up
    ip link set "$VH" up
    log "restored: $VH and $VN up"
}
cmd_status() {
    load_env || die "runner $NAME is not up"
    remote_docker info --format "ssh://root@$ADDR: docker {{.ServerVersion}} {{.OSType}}/{{.Architecture}}"
}

# ---------------------------------------------------------------------------------- down

stop_pid() { # pidfile [seconds]: SIGTERM its process group, then SIGKILL
    local pid secs=${2:-15} i
    [ -f "$1" ] || return 0
    pid=$(cat "$1" 2>/dev/null || true)
    rm -f "$1"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq $(( secs * 10 ))); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "pid $pid ignored SIGTERM for ${secs}s: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

cmd_down() {
    local f pids i
    load_env 2>/dev/null || true
    if [ -d "$PIDS" ]; then
        for f in "$PIDS"/fwd-* "$PIDS/sshd"; do
            if [ -e "$f" ]; then stop_pid "$f" 5; fi
        done
        if [ -e "$PIDS/dockerd" ]; then stop_pid "$PIDS/dockerd" 30; fi
    fi
    if ns_exists; then
        # what the daemons started inside (containerd, shims, ssh sessions) and still runs
        for i in 1 2; do
            pids=$(ip netns pids "$NS" 2>/dev/null || true)
            [ -n "$pids" ] || break
            # shellcheck disable=SC2086
            kill "-$([ $i = 1 ] && echo TERM || echo KILL)" $pids 2>/dev/null || true
            for _ in $(seq 50); do
                [ -z "$(ip netns pids "$NS" 2>/dev/null || true)" ] && break
                sleep 0.1
            done
        done
    fi
    if [ -n "${VH:-}" ]; then ip link del "$VH" 2>/dev/null || true; fi
    if [ -n "${K:-}" ]; then ip route del unreachable "10.213.$K.0/30" metric 4242 2>/dev/null || true; fi
    if ns_exists; then ip netns del "$NS"; fi
    ssh_block_remove
    # a mount left by the daemon in this mount namespace would make rm fail: none is expected
    if [ -d "$STATE" ]; then
        { grep -o " $STATE/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do
            umount -l "$m" || true
        done
        rm -rf "$STATE"
    fi
    log "down: $NS removed"
}

case $CMD in
    up) cmd_up "$@" ;;
    forward) cmd_forward "$@" ;;
    cut) cmd_cut "$@" ;;
    restore) cmd_restore ;;
    status) cmd_status ;;
    down) cmd_down ;;
    *) usage ;;
esac
