#!/usr/bin/env bash
# Idempotent real-stack setup for multiarch-ci on a fresh Debian 12 host (run as root).
#
# Installs and starts everything the real-stack tests need:
#   * Debian packages: docker.io, qemu-user-static, mmdebstrap, docker-registry, skopeo, ...
#   * openssh-server + socat for the ssh:// runner in a network namespace (scripts/netns-runner.sh;
#     no sshd is started on this host)
#   * the docker buildx CLI plugin (from Debian trixie's docker-buildx .deb; bookworm has none)
#   * a background dockerd (if no daemon answers), pid in $MACI_DOCKERD_PIDFILE
#   * qemu binfmt_misc handlers with flags OCF, usable inside containers: aarch64 and arm
#     always, plus whatever MACI_BASE_ARCHES needs; never one for an arch this host runs natively
#   * local Python base images maci/python:bookworm-<debian arch> for each of MACI_BASE_ARCHES
#     (default amd64 arm64), built from Debian packages with mmdebstrap (tarballs cached in
#     $MACI_CACHE_DIR/base), no registry pulls at all.
#
# Base image names use Debian's architecture names, which a ci.toml asks for with
# `base_image = "maci/python:bookworm-{debian_arch}"`:
#   linux/amd64 amd64 | linux/arm64 arm64 | linux/arm/v7 armhf | linux/arm/v5, linux/arm/v6 armel
#   linux/386 i386 | linux/ppc64le ppc64el | linux/s390x s390x | linux/riscv64 riscv64
# e.g. MACI_BASE_ARCHES="amd64 arm64 armhf" scripts/setup-stack.sh for a linux/arm/v7 platform.
# (`{arch}` is the OCI name: the same as Debian's for amd64 and arm64 only.)
#
# A second run is quick: every step checks its result first and skips when it is already done.
# Stop the daemon started here with scripts/stop-stack.sh.
#
# Environment:
#   MACI_CACHE_DIR        cache root (default /var/cache/maci); rootfs tarballs in $MACI_CACHE_DIR/base
#   MACI_DOCKERD_PIDFILE  pidfile of the dockerd started here (default /var/run/maci-dockerd.pid)
#   MACI_DOCKERD_LOG      dockerd log (default /var/log/maci-dockerd.log)
#   MACI_BASE_SUITE       Debian suite of the base images (default bookworm)
#   MACI_BASE_PACKAGES    comma-separated packages in the base images
#                         (default python3,python3-venv,python3-pytest)
#   MACI_BASE_ARCHES      space-separated Debian architectures of the base images
#                         (default "amd64 arm64"; also armhf armel i386 ppc64el s390x riscv64)
#   MACI_IMAGE_REPO       repository of the base images (default maci/python; tags <suite>-<arch>)
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export NEEDRESTART_MODE=a
export LC_ALL=C.UTF-8

CACHE_DIR=${MACI_CACHE_DIR:-/var/cache/maci}
BASE_CACHE=$CACHE_DIR/base
PIDFILE=${MACI_DOCKERD_PIDFILE:-/var/run/maci-dockerd.pid}
DOCKERD_LOG=${MACI_DOCKERD_LOG:-/var/log/maci-dockerd.log}
SUITE=${MACI_BASE_SUITE:-bookworm}
BASE_PACKAGES=${MACI_BASE_PACKAGES:-python3,python3-venv,python3-pytest}
BASE_ARCHES=${MACI_BASE_ARCHES:-amd64 arm64}
IMAGE_REPO=${MACI_IMAGE_REPO:-maci/python}
LABEL_KEY=org.multiarch-ci.base-key
# Bump when the way a base image is made changes (invalidates cached tarballs and images).
RECIPE_VERSION=1

# arch-test: mmdebstrap refuses foreign architectures without it ("install arch-test for foreign
# architecture support"); it is only a Recommends, which --no-install-recommends skips.
APT_PACKAGES=(docker.io qemu-user-static mmdebstrap arch-test docker-registry skopeo git curl ca-certificates iproute2)
BUILDX_PLUGIN_DIR=/usr/libexec/docker/cli-plugins
BINFMT_DIR=/proc/sys/fs/binfmt_misc

