#!/usr/bin/env bash
# End-to-end test of docker-compose.yml: start the 3 members from $IMAGE
# (built by `make image`), wait until gridctl sees a safe 3-member cluster,
# write and read through different members, run a short bench, stop one
# member gracefully and check nothing was lost, then tear everything down.
# Run by `make compose-test` (and CI). Fails on the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."

export IMAGE=${IMAGE:-shoal/gridnode:latest}
project=shoalci$$
deadline_s=${COMPOSE_TEST_WAIT:-90}

if docker compose version >/dev/null 2>&1; then
	compose() { docker compose -p "$project" -f docker-compose.yml "$@"; }
elif command -v docker-compose >/dev/null 2>&1; then
	compose() { docker-compose -p "$project" -f docker-compose.yml "$@"; }
else
	echo "compose-test: neither 'docker compose' nor docker-compose is installed" >&2
	exit 1
fi

step() { printf '\n--> %s\n' "$*"; }
ctl() { local n=$1; shift; compose exec -T "$n" /gridctl --timeout 5s "$@" </dev/null; }

cleanup() {
	local rc=$?
	if ((rc != 0)); then
		echo "compose-test failed; member logs:" >&2
		compose logs --no-color --tail 60 >&2 || true
	fi
	compose down -v -t 45 >/dev/null 2>&1 || true
	exit "$rc"
}
trap cleanup EXIT

start=$(date +%s)
step "compose up ($IMAGE)"
compose up -d

step "wait for a safe 3-member cluster"
ok=""
for ((i = 0; i < deadline_s; i++)); do
	if out=$(ctl n1 status --json 2>/dev/null) && [[ $out == *'"safe":true'* ]] &&
		[[ $(grep -o '"name"' <<<"$out" | wc -l) -eq 3 ]]; then
		ok=1
		break
	fi
	sleep 1
done
[[ -n $ok ]] || { echo "no safe 3-member cluster within ${deadline_s}s: ${out:-}" >&2; exit 1; }
ctl n2 status

step "write through n2, read through n3"
ctl n2 map put users alice '{"age":30}' --msgpack
got=$(ctl n3 map get users alice --msgpack)
[[ $got == '{"age":30}' ]] || { echo "read $got" >&2; exit 1; }
# 200 keys in one exec (bench --prefill puts every key once).
ctl n1 bench --map smoke --keys 200 --prefill --requests 200 --ratio 1:0 --json
[[ $(ctl n3 map size smoke) == 200 ]]

step "bench through n1"
ctl n1 bench --requests 5000 --clients 8 --json

step "stop n3 gracefully (SIGTERM, hand-over)"
compose stop -t 45 n3
# Not grep -q: it exits at the first match, and under pipefail the
# writer's SIGPIPE would fail the pipeline.
compose logs --no-color n3 | grep 'partitions handed over' >/dev/null || { echo "n3 did not hand over" >&2; exit 1; }
[[ $(ctl n1 map size smoke) == 200 ]]
got=$(ctl n2 map get users alice --msgpack)
[[ $got == '{"age":30}' ]]
out=$(ctl n1 status --json)
[[ $(grep -o '"name"' <<<"$out" | wc -l) -eq 2 ]] || { echo "after stop: $out" >&2; exit 1; }

step "compose-test passed in $(($(date +%s) - start))s"
