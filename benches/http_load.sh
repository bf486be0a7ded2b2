#!/usr/bin/env bash
# HTTP load: events appended per second by Herald's HTTP server (POST /v1/events over keep-alive,
# 64 connections, wrk) against Redis 7 XADD (redis-benchmark, 64 connections), at
# fsync never / appendfsync no and fsync always / appendfsync always. docs/benchmarks.md,
# "HTTP load (issue 4)", describes it and records a run.
#
#   bash benches/http_load.sh                 # both modes, 10 s per measured run
#   DURATION=5 MODES=always bash benches/http_load.sh
#   PERF=1 bash benches/http_load.sh          # also perf-record Herald during its measured runs
#
# Environment: DURATION (seconds per measured run, default 10), WARMUP (seconds, default 2),
# CONNECTIONS (default 64), MODES (default "never always"), PERF (1: profile Herald; the run's
# figures are then perturbed by perf, so take the table from a run without it), KEEP (1: keep
# the temporary directory).
#
# Each run checks its own work: Herald's stored-event count (GET /v1/metrics) must match the 2xx
# answers wrk counted (up to the requests in flight when wrk stopped, see below), Redis's stream
# entries must equal the XADDs sent, and no request may fail (non-2xx, socket error, timeout,
# an error in Herald's log). A failed check makes the script exit 1 after printing the table.
#
# Table columns: events/s (acknowledged appends per second), p50/p99 latency as the client saw
# it, the server's CPU (all threads, from /proc) in cores and in µs per event, and the load
# client's CPU in cores (client and server share the machine's cores).
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
MODES=${MODES:-never always}
PERF=${PERF:-0}
KEEP=${KEEP:-0}
AGGREGATES=1000 # also fixed in benches/http_load.lua

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LUA="$ROOT/benches/http_load.lua"

missing=()
for tool in wrk redis-server redis-benchmark redis-cli curl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "http_load.sh: missing ${missing[*]}; install with: apt-get install -y wrk redis-server curl" >&2
    exit 2
fi
if [[ $PERF == 1 ]] && ! command -v perf >/dev/null 2>&1; then
    echo "http_load.sh: PERF=1 needs perf (apt-get install -y linux-perf)" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/herald-http-load.XXXXXX")
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 ]]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Forgets a process this script started (it has exited).
forget() {
    local rest=() p
    for p in "${PIDS[@]}"; do
        [[ $p == "$1" ]] || rest+=("$p")
    done
    PIDS=("${rest[@]+"${rest[@]}"}")
}

# Stops a process this script started (SIGTERM; Herald then fsyncs and exits) and forgets it.
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget "$1"
}

# A TCP port on 127.0.0.1 that nothing listens on.
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        if [[ -z $(ss -Htln "sport = :$port") ]]; then
            echo "$port"
            return
        fi
    done
    echo "http_load.sh: no free port found" >&2
    exit 1
}