log() { printf '[setup-stack] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

docker_platform() { # Debian arch -> docker platform
    case $1 in
        amd64) echo linux/amd64 ;; arm64) echo linux/arm64 ;; armhf) echo linux/arm/v7 ;;
        armel) echo linux/arm/v5 ;; i386) echo linux/386 ;; ppc64el) echo linux/ppc64le ;;
        s390x) echo linux/s390x ;; riscv64) echo linux/riscv64 ;; *) return 1 ;;
    esac
}
qemu_name() { # Debian arch -> the qemu-user binary suffix (and binfmt entry qemu-<name>)
    case $1 in
        amd64) echo x86_64 ;; arm64) echo aarch64 ;; armhf | armel) echo arm ;; i386) echo i386 ;;
        ppc64el) echo ppc64le ;; s390x) echo s390x ;; riscv64) echo riscv64 ;; *) return 1 ;;
    esac
}
# Refuse a misspelt arch before anything is installed or built.
for arch in $BASE_ARCHES; do
    docker_platform "$arch" >/dev/null \
        || die "MACI_BASE_ARCHES: unknown Debian architecture '$arch' (use amd64 arm64 armhf armel i386 ppc64el s390x riscv64)"
done

now() { date +%s.%N; }
PHASE_REPORT=()
phase_start() { PHASE_NAME=$1; PHASE_T0=$(now); log "== phase: $PHASE_NAME"; }
phase_end() {
    local dt
    dt=$(awk -v a="$PHASE_T0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    PHASE_REPORT+=("$(printf '%-14s %7s s  %s' "$PHASE_NAME" "$dt" "${1:-}")")
    log "== phase $PHASE_NAME done in ${dt}s ${1:+($1)}"
}
T_START=$(now)

# ---------------------------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------------------------
is_installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]; }

phase_start packages
missing=()
for p in "${APT_PACKAGES[@]}"; do is_installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    apt-get update -q </dev/null
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" </dev/null
    phase_end "installed ${missing[*]}"
else
    phase_end "all present"
fi

# openssh-server + socat: the ssh:// Docker runner in a network namespace that the remote-runner
# tests bring up (scripts/netns-runner.sh runs its own sshd there, with its own config and keys).
# The package must not start or leave running an sshd on this host: while it installs, a
# policy-rc.d that answers 101 ("action forbidden") stops invoke-rc.d from starting it.
phase_start ssh-runner
SSH_RUNNER_PACKAGES=(openssh-server socat iproute2)
missing=()
for p in "${SSH_RUNNER_PACKAGES[@]}"; do is_installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    policy_added=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    apt-get update -q </dev/null
    rc=0
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" </dev/null || rc=$?
    [ -z "$policy_added" ] || rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || die "apt-get install ${missing[*]} failed (exit $rc)"
    phase_end "installed ${missing[*]}"
else
    phase_end "all present"
fi

# ---------------------------------------------------------------------------------------------
# 2. buildx plugin (Debian 13's docker-buildx; runs on bookworm, needs only libc6 >= 2.34)
# ---------------------------------------------------------------------------------------------
phase_start buildx
if docker buildx version >/dev/null 2>&1 </dev/null; then
    phase_end "present: $(docker buildx version 2>/dev/null | head -n1)"
