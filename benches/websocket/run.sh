#!/usr/bin/env bash
# WebSocket benchmark: Herald's gateway against a tokio-tungstenite broadcast server
# (src/bin/peer.rs) and Node `ws` (peer-node/server.mjs), same protocol, same load client
# (src/bin/load.rs), same run. Writes benches/websocket/REPORT.md and prints its tables.
#
#   bash benches/websocket/run.sh
#   HERALD_BIN=/path/to/herald bash benches/websocket/run.sh     # measure a prebuilt binary
#   SERVERS="herald node-ws" SUBSCRIBERS=1,100 DURATION=3 bash benches/websocket/run.sh
#
# Per server, three fresh processes in turn:
#   1. `load bench`: for 1, 100 and 1,000 subscribers of room bench:r1, throughput (delivered
#      frames/s, the server's CPU seconds from /proc/PID/stat, frames per server CPU-second)
#      and latency (p50/p99 publish → receive at LATENCY_RATE events/s);
#   2. `load rss --users shared`: VmRSS before and after CONNECTIONS idle subscribed connections
#      of one user id (per-connection state only);
#   3. `load rss --users distinct`: the same with a user id per connection (for Herald this adds
#      presence: each new member's `join` goes to every connection already in the room).
# Publishing is the same for all three: HTTP/1.1 keep-alive POST /v1/broadcast on the server's
# one port, one connection, pipelined (load.rs's module docs say how it is paced).
#
# Environment: SERVERS (default "herald tokio-tungstenite node-ws"), SUBSCRIBERS (1,100,1000),
# WARMUP (1 s), DURATION (5 s), WINDOW (256 events), DEPTH (32 requests), LATENCY_RATE (200/s),
# LATENCY_S (5 s), CONNECTIONS (5000), CLIENT_THREADS (2), RSS_USERS ("shared distinct"; empty:
# no RSS phases), HERALD_COMMIT (what HERALD_BIN was built from, for the report), HERALD_BIN (skip building Herald;
# measure this binary), REPORT (default benches/websocket/REPORT.md), KEEP (1: keep the temp dir).
# Every phase runs under `timeout`; servers are stopped on exit. Exit status 1 if a check failed
# (events lost, reordered or refused, connections closed by a server, a phase timed out).
set -euo pipefail

SERVERS=${SERVERS:-herald tokio-tungstenite node-ws}
SUBSCRIBERS=${SUBSCRIBERS:-1,100,1000}
WARMUP=${WARMUP:-1}
DURATION=${DURATION:-5}
WINDOW=${WINDOW:-256}
DEPTH=${DEPTH:-32}
LATENCY_RATE=${LATENCY_RATE:-200}
LATENCY_S=${LATENCY_S:-5}
CONNECTIONS=${CONNECTIONS:-5000}
CLIENT_THREADS=${CLIENT_THREADS:-2}
RSS_USERS=${RSS_USERS-shared distinct}
KEEP=${KEEP:-0}

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/../.." && pwd)
REPORT=${REPORT:-$BENCH/REPORT.md}
COMMAND="bash benches/websocket/run.sh"
for name in SERVERS SUBSCRIBERS WARMUP DURATION WINDOW DEPTH LATENCY_RATE LATENCY_S CONNECTIONS CLIENT_THREADS RSS_USERS HERALD_BIN HERALD_COMMIT; do
    if [[ -n ${!name+x} ]] && env | grep -q "^$name="; then
        COMMAND="$name=\"${!name}\" $COMMAND"
    fi
done

missing=()
for tool in cargo node npm curl timeout; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "run.sh: missing ${missing[*]} (Rust toolchain, nodejs + npm, curl, coreutils)" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/herald-ws-bench.XXXXXX")
RESULTS="$WORK/results.txt"
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

forget() {
    local rest=() p
    for p in "${PIDS[@]}"; do
        [[ $p == "$1" ]] || rest+=("$p")
    done
    PIDS=("${rest[@]+"${rest[@]}"}")
}

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget "$1"
}

# --- build -------------------------------------------------------------------------------------
if [[ -n ${HERALD_BIN:-} ]]; then
    HERALD=$HERALD_BIN
    HERALD_ORIGIN="prebuilt binary \`$HERALD_BIN\` (not built by this run; built from ${HERALD_COMMIT:-an unstated commit})"
else
    echo "== building Herald: cargo build --release -p herald-core --bin herald" >&2
    (cd "$ROOT" && timeout 1800 cargo build --release -q -p herald-core --bin herald)
    HERALD="${CARGO_TARGET_DIR:-$ROOT/target}/release/herald"
    HERALD_ORIGIN="built by this run from the work tree at \`$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)\` ($(git -C "$ROOT" status --porcelain -- core 2>/dev/null | wc -l) files under core/ modified)"
