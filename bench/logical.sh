#!/usr/bin/env bash
# bench/logical.sh: the logical mode's copy time and downtime under load, against pgcopydb
# clone --follow (Debian's pgcopydb) and against pgshift's physical mode, in one run, on the
# physical benchmark's dataset and load (hosts-local.sh: Pagila-like + pgbench tables;
# load-gen, 4 clients, mixed workload).
#
#   bench/logical.sh [--rounds N] [--clients N] [--scale N] [--pgbench-scale N]
#                    [--target-version N] [--peers LIST] [--bin DIR]
#
# --peers: which of logical, pgcopydb, physical to run (default all three).
#
# logical: hosts-local --logical; a first move A->B (copy: setup + copy phases; downtime: the
#   fence to the target taking writes; verified by pg-checksum at the fence), then --rounds
#   moves each way over the way back (no copy). load-gen writes as the application's role
#   through both hosts and is verified after every move (one run per move).
# pgcopydb: a fresh pair; roles and the empty database made on the target first (pgcopydb
#   0.10 cannot replay pg_dumpall 15.14's \restrict lines); `pgcopydb clone --follow`
#   (wal2json); copy time until it starts applying; the cutover as its tutorial says, with
#   the same fence pgshift uses (the application's role NOLOGIN, its sessions ended), then
#   `stream sentinel set endpos --current`, pgcopydb's exit, the target's role LOGIN.
#   Downtime: the fence to that LOGIN. No verification at the fence (it has none).
# physical: hosts-local (stream mode); migrate.sh A->B (base copy), then --rounds each way.
# Records: one `move` per move (kind, direction, copy_ms, downtime_ms, max_write_gap_ms,
# committed, lost, split_brain, verdict), then a `summary` with medians and ratios; also in
# bench/results/logical-<timestamp>.jsonl.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/lib.sh"
PGS_NAME=bench-logical
! pgs_wants_help "$@" || pgs_help

rounds=5 clients=4 scale=1 pgbench_scale=1 target_version=15 peers=logical,pgcopydb,physical bin=$here/target/release
while (($#)); do
  case $1 in
    --rounds) pgs_val "$@"; rounds=$2; shift ;;
    --clients) pgs_val "$@"; clients=$2; shift ;;
    --scale) pgs_val "$@"; scale=$2; shift ;;
    --pgbench-scale) pgs_val "$@"; pgbench_scale=$2; shift ;;
    --target-version) pgs_val "$@"; target_version=$2; shift ;;
    --peers) pgs_val "$@"; peers=$2; shift ;;
    --bin) pgs_val "$@"; bin=$2; shift ;;
    -h | --help) pgs_help ;;
    *) pgs_usage "unknown option '$1'" ;;
  esac
  shift
done
pgs_bench_begin logical "$bin" load-gen pg-logical pg-checksum pg-switch rowcount-diff
pgs_require_cmd jq
pgs_bench_workdir logical
work=$PGS_WORK
cleanup() {
  local rc=$?
  pkill -f "pgcopydb clone --follow.*$work" 2>/dev/null || true
  for d in l p s; do "$here/scripts/hosts-local.sh" destroy "$work/$d" >/dev/null 2>&1 || true; done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
# The dataset's tables without a primary key: logical replication needs them REPLICA IDENTITY FULL.
identity_full=(film_poster pgbench_history)
fixes=()
for t in "${identity_full[@]}"; do fixes+=(--replica-identity-full "$t"); done
hosts=(--scale "$scale" --pgbench-scale "$pgbench_scale" --bin "$bin")

# env_of DIR: load hosts.env; sets A_DSN, B_DSN (superuser) and BOTH (the application).
env_of() {
  # shellcheck disable=SC1091
  . "$1/hosts.env"
  A_DSN="host=127.0.0.1 port=$(pgs_conninfo_value "$SOURCE_DSN" port) user=postgres dbname=app sslmode=disable"
  B_DSN="host=$TARGET_ADDR port=$TARGET_PORT user=postgres dbname=app sslmode=disable"
  BOTH=$(pgs_bench_both_dsn "$SOURCE_DSN" "$TARGET_ADDR" "$TARGET_PORT")
}

# load USER: load-gen through both hosts as USER.
load() {
  load_out=$work/load-$RANDOM.jsonl
  pgs_load_start "$bin/load-gen" "$BOTH user=$1" "$load_out" -c "$clients" -w mixed --log "$load_out.acks"
}
# verified DSN: stop the load, verify it against DSN; sets VERIFIED (load-gen verify's summary).
verified() {
  sleep 1
  pgs_load_stop
  VERIFIED=$("$bin/load-gen" verify --dsn "$1" --log "$load_out.acks" 2>/dev/null | tail -n 1) || true
  [[ $VERIFIED == '{'* ]] || VERIFIED='{}'
}
# record KIND DIRECTION COPY_MS DOWNTIME_MS VERDICT
record() {
  pgs_record "$(jq -c -n --arg kind "$1" --arg dir "$2" --argjson copy "${3:-null}" --argjson down "${4:-null}" \
    --arg verdict "$5" --argjson load "$PGS_LOAD_SUMMARY" --argjson ver "$VERIFIED" \
    '{type: "move", kind: $kind, direction: $dir, copy_ms: $copy, downtime_ms: $down, verdict: $verdict,
      max_write_gap_ms: $load.max_write_gap_ms, errors_total: $load.errors_total, committed: $load.committed,
      lost: $ver.lost, split_brain: $ver.split_brain}')"
}

