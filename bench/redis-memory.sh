#!/usr/bin/env bash
# bench/redis-memory.sh: the Redis side of the memory-per-entry comparison
# in docs/benchmarks.md. It starts a throw-away redis-server (no
# persistence), writes N keys "key:%07d" with VALUE_SIZE-byte values (the
# shape bench/memory puts into Shoal) through redis-cli --pipe, and prints
# used_memory before and after, DBSIZE and the growth per key as one JSON
# object. The server is shut down on exit.
#
# Usage:
#
#   bench/redis-memory.sh            # N=1000000 VALUE_SIZE=100 REDIS_PORT=6398
#
# Needs redis-server and redis-cli (Debian: apt-get install redis-server
# redis-tools).

set -euo pipefail

n=${N:-1000000}
vsize=${VALUE_SIZE:-100}
port=${REDIS_PORT:-6398}

redis-server --port "$port" --save '' --appendonly no --daemonize yes >/dev/null
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

mem() { redis-cli -p "$port" info memory | awk -F: '/^used_memory:/ { print $2 + 0 }'; }

redis-cli -p "$port" flushall >/dev/null
before=$(mem)
# RESP protocol: *3 $3 SET $11 key:0000000 $100 <value>
awk -v n="$n" -v vs="$vsize" 'BEGIN {
	v = ""
	for (i = 0; i < vs; i++) v = v sprintf("%c", 97 + i % 26)
	for (i = 0; i < n; i++) {
		k = sprintf("key:%07d", i)
		printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, vs, v
	}
}' | redis-cli -p "$port" --pipe >&2
after=$(mem)
dbsize=$(redis-cli -p "$port" dbsize)
version=$(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/')
awk -v b="$before" -v a="$after" -v d="$dbsize" -v n="$n" -v vs="$vsize" -v ver="$version" 'BEGIN {
	printf "{\"redis_version\":\"%s\",\"keys\":%d,\"value_size\":%d,\"used_memory_before\":%d,\"used_memory_after\":%d,\"bytes_per_key\":%.1f}\n", ver, d, vs, b, a, (a - b) / d
}'
