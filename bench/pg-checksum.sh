#!/usr/bin/env bash
# Benchmark pg-checksum (and, briefly, rowcount-diff) on tables of PGSHIFT_BENCH_SCALE x 100k
# rows (default 50: 5M rows) on two local clusters, once with an integer key
# (pgbench_accounts.aid) and once with a text key (accounts_text.k, md5 of aid, an ICU
# collation: chunked in the key index's order since both hosts share it), against:
#   - COPY pgbench_accounts TO STDOUT through psql on both hosts (one after the other, and
#     both at once): the cost of reading every row once; goal: pg-checksum <= 1.5x;
#   - reladiff (hashdiff, same key and columns): goal: faster, finding the same differences.
# The target gets 3 changed, 2 deleted and 2 extra rows after the "equal" round of each.
#
# Prints a table on stderr and one JSON summary line on stdout; also writes it to
# bench/results/pg-checksum-<timestamp>.json. Needs pgbench; reladiff is optional
# (scripts/setup-machine.sh --bench installs it) and its column is skipped without it.
#
#   bench/pg-checksum.sh                      # 5M rows
#   PGSHIFT_BENCH_SCALE=2 bench/pg-checksum.sh # a quick run
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../scripts/lib.sh
. "$ROOT/scripts/lib.sh"
! pgs_wants_help "$@" || pgs_help

SCALE=${PGSHIFT_BENCH_SCALE:-50}
JOBS=${PGSHIFT_BENCH_JOBS:-2}
ROWS=$((SCALE * 100000))
BIN=${PGSHIFT_BIN:-$ROOT/target/release}
RESULTS=$ROOT/bench/results
mkdir -p "$RESULTS"

pgs_require_cmd jq "$PG_BIN/pgbench" "$PG_BIN/psql"
if [[ -z ${PGSHIFT_BIN:-} ]]; then
  (cd "$ROOT" && cargo build --release -q -p pg-checksum -p rowcount-diff)
fi

WORK=$(mktemp -d /tmp/pgshift-bench-checksum.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  pgs_cluster_destroy "$WORK/a" || true
  pgs_cluster_destroy "$WORK/b" || true
  rm -rf "$WORK"
}
trap cleanup EXIT

settings=(fsync=off shared_buffers=256MB max_wal_size=4GB checkpoint_timeout=30min)
for c in a b; do
  pgs_cluster_create "$WORK/$c" "$(pgs_free_port 127.0.0.1)" 127.0.0.1 "${settings[@]}"
  pgs_cluster_start "$WORK/$c"
done
A=$(pgs_dsn "$WORK/a")
B=$(pgs_dsn "$WORK/b")
url() { # url DIR: the cluster as a postgresql:// URL (for reladiff)
  local HOST PORT SPEC
  pgs_cluster_env "$1"
  printf 'postgresql://postgres@%s:%s/postgres' "$HOST" "$PORT"
}

pgs_log "loading $ROWS rows into each cluster (pgbench -i -s $SCALE)"
for c in a b; do
  "$PG_BIN/pgbench" -i -q -s "$SCALE" -d "$(pgs_dsn "$WORK/$c")" >"$WORK/pgbench-$c.log" 2>&1 ||
    pgs_die "$EX_SOFTWARE" "pgbench -i failed: $(tail -n 3 "$WORK/pgbench-$c.log")"
done
pgs_log "copying it into accounts_text (text key)"
for c in "$A" "$B"; do
  pgs_psql "$c" "CREATE TABLE accounts_text (k text COLLATE \"und-x-icu\", bid int, abalance int, filler char(84));
    INSERT INTO accounts_text SELECT md5(g::text), (g - 1) / 100000 + 1, 0, '' FROM generate_series(1, $ROWS) g;
    ALTER TABLE accounts_text ADD PRIMARY KEY (k);" >/dev/null
  pgs_psql "$c" "VACUUM ANALYZE pgbench_accounts" >/dev/null
  pgs_psql "$c" "VACUUM ANALYZE accounts_text" >/dev/null
done

# time_ms CMD...: run CMD, print its wall time in ms (its stdout goes to $WORK/last.out).
time_ms() {
  local t0 rc=0
  t0=$(pgs_now_ms)
  "$@" >"$WORK/last.out" 2>"$WORK/last.err" || rc=$?
  echo $(($(pgs_now_ms) - t0))
  return $rc
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == "null" || b == 0) print "null"; else printf "%.2f", a / b }'; }
rps() { awk -v n="$ROWS" -v ms="$1" 'BEGIN { printf "%.0f", n / (ms / 1000) }'; }

