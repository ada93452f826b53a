#!/usr/bin/env bash
# Webhook ingest table for issue 15: bare chi, `msisync receiver`, `msisync serve`
# (and serve while its worker drains a backlog), for two builds, two rounds
# alternated. Each target runs as its own process; wrk and `bench paced` load
# it from others, as the README's "Measuring the receiver like a user" shows.
#
#   deployments/bench/ingest-table.sh NEW_BINARY OLD_BINARY [ROUNDS]
#
# The msisync targets get the example contact's owner and account first
# (deployments/bench/owner.json, account.json), so serve's worker syncs.
#
# e.g. git worktree add /tmp/before <commit> && (cd /tmp/before && go build -o /tmp/old/msisync ./cmd/msisync)
#      go build -o /tmp/new/msisync ./cmd/msisync
#      deployments/bench/ingest-table.sh /tmp/new/msisync /tmp/old/msisync
#
# Env: DURATION (wrk/paced seconds, default 10), REPO (for the Lua script and
# payload, default this script's repository), PORT (default 18081), WRK (default wrk),
# BACKLOG_SECONDS (how long the receiver fills the backlog before "serve,
# backlog" starts on it, default 10). Needs wrk and curl. Takes about
# ROUNDS × 2 builds × 4 targets × (3 × DURATION + a few s) ≈ 9 min by default.
set -euo pipefail

NEW=${1:?usage: $0 NEW_BINARY OLD_BINARY [ROUNDS]}
OLD=${2:?usage: $0 NEW_BINARY OLD_BINARY [ROUNDS]}
ROUNDS=${3:-2}
DURATION=${DURATION:-10}
REPO=${REPO:-$(cd "$(dirname "$0")/../.." && pwd)}
PORT=${PORT:-18081}
WRK=${WRK:-wrk}
BACKLOG_SECONDS=${BACKLOG_SECONDS:-10}
KEY=bench-key-0123456789abcdef
LUA=$REPO/deployments/bench/webhook.lua
export BODY=${BODY:-$REPO/api/examples/dataverse-update-contact.json}

for b in "$NEW" "$OLD"; do [[ -x $b ]] || { echo "not an executable: $b" >&2; exit 2; }; done
command -v "$WRK" >/dev/null || { echo "wrk not found" >&2; exit 2; }
[[ -f $LUA && -f $BODY && -f $REPO/deployments/bench/owner.json ]] || { echo "missing $LUA, $BODY or the seed files (set REPO)" >&2; exit 2; }

WORK=$(mktemp -d /var/tmp/i15-bench.XXXXXX)
PID=
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

wait_up() { # url
	for _ in $(seq 1 200); do
		curl -s -o /dev/null -m 1 "$1" && return 0
		sleep 0.05
	done
	echo "target did not come up: $1 (log: $WORK/target.log)" >&2
	tail -5 "$WORK/target.log" >&2
	return 1
}

stop() {
	if [[ -n $PID ]]; then
		kill "$PID" 2>/dev/null || true
		wait "$PID" 2>/dev/null || true
		PID=
	fi
}

# start BINARY ROLE DATADIR: ROLE is bare, receiver or serve.
start() {
	local bin=$1 role=$2 dir=$3
	if [[ $role == bare ]]; then
		"$bin" bench bare --listen "127.0.0.1:$PORT" >"$WORK/target.log" 2>&1 &
		PID=$!
		wait_up "http://127.0.0.1:$PORT/"
	else
		mkdir -p "$dir"
		MSISYNC_ADDR=127.0.0.1:$PORT MSISYNC_DATA_DIR=$dir MSISYNC_WEBHOOK_KEY=$KEY \
			"$bin" "$role" >"$WORK/target.log" 2>&1 &
		PID=$!
		wait_up "http://127.0.0.1:$PORT/healthz"
		seed
	fi
}

# seed: the example contact's owner and account, so the worker syncs the
# contact instead of requeuing it for missing dependencies over and over
# (without them `serve` measured a requeue loop, not a sync).
seed() {
	local f
	for f in owner account; do
		curl -s -o /dev/null -f -X POST -H 'Content-Type: application/json' \
			--data-binary "@$REPO/deployments/bench/$f.json" "http://127.0.0.1:$PORT/webhooks/events?code=$KEY" ||
			{ echo "seeding $f failed" >&2; return 1; }
	done
	sleep 2 # serve: the worker syncs them (it waits 1 s to fill a batch)
}

URL="http://127.0.0.1:$PORT/webhooks/dataverse?code=$KEY"

# measure LABEL: wrk saturation, then paced 1,000 and 2,000 req/s; one row.
measure() {
	local label=$1 w rps p99 p1 p2
	w=$(SEED=$RANDOM$RANDOM "$WRK" -t1 -c32 -d"${DURATION}s" --latency -s "$LUA" "$URL")
	rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$w")
	p99=$(awk '$1 == "99%" {print $2}' <<<"$w")
	non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$w")
	p1=$("$NEW" bench paced --url "$URL" --rate 1000 --duration "${DURATION}s" --seed $((RANDOM * 1000000 + 1)) 2>&1 | tail -1)
	p2=$("$NEW" bench paced --url "$URL" --rate 2000 --duration "${DURATION}s" --seed $((RANDOM * 1000000 + 2)) 2>&1 | tail -1)
	local worker=
	if [[ $label == *serve* ]]; then
		worker=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk -F'[{}" ]+' '/^msisync_syncer_messages_total/ && $NF > 0 {printf "%s%s %d", sep, $3, $NF; sep=", "}')
	fi
	printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$rps" "$p99" "$(paced "$p1")" "$(paced "$p2")" "${non2xx:-0}" "${worker:--}"
	if [[ $label == *bare* ]]; then BARE=$rps; fi
	if [[ -n ${BARE:-} && $label != *bare* ]]; then
		printf '|   ratio to bare | %s | | | | | |\n' "$(awk -v a="$rps" -v b="$BARE" 'BEGIN {printf "%.2f", a / b}')"
	fi
}

# paced LINE → "p50 / p99 (achieved req/s, errors)"
paced() {
	sed -E 's/.*\(([0-9]+) req\/s\), [0-9]+ accepted, ([0-9]+) errors; p50 ([^ ]+) p95 [^ ]+ p99 ([^ ]+).*/\3 \/ \4 (\1, \2 err)/' <<<"$1"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); wrk -t1 -c32 -d${DURATION}s; new=$NEW old=$OLD"
echo
echo '| target | wrk req/s | wrk p99 | paced 1,000/s p50 / p99 (achieved, errors) | paced 2,000/s p50 / p99 (achieved, errors) | wrk non-2xx | worker outcomes |'
echo '|---|---|---|---|---|---|---|'
for round in $(seq 1 "$ROUNDS"); do
	for which in new old; do
		bin=$NEW
		[[ $which == old ]] && bin=$OLD
		BARE=
		start "$NEW" bare ""
		measure "r$round bare chi 202"
		stop
		for role in receiver serve; do
			dir=$WORK/$which-$round-$role
			start "$bin" "$role" "$dir"
			measure "r$round $which $role"
			stop
		done
		# serve while its worker drains a backlog the receiver left.
		dir=$WORK/$which-$round-backlog
		start "$bin" receiver "$dir"
		SEED=$RANDOM$RANDOM "$WRK" -t1 -c32 -d"${BACKLOG_SECONDS}s" -s "$LUA" "$URL" >/dev/null
		stop
		start "$bin" serve "$dir"
		measure "r$round $which serve, backlog of ${BACKLOG_SECONDS}s of receiver"
		stop
		rm -rf "$WORK"/"$which"-"$round"-*
	done
done
