#!/usr/bin/env bash
# bench/redis-cluster.sh: the Redis Cluster reference of docs/benchmarks.md.
# Starts a Redis Cluster of 3 masters and 3 replicas (6 redis-server
# processes on 127.0.0.1, ports PORT..PORT+5, no persistence), waits until
# the cluster is ok, runs
#
#   redis-benchmark --cluster -c CLIENTS -n REQUESTS -r KEYS -d VALUE_SIZE -t set,get -P 1 --csv
#
# ROUNDS times (default 2), prints its CSV on stdout, and stops the servers
# on exit (also on error or Ctrl-C). Needs Debian's redis-server and
# redis-tools. Redis Cluster replicates asynchronously: a SET is
# acknowledged before its replica has it (compare with Shoal's
# --backup-count 0 --async-backup-count 1).
#
# Environment: PORT (7100), CLIENTS (50), REQUESTS (300000), KEYS (100000),
# VALUE_SIZE (100), ROUNDS (2).
set -euo pipefail

port=${PORT:-7100}
clients=${CLIENTS:-50}
requests=${REQUESTS:-300000}
keys=${KEYS:-100000}
vsize=${VALUE_SIZE:-100}
rounds=${ROUNDS:-2}
dir=$(mktemp -d)
log() { echo "redis-cluster.sh: $*" >&2; }

cleanup() {
	for i in 0 1 2 3 4 5; do
		redis-cli -p $((port + i)) shutdown nosave >/dev/null 2>&1 || true
	done
	rm -rf "$dir"
}
trap cleanup EXIT

addrs=()
for i in 0 1 2 3 4 5; do
	p=$((port + i))
	mkdir -p "$dir/$p"
	redis-server --port "$p" --cluster-enabled yes --cluster-config-file "$dir/$p/nodes.conf" \
		--dir "$dir/$p" --save '' --appendonly no --daemonize yes --logfile "$dir/$p/log" >/dev/null
	addrs+=("127.0.0.1:$p")
done
for i in 0 1 2 3 4 5; do
	for _ in $(seq 50); do redis-cli -p $((port + i)) ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 ||
	{ cat "$dir/create.log" >&2; exit 1; }
deadline=$((SECONDS + 60))
until [ "$(redis-cli -p "$port" cluster info | tr -d '\r' | awk -F: '/^cluster_state/ { print $2 }')" = ok ]; do
	[ $SECONDS -lt $deadline ] || { log "cluster not ok after 60 s"; exit 1; }
	sleep 0.2
done
# The replicas attach (and sync) a moment after the cluster is ok.
until [ "$(redis-cli -p "$port" cluster nodes | grep -c slave)" = 3 ] &&
	[ "$(for i in 0 1 2 3 4 5; do redis-cli -p $((port + i)) info replication; done | tr -d '\r' | grep -c 'master_link_status:up')" = 3 ]; do
	[ $SECONDS -lt $deadline ] || { log "replicas not attached after 60 s"; exit 1; }
	sleep 0.2
done
log "cluster ok: $(redis-cli -p "$port" cluster nodes | grep -c master) masters, $(redis-cli -p "$port" cluster nodes | grep -c slave) replicas in sync"
for r in $(seq "$rounds"); do
	log "round $r"
	redis-benchmark --cluster -p "$port" -c "$clients" -n "$requests" -r "$keys" -d "$vsize" -t set,get -P 1 --csv
done
