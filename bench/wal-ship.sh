#!/usr/bin/env bash
# bench/wal-ship.sh: archive N real 16 MiB WAL segments, one process per segment as
# archive_command does, with
#   wal-ship     wal-ship push SEG --to DIR --compress zstd:LEVEL       (checksum + fsyncs)
#   pgbackrest   pgbackrest archive-push SEG   (local repo, compress-type=zst, same level)
#   cp+sync      cp SEG DIR/ && sync DIR/SEG   (no compression, no checksum: the floor)
# Goal (issue #4): wal-ship's throughput >= pgBackRest's, and within 2x of cp+sync's time.
#
#   bench/wal-ship.sh                     # SEGMENTS=200 LEVEL=3 SCALE=50
#   SEGMENTS=20 bench/wal-ship.sh         # a quick run
#
# The segments come from pgbench on a throwaway cluster (scripts/lib.sh), collected by its own
# archive_command (cp). Every tool runs as the postgres user, on the same warm page cache,
# into its own empty archive, interleaved segment by segment (see loop.sh below). MB/s are
# MiB/s of WAL over the summed wall time of the calls; ratio = WAL bytes / archive bytes.
# Prints one JSON line per tool and a summary line; keeps them under bench/results/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
! pgs_wants_help "$@" || pgs_help

SEGMENTS=${SEGMENTS:-200}
LEVEL=${LEVEL:-3}
SCALE=${SCALE:-50}

pgs_require_cmd pgbackrest jq awk "$PG_BIN/pgbench"
# WAL_SHIP_BIN=path uses that binary; otherwise build the release one.
WAL_SHIP_BIN=$(pgs_release_bin wal-ship)

work=$(mktemp -d /tmp/pgshift-bench-wal-ship.XXXXXX)
chmod 755 "$work"
trap 'pgs_cluster_destroy "$work/pg"; rm -rf "$work"' EXIT
out=$(pgs_results_file wal-ship jsonl)

# --- WAL from pgbench -----------------------------------------------------------------------
wal=$work/wal
pgs_own_dir "$wal"
port=$(pgs_free_port 127.0.0.1)
pgs_cluster_create "$work/pg" "$port" 127.0.0.1 archive_mode=on \
  "archive_command='cp %p $wal/%f'" fsync=off synchronous_commit=off max_wal_size=4GB \
  shared_buffers=256MB
pgs_cluster_start "$work/pg"
dsn=$(pgs_dsn "$work/pg")

count_segments() { find "$wal" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9A-F]{24}' | wc -l; }

pgs_log "making $SEGMENTS segments of WAL with pgbench (scale $SCALE)"
pgs_as_pg "$PG_BIN/pgbench" -q -i -s "$SCALE" "$dsn" >/dev/null 2>&1
while (($(count_segments) < SEGMENTS + 1)); do
  pgs_as_pg "$PG_BIN/pgbench" -n -c 4 -j 2 -T 10 "$dsn" >/dev/null 2>&1
  pgs_psql "$dsn" "SELECT pg_switch_wal()" >/dev/null
  sleep 1
done
# Wait for the archiver to finish the last copy, then take the first SEGMENTS in order.
last=$(pgs_psql "$dsn" "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 300); do
  [[ $(pgs_psql "$dsn" "SELECT coalesce(last_archived_wal, '') >= '$last' FROM pg_stat_archiver") == t ]] && break
  sleep 0.2
done
mapfile -t segs < <(find "$wal" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9A-F]{24}' | sort |
  head -n "$SEGMENTS")
((${#segs[@]} == SEGMENTS)) || pgs_die "$EX_SOFTWARE" "only ${#segs[@]} segments were made"
bytes=$(cat "${segs[@]}" | wc -c)
pgs_log "$SEGMENTS segments, $((bytes >> 20)) MiB of WAL"

# --- the peers' setup -------------------------------------------------------------------------
for d in ws-archive pgbr-repo pgbr-lock pgbr-spool cp-archive; do pgs_own_dir "$work/$d"; done
pgs_as_pg "$WAL_SHIP_BIN" init --quiet --archive "$work/ws-archive" ||
  pgs_die "$EX_SOFTWARE" "wal-ship init failed"
conf=$work/pgbackrest.conf
cat >"$conf" <<EOF
[global]
repo1-path=$work/pgbr-repo
compress-type=zst
compress-level=$LEVEL
log-level-console=warn
log-level-file=off
lock-path=$work/pgbr-lock
spool-path=$work/pgbr-spool

[bench]
pg1-path=$work/pg/data
pg1-port=$port
pg1-host-user=postgres
pg1-socket-path=$work/pg
pg1-user=postgres
EOF
chmod 644 "$conf"
(cd "$work" && pgs_as_pg pgbackrest --config="$conf" --stanza=bench stanza-create) >&2 ||
  pgs_die "$EX_SOFTWARE" "pgbackrest stanza-create failed"
# The cluster ran with fsync=off: stop it and flush its dirty pages now, or the kernel writes
# them back during the measurement and every fsync below waits behind gigabytes.
# (archive-push only reads pg_control; it does not need the server.)
pgs_cluster_stop "$work/pg"
sync

# One loop, run as postgres: for each segment, each tool once (one process per segment, like
# archive_command), in an order that rotates, timing each call. Interleaving makes the
# comparison fair on a busy machine: a burst of load hits all three alike.
cat >"$work/loop.sh" <<'EOF'
bin=$1 level=$2 conf=$3 wsdest=$4 cpdest=$5
shift 5
total=(0 0 0)
i=0
for f; do
  for k in 0 1 2; do
    t=$(((i + k) % 3))
    s=$EPOCHREALTIME
    case $t in
      0) "$bin" push "$f" --to "$wsdest" --compress "zstd:$level" --quiet ;;
      1) pgbackrest --config="$conf" --stanza=bench archive-push "$f" ;;
      2) cp "$f" "$cpdest/" && sync "$cpdest/${f##*/}" ;;
    esac || { echo "tool $t failed on $f" >&2; exit 1; }
    e=$EPOCHREALTIME
    total[t]=$((total[t] + ${e/./} - ${s/./}))
  done
  i=$((i + 1))
