#!/usr/bin/env bash
# migrate.sh --mode logical: move the databases of a PostgreSQL server to another with native
# logical replication, across major versions (the target's major >= the source's) and to or
# from managed services: no filesystem or ssh access to either server is needed.
#
#   migrate.sh --mode logical --source DSN --target DSN [options]
#   migrate.sh --mode logical --hosts-env FILE [--reverse] [options]
#   scripts/migrate-logical.sh ...    (the same: migrate.sh --mode logical runs it)
#
# Both DSNs are control connections (a superuser, or on a managed service its admin role with
# REPLICATION); no password in them (a passfile, ~/.pgpass or PGPASSWORD). Steps are the
# pg-logical tool's (tools/pg-logical), chained:
#   1 preflight  pg-logical check: refusals named with their fix (tables without a replica
#                identity, large objects, unlogged tables, extensions the target lacks, an
#                older target); nothing is changed
#   2 setup      roles (pg_dumpall --roles-only), databases, schema (pg_dump --schema-only,
#                one transaction each), the target's login roles fenced (NOLOGIN) until the
#                cutover, one publication per database and a subscription: the copy starts
#   3 copy       until every table is copied (copy_progress records)
#   4 catch_up   until every slot's lag is under --max-lag (lag records; exit 75 early when
#                the target cannot keep up)
#   5 cutover    [PgBouncer PAUSE] -> pg-logical fence (writes stopped on the source: its
#                login roles NOLOGIN, its client sessions ended; the proofs: the slots
#                confirmed past the fenced LSN, a sentinel row, sequences copied, schema
#                unchanged) -> pg-checksum of every database at the fence (both sides
#                frozen: equal, or the source is reopened and the run stops with exit 1) ->
#                pg-logical open (the way back's slot, then the target's roles log in) ->
#                [PgBouncer entries pointed at the target, RESUME]. Downtime: from the fence
#                to the target taking writes
#   6 report     summary: downtime, each phase, the verdict per database
# After the move the old source follows the target (a subscription with copy_data = false):
# the same command with --reverse moves back. --finish drops the way back.
#
# Interruptions: every step is journaled; run the same command again after any interruption
# (kill -9 included) and it goes on from where the servers stand (pg-logical status): a copy
# goes on, a fence is proven again (the source stays fenced meanwhile, never two sides
# taking writes), an open is finished. --abort before the cutover removes what setup made
# (subscription, publication, slot, the databases it created on the target) and reopens what
# was fenced; a failure before the cutover does the same (a slot left behind would keep WAL
# on the source).
#
# Options:
#   --source DSN / --target DSN   the servers (or SOURCE_DSN and TARGET_ADDR/TARGET_PORT
#                                 from --hosts-env)
#   --hosts-env FILE       variables written by hosts-local.sh
#   --reverse              swap source and target (move back)
#   --databases A,B        the databases to move (default: every one of the source that
#                          accepts connections)
#   --exclude-table PAT    leave tables out (their schema is copied, not their rows;
#                          verification leaves them out too); repeatable
#   --replica-identity-full PAT  tables without a primary key get REPLICA IDENTITY FULL on
#                          the source (else preflight refuses them); repeatable
#   --copy-jobs N          tables copied at once per database (default 4)
#   --source-from-target C how the target's server reaches the source (default: --source)
#   --target-from-source C how the source's server reaches the target, for the way back
#   --max-lag BYTES        lag that counts as caught up (default 1048576)
#   --catchup-timeout S    longest copy and catch-up (default 3600)
#   --converge-window S    exit 75 when the lag has not shrunk for S seconds (default 120)
#   --fence-timeout S      longest wait for each proof of the cutover (default 30)
#   --pooler DSN           a PgBouncer in front of the source (repeatable; POOLER_DSN from
#                          --hosts-env): paused before the fence, pointed at the target and
#                          resumed after the open; clients see a pause, not an error
#   --pooler-host SPEC     where the last --pooler's configuration file is (default local)
#   --no-pooler            ignore POOLER_DSN from --hosts-env
#   --pause-limit S        longest wait for every pooler's PAUSE (default 5)
#   --no-verify            no pg-checksum at the fence (the proofs alone)
#   --no-reverse           no way back (no slot on the target, no subscription on the source)
#   --hook NAME=CMD        run CMD (bash -c) at a step: before_setup, before_copy,
#                          before_catch_up, before_fence, after_pause (with a pooler: right after
#                          its PAUSE), after_fence, before_open, after_open
#   --journal FILE         the journal (default: one per pair under $PGSHIFT_STATE_DIR)
#   --abort                before the cutover: remove what setup made, reopen the source,
#                          resume the poolers a killed run left paused
#   --finish               after a move: drop the way back and pgshift's sentinel schema
#   --dry-run              preflight and the plan; nothing is changed
#   --yes                  cut over without asking (required without a terminal)
#   --report FILE          also write the JSON lines there
#   --bin DIR              where the pgshift tools are (default: target/release)
#   --pg-bin DIR           PostgreSQL client tools (pg_dump, psql) of a version >= the
#                          source's (default $PG_BIN)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PGS_NAME=migrate
# The closing line is this script's own (the downtime, the verdict).
PGS_OWN_CLOSING=1
here=$(cd "$(dirname "$0")" && pwd)
usage() { pgs_usage "$1"; }
! pgs_wants_help "$@" || pgs_help

