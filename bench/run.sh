#!/usr/bin/env bash
# make bench: chatbridge's benchmark suite, with its baselines, and
# docs/BENCHMARKS.md written from the run.
#
#   bench/run.sh                 the suite (a few minutes)
#   BENCH_QUICK=1 bench/run.sh   smoke mode (seconds): every scenario once,
#                                tiny; writes build/bench/BENCHMARKS-smoke.md
#
# Knobs: BENCH_RUNS (3), BENCH_DURATION (2 s per measured window),
# BENCH_BROWSER (nginx: browsers reach the sidecar through nginx, as in
# make run; direct: straight to the sidecar's socket), BENCH_ONLY (a list of
# scenarios: nonstream stream flood hold rtt awake), BENCH_OUT (the report),
# BENCH_KEEP=1 (keep the temp folder), BENCH_SERVER_CPUS / BENCH_LOAD_CPUS
# (taskset lists; by default the first and the second CPU this process may
# run on: a container's --cpuset-cpus=2,3 gives 2 and 3), BENCH_PLAN=1 (print
# the CPUs it would use, and stop), BUILD (make's build folder, build/).
#
# Everything runs on loopback ports chosen at run time from a temp folder;
# every process started here is stopped by its pid, also on failure, and
# every client it runs has a time limit.

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-build}
case "$build" in
    /*) ;;
    *) build=$top/$build ;;
esac
bin=$build/bench
module=$build/nginx/ngx_http_chatbridge_module.so
sidecar=$build/chatbridge-sidecar

quick=${BENCH_QUICK:-0}
browser_via=${BENCH_BROWSER:-nginx}
only=${BENCH_ONLY:-nonstream stream flood hold rtt awake}

if [ "$quick" = 1 ]; then
    runs=${BENCH_RUNS:-1}
    duration=${BENCH_DURATION:-0.3}
    warmup=0.1
    concs=(1 8)
    holds=(200)
    hold_ms=1000
    rtt_n=200
    out=${BENCH_OUT:-$build/bench/BENCHMARKS-smoke.md}
else
    runs=${BENCH_RUNS:-3}
    duration=${BENCH_DURATION:-2}
    warmup=0.5
    concs=(1 8 64)
    holds=(1000 5000 10000)
    hold_ms=10000
    rtt_n=2000
    out=${BENCH_OUT:-$top/docs/BENCHMARKS.md}
fi

hold_chunks=22
hold_gap=$((hold_ms / (hold_chunks - 1)))
hold_conns=48           # browser connections for held streams (256 each)
stream_chunks=200

# --- the machine and its cores: the CPUs this process may run on (its
#     affinity: a container's cpuset, taskset), which need not be 0 .. N-1

# a CPU list ("0-2,5") as the CPUs in it, one a line; nothing if it is not
# one
cpu_list() {
    local part
    local -a parts
    IFS=, read -r -a parts <<< "$1"
    for part in "${parts[@]}"; do
        if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then
            seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
        elif [[ "$part" =~ ^[0-9]+$ ]]; then
            echo "$part"
        else
            return 1
        fi
    done
}

cpus=()
if allowed=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' \
             "/proc/$$/status" 2>/dev/null) \
   && list=$(cpu_list "$allowed"); then
    mapfile -t cpus <<< "$list"
fi
if [ ${#cpus[@]} -eq 0 ] || [ -z "${cpus[0]}" ]; then
    mapfile -t cpus < <(seq 0 $(($(nproc) - 1)))
fi
ncpu=${#cpus[@]}

if [ "$ncpu" -ge 2 ]; then
    server_cpus=${BENCH_SERVER_CPUS:-${cpus[0]}}
    load_cpus=${BENCH_LOAD_CPUS:-${cpus[1]}}
    pin_server=(taskset -c "$server_cpus")
    pin_load=(taskset -c "$load_cpus")
    pinning="nginx and the sidecar (and the baselines' servers) on CPU \
$server_cpus; the load generator and the bench browser on CPU $load_cpus \
(taskset)"
else
    server_cpus=""
    load_cpus=""
    pin_server=()
    pin_load=()
    pinning="one CPU: servers and load share it (no pinning possible)"
fi

if [ "${BENCH_PLAN:-0}" = 1 ]; then
    echo "cpus=${cpus[*]}"
    echo "server=$server_cpus"
    echo "load=$load_cpus"
    if [ "$ncpu" -ge 2 ]; then
        echo "spinners=${cpus[*]}"
    else
        echo "spinners="
    fi
    echo "pinning=$pinning"
    exit 0
fi

for f in "$module" "$sidecar" "$bin/cb_load" "$bin/cb_browser" \
         "$bin/cb_sse_server" "$bin/cb_spin"; do
    if [ ! -x "$f" ] && [ ! -f "$f" ]; then
        echo "bench: $f is missing; run make bench" >&2
        exit 1
    fi
done

started=$(date +%s)

dir=$(mktemp -d "${TMPDIR:-/tmp}/cb-bench.XXXXXX")
chmod 755 "$dir"
mkdir -p "$dir/tmp"
chmod 1777 "$dir/tmp"

pids=()         # what runs now, started here

# stop_pid PID [SIGNAL]: SIGNAL (TERM), KILL after 5 s; then it is no
# longer ours (its pid may be reused): out of pids
stop_pid() {
    local p=$1 sig=${2:-TERM} i
    [ -n "$p" ] || return 0
    kill "-$sig" "$p" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    for i in "${!pids[@]}"; do
        if [ "${pids[$i]}" = "$p" ]; then
            unset 'pids[i]'
        fi
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for p in "${pids[@]}"; do
        stop_pid "$p"
    done
    if [ "${BENCH_KEEP:-0}" = 1 ] || [ $rc != 0 ]; then
        echo "bench: files kept in $dir" >&2
    else
        rm -rf "$dir"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# descriptors: as many as the hard limit allows (10,000 held streams need
# 10,000 in nginx and in the load generator)
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
[ "$nofile" -gt 1048576 ] && nofile=1048576
ulimit -n "$nofile"

say() { echo "bench: $*" >&2; }

say "$pinning"
say "temp folder $dir"

# how busy the machine is without us: other work on it makes noisy figures
machine_busy() {
    awk '/^cpu / { print $2 + $3 + $4 + $9; exit }' /proc/stat
}
b0=$(machine_busy)
sleep 1
idle_other=$(( ($(machine_busy) - b0) * 100 / $(getconf CLK_TCK) ))
if [ "$idle_other" -gt 10 ]; then
    say "warning: before the run, other processes use ${idle_other}% of a" \
        "CPU; the figures will be noisy"
fi

free_port() {
    perl -MIO::Socket::INET -e '
        my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1",
                                      LocalPort => 0, Listen => 1)
            or die "no free port: $!";
        print $s->sockport;'
}

# the bench's clients: a hung one fails the run instead of holding it
limit() {       # SECONDS command...
    local s=$1
    shift
    timeout --kill-after=5 "$s" "$@"
}

wait_for() {    # command... ; up to 10 s
    for _ in $(seq 200); do
        if "$@" 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

token=bench-$RANDOM$RANDOM

# --- request bodies

ask() {    # ask FILE STREAM DIRECTIVES: a request body for the bench browser
    printf '{"model":"bench",%s"messages":[{"role":"user","content":"%s"}]}' \
        "$2" "$3 benchmark" > "$1"
}

ask "$dir/nonstream.json" "" "[[chunks 1]]"
ask "$dir/stream.json" '"stream":true,' "[[chunks $stream_chunks]]"
ask "$dir/hold.json" '"stream":true,' \
    "[[chunks $hold_chunks]] [[gap $hold_gap]]"

# --- servers

port=0
nginx_pid=""
sidecar_pid=""
browser_pid=""
direct_pid=""
direct_port=0
workers=""

# $1: nginx worker_connections (enough for the held streams)
start_bridge() {
    local wc=${1:-4096}

    port=$(free_port)
    rm -f "$dir/sidecar.sock" "$dir/ws.sock"

    local group=()
    local user=""
    if [ "$(id -u)" = 0 ]; then
        group=(--control-group nogroup)
        user="user nobody nogroup;"
    fi

    "${pin_server[@]}" "$sidecar" --control "$dir/sidecar.sock" \
        --listen "unix:$dir/ws.sock" --token "$token" \
        --per-browser 256 --log-level warn "${group[@]}" \
        >> "$dir/sidecar.log" 2>&1 &
    sidecar_pid=$!
    pids+=("$sidecar_pid")

    if ! wait_for test -S "$dir/sidecar.sock" -a -S "$dir/ws.sock"; then
        say "the sidecar did not start:"; tail -5 "$dir/sidecar.log" >&2
        exit 1
    fi

    local json hold_rate
    json=$(cat "$dir/answer.json" 2>/dev/null || echo '{}')

    # limit_rate sends rate * (seconds + 1) bytes: the answer and a header
    # of about 160 bytes take hold_ms
    hold_rate=$(( (${#json} + 160) * 1000 / (hold_ms + 1000) + 1 ))
    json=${json//\\/\\\\}
    json=${json//\'/\\\'}

    cat > "$dir/nginx.conf" <<CONF
load_module $module;
$user
worker_processes 1;
worker_rlimit_nofile $nofile;
daemon off;
master_process on;
pid $dir/nginx.pid;
lock_file $dir/nginx.lock;
error_log $dir/error.log notice;
# a graceful stop (QUIT) does not wait for held streams and browsers'
# WebSockets (proxy_read_timeout 1h) longer than stop_pid does
worker_shutdown_timeout 3s;

events {
    worker_connections $wc;
}

http {
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    access_log off;
    keepalive_requests 1000000;

    chatbridge_sidecar $dir/sidecar.sock;

    server {
        listen 127.0.0.1:$port backlog=16384;

        location /v1/ {
            chatbridge;
        }

        location = /chatbridge/ws {
            proxy_pass http://unix:$dir/ws.sock:;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_buffering off;
        }

        location = /chatbridge/status {
            chatbridge_status;
        }

        # the baselines: the same bytes from nginx alone
        location = /baseline/json {
            default_type application/json;
            return 200 '$json';
        }

        location = /baseline/sse {
            default_type text/event-stream;
            alias $dir/answer.sse;
        }

        # nginx alone holding a request: the same answer, trickled over
        # about ${hold_ms} ms
        location = /baseline/hold {
            default_type application/json;
            limit_rate $hold_rate;
            return 200 '$json';
        }
    }
}
CONF

    "${pin_server[@]}" /usr/sbin/nginx -p "$dir" -c "$dir/nginx.conf" \
        -e "$dir/error.log" >> "$dir/nginx.out" 2>&1 &
    nginx_pid=$!
    pids+=("$nginx_pid")

    if ! wait_for curl -sf -m 2 -o /dev/null \
            "http://127.0.0.1:$port/v1/models"
    then
        say "nginx did not start:"; tail -5 "$dir/error.log" >&2
        exit 1
    fi

    workers=$(tr ' ' '\n' < "/proc/$nginx_pid/task/$nginx_pid/children" \
              | grep -v '^$' | tr '\n' ',' | sed 's/,$//')
    [ -n "$workers" ] || { say "no nginx workers"; exit 1; }

    if ! wait_for linked; then
        say "the workers did not link to the sidecar"; exit 1
    fi
}

linked() {
    local status
    status=$(curl -sf -m 2 "http://127.0.0.1:$port/chatbridge/status") \
        && [[ "$status" == *'"link":"ready"'* ]]
}

# $1: WebSocket connections; more: cb_browser options
start_browser() {
    local conns=${1:-4}
    shift || true
    local url=(--connect "127.0.0.1:$port")

    if [ "$browser_via" = direct ]; then
        url=(--connect "unix:$dir/ws.sock")
    fi

    rm -f "$dir/browser.ready"
    "${pin_load[@]}" "$bin/cb_browser" "${url[@]}" --token "$token" \
        --conns "$conns" --concurrency 256 "$@" \
        --ready-file "$dir/browser.ready" >> "$dir/browser.log" 2>&1 &
    browser_pid=$!
    pids+=("$browser_pid")

    if ! wait_for test -e "$dir/browser.ready"; then
        say "the bench browser did not connect:"
        tail -5 "$dir/browser.log" >&2
        exit 1
    fi
}

stop_bridge() {
    stop_pid "$browser_pid"
    stop_pid "$nginx_pid" QUIT
    stop_pid "$sidecar_pid"
    if grep -E '\[(alert|crit|emerg)\]' "$dir/error.log" >&2; then
        say "nginx logged alerts (above)"
        exit 1
    fi
    browser_pid=""
    nginx_pid=""
    sidecar_pid=""
}

start_direct() {
    direct_port=$(free_port)
    "${pin_server[@]}" "$bin/cb_sse_server" \
        --listen "127.0.0.1:$direct_port" --json "$dir/answer.json" \
        --sse "$dir/answer.sse" >> "$dir/direct.log" 2>&1 &
    direct_pid=$!
    pids+=("$direct_pid")
    wait_for curl -sf -m 2 -o /dev/null -d '{}' \
        "http://127.0.0.1:$direct_port/" || { say "no direct server"; exit 1; }
}

stop_direct() {
    stop_pid "$direct_pid"
    direct_pid=""
}

memfd() {   # the sidecar's segment, as a path stat can read
    local fd
    for fd in /proc/"$sidecar_pid"/fd/*; do
        if readlink "$fd" | grep -q '^/memfd:'; then
            echo "$fd"
            return
        fi
    done
}

# --- one measurement: appends a line to results.txt

# busy: whether a cb_load line says the run shared the machine (others
# used more than BENCH_OTHER_MAX % of a CPU)
busy() {
    local other
    other=$(sed -nE 's/.* other_cpu_pct=([0-9]+).*/\1/p' <<< "$1")
    [ "${other:-0}" -gt "${BENCH_OTHER_MAX:-20}" ]
}

