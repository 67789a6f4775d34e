#!/usr/bin/env bash
# Stop the dockerd that scripts/setup-stack.sh started (by its pidfile). Idempotent: does nothing
# when there is no pidfile or the process is gone. Never touches a daemon it did not start.
#
# Environment: MACI_DOCKERD_PIDFILE (default /var/run/maci-dockerd.pid), MACI_STOP_TIMEOUT (s, default 30)
set -euo pipefail

PIDFILE=${MACI_DOCKERD_PIDFILE:-/var/run/maci-dockerd.pid}
TIMEOUT=${MACI_STOP_TIMEOUT:-30}

log() { printf '[stop-stack] %s\n' "$*" >&2; }

if [ ! -f "$PIDFILE" ]; then
    log "no pidfile $PIDFILE: nothing to stop"
    exit 0
fi
pid=$(cat "$PIDFILE" 2>/dev/null || true)
if ! [[ $pid =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
    log "dockerd ${pid:-?} not running; removing stale $PIDFILE"
    rm -f "$PIDFILE"
    exit 0
fi
comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
if [ "$comm" != dockerd ]; then
    log "pid $pid is '$comm', not dockerd (pid reused?); removing stale $PIDFILE"
    rm -f "$PIDFILE"
    exit 0
fi

log "stopping dockerd pid $pid"
kill -TERM "$pid"
deadline=$(( $(date +%s) + TIMEOUT ))
while kill -0 "$pid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        log "dockerd $pid still alive after ${TIMEOUT}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        break
    fi
    sleep 0.2
done
rm -f "$PIDFILE"
log "stopped"