# --- Arguments ---------------------------------------------------------------------------
hosts_env="" reverse=0 databases="" copy_jobs=4 src_from_tgt="" tgt_from_src="" max_lag=1048576
catchup_timeout=3600 converge_window=120 fence_timeout=30 verify=1 way_back=1 journal="" abort=0
finish=0 dry_run=0 yes=0 report="" bin="" pg_bin=$PG_BIN pause_limit=5 no_pooler=0
SOURCE_DSN="" TARGET_DSN="" TARGET_ADDR="" TARGET_PORT="" POOLER_DSN="" POOLER_SPEC=local
excludes=() ri_full=() poolers=()
declare -A hooks=()
hook_names=(before_setup before_copy before_catch_up before_fence after_pause after_fence before_open after_open)
pgs_preload_hosts_env "$@"
while (($#)); do
  case $1 in
    --mode) pgs_val "$@"; [[ $2 == logical ]] || usage "--mode $2 is not handled here"; shift ;;
    --hosts-env) shift ;;
    --source) pgs_val "$@"; SOURCE_DSN=$2; shift ;;
    --target) pgs_val "$@"; TARGET_DSN=$2; shift ;;
    --reverse) reverse=1 ;;
    --databases) pgs_val "$@"; databases=$2; shift ;;
    --exclude-table) pgs_val "$@"; excludes+=("$2"); shift ;;
    --replica-identity-full) pgs_val "$@"; ri_full+=("$2"); shift ;;
    --copy-jobs) pgs_val "$@"; copy_jobs=$2; shift ;;
    --source-from-target) pgs_val "$@"; src_from_tgt=$2; shift ;;
    --target-from-source) pgs_val "$@"; tgt_from_src=$2; shift ;;
    --max-lag) pgs_val "$@"; max_lag=$2; shift ;;
    --catchup-timeout) pgs_val "$@"; catchup_timeout=$2; shift ;;
    --converge-window) pgs_val "$@"; converge_window=$2; shift ;;
    --fence-timeout) pgs_val "$@"; fence_timeout=$2; shift ;;
    --pooler) pgs_val "$@"; poolers+=(--pooler "$2" --host local); shift ;;
    --pooler-host)
      pgs_val "$@"
      ((${#poolers[@]})) || usage "--pooler-host comes after the --pooler it belongs to"
      poolers[-1]=$2; shift ;;
    --no-pooler) poolers=() POOLER_DSN="" no_pooler=1 ;;
    --pause-limit) pgs_val "$@"; pause_limit=$2; shift ;;
    --no-verify) verify=0 ;;
    --no-reverse) way_back=0 ;;
    --hook)
      [[ ${2:-} == *=* ]] || usage "--hook takes NAME=COMMAND"
      [[ " ${hook_names[*]} " == *" ${2%%=*} "* ]] || usage "unknown hook '${2%%=*}' (one of ${hook_names[*]})"
      hooks[${2%%=*}]=${2#*=}; shift ;;
    --journal) pgs_val "$@"; journal=$2; shift ;;
    --abort) abort=1 ;;
    --finish) finish=1 ;;
    --dry-run) dry_run=1 ;;
    --yes) yes=1 ;;
    --report) pgs_val "$@"; report=$2; shift ;;
    --bin) pgs_val "$@"; bin=$2; shift ;;
    --pg-bin) pgs_val "$@"; pg_bin=$2; shift ;;
    -h | --help) pgs_help ;;
    *) usage "unknown option '$1' (in --mode logical)" ;;
  esac
  shift