# moves KIND USER COPY VERDICT MIGRATE_ARG...: a first move A->B, then --rounds moves each way
# (--reverse every other one), each with migrate.sh MIGRATE_ARGs under load-gen as USER and
# verified on its destination; a `move` record each, its copy_ms (first move only) and verdict
# the jq expressions COPY and VERDICT on migrate.sh's summary.
moves() {
  local kind=$1 user=$2 copy_jq=$3 verdict_jq=$4 i args dir to out copy
  shift 4
  for ((i = 0; i <= 2 * rounds; i++)); do
    args=("$@")
    dir=A-B to=$B_DSN
    if ((i % 2 == 1)); then args+=(--reverse) dir=B-A to=$A_DSN; fi
    load "$user"
    out=$("$here/scripts/migrate.sh" "${args[@]}" 2>"$work/err" | tail -n 1) ||
      pgs_die "$EX_SOFTWARE" "$kind move $dir failed: $out $(tail -n 3 "$work/err")"
    verified "$to"
    copy=null
    ((i == 0)) && copy=$(jq "$copy_jq" <<<"$out")
    record "$kind" "$dir" "$copy" "$(jq .downtime_ms <<<"$out")" "$(jq -r "$verdict_jq" <<<"$out")"
  done
}

# --- logical ---------------------------------------------------------------------------------
if [[ ,$peers, == *,logical,* ]]; then
  pgs_log "logical: two hosts (target PostgreSQL $target_version)"
  "$here/scripts/hosts-local.sh" create "$work/l" --logical --target-version "$target_version" "${hosts[@]}" >/dev/null
  env_of "$work/l"
  moves logical app '.phase_ms.setup + .phase_ms.copy' .verdict \
    --mode logical --hosts-env "$work/l/hosts.env" --bin "$bin" --yes "${fixes[@]}"
  "$here/scripts/hosts-local.sh" destroy "$work/l" >/dev/null
fi