fi
[[ -x $HERALD ]] || { echo "run.sh: no Herald binary at $HERALD" >&2; exit 2; }
# A copy, so that someone rebuilding target/ meanwhile cannot change what is measured.
cp "$HERALD" "$WORK/herald"
HERALD="$WORK/herald"

echo "== building the load client and the tokio-tungstenite peer (benches/websocket, release)" >&2
timeout 1800 cargo build --release -q --manifest-path "$BENCH/Cargo.toml"
LOAD="$BENCH/target/release/load"
PEER="$BENCH/target/release/peer"

if [[ ! -d $BENCH/peer-node/node_modules/ws ]]; then
    echo "== npm ci (peer-node: ws)" >&2
    (cd "$BENCH/peer-node" && timeout 300 npm ci --no-audit --no-fund --silent)
fi

# 5,000 connections need 5,000 descriptors in the client and in the server.
ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < CONNECTIONS + 256)); then
    echo "run.sh: open-file limit $(ulimit -n) is too low for $CONNECTIONS connections" >&2
    exit 2
fi

# --- servers -----------------------------------------------------------------------------------
# start NAME: starts a fresh server, sets SERVER_PID and SERVER_ADDR (host:port).
start() {
    local name=$1 dir="$WORK/$1-$RANDOM" pattern
    mkdir -p "$dir"
    case $name in
        herald)
            mkdir -p "$dir/data"
            printf '[websocket]\nsend_queue_frames = 65536\n\n[server]\nmax_connections = 20000\n' >"$dir/herald.toml"
            "$HERALD" serve --listen 127.0.0.1:0 --data "$dir/data" --config "$dir/herald.toml" >"$dir/log" 2>&1 &
            pattern='herald: listening on http://'
            ;;
        tokio-tungstenite)
            "$PEER" --listen 127.0.0.1:0 >"$dir/log" 2>&1 &
            pattern='peer: listening on http://'
            ;;
        node-ws)
            node --expose-gc "$BENCH/peer-node/server.mjs" --listen 127.0.0.1:0 >"$dir/log" 2>&1 &
            pattern='node-ws: listening on http://'
            ;;
        *)
            echo "run.sh: unknown server $name" >&2
            exit 2
            ;;
    esac
    SERVER_PID=$!
    SERVER_LOG="$dir/log"
    PIDS+=("$SERVER_PID")
    SERVER_ADDR=""
    for _ in $(seq 100); do
        SERVER_ADDR=$(grep -o "${pattern}[0-9.]*:[0-9]*" "$dir/log" | head -1 | sed "s|$pattern||" || true)
        [[ -n $SERVER_ADDR ]] && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z $SERVER_ADDR ]]; then
        cat "$dir/log" >&2
        echo "run.sh: $name did not start" >&2
        exit 1
    fi
    echo "== $name on $SERVER_ADDR (pid $SERVER_PID)" >&2
}

FAILURES=()
EVIDENCE=()
LOADS=()

# run_load SECONDS ARGS…: the load client under a timeout; failed checks are collected.
run_load() {
    local seconds=$1 out status=0
    shift
    out=$(timeout --kill-after=5 "$seconds" "$LOAD" "$@" --out "$RESULTS" --threads "$CLIENT_THREADS") || status=$?
    printf '%s\n' "$out" | grep -v '^RESULT' >&2 || true
    printf '%s\n' "$out" | grep '^RESULT' | cut -c1-200 >&2 || true
    while IFS= read -r line; do
        [[ -n $line ]] && FAILURES+=("${line#CHECK-FAILED }")
    done < <(printf '%s\n' "$out" | grep '^CHECK-FAILED' || true)
    if ((status == 124 || status == 137)); then
        FAILURES+=("$1 ${*:2:2}: timed out after $seconds s")
    elif ((status != 0)) && ! printf '%s\n' "$out" | grep -q '^CHECK-FAILED'; then
        FAILURES+=("$1 ${*:2:2}: load client exit status $status")
    fi
}

# Herald's own counters after a phase (dropped frames, fan-out latency, connections).
herald_metrics() {
    local what=$1 with_counters=$2 metrics
    if [[ $with_counters == 1 ]]; then
        metrics=$(curl -sf --max-time 5 "http://$SERVER_ADDR/metrics" |
            grep -E '^herald_websocket_(frames_dropped|events_broadcast|events_delivered|fanout_latency_seconds_(sum|count))' || true)
        EVIDENCE+=("Herald after $what: $(printf '%s' "$metrics" | tr '\n' ';' | sed 's/;/; /g')")
    fi
    EVIDENCE+=("Herald after $what: VmRSS $(awk '/VmRSS/ {print $2, $3}' "/proc/$SERVER_PID/status"), VmHWM $(awk '/VmHWM/ {print $2, $3}' "/proc/$SERVER_PID/status"), threads $(awk '/Threads/ {print $2}' "/proc/$SERVER_PID/status")")
}

