#!/usr/bin/env bash
# pooler.sh: the PgBouncers in front of a primary, for a switchover clients do not see.
#
#   pooler.sh check  --source H:P [--target H:P] [--pause-limit S] [--switch-limit S] POOLERS
#   pooler.sh pause  [--deadline S] POOLERS
#   pooler.sh point  --from H:P --to H:P [--resume] POOLERS
#   pooler.sh stage  --from H:P --to H:P POOLERS
#   pooler.sh swap   --from H:P --to H:P [--no-resume] POOLERS
#   pooler.sh resume POOLERS
#   pooler.sh probe  --expect H:P POOLERS
#
# POOLERS: one or more `--pooler DSN [--host SPEC] [--conffile FILE]`: the PgBouncer's admin
# console (a conninfo with dbname=pgbouncer and an admin user; no password in it: use a
# passfile or ~/.pgpass), the host where its configuration file is (local, ssh://...,
# netns://NAME; default local), and that file (default: SHOW CONFIG's conffile).
#
# check (changes nothing): SHOW VERSION, CONFIG and DATABASES on each; the entries that
# connect to the source (--source H:P) must exist, be in the configuration file or a file it
# %includes, and not use session pooling (a PAUSE then waits for every session to end and each
# client gets an error); server_login_retry must be at most 1 s (a failed login during the
# switch stalls every client that long) and query_wait_timeout longer than the pause plus the
# switch (or clients are cut off). With --target, the pooler's host must reach it.
# pause: the global PAUSE on every pooler at once (not PAUSE db: a login while one database is
# paused stalls it for server_login_retry); PAUSE returns once every transaction in flight has
# ended. Past --deadline (default 5 s) every pooler is resumed and the exit is 75. A pooler
# already paused counts as paused.
# point: rewrite the entries that connect to --from so they connect to --to (a temporary file
# renamed over the old one, which is kept as FILE.pgshift-prev), RELOAD, and check SHOW
# DATABASES: no entry left at --from. Entries already at --to are left alone. With --resume,
# each pooler is RESUMEd right after (the end of the switch: one call instead of two).
# stage: what point would write, written beside each file (FILE.pgshift-next, with the
# current one as FILE.pgshift-base; pooler-entries.sh), nothing moved, no RELOAD: done before
# the switch, so that swap, inside it, is one quick step.
# swap: for each pooler, the staged files renamed into place (pooler-swap.sh), then RELOAD and
# RESUME in one session of its console; a pooler whose files changed since they were staged,
# or were not staged, gets the full point instead. Ends with every pooler resumed, unless
# --no-resume (RELOAD only: the caller RESUMEs once the new primary is writable).
# resume: RESUME on every pooler (one that is not paused counts as resumed). Always safe.
# probe: through each pooler, as its admin user, into the first entry that pointed at the
# source: the server answering must be --expect and writable.
#
# Output: JSON lines (`pooler` from check, `pooler_step` from the others), then a summary.
# Exit 0; 65 a check refused (the message names the setting and the fix); 69 a pooler or its
# host cannot be reached; 75 the pause did not complete in time (every pooler resumed).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PGS_NAME=pooler
PGS_POOLER_ENTRIES_SH=${PGS_POOLER_ENTRIES_SH:-$(cat "$PGS_ROOT/scripts/remote/pooler-entries.sh")}
PGS_POOLER_SWAP_SH=${PGS_POOLER_SWAP_SH:-$(cat "$PGS_ROOT/scripts/remote/pooler-swap.sh")}

usage() { pgs_usage "$1"; }
! pgs_wants_help "$@" || pgs_help

