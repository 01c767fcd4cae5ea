#!/usr/bin/env bash
# ship-cron.sh: WAL shipping from cron, for archive-mode migrations and backups.
#
#   ship-cron.sh run --from DIR --to DEST [--jobs N] [--keep-from SEG | --keep-for-dsn DSN] [--keep-backups N]
#   ship-cron.sh install --schedule "CRON" [--user USER] [--file FILE] [--log FILE] -- RUN-OPTIONS...
#   ship-cron.sh uninstall [--user USER] [--file FILE]
#
# run: ship every finished WAL file in DIR with `wal-ship sweep` (a data directory's pg_wal,
# whose .ready files it marks .done, e.g. with archive_mode=on and no archive_command; or a
# pg_receivewal spool), then apply retention with `wal-ship clean`:
#   --keep-from SEG       keep SEG and everything after it
#   --keep-for-dsn DSN    keep what the standby at DSN still needs: the WAL file of its last
#                         restartpoint's redo (pg_control_checkpoint().redo_wal_file)
#   --keep-backups N      keep what the N newest base backups need (their backup history
#                         files, which a base backup of the server leaves in DIR, tell); beside
#                         one of the two above, what either needs is kept
# Runs under a lock (flock on DIR/.ship-cron.lock), so a slow run and the next cron tick never
# overlap; a tick that finds the lock taken exits 75 (EX_TEMPFAIL) and ships nothing.
# Output: wal-ship's JSON lines, then a `summary`.
#
# install: add (or replace) one crontab line running `ship-cron.sh run RUN-OPTIONS` for USER
# (default postgres), tagged so that install is idempotent and uninstall finds it. --file edits
# a crontab file instead of calling crontab(1) (for review, config management, or tests).
# Each tick appends its output to --log FILE (default: pgshift-ship-cron.log in USER's home,
# not a name in /tmp that another user could take first). A % in the line is written \% (cron
# reads a bare % as the end of the command).
#
# PGSHIFT_BIN: where wal-ship is (default: target/release of this checkout, else PATH).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PGS_NAME=ship-cron
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
tag="# pgshift ship-cron"

usage() { pgs_usage "$1"; }
! pgs_wants_help "$@" || pgs_help
wal_ship() {
  local b=${PGSHIFT_BIN:-$(cd "$(dirname "$self")/.." && pwd)/target/release}
  if [[ -x $b/wal-ship ]]; then "$b/wal-ship" "$@"; else wal-ship "$@"; fi
}

