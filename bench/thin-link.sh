#!/usr/bin/env bash
# bench/thin-link.sh: a big database over a thin link. Total time and bytes on the wire of
# pgshift's migration (--compress auto), of a plain pg_basebackup (what pgshift did before)
# and of `rsync -a` of the stopped data directory (the reference's method), in one run, on
# the same two hosts.
#
#   bench/thin-link.sh [--pgbench-scale N] [--rate RATE] [--clients N] [--bin DIR]
#
# Two hosts in network namespaces (hosts-local.sh --netns --rate, default 100mbit), the
# source loaded with pgbench tables (--pgbench-scale, default 250: ~3.7 GB) and the
# Pagila-like set. Bytes on the wire are read from the counters of the interface that feeds
# the target (this machine's end of its veth: everything the target received, protocol and
# TLS included). In order:
#   plain   pg_basebackup -X stream into a scratch directory on the target (then removed)
#   rsync   rsync -a of the source's stopped data directory to the target (rsync daemon on
#           the source, plain TCP), the source started again after
#   pgshift migrate.sh (--compress auto) under load-gen (--clients, mixed workload): its
#           base copy, catch-up, switchover (downtime, clients' longest write gap, lost
#           writes) and verify
# Prints one `method` record each and a `summary` with the ratios against plain
# pg_basebackup; also writes them to bench/results/thin-link-<timestamp>.jsonl.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/lib.sh"
! pgs_wants_help "$@" || pgs_help
PGS_NAME=bench-thin-link

scale=250 rate=100mbit clients=2 bin=$here/target/release
while (($#)); do
  case $1 in
    --pgbench-scale) scale=${2:?}; shift ;;
    --rate) rate=${2:?}; shift ;;
    --clients) clients=${2:?}; shift ;;
    --bin) bin=${2:?}; shift ;;
    *) pgs_die "$EX_USAGE" "unknown option '$1' (usage: bench/thin-link.sh [--pgbench-scale N] [--rate RATE] [--clients N] [--bin DIR])" ;;
  esac
  shift
