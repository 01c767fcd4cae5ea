#!/usr/bin/env bash
# migrate.sh: move a live PostgreSQL cluster to another host with a sub-second switchover,
# no lost acknowledged write, and a verification that both sides hold the same data.
#
#   migrate.sh --hosts-env FILE [--reverse] [options]
#   migrate.sh --source DSN --source-pgdata DIR [--source-host SPEC]
#              --target-addr ADDR --target-port PORT --target-pgdata DIR [--target-host SPEC]
#              --repl-user NAME --repl-password-file FILE [options]
#
# Phases (one `phase` record each on stdout, then `summary`; also written to --report):
#   1 preflight   versions, system identifiers, settings, disk space, host and replication
#                 reachability; nothing is changed
#   2 base_copy   pg_basebackup -X stream -R with a replication slot, run on the target host
#                 (skipped when the target already is a standby of the source)
#   3 catch_up    the target runs as a standby: streaming (--mode stream) or restoring from
#                 the wal-ship archive only (--mode archive)
#   4 wait        until the replay lag is under --max-lag (and, with --when advised, until
#                 the window window-advisor recommends)
#   5 switchover  CHECKPOINT; stop the source (fast); prove from pg_controldata that it shut
#                 down cleanly; (archive mode: ship the last segment); prove the target
#                 replayed past the source's final checkpoint on the same timeline; promote
#                 (pg_promote without waiting, then poll pg_is_in_recovery() every 5 ms); prove
#                 the target accepts a write; fence the old source as a standby of the new one
#   6 rejoin      start the old source as a streaming standby of the new primary (with
#                 pg_rewind only if its history forked, e.g. after a failed switch by hand)
#   7 verify      compare the new primary and the old source (now its standby):
#                 pg-checksum --wait-replay --recheck 3 over every table is the verdict (a
#                 difference that persists in fresh snapshots fails the run); rowcount-diff's
#                 counts are reported too (under continuing writes they drift, since a live
#                 standby is always a little behind, so they inform rather than decide)
#   8 report      `summary`: each phase's duration, the downtime, bytes moved, the verdict
#
# A failure before step 5 leaves the source serving as before (the slot and the partial
# target are removed). A failure inside step 5 before the promotion restarts the source and
# makes sure the target cannot be promoted: there is never more than one primary.
#
# Options:
#   --hosts-env FILE       variables written by hosts-local.sh (SOURCE_*, TARGET_*, REPL_*)
#   --reverse              swap source and target from --hosts-env (migrate back)
#   --mode stream|archive  how the target catches up (default stream)
#   --archive DEST         wal-ship archive for --mode archive (default: ARCHIVE from hosts env)
#   --when now|advised     switch now (default), or in the window window-advisor recommends
#   --history FILE         metrics history for --when advised
#   --window DURATION      window length for --when advised (default 30m)
#   --max-wait SECONDS     longest wait for an advised window (default 3600)
#   --max-lag BYTES        replay lag to reach before switching (default 16777216; in archive
#                          mode, WAL written since the last segment the target replayed)
#   --max-rate RATE        throttle the base copy (pg_basebackup --max-rate, e.g. 50M)
#   --switch-timeout S     limit for each switchover step (default 10)
#   --target-socket-dir D  unix_socket_directories on the target (default: next to its pgdata)
#   --hook NAME=CMD        run CMD at a phase boundary: before_base_copy, before_switchover,
#                          after_stop, before_promote, after_promote; a failing hook aborts
#   --no-verify            skip step 7
#   --no-rejoin            leave the old source stopped (fenced) instead of step 6; no step 7
#   --report FILE          also write the JSON lines there
#   --bin DIR              where the pgshift tools are (default: target/release of this checkout)
#
# Host SPECs: local (default), ssh://[user@]host[:port], netns://NAME (see lib.sh). The
# control connections (--source DSN and the target built from it) need a superuser; the
# target host reaches the source as the replication role.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PGS_NAME=migrate
here=$(cd "$(dirname "$0")" && pwd)

usage() { pgs_die "$EX_USAGE" "$1 (see the header of scripts/migrate.sh)"; }

# --- Arguments ---------------------------------------------------------------------------
hosts_env="" reverse=0 mode=stream archive="" when=now history="" window=30m max_wait=3600
max_lag=16777216 max_rate="" switch_timeout=10 socket_dir="" verify=1 rejoin=1 report="" bin=""
SOURCE_DSN="" SOURCE_PGDATA="" SOURCE_SPEC=local TARGET_ADDR="" TARGET_PORT="" TARGET_PGDATA=""
TARGET_SPEC=local REPL_USER="" REPL_PASSWORD_FILE="" ARCHIVE=""
declare -A hooks=()
args=("$@")
# --hosts-env first, so that explicit options override it.
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ ${args[i]} == --hosts-env ]]; then
    hosts_env=${args[i + 1]:-}
    [[ -r $hosts_env ]] || usage "cannot read --hosts-env '$hosts_env'"
    # shellcheck disable=SC1090
    . "$hosts_env"
  fi