done
bin=${bin:-$(cd "$here/.." && pwd)/target/release}
for v in max_lag catchup_timeout converge_window fence_timeout copy_jobs; do
  [[ ${!v} =~ ^[0-9]+$ ]] || usage "--${v//_/-} takes a whole number"
done
[[ $pause_limit =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage "--pause-limit takes seconds (e.g. 5 or 0.5)"
((abort + finish + dry_run <= 1)) || usage "give one of --abort, --finish and --dry-run"
[[ -n $SOURCE_DSN ]] || usage "missing --source DSN (or --hosts-env FILE)"
SOURCE_DSN=$(pgs_url_conninfo "$SOURCE_DSN") || usage "--source names one server: give one host in it"
if [[ -z $TARGET_DSN ]]; then
  [[ -n $TARGET_ADDR && -n $TARGET_PORT ]] || usage "missing --target DSN (or --hosts-env FILE)"
  # The source's conninfo with the target's address: a later keyword wins.
  TARGET_DSN="$SOURCE_DSN host=$TARGET_ADDR port=$TARGET_PORT"
fi
TARGET_DSN=$(pgs_url_conninfo "$TARGET_DSN") || usage "--target names one server: give one host in it"
for d in "$SOURCE_DSN" "$TARGET_DSN"; do
  pgs_no_password "$d" || usage "a conninfo holds a password: $PGS_PASSWORD_HINT"
done
if ((reverse)); then
  t=$SOURCE_DSN SOURCE_DSN=$TARGET_DSN TARGET_DSN=$t
fi
if ((${#poolers[@]} == 0 && !no_pooler)) && [[ -n $POOLER_DSN ]]; then poolers=(--pooler "$POOLER_DSN" --host "$POOLER_SPEC"); fi
if ((!yes && !dry_run && !abort && !finish)) && [[ ! -t 0 ]]; then
  usage "not a terminal: pass --yes to cut over without asking"
fi
[[ -x $bin/pg-logical ]] || pgs_die "$EX_UNAVAILABLE" "$bin/pg-logical is missing (make release, or --bin DIR)"
# host:port of each side, for names and the poolers' entries.
addr_of() { # addr_of CONNINFO -> host:port
  local h p
  h=$(sed -n 's/.*\bhost=\([^ ]*\).*/\1/p' <<<"$1")
  p=$(sed -n 's/.*\bport=\([0-9]*\).*/\1/p' <<<"$1")
  printf '%s:%s\n' "${h:-localhost}" "${p:-5432}"
}
src_id=$(addr_of "$SOURCE_DSN") tgt_id=$(addr_of "$TARGET_DSN")
journal=${journal:-$(pgs_journal_path "logical-$src_id" "logical-$tgt_id")}
export PGSHIFT_MIGRATE_PID=$$

# --- Output ------------------------------------------------------------------------------
if [[ -n $report ]]; then
  : 2>/dev/null >"$report" || usage "cannot write --report '$report'"
fi
bool() { if (($1)); then echo true; else echo false; fi; }
run_start=$(pgs_now_ms) phase=start phase_t0=$run_start state=preflight failing=0 stopped_by="" bg_pid=""
declare -A phase_ms=()
phase_order=()
PGS_NOTE_EXTRA=(mode=logical)

# --- The tools -----------------------------------------------------------------------------
pair=(--source "$SOURCE_DSN" --target "$TARGET_DSN" --journal "$journal")
[[ -z $databases ]] || pair+=(--databases "$databases")
for e in "${excludes[@]}"; do pair+=(--exclude-table "$e"); done
# tool STEP ARGS...: pg-logical STEP in the background (a signal reaches our trap at once, and
# is passed on: the tool stops at its next safe point), its records passed on as they come,
# its summary kept in `ts` (JSON); returns its exit status.
tool() {
  local f fd rc=0 line part=""
  f=$(mktemp /tmp/pgshift-logical.XXXXXX)
  ts='{}' terr='{}'
  set -m
  "$bin/pg-logical" "$1" --json "${pair[@]}" "${@:2}" >"$f" &
  bg_pid=$!
  set +m
  # The records as the tool writes them: read on from where the last look stopped (a line
  # not yet whole is kept for the next look).
  exec {fd}<"$f"
  pass_on() {
    while IFS= read -r line <&"$fd" || { part+=$line && false; }; do
      line=$part$line part=""
      case $line in
        '{"type":"summary"'*) ts=$line ;;
        # The fatal error is this run's to say (fail), with the tool's message.
        '{"type":"error"'*'"fatal":true'*) terr=$line ;;
        '{"type":"server"'*) [[ -z $report ]] || printf '%s\n' "$line" >>"$report" ;;
        *) pgs_emit_line "$line" ;;
      esac
    done
  }
  while kill -0 "$bg_pid" 2>/dev/null; do
    pass_on
    sleep 0.02
  done
  wait "$bg_pid" || rc=$?
  bg_pid=""
  pass_on
  exec {fd}<&-
  rm -f "$f"
  return "$rc"
}
tool_message() { jq -r '.message // "see the error records"' <<<"$terr" 2>/dev/null || echo "see the error records"; }

# --- Failures and signals --------------------------------------------------------------------
# state: what a failure must undo. preflight: nothing. replicating: the subscription, its slot,
# the publication and the target's copy go (a slot left behind keeps WAL on the source), the
# source serves.
# fenced: the source is reopened (pg-logical unfence). open: nothing (the target serves; run
# again to finish the way back).
fail() {
  local code=$1
  shift
  pgs_log "$*"
  ((!failing)) || return 1
  failing=1 PGS_ENDED=1
  pgs_emit error phase="$phase" exit_code:="$code" message="$*" || true
  trap - EXIT
  recover
  pgs_note failed phase="$phase" exit_code:="$code" state="$state" message="$*" || true
  pgs_emit summary success:=false exit_code:="$code" mode=logical failed_phase="$phase" state="$state" \
    message="$*" journal="$journal" ${stopped_by:+stopped_by="$stopped_by"} elapsed_ms:=$(($(pgs_now_ms) - run_start))
  exit "$code"
}
recover() {
  case $state in
    fenced)
      pgs_log "reopening the source"
      if tool unfence; then state=replicating; else
        pgs_log "the source could not be reopened: run pg-logical unfence --source ... --target ... (or this command with --abort)"
      fi ;;
    replicating)
      pgs_log "removing the subscription, its slot, the publication and the target's copy (a slot left behind keeps WAL on the source)"
      tool abort --drop-databases >/dev/null || pgs_log "could not remove them: run this command with --abort" ;;
  esac
  # Not while the source is fenced and could not be reopened: paused, clients wait instead
  # of failing on it.
  [[ $state == fenced ]] || pooler_settle
}
on_exit() {
  local rc=$?
  ((rc == 0)) && return 0
  trap - EXIT
  ((failing)) && exit "$rc"
  if [[ -n ${PGS_ENDED:-} ]]; then
    # pgs_die said why and ended the stream: undo what the state needs, with its exit code.
    failing=1
    recover
    pgs_note failed phase="$phase" exit_code:="$rc" state="$state" message="exit $rc" || true
    exit "$rc"
  fi
  fail "$EX_SOFTWARE" "unexpected failure (exit $rc) in phase $phase"
}
on_signal() {
  stopped_by=$1
  pgs_log "got $1: stopping at the next safe point"
  # A step under way finishes or rolls back by itself (pg-logical watches signals) and its
  # phase ends the run.
  if [[ -n $bg_pid ]]; then
    kill -TERM "$bg_pid" 2>/dev/null
    return 0
  fi
  fail "$EX_TEMPFAIL" "interrupted by $1 in phase $phase; run the same command again to go on"
}
trap on_exit EXIT
trap 'on_signal SIGTERM' TERM
trap 'on_signal SIGINT' INT
trap 'on_signal SIGHUP' HUP
stop_if_signalled() {
  [[ -z $stopped_by ]] || fail "$EX_TEMPFAIL" "interrupted by $stopped_by in phase $phase; run the same command again to go on"
}