# record SCENARIO TARGET CONC RUN -- cb_load arguments...
# A run that shared the machine with other work is measured again, twice at
# most (not the held streams: ten seconds each, and their figures are not
# rates); the line says how many tries it took.  cb_load stops itself (its
# window, or --timeout, 60 s unless given); limit is the backstop.
record() {
    local scenario=$1 target=$2 conc=$3 run=$4
    shift 5
    local line try secs=90
    [ "$scenario" = hold ] && secs=$((hold_ms / 1000 + 60))
    for try in 1 2 3; do
        line=$(limit "$secs" "${pin_load[@]}" "$bin/cb_load" "$@") || {
            say "cb_load failed: $scenario $target c=$conc"
            exit 1
        }
        busy "$line" && [ "$try" -lt 3 ] && [ "$quick" != 1 ] \
            && [ "$scenario" != hold ] || break
        say "$scenario $target c=$conc run $run shared the machine;" \
            "measuring again"
        sleep 2
    done
    echo "scenario=$scenario target=$target conc=$conc run=$run" \
         "tries=$try $line" >> "$dir/results.txt"
    say "$scenario $target c=$conc run $run: $line"
}

# --- capture the answers the baselines repeat

start_bridge
start_browser 4

curl -sf -m 30 "http://127.0.0.1:$port/v1/chat/completions" \
    -H 'Content-Type: application/json' -d @"$dir/nonstream.json" \
    > "$dir/answer.json"