done
while (($#)); do
  case $1 in
    --hosts-env) shift ;;
    --reverse) reverse=1 ;;
    --source) SOURCE_DSN=${2:?}; shift ;;
    --source-pgdata) SOURCE_PGDATA=${2:?}; shift ;;
    --source-host) SOURCE_SPEC=${2:?}; shift ;;
    --target-addr) TARGET_ADDR=${2:?}; shift ;;
    --target-port) TARGET_PORT=${2:?}; shift ;;
    --target-pgdata) TARGET_PGDATA=${2:?}; shift ;;
    --target-host) TARGET_SPEC=${2:?}; shift ;;
    --repl-user) REPL_USER=${2:?}; shift ;;
    --repl-password-file) REPL_PASSWORD_FILE=${2:?}; shift ;;
    --mode) mode=${2:?}; shift ;;
    --archive) archive=${2:?}; shift ;;
    --when) when=${2:?}; shift ;;
    --history) history=${2:?}; shift ;;
    --window) window=${2:?}; shift ;;
    --max-wait) max_wait=${2:?}; shift ;;
    --max-lag) max_lag=${2:?}; shift ;;
    --max-rate) max_rate=${2:?}; shift ;;
    --switch-timeout) switch_timeout=${2:?}; shift ;;
    --target-socket-dir) socket_dir=${2:?}; shift ;;
    --hook)
      [[ ${2:-} == *=* ]] || usage "--hook takes NAME=COMMAND"
      hooks[${2%%=*}]=${2#*=}; shift ;;
    --no-verify) verify=0 ;;
    --no-rejoin) rejoin=0 verify=0 ;;
    --report) report=${2:?}; shift ;;
    --bin) bin=${2:?}; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) usage "unknown option '$1'" ;;
  esac
  shift
done
bin=${bin:-$(cd "$here/.." && pwd)/target/release}
# Absolute: it ends up in restore_command and archive_command, run from the data directory.
[[ -d $bin ]] && bin=$(cd "$bin" && pwd)
archive=${archive:-$ARCHIVE}
[[ $mode == stream || $mode == archive ]] || usage "--mode must be stream or archive"
[[ $when == now || $when == advised ]] || usage "--when must be now or advised"
[[ $max_lag =~ ^[0-9]+$ && $switch_timeout =~ ^[0-9]+$ ]] || usage "--max-lag and --switch-timeout take whole numbers"
for h in "${!hooks[@]}"; do
  case $h in before_base_copy | before_switchover | after_stop | before_promote | after_promote) ;;
    *) usage "unknown hook '$h'" ;;
  esac
done

