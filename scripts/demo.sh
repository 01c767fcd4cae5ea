#!/usr/bin/env bash
# make demo: the main job end to end on one machine.
#
# Two local hosts (hosts-local.sh: a loaded source A and an empty target B) and a PgBouncer in
# front of A (the application's one address), load-gen running through it (4 clients, TPC-B
# plus acknowledged probe writes; with --no-pooler: a multi-host DSN following the primary), a live
# migration A→B (base copy, streaming catch-up, switchover, verification), then back B→A,
# each under its own load-gen run whose acknowledged writes are verified afterwards.
# Prints a short human summary on stderr (the switchover, what clients saw: errors and the
# longest stall, lost writes, the verdict) and writes every record to the report file
# (JSON lines: both migrations' phases and summaries, load-gen's summaries and verifications).
#
#   scripts/demo.sh [--netns] [--mode stream|archive] [--no-pooler] [--dir DIR]
#
# PGSHIFT_BIN: where the tools are (default target/release). The hosts are removed at the
# end; the report stays (DIR/report.jsonl, default /tmp/pgshift-demo), and a page to look at
# (DIR/report.html, pg-report: charts of the load through each migration).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PGS_NAME=demo
here=$(cd "$(dirname "$0")" && pwd)
bin=${PGSHIFT_BIN:-$(cd "$here/.." && pwd)/target/release}
dir=/tmp/pgshift-demo netns=() mode=stream pooler=(--pooler)
while (($#)); do
  case $1 in
    --netns) netns=(--netns) ;;
    --mode) pgs_val "$@"; mode=$2; shift ;;
    --dir) pgs_val "$@"; dir=$2; shift ;;
    --no-pooler) pooler=() ;;
    -h | --help) pgs_help ;;
    *) pgs_usage "unknown option '$1'" ;;
  esac
  shift
done
for t in load-gen wal-ship rowcount-diff pg-checksum pg-switch pg-scram pg-report pgdata-sync; do
  [[ -x $bin/$t ]] || pgs_die "$EX_UNAVAILABLE" "$bin/$t is missing (run 'make release', or 'make demo')"
done
pgs_require_cmd jq
mkdir -p "$dir"
chmod 755 "$dir"
hosts=$dir/hosts report=$dir/report.jsonl
"$here/hosts-local.sh" destroy "$hosts" >/dev/null 2>&1 || true
: >"$report"
trap '"$here/hosts-local.sh" destroy "$hosts" >/dev/null 2>&1 || true' EXIT