else
    # A private apt configuration: trixie sources, own lists/cache, so the system's apt state
    # (lists, caches, pinning) never sees trixie.
    APTD=$CACHE_DIR/apt-trixie
    mkdir -p "$APTD/lists/partial" "$APTD/cache/archives/partial" "$APTD/debs" "$APTD/empty.d"
    printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main\n' \
        >"$APTD/sources.list"
    APT_PRIV=(
        -o "Dir::Etc::sourcelist=$APTD/sources.list"
        -o "Dir::Etc::sourceparts=$APTD/empty.d"
        -o "Dir::Etc::preferencesparts=$APTD/empty.d"
        -o "Dir::State::lists=$APTD/lists"
        -o "Dir::State::extended_states=$APTD/extended_states"
        -o "Dir::Cache=$APTD/cache"
        -o "Dir::Cache::archives=$APTD/cache/archives"
        -o "APT::Get::List-Cleanup=false"
    )
    deb=$(ls -1t "$APTD"/debs/docker-buildx_*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
        apt-get -q "${APT_PRIV[@]}" update </dev/null
        chown _apt "$APTD/debs" 2>/dev/null || true   # apt downloads as _apt (sandbox)
        (cd "$APTD/debs" && apt-get -q "${APT_PRIV[@]}" download docker-buildx </dev/null)
        deb=$(ls -1t "$APTD"/debs/docker-buildx_*.deb | head -n1)
    fi
    log "extracting buildx plugin from $deb"
    x=$(mktemp -d)
    dpkg-deb -x "$deb" "$x"
    [ -f "$x/usr/libexec/docker/cli-plugins/docker-buildx" ] || die "no docker-buildx in $deb"
    install -D -m 0755 "$x/usr/libexec/docker/cli-plugins/docker-buildx" "$BUILDX_PLUGIN_DIR/docker-buildx"
    rm -rf "$x"
    docker buildx version </dev/null >/dev/null || die "docker buildx still not usable with $(command -v docker)"
    phase_end "installed $(docker buildx version 2>/dev/null | head -n1)"
fi

# ---------------------------------------------------------------------------------------------
# 3. dockerd
# ---------------------------------------------------------------------------------------------
docker_up() { timeout 10 docker info --format '{{.ServerVersion}}' >/dev/null 2>&1 </dev/null; }

phase_start dockerd
if docker_up; then
    phase_end "already answering"
else
    DOCKERD=$(command -v dockerd || true)
    [ -n "$DOCKERD" ] || die "dockerd not found"
    # A stale pidfile from a crashed daemon makes dockerd refuse to start.
    for f in /var/run/docker.pid "$PIDFILE"; do
        if [ -f "$f" ] && ! kill -0 "$(cat "$f" 2>/dev/null)" 2>/dev/null; then rm -f "$f"; fi
    done
    if [ -f "$PIDFILE" ]; then
        die "dockerd pid $(cat "$PIDFILE") from $PIDFILE is alive but docker info does not answer; see $DOCKERD_LOG"
    fi
    mkdir -p "$(dirname "$DOCKERD_LOG")" "$(dirname "$PIDFILE")"
    log "starting $DOCKERD (log: $DOCKERD_LOG)"
    # setsid: own session, so the daemon outlives this script's process group. The background
    # job is not a group leader, so setsid execs in place and $! is dockerd's own pid.
    setsid "$DOCKERD" </dev/null >>"$DOCKERD_LOG" 2>&1 &
    dpid=$!
    echo "$dpid" >"$PIDFILE"
    deadline=$(( $(date +%s) + 30 ))
    until docker_up; do
        if ! kill -0 "$dpid" 2>/dev/null; then
            rm -f "$PIDFILE"
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            die "dockerd exited during startup"
        fi
        [ "$(date +%s)" -lt "$deadline" ] || { tail -n 30 "$DOCKERD_LOG" >&2; die "dockerd not ready after 30 s"; }
        sleep 0.2
    done
    phase_end "started pid $dpid"
fi

# ---------------------------------------------------------------------------------------------
# 4. binfmt_misc: qemu handlers with flags OCF (F: interpreter opened at registration time,
#    so emulation works inside containers whose rootfs has no qemu binary).
# ---------------------------------------------------------------------------------------------
binfmt_ok() { # name interpreter
    local e=$BINFMT_DIR/$1 flags
    [ -f "$e" ] || return 1
    grep -qx enabled "$e" || return 1
    grep -qx "interpreter $2" "$e" || return 1
    flags=$(sed -n 's/^flags: *//p' "$e")
    [[ $flags == *O* && $flags == *C* && $flags == *F* ]]
}
binfmt_register() { # name magic mask interpreter
    local name=$1 magic=$2 mask=$3 interp=$4
    [ -x "$interp" ] || { log "skip binfmt $name: $interp missing"; return 0; }
    binfmt_ok "$name" "$interp" && return 0
    if [ -e "$BINFMT_DIR/$name" ]; then
        log "replacing binfmt $name ($(sed -n 's/^flags: *//p' "$BINFMT_DIR/$name"))"
        echo -1 >"$BINFMT_DIR/$name"
    fi
    # The kernel decodes the \xNN escapes itself: write them literally.
    printf '%s' ":$name:M::$magic:$mask:$interp:OCF" >"$BINFMT_DIR/register"
    binfmt_ok "$name" "$interp" || die "binfmt $name registration did not take"
    log "registered binfmt $name -> $interp (OCF)"
}
# Magic/mask as in qemu's scripts/qemu-binfmt-conf.sh (the same as ci/adapters/binfmt.py).
ELF64_LE_MASK='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
X86_MASK='\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
binfmt_for() { # qemu name -> registers qemu-<name> with its magic and mask
    local m k=$ELF64_LE_MASK
    case $1 in
        aarch64) m='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00' ;;
        arm) m='\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00' ;;
        riscv64) m='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xf3\x00' ;;
        x86_64) m='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00' k=$X86_MASK ;;
        i386) m='\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x03\x00' k=$X86_MASK ;;
        ppc64le) m='\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x15\x00'
            k='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\x00' ;;
        s390x) m='\x7fELF\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16'
            k='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff' ;;
        *) die "no binfmt magic for qemu-$1" ;;
    esac
    binfmt_register "qemu-$1" "$m" "$k" "/usr/bin/qemu-$1-static"
}

