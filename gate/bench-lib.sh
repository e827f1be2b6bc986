# Shared by gate/bench.sh and gate/icount.sh (sourced, not run): the gate-bench binary, a
# temporary directory and the processes started, stopped by PID on exit, readiness waits and
# the nginx plain reverse proxy's configuration.
#
# The sourcing script sets UP_PORT and NGINX_PORT, and may set READY_SECS (default 60) and
# PORT_SECS (default 10) for slow starts (callgrind); BIN names a gate-bench built otherwise.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
if [ -z "${BIN:-}" ]; then
    (cd "$root" && cargo build --release -q -p palisade-gate --example gate-bench) >&2
fi
bin=${BIN:-$target/release/examples/gate-bench}

tmp=$(mktemp -d "/tmp/palisade-$(basename "$0" .sh).XXXXXX")
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_ready <pid> <file>: until <file> has a line starting with "ready", or the process exits.
wait_ready() {
    local i secs=${READY_SECS:-60}
    for i in $(seq 1 $((secs * 10))); do
        if grep -q '^ready' "$2" 2>/dev/null; then return 0; fi
        if ! kill -0 "$1" 2>/dev/null; then
            echo "process $1 exited before it was ready:" >&2
            cat "$2" "$2.err" >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.1
    done
    echo "process $1 not ready after $secs s" >&2
    return 1
}

# wait_port <pid> <port>: until something accepts on 127.0.0.1:<port>.
wait_port() {
    local i secs=${PORT_SECS:-10}
    for i in $(seq 1 $((secs * 10))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
        kill -0 "$1" 2>/dev/null || { echo "process $1 exited" >&2; return 1; }
        sleep 0.1
    done
    echo "nothing listens on $2 after $secs s" >&2
    return 1
}

# nginx_conf: nginx as a plain reverse proxy (one worker, keepalive 64 to the upstream) on
# NGINX_PORT, under $tmp/nginx; `daemon` and `master_process` are left to the command line.
nginx_conf() {
    mkdir -p "$tmp/nginx/logs"
    cat >"$tmp/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    upstream service { server 127.0.0.1:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://service;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
}