archive=()
[[ $mode == archive ]] && archive=(--archive)
pgs_log "creating two local hosts${pooler:+ and a PgBouncer} and loading the sample data (Pagila-like + pgbench)"
"$here/hosts-local.sh" create "$hosts" --pgbench-scale 5 --bin "$bin" "${netns[@]}" "${archive[@]}" "${pooler[@]}" >>"$report"
# shellcheck disable=SC1091
. "$hosts/hosts.env"
port_a=$(pgs_conninfo_value "$SOURCE_DSN" port)
addr_a=$(pgs_conninfo_value "$SOURCE_DSN" host)
app_dsn="host=$addr_a,$TARGET_ADDR port=$port_a,$TARGET_PORT user=postgres dbname=app target_session_attrs=read-write"
# What the clients use: the pooler's one address (unnamed statements: PgBouncer 1.18 in
# transaction pooling cannot keep prepared ones), or both hosts.
client_dsn=$app_dsn client_opts=()
if ((${#pooler[@]})); then
  client_dsn="host=$POOLER_ADDR port=$POOLER_PORT user=postgres dbname=app"
  client_opts=(--protocol extended)
fi

# migrate_under_load LABEL [migrate.sh options]: one migration while load-gen runs.
migrate_under_load() {
  local label=$1 acks=$dir/acks-$1.jsonl rc=0
  shift
  pgs_load_start "$bin/load-gen" "$client_dsn" "$dir/load-$label.jsonl" -c 4 -w mixed "${client_opts[@]}" --log "$acks"
  sleep 2
  pgs_log "migrating $label under load"
  "$here/migrate.sh" --hosts-env "$hosts/hosts.env" --bin "$bin" --mode "$mode" --yes \
    --report "$dir/migrate-$label.jsonl" "$@" >/dev/null || rc=$?
  sleep 2
  pgs_load_stop
  {
    jq -c --arg m "$label" '. + {migration: $m}' "$dir/migrate-$label.jsonl"
    jq -c --arg m "$label" '{type: "load", migration: $m, committed, tps, max_write_gap_ms, max_stall_ms, errors_total, errors_by_kind, unavailable_ms, split_brain, latency_p99_ms}' <<<"$PGS_LOAD_SUMMARY"
    "$bin/load-gen" verify --dsn "$app_dsn" --log "$acks" | tail -n 1 |
      jq -c --arg m "$label" '{type: "load_verified", migration: $m, acked, present, lost, split_brain, unknown}'
  } >>"$report"
  ((rc == 0)) || pgs_die "$rc" "migration $label failed (exit $rc); see $dir/migrate-$label.jsonl"
}

migrate_under_load A-to-B
migrate_under_load B-to-A --reverse

# The page to look at: both migrations' timelines (load-gen's ticks), proofs, verdicts, bytes.
page=$dir/report.html
"$bin/pg-report" html --migrate "$report" --load "$dir/load-A-to-B.jsonl" --load "$dir/load-B-to-A.jsonl" \
  --title "pgshift demo ($mode mode)" -o "$page" >/dev/null || pgs_die "$?" "pg-report could not write $page"

# The summary, for people.
line() {
  local m=$1 s l v
  s=$(jq -c --arg m "$m" 'select(.type == "summary" and .migration == $m)' "$report")
  l=$(jq -c --arg m "$m" 'select(.type == "load" and .migration == $m)' "$report")
  v=$(jq -c --arg m "$m" 'select(.type == "load_verified" and .migration == $m)' "$report")
  printf '  %-7s switchover %4s ms; clients saw %s errors, their longest wait %4s ms (write gap %4s ms)  lost writes: %s  split brain: %s  data: %s\n' \
    "${m/-to-/ → }" "$(jq -r .downtime_ms <<<"$s")" "$(jq -r .errors_total <<<"$l")" "$(jq -r .max_stall_ms <<<"$l")" \
    "$(jq -r .max_write_gap_ms <<<"$l")" "$(jq -r .lost <<<"$v")" "$(jq -r .split_brain <<<"$v")" "$(jq -r .verdict <<<"$s")"
}
{
  printf '\npgshift demo (%s mode, clients %s)\n' "$mode" "$( ((${#pooler[@]})) && echo "through one PgBouncer" || echo "with a multi-host DSN")"
  line A-to-B
  line B-to-A
  printf '  report: %s\n  page:   %s\n\n' "$report" "$page"
} >&2
total_lost=$(jq -s '[.[] | select(.type == "load_verified") | .lost] | add' "$report")
verdicts=$(jq -r -s '[.[] | select(.type == "summary" and .migration != null) | .verdict] | unique | join(",")' "$report")
client_errors=$(jq -s '[.[] | select(.type == "load") | .errors_total // 0] | add' "$report")
ok=false
# Behind the pooler the promise includes "no client error"; with a multi-host DSN each client
# sees errors at the switch (and reconnects).
[[ $total_lost == 0 && $verdicts == equal ]] && { ((${#pooler[@]} == 0)) || ((client_errors == 0)); } && ok=true
summary=$(pgs_json summary success:=$ok mode="$mode" pooler:="$( ((${#pooler[@]})) && echo true || echo false)" \
  client_errors:="$client_errors" lost:="$total_lost" verdicts="$verdicts" report="$report" page="$page")
printf '%s\n' "$summary" | tee -a "$report"
[[ $ok == true ]] || exit "$EX_DIFF"