# --- Poolers -----------------------------------------------------------------------------------
pooled() { ((${#poolers[@]})); }
# pooler CMD ARGS...: pooler.sh CMD on every pooler; its records (pooler, pooler_step) passed
# on, its last stderr line kept in pooler_err; returns its status.
pooler() {
  local f rc=0 line
  f=$(mktemp /tmp/pgshift-pooler.XXXXXX)
  "$here/pooler.sh" "$@" "${poolers[@]}" 2>"$f.err" >"$f" || rc=$?
  while IFS= read -r line; do
    case $line in '{"type":"summary"'* | '{"type":"error"'*) ;; *) pgs_emit_line "$line" ;; esac
  done <"$f"
  pooler_err=$(tail -n 1 "$f.err")
  rm -f "$f" "$f.err"
  return "$rc"
}
# pooler_settle: every way out leaves the poolers resumed, pointing at whichever side takes
# writes (a pending PAUSE outlives this script: its clients would be cut off after
# query_wait_timeout). Always safe: a pooler not paused counts as resumed.
pooler_settle() {
  pooled || return 0
  if [[ $state == open ]]; then
    pooler point --resume --from "$src_id" --to "$tgt_id" ||
      pgs_log "a pooler could not be pointed at the target: $pooler_err (scripts/pooler.sh point --resume --from $src_id --to $tgt_id ...)"
  else
    pooler resume || pgs_log "a pooler could not be resumed: $pooler_err (scripts/pooler.sh resume ...)"
  fi
}

# --- Where the pair stands ---------------------------------------------------------------------
mkdir -p "$(dirname "$journal")" || fail "$EX_IOERR" "cannot create the journal's directory for $journal"
rc=0
tool status >/dev/null || rc=$?
# 1: the servers answer, and are in no state a move of this pair leaves (below).
((rc <= 1)) || fail "$rc" "$(tool_message)"
stand=$(jq -r '.state // "unknown"' <<<"$ts")
pgs_emit resume journal="$journal" from="$stand"

# --abort and --finish: one step each.
if ((abort || finish)); then
  phase=$( ((abort)) && echo abort || echo finish)
  if ((abort)); then
    [[ $stand != open ]] || fail "$EX_DATAERR" "the target was opened: nothing to abort; move back with --reverse, or drop the way back with --finish"
    [[ $stand != fenced ]] || { tool unfence || fail $? "$(tool_message)"; }
    # A run killed in its cutover left the poolers paused: the source serves again, so its
    # clients go on now, before the cleanup.
    pooler_settle
    tool abort --drop-databases || fail $? "$(tool_message)"
  else
    tool finish || fail $? "$(tool_message)"
  fi
  pgs_note "done" what="$phase"
  pgs_emit summary success:=true exit_code:=0 mode=logical "$phase":=true journal="$journal" elapsed_ms:=$(($(pgs_now_ms) - run_start))
  trap - EXIT
  exit 0
fi
[[ $stand != unknown ]] || fail "$EX_FATAL" "the pair is in no state pgshift knows (pg-logical status: $(jq -c . <<<"$ts")): nothing was touched; look at both servers"

# A run killed between its PAUSE and the fence left the poolers paused in front of a source
# that still takes writes: its clients wait (and are cut off after query_wait_timeout) until
# this run's own cutover. They go on now, before this run's preflight. (Fenced, they stay
# paused: the source takes no writes; open, the cutover below points and resumes them.)
if ((!dry_run)) && [[ $stand == none || $stand == copying || $stand == replicating ]]; then
  pooler_settle
fi

# --- 1 preflight --------------------------------------------------------------------------------
fixes=(--pg-bin "$pg_bin" --copy-jobs "$copy_jobs")
for r in "${ri_full[@]}"; do fixes+=(--replica-identity-full "$r"); done
if [[ $stand != open ]]; then
  pgs_phase_begin preflight
  tool check "${fixes[@]}" || fail $? "$(tool_message)"
  if pooled; then
    pooler check --source "$src_id" --target "$tgt_id" --pause-limit "$pause_limit" --switch-limit "$((fence_timeout + 30))" ||
      fail $? "pooler check: $pooler_err"
  fi
  pgs_phase_end refused:=0 warnings:="$(jq -r '.warnings // 0' <<<"$ts")"
fi
if ((dry_run)); then
  todo='["preflight","setup","copy","catch_up","confirm","cutover","report"]'
  [[ $stand == open ]] && todo='["cutover"]'
  [[ $stand == fenced ]] && todo='["cutover","report"]'
  pgs_emit plan plan=migrate mode=logical from="$stand" phases:="$todo" verify:="$(bool "$verify")" \
    way_back:="$(bool "$way_back")" confirm="$( ((yes)) && echo yes || echo ask)"
  pgs_log "plan (dry run: nothing was changed): $(jq -r 'join(" -> ")' <<<"$todo")"
  pgs_emit summary success:=true exit_code:=0 mode=logical dry_run:=true elapsed_ms:=$(($(pgs_now_ms) - run_start))
  trap - EXIT
  exit 0
fi
pgs_note run mode=logical from="$stand"

# --- 2 setup, 3 copy, 4 catch up -------------------------------------------------------------
if [[ $stand == none || $stand == copying || $stand == replicating ]]; then
  pgs_run_hook before_setup
  pgs_phase_begin setup
  state=replicating
  args=("${fixes[@]}")
  [[ -z $src_from_tgt ]] || args+=(--source-from-target "$src_from_tgt")
  tool setup "${args[@]}" || fail $? "$(tool_message)"
  pgs_phase_end tables:="$(jq '.tables // 0' <<<"$ts")" bytes_total:="$(jq '.bytes_total // 0' <<<"$ts")"
  stop_if_signalled
  pgs_run_hook before_copy
  pgs_phase_begin copy
  tool wait --until synced --timeout "${catchup_timeout}s" --interval 5s || fail $? "$(tool_message)"
  pgs_phase_end tables:="$(jq '.tables // 0' <<<"$ts")"
  stop_if_signalled
fi
state=replicating
[[ $stand == fenced ]] && state=fenced
if [[ $stand != open ]]; then
  pgs_run_hook before_catch_up
  pgs_phase_begin catch_up
  tool wait --until caught-up --max-lag "$max_lag" --timeout "${catchup_timeout}s" \
    --converge-window "${converge_window}s" --interval 5s || fail $? "$(tool_message)"
  pgs_phase_end lag_bytes:="$(jq '.lag_bytes // null' <<<"$ts")"
  stop_if_signalled
  # The question, before writes stop (not again when a fenced run is resumed).
  if ((!yes)) && [[ $stand != fenced ]]; then
    phase=confirm
    printf '%s: stop writes on %s and move them to %s? [y/N] ' "$PGS_NAME" "$src_id" "$tgt_id" >&2
    answer=""
    read -r answer || answer=""
    case ${answer,,} in
      y | yes) pgs_log "answered yes: cutting over" ;;
      *) state=preflight; fail "$EX_TEMPFAIL" "not moved: answered no; the target keeps replicating, run again to go on (or --abort)" ;;
    esac
  fi