phase_start binfmt
if [ ! -e "$BINFMT_DIR/register" ]; then
    mount -t binfmt_misc binfmt_misc "$BINFMT_DIR"
fi
[ "$(cat "$BINFMT_DIR/status")" = enabled ] || echo 1 >"$BINFMT_DIR/status"
# arm64 and armhf always (the test suite emulates linux/arm64 and linux/arm/v7), then the base
# arches; an arch this kernel runs by itself (i386 on amd64) gets no handler: the kernel's own
# loader is faster, and a qemu handler for the host's own arch would capture every binary.
QEMU_NAMES=()
for arch in arm64 armhf $BASE_ARCHES; do
    name=$(qemu_name "$arch")
    [[ " ${QEMU_NAMES[*]} " == *" $name "* ]] && continue
    arch-test -n "$arch" >/dev/null 2>&1 && continue
    binfmt_for "$name"
    QEMU_NAMES+=("$name")
done
binfmt_summary=()
for name in "${QEMU_NAMES[@]}"; do
    binfmt_summary+=("$name: $(sed -n 's/^flags: *//p' "$BINFMT_DIR/qemu-$name" 2>/dev/null || echo none)")
done
phase_end "${binfmt_summary[*]:-native only}"

# ---------------------------------------------------------------------------------------------
# 5. Python base images from Debian packages
# ---------------------------------------------------------------------------------------------
base_key() { # arch -> short hash of everything that determines the rootfs
    printf 'v=%s suite=%s variant=apt arch=%s include=%s\n' "$RECIPE_VERSION" "$SUITE" "$1" "$BASE_PACKAGES" \
        | sha256sum | cut -c1-16
}
image_ok() { # tag key -> 0 if the image exists with the right key label
    local got
    got=$(docker image inspect -f "{{ index .Config.Labels \"$LABEL_KEY\" }}" "$1" 2>/dev/null </dev/null || true)
    [ "$got" = "$2" ]
}

mkdir -p "$BASE_CACHE"
phase_start rootfs
declare -A TAR KEY
need_build=()
jobs_pids=()
jobs_arches=()
for arch in $BASE_ARCHES; do
    KEY[$arch]=$(base_key "$arch")
    TAR[$arch]=$BASE_CACHE/$SUITE-$arch-${KEY[$arch]}.tar
    image_ok "$IMAGE_REPO:$SUITE-$arch" "${KEY[$arch]}" && continue
    need_build+=("$arch")
    [ -s "${TAR[$arch]}" ] && continue
    partial=${TAR[$arch]%.tar}.partial.tar
    rm -f "$partial"
    log "mmdebstrap $SUITE $arch -> ${TAR[$arch]} (log: ${TAR[$arch]%.tar}.log)"
    (
        mmdebstrap --variant=apt --include="$BASE_PACKAGES" --architectures="$arch" \
            "$SUITE" "$partial" </dev/null >"${TAR[$arch]%.tar}.log" 2>&1 \
            && mv -f "$partial" "${TAR[$arch]}"
    ) &
    jobs_pids+=("$!")
    jobs_arches+=("$arch")
done
failed=()
for i in "${!jobs_pids[@]}"; do
    if ! wait "${jobs_pids[$i]}"; then
        a=${jobs_arches[$i]}
        failed+=("$a")
        log "mmdebstrap for $a failed; last log lines:"
        tail -n 20 "${TAR[$a]%.tar}.log" >&2 || true
    fi