done
pgs_bench_begin thin-link "$bin" load-gen rowcount-diff pg-checksum pg-switch pg-scram
[[ $(id -u) == 0 ]] || pgs_die "$EX_USAGE" "network namespaces need root"
pgs_require_cmd jq rsync zstd ip tc
pgs_bench_workdir thin
work=$PGS_WORK
cleanup() {
  local rc=$?
  [[ -n ${rsync_pid:-} ]] && kill "$rsync_pid" 2>/dev/null
  "$here/scripts/hosts-local.sh" destroy "$work/h" >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

pgs_log "creating two hosts over a $rate link, pgbench scale $scale (this takes a while)"
"$here/scripts/hosts-local.sh" create "$work/h" --netns --rate "$rate" --pgbench-scale "$scale" --bin "$bin" >/dev/null
env=$work/h/hosts.env
# shellcheck disable=SC1090
. "$env"
ns_a=${SOURCE_SPEC#netns://} ns_b=${TARGET_SPEC#netns://}
size=$("$PG_BIN/psql" -XAtq -d "$SOURCE_DSN" -c "SELECT sum(pg_database_size(oid)) FROM pg_database")
pgs_log "source: $(numfmt --to=iec "$size")B in its databases"
rx() { cat "/sys/class/net/$TARGET_LINK/statistics/tx_bytes"; }
scratch=$(dirname "$TARGET_PGDATA")/scratch

# plain pg_basebackup, as migrate.sh ran it before (-X stream, checkpoint fast), as the
# replication role with its passfile and TLS.
aux=$(dirname "$TARGET_PGDATA")/pgshift-$(basename "$TARGET_PGDATA")
pgs_put_passfile "$TARGET_SPEC" "$aux" "$REPL_USER" "$REPL_PASSWORD_FILE"
host_a=$(pgs_conninfo_value "$SOURCE_DSN" host) port_a=$(pgs_conninfo_value "$SOURCE_DSN" port)
pgs_on_pg "$TARGET_SPEC" mkdir -p "$scratch"
b0=$(rx) t0=$(pgs_now_ms)
pgs_on_pg "$TARGET_SPEC" "$PG_BIN/pg_basebackup" -D "$scratch/plain" -X stream -c fast --no-sync \
  -d "host=$host_a port=$port_a user=$REPL_USER passfile=$aux/pgpass sslmode=verify-full sslrootcert=$aux/ca.crt"
t1=$(pgs_now_ms) b1=$(rx)
pgs_record "$(jq -cn --argjson ms $((t1 - t0)) --argjson wire $((b1 - b0)) --argjson size "$size" \
  '{type: "method", method: "pg_basebackup", what: "pg_basebackup -X stream (uncompressed)", ms: $ms, wire_bytes: $wire, database_bytes: $size}')"
pgs_on_pg "$TARGET_SPEC" rm -rf "$scratch/plain"

# rsync -a of the stopped data directory (a daemon on the source: plain TCP, no ssh cipher).
cat >"$work/rsyncd.conf" <<EOF
use chroot = no
[data]
path = $(dirname "$SOURCE_PGDATA")
read only = yes
uid = postgres
gid = postgres
EOF
pgs_on_pg "$SOURCE_SPEC" "$PG_BIN/pg_ctl" -D "$SOURCE_PGDATA" -m fast -w stop >/dev/null
ip netns exec "$ns_a" rsync --daemon --no-detach --port 8730 --config "$work/rsyncd.conf" &
rsync_pid=$!
sleep 0.5
b0=$(rx) t0=$(pgs_now_ms)
ip netns exec "$ns_b" rsync -a "rsync://$host_a:8730/data/$(basename "$SOURCE_PGDATA")/" "$scratch/rsync/"
t1=$(pgs_now_ms) b1=$(rx)
kill "$rsync_pid" 2>/dev/null || true
wait "$rsync_pid" 2>/dev/null || true
rsync_pid=""
pgs_record "$(jq -cn --argjson ms $((t1 - t0)) --argjson wire $((b1 - b0)) --argjson size "$size" \
  '{type: "method", method: "rsync", what: "rsync -a of the stopped data directory", ms: $ms, wire_bytes: $wire, database_bytes: $size}')"
rm -rf "$scratch"
pgs_pg_start "$SOURCE_SPEC" "$SOURCE_PGDATA" "$(dirname "$SOURCE_PGDATA")/server.log" || pgs_die "$EX_SOFTWARE" "the source did not start again"
pgs_wait_ready "$host_a" "$port_a" 60 || pgs_die "$EX_SOFTWARE" "the source does not answer after the restart"

# pgshift, under load.
load_dsn=$(pgs_bench_both_dsn "$SOURCE_DSN" "$TARGET_ADDR" "$TARGET_PORT" user=postgres)
pgs_load_start "$bin/load-gen" "$load_dsn" "$work/load.jsonl" -c "$clients" -w mixed --log "$work/load.acks"
b0=$(rx) t0=$(pgs_now_ms)
rc=0
"$here/scripts/migrate.sh" --hosts-env "$env" --bin "$bin" --yes --no-pooler >"$work/migrate.jsonl" 2>"$work/migrate.err" || rc=$?
t1=$(pgs_now_ms) b1=$(rx)
pgs_load_stop
verified=$("$bin/load-gen" verify --dsn "$load_dsn" --log "$work/load.acks" | tail -n 1)
((rc == 0)) || pgs_die "$EX_SOFTWARE" "migrate.sh failed: $(tail -n 1 "$work/migrate.jsonl") $(tail -n 3 "$work/migrate.err")"
m=$(tail -n 1 "$work/migrate.jsonl")
copy=$(jq -c 'select(.type == "phase" and .name == "base_copy")' "$work/migrate.jsonl")
comp=$(jq -c 'select(.type == "compression")' "$work/migrate.jsonl")
pgs_record "$(jq -cn --argjson ms $((t1 - t0)) --argjson wire $((b1 - b0)) --argjson size "$size" --argjson m "$m" \
  --argjson copy "$copy" --argjson comp "${comp:-null}" --argjson load "$PGS_LOAD_SUMMARY" --argjson v "$verified" \
  '{type: "method", method: "pgshift", what: "migrate.sh --compress auto, under load", ms: $ms, wire_bytes: $wire,
    database_bytes: $size, base_copy_ms: $copy.ms, base_copy_wire_bytes: $copy.wire_bytes, compression: $m.compression,
    predicted_speedup: ($comp.predicted_speedup // null), bytes: $m.bytes, downtime_ms: $m.downtime_ms, verdict: $m.verdict,
    phases_ms: $m.phases_ms, max_write_gap_ms: ($load.max_write_gap_ms // null), lost: ($v.lost // null)}')"

pgs_record "$(jq -cs '(map(select(.type == "method")) | INDEX(.method)) as $m |
  {type: "summary", rate: $ARGS.named.rate, pgbench_scale: ($ARGS.named.scale | tonumber), database_bytes: $m.pgshift.database_bytes,
   pg_basebackup_ms: $m.pg_basebackup.ms, rsync_ms: $m.rsync.ms, pgshift_ms: $m.pgshift.ms, pgshift_base_copy_ms: $m.pgshift.base_copy_ms,
   pg_basebackup_wire_bytes: $m.pg_basebackup.wire_bytes, rsync_wire_bytes: $m.rsync.wire_bytes, pgshift_wire_bytes: $m.pgshift.wire_bytes,
   time_ratio_vs_pg_basebackup: (($m.pg_basebackup.ms / $m.pgshift.ms) * 100 | round / 100),
   copy_time_ratio_vs_pg_basebackup: (($m.pg_basebackup.ms / $m.pgshift.base_copy_ms) * 100 | round / 100),
   bytes_ratio_vs_pg_basebackup: (($m.pg_basebackup.wire_bytes / $m.pgshift.wire_bytes) * 100 | round / 100),
   copy_bytes_ratio_vs_pg_basebackup: (($m.pg_basebackup.wire_bytes / $m.pgshift.base_copy_wire_bytes) * 100 | round / 100),
   time_ratio_vs_rsync: (($m.rsync.ms / $m.pgshift.ms) * 100 | round / 100),
   downtime_ms: $m.pgshift.downtime_ms, lost: $m.pgshift.lost, verdict: $m.pgshift.verdict}' \
  --arg rate "$rate" --arg scale "$scale" "$PGS_RESULTS")"