server_log_check() {
    local name=$1
    if grep -qiE 'error|panic|slow|dropped|failed' "$SERVER_LOG"; then
        FAILURES+=("$name logged: $(grep -iE 'error|panic|slow|dropped|failed' "$SERVER_LOG" | head -3 | tr '\n' ' ')")
    fi
}

cpu_line() { head -1 /proc/stat; }
STAT_START=$(cpu_line)
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
SECONDS=0

for name in $SERVERS; do
    LOADS+=("$name: load average before $(cut -d' ' -f1-3 /proc/loadavg)")
    start "$name"
    run_load $((120 + 60 * (DURATION + LATENCY_S))) bench --name "$name" --url "ws://$SERVER_ADDR/v1/ws" \
        --publish "http://$SERVER_ADDR/v1/broadcast" --pid "$SERVER_PID" --subscribers "$SUBSCRIBERS" \
        --warmup-s "$WARMUP" --duration-s "$DURATION" --window-events "$WINDOW" --depth "$DEPTH" \
        --latency-rate "$LATENCY_RATE" --latency-s "$LATENCY_S" --users distinct
    [[ $name == herald ]] && herald_metrics "the throughput and latency phases" 1
    stop "$SERVER_PID"
    server_log_check "$name"

    for users in $RSS_USERS; do
        start "$name"
        run_load 300 rss --name "$name" --url "ws://$SERVER_ADDR/v1/ws" --pid "$SERVER_PID" \
            --connections "$CONNECTIONS" --settle-s 3 --users "$users" --timeout-s 240 \
            $([[ $name == node-ws ]] && echo --gc-signal usr2)
        [[ $name == herald ]] && herald_metrics "$CONNECTIONS idle connections ($users user ids) and their close" 0
        stop "$SERVER_PID"
        server_log_check "$name"
    done
    LOADS+=("$name: load average after $(cut -d' ' -f1-3 /proc/loadavg)")
done
ELAPSED=$SECONDS
STAT_END=$(cpu_line)
# The share of the machine's CPU time that niced processes (other people's builds) took.
NICE_SHARE=$(awk -v a="$STAT_START" -v b="$STAT_END" 'BEGIN {
    split(a, x, " "); split(b, y, " "); total = 0
    for (i = 2; i <= 9; i++) total += y[i] - x[i]
    printf "%.0f %%", 100 * (y[3] - x[3]) / total }')

# --- report ------------------------------------------------------------------------------------
TABLES=$("$LOAD" report --results "$RESULTS")
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
RUSTC=$(rustc --version 2>/dev/null || echo unknown)
NODE=$(node --version)
WS=$(node -p "require('$BENCH/peer-node/node_modules/ws/package.json').version" 2>/dev/null || echo unknown)
TT=$(grep -A1 'name = "tokio-tungstenite"' "$BENCH/Cargo.lock" | sed -n 's/version = "\(.*\)"/\1/p')
TOKIO=$(grep -A1 'name = "tokio"$' "$BENCH/Cargo.lock" | sed -n 's/version = "\(.*\)"/\1/p')
MODEL=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)

