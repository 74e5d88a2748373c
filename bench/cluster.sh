#!/usr/bin/env bash
# bench/cluster.sh: start 3 gridnode processes on 127.0.0.1, wait until the
# cluster is ready and safe, run `gridctl bench` against it, print its output
# (the JSON object with --json) on stdout, and stop the members on exit.
#
# Usage:
#
#   bench/cluster.sh [GRIDNODE FLAGS...] [-- GRIDCTL BENCH FLAGS...]
#
# GRIDNODE FLAGS go to every member (e.g. --profile performance,
# --backup-count 2, --backup-count 0 --async-backup-count 1); the script
# itself adds --name, --bind, --addr, --http, --join and --gossip fast.
# GRIDCTL BENCH FLAGS go to `gridctl bench` (the script adds --addr).
# Examples (the workload of docs/benchmarks.md):
#
#   bench/cluster.sh -- --clients 50 --requests 300000 --keys 100000 \
#       --value-size 100 --prefill --ratio 0:1 --json            # puts, 1 sync backup
#   bench/cluster.sh --profile performance -- --clients 50 --requests 300000 \
#       --keys 100000 --value-size 100 --prefill --ratio 1:0 --json   # gets, no backups
#   bench/cluster.sh --backup-count 0 --async-backup-count 1 -- ...  # 1 async backup
#
# Only the JSON (or text report) of gridctl goes to stdout; progress and
# errors go to stderr, so `bench/cluster.sh ... > run.json` keeps the result.
#
# Environment:
#   GOSSIP_PORT, DATA_PORT, HTTP_PORT  first port of each kind; member i
#                     (0..2) uses port+i (defaults 17946, 15701, 18080)
#   BENCH_NO_BUILD=1  reuse bench/bin/gridnode and bench/bin/gridctl
#   BENCH_PERF=DIR    also record CPU profiles with `perf record -g` of
#                     member n1 and of gridctl during the gridctl run
#                     (prefill included), into DIR/gridnode.perf.data and
#                     DIR/gridctl.perf.data; read them with
#                     perf report -i FILE --no-children --sort symbol
#   PERF_FREQ         sampling frequency for BENCH_PERF, Hz (default 999)
#   BENCH_KEEP_LOGS=1 keep the members' logs (their directory is printed)
#   MEMBER_GOMAXPROCS GOMAXPROCS of the members (default: Go's, the CPU
#                     count); gridctl keeps Go's default
#   GRIDCTL_FLAGS     global flags for every gridctl call (status and
#                     bench), split on spaces: e.g. "--tls-ca ca.pem
#                     --tls-cert c.pem --tls-key c-key.pem" for a TLS cluster
#
# At the end the script reports on stderr how many read and write syscalls
# and how much CPU time the members used during the gridctl run (from
# /proc/PID/io and /proc/PID/stat), and the CPU time of gridctl.
#
# Binaries are built with CGO_ENABLED=0 go build into bench/bin/. Member logs
# go to a temporary directory, printed on failure. The members get SIGTERM
# on exit (normal end, error, Ctrl-C) and SIGKILL if they are still running
# 5 s later; no process is left behind.

set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bench/bin
gossip_port=${GOSSIP_PORT:-17946}
data_port=${DATA_PORT:-15701}
http_port=${HTTP_PORT:-18080}
perf_freq=${PERF_FREQ:-999}