# The 256-byte JSON value every event carries: Herald's `data`, Redis's XADD field value.
data_head='{"account":"acct-0001","amount":1999,"currency":"EUR","memo":"'
DATA="$data_head$(printf 'x%.0s' $(seq $((256 - ${#data_head} - 2))))\"}"
((${#DATA} == 256)) || { echo "http_load.sh: payload is ${#DATA} bytes, not 256" >&2; exit 1; }
export HTTP_LOAD_DATA=$DATA

echo "== building: cargo build --release -p herald-core --bin herald" >&2
(cd "$ROOT" && cargo build --release -q -p herald-core --bin herald)
HERALD="${CARGO_TARGET_DIR:-$ROOT/target}/release/herald"

FAILURES=()
ROWS=()
RATIOS=()
fail() {
    echo "FAIL: $*" >&2
    FAILURES+=("$*")
}

# field NAME LINE: the value of NAME=… in an HTTP_LOAD line.
field() {
    sed -n "s/.*[[:space:]]$1=\([0-9]*\).*/\1/p" <<<"$2"
}

total_events() {
    curl -sf "http://$1/v1/metrics" | grep -o '"total_events":[0-9]*' | cut -d: -f2
}

ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }

# CPU ticks (user + system) a process, or one of its threads, has used.
cpu_ticks() { awk '{ print $14 + $15 }' "$1"; }
TICKS_PER_S=$(getconf CLK_TCK)

# cores TICKS SECONDS: average cores busy.
cores() { awk -v t="$1" -v s="$2" -v hz="$TICKS_PER_S" 'BEGIN { printf "%.2f", t / hz / s }'; }

# us_per_event TICKS EVENTS: server CPU time per event, in µs.
us_per_event() { awk -v t="$1" -v n="$2" -v hz="$TICKS_PER_S" 'BEGIN { printf "%.1f", t / hz / n * 1e6 }'; }

# The client's CPU in cores, from bash's `time` output "REAL USER SYS" (last line of FILE).
client_cores() { tail -1 "$1" | awk '{ printf "%.2f", ($2 + $3) / $1 }'; }
TIMEFORMAT='%3R %3U %3S'

# run_herald MODE: sets H_RATE, H_P50, H_P99 (µs), H_CPU (server cores), H_US (server CPU µs
# per event), H_CLIENT (wrk's cores).
run_herald() {
    local mode=$1 dir="$WORK/herald-$1"
    mkdir -p "$dir/data"
    cat >"$dir/herald.toml" <<EOF
[server]
listen = "127.0.0.1:0"

[store]
fsync = "$mode"
EOF
    "$HERALD" serve --preset development --config "$dir/herald.toml" --data "$dir/data" \
        >"$dir/herald.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    local addr=""
    for _ in $(seq 100); do
        addr=$(sed -n 's|.*listening on http://\([0-9.]*:[0-9]*\).*|\1|p' "$dir/herald.log" | head -1)
        [[ -n $addr ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z $addr ]]; then
        cat "$dir/herald.log" >&2
        echo "http_load.sh: herald did not start" >&2
        exit 1
    fi
    echo "== herald fsync=$mode on $addr (pid $pid)" >&2

    local out line
    out=$(wrk -t2 -c"$CONNECTIONS" -d"${WARMUP}s" -s "$LUA" "http://$addr/v1/events")
    line=$(grep '^HTTP_LOAD ' <<<"$out" || true)
    [[ -n $line ]] || { echo "$out" >&2; echo "http_load.sh: no result from wrk's warm-up" >&2; exit 1; }
    if [[ $(field non2xx "$line") != 0 ]]; then
        fail "herald $mode warm-up: $(field non2xx "$line") non-2xx answers: $(grep '^HTTP_LOAD_FIRST' <<<"$out" || true)"
    fi

    local before after perf_pid=""
    before=$(total_events "$addr")
    if [[ $PERF == 1 ]]; then
        perf record -F 999 -g -p "$pid" -o "$WORK/perf-$mode.data" -- sleep $((DURATION > 2 ? DURATION - 1 : 1)) \
            >/dev/null 2>"$WORK/perf-$mode.log" &
        perf_pid=$!
        PIDS+=("$perf_pid")
    fi
    local ticks0 reactor0 ticks1 reactor1
    ticks0=$(cpu_ticks "/proc/$pid/stat")
    reactor0=$(cpu_ticks "/proc/$pid/task/$pid/stat")
    { time wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$LUA" "http://$addr/v1/events" \
        >"$dir/wrk.txt"; } 2>"$dir/wrk.time"
    ticks1=$(cpu_ticks "/proc/$pid/stat")
    reactor1=$(cpu_ticks "/proc/$pid/task/$pid/stat")
    out=$(cat "$dir/wrk.txt")
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" || true
        forget "$perf_pid"
    fi
    sleep 0.5 # let Herald answer the requests that were in flight when wrk stopped
    after=$(total_events "$addr")
    line=$(grep '^HTTP_LOAD ' <<<"$out" || true)
    [[ -n $line ]] || { echo "$out" >&2; echo "http_load.sh: no result from wrk" >&2; exit 1; }
    echo "   wrk: $line" >&2

    local ok non2xx duration stored inflight
    ok=$(field ok2xx "$line")
    non2xx=$(field non2xx "$line")
    duration=$(field duration_us "$line")
    stored=$((after - before))
    # wrk stops at its deadline without waiting for the requests it has sent (at most one per
    # connection, no pipelining): Herald still appends those, so stored - ok is 0..CONNECTIONS.
    inflight=$((stored - ok))
    echo "   stored $stored events, wrk counted $ok 2xx answers ($inflight in flight at wrk's stop)" >&2
    if ((non2xx != 0)); then
        fail "herald $mode: $non2xx non-2xx answers: $(grep '^HTTP_LOAD_FIRST' <<<"$out" || true)"
    fi
    local e
    for e in connect read write timeout; do
        if [[ $(field "err_$e" "$line") != 0 ]]; then
            fail "herald $mode: wrk reports $(field "err_$e" "$line") $e errors"
        fi
    done
    if ((inflight < 0 || inflight > CONNECTIONS)); then
        fail "herald $mode: stored $stored events but wrk counted $ok 2xx answers"
    fi
    H_RATE=$(awk -v n="$ok" -v us="$duration" 'BEGIN { printf "%.0f", n / (us / 1e6) }')
    H_P50=$(field p50_us "$line")
    H_P99=$(field p99_us "$line")
    local seconds
    seconds=$(awk -v us="$duration" 'BEGIN { print us / 1e6 }')
    H_CPU=$(cores $((ticks1 - ticks0)) "$seconds")
    H_US=$(us_per_event $((ticks1 - ticks0)) "$stored")
    H_CLIENT=$(client_cores "$dir/wrk.time")
    echo "   herald CPU: $H_CPU cores ($(cores $((reactor1 - reactor0)) "$seconds") on the reactor thread)," \
        "$H_US µs per event; wrk: $H_CLIENT cores" >&2

    stop "$pid"
    if grep -qiE 'error|panic|fail' "$dir/herald.log"; then
        fail "herald $mode logged: $(grep -iE 'error|panic|fail' "$dir/herald.log" | head -3)"
    fi
    if [[ $PERF == 1 ]]; then
        echo "   perf, top symbols of herald (fsync=$mode, self time, all threads):" >&2
        perf report -i "$WORK/perf-$mode.data" --no-children -g none --stdio --sort comm,dso,sym \
            --percent-limit 1.5 2>/dev/null | grep -E '^ +[0-9]' | head -20 >&2 || true
    fi
}

# redis_xadd PORT N: runs redis-benchmark, prints its CSV data line.
redis_xadd() {
    redis-benchmark -h 127.0.0.1 -p "$1" -c "$CONNECTIONS" -n "$2" -r "$AGGREGATES" --csv \
        XADD "stream:__rand_int__" '*' data "$DATA" | tail -1
}

# csv_col LINE K: the K-th field from the end of redis-benchmark's CSV line (the first field,
# the test's title, holds the command and its JSON value, commas and quotes included).
csv_col() {
    awk -F'","' -v k="$2" '{ v = $(NF - k + 1); gsub(/"/, "", v); print v }' <<<"$1"
}

stream_entries() {
    # shellcheck disable=SC2016
    redis-cli -p "$1" --no-raw EVAL 'local n = 0
        for _, k in ipairs(redis.call("KEYS", "stream:*")) do n = n + redis.call("XLEN", k) end
        return n' 0 | grep -o '[0-9]*'
}

# run_redis APPENDFSYNC: sets R_RATE, R_P50, R_P99 (ms), R_CPU, R_US, R_CLIENT (as for Herald).
run_redis() {
    local fsync=$1 dir="$WORK/redis-$1" port
    mkdir -p "$dir"
    port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes --appendfsync "$fsync" \
        --save '' --daemonize no --logfile "$dir/redis.log" &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do
        [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]] && break
        sleep 0.1
    done
    echo "== redis-server appendfsync=$fsync on 127.0.0.1:$port (pid $pid)" >&2

    # Warm-up, sized to last about WARMUP seconds; its rate sizes the measured run.
    local probe=2000 line rate n before after
    line=$(redis_xadd "$port" "$probe")
    rate=$(csv_col "$line" 7)
    n=$(awk -v r="$rate" -v w="$WARMUP" 'BEGIN { n = int(r * w); print (n < 1000 ? 1000 : n) }')
    line=$(redis_xadd "$port" "$n")
    rate=$(csv_col "$line" 7)
    n=$(awk -v r="$rate" -v d="$DURATION" 'BEGIN { n = int(r * d); print (n < 1000 ? 1000 : n) }')

    before=$(stream_entries "$port")
    echo "   redis-benchmark -h 127.0.0.1 -p $port -c $CONNECTIONS -n $n -r $AGGREGATES --csv XADD stream:__rand_int__ '*' data <256 bytes>" >&2
    local ticks0 ticks1
    ticks0=$(cpu_ticks "/proc/$pid/stat")
    { time redis_xadd "$port" "$n" >"$dir/bench.csv"; } 2>"$dir/bench.time"
    ticks1=$(cpu_ticks "/proc/$pid/stat")
    line=$(cat "$dir/bench.csv")
    after=$(stream_entries "$port")
    echo "   csv: ...\",\"$(awk -F'","' '{ for (i = NF - 6; i <= NF; i++) printf "%s%s", $i, (i < NF ? "\",\"" : "\n") }' <<<"$line")" >&2
    if ((after - before != n)); then
        fail "redis $fsync: $((after - before)) stream entries added for $n XADDs"
    fi
    R_RATE=$(csv_col "$line" 7 | awk '{ printf "%.0f", $1 }')
    R_P50=$(csv_col "$line" 4)
    R_P99=$(csv_col "$line" 2)
    R_CPU=$(cores $((ticks1 - ticks0)) "$(tail -1 "$dir/bench.time" | cut -d' ' -f1)")
    R_US=$(us_per_event $((ticks1 - ticks0)) "$n")
    R_CLIENT=$(client_cores "$dir/bench.time")
    echo "   redis CPU: $R_CPU cores, $R_US µs per event; redis-benchmark: $R_CLIENT cores" >&2
    stop "$pid"
}