# The source connection string without host and port: a conninfo's later keywords win, so
# "BASE host=H port=P" reaches any host with the same user, database and TLS settings.
[[ $SOURCE_DSN != *://* ]] || usage "--source must be a key=value conninfo string (not a URL)"
source_host_addr=$(sed -n 's/.*\bhost=\([^ ]*\).*/\1/p' <<<"$SOURCE_DSN")
source_port=$(sed -n 's/.*\bport=\([0-9]*\).*/\1/p' <<<"$SOURCE_DSN")
source_port=${source_port:-5432}
if ((reverse)); then
  [[ -n $hosts_env ]] || usage "--reverse needs --hosts-env"
  # The previous target is the source now, and the previous source (a standby of it after a
  # migration) is the target.
  old_addr=$source_host_addr old_port=$source_port old_pgdata=$SOURCE_PGDATA old_spec=$SOURCE_SPEC
  source_host_addr=$TARGET_ADDR source_port=$TARGET_PORT SOURCE_PGDATA=$TARGET_PGDATA SOURCE_SPEC=$TARGET_SPEC
  TARGET_ADDR=$old_addr TARGET_PORT=$old_port TARGET_PGDATA=$old_pgdata TARGET_SPEC=$old_spec
fi
for v in source_host_addr SOURCE_PGDATA TARGET_ADDR TARGET_PORT TARGET_PGDATA REPL_USER REPL_PASSWORD_FILE; do
  [[ -n ${!v} ]] || usage "missing ${v,,} (give it as an option or through --hosts-env)"
done
[[ -r $REPL_PASSWORD_FILE ]] || usage "cannot read the replication password file '$REPL_PASSWORD_FILE'"
repl_password=$(<"$REPL_PASSWORD_FILE")
[[ $mode == stream || -n $archive ]] || usage "--mode archive needs --archive DEST (or ARCHIVE in --hosts-env)"
socket_dir=${socket_dir:-$(dirname "$TARGET_PGDATA")}
src_dsn="$SOURCE_DSN host=$source_host_addr port=$source_port"
tgt_dsn="$SOURCE_DSN host=$TARGET_ADDR port=$TARGET_PORT"
target_log=$(dirname "$TARGET_PGDATA")/server.log
source_log=$(dirname "$SOURCE_PGDATA")/server.log
slot=pgshift_$(printf '%s' "$TARGET_ADDR:$TARGET_PORT" | cksum | cut -d' ' -f1)

# --- Output ------------------------------------------------------------------------------
if [[ -n $report ]]; then
  : >"$report" || usage "cannot write --report '$report'"
fi
emit() {
  local line
  line=$(pgs_json "$@")
  printf '%s\n' "$line"
  if [[ -n $report ]]; then printf '%s\n' "$line" >>"$report"; fi
}
run_start=$(pgs_now_ms)
declare -A phase_ms=()
phase_order=()
phase_begin() {
  phase=$1 phase_t0=$(pgs_now_ms)
  pgs_log "phase $phase"
}
phase_end() {
  local ms=$(($(pgs_now_ms) - phase_t0))
  phase_ms[$phase]=$ms
  phase_order+=("$phase")
  emit phase name="$phase" status=ok ms:=$ms "$@"
}

src_psql() { "$PG_BIN/psql" -XAtq -v ON_ERROR_STOP=1 -d "$src_dsn" "$@"; }
tgt_psql() { "$PG_BIN/psql" -XAtq -v ON_ERROR_STOP=1 -d "$tgt_dsn" "$@"; }
on_src() { pgs_on_pg "$SOURCE_SPEC" "$@"; }
on_tgt() { pgs_on_pg "$TARGET_SPEC" "$@"; }
run_hook() {
  local name=$1
  [[ -n ${hooks[$name]:-} ]] || return 0
  pgs_log "hook $name: ${hooks[$name]}"
  bash -c "${hooks[$name]}" >&2 || fail "$EX_SOFTWARE" "hook $name failed: ${hooks[$name]}"
}

# Where failures go. Before the switchover: undo what was done to the source (the slot) and
# the target. Inside it: restart the source unless the target was promoted.
state=preflight # preflight | copying | standby | stopping | promoting | promoted
fail() {
  local code=$1
  shift
  pgs_log "$*"
  emit error phase="$phase" exit_code:="$code" message="$*" >/dev/null || true
  trap - EXIT
  recover
  emit summary success:=false exit_code:="$code" failed_phase="$phase" state="$state" message="$*" \
    elapsed_ms:=$(($(pgs_now_ms) - run_start))
  exit "$code"
}
# shellcheck disable=SC2317  # called by the EXIT trap
on_exit() {
  local rc=$?
  ((rc == 0)) && return 0
  trap - EXIT
  pgs_log "unexpected failure (exit $rc) in phase $phase"
  recover
  emit summary success:=false exit_code:="$EX_SOFTWARE" failed_phase="$phase" state="$state" \
    message="unexpected failure (exit $rc)" elapsed_ms:=$(($(pgs_now_ms) - run_start))
  exit "$EX_SOFTWARE"
}
trap on_exit EXIT

target_in_recovery() { tgt_psql -c "SELECT pg_is_in_recovery()" 2>/dev/null; }
stop_target_now() { on_tgt "$PG_BIN/pg_ctl" -D "$TARGET_PGDATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true; }
source_running() { on_src test -f "$SOURCE_PGDATA/postmaster.pid"; }
start_source() {
  source_running && return 0
  on_src "$PG_BIN/pg_ctl" -D "$SOURCE_PGDATA" -l "$source_log" -w -t 120 start >/dev/null
}

recover() {
  case $state in
    preflight) ;;
    copying | standby)
      if ((fresh_target)); then
        pgs_log "removing the partial target and the source's slot $slot"
        stop_target_now
        on_tgt rm -rf "$TARGET_PGDATA" || true
        src_psql -c "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot' AND NOT active" >/dev/null 2>&1 || true
      fi
      ;;
    stopping | promoting)
      # Promoted after all (our check failed, not the promotion)? Then it is the primary now
      # and the source must stay down.
      if [[ $(target_in_recovery) == f ]]; then
        pgs_log "the target was promoted: keeping it as the primary; the source stays down"
        state=promoted
        return 0
      fi
      pgs_log "stopping the target so it cannot be promoted, and restarting the source"
      stop_target_now
      on_src rm -f "$SOURCE_PGDATA/standby.signal" || true
      if start_source; then
        pgs_log "the source is serving again"
        state=source_restored
      else
        pgs_log "could not restart the source: start it by hand (pg_ctl -D $SOURCE_PGDATA start)"
      fi
      ;;
  esac
}