cmd=${1:-}
(($#)) && shift
case $cmd in
  run)
    from="" to="" jobs=2 keep_from="" keep_dsn="" keep_backups=""
    while (($#)); do
      case $1 in
        --from) pgs_val "$@"; from=$2; shift ;;
        --to) pgs_val "$@"; to=$2; shift ;;
        --jobs) pgs_val "$@"; jobs=$2; shift ;;
        --keep-from) pgs_val "$@"; keep_from=$2; shift ;;
        --keep-for-dsn) pgs_val "$@"; keep_dsn=$2; shift ;;
        --keep-backups) pgs_val "$@"; keep_backups=$2; shift ;;
        *) usage "unknown option '$1'" ;;
      esac
      shift
    done
    [[ -n $from && -n $to ]] || usage "run needs --from DIR and --to DEST"
    [[ -d $from ]] || pgs_die "$EX_USAGE" "--from $from is not a directory"
    [[ -z $keep_backups || $keep_backups =~ ^[1-9][0-9]*$ ]] || usage "--keep-backups takes a number of backups from 1, not '$keep_backups'"
    [[ -z $keep_from || -z $keep_dsn ]] || usage "give --keep-from or --keep-for-dsn, not both"
    exec {lock}>>"$from/.ship-cron.lock"
    flock -n "$lock" || pgs_die "$EX_TEMPFAIL" "another ship-cron run holds $from/.ship-cron.lock; this tick ships nothing"
    rc=0
    wal_ship sweep --from "$from" --to "$to" --jobs "$jobs" || rc=$?
    if ((rc == 0)) && [[ -n $keep_dsn ]]; then
      keep_from=$("$PG_BIN/psql" -XAtq -d "$keep_dsn" -c "SELECT redo_wal_file FROM pg_control_checkpoint()") ||
        pgs_die "$EX_UNAVAILABLE" "cannot ask the standby at --keep-for-dsn which WAL it still needs"
    fi
    cleaned=false
    keep=()
    [[ -z $keep_from ]] || keep+=(--keep-from "$keep_from")
    [[ -z $keep_backups ]] || keep+=(--keep-backups "$keep_backups")
    if ((rc == 0 && ${#keep[@]})); then
      wal_ship clean --archive "$to" "${keep[@]}" || rc=$?
      cleaned=true
    fi
    pgs_json summary success:="$( ((rc == 0)) && echo true || echo false)" exit_code:=$rc \
      from="$from" to="$to" keep_from="$keep_from" keep_backups:="${keep_backups:-null}" cleaned:=$cleaned
    exit "$rc"
    ;;
  install | uninstall)
    schedule="" user=postgres file="" log="" run_args=()
    while (($#)); do
      case $1 in
        --schedule) pgs_val "$@"; schedule=$2; shift ;;
        --user) pgs_val "$@"; user=$2; shift ;;
        --file) pgs_val "$@"; file=$2; shift ;;
        --log) pgs_val "$@"; log=$2; shift ;;
        --) shift; run_args=("$@"); break ;;
        *) usage "unknown option '$1'" ;;
      esac
      shift
    done
    if [[ -n $file ]]; then
      current=$(cat "$file" 2>/dev/null || true)
    else
      pgs_require_cmd crontab
      current=$(crontab -u "$user" -l 2>/dev/null || true)
    fi
    # Every other line stays as it was.
    kept=$(grep -vF "$tag" <<<"$current" || true)
    new=$kept
    if [[ $cmd == install ]]; then
      [[ -n $schedule ]] || usage "install needs --schedule \"CRON\" (e.g. \"* * * * *\")"
      # Five fields (minute hour day month weekday) or one @keyword: with four, cron would
      # take the command's first word for the weekday and never run the line.
      read -ra fields <<<"$schedule"
      if [[ ${#fields[@]} -eq 1 && ${fields[0]} == @* ]]; then
        [[ ${fields[0]} =~ ^@(reboot|yearly|annually|monthly|weekly|daily|midnight|hourly)$ ]] ||
          usage "--schedule '$schedule' is not a cron keyword (@hourly, @daily, @weekly, @monthly, @yearly, @reboot)"
      elif ((${#fields[@]} != 5)) || [[ ! $schedule =~ ^[[:space:]]*([0-9A-Za-z*/,-]+[[:space:]]+){4}[0-9A-Za-z*/,-]+[[:space:]]*$ ]]; then
        usage "--schedule takes the five cron fields, minute hour day month weekday (e.g. \"*/5 * * * *\"), or @hourly/@daily; got ${#fields[@]}: '$schedule'"
      fi
      ((${#run_args[@]} > 0)) || usage "install needs the run options after --"
      bin=${PGSHIFT_BIN:+PGSHIFT_BIN=$(pgs_quote "$PGSHIFT_BIN") }
      # $HOME as cron's shell sets it for USER, unless --log names a file.
      logw=${log:+$(pgs_quote "$log")}
      line="${bin}$(pgs_quote "$self" run "${run_args[@]}") >>${logw:-\"\$HOME\"/pgshift-ship-cron.log} 2>&1"
      entry="$schedule ${line//%/\\%} $tag"
      new=$(printf '%s\n%s' "$kept" "$entry" | sed '/^$/d')
    fi
    if [[ $new == "$current" ]]; then
      changed=false
    else
      changed=true
      if [[ -n $file ]]; then
        err=$( { printf '%s\n' "$new" >"$file"; } 2>&1) ||
          pgs_die "$EX_IOERR" "cannot write $file: ${err##*: } (check the path and its permissions)"
      else
        err=$(printf '%s\n' "$new" | crontab -u "$user" - 2>&1) ||
          pgs_die "$EX_IOERR" "cannot install the crontab of $user (crontab -u $user -): ${err//$'\n'/ } (run as root or as $user)"
      fi
    fi
    pgs_json crontab action="$cmd" user="$user" file="${file:-crontab}" changed:=$changed
    pgs_json summary success:=true changed:=$changed
    ;;
  *) usage "first argument must be run, install or uninstall" ;;
esac
