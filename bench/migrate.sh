#!/usr/bin/env bash
# bench/migrate.sh: switchover downtime under load, pgshift's migrate.sh against the hand
# sequence (pg_ctl stop -m fast, then SELECT pg_promote(true)), measured in the same run.
#
#   bench/migrate.sh [--rounds N] [--clients N] [--archive-rounds N] [--peers LIST]
#                    [--peer-rounds N] [--bin DIR]
#
# Two local hosts (hosts-local.sh); after one initial migration A→B (the base copy), each
# round switches the primary back and forth while load-gen (--clients, mixed workload: TPC-B
# plus acknowledged probe writes) runs against both hosts with target_session_attrs=read-write.
# For every switchover: load-gen's max_write_gap_ms (what clients saw), migrate's own
# downtime_ms, and lost/split-brain writes from load-gen --verify. --rounds switchovers each
# way with migrate.sh, the same with the hand sequence, then --archive-rounds each way in
# archive mode (wal-ship only, no streaming). Then the peers a DBA would otherwise use, each at
# its defaults, under the same probe (--peers, default patroni,pg_auto_failover; --peer-rounds
# switchovers each way, default --rounds): Patroni 3 with etcd (`patronictl switchover`) and
# pg_auto_failover 2.0 (`pg_autoctl perform switchover`), see bench/lib/peers.sh.
# Prints one `switchover` record per switchover and a `summary` (medians, max, lost) on
# stdout; also writes them to bench/results/migrate-<timestamp>.jsonl.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/lib.sh"
! pgs_wants_help "$@" || pgs_help
. "$here/bench/lib/peers.sh"
PGS_NAME=bench-migrate

rounds=10 clients=4 archive_rounds=3 bin=$here/target/release peers=patroni,pg_auto_failover peer_rounds=""
while (($#)); do
  case $1 in
    --rounds) rounds=${2:?}; shift ;;
    --clients) clients=${2:?}; shift ;;
    --archive-rounds) archive_rounds=${2:?}; shift ;;
    --peers) peers=${2?}; shift ;;
    --peer-rounds) peer_rounds=${2:?}; shift ;;
    --bin) bin=${2:?}; shift ;;
    *) pgs_die "$EX_USAGE" "unknown option '$1'" ;;
  esac
  shift
done
peer_rounds=${peer_rounds:-$rounds}
pgs_bench_begin migrate "$bin" load-gen wal-ship rowcount-diff pg-checksum pg-switch
pgs_require_cmd jq
pgs_bench_workdir migrate
work=$PGS_WORK
# The run's own status survives the clean-up (a peer already stopped is not a failure).
cleanup() {
  local rc=$?
  "$here/scripts/hosts-local.sh" destroy "$work/s" >/dev/null 2>&1 || true
  "$here/scripts/hosts-local.sh" destroy "$work/a" >/dev/null 2>&1 || true
  if [[ -d $work/patroni ]]; then PEER_DIR=$work/patroni peer_patroni_down >/dev/null 2>&1 || true; fi
  if [[ -d $work/pgaf ]]; then PEER_DIR=$work/pgaf peer_pgaf_down >/dev/null 2>&1 || true; fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT


# load_start HOSTS_ENV: load-gen against both hosts, following the primary.
load_start() {
  local env=$1 SOURCE_DSN TARGET_ADDR TARGET_PORT
  # shellcheck disable=SC1090
  . "$env"
  load_start_dsn "$(pgs_bench_both_dsn "$SOURCE_DSN" "$TARGET_ADDR" "$TARGET_PORT" user=postgres)"
}

# load_start_dsn DSN: the probe every switchover in this benchmark is measured with.
load_start_dsn() {
  load_out=$work/load-$RANDOM.jsonl
  pgs_load_start "$bin/load-gen" "$1" "$load_out" -c "$clients" -w mixed --log "$load_out.acks" --verify
}

# peer_switch KIND: one switchover by a peer under the probe; prints its record (downtime_ms
# is the peer command's own wall time, from the call until it returned).
peer_switch() {
  local kind=$1 t0 t1
  load_start_dsn "$PEER_DSN"
  sleep 1
  t0=$(pgs_now_ms)
  case $kind in
    patroni) peer_patroni_switch ;;
    pg_auto_failover) peer_pgaf_switch ;;
  esac
  t1=$(pgs_now_ms)
  sleep 1
  pgs_load_stop
  pgs_record "$(jq -c --arg kind "$kind" --argjson ms $((t1 - t0)) \
    '{type: "switchover", kind: $kind, mode: "stream", command_ms: $ms,
      max_write_gap_ms, unavailable_ms, committed, lost, split_brain}' <<<"$PGS_LOAD_SUMMARY")"
}