# follow SPEC PGDATA LOG ADDR PORT PRIMARY_ADDR PRIMARY_PORT: make the (fenced) cluster in
# PGDATA run as a streaming standby of the primary at PRIMARY_ADDR:PRIMARY_PORT. If it cannot
# follow that timeline (its history forked, e.g. it took writes after a failed switch), rewind
# it with pg_rewind, keeping its own settings, and start it again. Sets `rewound`.
follow() {
  local spec=$1 pgdata=$2 log=$3 addr=$4 port=$5 paddr=$6 pport=$7 dsn attempt deadline status offset
  # What PostgreSQL 15 logs when a standby's history forked off its primary's.
  local forked="not in this server's history|is not a child of this server's history|of the primary is behind recovery timeline"
  dsn="$SOURCE_DSN host=$addr port=$port"
  rewound=false
  # Only what this start writes to the log counts (earlier attempts' lines are still there).
  new_log() { pgs_on_pg "$spec" tail -c +"$((offset + 1))" "$log" 2>/dev/null; }
  for attempt in 1 2; do
    offset=$(pgs_on_pg "$spec" stat -c %s "$log" 2>/dev/null || echo 0)
    if ! pgs_on_pg "$spec" test -f "$pgdata/postmaster.pid"; then
      pgs_on_pg "$spec" "$PG_BIN/pg_ctl" -D "$pgdata" -l "$log" -W start >/dev/null || return 1
    fi
    deadline=$((SECONDS + 60))
    while :; do
      status=$("$PG_BIN/psql" -XAtq -d "$dsn" -c "SELECT status FROM pg_stat_wal_receiver" 2>/dev/null || true)
      [[ $status == streaming ]] && return 0
      if new_log | grep -qE "$forked"; then
        break
      fi
      if ! pgs_on_pg "$spec" test -f "$pgdata/postmaster.pid" && ((SECONDS > deadline - 55)); then
        break # it died: see whether a rewind is the cure
      fi
      ((SECONDS < deadline)) || return 1
      sleep 0.1
    done
    ((attempt == 1)) || return 1
    new_log | grep -qE "$forked" || return 1
    pgs_log "$addr:$port forked from the new primary's history: rewinding it with pg_rewind"
    pgs_on_pg "$spec" "$PG_BIN/pg_ctl" -D "$pgdata" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    # pg_rewind copies the primary's configuration files too, and deletes files the primary
    # lacks: keep this host's own beside the data directory, not in it.
    local keep
    keep=$(dirname "$pgdata")/pgshift-rewind-conf
    pgs_on_pg "$spec" sh -c "mkdir -p '$keep' && cp '$pgdata/postgresql.auto.conf' '$pgdata/postgresql.conf' '$keep/'" ||
      return 1
    out=$(pgs_on_pg "$spec" "$PG_BIN/pg_rewind" -D "$pgdata" \
      --source-server="$SOURCE_DSN host=$paddr port=$pport dbname=postgres" 2>&1) || {
      pgs_log "pg_rewind failed: ${out//$'\n'/ }"
      return 1
    }
    pgs_on_pg "$spec" sh -c "cp '$keep/postgresql.auto.conf' '$keep/postgresql.conf' '$pgdata/' &&
      rm -rf '$keep' && touch '$pgdata/standby.signal'" || return 1
    rewound=true
  done
  return 1
}

# --- 1 preflight -------------------------------------------------------------------------
phase_begin preflight
for spec in "$SOURCE_SPEC" "$TARGET_SPEC"; do
  pgs_host_reachable "$spec" || fail "$EX_UNAVAILABLE" "cannot run commands on host $spec (check ssh: BatchMode, keys, known_hosts)"