fi

# --- 5 cutover --------------------------------------------------------------------------------
verdict=skipped downtime_ms="" per_db='[]'
cutover() {
  pgs_phase_begin cutover
  if [[ $stand != open ]]; then
    ((!verify)) || verify_plan
    pgs_run_hook before_fence
    if pooled; then
      pooler pause --deadline "$pause_limit" || fail $? "the poolers did not pause: $pooler_err"
      pgs_run_hook after_pause
    fi
    state=fenced
    # What is left to apply when the fence goes up is downtime: it waits for a small lag.
    tool fence --timeout "${fence_timeout}s" --max-lag "$((max_lag < 262144 ? max_lag : 262144))" || {
      local rc=$?
      # pg-logical reopened the source itself (or said it could not: 126).
      ((rc == 126)) || state=replicating
      fail "$rc" "$(tool_message)"
    }
    pgs_run_hook after_fence
    if ((verify)); then
      verify_at_fence
      if [[ $verdict != equal ]]; then
        fail "$( [[ $verdict == different ]] && echo "$EX_DIFF" || echo "$EX_UNAVAILABLE")" \
          "the databases are not equal at the fence (verdict $verdict): the source was reopened and keeps serving; see the verify records"
      fi
    fi
    stop_if_signalled
    pgs_run_hook before_open
  fi
  local oargs=(--timeout "${fence_timeout}s")
  ((way_back)) || oargs+=(--no-reverse)
  [[ -z $tgt_from_src ]] || oargs+=(--target-from-source "$tgt_from_src")
  tool open "${oargs[@]}" || {
    local rc=$?
    # Opened or not, as the servers say.
    tool status >/dev/null 2>&1 || true
    if [[ $(jq -r '.state // ""' <<<"$ts") == open ]]; then state=open; fi
    fail "$rc" "open: $(tool_message)"
  }
  state=open
  downtime_ms=$(jq -r '.downtime_ms // empty' <<<"$ts")
  if pooled; then
    pooler point --resume --from "$src_id" --to "$tgt_id" ||
      fail $? "the target takes writes, but a pooler could not be pointed at it: $pooler_err (run scripts/pooler.sh point --resume --from $src_id --to $tgt_id ...)"
  fi
  pgs_run_hook after_open
  pgs_phase_end downtime_ms:="${downtime_ms:-null}" verdict="$verdict" databases:="$per_db"
}
# verify_plan: which databases verify_at_fence compares (verify_dbs) and which have no table
# of their own, only pgshift's (verify_empty: nothing to compare). Asked before the fence, not
# in the downtime: the fence proves the schema is still the one setup saw.
verify_dbs=() verify_empty=()
verify_plan() {
  local db list=()
  if [[ -n $databases ]]; then
    IFS=, read -ra list <<<"$databases"
  else
    mapfile -t list < <("$PG_BIN/psql" -XAtq -d "$SOURCE_DSN" -c "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")
  fi
  for db in "${list[@]}"; do
    if [[ $("$PG_BIN/psql" -XAtq -d "$SOURCE_DSN dbname=$(pgs_conninfo_quote "$db")" -c "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift') AND n.nspname NOT LIKE 'pg\_%'" 2>/dev/null) == 0 ]]; then
      verify_empty+=("$db")
    else
      verify_dbs+=("$db")
    fi
  done
}
# verify_at_fence: pg-checksum of every database of verify_plan while both sides are frozen.
verify_at_fence() {
  local db q rc out_dir n_diff=0 n_err=0 i
  if [[ -n $report ]]; then out_dir=$(dirname "$report"); else out_dir=$(mktemp -d /tmp/pgshift-verify.XXXXXX); fi
  local ex=(--exclude 'pgshift.*') pids=() outs=()
  for e in "${excludes[@]}"; do ex+=(--exclude "$e"); done
  for db in "${verify_empty[@]}"; do
    pgs_emit verify database="$db" verdict=equal at=fence tables:=0
    per_db=$(jq -c --arg db "$db" '. + [{database: $db, verdict: "equal"}]' <<<"$per_db")
  done
  # Every database at once: this is downtime.
  for db in "${verify_dbs[@]}"; do
    q=$(pgs_conninfo_quote "$db")
    outs+=("$out_dir/verify-${db//[^A-Za-z0-9_.-]/_}-fence.jsonl")
    "$bin/pg-checksum" --json --source "$SOURCE_DSN dbname=$q" --target "$TARGET_DSN dbname=$q" "${ex[@]}" \
      --jobs 2 >"${outs[-1]}" 2>/dev/null &
    pids+=($!)
  done
  for i in "${!verify_dbs[@]}"; do
    db=${verify_dbs[i]}
    rc=0
    wait "${pids[i]}" || rc=$?
    local v=equal
    case $rc in 0) ;; 1) v=different n_diff=$((n_diff + 1)) ;; *) v=error n_err=$((n_err + 1)) ;; esac
    pgs_emit verify database="$db" verdict="$v" at=fence checksum_exit:=$rc \
      checksum_summary:="$(tail -n 1 "${outs[i]}" | jq -c . 2>/dev/null || echo null)"
    per_db=$(jq -c --arg db "$db" --arg v "$v" '. + [{database: $db, verdict: $v}]' <<<"$per_db")
  done
  if ((n_err)); then verdict=error; elif ((n_diff)); then verdict=different; else verdict=equal; fi
}
cutover

# --- 6 report -----------------------------------------------------------------------------------
pgs_note "done" what=migrate
phases=$(for p in "${!phase_ms[@]}"; do printf '%s\t%s\n' "$p" "${phase_ms[$p]}"; done | jq -R -s -c 'split("\n") | map(select(length > 0) | split("\t") | {(.[0]): (.[1] | tonumber)}) | add // {}')
pgs_emit summary success:=true exit_code:=0 mode=logical source="$src_id" target="$tgt_id" downtime_ms:="${downtime_ms:-null}" \
  verdict="$verdict" databases:="$per_db" phase_ms:="$phases" way_back:="$(bool "$way_back")" \
  journal="$journal" elapsed_ms:=$(($(pgs_now_ms) - run_start))
trap - EXIT
pgs_log "moved $src_id to $tgt_id in $(((($(pgs_now_ms) - run_start) + 500) / 1000)) s, downtime ${downtime_ms:-?} ms, verify at the fence: $verdict$( ((way_back)) && echo "; the old source follows: --reverse moves back, --finish drops the way back")"
