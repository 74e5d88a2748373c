#!/usr/bin/env bash
# bench/matrix.sh: the measurement matrix of docs/benchmarks.md. For each
# round (ROUNDS, default 2) it runs bench/cluster.sh for every backup
# configuration (0, 1 sync, 2 sync, 1 async) with puts (--ratio 0:1) and
# with gets (--ratio 1:0), then redis-benchmark against a local Redis and
# against a local Redis Cluster (bench/redis-cluster.sh), so Shoal and Redis
# are measured in the same session, interleaved.
#
# Usage:
#
#   bench/matrix.sh [OUTDIR]        # default OUTDIR: $TMPDIR/shoal-matrix-<UTC time>
#
# Every result is one JSON line appended to OUTDIR/results.jsonl:
#   {"system":"shoal","config":"backups=1","ratio":"0:1","round":1,
#    "busy_before":0.003,"others_after":0,"usage":{...},"result":{...}}
#   {"system":"redis","round":1,"busy_before":0.003,"others_after":0,"csv":"..."}
# result is the output of gridctl bench --json; csv that of redis-benchmark
# --csv. usage holds the CPU seconds of gridctl and of the members and the
# members' read/write syscalls over the whole gridctl run (the prefill of
# KEYS puts included), as reported by bench/cluster.sh, whose stderr is kept
# in OUTDIR/run<round>-<config>-<ratio>.stderr.
#
# The machine may be shared: before each run the script waits (up to
# QUIET_MAX seconds, default 600) until the CPU was less than QUIET_BUSY
# (default 0.15) busy over 2 s and no test run is going on (go test
# binaries, their gridnode processes, the go command). busy_before is that
# last CPU reading; others_after counts such processes seen when the run
# ended (non-zero: the run may have been slowed by them).
#
# Environment: REQUESTS (300000), KEYS (100000), CLIENTS (50), VALUE_SIZE
# (100), ROUNDS (2), NO_REDIS=1 to skip Redis, REDIS_PORT (6399),
# BENCH_COMMIT (recorded in OUTDIR/session.txt instead of git's HEAD, for a
# tree exported with git archive); the port variables of bench/cluster.sh;
# MEMBER_GOMAXPROCS (passed to bench/cluster.sh: GOMAXPROCS of the members).

set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${TMPDIR:-/tmp}/shoal-matrix-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
res=$out/results.jsonl
requests=${REQUESTS:-300000}
keys=${KEYS:-100000}
clients=${CLIENTS:-50}
vsize=${VALUE_SIZE:-100}
rounds=${ROUNDS:-2}
redis_port=${REDIS_PORT:-6399}
quiet_busy=${QUIET_BUSY:-0.15}
quiet_max=${QUIET_MAX:-600}

log() { echo "matrix.sh: $*" >&2; }

# busy prints the fraction of non-idle CPU time over the next 2 s.
busy() {
	local a b
	read -r _ a1 a2 a3 a4 a5 a6 a7 a8 _ </proc/stat
	sleep 2
	read -r _ b1 b2 b3 b4 b5 b6 b7 b8 _ </proc/stat
	a=$((a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8))
	b=$((b1 + b2 + b3 + b4 + b5 + b6 + b7 + b8))
	awk -v t=$((b - a)) -v i=$(((b4 + b5) - (a4 + a5))) 'BEGIN { printf "%.3f", t ? 1 - i / t : 0 }'
}

# others counts processes of concurrent test runs (go test binaries, their
# gridnode processes, the go command), a sign that a run was contended.
others() { pgrep -fc '/go-build|proctest-gridnode|[.]test( |$)|^go (test|build|vet)' || true; }

# wait_quiet waits until the machine is idle and no test run is going on
# (or QUIET_MAX passes) and
# prints the last busy fraction.
wait_quiet() {
	local end=$((SECONDS + quiet_max)) b
	while :; do
		b=$(busy)
		if { awk -v b="$b" -v q="$quiet_busy" 'BEGIN { exit !(b < q) }' && [ "$(others)" = 0 ]; } ||
			[ $SECONDS -ge $end ]; then
			echo "$b"
			return
		fi
		log "machine busy ($b), waiting"
	done
}