# The commands timed, on the table (and key) bench_table sets.
table='' key=''
copy() { "$PG_BIN/psql" -XAtq -d "$1" -c "COPY $table TO STDOUT" >/dev/null; }
copy_both() { copy "$A" & copy "$B"; wait; }
ck_args=()
checksum() { "$BIN/pg-checksum" --source "$A" --target "$B" --table "$table" -j "$JOBS" "${ck_args[@]}"; }
reladiff_run() {
  reladiff "$(url "$WORK/a")" "$table" "$(url "$WORK/b")" "$table" \
    -k "$key" -c bid -c abalance -c filler -a hashdiff -j "$JOBS" --json
}

# bench_table KIND TABLE KEY CHANGES: both rounds on one table; prints its JSON result.
bench_table() {
  local kind=$1 changes=$4 copy_a copy_b copy_par ck_equal ck_diff order
  table=$2 key=$3
  pgs_log "$kind key, round 1: equal tables"
  copy "$A"                                  # warm the caches of both
  copy "$B"
  copy_a=$(time_ms copy "$A")
  copy_b=$(time_ms copy "$B")
  copy_par=$(time_ms copy_both)
  ck_equal=$(time_ms checksum) || pgs_die "$EX_SOFTWARE" "pg-checksum found differences in equal tables: $(cat "$WORK/last.out")"
  order=$(jq -r 'select(.type == "table") | .key_order // "n/a"' "$WORK/last.out")

  pgs_log "$kind key, round 2: 3 changed, 2 deleted, 2 extra rows on the target"
  pgs_psql "$B" "$changes" >/dev/null
  ck_diff=$(time_ms checksum) && pgs_die "$EX_SOFTWARE" "pg-checksum missed the differences"
  # "key kind" per differing row, sorted.
  jq -r --arg key "$key" 'select(.type == "row_diff") | "\(.key[$key].text) \(.kind)"' "$WORK/last.out" | sort >"$WORK/ck.diffs"
  local rd_ms=null rd_same=null
  if command -v reladiff >/dev/null 2>&1; then
    rd_ms=$(time_ms reladiff_run) || pgs_die "$EX_SOFTWARE" "reladiff failed: $(tail -n 3 "$WORK/last.err")"
    # reladiff prints ["-", [key, ...]] / ["+", [key, ...]]: a key with both is "changed".
    jq -r '"\(.[1][0]) \(.[0])"' "$WORK/last.out" | sort | awk '
      { k[$1] = k[$1] $2 }
      END { for (x in k) print x, (k[x] == "-" ? "missing_on_target" : k[x] == "+" ? "extra_on_target" : "changed") }' |
      sort >"$WORK/rd.diffs"
    if cmp -s "$WORK/ck.diffs" "$WORK/rd.diffs"; then rd_same=true; else
      rd_same=false
      pgs_log "pg-checksum and reladiff disagree ($kind key):"
      diff "$WORK/ck.diffs" "$WORK/rd.diffs" >&2 || true
    fi
  else
    pgs_log "reladiff not installed (scripts/setup-machine.sh --bench): its column is skipped"
  fi
  local copy_seq=$((copy_a + copy_b)) rd_rps=-
  [[ $rd_ms != null ]] && rd_rps=$(rps "$rd_ms")
  {
    printf '%-40s %10s %12s\n' "$kind key: $table ($ROWS rows, jobs $JOBS)" "ms" "rows/s"
    printf '%-40s %10s %12s\n' "COPY source" "$copy_a" "$(rps "$copy_a")"
    printf '%-40s %10s %12s\n' "COPY target" "$copy_b" "$(rps "$copy_b")"
    printf '%-40s %10s %12s\n' "COPY both at once" "$copy_par" "$(rps "$copy_par")"
    printf '%-40s %10s %12s\n' "pg-checksum, equal ($order)" "$ck_equal" "$(rps "$ck_equal")"
    printf '%-40s %10s %12s\n' "pg-checksum, 7 differences" "$ck_diff" "$(rps "$ck_diff")"
    printf '%-40s %10s %12s\n' "reladiff hashdiff, 7 differences" "$rd_ms" "$rd_rps"
    printf 'pg-checksum / COPY both at once:           %s (goal <= 1.5)\n' "$(ratio "$ck_equal" "$copy_par")"
    printf 'pg-checksum / COPY both, one then other:   %s\n' "$(ratio "$ck_equal" "$copy_seq")"
    printf 'pg-checksum / reladiff (with differences): %s (goal <= 0.3); same differences: %s\n\n' \
      "$(ratio "$ck_diff" "$rd_ms")" "$rd_same"
  } >&2
  jq -cn --arg key_kind "$kind" --arg table "$table" --arg key_order "$order" \
    --argjson copy_source_ms "$copy_a" --argjson copy_target_ms "$copy_b" \
    --argjson copy_parallel_ms "$copy_par" --argjson checksum_equal_ms "$ck_equal" \
    --argjson checksum_diff_ms "$ck_diff" --argjson reladiff_ms "$rd_ms" \
    --argjson same_differences "$rd_same" \
    --argjson ratio_copy_parallel "$(ratio "$ck_equal" "$copy_par")" \
    --argjson ratio_copy_sequential "$(ratio "$ck_equal" "$copy_seq")" \
    --argjson ratio_reladiff "$(ratio "$ck_diff" "$rd_ms")" \
    --argjson checksum_rows_per_s "$(rps "$ck_equal")" \
    --argjson reladiff_rows_per_s "$([[ $rd_ms != null ]] && rps "$rd_ms" || echo null)" \
    '{key_kind: $key_kind, table: $table, key_order: $key_order,
      copy_source_ms: $copy_source_ms, copy_target_ms: $copy_target_ms, copy_parallel_ms: $copy_parallel_ms,
      checksum_equal_ms: $checksum_equal_ms, checksum_diff_ms: $checksum_diff_ms,
      checksum_rows_per_s: $checksum_rows_per_s, reladiff_ms: $reladiff_ms, reladiff_rows_per_s: $reladiff_rows_per_s,
      same_differences: $same_differences, ratio_copy_parallel: $ratio_copy_parallel,
      ratio_copy_sequential: $ratio_copy_sequential, ratio_reladiff: $ratio_reladiff}'
}

