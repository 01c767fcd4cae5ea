#!/usr/bin/env bash
# bench/load-gen.sh: load-gen's TPC-B throughput against pgbench's, same cluster, same scale,
# same clients, same two threads, same transaction (pgbench's built-in TPC-B-like script with
# prepared statements). Goal (issue #5): load-gen within 10 % of pgbench while it records
# every transaction's outcome.
#
#   bench/load-gen.sh                      # SCALE=10 CLIENTS=4 DURATION=30
#   SCALE=1 CLIENTS=8 DURATION=10 bench/load-gen.sh
#
# Runs, each after the same reset (history truncated, small tables vacuumed, as pgbench does):
#   pgbench   pgbench -n -M prepared -c N -j 2 -T D
#   tpcb      load-gen -w tpcb -c N -j 2 -T D       (the same script; outcomes counted)
#   mixed     load-gen -w mixed --log FILE ...      (+1 probe INSERT per transaction, each
#                                                    acknowledgement logged: the referee setup)
# synchronous_commit is off by default (SYNC_COMMIT=on to change it) so that the figure
# measures the clients rather than this machine's fsync latency.
# Prints one JSON line per run (with the client's CPU per transaction, which a busy machine
# disturbs less than tps) and a summary line; keeps them under bench/results/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
! pgs_wants_help "$@" || pgs_help

SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-4}
DURATION=${DURATION:-30}
JOBS=${JOBS:-2}
SYNC_COMMIT=${SYNC_COMMIT:-off}

pgs_require_cmd jq "$PG_BIN/pgbench"
# LOAD_GEN_BIN=path uses that binary; otherwise build the release one.
LOAD_GEN_BIN=$(pgs_release_bin load-gen)

work=$(mktemp -d /tmp/pgshift-bench-load-gen.XXXXXX)
chmod 755 "$work"
trap 'pgs_cluster_destroy "$work/pg"; rm -rf "$work"' EXIT
out=$(pgs_results_file load-gen jsonl)

pgs_log "cluster: scale $SCALE, $CLIENTS clients, $JOBS threads, ${DURATION}s per run, synchronous_commit=$SYNC_COMMIT"
pgs_cluster_create "$work/pg" "$(pgs_free_port 127.0.0.1)" 127.0.0.1 \
  "synchronous_commit=$SYNC_COMMIT" shared_buffers=256MB max_wal_size=4GB
pgs_cluster_start "$work/pg"
dsn=$(pgs_dsn "$work/pg")
"$LOAD_GEN_BIN" --dsn "$dsn" --init --scale "$SCALE" >/dev/null

reset() {
  pgs_psql "$dsn" "TRUNCATE pgbench_history" >/dev/null
  pgs_psql "$dsn" "VACUUM pgbench_branches" >/dev/null
  pgs_psql "$dsn" "VACUUM pgbench_tellers" >/dev/null
  pgs_psql "$dsn" "CHECKPOINT" >/dev/null
}

# Bash's `time` writes the child's user and system CPU seconds in this format.
TIMEFORMAT='%U %S'

# cpu_us_per_txn TIMEFILE TRANSACTIONS: the client's user+system CPU per transaction, in µs;
# less sensitive to a busy machine than tps.
cpu_us_per_txn() {
  awk -v n="$2" '{ printf "%.1f\n", ($1 + $2) * 1e6 / (n > 0 ? n : 1) }' "$1"
}

reset
pgs_log "pgbench -n -M prepared -c $CLIENTS -j $JOBS -T $DURATION"
{ time "$PG_BIN/pgbench" -n -M prepared -c "$CLIENTS" -j "$JOBS" -T "$DURATION" "$dsn" \
  >"$work/pgbench.out" 2>"$work/pgbench.err"; } 2>"$work/time" ||
  pgs_die "$EX_SOFTWARE" "pgbench failed: $(tail -n 5 "$work/pgbench.err")"
pgbench_tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$work/pgbench.out" | head -n 1)
pgbench_txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$work/pgbench.out")
[[ -n $pgbench_tps && -n $pgbench_txns ]] || pgs_die "$EX_SOFTWARE" "could not read pgbench's tps"
pgbench_cpu=$(cpu_us_per_txn "$work/time" "$pgbench_txns")
pgs_json run tool=pgbench tps:="$pgbench_tps" committed:="$pgbench_txns" \
  cpu_us_per_txn:="$pgbench_cpu" | tee -a "$out"

# run_load_gen NAME ARGS...: one load-gen run; prints its figures (and keeps them in $out).
run_load_gen() {
  local name=$1 summary
  shift
  reset
  pgs_log "load-gen $*"
  { time "$LOAD_GEN_BIN" --dsn "$dsn" -c "$CLIENTS" -j "$JOBS" -T "${DURATION}s" --json-only \
    "$@" >"$work/load-gen.out" 2>"$work/load-gen.err"; } 2>"$work/time" ||
    pgs_die "$EX_SOFTWARE" "load-gen failed: $(tail -n 5 "$work/load-gen.err")"
  summary=$(tail -n 1 "$work/load-gen.out")
  [[ $(jq -r .type <<<"$summary") == summary ]] || pgs_die "$EX_SOFTWARE" "load-gen wrote no summary"
  jq -c --arg name "$name" --argjson cpu "$(cpu_us_per_txn "$work/time" "$(jq .committed <<<"$summary")")" \
    '{type: "run", tool: ("load-gen " + $name), tps, committed, cpu_us_per_txn: $cpu, failed,
      unknown, latency_p50_ms, latency_p99_ms, max_write_gap_ms, acked}' <<<"$summary" |
    tee -a "$out"
}

run_load_gen tpcb -w tpcb
tpcb_tps=$(tail -n 1 "$out" | jq .tps)
tpcb_cpu=$(tail -n 1 "$out" | jq .cpu_us_per_txn)
run_load_gen mixed -w mixed --log "$work/acked.jsonl"
mixed_tps=$(tail -n 1 "$out" | jq .tps)
acks=$(grep -c '"type":"ack"' "$work/acked.jsonl" || true)

ratio=$(jq -n "$tpcb_tps / $pgbench_tps * 100 | round / 100")
mixed_ratio=$(jq -n "$mixed_tps / $pgbench_tps * 100 | round / 100")
pgs_log "load-gen tpcb / pgbench = $ratio (goal >= 0.90); mixed with ack log / pgbench = $mixed_ratio"
pgs_json summary tool=load-gen-bench success:="$(jq -n "$ratio >= 0.9")" \
  scale:="$SCALE" clients:="$CLIENTS" jobs:="$JOBS" duration_s:="$DURATION" \
  synchronous_commit="$SYNC_COMMIT" pgbench_tps:="$pgbench_tps" load_gen_tps:="$tpcb_tps" \
  ratio:="$ratio" mixed_tps:="$mixed_tps" mixed_ratio:="$mixed_ratio" logged_acks:="$acks" \
  pgbench_cpu_us_per_txn:="$pgbench_cpu" load_gen_cpu_us_per_txn:="$tpcb_cpu" |
  tee -a "$out"
pgs_log "results in $out"