{
    echo "# WebSocket benchmark: Herald's gateway vs tokio-tungstenite and Node \`ws\`"
    echo
    echo "Generated by \`benches/websocket/run.sh\` on $STARTED in ${ELAPSED} s. Do not edit by hand: rerun."
    echo
    echo "The issue's requirement:"
    echo
    echo "> A Rust load client measures delivered frames/s broadcasting to 1, 100 and 1,000 subscribers of one room, p50/p99 publish → receive latency at a fixed rate, the server's CPU seconds (so: frames per server CPU-second — the load client shares the 2 cores, so this is the figure that isolates the server), and RSS per idle connection at 5,000 connections on a freshly started server. Peers in the same run: a small bench-only broadcast server on tokio-tungstenite (one task per connection, frame encoded once), and Node \`ws\`. Targets: ≥ 1.5× tokio-tungstenite's frames per server CPU-second at 1,000 subscribers; ≤ 16 KiB RSS per idle connection."
    echo
    echo "## Command"
    echo
    echo '```sh'
    echo "$COMMAND"
    echo '```'
    echo
    echo "Settings: subscribers $SUBSCRIBERS; throughput: ${WARMUP} s warm-up, ${DURATION} s measured, at most $WINDOW events per subscriber in flight, $DEPTH pipelined requests; latency: $LATENCY_RATE events/s for ${LATENCY_S} s; RSS: $CONNECTIONS connections, 3 s settle; client: $CLIENT_THREADS tokio worker threads."
    echo
    echo "Herald: $HERALD_ORIGIN; the repository was at \`$COMMIT\` when the report was written; config \`[websocket] send_queue_frames = 65536\`, \`[server] max_connections = 20000\`, development preset (no auth, fsync never). Peers: tokio-tungstenite $TT on tokio $TOKIO (\`src/bin/peer.rs\`, 2 worker threads, read buffer 4 KiB), Node $NODE with ws $WS (\`peer-node/server.mjs\`)."
    echo
    echo "## Machine"
    echo
    echo "| what | value |"
    echo "| --- | --- |"
    echo "| \`nproc\` | $(nproc) |"
    echo "| CPU | ${MODEL:-unknown} |"
    echo "| memory | $(free -g | awk '/Mem:/ {print $2}') GiB |"
    echo "| kernel | $(uname -sr) |"
    echo "| toolchain | $RUSTC, release profile |"
    echo "| other load during the run | niced processes took $NICE_SHARE of the CPU time; $(printf '%s; ' "${LOADS[@]}") |"
    echo
    echo "## Figures"
    echo
    echo "$TABLES"
    echo
    echo "## How it measures"
    echo
    echo "- Subscribers: \`?user_id=bench-<i>\` (distinct users), subscribe to \`bench:r1\`, all subscribed before publishing. The client is a minimal RFC 6455 client on tokio (\`src/bin/load.rs\`): per frame it parses the header and searches for \`\"seq\":\` and \`\"sent_ns\":\`, no JSON parse."
    echo "- Publishing, identical for the three servers: \`POST /v1/broadcast\` with \`{\"type\":\"bench\",\"event\":\"bench.tick\",\"data\":{\"seq\":N,\"sent_ns\":T},\"target\":{\"type\":\"bench\",\"id\":\"r1\"}}\` on one HTTP/1.1 keep-alive connection to the server's one port, up to $DEPTH requests pipelined, never more than $WINDOW events per subscriber published and not yet received (on average), so queues stay far below their 65,536-frame bound. The peers fill Herald's defaults (\`id\`, \`timestamp\`, \`priority\`, \`persistent\`, \`source\`, \`exclude_users\`), so every server sends the same ~315-byte frame (see \"frame bytes\")."
    echo "- Throughput: event frames received by all subscribers during the measured window ÷ its wall time. Server CPU: utime + stime of the server process (all threads) from \`/proc/PID/stat\` over the same window (10 ms ticks); frames per server CPU-second = frames ÷ that. Client cores: the load client's own CPU over the window."
    echo "- Latency: $LATENCY_RATE events/s open loop; \`sent_ns\` is the client's monotonic clock when the request is built; the receive time is read once per socket read. Every subscriber's every event is a sample. At 1,000 subscribers this rate is $((LATENCY_RATE * 1000 / 1000)) k frames/s with one write per frame per connection (at this spacing there is nothing to batch), close to what the 2 shared cores can do: read that row as latency near saturation."
    echo "- Checks after every phase: each subscriber received every event exactly once, in order; the servers' \`delivered\` answers add up to events × subscribers; no answer other than 202; no connection closed by the server."
    echo "- RSS: a fresh server; VmRSS before (once it is steady: four readings 250 ms apart within 64 KiB; the Node peer first gets SIGUSR2, a full GC), then $CONNECTIONS connections subscribed to \`bench:r1\` (at most 128 handshakes at a time), all subscribed, 3 s settle, VmRSS again (steady, as before); (after − before) ÷ $CONNECTIONS. \`shared\`: all connections use one user id; \`distinct\`: one user id each (Herald then sends presence \`join\`s to the room and lists the members in each \`subscribed\` reply; the peers have no presence)."
    echo
    echo "## Checks"
    echo
    if ((${#FAILURES[@]})); then
        printf -- '- FAILED: %s\n' "${FAILURES[@]}"
    else
        echo "All passed: no event lost, duplicated or reordered, no refusal, no connection closed by a server, no phase timed out."
    fi
    if ((${#EVIDENCE[@]})); then
        echo
        echo "## Herald's own counters"
        echo
        printf -- '- %s\n' "${EVIDENCE[@]}"
    fi
    echo
    echo "## Raw results"
    echo
    echo '```'
    cat "$RESULTS"
    echo '```'
} >"$REPORT"

echo
echo "$TABLES"
echo
echo "report: $REPORT (${ELAPSED} s)"
if ((${#FAILURES[@]})); then
    echo
    echo "FAILED checks:"
    printf -- '- %s\n' "${FAILURES[@]}"
    exit 1
fi