# --- pgcopydb clone --follow ----------------------------------------------------------------
if [[ ,$peers, == *,pgcopydb,* ]]; then
  pgs_require_cmd pgcopydb
  [[ -e $PG_BIN/../lib/wal2json.so ]] || pgs_die "$EX_UNAVAILABLE" "pgcopydb 0.10 decodes with wal2json: apt install postgresql-15-wal2json (make setup --bench)"
  pgs_log "pgcopydb: two hosts"
  "$here/scripts/hosts-local.sh" create "$work/p" --logical --target-version "$target_version" "${hosts[@]}" >/dev/null
  env_of "$work/p"
  b_admin=${B_DSN/dbname=app/dbname=postgres}
  # Until the cutover the application writes to A only (as pgshift's fence of the target does).
  pgs_psql "$b_admin" "CREATE ROLE app NOLOGIN" >/dev/null
  pgs_psql "$b_admin" "CREATE DATABASE app OWNER app" >/dev/null
  pgs_psql "$A_DSN" "$(printf 'ALTER TABLE %s REPLICA IDENTITY FULL; ' "${identity_full[@]}")" >/dev/null
  load app
  t0=$(pgs_now_ms)
  pgcopydb clone --follow --source "$A_DSN" --target "$B_DSN" --dir "$work/pgc" --table-jobs 4 --index-jobs 4 \
    >"$work/pgcopydb.log" 2>&1 &
  pgc_pid=$!
  until grep -aq 'sentinel has enabled applying changes' "$work/pgcopydb.log"; do
    kill -0 "$pgc_pid" 2>/dev/null || pgs_die "$EX_SOFTWARE" "pgcopydb clone failed: $(grep -a 'ERROR' "$work/pgcopydb.log" | head -n 3)"
    sleep 0.05
  done
  copy=$(($(pgs_now_ms) - t0))
  sleep 5 # catch up, like pgshift's catch_up phase
  a_admin=${A_DSN/dbname=app/dbname=postgres}
  t0=$(pgs_now_ms)
  pgs_psql "$a_admin" "ALTER ROLE app NOLOGIN" >/dev/null
  pgs_psql "$a_admin" "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'" >/dev/null
  pgcopydb stream sentinel set endpos --current --source "$A_DSN" >>"$work/pgcopydb.log" 2>&1 ||
    pgs_die "$EX_SOFTWARE" "pgcopydb stream sentinel set endpos failed: $(tail -n 3 "$work/pgcopydb.log")"
  # It exits once it applied up to endpos; give it two minutes.
  outcome=unverified
  for ((s = 0; s < 1200; s++)); do
    kill -0 "$pgc_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pgc_pid" 2>/dev/null; then
    outcome="failed: did not reach endpos in 120 s ($(grep -a -m 1 'ERROR' "$work/pgcopydb.log" | cut -c1-160))"
    pgs_log "pgcopydb: $outcome"
    pkill -f "pgcopydb clone --follow.*$work" || true
  else
    wait "$pgc_pid" || outcome="failed: exit $?"
  fi
  pgs_psql "$b_admin" "ALTER ROLE app LOGIN" >/dev/null
  down=$(($(pgs_now_ms) - t0))
  [[ $outcome == unverified ]] || down=null
  verified "$B_DSN"
  record pgcopydb A-B "$copy" "$down" "$outcome"
  pgcopydb stream cleanup --source "$A_DSN" --target "$B_DSN" --dir "$work/pgc" >/dev/null 2>&1 || true
  "$here/scripts/hosts-local.sh" destroy "$work/p" >/dev/null
fi

# --- physical --------------------------------------------------------------------------------
if [[ ,$peers, == *,physical,* ]]; then
  pgs_log "physical: two hosts"
  "$here/scripts/hosts-local.sh" create "$work/s" "${hosts[@]}" >/dev/null
  env_of "$work/s"
  moves physical postgres .phases_ms.base_copy '"unverified"' \
    --hosts-env "$work/s/hosts.env" --bin "$bin" --yes --no-verify
fi

jq -s -c '
  def med(f): (map(f) | map(select(. != null)) | sort) as $s | if ($s | length) == 0 then null else $s[($s | length) / 2 | floor] end;
  [.[] | select(.type == "move")] as $all
  | ($all | map(select(.kind == "logical"))) as $l
  | ($all | map(select(.kind == "pgcopydb"))) as $c
  | ($all | map(select(.kind == "physical"))) as $p
  | {type: "summary", tool: "bench-logical",
     logical_copy_ms: ($l | med(.copy_ms)), logical_downtime_ms: ($l | med(.downtime_ms)),
     logical_downtime_max_ms: ($l | map(.downtime_ms) | max), logical_gap_ms: ($l | med(.max_write_gap_ms)),
     logical_lost: ($l | map(.lost // 0) | add), logical_verdicts: ($l | map(.verdict) | unique),
     pgcopydb_copy_ms: ($c | med(.copy_ms)), pgcopydb_downtime_ms: ($c | med(.downtime_ms)),
     pgcopydb_lost: ($c | map(.lost) | add),
     physical_copy_ms: ($p | med(.copy_ms)), physical_downtime_ms: ($p | med(.downtime_ms)),
     physical_lost: ($p | map(.lost // 0) | add),
     copy_ratio_logical_vs_pgcopydb: (if ($l | med(.copy_ms)) != null and ($c | med(.copy_ms)) != null then (($l | med(.copy_ms)) / ($c | med(.copy_ms)) * 100 | round / 100) else null end),
     downtime_ratio_logical_vs_physical: (if ($l | med(.downtime_ms)) != null and ($p | med(.downtime_ms)) != null then (($l | med(.downtime_ms)) / ($p | med(.downtime_ms)) * 100 | round / 100) else null end)}' \
  "$PGS_RESULTS" | tee -a "$PGS_RESULTS"