# hand_switch ENV DIRECTION: the hand sequence, then the old primary rejoins as a standby.
hand_switch() {
  local env=$1 reverse=$2 SOURCE_DSN SOURCE_PGDATA TARGET_ADDR TARGET_PORT TARGET_PGDATA REPL_USER
  # shellcheck disable=SC1090
  . "$env"
  local port_a src_pgdata dst_addr dst_port dst_dsn t0 t1
  port_a=$(pgs_conninfo_value "$SOURCE_DSN" port)
  if ((reverse)); then
    src_pgdata=$TARGET_PGDATA dst_addr=127.0.0.1 dst_port=$port_a
  else
    src_pgdata=$SOURCE_PGDATA dst_addr=$TARGET_ADDR dst_port=$TARGET_PORT
  fi
  dst_dsn="host=$dst_addr port=$dst_port user=postgres dbname=postgres sslmode=disable"
  [[ $(pgs_psql "$dst_dsn" "SELECT pg_is_in_recovery()") == t ]] ||
    pgs_die "$EX_SOFTWARE" "hand sequence: $dst_addr:$dst_port is not a running standby"
  t0=$(pgs_now_ms)
  pgs_as_pg "$PG_BIN/pg_ctl" -D "$src_pgdata" -m fast -w stop >/dev/null
  pgs_psql "$dst_dsn" "SELECT pg_promote(true)" >/dev/null
  t1=$(pgs_now_ms)
  # Rejoin the old primary as a standby of the new one (as migrate.sh does).
  pgs_as_pg sh -c "sed -i '/^primary_conninfo/d; /^primary_slot_name/d' '$src_pgdata/postgresql.auto.conf' &&
    echo \"primary_conninfo = 'host=$dst_addr port=$dst_port user=$REPL_USER passfile=$(dirname "$src_pgdata")/pgshift-$(basename "$src_pgdata")/pgpass application_name=pgshift_rejoin'\" >> '$src_pgdata/postgresql.auto.conf' &&
    touch '$src_pgdata/standby.signal'"
  pgs_as_pg "$PG_BIN/pg_ctl" -D "$src_pgdata" -l "$(dirname "$src_pgdata")/server.log" -w start >/dev/null
  hand_ms=$((t1 - t0))
}

# one_switch KIND MODE ENV REVERSE: a switchover under load; prints its record.
one_switch() {
  local kind=$1 mode=$2 env=$3 reverse=$4 summary downtime rc=0
  load_start "$env"
  if [[ $kind == pgshift ]]; then
    local args=(--hosts-env "$env" --bin "$bin" --yes --mode "$mode" --no-verify)
    ((reverse)) && args+=(--reverse)
    summary=$("$here/scripts/migrate.sh" "${args[@]}" 2>/dev/null | tail -n 1) || rc=$?
    ((rc == 0)) || pgs_die "$EX_SOFTWARE" "migrate.sh failed: $summary"
    downtime=$(jq -r .downtime_ms <<<"$summary")
  else
    hand_switch "$env" "$reverse"
    downtime=$hand_ms
  fi
  sleep 1
  pgs_load_stop
  pgs_record "$(jq -c --arg kind "$kind" --arg mode "$mode" --argjson reverse "$reverse" --argjson downtime "$downtime" \
    '{type: "switchover", kind: $kind, mode: $mode, direction: (if $reverse == 1 then "B->A" else "A->B" end),
      downtime_ms: $downtime, max_write_gap_ms, unavailable_ms, committed, lost, split_brain}' <<<"$PGS_LOAD_SUMMARY")"
}

pgs_log "creating two hosts (stream mode)"
"$here/scripts/hosts-local.sh" create "$work/s" --bin "$bin" >/dev/null
pgs_log "initial migration A->B (base copy, verified)"
"$here/scripts/migrate.sh" --hosts-env "$work/s/hosts.env" --bin "$bin" --yes >"$work/initial.jsonl" 2>/dev/null ||
  pgs_die "$EX_SOFTWARE" "initial migration failed: $(tail -n 1 "$work/initial.jsonl")"