done
echo "${total[0]} ${total[1]} ${total[2]}"
EOF

cat "${segs[@]}" >/dev/null # a warm page cache for everyone
pgs_log "pushing $SEGMENTS segments with each tool, interleaved"
times=$(cd "$work" && pgs_as_pg bash "$work/loop.sh" "$WAL_SHIP_BIN" "$LEVEL" "$conf" \
  "$work/ws-archive" "$work/cp-archive" "${segs[@]}") || pgs_die "$EX_SOFTWARE" "the push loop failed"
read -r ws_us br_us cp_us <<<"$times"

# report NAME MICROSECONDS ARCHIVE_DIR: print and keep the JSON line.
report() {
  local name=$1 us=$2 archive=$3 secs stored
  secs=$(awk -v u="$us" 'BEGIN { printf "%.3f", u / 1e6 }')
  stored=$(du -sb "$archive" | cut -f1)
  pgs_json run tool="$name" segments:="$SEGMENTS" bytes:="$bytes" seconds:="$secs" \
    mib_per_s:="$(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.1f", b / 1048576 / s }')" \
    stored_bytes:="$stored" \
    ratio:="$(awk -v b="$bytes" -v s="$stored" 'BEGIN { printf "%.2f", b / s }')" | tee -a "$out"
}
report wal-ship "$ws_us" "$work/ws-archive"
report pgbackrest "$br_us" "$work/pgbr-repo/archive"
report cp+sync "$cp_us" "$work/cp-archive"

# wal-ship's archive must be whole and restore byte for byte.
problems=$("$WAL_SHIP_BIN" verify --archive "$work/ws-archive" | tail -n 1 | jq .problems)
[[ $problems == 0 ]] || pgs_die "$EX_SOFTWARE" "wal-ship verify found $problems problems"
"$WAL_SHIP_BIN" fetch "${segs[0]##*/}" "$work/restored" --from "$work/ws-archive" --quiet
cmp -s "${segs[0]}" "$work/restored" || pgs_die "$EX_SOFTWARE" "restored segment differs"

field() { grep "\"tool\":\"$1\"" "$out" | tail -n 1 | jq -r ".$2"; }
ws=$(field wal-ship mib_per_s)
br=$(field pgbackrest mib_per_s)
cs=$(field cp+sync mib_per_s)
vs_br=$(awk -v a="$ws" -v b="$br" 'BEGIN { printf "%.2f", a / b }')
time_vs_cp=$(awk -v a="$ws" -v b="$cs" 'BEGIN { printf "%.2f", b / a }')
goal=$(awk -v v="$vs_br" -v c="$time_vs_cp" 'BEGIN { print (v >= 1 && c <= 2) ? "true" : "false" }')
pgs_log "wal-ship $ws MiB/s (ratio $(field wal-ship ratio)), pgbackrest $br MiB/s (ratio $(field pgbackrest ratio)), cp+sync $cs MiB/s"
pgs_log "wal-ship/pgbackrest throughput: ${vs_br}x; wal-ship time / cp+sync time: ${time_vs_cp}x; goal met: $goal"
pgs_json summary tool=bench/wal-ship.sh success:=true exit_code:=0 segments:="$SEGMENTS" \
  level:="$LEVEL" wal_ship_mib_per_s:="$ws" pgbackrest_mib_per_s:="$br" cp_sync_mib_per_s:="$cs" \
  wal_ship_ratio:="$(field wal-ship ratio)" pgbackrest_ratio:="$(field pgbackrest ratio)" \
  throughput_vs_pgbackrest:="$vs_br" time_vs_cp_sync:="$time_vs_cp" goal_met:="$goal" | tee -a "$out"
pgs_log "results in $out"