curl -sfN -m 30 "http://127.0.0.1:$port/v1/chat/completions" \
    -H 'Content-Type: application/json' -d @"$dir/stream.json" \
    > "$dir/answer.sse"

if ! grep -q '"finish_reason":"stop"' "$dir/answer.json" \
   || [ "$(grep -c '"delta":{"content":' "$dir/answer.sse")" \
        != "$stream_chunks" ]; then
    say "the bridge did not answer as expected:"
    head -c 600 "$dir/answer.json" "$dir/answer.sse" >&2
    exit 1
fi

# nginx reads the return 200 text at start: restart with it
stop_bridge
start_bridge
start_browser 4
start_direct

server_pids=$nginx_pid,$workers,$sidecar_pid
: > "$dir/results.txt"

has() { [[ " $only " == *" $1 "* ]]; }

# --- non-streamed answers: req/s and latency

if has nonstream; then
    for c in "${concs[@]}"; do
        for r in $(seq "$runs"); do
            record nonstream bridge "$c" "$r" -- \
                --connect "127.0.0.1:$port" --path /v1/chat/completions \
                --body-file "$dir/nonstream.json" --mode json --conns "$c" \
                --duration "$duration" --warmup "$warmup" \
                --cpu-pids "$server_pids" --browser-pid "$browser_pid"
            record nonstream nginx "$c" "$r" -- \
                --connect "127.0.0.1:$port" --path /baseline/json \
                --body-file "$dir/nonstream.json" --mode json --conns "$c" \
                --duration "$duration" --warmup "$warmup" \
                --cpu-pids "$nginx_pid,$workers"
            record nonstream direct "$c" "$r" -- \
                --connect "127.0.0.1:$direct_port" --path / \
                --body-file "$dir/nonstream.json" --mode json --conns "$c" \
                --duration "$duration" --warmup "$warmup" \
                --cpu-pids "$direct_pid"
        done
    done