pgs_record "$(tail -n 1 "$work/initial.jsonl" | jq -c '{type: "initial_migration", downtime_ms, verdict, bytes_copied, phases_ms}')"

# B is the primary now: rounds alternate B->A (reverse) and A->B.
for kind in pgshift hand; do
  for ((i = 1; i <= rounds; i++)); do
    one_switch "$kind" stream "$work/s/hosts.env" 1
    one_switch "$kind" stream "$work/s/hosts.env" 0
  done
done
"$here/scripts/hosts-local.sh" destroy "$work/s" >/dev/null

if ((archive_rounds > 0)); then
  pgs_log "creating two hosts (archive mode)"
  "$here/scripts/hosts-local.sh" create "$work/a" --archive --bin "$bin" >/dev/null
  "$here/scripts/migrate.sh" --hosts-env "$work/a/hosts.env" --bin "$bin" --yes --mode archive --no-verify >/dev/null 2>&1 ||
    pgs_die "$EX_SOFTWARE" "initial archive-mode migration failed"
  for ((i = 1; i <= archive_rounds; i++)); do
    one_switch pgshift archive "$work/a/hosts.env" 1
    one_switch pgshift archive "$work/a/hosts.env" 0
  done
fi

for peer in ${peers//,/ }; do
  case $peer in
    patroni) pgs_log "Patroni 3 + etcd: two members"; peer_patroni_up "$work/patroni" ;;
    pg_auto_failover) pgs_log "pg_auto_failover 2.0: a monitor and two nodes"; peer_pgaf_up "$work/pgaf" ;;
    *) pgs_die "$EX_USAGE" "unknown peer '$peer' (patroni, pg_auto_failover)" ;;
  esac
  for ((i = 1; i <= 2 * peer_rounds; i++)); do peer_switch "$peer"; done
  case $peer in
    patroni) peer_patroni_down ;;
    pg_auto_failover) peer_pgaf_down ;;
  esac
done

jq -s -c '
  def stats(f): (map(f) | sort) as $s | {median: (if ($s | length) == 0 then null else $s[($s | length) / 2 | floor] end), max: ($s | max), n: ($s | length)};
  def ratio($x; $y): if ($x | length) > 0 and ($y | length) > 0 then
      (($x | stats(.max_write_gap_ms).median) / ($y | stats(.max_write_gap_ms).median) * 100 | round / 100) else null end;
  [.[] | select(.type == "switchover")] as $all
  | ($all | map(select(.kind == "pgshift" and .mode == "stream"))) as $p
  | ($all | map(select(.kind == "hand"))) as $h
  | ($all | map(select(.mode == "archive"))) as $a
  | ($all | map(select(.kind == "patroni"))) as $pat
  | ($all | map(select(.kind == "pg_auto_failover"))) as $af
  | {type: "summary", tool: "bench-migrate",
     pgshift_gap_ms: ($p | stats(.max_write_gap_ms)), pgshift_downtime_ms: ($p | stats(.downtime_ms)),
     hand_gap_ms: ($h | stats(.max_write_gap_ms)), hand_downtime_ms: ($h | stats(.downtime_ms)),
     archive_gap_ms: ($a | stats(.max_write_gap_ms)), archive_downtime_ms: ($a | stats(.downtime_ms)),
     lost: ($all | map(.lost // 0) | add), split_brain: ($all | map(.split_brain // 0) | add),
     patroni_gap_ms: ($pat | stats(.max_write_gap_ms)), patroni_command_ms: ($pat | stats(.command_ms)),
     pg_auto_failover_gap_ms: ($af | stats(.max_write_gap_ms)), pg_auto_failover_command_ms: ($af | stats(.command_ms)),
     median_gap_ratio_pgshift_vs_hand: ratio($p; $h),
     median_gap_ratio_pgshift_vs_patroni: ratio($p; $pat),
     median_gap_ratio_pgshift_vs_pg_auto_failover: ratio($p; $af)}' \
  "$PGS_RESULTS" | tee -a "$PGS_RESULTS"