done
[ ${#failed[@]} -eq 0 ] || die "mmdebstrap failed for: ${failed[*]}"
phase_end "built: ${jobs_arches[*]:-none}"

phase_start images
for arch in "${need_build[@]}"; do
    tag=$IMAGE_REPO:$SUITE-$arch
    platform=$(docker_platform "$arch")
    ctx=$(mktemp -d "$BASE_CACHE/ctx.XXXXXX")
    # Hard link (same filesystem) instead of copying ~230 MB; copy as a fallback.
    ln "${TAR[$arch]}" "$ctx/rootfs.tar" 2>/dev/null || cp "${TAR[$arch]}" "$ctx/rootfs.tar"
    cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["python3"]
EOF
    log "importing ${TAR[$arch]} as $tag ($platform)"
    if ! docker buildx build --progress=plain --platform "$platform" --load \
            --label "$LABEL_KEY=${KEY[$arch]}" -t "$tag" "$ctx" </dev/null; then
        rm -rf "$ctx"
        die "docker buildx build of $tag failed"
    fi
    rm -rf "$ctx"
    image_ok "$tag" "${KEY[$arch]}" || die "$tag built but label check failed"
    # 32-bit arm: the variant tells armhf (v7) from armel (v5) apart, so it must match too
    got=$(docker image inspect -f '{{.Os}}/{{.Architecture}}{{with .Variant}}/{{.}}{{end}}' "$tag" </dev/null)
    case $platform in linux/arm/*) want=$platform ;; *) want=$(echo "$platform" | cut -d/ -f1,2); got=$(echo "$got" | cut -d/ -f1,2) ;; esac
    [ "$got" = "$want" ] || die "$tag has platform $got, expected $want"
done
phase_end "built: ${need_build[*]:-none}"

# ---------------------------------------------------------------------------------------------
# Supply chain: Docker 26 with the containerd image store (push by digest, reproducible
# digests, attestations) side by side with the system daemon, and cosign. Both from Debian 13
# packages through a private apt configuration; the system's apt and dockerd are untouched.
# ---------------------------------------------------------------------------------------------
phase_start "docker26 + cosign"
SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$SCRIPTS/install-docker26.sh" start || die "Docker 26 (containerd image store) did not start"
bash "$SCRIPTS/install-cosign.sh" --link || die "cosign install failed"
phase_end "$(bash "$SCRIPTS/install-docker26.sh" status 2>&1 | head -n1); $(cosign version 2>/dev/null | sed -n 's/^GitVersion: *//p')"

# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------
total=$(awk -v a="$T_START" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
{
    echo "---------------- setup-stack summary ----------------"
    echo "docker client : $(command -v docker) $(docker version -f '{{.Client.Version}}' 2>/dev/null </dev/null)"
    echo "docker server : $(docker version -f '{{.Server.Version}} {{.Server.Os}}/{{.Server.Arch}}' 2>/dev/null </dev/null)"
    echo "dockerd pid   : $(cat "$PIDFILE" 2>/dev/null || echo 'not started by this script')"
    echo "buildx        : $(docker buildx version 2>/dev/null </dev/null | head -n1)"
    for n in "${QEMU_NAMES[@]}"; do
        [ -f "$BINFMT_DIR/qemu-$n" ] && echo "binfmt qemu-$n : $(sed -n 's/^flags: *//p' "$BINFMT_DIR/qemu-$n") $(sed -n 's/^interpreter *//p' "$BINFMT_DIR/qemu-$n")"
    done
    echo "images        :"
    for arch in $BASE_ARCHES; do
        docker image inspect -f "  {{index .RepoTags 0}} {{.Os}}/{{.Architecture}}{{with .Variant}}/{{.}}{{end}} {{.Size}} bytes key={{ index .Config.Labels \"$LABEL_KEY\" }}" \
            "$IMAGE_REPO:$SUITE-$arch" 2>/dev/null </dev/null || echo "  $IMAGE_REPO:$SUITE-$arch MISSING"
    done
    echo "phases        :"
    for line in "${PHASE_REPORT[@]}"; do echo "  $line"; done
    echo "  total          $total s"
}
