#!/usr/bin/env bash
# bench/pooler.sh: what clients see at a switchover behind a PgBouncer (one address, the
# switch PAUSEs it) against the same clients with a libpq multi-host DSN (no pooler), measured
# in the same run on the same two hosts.
#
#   bench/pooler.sh [--rounds N] [--clients N] [--bin DIR]
#
# Two local hosts and Debian's PgBouncer 1.18 in front of them (hosts-local.sh --pooler,
# transaction pooling); one initial migration A→B (the base copy), then --rounds switchovers
# each way with every client going through the pooler (load-gen --protocol extended: unnamed
# statements, which PgBouncer 1.18 in transaction pooling needs), then --rounds each way with
# the clients on both hosts (host=A,B target_session_attrs=read-write; migrate.sh
# --no-pooler). Each switchover runs under its own load-gen (--clients, mixed workload: TPC-B
# plus acknowledged probe writes, checked afterwards): its errors (per kind), its longest
# stall (request to answer, any client), its longest write gap, lost writes; and migrate's
# downtime. Prints one `switchover` record per switchover and a `summary` (per setup: errors
# per switchover, median and max stall, lost; and the ratios) on stdout; also writes them to
# bench/results/pooler-<timestamp>.jsonl.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/lib.sh"
! pgs_wants_help "$@" || pgs_help
PGS_NAME=bench-pooler

rounds=10 clients=4 bin=$here/target/release
while (($#)); do
  case $1 in
    --rounds) rounds=${2:?}; shift ;;
    --clients) clients=${2:?}; shift ;;
    --bin) bin=${2:?}; shift ;;
    *) pgs_die "$EX_USAGE" "unknown option '$1' (usage: bench/pooler.sh [--rounds N] [--clients N] [--bin DIR])" ;;
  esac
  shift
done
pgs_bench_begin pooler "$bin" load-gen rowcount-diff pg-checksum pg-switch pg-scram
pgs_require_cmd jq pgbouncer
pgs_bench_workdir pooler
work=$PGS_WORK
cleanup() {
  local rc=$?
  "$here/scripts/hosts-local.sh" destroy "$work/h" >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

pgs_log "creating two hosts and a PgBouncer in front of them"
"$here/scripts/hosts-local.sh" create "$work/h" --pooler --bin "$bin" >/dev/null
env=$work/h/hosts.env
# shellcheck disable=SC1090
. "$env"
both=$(pgs_bench_both_dsn "$SOURCE_DSN" "$TARGET_ADDR" "$TARGET_PORT" user=postgres)
through="host=$POOLER_ADDR port=$POOLER_PORT user=postgres dbname=app sslmode=disable"

pgs_log "initial migration A->B (base copy)"
"$here/scripts/migrate.sh" --hosts-env "$env" --bin "$bin" --yes --databases app >"$work/initial.jsonl" 2>"$work/initial.err" ||
  pgs_die "$EX_SOFTWARE" "initial migration failed: $(tail -n 1 "$work/initial.jsonl")"
reverse=1

# one_switch SETUP: one switchover (the direction alternates) under its own load-gen.
one_switch() {
  local setup=$1 args=(--hosts-env "$env" --bin "$bin" --yes --no-verify) summary rc=0 load_out
  local dsn=$through load_opts=(--protocol extended)
  if [[ $setup == multihost ]]; then dsn=$both load_opts=() args+=(--no-pooler); fi
  ((reverse)) && args+=(--reverse)
  load_out=$work/load-$RANDOM.jsonl
  pgs_load_start "$bin/load-gen" "$dsn" "$load_out" -c "$clients" -w mixed "${load_opts[@]}" --log "$load_out.acks"
  sleep 1
  summary=$("$here/scripts/migrate.sh" "${args[@]}" 2>"$work/migrate.err" | tail -n 1) || rc=$?
  ((rc == 0)) || pgs_die "$EX_SOFTWARE" "migrate.sh failed ($setup): $summary"
  sleep 1
  pgs_load_stop
  local verified
  verified=$("$bin/load-gen" verify --dsn "$both" --log "$load_out.acks" | tail -n 1)
  pgs_record "$(jq -c --arg setup "$setup" --argjson reverse "$reverse" --argjson m "$summary" --argjson v "$verified" \
    '{type: "switchover", setup: $setup, direction: (if $reverse == 1 then "B->A" else "A->B" end),
      downtime_ms: $m.downtime_ms, errors_total, errors_by_kind, max_stall_ms, max_write_gap_ms, committed,
      lost: $v.lost, split_brain: $v.split_brain}' <<<"$PGS_LOAD_SUMMARY")"
  reverse=$((1 - reverse))
}

for setup in pooler multihost; do
  pgs_log "$rounds switchovers each way, clients: $setup"
  for ((i = 1; i <= 2 * rounds; i++)); do one_switch "$setup"; done
done

jq -s -c '
  def med: sort as $s | if ($s | length) == 0 then null else $s[($s | length) / 2 | floor] end;
  def per($rows): {switchovers: ($rows | length),
    errors_per_switchover: (if ($rows | length) > 0 then (($rows | map(.errors_total) | add) / ($rows | length) * 100 | round / 100) else null end),
    stall_ms: {median: ($rows | map(.max_stall_ms) | med), max: ($rows | map(.max_stall_ms) | max)},
    write_gap_ms: {median: ($rows | map(.max_write_gap_ms) | med), max: ($rows | map(.max_write_gap_ms) | max)},
    downtime_ms: {median: ($rows | map(.downtime_ms) | med)},
    lost: ($rows | map(.lost // 0) | add), split_brain: ($rows | map(.split_brain // 0) | add)};
  [.[] | select(.type == "switchover")] as $all
  | ($all | map(select(.setup == "pooler"))) as $p
  | ($all | map(select(.setup == "multihost"))) as $m
  | {type: "summary", tool: "bench-pooler", pooler: per($p), multihost: per($m),
     median_stall_ratio_pooler_vs_multihost: (if ($m | length) > 0 and ($m | map(.max_stall_ms) | med) > 0
       then (($p | map(.max_stall_ms) | med) / ($m | map(.max_stall_ms) | med) * 100 | round / 100) else null end),
     lost: ($all | map(.lost // 0) | add)}' "$PGS_RESULTS" | tee -a "$PGS_RESULTS"