done
src_info=$(src_psql -F ' ' -c "SELECT current_setting('server_version_num'), (SELECT system_identifier FROM pg_control_system()),
  pg_is_in_recovery(), current_setting('wal_level'), current_setting('max_wal_senders'),
  current_setting('data_directory'), current_setting('data_checksums') = 'on' OR current_setting('wal_log_hints') = 'on',
  (SELECT sum(pg_database_size(oid)) FROM pg_database)" 2>&1) ||
  fail "$EX_UNAVAILABLE" "cannot connect to the source ($source_host_addr:$source_port): $src_info"
read -r src_version src_sysid src_recovery src_wal_level src_senders src_datadir src_rewindable src_bytes <<<"$src_info"
[[ $src_recovery == f ]] || fail "$EX_DATAERR" "the source $source_host_addr:$source_port is in recovery: give the primary as --source"
[[ $src_wal_level != minimal ]] || fail "$EX_DATAERR" "the source has wal_level=minimal: run setup-host.sh --role source (wal_level=replica needs a restart)"
((src_senders > 0)) || fail "$EX_DATAERR" "the source has max_wal_senders=0: run setup-host.sh --role source"
[[ $src_datadir == "$SOURCE_PGDATA" ]] || fail "$EX_USAGE" "--source-pgdata $SOURCE_PGDATA is not the source's data directory ($src_datadir)"
tgt_version=$(on_tgt "$PG_BIN/postgres" --version 2>/dev/null) ||
  fail "$EX_UNAVAILABLE" "no PostgreSQL server binaries at $PG_BIN on the target host"
[[ $tgt_version =~ ([0-9]+)\.([0-9]+) ]] || fail "$EX_SOFTWARE" "cannot read the target's version from '$tgt_version'"
if ((BASH_REMATCH[1] != src_version / 10000)); then
  fail "$EX_DATAERR" "major versions differ: source $((src_version / 10000)), target ${BASH_REMATCH[1]} (physical replication needs the same major version)"
fi

# A target that already is a running standby of this source skips the base copy (this is
# how --reverse works after a migration).
fresh_target=1
if on_tgt test -f "$TARGET_PGDATA/PG_VERSION"; then
  tgt_sysid=$(on_tgt "$PG_BIN/pg_controldata" "$TARGET_PGDATA" | sed -n 's/^Database system identifier: *//p')
  [[ $tgt_sysid == "$src_sysid" ]] ||
    fail "$EX_DATAERR" "the target data directory $TARGET_PGDATA holds another cluster (system identifier $tgt_sysid, source $src_sysid): move it away"
  on_tgt test -f "$TARGET_PGDATA/standby.signal" ||
    fail "$EX_DATAERR" "the target $TARGET_PGDATA is a copy of the source but not a standby: move it away or make it one"
  fresh_target=0
elif on_tgt test -e "$TARGET_PGDATA" && [[ -n $(on_tgt ls -A "$TARGET_PGDATA") ]]; then
  fail "$EX_DATAERR" "the target data directory $TARGET_PGDATA is not empty"
fi
if ((fresh_target)); then
  avail=$(on_tgt df -B1 --output=avail "$(dirname "$TARGET_PGDATA")" | tail -n 1 | tr -d ' ')
  need=$((src_bytes + src_bytes / 5 + 1073741824))
  ((avail >= need)) || fail "$EX_IOERR" "not enough disk on the target: $avail bytes free, need about $need (the databases plus 20 % and 1 GiB of WAL)"
  # The target must reach the source as the replication role (pg_hba.conf, password, TLS).
  probe=$(on_tgt env PGPASSWORD="$repl_password" "$PG_BIN/psql" -XAtq \
    -d "host=$source_host_addr port=$source_port user=$REPL_USER dbname=replication replication=true sslmode=prefer connect_timeout=5" \
    -c "IDENTIFY_SYSTEM" 2>&1) ||
    fail "$EX_UNAVAILABLE" "the target host cannot open a replication connection to $source_host_addr:$source_port as $REPL_USER: ${probe//$'\n'/ } (run setup-host.sh --role source)"
fi
if [[ $mode == archive ]]; then
  [[ -x $bin/wal-ship ]] || fail "$EX_UNAVAILABLE" "--mode archive needs $bin/wal-ship (make release)"
  arch_cmd=$(src_psql -c "SELECT current_setting('archive_mode') || ' ' || current_setting('archive_command')")
  [[ $arch_cmd == on\ *wal-ship* ]] || fail "$EX_DATAERR" "--mode archive needs the source archiving with wal-ship (archive_mode=on): run setup-host.sh --archive DEST"
fi
[[ $src_rewindable == t ]] || pgs_log "warning: the source has neither data checksums nor wal_log_hints: pg_rewind will not be possible after a failed switch"
fresh_json=false
((fresh_target)) && fresh_json=true
phase_end version="$src_version" system_identifier="$src_sysid" fresh_target:=$fresh_json source_bytes:="$src_bytes"

# --- 2 base copy -------------------------------------------------------------------------
bytes_copied=0
if ((fresh_target)); then
  run_hook before_base_copy
  phase_begin base_copy
  state=copying
  progress=()
  [[ -t 2 ]] && progress=(-P)
  [[ -n $max_rate ]] && progress+=(--max-rate="$max_rate")
  on_tgt mkdir -p "$TARGET_PGDATA"
  on_tgt chmod 700 "$TARGET_PGDATA"
  out=$(on_tgt env PGPASSWORD="$repl_password" "$PG_BIN/pg_basebackup" -D "$TARGET_PGDATA" \
    -d "host=$source_host_addr port=$source_port user=$REPL_USER sslmode=prefer application_name=pgshift_target" \
    -X stream -R -c fast -C -S "$slot" "${progress[@]}" 2>&1) ||
    fail "$EX_UNAVAILABLE" "pg_basebackup failed: ${out//$'\n'/ }"
  bytes_copied=$(on_tgt du -sb "$TARGET_PGDATA" | cut -f1)
  # The copy carries the source's postgresql.conf: give the target its own address, port and
  # socket, and a fast retry of the WAL source so the switch is not held up.
  on_tgt sh -c "cat >> '$TARGET_PGDATA/postgresql.auto.conf'" <<EOF
# pgshift migrate.sh: this host
listen_addresses = '$TARGET_ADDR'
port = $TARGET_PORT
unix_socket_directories = '$socket_dir'
wal_retrieve_retry_interval = '100ms'
EOF
  phase_end bytes:="$bytes_copied" slot="$slot"
fi

# --- 3 catch up --------------------------------------------------------------------------
phase_begin catch_up
state=standby
target_running=0
on_tgt test -f "$TARGET_PGDATA/postmaster.pid" && target_running=1
if [[ $mode == archive ]]; then
  # Archive only: no streaming; the target restores every segment from the archive. (All
  # three settings take effect on a reload in PostgreSQL 13 and later.)
  on_tgt sed -i '/^primary_conninfo/d; /^primary_slot_name/d; /^restore_command/d' "$TARGET_PGDATA/postgresql.auto.conf"
  on_tgt sh -c "cat >> '$TARGET_PGDATA/postgresql.auto.conf'" <<EOF
restore_command = '$bin/wal-ship fetch --quiet --prefetch 4 %f %p --from $archive'
EOF
  ((target_running)) && tgt_psql -c "SELECT pg_reload_conf()" >/dev/null
  if ((fresh_target)); then
    src_psql -c "SELECT pg_drop_replication_slot('$slot')" >/dev/null
  fi
fi
rewound=false
if ((!fresh_target)) && [[ $mode == stream ]]; then
  # A standby from an earlier migration: it follows the source, rewound if it forked.
  follow "$TARGET_SPEC" "$TARGET_PGDATA" "$target_log" "$TARGET_ADDR" "$TARGET_PORT" \
    "$source_host_addr" "$source_port" ||
    fail "$EX_UNAVAILABLE" "the target does not stream from the source; see $target_log"
elif ((!target_running)); then
  on_tgt "$PG_BIN/pg_ctl" -D "$TARGET_PGDATA" -l "$target_log" -w -t 300 start >/dev/null ||
    fail "$EX_SOFTWARE" "the target did not start; see $target_log"
fi
pgs_wait_ready "$TARGET_ADDR" "$TARGET_PORT" 120 || fail "$EX_UNAVAILABLE" "the target did not accept connections; see $target_log"
[[ $(target_in_recovery) == t ]] || fail "$EX_SOFTWARE" "the target is not in recovery: it must be a standby until the switchover"
if [[ $mode == stream ]]; then
  deadline=$((SECONDS + 60))
  until [[ $(tgt_psql -c "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'") == 1 ]]; do
    ((SECONDS < deadline)) || fail "$EX_UNAVAILABLE" "the target does not stream from the source; see $target_log"
    sleep 0.1
  done
fi
phase_end mode="$mode" rewound:=$rewound

# --- 4 wait ------------------------------------------------------------------------------
phase_begin wait
if [[ $when == advised ]]; then
  [[ -n $history && -r $history ]] || fail "$EX_USAGE" "--when advised needs a readable --history FILE"
  [[ -x $bin/window-advisor ]] || fail "$EX_UNAVAILABLE" "--when advised needs $bin/window-advisor (make release)"
  # The horizon starts now (window-advisor's default is the end of the history).
  rec=$("$bin/window-advisor" recommend --history "$history" --window "$window" --top 1 --from now |
    jq -c 'select(.type == "window")' | head -n 1)
  [[ -n $rec ]] || fail "$EX_DATAERR" "window-advisor recommended no window for $history"
  start_s=$(jq -r '.start' <<<"$rec" | xargs -I{} date -d {} +%s)
  emit window start="$(jq -r .start <<<"$rec")" end="$(jq -r .end <<<"$rec")" wait_s:=$((start_s > $(date +%s) ? start_s - $(date +%s) : 0))
  if ((start_s > $(date +%s))); then
    ((start_s - $(date +%s) <= max_wait)) || fail "$EX_TEMPFAIL" "the advised window starts in $((start_s - $(date +%s))) s, after --max-wait $max_wait s"
    pgs_log "waiting $((start_s - $(date +%s))) s for the advised window"
    sleep $((start_s - $(date +%s)))
  fi
fi
deadline=$((SECONDS + 600))
if [[ $mode == stream ]]; then
  while :; do
    lag=$(src_psql -c "SELECT coalesce(max(pg_current_wal_lsn() - replay_lsn), -1)::bigint FROM pg_stat_replication WHERE application_name IN ('pgshift_target', 'pgshift_rejoin') OR pid IN (SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$slot')")
    ((lag >= 0 && lag <= max_lag)) && break
    ((SECONDS < deadline)) || fail "$EX_TEMPFAIL" "the target's replay lag is still $lag bytes after 600 s (limit --max-lag $max_lag)"
    sleep 0.2
  done
else
  # Archive mode: what the target has not replayed at the switch must travel through the
  # archive inside the downtime. So close the current segment (pg_switch_wal), wait until the
  # target has replayed it, and repeat until little WAL was written meanwhile.
  while :; do
    switched=$(src_psql -c "SELECT pg_switch_wal()")
    until [[ $(tgt_psql -c "SELECT pg_last_wal_replay_lsn() >= '$switched'::pg_lsn") == t ]]; do
      ((SECONDS < deadline)) || fail "$EX_TEMPFAIL" "the target did not replay $switched from the archive within 600 s (check archive_command on the source and restore_command on the target)"
      sleep 0.05
    done
    lag=$(src_psql -c "SELECT pg_current_wal_lsn() - '$switched'::pg_lsn")
    ((lag <= max_lag)) && break
  done
fi
phase_end lag_bytes:="$lag"

# --- 5 switchover ------------------------------------------------------------------------
run_hook before_switchover
phase_begin switchover
wal_before_switch=$(src_psql -c "SELECT pg_current_wal_lsn()")
if [[ $mode == archive ]]; then
  tgt_psql -c "ALTER SYSTEM SET wal_retrieve_retry_interval = '50ms'" -c "SELECT pg_reload_conf()" >/dev/null
fi

# The target's session is opened now, before the source stops, so that connecting is off the
# clock; it reads the rest of its script once the final checkpoint is known.
coproc PROMO { tgt_psql -F ' ' 2>&1; }
# Our own copies of its pipes: bash closes the coproc's when it exits, before we read.
exec {promo_in}>&"${PROMO[1]}" {promo_out}<&"${PROMO[0]}"
eval "exec ${PROMO[1]}>&- ${PROMO[0]}<&-"
# shellcheck disable=SC2153  # set by coproc
promo_pid=$PROMO_PID
printf '%s\n' "SET statement_timeout = 0;" "SELECT 'ready';" >&"$promo_in"
read -r -t "$switch_timeout" ready <&"$promo_out" || ready=""
[[ $ready == ready ]] || fail "$EX_UNAVAILABLE" "cannot open a session on the target: $ready"

# A checkpoint right before the stop leaves the shutdown checkpoint (inside the downtime)
# little to write.
src_psql -c "CHECKPOINT" >/dev/null

# One call on the source host: fast shutdown, wait for the postmaster to go (5 ms polls, not
# pg_ctl's 100 ms), then pg_controldata. Clients see errors from here on.
state=stopping
t_stop=$(pgs_now_ms)
# shellcheck disable=SC2016  # expanded on the source host
control=$(on_src sh -c '
  d=$1 bin=$2 limit=$3
  [ -f "$d/postmaster.pid" ] || { echo "not running"; exit 3; }
  pid=$(head -n 1 "$d/postmaster.pid")
  kill -INT "$pid" || exit 4
  i=0
  while [ -f "$d/postmaster.pid" ]; do
    sleep 0.005; i=$((i + 1)); [ $i -lt $((limit * 200)) ] || { echo "still running"; exit 5; }
  done
  "$bin/pg_controldata" "$d"' migrate-stop "$SOURCE_PGDATA" "$PG_BIN" "$switch_timeout" 2>&1) ||
  fail "$EX_SOFTWARE" "stopping the source failed: ${control//$'\n'/ }"
t_stopped=$(pgs_now_ms)
# Parsed without forking: this is inside the downtime.
cluster_state="" ckpt_lsn="" ckpt_tli="" seg_size=""
while IFS= read -r line; do
  case $line in
    "Database cluster state:"*) cluster_state=${line#*:} ;;
    "Latest checkpoint location:"*) ckpt_lsn=${line#*:} ;;
    "Latest checkpoint's TimeLineID:"*) ckpt_tli=${line#*:} ;;
    "Bytes per WAL segment:"*) seg_size=${line#*:} ;;
  esac
done <<<"$control"
read -r cluster_state <<<"$cluster_state"
cluster_state=${cluster_state% }
ckpt_lsn=${ckpt_lsn// /} ckpt_tli=${ckpt_tli// /} seg_size=${seg_size// /}
[[ $cluster_state == "shut down" ]] ||
  fail "$EX_SOFTWARE" "the source did not shut down cleanly (pg_controldata says '$cluster_state')"
emit proof name=source_clean_shutdown cluster_state="$cluster_state" checkpoint_lsn="$ckpt_lsn" timeline:="$ckpt_tli"
run_hook after_stop

if [[ $mode == archive ]]; then
  # The segment holding the shutdown checkpoint is not full, so the archiver never shipped
  # it: ship it now (the rest of the file past the checkpoint is not valid WAL, and recovery
  # stops reading there).
  hi=$((16#${ckpt_lsn%/*})) lo=$((16#${ckpt_lsn#*/}))
  segno=$(((hi * 4294967296 + lo) / seg_size))
  per_id=$((4294967296 / seg_size))
  seg=$(printf '%08X%08X%08X' "$ckpt_tli" $((segno / per_id)) $((segno % per_id)))
  out=$(on_src "$bin/wal-ship" push "$SOURCE_PGDATA/pg_wal/$seg" --to "$archive" 2>&1) ||
    fail "$EX_IOERR" "shipping the last segment $seg failed: ${out//$'\n'/ }"
  emit proof name=last_segment_shipped segment="$seg"
fi

# The target must have replayed past the source's final checkpoint, on its timeline: then
# every acknowledged commit is there. One session does the proof, the promotion and the
# first write. Its polling loops commit every round: a snapshot held across them would make
# replay of a cleanup record wait for this very session (max_standby_*_delay, 30 s).
run_hook before_promote
state=promoting
t_promote=$(pgs_now_ms)
[[ $ckpt_lsn =~ ^[0-9A-F]+/[0-9A-F]+$ ]] || fail "$EX_SOFTWARE" "unexpected checkpoint location '$ckpt_lsn' from pg_controldata"
# (If the target's session died meanwhile, the writes and reads below fail quietly and `wait`
# reports it.)
cat 2>/dev/null 1>&"$promo_in" <<SQL || true
SELECT set_config('pgshift.deadline', (clock_timestamp() + interval '$switch_timeout seconds')::text, false);
DO \$\$
BEGIN
  WHILE coalesce(pg_last_wal_replay_lsn() <= '$ckpt_lsn'::pg_lsn, true) LOOP
    IF clock_timestamp() > current_setting('pgshift.deadline')::timestamptz THEN
      RAISE EXCEPTION 'target replayed only up to % (needs past $ckpt_lsn)', pg_last_wal_replay_lsn();
    END IF;
    PERFORM pg_sleep(0.005);
    COMMIT; -- hold no snapshot between polls: replay must never wait for this session
  END LOOP;
END \$\$;
SELECT 'replayed', pg_last_wal_replay_lsn(), (SELECT timeline_id FROM pg_control_checkpoint()),
       coalesce((SELECT received_tli FROM pg_stat_wal_receiver), 0);
SELECT 'promote', pg_promote(false);
DO \$\$
BEGIN
  WHILE pg_is_in_recovery() LOOP
    IF clock_timestamp() > current_setting('pgshift.deadline')::timestamptz THEN
      RAISE EXCEPTION 'the target is still in recovery after pg_promote';
    END IF;
    PERFORM pg_sleep(0.005);
    COMMIT; -- hold no snapshot between polls: replay must never wait for this session
  END LOOP;
END \$\$;
SELECT 'writable', txid_current(), pg_current_wal_lsn(), ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int;
\\q
SQL
exec {promo_in}>&- 2>/dev/null || true
promo=$(cat <&"$promo_out" 2>/dev/null) || true
wait "$promo_pid" 2>/dev/null || fail "$EX_SOFTWARE" "promoting the target failed: ${promo//$'\n'/ }"
t_writable=$(pgs_now_ms)
state=promoted
read -r _ replayed_lsn replay_tli received_tli <<<"$(grep '^replayed' <<<"$promo")"
read -r _ new_xid new_lsn new_tli <<<"$(grep '^writable' <<<"$promo")"
emit proof name=target_replayed_final_checkpoint checkpoint_lsn="$ckpt_lsn" replayed_lsn="$replayed_lsn" source_timeline:="$ckpt_tli" received_timeline:="${received_tli:-0}" restartpoint_timeline:="${replay_tli:-0}"
emit proof name=target_writable xid:="$new_xid" lsn="$new_lsn" timeline:="$new_tli"
downtime_ms=$((t_writable - t_stop))
run_hook after_promote

# Fence the old source: if anyone starts it, it comes up as a standby of the new primary.
new_primary_conninfo="host=$TARGET_ADDR port=$TARGET_PORT user=$REPL_USER password=$repl_password application_name=pgshift_rejoin sslmode=prefer"
on_src rm -rf "$SOURCE_PGDATA/pg_replslot/$slot"
on_src sh -c "sed -i '/^primary_conninfo/d; /^primary_slot_name/d' '$SOURCE_PGDATA/postgresql.auto.conf' &&
  printf '%s\n' \"primary_conninfo = '$new_primary_conninfo'\" >> '$SOURCE_PGDATA/postgresql.auto.conf' &&
  touch '$SOURCE_PGDATA/standby.signal'"
emit proof name=old_source_fenced standby_signal:=true
phase_end downtime_ms:=$downtime_ms stop_ms:=$((t_stopped - t_stop)) promote_ms:=$((t_writable - t_promote)) \
  stop_at_ms:="$t_stop" stopped_at_ms:="$t_stopped" writable_at_ms:="$t_writable" \
  checkpoint_lsn="$ckpt_lsn" new_timeline:="$new_tli"

# --- 6 rejoin ----------------------------------------------------------------------------
# The old source comes back as a streaming standby of the new primary: its shutdown was clean
# and the new primary has all its WAL, so it follows the new timeline without a rewind. This
# keeps the pair replicated, and is what makes --reverse a plain switchover.
if ((rejoin)); then
  phase_begin rejoin
  follow "$SOURCE_SPEC" "$SOURCE_PGDATA" "$source_log" "$source_host_addr" "$source_port" \
    "$TARGET_ADDR" "$TARGET_PORT" ||
    fail "$EX_UNAVAILABLE" "the old source does not stream from the new primary; see $source_log"
  [[ $(src_psql -c "SELECT pg_is_in_recovery()") == t ]] || fail "$EX_SOFTWARE" "the old source is not in recovery after fencing"
  phase_end rewound:=$rewound
fi

# --- 7 verify ----------------------------------------------------------------------------
verdict=skipped
if ((verify && rejoin)); then
  phase_begin verify
  # The tools' own JSON lines go next to the report (or to a scratch directory).
  if [[ -n $report ]]; then
    out_dir=$(dirname "$report")
  else
    out_dir=$(mktemp -d /tmp/pgshift-verify.XXXXXX)
  fi
  pgs_log "verification records in $out_dir/verify-*.jsonl"
  rows_out=$out_dir/verify-rowcount.jsonl sums_out=$out_dir/verify-checksum.jsonl
  rc_rows=0 rc_sums=0
  "$bin/rowcount-diff" --source "$tgt_dsn" --target "$src_dsn" >"$rows_out" || rc_rows=$?
  "$bin/pg-checksum" --source "$tgt_dsn" --target "$src_dsn" --wait-replay --timeout 120s --recheck 3 \
    >"$sums_out" || rc_sums=$?
  rows_summary=$(tail -n 1 "$rows_out" 2>/dev/null || true)
  sums_summary=$(tail -n 1 "$sums_out" 2>/dev/null || true)
  ((rc_rows <= 1)) || pgs_log "warning: rowcount-diff failed (exit $rc_rows); see $rows_out"
  case $rc_sums in
    0) verdict=equal ;;
    1) verdict=different ;;
    *) verdict=error ;;
  esac
  phase_end verdict="$verdict" rowcount_exit:=$rc_rows checksum_exit:=$rc_sums \
    rowcount_summary:="${rows_summary:-null}" checksum_summary:="${sums_summary:-null}"
fi

# --- 8 report ----------------------------------------------------------------------------
phase=report
wal_moved=$(tgt_psql -c "SELECT pg_wal_lsn_diff('$ckpt_lsn', '$wal_before_switch')::bigint")
code=$EX_OK
case $verdict in different) code=$EX_DIFF ;; error) code=$EX_SOFTWARE ;; esac
ok=true
((code == 0)) || ok=false
phases=$(for p in "${phase_order[@]}"; do printf '"%s":%s\n' "$p" "${phase_ms[$p]}"; done | paste -sd, -)
emit summary success:=$ok exit_code:=$code mode="$mode" downtime_ms:=$downtime_ms \
  phases_ms:="{$phases}" bytes_copied:="$bytes_copied" wal_bytes_during_switch:="${wal_moved:-0}" \
  verdict="$verdict" new_primary="$TARGET_ADDR:$TARGET_PORT" old_primary="$source_host_addr:$source_port" \
  checkpoint_lsn="$ckpt_lsn" new_timeline:="$new_tli" elapsed_ms:=$(($(pgs_now_ms) - run_start))
trap - EXIT
exit "$code"