redis_started=0
stop_redis() {
	if [ $redis_started = 1 ]; then
		redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
		redis_started=0
	fi
}
trap stop_redis EXIT

configs=("backups=0|--profile performance" "backups=1|" "backups=2|--backup-count 2"
	"async=1|--backup-count 0 --async-backup-count 1")

(cd "$root" && CGO_ENABLED=0 go build -o bench/bin/gridnode ./cmd/gridnode &&
	CGO_ENABLED=0 go build -o bench/bin/gridctl ./cmd/gridctl)
{
	if [ -n "${BENCH_COMMIT:-}" ]; then
		commit=$BENCH_COMMIT
	elif commit=$(git -C "$root" rev-parse HEAD 2>/dev/null); then
		git -C "$root" diff --quiet HEAD -- . ':!bench' ':!docs' || commit+=" (with uncommitted changes)"
	else
		commit=unknown
	fi
	echo "# $(date -u +%FT%TZ) commit $commit"
	echo "# $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(go version)"
	echo "# members' GOMAXPROCS: ${MEMBER_GOMAXPROCS:-default}; GODEBUG: ${GODEBUG:-none}"
} >>"$out/session.txt"

for round in $(seq "$rounds"); do
	for c in "${configs[@]}"; do
		name=${c%%|*}
		read -r -a flags <<<"${c#*|}"
		for ratio in 0:1 1:0; do
			b=$(wait_quiet)
			log "round $round $name ratio $ratio (busy before: $b)"
			errf=$out/run$round-$name-${ratio/:/-}.stderr
			json=$(BENCH_NO_BUILD=1 "$root/bench/cluster.sh" ${flags[@]+"${flags[@]}"} -- \
				--clients "$clients" --requests "$requests" --keys "$keys" \
				--value-size "$vsize" --prefill --ratio "$ratio" --json 2>"$errf") || json='{"failed":true}'
			o=$(others)
			# CPU and syscalls of the whole gridctl run, prefill included.
			usage=$(awk '
				/gridctl used/ { c = $4 + $8 }
				/members during/ { r = $9; w = $12; cs = $15; m = $18 }
				END { printf "{\"gridctl_cpu_s\":%s,\"members_cpu_s\":%s,\"members_reads\":%s,\"members_writes\":%s,\"members_ctxsw\":%s}", c+0, m+0, r+0, w+0, cs+0 }' "$errf")
			echo "{\"system\":\"shoal\",\"config\":\"$name\",\"ratio\":\"$ratio\",\"round\":$round,\"busy_before\":$b,\"others_after\":$o,\"usage\":$usage,\"result\":$json}" >>"$res"
			echo "$json $usage" >&2
		done
	done
	if [ "${NO_REDIS:-}" != 1 ]; then
		redis-server --port "$redis_port" --save '' --appendonly no --daemonize yes >/dev/null
		redis_started=1
		for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
		b=$(wait_quiet)
		log "round $round redis (busy before: $b)"
		csv=$(redis-benchmark -p "$redis_port" -c "$clients" -n "$requests" -r "$keys" -d "$vsize" -t set,get -P 1 --csv)
		o=$(others)
		stop_redis
		echo "$csv" >&2
		printf '{"system":"redis","round":%s,"busy_before":%s,"others_after":%s,"csv":%s}\n' "$round" "$b" "$o" \
			"$(python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))' <<<"$csv")" >>"$res"
		# Redis Cluster, 3 masters + 3 replicas (asynchronous replication).
		b=$(wait_quiet)
		log "round $round redis cluster (busy before: $b)"
		csv=$(CLIENTS=$clients REQUESTS=$requests KEYS=$keys VALUE_SIZE=$vsize ROUNDS=1 \
			"$root/bench/redis-cluster.sh" 2>"$out/run$round-redis-cluster.stderr" | grep '^"') || csv=failed
		o=$(others)
		echo "$csv" >&2
		printf '{"system":"redis-cluster","round":%s,"busy_before":%s,"others_after":%s,"csv":%s}\n' "$round" "$b" "$o" \
			"$(python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))' <<<"$csv")" >>"$res"
	fi
done
log "results in $res"
