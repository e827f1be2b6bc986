#!/bin/sh
# palisade-deploy.sh: the installer image's entrypoint, run by the palisade-deploy DaemonSet
# on every node labelled palisade.dev/install=true (and by palisade-cleanup to remove it).
#
#   palisade-deploy.sh install    palisade install under the host's root, restart containerd
#                                 when its configuration changed, label the node
#                                 palisade.dev/runtime=installed, then wait
#   palisade-deploy.sh uninstall  remove the label, palisade uninstall, restart containerd,
#                                 then wait
#   palisade-deploy.sh unlabel    remove the label only (the DaemonSet's preStop)
#
# The host's directories are mounted under HOST_ROOT (see palisade-deploy.yaml); the pod
# runs with hostPID, so PID 1 is the host's init and nsenter reaches its systemd.
set -eu

HOST_ROOT=${HOST_ROOT:-/host}
CONTAINERD_CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
CONTAINERD_UNIT=${CONTAINERD_UNIT:-containerd}
BIN_DIR=${BIN_DIR:-/usr/local/bin}
CONFIG_DIR=${CONFIG_DIR:-/etc/palisade}
STATE_DIR=${STATE_DIR:-/var/lib/palisade}
LOG_DIR=${LOG_DIR:-/var/log/palisade}
NODE_LABEL=${NODE_LABEL:-palisade.dev/runtime}
PALISADE=${PALISADE:-/opt/palisade/bin/palisade}
READY_FILE=${READY_FILE:-/tmp/palisade-deploy.ready}
SA=${SERVICE_ACCOUNT_DIR:-/var/run/secrets/kubernetes.io/serviceaccount}

log() { echo "palisade-deploy: $*" >&2; }
die() { log "$*"; exit 1; }

# A command in the host's namespaces (its mount namespace has systemctl and containerd).
on_host() { nsenter --target 1 --mount --uts --ipc --net --pid -- "$@"; }

# palisade install|uninstall with the node's paths, every file under the host root.
palisade_on_node() {
    cmd=$1
    shift
    "$PALISADE" "$cmd" --host-root "$HOST_ROOT" --containerd-config "$CONTAINERD_CONFIG" \
        --bin-dir "$BIN_DIR" --config-dir "$CONFIG_DIR" --state-dir "$STATE_DIR" \
        --log-dir "$LOG_DIR" "$@"
}

# The config version the host's containerd reads: 2 for 1.6/1.7, 3 for 2.x; empty if unknown.
config_version() {
    v=$(on_host containerd --version 2>/dev/null | awk '{print $3}') || v=
    major=${v#v}
    major=${major%%.*}
    case "$major" in
        1) echo 2 ;;
        [2-9]) echo 3 ;;
        *) echo ;;
    esac
}

# Sets the node's label to $1, or removes it when $1 is empty (a JSON merge patch).
label() {
    [ -n "${NODE_NAME:-}" ] || die "NODE_NAME is not set (downward API spec.nodeName)"
    if [ -n "$1" ]; then
        value="\"$1\""
    else
        value=null
    fi
    curl -fsS --retry 5 --retry-connrefused --max-time 30 \
        --cacert "$SA/ca.crt" \
        -H "Authorization: Bearer $(cat "$SA/token")" \
        -H "Content-Type: application/merge-patch+json" \
        -X PATCH \
        -d "{\"metadata\":{\"labels\":{\"$NODE_LABEL\":$value}}}" \
        "https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT}/api/v1/nodes/${NODE_NAME}" \
        >/dev/null || die "node $NODE_NAME: label $NODE_LABEL: the API server refused the patch"
}

restart_containerd() {
    log "restarting $CONTAINERD_UNIT on the host"
    on_host systemctl restart "$CONTAINERD_UNIT"
    i=0
    until on_host systemctl is-active --quiet "$CONTAINERD_UNIT"; do
        i=$((i + 1))
        [ "$i" -lt 60 ] || die "$CONTAINERD_UNIT: not active 60 s after its restart"
        sleep 1
    done
}

# Stays up until the pod is stopped (SIGTERM ends the wait at once).
wait_forever() {
    sleeper=
    trap '[ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null; exit 0' TERM INT
    while :; do
        sleep 3600 &
        sleeper=$!
        wait "$sleeper" || true
    done
}

case "${1:-install}" in
    install)
        version=$(config_version)
        [ -n "$version" ] || log "containerd --version on the host: unknown; a new config gets version 2"
        out=$(palisade_on_node install ${version:+--config-version "$version"}) ||
            die "palisade install failed"
        echo "$out"
        case "$out" in
            *"already present"*) log "containerd config unchanged; no restart" ;;
            *) restart_containerd ;;
        esac
        label installed
        touch "$READY_FILE"
        log "node ${NODE_NAME}: palisade installed, labelled $NODE_LABEL=installed"
        wait_forever
        ;;
    uninstall)
        label ""
        palisade_on_node uninstall || die "palisade uninstall failed"
        restart_containerd
        touch "$READY_FILE"
        log "node ${NODE_NAME}: palisade removed"
        wait_forever
        ;;
    unlabel)
        label ""
        ;;
    *)
        die "usage: palisade-deploy.sh install|uninstall|unlabel"
        ;;
esac