cmd=${1:-}
case $cmd in check | pause | point | stage | swap | resume | probe) shift ;; *) usage "first argument must be check, pause, point, stage, swap, resume or probe" ;; esac
dsns=() specs=() conffiles=() source="" target="" from="" to="" expect="" deadline=5 pause_limit=5 switch_limit=10 then_resume=0 no_resume=0
while (($#)); do
  case $1 in
    --pooler) pgs_val "$@"; dsns+=("$(pgs_url_conninfo "$2")") specs+=(local) conffiles+=(""); shift ;;
    --host) pgs_val "$@"; ((${#dsns[@]})) || usage "--host comes after the --pooler it belongs to"; specs[-1]=$2; shift ;;
    --conffile) pgs_val "$@"; ((${#dsns[@]})) || usage "--conffile comes after the --pooler it belongs to"; conffiles[-1]=$2; shift ;;
    --source) pgs_val "$@"; source=$2; shift ;;
    --target) pgs_val "$@"; target=$2; shift ;;
    --from) pgs_val "$@"; from=$2; shift ;;
    --to) pgs_val "$@"; to=$2; shift ;;
    --expect) pgs_val "$@"; expect=$2; shift ;;
    --resume) then_resume=1 ;;
    --no-resume) no_resume=1 ;;
    --deadline) pgs_val "$@"; deadline=$2; shift ;;
    --pause-limit) pgs_val "$@"; pause_limit=$2; shift ;;
    --switch-limit) pgs_val "$@"; switch_limit=$2; shift ;;
    *) usage "unknown option '$1'" ;;
  esac
  shift