node_args=()
bench_args=()
while [ $# -gt 0 ]; do
	if [ "$1" = "--" ]; then
		shift
		bench_args=("$@")
		break
	fi
	node_args+=("$1")
	shift
done

log() { echo "cluster.sh: $*" >&2; }

if [ "${BENCH_NO_BUILD:-}" != 1 ]; then
	log "building gridnode and gridctl into $bin"
	(cd "$root" && CGO_ENABLED=0 go build -o "$bin/gridnode" ./cmd/gridnode &&
		CGO_ENABLED=0 go build -o "$bin/gridctl" ./cmd/gridctl)
fi

for i in 0 1 2; do
	for p in $((gossip_port + i)) $((data_port + i)) $((http_port + i)); do
		if ss -Hltn "sport = :$p" | grep -q .; then
			log "port $p is in use (set GOSSIP_PORT, DATA_PORT, HTTP_PORT)"
			exit 1
		fi
	done
done

logs=$(mktemp -d "${TMPDIR:-/tmp}/shoal-bench.XXXXXX")
pids=()
perf_pids=()

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for p in "${perf_pids[@]}"; do
		kill -INT "$p" 2>/dev/null || true
	done
	for p in "${perf_pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for _ in $(seq 50); do
		alive=0
		for p in "${pids[@]}"; do
			if kill -0 "$p" 2>/dev/null; then alive=1; fi
		done
		[ $alive = 0 ] && break
		sleep 0.1
	done
	for p in "${pids[@]}"; do
		if kill -0 "$p" 2>/dev/null; then
			log "member pid $p did not stop after SIGTERM: SIGKILL"
			kill -KILL "$p" 2>/dev/null || true
		fi
		wait "$p" 2>/dev/null || true
	done
	if [ $rc != 0 ] || [ "${BENCH_KEEP_LOGS:-}" = 1 ]; then
		log "member logs in $logs"
	else
		rm -rf "$logs"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

addrs=""
for i in 0 1 2; do
	args=(--name "n$((i + 1))" --bind "127.0.0.1:$((gossip_port + i))"
		--addr "127.0.0.1:$((data_port + i))" --http "127.0.0.1:$((http_port + i))"
		--gossip fast --log-level warn)
	if [ $i -gt 0 ]; then
		args+=(--join "127.0.0.1:$gossip_port")
	fi
	env ${MEMBER_GOMAXPROCS:+GOMAXPROCS=$MEMBER_GOMAXPROCS} "$bin/gridnode" "${args[@]}" ${node_args[@]+"${node_args[@]}"} >"$logs/n$((i + 1)).log" 2>&1 &
	pids+=($!)
	addrs+="${addrs:+,}127.0.0.1:$((data_port + i))"
	if [ $i = 0 ]; then
		# The seed must be listening before the others join it.
		for _ in $(seq 100); do
			curl -fs -o /dev/null "http://127.0.0.1:$http_port/healthz" && break
			kill -0 "${pids[0]}" 2>/dev/null || { log "n1 exited:"; cat "$logs/n1.log" >&2; exit 1; }
			sleep 0.1
		done
	fi
done

log "waiting for 3 ready members (pids ${pids[*]})"
deadline=$((SECONDS + 60))
for i in 0 1 2; do
	until curl -fs -o /dev/null "http://127.0.0.1:$((http_port + i))/readyz"; do
		kill -0 "${pids[$i]}" 2>/dev/null || { log "n$((i + 1)) exited:"; cat "$logs/n$((i + 1)).log" >&2; exit 1; }
		[ $SECONDS -lt $deadline ] || { log "n$((i + 1)) not ready after 60 s"; exit 1; }
		sleep 0.1
	done
done
# Ready means "in a table"; wait until every partition also has its full
# set of replicas, in sync, so the run does not race the initial copies.
until st=$("$bin/gridctl" status --json --addr "$addrs" ${GRIDCTL_FLAGS:-} 2>/dev/null) &&
	[ "$(grep -o '"name"' <<<"$st" | wc -l)" = 3 ] && grep -q '"safe":true' <<<"$st"; do
	[ $SECONDS -lt $deadline ] || { log "cluster not safe after 60 s: $st"; exit 1; }
	sleep 0.2
done
log "cluster ready: $addrs; running gridctl bench ${bench_args[*]:-}"

# sysio prints "reads writes ticks switches": the read and write syscalls
# of the members so far (from /proc/PID/io), their CPU time in clock ticks
# and the context switches of their live threads (/proc/PID/task/*/status).
sysio() {
	local r=0 w=0 t=0 cs=0 p
	for p in "${pids[@]}"; do
		r=$((r + $(awk '/^syscr/ { print $2 }' "/proc/$p/io")))
		w=$((w + $(awk '/^syscw/ { print $2 }' "/proc/$p/io")))
		t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
		cs=$((cs + $(cat /proc/"$p"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { n += $2 } END { print n + 0 }')))
	done
	echo "$r $w $t $cs"
}
io_before=$(sysio)

if [ -n "${BENCH_PERF:-}" ]; then
	mkdir -p "$BENCH_PERF"
	perf record -q -F "$perf_freq" -g -p "${pids[0]}" -o "$BENCH_PERF/gridnode.perf.data" 2>/dev/null &
	perf_pids+=($!)
	sleep 0.2
	perf record -q -F "$perf_freq" -g -o "$BENCH_PERF/gridctl.perf.data" -- \
		"$bin/gridctl" bench --addr "$addrs" ${GRIDCTL_FLAGS:-} ${bench_args[@]+"${bench_args[@]}"}
else
	/usr/bin/time -f "cluster.sh: gridctl used %U s user + %S s system CPU, %e s elapsed" \
		"$bin/gridctl" bench --addr "$addrs" ${GRIDCTL_FLAGS:-} ${bench_args[@]+"${bench_args[@]}"}
fi
read -r r0 w0 t0 c0 <<<"$io_before"
read -r r1 w1 t1 c1 <<<"$(sysio)"
log "members during the gridctl run (prefill included): $((r1 - r0)) read and $((w1 - w0)) write syscalls, $((c1 - c0)) context switches, $(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }') CPU seconds"
