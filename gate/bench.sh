#!/usr/bin/env bash
# Throughput and latency of the gate, in one run: wrk against (a) the upstream directly, (b) the
# gate in block mode with learned rules in front of it, (c) nginx as a plain reverse proxy to the
# same upstream. Prints a markdown table (docs/benchmarks.md records it). Needs wrk and nginx
# (`apt-get install -y wrk nginx-light`). Loopback only. Nothing is asserted.
#
#   gate/bench.sh            # DURATION=10 CONNS="32 1" THREADS=2 RUNS=2 LEARN=2000 by default
#
# Each entry of CONNS is one load level: 32 connections saturate the machine (throughput, and
# latency that is mostly queueing); 1 connection (one wrk thread) shows the latency each hop
# adds to a request that does not wait behind others.
#
# Everything it starts is stopped by PID and its temporary directory removed, also on failure.
set -euo pipefail

DURATION=${DURATION:-10}
CONNS=${CONNS:-32 1}
THREADS=${THREADS:-2}
RUNS=${RUNS:-2}
LEARN=${LEARN:-2000}
UP_PORT=${UP_PORT:-18180}
GATE_PORT=${GATE_PORT:-18181}
NGINX_PORT=${NGINX_PORT:-18182}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# shellcheck source=gate/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

"$bin" upstream "127.0.0.1:$UP_PORT" >"$tmp/upstream.out" 2>"$tmp/upstream.out.err" &
pids+=($!)
wait_ready "${pids[-1]}" "$tmp/upstream.out"

"$bin" gate "127.0.0.1:$GATE_PORT" "127.0.0.1:$UP_PORT" "$LEARN" >"$tmp/gate.out" 2>"$tmp/gate.out.err" &
gate_pid=$!
pids+=("$gate_pid")
wait_ready "$gate_pid" "$tmp/gate.out"

nginx_conf
nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/logs/error.log" \
    -g 'daemon off;' >"$tmp/nginx/out" 2>&1 &
pids+=($!)
wait_port "${pids[-1]}" "$NGINX_PORT"

# load <duration> <port> [connections]
load() {
    local c=${3:-32} t=$THREADS
    [ "$t" -gt "$c" ] && t=$c
    wrk -t"$t" -c"$c" -d"$1" --latency \
        -H "User-Agent: bench/1.0" -H "Accept: application/json" \
        "http://127.0.0.1:$2/search?q=red+shoes"
}

# One short unrecorded warm-up per target.
for port in "$UP_PORT" "$GATE_PORT" "$NGINX_PORT"; do
    load 2s "$port" >/dev/null
done

rss_before=$(rss_kib "$gate_pid")
rss_after=()
for run in $(seq 1 "$RUNS"); do
    for conns in $CONNS; do
    for case in direct gate nginx; do
        case $case in
        direct) port=$UP_PORT ;;
        gate) port=$GATE_PORT ;;
        nginx) port=$NGINX_PORT ;;
        esac
        load "${DURATION}s" "$port" "$conns" >"$tmp/wrk-$case-$run-$conns.txt"
        if [ "$case" = gate ]; then rss_after+=("$(rss_kib "$gate_pid")"); fi
    done
    done
done

# summary <file>: requests/s, p50 µs, p99 µs, requests, non-2xx, socket errors
summary() {
    awk '
        function us(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v + 0 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v * 1000 }
            if (v ~ /s$/) { sub(/s$/, "", v); return v * 1000000 }
            return v
        }
        /^ +50%/ { p50 = us($2) }
        /^ +99%/ { p99 = us($2) }
        /requests in/ { total = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx/ { bad = $NF }
        /Socket errors/ { err = $0; sub(/.*Socket errors: /, "", err) }
        END { printf "%.0f %.0f %.0f %s %d %s\n", rps, p50, p99, total, bad, (err == "" ? "none" : err) }
    ' "$1"
}

echo "Measured by \`gate/bench.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores, kernel $(uname -r)," \
    "load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg))."
echo "wrk -t$THREADS (at most one per connection) -c{$CONNS} -d${DURATION}s --latency, GET /search?q=red+shoes;" \
    "gate learned from $LEARN requests."
echo
echo "| conns | run | target | requests/s | p50 (µs) | p99 (µs) | requests | non-2xx | socket errors |"
echo "|---|---|---|---|---|---|---|---|---|"
gate_total=0
for conns in $CONNS; do
for run in $(seq 1 "$RUNS"); do
    for case in direct gate nginx; do
        read -r rps p50 p99 total bad err < <(summary "$tmp/wrk-$case-$run-$conns.txt")
        eval "p50_$case=$p50; rps_$case=$rps"
        [ "$case" = gate ] && gate_total=$((gate_total + total))
        echo "| $conns | $run | $case | $rps | $p50 | $p99 | $total | $bad | $err |"
    done
    echo "| $conns | $run | p50 added by gate / by nginx (µs) | | $((p50_gate - p50_direct)) / $((p50_nginx - p50_direct)) | | | | |"
    echo "| $conns | $run | throughput gate / nginx | $(awk -v g="$rps_gate" -v n="$rps_nginx" 'BEGIN { printf "%.2f", g / n }') | | | | | |"
done
done
echo
echo "Gate process VmRSS: ${rss_before} KiB after learning, before load; after each gate run: ${rss_after[*]} KiB."

kill -TERM "$gate_pid"
wait "$gate_pid" || true
echo "Gate counters at exit: $(grep '^requests=' "$tmp/gate.out" || echo 'none printed');" \
    "wrk sent $gate_total requests to it in the recorded runs (plus the warm-up)."