fi

# --- streamed answers of 200 chunks: TTFT, chunks/s, total time

if has stream; then
    for c in "${concs[@]}"; do
        for r in $(seq "$runs"); do
            record stream bridge "$c" "$r" -- \
                --connect "127.0.0.1:$port" --path /v1/chat/completions \
                --body-file "$dir/stream.json" --mode sse --conns "$c" \
                --duration "$duration" --warmup "$warmup" \
                --expect-chunks "$stream_chunks" \
                --cpu-pids "$server_pids" --browser-pid "$browser_pid"
            record stream direct "$c" "$r" -- \
                --connect "127.0.0.1:$direct_port" --path / \
                --body-file "$dir/stream.json" --mode sse --conns "$c" \
                --duration "$duration" --warmup "$warmup" \
                --expect-chunks "$stream_chunks" --cpu-pids "$direct_pid"
            record stream nginx "$c" "$r" -- \
                --connect "127.0.0.1:$port" --path /baseline/sse \
                --mode sse --conns "$c" \
                --duration "$duration" --warmup "$warmup" \
                --expect-chunks "$stream_chunks" \
                --cpu-pids "$nginx_pid,$workers"
        done
    done
fi

# --- the same, with a browser that writes without bound (--window 0): the
#     time to first token then measures the socket buffers in front of the
#     sidecar

