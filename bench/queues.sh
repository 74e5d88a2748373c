#!/usr/bin/env bash
# bench/queues.sh: start 3 gridnode processes on 127.0.0.1 (default
# reliable profile: one synchronous backup), wait until the cluster is safe,
# run `gridctl queue bench` with the given flags against all three, and stop
# the members. The workload of docs/benchmarks.md ("Queues"):
#
#   bench/queues.sh --clients 50 --queues 1 --duration 5s --json
#   bench/queues.sh --clients 50 --queues 64 --duration 5s --json
#
# Binaries are built into bench/bin/ (BENCH_NO_BUILD=1 reuses them);
# member logs go to a temporary directory. Ports: 27946-27948 (gossip),
# 25701-25703 (data), 28080-28082 (HTTP).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bench/bin
if [ -z "${BENCH_NO_BUILD:-}" ]; then
	(cd "$root" && CGO_ENABLED=0 go build -o "$bin/gridnode" ./cmd/gridnode &&
		CGO_ENABLED=0 go build -o "$bin/gridctl" ./cmd/gridctl)
fi
logs=$(mktemp -d)
pids=()
stop() {
	[ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null || true
	wait || true
}
trap stop EXIT
for i in 0 1 2; do
	join=()
	[ "$i" -gt 0 ] && join=(--join 127.0.0.1:27946)
	GODEBUG=schedtrace=2147483647 "$bin/gridnode" --name "n$((i + 1))" \
		--bind "127.0.0.1:$((27946 + i))" --addr "127.0.0.1:$((25701 + i))" \
		--http "127.0.0.1:$((28080 + i))" --gossip fast --log-level warn \
		${join[@]+"${join[@]}"} >"$logs/n$((i + 1)).log" 2>&1 &
	pids+=($!)
	# The first member must be up before the others join it.
	for _ in $(seq 1 50); do
		curl -fs "http://127.0.0.1:$((28080 + i))/healthz" >/dev/null 2>&1 && break
		sleep 0.1
	done
done
for _ in $(seq 1 150); do
	"$bin/gridctl" --addr 127.0.0.1:25701 status 2>/dev/null | grep 'safe: yes' >/dev/null && break
	sleep 0.2
done
echo "members ready; logs in $logs" >&2
"$bin/gridctl" --addr 127.0.0.1:25701,127.0.0.1:25702,127.0.0.1:25703 queue bench "$@"
