#!/usr/bin/env bash
# What one proxied request costs the gate and nginx, counted rather than timed, so that it can
# be measured on a busy machine: user-space instructions (callgrind), system calls and CPU time
# (perf's software counters, which work without hardware counters) per request, for a fixed
# number of requests shaped like wrk's load in gate/bench.sh. Needs valgrind, perf and nginx.
#
#   gate/icount.sh             # REQUESTS=20000 CG_REQUESTS=2000 CONNS=32 LEARN=2000 by default
#   TARGETS=gate KEEP_CG=/tmp/cg gate/icount.sh     # the gate only, keeping callgrind's output
#   CG_REQUESTS=0 gate/icount.sh                    # system calls and CPU time only
#
# The gate runs as in gate/bench.sh: learned from LEARN requests, then in block mode, so every
# counted request is decided against learned rules. nginx is the same plain reverse proxy (one
# worker, keepalive 64 to the upstream). Counters are zeroed after a warm-up and read after
# the counted requests, so start-up and learning are not included. Under callgrind the
# process runs about 50 times slower; its instruction count does not depend on the load.
#
# Everything it starts is stopped by PID and its temporary directory removed, also on failure.
set -euo pipefail

REQUESTS=${REQUESTS:-20000}
CG_REQUESTS=${CG_REQUESTS:-2000}
CONNS=${CONNS:-32}
LEARN=${LEARN:-2000}
UP_PORT=${UP_PORT:-18190}
GATE_PORT=${GATE_PORT:-18191}
NGINX_PORT=${NGINX_PORT:-18192}
TARGETS=${TARGETS:-gate nginx}

# callgrind starts processes about 50 times slower.
READY_SECS=180
PORT_SECS=60
# shellcheck source=gate/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

drive() { "$bin" drive "127.0.0.1:$1" "$CONNS" "$2" >/dev/null; }

# stop <pid>: stops one process this script started and waits for it.
stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# start <target> [wrapper...]: starts the gate or nginx (master process off, so that the one
# process is the worker) behind an optional wrapper; sets `pid` to its PID. Not run in a
# subshell, so that `pids` (what cleanup stops) knows the process.
start() {
    local what=$1
    shift
    case $what in
    gate)
        "$@" "$bin" gate "127.0.0.1:$GATE_PORT" "127.0.0.1:$UP_PORT" "$LEARN" \
            >"$tmp/gate.out" 2>"$tmp/gate.out.err" &
        pids+=($!)
        wait_ready "$!" "$tmp/gate.out"
        ;;
    nginx)
        "$@" nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/logs/error.log" \
            -g 'daemon off; master_process off;' >"$tmp/nginx/out" 2>&1 &
        pids+=($!)
        wait_port "$!" "$NGINX_PORT"
        ;;
    esac
    pid=${pids[-1]}
}

# cpu_ticks <pid>: user and system CPU time of a process, in clock ticks.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'; }

port_of() { if [ "$1" = gate ]; then echo "$GATE_PORT"; else echo "$NGINX_PORT"; fi; }

"$bin" upstream "127.0.0.1:$UP_PORT" >"$tmp/upstream.out" 2>"$tmp/upstream.out.err" &
pids+=($!)
wait_ready "${pids[-1]}" "$tmp/upstream.out"
nginx_conf

echo "Measured by \`gate/icount.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') ($(nproc) cores," \
    "load average before: $(cut -d' ' -f1-3 /proc/loadavg)); $CONNS connections," \
    "GET /search?q=red+shoes; gate learned from $LEARN requests, block mode."
echo
echo "| target | instructions / request (callgrind, $CG_REQUESTS requests) | system calls / request | CPU µs / request | context switches / request ($REQUESTS requests) |"
echo "|---|---|---|---|---|"
for what in $TARGETS; do
    port=$(port_of "$what")

    start "$what"
    drive "$port" 2000
    perf stat -x, -o "$tmp/perf-$what" -e raw_syscalls:sys_enter,task-clock,context-switches \
        -p "$pid" &
    perf_pid=$!
    pids+=("$perf_pid")
    sleep 0.5
    read -r u0 s0 < <(cpu_ticks "$pid")
    drive "$port" "$REQUESTS"
    read -r u1 s1 < <(cpu_ticks "$pid")
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    if [ -n "${STRACE:-}" ]; then
        strace -c -f -p "$pid" -o "$tmp/strace-$what" &
        strace_pid=$!
        pids+=("$strace_pid")
        sleep 0.5
        drive "$port" 5000
        kill -INT "$strace_pid"
        wait "$strace_pid" || true
        echo "$what: system calls for 5000 requests" >&2
        cat "$tmp/strace-$what" >&2
    fi
    stop "$pid"
    read -r sys cpu_ms cs < <(awk -F, '
        $3 == "raw_syscalls:sys_enter" { s = $1 }
        $3 == "task-clock" { t = $1 }
        $3 == "context-switches" { c = $1 }
        END { print s, t, c }' "$tmp/perf-$what")

    ir=0
    if [ "$CG_REQUESTS" -gt 0 ]; then
        start "$what" valgrind --tool=callgrind -q --callgrind-out-file="$tmp/cg-$what.%p"
        drive "$port" 200
        callgrind_control -z "$pid" >/dev/null 2>&1
        drive "$port" "$CG_REQUESTS"
        callgrind_control -d "$pid" >/dev/null 2>&1
        ir=$(cat "$tmp"/cg-"$what".*.* 2>/dev/null | awk '/^summary:/ { s += $2 } END { print s + 0 }')
        if [ -n "${KEEP_CG:-}" ]; then cp "$tmp"/cg-"$what".*.* "$KEEP_CG/" 2>/dev/null || true; fi
        stop "$pid"
    fi

    awk -v what="$what" -v ir="$ir" -v n="$CG_REQUESTS" -v sys="$sys" -v cpu="$cpu_ms" \
        -v cs="$cs" -v r="$REQUESTS" -v hz="$(getconf CLK_TCK)" -v u=$((u1 - u0)) -v k=$((s1 - s0)) 'BEGIN {
            per = n > 0 ? sprintf("%.0f", ir / n) : "not counted"
            printf "| %s | %s | %.2f | %.1f (%.0f%% in the kernel) | %.2f |\n", what, per, sys / r,
                cpu * 1000 / r, (u + k) ? 100 * k / (u + k) : 0, cs / r
        }'
done