done
((${#dsns[@]})) || usage "no --pooler given"
for d in "${dsns[@]}"; do
  pgs_no_password "$d" || usage "the pooler's conninfo holds a password: $PGS_PASSWORD_HINT"
done
for v in "$deadline" "$pause_limit" "$switch_limit"; do
  [[ $v =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage "durations are seconds (e.g. 5 or 0.5), not '$v'"
done
hp_ok() { [[ $1 =~ ^[^:]+:[0-9]+$ || $1 =~ ^\[.*\]:[0-9]+$ ]]; }
case $cmd in
  check) hp_ok "$source" || usage "check needs --source HOST:PORT (the primary the entries point at)" ;;
  point | stage | swap) { hp_ok "$from" && hp_ok "$to"; } || usage "$cmd needs --from HOST:PORT and --to HOST:PORT" ;;
  probe) hp_ok "$expect" || usage "probe needs --expect HOST:PORT" ;;
esac

t0=$(pgs_now_ms)
# admin I SQL: run SQL on the console of pooler I (simple query protocol, as it needs),
# unaligned, tab-separated, with the header line (columns differ between versions).
admin() {
  PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-5} "$PG_BIN/psql" -XAq -F $'\t' -P footer=off -v ON_ERROR_STOP=1 \
    -d "${dsns[$1]}" -c "$2"
}
# column NAME...: from a header-first table on stdin, the named columns, tab-separated.
column() {
  awk -F '\t' -v want="$*" 'NR == 1 { n = split(want, w, " "); for (i = 1; i <= NF; i++) ix[$i] = i; next }
    { line = ""; for (k = 1; k <= n; k++) line = line (k > 1 ? "\t" : "") (w[k] in ix ? $(ix[w[k]]) : ""); print line }'
}
# described I: pooler I for messages (its host and port; the conninfo holds no password).
described() {
  local d=${dsns[$1]} h p
  h=$(grep -oE '(^| )host=[^ ]+' <<<"$d" | head -n 1 | sed 's/.*host=//') || true
  p=$(grep -oE '(^| )port=[^ ]+' <<<"$d" | head -n 1 | sed 's/.*port=//') || true
  printf '%s:%s' "${h:-local}" "${p:-6432}"
}
# entries I HOST PORT: the names of pooler I's databases that connect to HOST:PORT.
entries() {
  admin "$1" "SHOW DATABASES" | column name host port | awk -F '\t' -v h="$2" -v p="$3" '$2 == h && $3 == p { print $1 }'
}
host_of() { local h=${1%:*}; h=${h#[}; printf '%s' "${h%]}"; }
port_of() { printf '%s' "${1##*:}"; }
step() { # step I NAME OK [FIELDS...]
  local i=$1 name=$2 ok=$3
  shift 3
  pgs_json pooler_step pooler="$(described "$i")" step="$name" ok:="$ok" "$@"
}
fail_code=0 failures=()
refuse() { # refuse CODE MESSAGE: record a failure (the first code wins), go on checking
  ((fail_code)) || fail_code=$1
  failures+=("$2")
  pgs_log "$2"
}
finish() {
  if ((fail_code)); then
    pgs_json summary success:=false exit_code:="$fail_code" command="$cmd" poolers:=${#dsns[@]} \
      message="${failures[0]}" elapsed_ms:=$(($(pgs_now_ms) - t0))
    exit "$fail_code"
  fi
  pgs_json summary success:=true exit_code:=0 command="$cmd" poolers:=${#dsns[@]} elapsed_ms:=$(($(pgs_now_ms) - t0))
  exit 0
}
resume_one() {
  local i=$1 out
  if out=$(admin "$i" "RESUME" 2>&1) || [[ $out == *"not paused"* ]]; then
    step "$i" resume true
  else
    refuse "$EX_UNAVAILABLE" "pooler $(described "$i"): RESUME failed: ${out//$'\n'/ } (its clients wait until query_wait_timeout; RESUME it by hand)"
    step "$i" resume false message="${out//$'\n'/ }"
  fi
}
resume_all() {
  local i
  for i in "${!dsns[@]}"; do resume_one "$i"; done
}
# point_one I: pooler I's entries at --from rewritten to --to, RELOAD, SHOW DATABASES checked.
point_one() {
  local i=$1 who s conffile changed out left
  local fh_ fp_ th_ tp_
  fh_=$(host_of "$from") fp_=$(port_of "$from") th_=$(host_of "$to") tp_=$(port_of "$to")
  who=$(described "$i")
  s=$(pgs_now_ms)
  if ! conffile=$(conffile_of "$i"); then
    refuse "$EX_UNAVAILABLE" "pooler $who: cannot read its configuration file's name (SHOW CONFIG)"
    return 0
  fi
  if ! changed=$(pgs_on_pg "${specs[$i]}" sh -c "$PGS_POOLER_ENTRIES_SH" pgshift-pooler-entries "$conffile" "$fh_" "$fp_" "$th_" "$tp_" 2>&1); then
    refuse "$EX_IOERR" "pooler $who: cannot rewrite $conffile on host ${specs[$i]}: ${changed//$'\n'/ }"
    return 0
  fi
  # RELOAD and SHOW DATABASES in one session (each psql costs a connection).
  if out=$(PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -XAq -F $'\t' -P footer=off -v ON_ERROR_STOP=1 -d "${dsns[$i]}" \
    -c RELOAD -c "SHOW DATABASES" 2>&1); then
    left=$(column name host port <<<"$out" | awk -F '\t' -v h="$fh_" -v p="$fp_" '$2 == h && $3 == p { print $1 }' | paste -sd, -)
  else
    refuse "$EX_UNAVAILABLE" "pooler $who: RELOAD failed: ${out//$'\n'/ }"
    left="?"
  fi
  [[ -z $left ]] || refuse "$EX_SOFTWARE" "pooler $who: after RELOAD, entries still connect to $from: $left"
  step "$i" point "$([[ -z $left ]] && echo true || echo false)" from="$from" to="$to" \
    entries:="$(cut -f 2 <<<"$changed" | awk '{ s += $1 } END { print s + 0 }')" \
    files:="$(cut -f 1 <<<"$changed" | jq -Rsc 'split("\n") | map(select(. != ""))')" ms:=$(($(pgs_now_ms) - s))
}
# conffile_of I: pooler I's configuration file (--conffile, else SHOW CONFIG's).
conffile_of() {
  local f=${conffiles[$1]:-}
  [[ -n $f ]] || f=$(admin "$1" "SHOW CONFIG" | column key value | awk -F '\t' '$1 == "conffile" { print $2 }') || return 1
  [[ -n $f ]] && printf '%s' "$f"
}


case $cmd in
  check)
    sh_=$(host_of "$source") sp_=$(port_of "$source")
    for i in "${!dsns[@]}"; do
      who=$(described "$i")
      if ! version=$(admin "$i" "SHOW VERSION" 2>&1); then
        refuse "$EX_UNAVAILABLE" "pooler $who: cannot reach its admin console: ${version//$'\n'/ } (a --pooler conninfo names the console: dbname=pgbouncer and a user in admin_users)"
        continue
      fi
      version=$(tail -n 1 <<<"$version")
      conf=$(admin "$i" "SHOW CONFIG" | column key value)
      get() { awk -F '\t' -v k="$1" '$1 == k { print $2 }' <<<"$conf"; }
      pool_mode=$(get pool_mode) retry=$(get server_login_retry) qwt=$(get query_wait_timeout) conffile=$(get conffile)
      dbs=$(admin "$i" "SHOW DATABASES" | column name host port pool_mode)
      names=$(awk -F '\t' -v h="$sh_" -v p="$sp_" '$2 == h && $3 == p { print $1 }' <<<"$dbs")
      if [[ -z $names ]]; then
        listed=$(awk -F '\t' '$1 != "pgbouncer" { printf "%s%s=%s:%s", sep, $1, $2, $3; sep = ", " }' <<<"$dbs")
        refuse "$EX_DATAERR" "pooler $who has no [databases] entry that connects to the source $source (it lists: ${listed:-none}): point its entries at $source, the address the target is reached by too"
      fi
      while IFS=$'\t' read -r name _ _ mode; do
        [[ -n $name ]] || continue
        grep -qxF -- "$name" <<<"$names" || continue
        [[ ${mode:-$pool_mode} != session ]] ||
          refuse "$EX_DATAERR" "pooler $who: database $name uses session pooling: PAUSE waits for every session to end and each connected client gets an error; set pool_mode=transaction for it (or migrate without --pooler)"
      done <<<"$dbs"
      awk -v r="${retry:-15}" 'BEGIN { exit !(r + 0 > 1) }' &&
        refuse "$EX_DATAERR" "pooler $who: server_login_retry is ${retry}s: a login that fails during the switch stalls every client that long; set server_login_retry = 0.1 in $conffile and RELOAD"
      awk -v q="${qwt:-120}" -v l="$(awk -v a="$pause_limit" -v b="$switch_limit" 'BEGIN { print a + b }')" \
        'BEGIN { exit !(q + 0 > 0 && q + 0 <= l + 0) }' &&
        refuse "$EX_DATAERR" "pooler $who: query_wait_timeout is ${qwt}s, not longer than the pause limit plus the switch limit (${pause_limit}s + ${switch_limit}s): paused clients would be cut off; raise it in $conffile"
      found=""
      if [[ -n $names && -n $conffile ]]; then
        if ! found=$(pgs_on_pg "${specs[$i]}" sh -c "$PGS_POOLER_ENTRIES_SH" pgshift-pooler-entries "$conffile" "$sh_" "$sp_" "$sh_" "$sp_" check 2>&1); then
          refuse "$EX_UNAVAILABLE" "pooler $who: cannot read its configuration $conffile on host ${specs[$i]} (${found//$'\n'/ }): give --pooler-host where the PgBouncer runs"
          found=""
        else
          while IFS= read -r name; do
            cut -f 3 <<<"$found" | tr ',' '\n' | grep -qxF -- "$name" ||
              refuse "$EX_DATAERR" "pooler $who: database $name is not a [databases] line of $conffile or a file it includes (pgshift rewrites those lines): write it there"
          done <<<"$names"
        fi
      fi
      if [[ -n $target ]]; then
        th_=$(host_of "$target") tp_=$(port_of "$target")
        reach=$(pgs_on "${specs[$i]}" "$PG_BIN/pg_isready" -h "$th_" -p "$tp_" -t 3 2>&1) ||
          refuse "$EX_UNAVAILABLE" "pooler $who: its host ${specs[$i]} cannot reach the new primary $target (${reach//$'\n'/ })"
      fi
      pgs_json pooler pooler="$who" host="${specs[$i]}" version="$version" pool_mode="$pool_mode" \
        server_login_retry="$retry" query_wait_timeout="$qwt" conffile="$conffile" \
        entries:="$(jq -Rsc 'split("\n") | map(select(. != ""))' <<<"$names")"
    done
    finish
    ;;
  pause)
    dir=$(mktemp -d /tmp/pgshift-pause.XXXXXX)
    for i in "${!dsns[@]}"; do
      (
        s=$(pgs_now_ms)
        if out=$(timeout -k 1 "$deadline" "$PG_BIN/psql" -XAtq -v ON_ERROR_STOP=1 -d "${dsns[$i]}" -c PAUSE 2>&1) ||
          [[ $out == *"already suspended/paused"* ]]; then
          echo "ok $(($(pgs_now_ms) - s))" >"$dir/$i"
        else
          echo "failed $(($(pgs_now_ms) - s)) ${out//$'\n'/ }" >"$dir/$i"
        fi
      ) &
    done
    wait
    bad=0
    for i in "${!dsns[@]}"; do
      read -r res ms msg <"$dir/$i"
      if [[ $res == ok ]]; then
        step "$i" pause true ms:="$ms"
      else
        bad=1
        step "$i" pause false ms:="$ms" message="${msg:-no answer within ${deadline}s}"
      fi
    done
    rm -rf "$dir"
    if ((bad)); then
      resume_all
      refuse "$EX_TEMPFAIL" "a pooler did not pause within ${deadline}s (a transaction that stays open, e.g. idle in transaction): every pooler resumed, nothing switched; set idle_transaction_timeout, or run again"
    fi
    finish
    ;;
  point)
    for i in "${!dsns[@]}"; do point_one "$i"; done
    ((then_resume)) && resume_all
    finish
    ;;
  stage)
    fh_=$(host_of "$from") fp_=$(port_of "$from") th_=$(host_of "$to") tp_=$(port_of "$to")
    for i in "${!dsns[@]}"; do
      who=$(described "$i")
      conffile=$(conffile_of "$i") || { refuse "$EX_UNAVAILABLE" "pooler $who: cannot read its configuration file's name (SHOW CONFIG)"; continue; }
      if ! staged=$(pgs_on_pg "${specs[$i]}" sh -c "$PGS_POOLER_ENTRIES_SH" pgshift-pooler-entries "$conffile" "$fh_" "$fp_" "$th_" "$tp_" stage 2>&1); then
        refuse "$EX_IOERR" "pooler $who: cannot stage the new $conffile on host ${specs[$i]}: ${staged//$'\n'/ }"
        continue
      fi
      step "$i" stage true conffile="$conffile" from="$from" to="$to" \
        entries:="$(cut -f 2 <<<"$staged" | awk '{ s += $1 } END { print s + 0 }')" \
        files:="$(cut -f 1 <<<"$staged" | jq -Rsc 'split("\n") | map(select(. != ""))')"
    done
    finish
    ;;
  swap)
    for i in "${!dsns[@]}"; do
      who=$(described "$i")
      s=$(pgs_now_ms)
      conffile=$(conffile_of "$i") || conffile=""
      rc=0
      [[ -n $conffile ]] && { pgs_on_pg "${specs[$i]}" sh -c "$PGS_POOLER_SWAP_SH" pgshift-pooler-swap "$conffile" 2>/dev/null || rc=$?; }
      if [[ -n $conffile ]] && ((rc == 0)); then
        resume=(-c RESUME)
        ((no_resume)) && resume=()
        if out=$(PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -XAq -v ON_ERROR_STOP=1 -d "${dsns[$i]}" -c RELOAD "${resume[@]}" 2>&1) ||
          [[ $out == *"not paused"* ]]; then
          step "$i" point true staged:=true from="$from" to="$to" ms:=$(($(pgs_now_ms) - s))
          ((no_resume)) || step "$i" resume true
          continue
        fi
        pgs_log "pooler $who: RELOAD/RESUME after the swap failed (${out//$'\n'/ }): the full point, then RESUME"
      elif ((rc == 4)); then
        pgs_log "pooler $who: $conffile changed since it was staged: the full point"
      fi
      point_one "$i"
      ((no_resume)) || resume_one "$i"
    done
    finish
    ;;
  resume)
    resume_all
    finish
    ;;
  probe)
    eh_=$(host_of "$expect") ep_=$(port_of "$expect")
    for i in "${!dsns[@]}"; do
      who=$(described "$i")
      name=$(entries "$i" "$eh_" "$ep_" 2>/dev/null | head -n 1) || name=""
      if [[ -z $name ]]; then
        refuse "$EX_SOFTWARE" "pooler $who: no entry connects to $expect"
        continue
      fi
      q=$(pgs_conninfo_quote "$name")
      if ans=$(PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -XAtq -d "${dsns[$i]} dbname=$q" \
        -c "SELECT pg_is_in_recovery(), current_setting('port')" 2>&1) && [[ $ans == "f|$ep_" ]]; then
        step "$i" probe true database="$name" server="$expect"
      else
        refuse "$EX_UNAVAILABLE" "pooler $who: a query through it into $name did not reach a writable $expect: ${ans//$'\n'/ }"
        step "$i" probe false database="$name" message="${ans//$'\n'/ }"
      fi
    done
    finish
    ;;
esac