for mode in $MODES; do
    case $mode in
        never) redis_mode=no ;;
        always) redis_mode=always ;;
        *) echo "http_load.sh: unknown mode $mode (never, always)" >&2; exit 2 ;;
    esac
    run_herald "$mode"
    run_redis "$redis_mode"
    ROWS+=("| \`$mode\` | herald | $H_RATE | $(ms "$H_P50") | $(ms "$H_P99") | $H_CPU | $H_US | $H_CLIENT |")
    ROWS+=("| \`$mode\` | redis (\`appendfsync $redis_mode\`) | $R_RATE | ${R_P50} ms | ${R_P99} ms | $R_CPU | $R_US | $R_CLIENT |")
    RATIOS+=("$(awk -v m="$mode" -v h="$H_RATE" -v r="$R_RATE" -v hp="$H_P99" -v rp="$R_P99" \
        'BEGIN { printf "| `%s` | %.2f× | %.2f× |", m, h / r, (hp / 1000) / rp }')")
done

echo
echo "HTTP load: $CONNECTIONS connections, ${DURATION}s per run, 256-byte payloads, $AGGREGATES aggregates/streams"
echo
echo "| mode | impl | events/s | p50 | p99 | server cores | server CPU µs/event | client cores |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${ROWS[@]}"
echo
echo "| mode | herald ÷ redis, events/s | herald ÷ redis, p99 |"
echo "| --- | ---: | ---: |"
printf '%s\n' "${RATIOS[@]}"
if ((${#FAILURES[@]})); then
    echo
    echo "FAILED checks:"
    printf -- '- %s\n' "${FAILURES[@]}"
    exit 1
fi