top_conc=${concs[${#concs[@]}-1]}

if has flood; then
    stop_pid "$browser_pid"
    start_browser 4 --window 0
    for r in $(seq "$runs"); do
        record stream bridge-flood "$top_conc" "$r" -- \
            --connect "127.0.0.1:$port" --path /v1/chat/completions \
            --body-file "$dir/stream.json" --mode sse --conns "$top_conc" \
            --duration "$duration" --warmup "$warmup" \
            --expect-chunks "$stream_chunks" \
            --cpu-pids "$server_pids" --browser-pid "$browser_pid"
    done
    stop_pid "$browser_pid"
    start_browser 4
fi

# --- a bare WebSocket round trip on the browsers' path, and the bridge's

spinners=()

# keep every vCPU it may use from halting: SCHED_IDLE busy loops (the
# diagnostic)
start_spinners() {
    local cpu
    for cpu in "${cpus[@]}"; do
        taskset -c "$cpu" chrt --idle 0 "$bin/cb_spin" &
        spinners+=($!)
        pids+=($!)
    done
}

stop_spinners() {
    for p in "${spinners[@]}"; do
        stop_pid "$p" KILL
    done
    spinners=()
}

# rtt_round SUFFIX: one run of the three round trips (the bare one within
# a minute: cb_browser gives up itself, timeout if even that hangs)
rtt_round() {
    local suffix=$1 r=$2 ws line
    ws=(--connect "127.0.0.1:$port")
    [ "$browser_via" = direct ] && ws=(--connect "unix:$dir/ws.sock")
    line=$(limit 70 "${pin_load[@]}" "$bin/cb_browser" "${ws[@]}" \
           --token "$token" --id rtt --rtt "$rtt_n" --max-seconds 60) || {
        say "the bare WebSocket round trips failed (rtt$suffix run $r)"
        exit 1
    }
    echo "scenario=rtt target=websocket$suffix conc=1 run=$r $line" \
        >> "$dir/results.txt"
    say "rtt websocket$suffix run $r: $line"
    record rtt "bridge$suffix" 1 "$r" -- \
        --connect "127.0.0.1:$port" --path /v1/chat/completions \
        --body-file "$dir/nonstream.json" --mode json --conns 1 \
        --duration "$duration" --warmup "$warmup" \
        --cpu-pids "$server_pids"
    record rtt "nginx$suffix" 1 "$r" -- \
        --connect "127.0.0.1:$port" --path /baseline/json \
        --body-file "$dir/nonstream.json" --mode json --conns 1 \
        --duration "$duration" --warmup "$warmup" \
        --cpu-pids "$nginx_pid,$workers"
}

if has rtt; then
    for r in $(seq "$runs"); do
        rtt_round "" "$r"
    done
fi

if has awake && [ "$ncpu" -ge 2 ]; then
    start_spinners
    for r in $(seq "$runs"); do
        rtt_round -awake "$r"
    done
    stop_spinners
fi

stop_direct
stop_bridge

# --- held streams: fresh servers each run, so memory is theirs

if has hold; then
    for n in "${holds[@]}"; do
        for r in $(seq "$runs"); do
            start_bridge $((n + 2048))
            start_browser "$hold_conns"
            record hold bridge "$n" "$r" -- \
                --connect "127.0.0.1:$port" --path /v1/chat/completions \
                --body-file "$dir/hold.json" --mode hold --conns "$n" \
                --hold-ms "$hold_ms" --late-ms 1000 \
                --timeout $((hold_ms / 1000 + 20)) \
                --expect-chunks "$hold_chunks" \
                --cpu-pids "$nginx_pid,$workers,$sidecar_pid" \
                --browser-pid "$browser_pid" \
                --mem-pids "$workers" --mem-pids2 "$sidecar_pid" \
                --mem-file "$(memfd)"
            stop_bridge
        done

        # nginx alone, holding the same number of requests as long
        start_bridge $((n + 2048))
        record hold nginx "$n" 1 -- \
            --connect "127.0.0.1:$port" --path /baseline/hold \
            --body-file "$dir/nonstream.json" --mode hold --conns "$n" \
            --hold-ms "$hold_ms" --late-ms 1000 \
            --timeout $((hold_ms / 1000 + 20)) \
            --cpu-pids "$nginx_pid,$workers" --mem-pids "$workers"
        stop_bridge

        # the direct server, at the largest count only
        [ "$n" = "${holds[${#holds[@]}-1]}" ] || continue
        start_direct
        record hold direct "$n" 1 -- \
            --connect "127.0.0.1:$direct_port" --path / \
            --body-file "$dir/hold.json" --mode hold --conns "$n" \
            --hold-ms "$hold_ms" --late-ms 1000 \
            --timeout $((hold_ms / 1000 + 20)) \
            --expect-chunks "$hold_chunks" --cpu-pids "$direct_pid" \
            --mem-pids "$direct_pid"
        stop_direct
    done
fi

# --- the report

elapsed=$(( $(date +%s) - started ))

{
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
    echo "cores=$ncpu"
    echo "kernel=$(uname -r)"
    echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "nginx=$(/usr/sbin/nginx -v 2>&1 | sed 's/.*\///')"
    echo "lws=$(pkg-config --modversion libwebsockets 2>/dev/null \
                | tr -d '-')"
    echo "gcc=$(gcc -dumpfullversion)"
    echo "memory=$(free -g | awk '/^Mem:/ {print $2}') GiB"
    echo "pinning=$pinning"
    echo "nofile=$nofile"
    echo "idle_other=$idle_other"
    echo "browser=$browser_via"
    echo "runs=$runs"
    echo "duration=$duration"
    echo "warmup=$warmup"
    echo "hold_ms=$hold_ms"
    echo "hold_gap=$hold_gap"
    echo "hold_conns=$hold_conns"
    echo "elapsed=$elapsed"
    echo "quick=$quick"
    echo "commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null \
                   || echo unknown)$(git -C "$top" diff --quiet HEAD \
                   2>/dev/null || echo '+changes')"
} > "$dir/meta.txt"

mkdir -p "$(dirname "$out")"
perl "$top/bench/report.pl" "$dir/meta.txt" "$dir/results.txt" > "$out.new"
mv "$out.new" "$out"

say "done in ${elapsed} s; report: $out"