rc_ms=$(time_ms "$BIN/rowcount-diff" --source "$A" --target "$B" -j "$JOBS") ||
  pgs_die "$EX_SOFTWARE" "rowcount-diff found differences in equal databases"
int=$(bench_table integer pgbench_accounts aid \
  "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN (1000, $((ROWS / 2)), $((ROWS - 1)));
   DELETE FROM pgbench_accounts WHERE aid IN (123, $((ROWS * 2 / 3)));
   INSERT INTO pgbench_accounts VALUES ($((ROWS + 1)), 1, 0, ''), ($((ROWS + 2)), 1, 0, '');")
text_changes="UPDATE accounts_text SET abalance = abalance + 1 WHERE k IN (md5('1000'), md5('$((ROWS / 2))'), md5('$((ROWS - 1))'));
   DELETE FROM accounts_text WHERE k IN (md5('123'), md5('$((ROWS * 2 / 3))'));
   INSERT INTO accounts_text VALUES (md5('x1'), 1, 0, ''), (md5('x2'), 1, 0, '');"
text=$(bench_table text accounts_text k "$text_changes")
# The same text key in byte order (--key-order bytes): cheaper comparisons in the hashing
# scan, sequential scans in drill-down. Made again on both, so the rounds start equal.
for c in "$A" "$B"; do pgs_psql "$c" "DROP TABLE accounts_text" >/dev/null; done
for c in "$A" "$B"; do
  pgs_psql "$c" "CREATE TABLE accounts_text (k text COLLATE \"und-x-icu\", bid int, abalance int, filler char(84));
    INSERT INTO accounts_text SELECT md5(g::text), (g - 1) / 100000 + 1, 0, '' FROM generate_series(1, $ROWS) g;
    ALTER TABLE accounts_text ADD PRIMARY KEY (k);" >/dev/null
  pgs_psql "$c" "VACUUM ANALYZE accounts_text" >/dev/null
done
ck_args=(--key-order bytes)
text_bytes=$(bench_table "text (bytes)" accounts_text k "$text_changes")
ck_args=()

summary=$(jq -cn --argjson rows "$ROWS" --argjson jobs "$JOBS" --argjson rowcount_diff_ms "$rc_ms" \
  --argjson integer "$int" --argjson text "$text" --argjson text_bytes "$text_bytes" \
  '{type: "summary", tool: "bench/pg-checksum.sh", rows: $rows, jobs: $jobs,
    rowcount_diff_ms: $rowcount_diff_ms, integer_key: $integer, text_key: $text,
    text_key_bytes_order: $text_bytes}')
printf '%s\n' "$summary" | tee "$RESULTS/pg-checksum-$(date -u +%Y%m%dT%H%M%SZ).json"
