#!/usr/bin/env bash
# shellcheck disable=SC2016  # remote snippets are single-quoted: they expand on their host
# migrate.sh: move a live PostgreSQL cluster to another host with a sub-second switchover,
# no lost acknowledged write, and a verification that both sides hold the same data.
#
#   migrate.sh --hosts-env FILE [--reverse] [options]
#   migrate.sh --source DSN (--source-pgdata DIR | --source-cluster V/NAME) [--source-host SPEC]
#              --target-addr ADDR (--target-port PORT --target-pgdata DIR | --target-cluster V/NAME)
#              [--target-host SPEC] --repl-user NAME --repl-password-file FILE
#              [--tls-ca FILE] [options]
#
# A cluster is named by its data directory, or a Debian/Ubuntu postgresql-common cluster by
# VERSION/NAME (pg_lsclusters); each host's layout (debian, rhel, plain: see lib.sh) decides
# how its cluster starts (systemd unit, pg_ctlcluster, pg_ctl) and where its log is. The
# target keeps its own configuration files and port; the settings that must match the
# source's (max_connections and the other hot-standby limits, wal_level, locale and time
# settings, shared_preload_libraries, ...) are carried into its postgresql.auto.conf, one
# `setting` record each.
#
# TLS: every connection between the hosts (base copy, streaming, rejoin, rewind) and from
# here uses sslmode=verify-full against the CA setup-host.sh --tls-ca signed the hosts'
# certificates with (the CA certificate on each host beside its data directory, here
# --tls-ca FILE), unless --tls require or --tls off says otherwise. The replication password
# is in no argument and no conninfo: it goes on stdin into a 0600 passfile on each host
# (passfile=).
#
# Phases (one `phase` record each on stdout, then `summary`; also written to --report):
#   1 preflight   versions, system identifiers, settings, disk space, host reachability, and
#                 the replication login from the target's host to the source (and from the
#                 source's host to the target when it runs); nothing is changed
#   2 base_copy   pg_basebackup -X stream -R with a replication slot, run on the target host
#                 (skipped when the target already is a standby of the source); a copy cut
#                 short is resumed by the next run with pgdata-sync (see --fresh-copy)
#   3 catch_up    the target runs as a standby: streaming (--mode stream) or restoring from
#                 the wal-ship archive only (--mode archive)
#   4 wait        until the replay lag is under --max-lag (and, with --when advised, until
#                 the window window-advisor recommends)
#   5 switchover  pg-switch: fence and stop the source in one call on its host, prove a clean
#                 shutdown, prove the target replayed past the source's final checkpoint on
#                 its timeline, promote, prove the target takes a write (see
#                 tools/pg-switch); each step journaled before it starts
#   6 rejoin      start the old source as a streaming standby of the new primary (with
#                 pg_rewind only if its history forked, e.g. after a failed switch by hand)
#   7 verify      compare the new primary and the old source (now its standby), every
#                 database of the cluster: pg-checksum --wait-replay --recheck 3 over every
#                 table is the verdict (one per database, and one for the cluster);
#                 rowcount-diff's counts are reported too
#   8 report      `summary`: each phase's duration, the downtime, bytes moved, the verdict
#
# Interruptions. Every phase and every switchover step is appended to a journal (JSON lines,
# fsynced before the step; --journal, default under $PGSHIFT_STATE_DIR, named in the
# summary). Run the same command again after any interruption (kill -9, SIGTERM, the control
# host rebooting, ssh dropping): it reads the journal, looks at both hosts, finishes the
# switchover when its proofs hold or rolls back to the source, then goes on (rejoin, verify).
# A failure before the switchover keeps the running standby and its slot (run again to go
# on; --cleanup removes them). --abort rolls back whatever is under way when that is still
# safe (after the promotion it is not: move back with --reverse). SIGTERM/SIGINT/SIGHUP stop
# the run at the next safe point. Exit 126 means the state could not be told: nothing more
# was touched, and the summary lists the commands to run.
#
# Options:
#   --hosts-env FILE       variables written by hosts-local.sh (SOURCE_*, TARGET_*, REPL_*)
#   --reverse              swap source and target from --hosts-env (migrate back)
#   --mode stream|archive|logical
#                          how the target catches up (default stream); logical: native
#                          logical replication between any two servers, across major versions
#                          and to or from managed services (scripts/migrate-logical.sh, its own
#                          options: migrate.sh --mode logical --help)
#   --archive DEST         wal-ship archive for --mode archive (default: ARCHIVE from hosts env)
#   --when now|advised     switch now (default), or in the window window-advisor recommends
#   --history FILE         metrics history for --when advised
#   --window DURATION      window length for --when advised (default 30m)
#   --max-wait SECONDS     longest wait for an advised window (default 3600)
#   --max-lag BYTES        replay lag to reach before switching (default 16777216; in archive
#                          mode, WAL written since the last segment the target replayed)
#   --catchup-timeout S    longest wait for the target to stream and catch up (default 3600)
#                          (archive mode stops sooner, with exit 69, when the source's
#                          archive_command fails three times in a row, or when the target
#                          replays nothing for PGSHIFT_RESTORE_STALL s, default 60, while the
#                          archive holds the segment it waits for)
#   --max-rate RATE        throttle the base copy (pg_basebackup --max-rate, e.g. 50M): the
#                          bytes on the wire, with compression the compressed ones
#   --compress auto|none|zstd[:N]|lz4[:N]
#                          compress the base copy on the source (pg_basebackup
#                          --compress=server-METHOD), decompressed on the target (zstd or lz4
#                          there). auto (default): measure the link from the target (8 MB read
#                          from the source) and the data's compressibility and zstd's speed on
#                          the source (a sample of its largest files), and compress when that
#                          is predicted at least 10 % faster; a `compression` record says what
#                          was measured and chosen. The catch-up WAL streams uncompressed.
#   --fresh-copy           a base copy an earlier run left cut short (a failure, a signal, this
#                          host dying) is removed and made again from nothing. Default: this
#                          run resumes it: pgdata-sync (on both hosts, in --bin) sends only the
#                          8 KiB pages that differ from the partial copy, between
#                          pg_backup_start() and pg_backup_stop() on the source (zstd unless
#                          --compress none;
#                          --max-rate holds); a `copy_resumed` record says what was reused and
#                          sent (not with tablespaces: then it starts again)
#   --converge-window S    give up waiting (exit 75) when the replay lag has not shrunk for S
#                          seconds: the source writes WAL faster than the target receives and
#                          replays it (default 120); `lag` records report the rates and an ETA
#   --egress-price PER_GB  price of a GB (10^9 bytes) leaving the source: the summary adds
#                          the estimate for the bytes this run moved over the network
#   --switch-timeout S     limit for each switchover step (default 10)
#   --target-socket-dir D  unix_socket_directories on the target (default: next to its pgdata)
#   --journal FILE         the journal (default: one file per pair of hosts under
#                          $PGSHIFT_STATE_DIR, default ~/.local/state/pgshift)
#   --abort                roll back what an interrupted run left under way, and stop:
#                          before the switchover, the copy it made is removed (a target that
#                          was a standby before it, as on --reverse, is kept); poolers it
#                          left paused resume at the primary
#   --dry-run              run the preflight checks and print the plan (a `plan` record, and
#                          in words on stderr); change nothing: no journal record, no slot,
#                          no file on either host. Exit 0 when the migration could go ahead,
#                          the preflight's exit code otherwise
#   --yes                  switch over without asking. On a terminal, migrate.sh asks "stop
#                          SOURCE and switch to TARGET? [y/N]" once the target has caught up
#                          (it keeps streaming while the question waits); any answer but y
#                          or yes stops the run there (exit 75, the target kept as a standby:
#                          run again to go on). Without a terminal on stdin, --yes is
#                          required (exit 2 before anything is done)
#   --cleanup              on a failure before the switchover, remove the target and its slot
#   --hook NAME=CMD        run CMD (bash -c) at a step: before_base_copy, before_wait, before_switchover,
#                          before_rejoin, before_verify, and pg-switch's before_stop,
#                          during_stop, after_stop, before_promote, during_promote,
#                          after_promote; a failing hook stops the run (PGSHIFT_MIGRATE_PID
#                          names this script's process)
#   --databases A,B        verify only these databases (default: every database that accepts
#                          connections; the verdict is `equal` only when all of them are)
#   --no-verify            skip step 7
#   --no-rejoin            leave the old source stopped (fenced) instead of step 6; no step 7
#   --report FILE          also write the JSON lines there
#   --bin DIR              where the pgshift tools are (default: target/release of this checkout)
#   --tls verify-full|require|off
#                          TLS between the hosts and for the control connections (default
#                          verify-full; an sslmode in --source wins for the control connections)
#   --tls-ca FILE          the CA certificate for the control connections (default: TLS_CA
#                          from --hosts-env)
#   --pooler DSN           a PgBouncer in front of the source (repeatable; default POOLER_DSN
#                          from --hosts-env): its admin console (dbname=pgbouncer, an admin
#                          user, no password in it: a passfile). Its clients see a pause, no
#                          error: preflight checks it (scripts/pooler.sh check), the switch
#                          PAUSEs every pooler before the source stops, points their entries at
#                          the target once it is promoted, RELOADs and RESUMEs; every exit
#                          path resumes them (pointing at whichever host is the primary),
#                          and a run after one that died with them paused resumes them first
#   --pooler-host SPEC     where the last --pooler's configuration file is (default local)
#   --pause-limit S        longest wait for every pooler's PAUSE (default 5)
#   --no-pooler            ignore POOLER_DSN from --hosts-env (clients do not go through it)
#
# Host SPECs: local (default), ssh://[user@]host[:port], netns://NAME (see lib.sh). The
# control connections (--source DSN and the target built from it) need a superuser; the
# target host reaches the source as the replication role.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PGS_NAME=migrate
# The closing line is this script's own (the downtime, the verdict).
PGS_OWN_CLOSING=1
here=$(cd "$(dirname "$0")" && pwd)
# The logical mode has its own runbook (and its own --help).
for ((i = 1; i <= $#; i++)); do
  if [[ ${!i} == --mode ]] && ((i < $#)); then
    j=$((i + 1))
    [[ ${!j} != logical ]] || exec "$here/migrate-logical.sh" "$@"
  fi
done

usage() { pgs_usage "$1"; }

# --- Arguments ---------------------------------------------------------------------------
hosts_env="" reverse=0 mode=stream archive="" when=now history="" window=30m max_wait=3600
restore_stall=${PGSHIFT_RESTORE_STALL:-60} max_lag=16777216 catchup_timeout=3600 max_rate="" switch_timeout=10 socket_dir="" verify=1
compress=auto converge_window=120 egress_price="" yes=0 dry_run=0 fresh_copy=0
rejoin=1 report="" bin="" journal="" abort=0 cleanup=0 databases="" tls=verify-full tls_ca=""
SOURCE_DSN="" SOURCE_PGDATA="" SOURCE_CLUSTER="" SOURCE_SPEC=local TARGET_ADDR="" TARGET_PORT=""
TARGET_PGDATA="" TARGET_CLUSTER="" TARGET_SPEC=local REPL_USER="" REPL_PASSWORD_FILE="" ARCHIVE=""
TLS_CA="" POOLER_DSN="" POOLER_SPEC=local
declare -A hooks=()
poolers=() pause_limit=5 no_pooler=0
switch_hooks=(before_stop during_stop after_stop before_promote during_promote after_promote)
! pgs_wants_help "$@" || pgs_help
pgs_preload_hosts_env "$@"
while (($#)); do
  case $1 in
    --hosts-env) shift ;;
    --reverse) reverse=1 ;;
    --source) pgs_val "$@"; SOURCE_DSN=$2; shift ;;
    --source-pgdata) pgs_val "$@"; SOURCE_PGDATA=$2 SOURCE_CLUSTER=""; shift ;;
    --source-host) pgs_val "$@"; SOURCE_SPEC=$2; shift ;;
    --source-cluster) pgs_val "$@"; SOURCE_CLUSTER=$2 SOURCE_PGDATA=""; shift ;;
    --target-cluster) pgs_val "$@"; TARGET_CLUSTER=$2 TARGET_PGDATA=""; shift ;;
    --tls) pgs_val "$@"; tls=$2; shift ;;
    --tls-ca) pgs_val "$@"; tls_ca=$2; shift ;;
    --pooler) pgs_val "$@"; poolers+=(--pooler "$2" --host local); shift ;;
    --pooler-host)
      pgs_val "$@"
      ((${#poolers[@]})) || usage "--pooler-host comes after the --pooler it belongs to"
      poolers[-1]=$2; shift ;;
    --pause-limit) pgs_val "$@"; pause_limit=$2; shift ;;
    --no-pooler) poolers=() POOLER_DSN="" no_pooler=1 ;;
    --target-addr) pgs_val "$@"; TARGET_ADDR=$2; shift ;;
    --target-port) pgs_val "$@"; TARGET_PORT=$2; shift ;;
    --target-pgdata) pgs_val "$@"; TARGET_PGDATA=$2 TARGET_CLUSTER=""; shift ;;
    --target-host) pgs_val "$@"; TARGET_SPEC=$2; shift ;;
    --repl-user) pgs_val "$@"; REPL_USER=$2; shift ;;
    --repl-password-file) pgs_val "$@"; REPL_PASSWORD_FILE=$2; shift ;;
    --mode) pgs_val "$@"; mode=$2; shift ;;
    --archive) pgs_val "$@"; archive=$2; shift ;;
    --when) pgs_val "$@"; when=$2; shift ;;
    --history) pgs_val "$@"; history=$2; shift ;;
    --window) pgs_val "$@"; window=$2; shift ;;
    --max-wait) pgs_val "$@"; max_wait=$2; shift ;;
    --max-lag) pgs_val "$@"; max_lag=$2; shift ;;
    --catchup-timeout) pgs_val "$@"; catchup_timeout=$2; shift ;;
    --max-rate) pgs_val "$@"; max_rate=$2; shift ;;
    --compress) pgs_val "$@"; compress=$2; shift ;;
    --converge-window) pgs_val "$@"; converge_window=$2; shift ;;
    --egress-price) pgs_val "$@"; egress_price=$2; shift ;;
    --switch-timeout) pgs_val "$@"; switch_timeout=$2; shift ;;
    --target-socket-dir) pgs_val "$@"; socket_dir=$2; shift ;;
    --journal) pgs_val "$@"; journal=$2; shift ;;
    --abort) abort=1 ;;
    --dry-run) dry_run=1 ;;
    --yes) yes=1 ;;
    --cleanup) cleanup=1 ;;
    --fresh-copy) fresh_copy=1 ;;
    --hook)
      [[ ${2:-} == *=* ]] || usage "--hook takes NAME=COMMAND"
      hooks[${2%%=*}]=${2#*=}; shift ;;
    --no-verify) verify=0 ;;
    --databases) pgs_val "$@"; databases=$2; shift ;;
    --no-rejoin) rejoin=0 verify=0 ;;
    --report) pgs_val "$@"; report=$2; shift ;;
    --bin) pgs_val "$@"; bin=$2; shift ;;
    -h | --help) pgs_help ;;
    *) usage "unknown option '$1'" ;;
  esac
  shift
done
bin=${bin:-$(cd "$here/.." && pwd)/target/release}
# Absolute: it ends up in restore_command and archive_command, run from the data directory.
[[ -d $bin ]] && bin=$(cd "$bin" && pwd)
archive=${archive:-$ARCHIVE}
[[ $mode == stream || $mode == archive ]] || usage "--mode must be stream, archive or logical"
[[ $when == now || $when == advised ]] || usage "--when must be now or advised"
[[ $tls == verify-full || $tls == require || $tls == off ]] || usage "--tls must be verify-full, require or off"
tls_ca=${tls_ca:-$TLS_CA}
if ((${#poolers[@]} == 0 && !no_pooler)) && [[ -n $POOLER_DSN ]]; then poolers=(--pooler "$POOLER_DSN" --host "$POOLER_SPEC"); fi
[[ $pause_limit =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage "--pause-limit takes seconds (e.g. 5 or 0.5)"
pgs_no_password "${SOURCE_DSN:-}" || usage "the source conninfo holds a password: $PGS_PASSWORD_HINT"
[[ $compress =~ ^(auto|none|zstd(:([1-9]|1[0-9]|2[0-2]))?|lz4(:([1-9]|1[0-2]))?)$ ]] ||
  usage "--compress takes auto, none, zstd[:1-22] or lz4[:1-12], not '$compress'"
[[ -z $egress_price || $egress_price =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage "--egress-price takes a price per GB (e.g. 0.09)"
for v in max_lag switch_timeout catchup_timeout max_wait converge_window; do
  [[ ${!v} =~ ^[0-9]+$ ]] || usage "--${v//_/-} takes a whole number"
done
for h in "${!hooks[@]}"; do
  case " before_base_copy before_wait before_switchover before_rejoin before_verify ${switch_hooks[*]} " in
    *" $h "*) ;;
    *) usage "unknown hook '$h'" ;;
  esac
done

# The source connection string without host and port: a conninfo's later keywords win, so
# "BASE host=H port=P" reaches any host with the same user, database and TLS settings.
[[ -n $SOURCE_DSN ]] || usage "missing --source DSN (or --hosts-env FILE)"
SOURCE_DSN=$(pgs_url_conninfo "$SOURCE_DSN") || usage "--source names one server: give one host in it"
source_host_addr=$(sed -n 's/.*\bhost=\([^ ]*\).*/\1/p' <<<"$SOURCE_DSN")
source_port=$(sed -n 's/.*\bport=\([0-9]*\).*/\1/p' <<<"$SOURCE_DSN")
source_port=${source_port:-5432}
if ((reverse)); then
  [[ -n $hosts_env ]] || usage "--reverse needs --hosts-env"
  # The previous target is the source now, and the previous source (a standby of it after a
  # migration) is the target.
  old_addr=$source_host_addr old_port=$source_port old_pgdata=$SOURCE_PGDATA old_spec=$SOURCE_SPEC
  old_cluster=$SOURCE_CLUSTER
  source_host_addr=$TARGET_ADDR source_port=$TARGET_PORT SOURCE_PGDATA=$TARGET_PGDATA SOURCE_SPEC=$TARGET_SPEC
  SOURCE_CLUSTER=$TARGET_CLUSTER
  TARGET_ADDR=$old_addr TARGET_PORT=$old_port TARGET_PGDATA=$old_pgdata TARGET_SPEC=$old_spec
  TARGET_CLUSTER=$old_cluster
fi
[[ -n $source_host_addr ]] || usage "--source needs host= (the source's address, as the target's host reaches it)"
[[ -n $SOURCE_PGDATA || -n $SOURCE_CLUSTER ]] || usage "name the source's cluster: --source-pgdata DIR or --source-cluster VERSION/NAME"
[[ -n $TARGET_PGDATA || -n $TARGET_CLUSTER ]] || usage "name the target's cluster: --target-pgdata DIR or --target-cluster VERSION/NAME"
for v in TARGET_ADDR REPL_USER REPL_PASSWORD_FILE; do
  o=${v,,}
  [[ -n ${!v} ]] || usage "missing --${o//_/-} (give it as an option or through --hosts-env)"
done
[[ -n $TARGET_PORT || -n $TARGET_CLUSTER ]] || usage "missing --target-port (or name a packaged cluster with --target-cluster, whose port is in its configuration)"
((!(dry_run && abort))) || usage "--dry-run changes nothing, and --abort does: give one of them"
# The question before the switchover needs someone to answer it.
if ((!yes && !dry_run && !abort)) && [[ ! -t 0 ]]; then
  usage "not a terminal: pass --yes to switch over without asking"
fi
# Each cluster's facts from its own host: its layout, data directory, port, log, and where
# pgshift keeps its files for it (certificates, passfile). A host that cannot be reached
# keeps what was given; preflight then says so.
declare -A src_info=() tgt_info=()
cluster_facts() { # cluster_facts SPEC WHAT ARRAY DEFAULT_PGDATA
  local -n _f=$3
  if [[ $2 == /* ]] && ! pgs_host_reachable "$1"; then
    _f=([layout]=unknown [pgdata]=$2 [log]=$(dirname "$2")/server.log [port]="" [running]=unknown)
    _f[aux]=$(dirname "$2")/pgshift-$(basename "$2")
  else
    pgs_cluster_info "$1" "$2" "$3"
  fi
}
cluster_facts "$SOURCE_SPEC" "${SOURCE_CLUSTER:-$SOURCE_PGDATA}" src_info
cluster_facts "$TARGET_SPEC" "${TARGET_CLUSTER:-$TARGET_PGDATA}" tgt_info
SOURCE_PGDATA=${src_info[pgdata]} TARGET_PGDATA=${tgt_info[pgdata]}
if [[ ${tgt_info[layout]} == debian ]]; then
  [[ -z $TARGET_PORT || $TARGET_PORT == "${tgt_info[port]}" ]] ||
    usage "--target-port $TARGET_PORT, but the target cluster $TARGET_CLUSTER has port ${tgt_info[port]} in ${tgt_info[conf_dir]}/postgresql.conf (it keeps its own)"
  TARGET_PORT=${tgt_info[port]}
fi
src_aux=${src_info[aux]} tgt_aux=${tgt_info[aux]}
# TLS keywords for connections made on each host (to the other) and from here.
src_tls=$(pgs_tls_conninfo "$tls" "$src_aux") tgt_tls=$(pgs_tls_conninfo "$tls" "$tgt_aux")
ctl_tls=""
if [[ ! $SOURCE_DSN =~ (^|[[:space:]])sslmode= ]]; then
  case $tls in
    verify-full)
      [[ -n $tls_ca && -r $tls_ca ]] ||
        usage "sslmode=verify-full needs the CA certificate here: --tls-ca FILE (the ca.crt in the directory given to setup-host.sh --tls-ca), or --tls require"
      ctl_tls="sslmode=verify-full sslrootcert=$(pgs_conninfo_quote "$tls_ca")" ;;
    require) ctl_tls="sslmode=require" ;;
    off) ctl_tls="sslmode=disable" ;;
  esac
fi
[[ $tls == verify-full ]] || pgs_log "TLS between the hosts: $tls (chosen with --tls; certificates are not checked against a CA)"
[[ -r $REPL_PASSWORD_FILE ]] || usage "cannot read the replication password file '$REPL_PASSWORD_FILE'"
[[ $mode == stream || -n $archive ]] || usage "--mode archive needs --archive DEST (or ARCHIVE in --hosts-env)"
[[ -x $bin/pg-switch ]] || pgs_die "$EX_UNAVAILABLE" "$bin/pg-switch is missing (make release, or --bin DIR)"
socket_dir=${socket_dir:-$(dirname "$TARGET_PGDATA")}
# tls_hint MESSAGE: what to do when libpq's MESSAGE is a failed certificate check.
tls_hint() {
  case $1 in
    *"certificate verify failed"* | *"does not match host name"* | *"server certificate for"*)
      printf ' (the host presents a certificate that %s does not vouch for, or not for this address: re-run setup-host.sh --tls-ca DIR --tls-name ADDRESS on that host, or choose --tls require knowingly)' "${tls_ca:-the CA}" ;;
  esac
}
src_dsn="$SOURCE_DSN host=$source_host_addr port=$source_port${ctl_tls:+ $ctl_tls}"
tgt_dsn="$SOURCE_DSN host=$TARGET_ADDR port=$TARGET_PORT${ctl_tls:+ $ctl_tls}"
target_log=${tgt_info[log]}
source_log=${src_info[log]}
slot=pgshift_$(printf '%s' "$TARGET_ADDR:$TARGET_PORT" | cksum | cut -d' ' -f1)
src_id=$source_host_addr:$source_port tgt_id=$TARGET_ADDR:$TARGET_PORT
journal=${journal:-$(pgs_journal_path "$src_id" "$tgt_id")}
export PGSHIFT_MIGRATE_PID=$$

# --- Output ------------------------------------------------------------------------------
if [[ -n $report ]]; then
  : 2>/dev/null >"$report" || usage "cannot write --report '$report'"
fi
run_start=$(pgs_now_ms)
declare -A phase_ms=()
phase_order=()
phase=start

src_psql() { "$PG_BIN/psql" -XAtq -v ON_ERROR_STOP=1 -d "$src_dsn" "$@"; }
tgt_psql() { "$PG_BIN/psql" -XAtq -v ON_ERROR_STOP=1 -d "$tgt_dsn" "$@"; }
on_src() { pgs_on_pg "$SOURCE_SPEC" "$@"; }
on_tgt() { pgs_on_pg "$TARGET_SPEC" "$@"; }
# retry N CMD...: run CMD up to N times, 0.5 s apart (a polling loop rides out a transient
# error: a restarting pooler, a dropped connection); its last output and status stand.
retry() {
  local n=$1 i out rc
  shift
  for ((i = 1; ; i++)); do
    rc=0
    out=$("$@" 2>&1) || rc=$?
    if ((rc == 0 || i >= n)); then
      printf '%s\n' "$out"
      return "$rc"
    fi
    sleep 0.5
  done
}

# --- Failures and signals ----------------------------------------------------------------
# state: what a failure now must undo. preflight: nothing. copying: the partial copy and its
# slot. standby: nothing (the standby and its slot are progress), unless --cleanup.
# switching: pg-switch decided (its journal steps). switched: nothing (one primary: the
# target; the old source is fenced).
state=preflight stopped_by="" bg_pid="" watch_pid="" copy_stuck="" failing=0
fail() {
  local code=$1
  shift
  pgs_log "$*"
  # A failure while ending the run (its journal record cannot be written): said above, and
  # the run goes on ending. This run's records end its stream, not lib.sh's (PGS_ENDED).
  ((!failing)) || return 1
  failing=1 PGS_ENDED=1
  stop_watch
  pgs_emit error phase="$phase" exit_code:="$code" message="$*" || true
  trap - EXIT
  recover
  pgs_note failed phase="$phase" exit_code:="$code" state="$state" message="$*" || true
  pgs_emit summary success:=false exit_code:="$code" failed_phase="$phase" state="$state" message="$*" \
    journal="$journal" ${stopped_by:+stopped_by="$stopped_by"} elapsed_ms:=$(($(pgs_now_ms) - run_start))
  exit "$code"
}
# shellcheck disable=SC2317  # called by the EXIT trap
on_exit() {
  local rc=$?
  ((rc == 0)) && return 0
  trap - EXIT
  stop_watch
  if [[ -n ${PGS_ENDED:-} ]]; then
    # pgs_die said why and ended the stream.
    failing=1
    recover
    pgs_note failed phase="$phase" exit_code:="$rc" state="$state" message="exit $rc" || true
    exit "$rc"
  fi
  pgs_log "unexpected failure (exit $rc) in phase $phase"
  recover
  pgs_note failed phase="$phase" exit_code:="$EX_SOFTWARE" state="$state" message="unexpected failure (exit $rc)" || true
  pgs_emit summary success:=false exit_code:="$EX_SOFTWARE" failed_phase="$phase" state="$state" \
    message="unexpected failure (exit $rc)" journal="$journal" elapsed_ms:=$(($(pgs_now_ms) - run_start))
  exit "$EX_SOFTWARE"
}
# A signal stops the run at the next safe point. While pg-switch runs, it gets the signal too
# (it finishes or rolls back its step) and the switchover phase ends the run once it exits;
# a long step in the background (the base copy) is stopped; elsewhere the run stops now.
# shellcheck disable=SC2317  # called by the traps
on_signal() {
  stopped_by=$1
  pgs_log "got $1: stopping at the next safe point"
  if [[ $state == switching ]]; then
    [[ -z $bg_pid ]] || kill -s "${1#SIG}" "$bg_pid" 2>/dev/null || true
    return 0
  fi
  if [[ -n $bg_pid ]]; then
    # (Both fail once the job has ended: not an error here, under set -e.)
    kill -TERM -- "-$bg_pid" 2>/dev/null || true
    wait "$bg_pid" 2>/dev/null || true
  fi
  fail "$EX_TEMPFAIL" "interrupted by $1 in phase $phase; run the same command again to go on"
}
trap on_exit EXIT
trap 'on_signal SIGTERM' TERM
trap 'on_signal SIGINT' INT
trap 'on_signal SIGHUP' HUP

# in_background CMD...: run CMD (a function or a program; stdin is the caller's) as a job of
# its own process group and wait for it, so that a signal reaches the trap at once (bash
# defers traps until a foreground command ends) and can stop the whole group. Sets bg_out
# (its output) and returns its status.
in_background() {
  local f rc=0
  f=$(mktemp /tmp/pgshift-migrate.XXXXXX)
  set -m
  "$@" >"$f" 2>&1 &
  bg_pid=$!
  set +m
  while :; do
    wait "$bg_pid" && rc=0 || rc=$?
    ((rc > 128)) && kill -0 "$bg_pid" 2>/dev/null && continue
    break
  done
  bg_pid=""
  bg_out=$(<"$f")
  rm -f "$f"
  return "$rc"
}

target_in_recovery() { tgt_psql -c "SELECT pg_is_in_recovery()" 2>/dev/null; }
stop_target_now() { on_tgt "$PG_BIN/pg_ctl" -D "$TARGET_PGDATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true; }
drop_slot() {
  src_psql -c "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot' AND NOT active" >/dev/null 2>&1 || true
}
remove_target() {
  pgs_log "removing the target's data directory $TARGET_PGDATA and the source's slot $slot"
  stop_target_now
  on_tgt rm -rf "$TARGET_PGDATA" || true
  drop_slot
}

# stop_left_copy: a copy cut short may have left its pg_basebackup running on the target (its
# own process group outlived this script's, or ssh did not pass the signal on): its
# connections to the source go (it stops; --no-clean keeps what it wrote), and it is waited
# for (10 s at most: then 1), before the partial copy is resumed or removed, and when a run
# ends during its copy.
stop_left_copy() {
  local i out
  src_psql -c "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'pgshift_target'" >/dev/null 2>&1 || true
  for ((i = 0; i < 100; i++)); do
    out=$(src_psql -c "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pgshift_target'" 2>/dev/null) || out=0
    # shellcheck disable=SC2016  # expanded on the target
    ((out == 0)) && ! on_tgt sh -c 'pgrep -f "pg_basebackup -D $1|-C $1\$" >/dev/null 2>&1' x "$TARGET_PGDATA" && return 0
    sleep 0.1
  done
  return 1
}
left_copy_running() {
  fail "$EX_TEMPFAIL" "an earlier base copy into $TARGET_PGDATA still runs on the target (pg_basebackup): stop it, then run again"
}

# shellcheck disable=SC2317  # called by fail and on_exit
recover() {
  if [[ $pooler_state == armed ]]; then
    pooler_settle || pgs_log "a pooler could not be settled: $pooler_msg"
  fi
  case $state in
    copying)
      # A partial base copy stays for the next run to resume (pgdata-sync), without its slot
      # (which would hold the source's WAL meanwhile); with --cleanup it goes.
      stop_left_copy || pgs_log "the base copy may still run on the target: the next run stops it"
      if ((fresh_target && cleanup)) || ! on_tgt test -e "$TARGET_PGDATA/PG_VERSION"; then
        ((fresh_target)) && remove_target
      elif ((fresh_target)); then
        drop_slot
        pgs_log "the partial base copy in $TARGET_PGDATA stays: run the same command again to resume it (--fresh-copy: start it again; --abort: remove it)"
      fi
      ;;
    standby)
      if ((cleanup && fresh_target)); then
        remove_target
      else
        pgs_log "the target stays a standby of the source (slot $slot): run the same command again to go on, or with --abort to remove it"
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
  dsn="$SOURCE_DSN host=$addr port=$port${ctl_tls:+ $ctl_tls}"
  # TLS keywords for a connection made on this host (its own copy of the CA).
  local host_tls=$src_tls
  [[ $spec == "$TARGET_SPEC" && $pgdata == "$TARGET_PGDATA" ]] && host_tls=$tgt_tls
  rewound=false
  # Only what this start writes to the log counts (earlier attempts' lines are still there).
  new_log() { pgs_on_pg "$spec" tail -c +"$((offset + 1))" "$log" 2>/dev/null; }
  for attempt in 1 2; do
    offset=$(pgs_on_pg "$spec" stat -c %s "$log" 2>/dev/null || echo 0)
    if ! pgs_on_pg "$spec" test -f "$pgdata/postmaster.pid"; then
      # Not waiting for connections: a standby whose history forked may never accept them
      # (the loop below reads its log).
      pgs_pg_start "$spec" "$pgdata" "$log" nowait || pgs_log "starting $addr:$port: it stopped at once; looking at its log"
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
    # (A postgresql-common cluster has no postgresql.conf in its data directory.)
    pgs_on_pg "$spec" sh -c 'mkdir -p "$1" && for f in postgresql.auto.conf postgresql.conf; do
        [ ! -f "$2/$f" ] || cp "$2/$f" "$1/" || exit 1; done' keep "$keep" "$pgdata" || return 1
    out=$(pgs_on_pg "$spec" "$PG_BIN/pg_rewind" -D "$pgdata" \
      --source-server="$SOURCE_DSN host=$paddr port=$pport dbname=postgres $host_tls" 2>&1) || {
      pgs_log "pg_rewind failed: ${out//$'\n'/ }"
      return 1
    }
    pgs_on_pg "$spec" sh -c 'for f in "$1"/*; do cp "$f" "$2/" || exit 1; done &&
      rm -rf "$1" && touch "$2/standby.signal"' keep "$keep" "$pgdata" || return 1
    rewound=true
  done
  return 1
}

# --- Poolers ------------------------------------------------------------------------------
# pooler COMMAND ARGS...: scripts/pooler.sh COMMAND for every --pooler; its records go to our
# output. On failure sets pooler_rc and pooler_msg (its summary's message) and returns 1.
pooler_rc=0 pooler_msg="" pooler_state=idle
pooler() {
  local out line rc=0
  out=$("$here/pooler.sh" "$@" "${poolers[@]}") || rc=$?
  pooler_out=$out
  pooler_emit "$out"
  pooler_rc=$rc pooler_msg=$(jq -r 'select(.type == "summary") | .message // empty' <<<"$out" 2>/dev/null | tail -n 1)
  ((rc == 0))
}
pooler_emit() {
  local line
  while IFS= read -r line; do
    case $line in '{"type":"summary"'* | "") ;; *) pgs_emit_line "$line" ;; esac
  done <<<"$1"
}
# The hooks pg-switch runs: PAUSE every pooler right before the source stops; once the target
# is promoted, point the entries at it and RESUME. (Their records: in pooler_hook_out.)
pooler_hook_out=""
# The new entries are staged before the switch (pooler.sh stage). Inside it, once the source
# is stopped and the target about to be promoted (before_promote), they are swapped in and
# the poolers RELOADed in the background (pooler.sh swap --no-resume: nothing flows while they
# are paused, so pointing them early is harmless), beside the promotion; once the target is
# writable (after_promote) the hook waits for that swap and sends RESUME to every console.
# pooler_settle afterwards checks and probes. Without staging: the full point --resume in
# after_promote.
pooler_hook_out="" pooler_swap_flag="" swap_hook=""
pooler_hooks() {
  local q from to staged conf=() i=0 w flag dsn resume=""
  q=$(pgs_quote "$here/pooler.sh")
  from=$(pgs_quote "$source_host_addr:$source_port") to=$(pgs_quote "$TARGET_ADDR:$TARGET_PORT")
  pooler_hook_out=$(mktemp /tmp/pgshift-pooler.XXXXXX)
  printf -v pause_hook '%s pause --deadline %s %s >>%s' "$q" "$pause_limit" "$(pgs_quote "${poolers[@]}")" "$(pgs_quote "$pooler_hook_out")"
  swap_hook="" pooler_swap_flag=""
  if pooler stage --from "$source_host_addr:$source_port" --to "$TARGET_ADDR:$TARGET_PORT"; then
    staged=$(jq -r 'select(.type == "pooler_step" and .step == "stage") | .conffile' <<<"$pooler_out")
    # Each pooler's --conffile after its --pooler DSN [--host SPEC].
    for w in "${poolers[@]}"; do
      if [[ $w == --pooler ]]; then
        ((i > 0)) && conf+=(--conffile "$(sed -n "${i}p" <<<"$staged")")
        i=$((i + 1))
      fi
      conf+=("$w")
    done
    conf+=(--conffile "$(sed -n "${i}p" <<<"$staged")")
    pooler_swap_flag=$(mktemp -u /tmp/pgshift-swap.XXXXXX)
    flag=$(pgs_quote "$pooler_swap_flag")
    # In braces: the background job is the swap alone, not a user's hook joined with &&.
    printf -v swap_hook '{ : >%s.started && (%s swap --no-resume --from %s --to %s %s >>%s 2>&1; : >%s) </dev/null >/dev/null 2>&1 & }' \
      "$flag" "$q" "$from" "$to" "$(pgs_quote "${conf[@]}")" "$(pgs_quote "$pooler_hook_out")" "$flag"
    for ((i = 0; i < ${#poolers[@]}; i++)); do
      [[ ${poolers[i]} == --pooler ]] || continue
      dsn=$(pgs_quote "${poolers[i + 1]}")
      resume+="PGCONNECT_TIMEOUT=5 $(pgs_quote "$PG_BIN/psql") -XAq -d $dsn -c RESUME >/dev/null 2>&1 & "
    done
    printf -v promote_hook 'i=0; while [ ! -e %s ] && [ $i -lt 2000 ]; do sleep 0.005; i=$((i + 1)); done; %swait; true' \
      "$flag" "$resume"
  else
    printf -v promote_hook '%s point --resume --from %s --to %s %s >>%s' "$q" "$from" "$to" \
      "$(pgs_quote "${poolers[@]}")" "$(pgs_quote "$pooler_hook_out")"
  fi
}
# pooler_swap_wait: a swap the switch started in the background has ended (at most 15 s).
pooler_swap_wait() {
  [[ -n $pooler_swap_flag && -e $pooler_swap_flag.started ]] || return 0
  local i
  for ((i = 0; i < 1500; i++)); do [[ -e $pooler_swap_flag ]] && break; sleep 0.01; done
  rm -f "$pooler_swap_flag" "$pooler_swap_flag.started"
}
# pooler_settle [target|source|none]: every pooler RESUMEd, its entries at the primary
# (decided from the hosts when not given); idempotent, run on every way out of a switchover.
# Returns 1 (pooler_msg says why) if a pooler could not be settled.
pooler_settle() {
  ((${#poolers[@]})) && [[ $pooler_state != settled ]] || return 0
  pooler_swap_wait
  local to=${1:-}
  if [[ -z $to ]]; then
    if [[ $(target_in_recovery) == f ]]; then to=target
    elif [[ $(src_psql -c "SELECT pg_is_in_recovery()" 2>/dev/null) == f ]]; then to=source
    else to=none; fi
  fi
  local ok=0
  case $to in
    target) pooler point --from "$source_host_addr:$source_port" --to "$TARGET_ADDR:$TARGET_PORT" && ok=1 ;;
    source) pooler point --from "$TARGET_ADDR:$TARGET_PORT" --to "$source_host_addr:$source_port" && ok=1 ;;
    none) ok=1 ;;
  esac
  pooler resume || ok=0
  if ((ok)) && [[ $to == target ]]; then
    pooler probe --expect "$TARGET_ADDR:$TARGET_PORT" || ok=0
  fi
  ((ok)) || return 1
  pooler_state=settled
}

# switch [--abort]: pg-switch between the source and the target, in the background (so a
# signal reaches it and the trap at once); its records go to our output, its summary to
# `sw` (JSON). Returns its exit status: 0 the target is the primary, 1 not promoted (the
# source serves), 126 unknown, other: refused, nothing changed.
switch() {
  local fence args=() h rc=0 line
  fence=$(mktemp /tmp/pgshift-fence.XXXXXX)
  # The fenced source's primary_conninfo, naming the target; read by pg-switch, sent to the
  # source's host on stdin (never in an argument).
  # No password: the source's host has the passfile (put_passfiles).
  printf 'host=%s port=%s user=%s passfile=%s application_name=pgshift_rejoin %s\n' \
    "$TARGET_ADDR" "$TARGET_PORT" "$REPL_USER" "$(pgs_conninfo_quote "$src_aux/pgpass")" "$src_tls" >"$fence"
  local -A hk=()
  for h in "${switch_hooks[@]}"; do hk[$h]=${hooks[$h]:-}; done
  if ((${#poolers[@]})) && [[ $* != *--abort* ]]; then
    pooler_hooks
    hk[before_stop]=$pause_hook${hk[before_stop]:+ && ${hk[before_stop]}}
    hk[after_promote]=$promote_hook${hk[after_promote]:+; ${hk[after_promote]}}
    [[ -z $swap_hook ]] || hk[before_promote]=${hk[before_promote]:+${hk[before_promote]} && }$swap_hook
    pooler_state=armed
  fi
  for h in "${switch_hooks[@]}"; do
    [[ -n ${hk[$h]} ]] && args+=(--hook "$h=${hk[$h]}")
  done
  [[ $mode == archive ]] && args+=(--archive "$archive" --wal-ship "$bin/wal-ship")
  sw_out=$(mktemp /tmp/pgshift-switch.XXXXXX)
  state=switching
  "$bin/pg-switch" --source "$src_dsn" --source-host "$SOURCE_SPEC" --source-pgdata "$SOURCE_PGDATA" \
    --source-log "$source_log" --target "$tgt_dsn" --target-host "$TARGET_SPEC" \
    --target-pgdata "$TARGET_PGDATA" --target-log "$target_log" --fence-conninfo-file "$fence" \
    --journal "$journal" --timeout "${switch_timeout}s" --pg-bin "$PG_BIN" "${args[@]}" "$@" >"$sw_out" &
  bg_pid=$!
  while :; do
    wait "$bg_pid" && rc=0 || rc=$?
    ((rc > 128)) && kill -0 "$bg_pid" 2>/dev/null && continue
    break
  done
  bg_pid=""
  rm -f "$fence"
  pooler_swap_wait
  if [[ -n $pooler_hook_out ]]; then
    pooler_emit "$(<"$pooler_hook_out")"
    rm -f "$pooler_hook_out"
    pooler_hook_out=""
  fi
  sw='{}'
  while IFS= read -r line; do
    case $line in
      '{"type":"summary"'*) sw=$line ;;
      *) pgs_emit_line "$line" ;;
    esac
  done <"$sw_out"
  rm -f "$sw_out"
  return "$rc"
}

# after_switch RC: what pg-switch's outcome means for this run. Where the primary is, its
# summary says (`primary`), not the exit status: a target promoted but not proven writable
# (`promoted_unverified`) exits 65 or 69 like a refusal; a pg-switch killed by a signal says
# nothing.
after_switch() {
  local rc=$1 why to=none primary
  why=$(jq -r '.message // empty' <<<"$sw")
  primary=$(jq -r '.primary // "unknown"' <<<"$sw")
  case $primary in target | source) to=$primary ;; esac
  if [[ $pooler_state == armed ]] && ! pooler_settle "$to"; then
    ((rc == 0)) && fail "$EX_UNAVAILABLE" "the target is the primary, but a pooler does not reach it: $pooler_msg (run the same command again, or fix the pooler by hand: scripts/pooler.sh point --from $source_host_addr:$source_port --to $TARGET_ADDR:$TARGET_PORT ...)"
    pgs_log "a pooler could not be settled: $pooler_msg"
  fi
  case $rc in
    0) state=switched ;;
    1)
      state=rolled_back
      fail "$EX_TEMPFAIL" "the switchover was rolled back (${why:-see the error records}); the source serves, the target is a standby: run the same command again to retry" ;;
    126)
      state=unknown
      pgs_log "what to do:"
      jq -r '.commands[]? | "  " + .' <<<"$sw" >&2
      fail "$EX_FATAL" "the switchover's state cannot be told: nothing more was touched; see the commands above and the journal $journal" ;;
    *)
      if [[ $primary == target ]]; then
        state=switched
        fail "$rc" "the target was promoted but not proven writable (${why:-see the error records}); the old source stays stopped and fenced: fix the target, then run the same command again to rejoin and verify"
      fi
      # Without a summary, only a usage error (exit 2) is known to come before anything.
      if [[ $primary == unknown && $rc != 2 ]]; then
        state=unknown
        fail "$EX_FATAL" "pg-switch ended without saying where the primary is (exit $rc): run the same command again, it looks at both hosts and finishes or rolls back the switchover; journal $journal"
      fi
      state=source_serving
      fail "$rc" "the switchover was refused before anything changed (exit $rc); see the error records" ;;
  esac
  [[ -z $stopped_by ]] || fail "$EX_TEMPFAIL" "interrupted by $stopped_by after the switchover: run the same command again to rejoin and verify"
}

# --- Resume: what the journal says was under way -----------------------------------------
# The last run of this pair of hosts that did not end: its direction, and the furthest phase
# it began. A run ends with a `done` record (or `aborted`).
resume="" last_run='{}'
if ((!dry_run)) && ! mkdir -p "$(dirname "$journal")"; then
  trap - EXIT
  pgs_die "$EX_IOERR" "cannot create the journal's directory for $journal"
fi
# One run per pair of hosts at a time. The lock is held by a small watcher process, not by
# this shell: every child of a shell inherits its descriptors, and a postmaster started from
# here would hold the lock for as long as it runs. The watcher lets go within 0.2 s of this
# script's end, however it ends.
# (A dry run only reads the journal: no lock, no directory.)
if ((!dry_run)); then
  lock_said=$(mktemp /tmp/pgshift-lock.XXXXXX)
  flock -w 120 -E 75 "$journal.lock" sh -c 'echo locked; while kill -0 "$1" 2>/dev/null; do sleep 0.2; done' \
    migrate-lock "$$" >"$lock_said" 2>/dev/null &
  lock_pid=$!
  announced=0
  until [[ -s $lock_said ]]; do
    if ! kill -0 "$lock_pid" 2>/dev/null; then
      rm -f "$lock_said"
      trap - EXIT # the journal is the other run's: no record of this one in it
      pgs_die "$EX_TEMPFAIL" "another migrate.sh of these hosts still runs (it holds $journal.lock): let it finish, then run again"
    fi
    ((++announced == 20)) && pgs_log "waiting up to 120 s for another migrate.sh of these hosts (it holds $journal.lock)"
    sleep 0.05
  done
  rm -f "$lock_said"
fi
# What is under way: everything since the last run that ended (`done` or `aborted`). The
# switchover's own steps (pg-switch's records) decide whether one is open; the base copy's
# phase records whether a copy was cut short.
if [[ -s $journal ]]; then
  last_run=$(jq -c -s '
    ([to_entries[] | select(.value.event == "done" or .value.event == "aborted") | .key] | last // -1) as $ended_at
    | .[$ended_at + 1:] as $since
    | ($since | map(select(.by == "pg-switch" and .event == "switch")) | last | .step) as $step
    | ($since | map(select(.by == "migrate.sh" and .event == "phase" and .phase == "base_copy")) | last | .state) as $copy
    | ($since | map(select(.event == "run")) | first) as $run
    | {ended: ($run == null), source: $run.source, target: $run.target,
       switch: (if $step == null then "none" elif $step == "promoted" then "done"
                elif ($step == "rolled_back" or $step == "refused" or $step == "nothing_to_do") then "none"
                else "open" end),
       copy_cut: ($copy == "begin"), copied: ($copy != null)}' "$journal" 2>/dev/null || echo '{"ended":true}')
  if [[ $(jq -r '.ended' <<<"$last_run") == false ]]; then
    run_src=$(jq -r .source <<<"$last_run") run_tgt=$(jq -r .target <<<"$last_run")
    if [[ $run_src != "$src_id" ]]; then
      trap - EXIT
      pgs_die "$EX_TEMPFAIL" "a migration from $run_src to $run_tgt was interrupted and is not finished: run that command again (or it with --abort) first; journal $journal"
    fi
    case $(jq -r '.switch' <<<"$last_run") in
      open) resume=switch ;;
      done) resume=after_switch ;;
      *) if [[ $(jq -r .copy_cut <<<"$last_run") == true ]]; then resume=base_copy; else resume=before_switch; fi ;;
    esac
    pgs_log "resuming an interrupted run (journal $journal): $resume"
  fi
fi
pgs_note run mode="$mode" resume="${resume:-none}" abort:="$( ((abort)) && echo true || echo false)"
pgs_emit_line "$(pgs_json resume journal="$journal" from="${resume:-none}")"

# --- 1 preflight -------------------------------------------------------------------------
# In pg_stat_archiver: the archiver's latest attempt failed.
last_attempt_failed_sql="coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false)"
# archiver_state FAILS0 LSN: what the source's archiver did since its failed_count was FAILS0
# (pg_stat_archiver), as "ARCHIVED FAILS FAILED_WAL LAST_FAILED SEG": t when the archive holds
# SEG, the segment that LSN closed (pg_switch_wal's answer); failures since; the segment of
# the last one; t when the latest attempt failed. Empty when the source does not answer.
archiver_state() {
  src_psql -F ' ' -c "SELECT coalesce(last_archived_wal ~ '^[0-9A-F]{24}$' AND last_archived_wal >= pg_walfile_name('$2'), false),
      failed_count - $1, coalesce(last_failed_wal, '-'), $last_attempt_failed_sql, pg_walfile_name('$2')
    FROM pg_stat_archiver" 2>/dev/null || true
}
# archive_gave_up FAILS LAST_FAILED: the archiver failed three times in a row (PostgreSQL's own
# retries of one segment) since the count began, and its latest attempt failed.
archive_gave_up() { [[ $2 == t ]] && (($1 >= 3)); }
# archive_failure_message FAILS FAILED_WAL WHEN TAIL: the message of a run that ends because
# the source cannot archive; TAIL goes after its advice.
archive_failure_message() {
  printf '%s' "the source cannot archive: its archive_command failed $1 times in a row on $2 $3 (pg_stat_archiver; the source's log says why). Check that the archive is mounted and writable by the server's user$4"
}
# archive_failing FAILS FAILED_WAL LAST_FAILED WHEN [ADVICE]: fail when the archiver gave up
# (archive_gave_up); WHEN and ADVICE go into the message.
archive_failing() {
  archive_gave_up "$1" "$3" || return 0
  fail "$EX_UNAVAILABLE" "$(archive_failure_message "$1" "$2" "$4" " and that archive_command runs wal-ship push (setup-host.sh --archive)${5:+; $5}")"
}

preflight() {
  pgs_phase_begin preflight
  for spec in "$SOURCE_SPEC" "$TARGET_SPEC"; do
    pgs_host_reachable "$spec" || fail "$EX_UNAVAILABLE" "cannot run commands on host $spec (check ssh: BatchMode, keys, known_hosts)"
  done
  src_row=$(src_psql -F ' ' -c "SELECT current_setting('server_version_num'), (SELECT system_identifier FROM pg_control_system()),
    pg_is_in_recovery(), current_setting('wal_level'), current_setting('max_wal_senders'),
    current_setting('data_directory'), current_setting('data_checksums') = 'on' OR current_setting('wal_log_hints') = 'on',
    (SELECT sum(pg_database_size(oid)) FROM pg_database), current_setting('synchronous_standby_names') <> ''" 2>&1) ||
    fail "$EX_UNAVAILABLE" "cannot connect to the source ($source_host_addr:$source_port): $src_row$(tls_hint "$src_row")"
  read -r src_version src_sysid src_recovery src_wal_level src_senders src_datadir src_rewindable src_bytes src_sync <<<"$src_row"
  if [[ $src_recovery != f ]]; then
    # A finished migration run again: the "source" follows the target now.
    if [[ $(target_in_recovery) == f && -z $resume ]]; then
      done_already=1
      return 0
    fi
    fail "$EX_DATAERR" "the source $source_host_addr:$source_port is in recovery: give the primary as --source"
  fi
  [[ $src_wal_level != minimal ]] || fail "$EX_DATAERR" "the source has wal_level=minimal: run setup-host.sh --role source (wal_level=replica needs a restart)"
  ((src_senders > 0)) || fail "$EX_DATAERR" "the source has max_wal_senders=0: run setup-host.sh --role source"
  [[ $src_datadir == "$SOURCE_PGDATA" ]] || fail "$EX_USAGE" "--source-pgdata $SOURCE_PGDATA is not the source's data directory ($src_datadir)"
  [[ $src_sync == f ]] || fail "$EX_DATAERR" "the source has synchronous_standby_names set: the new primary would inherit it and its commits would wait for a standby that is not there; clear it (ALTER SYSTEM RESET synchronous_standby_names) for the migration"
  tgt_version=$(on_tgt "$PG_BIN/postgres" --version 2>/dev/null) ||
    fail "$EX_UNAVAILABLE" "no PostgreSQL server binaries at $PG_BIN on the target host"
  [[ $tgt_version =~ ([0-9]+)\.([0-9]+) ]] || fail "$EX_SOFTWARE" "cannot read the target's version from '$tgt_version'"
  if ((BASH_REMATCH[1] != src_version / 10000)); then
    fail "$EX_DATAERR" "major versions differ: source $((src_version / 10000)), target ${BASH_REMATCH[1]} (physical replication needs the same major version)"
  fi

  # A target that already is a standby of this source skips the base copy (this is how
  # --reverse works after a migration, and how a run goes on after a failure).
  fresh_target=1
  if ((resume_copy || (copy_cut && dry_run))); then
    : # the partial copy: resumed by the base copy, or removed first by a real run
  elif on_tgt test -f "$TARGET_PGDATA/PG_VERSION"; then
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
    # A partial copy's bytes are part of what it needs.
    ((resume_copy)) && avail=$((avail + $(on_tgt du -sb "$TARGET_PGDATA" | cut -f1)))
    need=$((src_bytes + src_bytes / 5 + 1073741824))
    ((avail >= need)) || fail "$EX_IOERR" "not enough disk on the target: $avail bytes free, need about $need (the databases plus 20 % and 1 GiB of WAL)"
  fi
  # The target's host must reach the source as the replication role (pg_hba.conf, password,
  # TLS); and once the target runs, the source's host must reach it the same way (the rejoin).
  probe=$(pgs_repl_probe "$TARGET_SPEC" "$source_host_addr" "$source_port" "$REPL_USER" "$REPL_PASSWORD_FILE" "$tgt_tls") ||
    fail "$EX_UNAVAILABLE" "the target host cannot open a replication connection to $source_host_addr:$source_port as $REPL_USER: ${probe//$'\n'/ } (check --repl-password-file; run setup-host.sh --role source)"
  if ((!fresh_target)) && [[ -n $(target_in_recovery) ]]; then
    probe_reverse
  fi
  # pg_basebackup -X none (the compressed copy) waits at its end until the source has
  # archived the copy's last segment: with archive_mode on and a failing archive_command, for
  # ever and without a word. Stream mode needs no archive: auto copies uncompressed, and an
  # explicit --compress is refused here. (Archive mode checks its archive below.)
  if [[ $mode == stream && $compress != none ]] && ((fresh_target && !resume_copy)) &&
    [[ $(src_psql -c "SELECT current_setting('archive_mode') <> 'off' AND $last_attempt_failed_sql FROM pg_stat_archiver" 2>/dev/null) == t ]]; then
    archiver_failing="the source's archive_command is failing (pg_stat_archiver), and a compressed copy (pg_basebackup -X none) waits for the archive at its end"
    [[ $compress == auto ]] || fail "$EX_UNAVAILABLE" "--compress $compress: $archiver_failing; fix archiving on the source, or use --compress none"
  fi
  if [[ $mode == archive ]]; then
    [[ -x $bin/wal-ship ]] || fail "$EX_UNAVAILABLE" "--mode archive needs $bin/wal-ship (make release)"
    arch_cmd=$(src_psql -c "SELECT current_setting('archive_mode') || ' ' || current_setting('archive_command')")
    [[ $arch_cmd == on\ *wal-ship* ]] || fail "$EX_DATAERR" "--mode archive needs the source archiving with wal-ship (archive_mode=on): run setup-host.sh --archive DEST"
    # As pgbackrest check does: close a segment and wait until the archive has it. (The base
    # copy waits for the archive too, without a word, for as long as archiving fails.)
    local row fails0 lsn archived fails failed_wal last_failed seg probe_end=$((SECONDS + 60))
    row=$(src_psql -F ' ' -c "SELECT failed_count, pg_switch_wal() FROM pg_stat_archiver" 2>&1) ||
      fail "$EX_UNAVAILABLE" "cannot switch the source's WAL to check its archiving: $row"
    read -r fails0 lsn <<<"$row"
    while :; do
      read -r archived fails failed_wal last_failed seg <<<"$(archiver_state "$fails0" "$lsn")"
      [[ $archived == t ]] && break
      archive_failing "${fails:-0}" "$failed_wal" "$last_failed" "in preflight"
      ((SECONDS < probe_end)) || fail "$EX_UNAVAILABLE" "the source did not archive $seg within 60 s of its switch (pg_stat_archiver): check its archive_command (setup-host.sh --archive)"
      sleep 0.1
    done
  fi
  if [[ -n $databases ]]; then
    local all w want=()
    all=$(src_psql -c "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")
    IFS=, read -ra want <<<"$databases"
    for w in "${want[@]}"; do
      grep -qxF -- "$w" <<<"$all" || fail "$EX_USAGE" "--databases names '$w', which is not a connectable database on the source (it has: ${all//$'\n'/, })"
    done
  fi
  if [[ $tls == verify-full ]]; then
    # Each host checks the other's certificate against the CA: both need theirs.
    local side spec aux role
    for side in "source|$SOURCE_SPEC|$src_aux" "target|$TARGET_SPEC|$tgt_aux"; do
      IFS='|' read -r role spec aux <<<"$side"
      pgs_on_pg "$spec" test -f "$aux/ca.crt" -a -f "$aux/server.crt" ||
        fail "$EX_DATAERR" "the $role host ($spec) has no pgshift certificate in $aux: run setup-host.sh --role $role --tls-ca DIR for it (DIR: the CA of the other host), or choose --tls require"
    done
  fi
  [[ $src_rewindable == t ]] || pgs_log "warning: the source has neither data checksums nor wal_log_hints: pg_rewind will not be possible after a failed switch"
  if ((${#poolers[@]})); then
    pooler check --source "$source_host_addr:$source_port" --pause-limit "$pause_limit" --switch-limit "$switch_timeout" ||
      fail "$pooler_rc" "$pooler_msg"
  fi
  local fresh_json=false
  ((fresh_target)) && fresh_json=true
  pgs_phase_end version="$src_version" system_identifier="$src_sysid" fresh_target:=$fresh_json source_bytes:="$src_bytes" \
    source_layout="${src_info[layout]}" target_layout="${tgt_info[layout]}" tls="$tls"
}

# probe_reverse: the source's host reaches the (running) target as the replication role.
probe_reverse() {
  probe=$(pgs_repl_probe "$SOURCE_SPEC" "$TARGET_ADDR" "$TARGET_PORT" "$REPL_USER" "$REPL_PASSWORD_FILE" "$src_tls") ||
    fail "$EX_UNAVAILABLE" "the source host cannot open a replication connection to the target $TARGET_ADDR:$TARGET_PORT as $REPL_USER, which the old source needs to follow the new primary: ${probe//$'\n'/ } (check --repl-password-file and the target's pg_hba.conf)"
}

# put_passfiles: the replication password into a 0600 passfile on both hosts (on stdin: in
# no argument), for pg_basebackup, primary_conninfo and the fenced source's rejoin.
put_passfiles() {
  local spec aux
  for spec in "$TARGET_SPEC|$tgt_aux" "$SOURCE_SPEC|$src_aux"; do
    aux=${spec#*|} spec=${spec%%|*}
    pgs_put_passfile "$spec" "$aux" "$REPL_USER" "$REPL_PASSWORD_FILE" ||
      fail "$EX_IOERR" "cannot write the passfile $aux/pgpass on host $spec"
  done
}

# The settings a standby must share with its primary (hot standby refuses to start below
# the primary's limits) or that change what queries return; carried from the source to a
# new target where the source sets them, because a target keeps its own configuration
# files (a postgresql-common cluster's are not in the data directory a base copy copies).
carry_settings=(max_connections max_worker_processes max_wal_senders max_prepared_transactions
  max_locks_per_transaction max_replication_slots wal_level wal_log_hints hot_standby
  wal_keep_size max_wal_size min_wal_size shared_preload_libraries TimeZone DateStyle
  IntervalStyle lc_messages lc_monetary lc_numeric lc_time default_text_search_config
  password_encryption extra_float_digits)
carried=()

# target_own_settings: after the base copy, the target's postgresql.auto.conf (the source's,
# copied) loses what belongs to the source's host (address, port, socket, certificate), and
# gets this host's own and the carried settings, one `setting` record each.
# source_conf_files: a postgresql-common source's pg_hba.conf and pg_ident.conf into the
# target's data directory, with a postgresql.conf of the target's own (a file record each).
source_conf_files() {
  local f from
  for f in pg_hba.conf pg_ident.conf; do
    from=${src_info[conf_dir]}/$f
    [[ $f == pg_hba.conf ]] && from=${src_info[hba_file]}
    on_src cat "$from" | on_tgt sh -c 'umask 077 && cat >"$1.pgshift" && mv -f "$1.pgshift" "$1"' pgshift-conf "$TARGET_PGDATA/$f" ||
      fail "$EX_IOERR" "cannot copy the source's $from to the target's $TARGET_PGDATA/$f"
    pgs_emit file path="$TARGET_PGDATA/$f" from="$from" host=target action=copied
  done
  on_tgt sh -c 'printf "%s\n" "$2" >"$1/postgresql.conf"' pgshift-conf "$TARGET_PGDATA" \
    "# made by pgshift migrate.sh: the source ($source_host_addr:$source_port, ${SOURCE_CLUSTER:-a postgresql-common cluster}) keeps its configuration in ${src_info[conf_dir]}; the settings that matter are in postgresql.auto.conf" ||
    fail "$EX_IOERR" "cannot write the target's $TARGET_PGDATA/postgresql.conf"
  pgs_emit file path="$TARGET_PGDATA/postgresql.conf" host=target action=created
}

target_own_settings() {
  local rows name value block strip="listen_addresses|port|unix_socket_directories"
  block="# pgshift migrate.sh: this host's own settings, and the source's that must match"$'\n'
  if [[ ${tgt_info[layout]} != debian ]]; then
    # The configuration in the data directory is the source's copy: give the target its own
    # address, port and socket. (A postgresql-common cluster keeps its own files.)
    if [[ ${src_info[layout]} == debian ]] && ! on_tgt test -f "$TARGET_PGDATA/postgresql.conf"; then
      # The source keeps its configuration files outside its data directory, so the base
      # backup brought none: the source's client authentication comes along (the same
      # clients and the replication role may connect), the settings that matter follow in
      # postgresql.auto.conf.
      source_conf_files
    fi
    block+="listen_addresses = '$TARGET_ADDR'"$'\n'"port = $TARGET_PORT"$'\n'
    block+="unix_socket_directories = $(pgs_conf_quote "$socket_dir")"$'\n'
  fi
  if [[ $tls != off ]] && on_tgt test -f "$tgt_aux/server.crt"; then
    strip+="|ssl|ssl_cert_file|ssl_key_file|ssl_ca_file"
    block+="ssl = on"$'\n'"ssl_cert_file = $(pgs_conf_quote "$tgt_aux/server.crt")"$'\n'
    block+="ssl_key_file = $(pgs_conf_quote "$tgt_aux/server.key")"$'\n'"ssl_ca_file = $(pgs_conf_quote "$tgt_aux/ca.crt")"$'\n'
  fi
  rows=$(src_psql -F $'\t' -v names="{$(IFS=,; printf '%s' "${carry_settings[*]}")}" <<<"SELECT name, current_setting(name) FROM pg_settings
    WHERE name = ANY (:'names'::text[]) AND source NOT IN ('default', 'override') ORDER BY name") ||
    fail "$EX_UNAVAILABLE" "cannot read the source's settings: $rows"
  while IFS=$'\t' read -r name value; do
    [[ -n $name ]] || continue
    block+="$name = $(pgs_conf_quote "$value")"$'\n'
    carried+=("$name")
    pgs_emit setting name="$name" value="$value" from=source host=target
  done <<<"$rows"
  block+="wal_retrieve_retry_interval = '100ms'"$'\n'
  on_tgt sh -c 'f=$1/postgresql.auto.conf
    grep -v -E "^[[:space:]]*($2)[[:space:]]*=" "$f" >"$f.pgshift" ; cat >>"$f.pgshift" && mv -f "$f.pgshift" "$f"' \
    pgshift-conf "$TARGET_PGDATA" "$strip" <<<"$block" ||
    fail "$EX_IOERR" "cannot write the target's postgresql.auto.conf"
}

# --- 2 base copy -------------------------------------------------------------------------
archiver_failing="" bytes_copied=0 wire_bytes=0 copy_start_lsn="" cmp_method=none cmp_level="" link_bps=""

# sample_compression: what the base copy would gain from compression (--compress auto):
# sets cmp_method and cmp_level, and emits a `compression` record with what was measured. The link:
# from the target, 8 MB read from the source over the replication role's connection, timed
# against the same query without the transfer (the server's own time). The data: up to 32 MB
# from the source's largest files (4 MB of each of 8), compressed on the source with zstd -1
# and -3 on one thread (the server compresses on one). Per byte of data, no compression
# costs 1/link; zstd:N max(ratio/link, 1/speed) (the transfer and the compression overlap).
sample_compression() {
  local conninfo=$1 why="" times link_ms raw z1 t1 z3 t3 pick
  if on_tgt sh -c 'command -v zstd >/dev/null' && on_src sh -c 'command -v zstd >/dev/null'; then
    # shellcheck disable=SC2016  # expanded on the target
    times=$(on_tgt timeout 30 sh -c 'q="SELECT string_agg(md5(g::text || random()::text), '"''"') FROM generate_series(1, 262144) g"
      printf "%s\n" "\\o /dev/null" "\\! date +%s%N" "SELECT length(($q));" "\\! date +%s%N" "COPY ($q) TO STDOUT;" "\\! date +%s%N" |
        "$1" -XAtq -v ON_ERROR_STOP=1 -d "$2 dbname=postgres"' pgshift-link "$PG_BIN/psql" "$conninfo" 2>&1) || true
    link_ms=$(awk 'NF == 1 && /^[0-9]+$/ { t[++n] = $1 } END { if (n == 3) printf "%d", ((t[3] - t[2]) - (t[2] - t[1])) / 1e6 }' <<<"$times")
    # shellcheck disable=SC2016  # expanded on the source
    read -r raw z1 t1 z3 t3 < <(on_src sh -c 'cd "$1" || exit 1; f=$(mktemp /tmp/pgshift-sample.XXXXXX) || exit 1
      find base -type f -size +1M -printf "%s %p\n" 2>/dev/null | sort -rn | head -n 8 | while read -r _ p; do head -c 4194304 "$p"; done >"$f"
      [ "$(wc -c <"$f")" -ge 1048576 ] || tar -cf - base 2>/dev/null | head -c 33554432 >"$f"
      a=$(date +%s%N); x=$(zstd -q -1 -T1 -c "$f" | wc -c); b=$(date +%s%N); y=$(zstd -q -3 -T1 -c "$f" | wc -c); c=$(date +%s%N)
      echo "$(wc -c <"$f") $x $(((b - a) / 1000000)) $y $(((c - b) / 1000000))"; rm -f "$f"' pgshift-sample "$SOURCE_PGDATA" 2>/dev/null) || true
    if [[ -z $link_ms || -z $raw || ${raw:-0} -lt 65536 ]]; then
      why="the link or the data could not be sampled (${times//$'\n'/ })"
    fi
  else
    why="zstd is not installed on both hosts (apt install zstd)"
  fi
  if [[ -n $why ]]; then
    cmp_method=none
    pgs_emit compression method=none chosen_by=auto reason="$why"
    pgs_log "base copy uncompressed: $why"
    return 0
  fi
  ((link_ms > 0)) || link_ms=1
  ((t1 > 0)) || t1=1
  ((t3 > 0)) || t3=1
  # Seconds per byte of data for each way (8 MiB of link sample: 262144 md5 hex strings).
  pick=$(awk -v lb=8388608 -v lms="$link_ms" -v raw="$raw" -v z1="$z1" -v t1="$t1" -v z3="$z3" -v t3="$t3" 'BEGIN {
    link = lb / (lms / 1000); s1 = raw / (t1 / 1000); s3 = raw / (t3 / 1000)
    none = 1 / link
    c1 = (z1 / raw) / link; if (1 / s1 > c1) c1 = 1 / s1
    c3 = (z3 / raw) / link; if (1 / s3 > c3) c3 = 1 / s3
    m = "none"; l = ""; best = none
    if (c1 < best * 0.9) { m = "zstd"; l = 1; best = c1 }
    if (c3 < best && c3 < none * 0.9) { m = "zstd"; l = 3; best = c3 }
    printf "%s %s %.0f %.4f %.4f %.0f %.0f %.2f\n", m, l == "" ? "-" : l, link, z1 / raw, z3 / raw, s1, s3, none / best
  }')
  local r1 r3 s1 s3 gain
  read -r cmp_method cmp_level link_bps r1 r3 s1 s3 gain <<<"$pick"
  [[ $cmp_level == - ]] && cmp_level=""
  pgs_emit compression method="$cmp_method" level:="${cmp_level:-null}" chosen_by=auto link_bytes_per_s:="$link_bps" \
    sample_bytes:="$raw" ratio_zstd1:="$r1" ratio_zstd3:="$r3" zstd1_bytes_per_s:="$s1" zstd3_bytes_per_s:="$s3" \
    predicted_speedup:="$gain"
  pgs_log "base copy: link $(numfmt --to=iec "$link_bps")B/s, data compresses to $r1 (zstd -1), $(numfmt --to=iec "$s1")B/s; chosen: $cmp_method${cmp_level:+:$cmp_level} (predicted ${gain}x)"
}

# watch_copy [FILE]: while the base copy runs (in the background), every 5 s a `copy_progress`
# record (bytes sent, the estimated total, the rate since the copy began, the ETA) from the
# source's pg_stat_progress_basebackup, or with FILE from the sync_progress records pgdata-sync
# apply writes there while a copy resumes, and, on a terminal, the same as one line on stderr that
# rewrites itself. It ends with the copy (stop_watch, also on every failure path: it holds
# stdout, so a reader waiting for the end of the stream waits for it too) or, at the latest,
# when this script is gone or a zombie (kill -0 alone succeeds on a zombie).
# A copy without its WAL (-X none, compressed) waits at its end until the source has archived
# its last segment: for ever while archiving fails. When the archiver has failed three times
# in a row since the copy began and the copy waits for it, the copy's walsender is ended and
# the reason written to $copy_stuck, which the failure's message says.
watch_copy() {
  trap - EXIT INT TERM HUP
  local t0 row sent total phase rate eta pct fails0 archived fails failed_wal last_failed seg
  t0=$(pgs_now_ms)
  fails0=$(src_psql -c "SELECT failed_count FROM pg_stat_archiver" 2>/dev/null) || fails0=0
  while sleep 5 && [[ $(cut -d' ' -f3 "/proc/$$/stat" 2>/dev/null) == [RSD] ]]; do
    if [[ -n ${1:-} ]]; then
      # A resumed copy: the last sync_progress of pgdata-sync apply (reused blocks count as done).
      row=$(jq -r 'select(.type == "sync_progress") | "\(.bytes_done) \(.bytes_total)"' "$1" 2>/dev/null | tail -n 1)
    else
      row=$(src_psql -F ' ' -c "SELECT backup_streamed, coalesce(backup_total, 0), phase = 'waiting for wal archiving to finish' FROM pg_stat_progress_basebackup ORDER BY pid DESC LIMIT 1" 2>/dev/null) || continue
    fi
    [[ -n $row ]] || continue
    read -r sent total phase <<<"$row"
    if [[ $phase == t ]]; then
      read -r archived fails failed_wal last_failed seg <<<"$(archiver_state "$fails0" "$copy_start_lsn")"
      if archive_gave_up "${fails:-0}" "$last_failed"; then
        archive_failure_message "$fails" "$failed_wal" "while the base copy waited for it at its end" \
          ", then run again; --compress none copies without waiting for the archive" >"$copy_stuck"
        src_psql -c "SELECT pg_terminate_backend(pid) FROM pg_stat_progress_basebackup WHERE phase = 'waiting for wal archiving to finish'" >/dev/null 2>&1 || true
      fi
    fi
    local ms=$(($(pgs_now_ms) - t0))
    rate=$((sent * 1000 / (ms > 0 ? ms : 1)))
    eta=null pct=null
    ((total > 0 && rate > 0 && total >= sent)) && eta=$(((total - sent) / rate))
    ((total > 0)) && pct=$((sent * 100 / total))
    pgs_emit copy_progress bytes_done:="$sent" bytes_total:="$total" bytes_per_s:="$rate" eta_s:="$eta" \
      percent:="$pct" elapsed_ms:="$ms" compression="$cmp_method${cmp_level:+:$cmp_level}"
    if [[ -t 2 ]]; then
      printf '\r%s: base copy %s of %s (%s%%), %s/s, ETA %s   ' "$PGS_NAME" \
        "$(numfmt --to=iec-i --suffix=B "$sent")" "$(numfmt --to=iec-i --suffix=B "$total")" "${pct/null/?}" \
        "$(numfmt --to=iec-i --suffix=B "$rate")" "$( [[ $eta == null ]] && echo "?" || printf '%dm%02ds' $((eta / 60)) $((eta % 60)))" >&2
    fi
  done
}
stop_watch() {
  [[ -n $watch_pid ]] || return 0
  kill "$watch_pid" 2>/dev/null || true
  wait "$watch_pid" 2>/dev/null || true
  watch_pid=""
  rm -f "$copy_stuck"
  [[ -t 2 ]] && printf '\n' >&2
  return 0
}

# ensure_slot: the physical slot, made now if it is not there (it keeps the WAL from before the
# copy's start; the standby streams it from there).
ensure_slot() {
  local out
  out=$(src_psql -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot'") || out=0
  if ((out == 0)); then
    out=$(src_psql -c "SELECT pg_create_physical_replication_slot('$slot', true)" 2>&1) ||
      fail "$EX_UNAVAILABLE" "cannot create the replication slot $slot on the source: ${out//$'\n'/ }"
  fi
}

# fail_if_slot_lost: the source invalidated the target's slot (its WAL passed
# max_slot_wal_keep_size behind): the WAL the target still needs is gone, and no wait brings it
# back.
fail_if_slot_lost() {
  local st
  st=$(src_psql -F ' ' -c "SELECT wal_status, current_setting('max_slot_wal_keep_size') FROM pg_replication_slots WHERE slot_name = '$slot'" 2>/dev/null) || return 0
  [[ ${st%% *} == lost ]] || return 0
  fail "$EX_UNAVAILABLE" "the source removed WAL the target still needs: it invalidated the slot $slot (pg_replication_slots.wal_status lost; max_slot_wal_keep_size ${st#* }), so the standby can never catch up. Run with --abort (it removes the standby and its slot), then again; raise max_slot_wal_keep_size on the source or move at a quieter hour"
}

# standby_settings CONNINFO: what pg_basebackup -R writes, for a copy it did not make.
standby_settings() {
  # shellcheck disable=SC2016  # expanded on the target
  on_tgt sh -c 'touch "$1/standby.signal" && printf "%s\n" "$2" "$3" >>"$1/postgresql.auto.conf"' pgshift-conf \
    "$TARGET_PGDATA" "primary_conninfo = $(pgs_conf_quote "$1")" "primary_slot_name = '$slot'" ||
    fail "$EX_IOERR" "cannot write the target's standby settings"
}

# sync_pipeline OUT: the partial copy brought to the source's bytes (pgdata-sync on both hosts;
# the stream through this host). apply's records go to OUT; each step's status is checked.
# shellcheck disable=SC2317  # called by in_background
sync_pipeline() {
  local st level=3
  # --compress: none sends it plain; zstd:N at that level; otherwise zstd's default.
  case $compress in none) level=0 ;; zstd:*) level=${compress#zstd:} ;; esac
  on_tgt "$bin/pgdata-sync" sums "$TARGET_PGDATA" |
    on_src "$bin/pgdata-sync" send "$SOURCE_PGDATA" --level "$level" ${max_rate:+--max-rate "$max_rate"} |
    on_tgt "$bin/pgdata-sync" apply "$TARGET_PGDATA" >"$1"
  st=("${PIPESTATUS[@]}")
  [[ ${st[*]} == "0 0 0" ]] || { echo "pgdata-sync sums, send, apply exited ${st[*]}" >&2; return 1; }
}

# resume_base_copy CONNINFO: resume a base copy cut short. Inside pg_backup_start() and
# pg_backup_stop() on the source (one session, held open by a psql that reads a pipe),
# pgdata-sync sends the blocks that differ; the backup_label pg_backup_stop() returns goes
# into the copy, and the standby settings. Returns 1 (nothing changed yet) when the copy
# cannot be resumed and starts again instead (tablespaces, pgdata-sync missing on a host).
# Sets bytes_copied and wire_bytes.
resume_base_copy() {
  local conninfo=$1 spaces fifo said out label rec rc=0 i
  stop_left_copy || left_copy_running
  spaces=$(src_psql -c "SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')") || spaces=0
  if ((spaces > 0)) || ! on_src test -x "$bin/pgdata-sync" || ! on_tgt test -x "$bin/pgdata-sync"; then
    pgs_log "the partial copy cannot be resumed ($( ((spaces > 0)) && echo "the source has tablespaces" || echo "no $bin/pgdata-sync on both hosts")): it is removed and the copy starts again"
    pgs_emit note code=copy_not_resumed message="the partial base copy was removed and made again"
    remove_target
    on_tgt mkdir -p "$TARGET_PGDATA"
    on_tgt chmod 700 "$TARGET_PGDATA"
    return 1
  fi
  ensure_slot
  fifo=$(mktemp -u /tmp/pgshift-backup.XXXXXX) said=$(mktemp /tmp/pgshift-backup.XXXXXX)
  mkfifo -m 600 "$fifo"
  src_psql -F '|' <"$fifo" >"$said" 2>&1 &
  local psql_pid=$!
  exec {backup_fd}>"$fifo"
  rm -f "$fifo"
  copy_start_lsn=$(src_psql -c "SELECT pg_current_wal_lsn()" 2>/dev/null || true)
  printf '%s\n' "SELECT 'started', pg_backup_start('pgshift resume $slot', true);" >&"$backup_fd"
  for ((i = 0; i < 6000; i++)); do
    grep -q '^started|' "$said" && break
    kill -0 "$psql_pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -q '^started|' "$said"; then
    exec {backup_fd}>&-
    out=$(tr '\n' ' ' <"$said")
    rm -f "$said"
    fail "$EX_UNAVAILABLE" "pg_backup_start() on the source failed: $out"
  fi
  rec=$(mktemp /tmp/pgshift-synced.XXXXXX)
  cmp_method=$( [[ $compress == none ]] && echo none || echo zstd) cmp_level=""
  watch_copy "$rec" &
  watch_pid=$!
  in_background sync_pipeline "$rec" || rc=$?
  stop_watch
  if ((rc != 0)); then
    exec {backup_fd}>&- # the session ends: the source ends the backup
    wait "$psql_pid" 2>/dev/null || true
    rm -f "$said" "$rec"
    fail "$EX_UNAVAILABLE" "the resumed base copy failed: ${bg_out//$'\n'/ }"
  fi
  # One line: the label's newlines as \n (E'\n' in a replace) so that it survives -A -t.
  printf '%s\n' "SELECT 'label', replace(labelfile, E'\\n', '\\n') FROM pg_backup_stop(false);" >&"$backup_fd"
  exec {backup_fd}>&-
  wait "$psql_pid" || true
  label=$(sed -n 's/^label|//p' "$said")
  out=$(tr '\n' ' ' <"$said")
  rm -f "$said"
  [[ -n $label ]] || { rm -f "$rec"; fail "$EX_UNAVAILABLE" "pg_backup_stop() on the source failed: $out"; }
  # The label first, then the control file: never a cluster without its label.
  out=$(printf '%b' "$label" | on_tgt "$bin/pgdata-sync" seal "$TARGET_PGDATA" 2>&1) ||
    fail "$EX_IOERR" "cannot seal the resumed copy in $TARGET_PGDATA: ${out//$'\n'/ }"
  standby_settings "$conninfo"
  out=$(jq -c 'select(.type == "synced")' "$rec")
  rm -f "$rec"
  [[ -n $out ]] || fail "$EX_SOFTWARE" "pgdata-sync apply wrote no synced record"
  bytes_copied=$(jq -r .bytes_total <<<"$out")
  wire_bytes=$(jq -r '.wire_bytes + .sums_bytes' <<<"$out")
  pgs_emit copy_resumed files:="$(jq .files <<<"$out")" bytes_total:="$bytes_copied" \
    bytes_sent:="$(jq .bytes_sent <<<"$out")" bytes_reused:="$(jq .bytes_reused <<<"$out")" \
    removed:="$(jq .removed <<<"$out")" wire_bytes:="$wire_bytes"
  return 0
}

base_copy() {
  ((fresh_target)) || return 0
  pgs_run_hook before_base_copy
  pgs_phase_begin base_copy slot="$slot" target_pgdata="$TARGET_PGDATA" resumed:="$( ((resume_copy)) && echo true || echo false)"
  state=copying
  local opts=() conninfo decomp spaces out
  [[ -n $max_rate ]] && opts+=(--max-rate="$max_rate")
  on_tgt mkdir -p "$TARGET_PGDATA"
  on_tgt chmod 700 "$TARGET_PGDATA"
  put_passfiles
  # No password in the command line or the conninfo: libpq reads the passfile; -R writes
  # the same keywords (passfile, TLS) into primary_conninfo.
  conninfo="host=$source_host_addr port=$source_port user=$REPL_USER passfile=$(pgs_conninfo_quote "$tgt_aux/pgpass") $tgt_tls application_name=pgshift_target"
  if ((resume_copy)) && resume_base_copy "$conninfo"; then
    target_own_settings
    pgs_phase_end bytes:="$bytes_copied" wire_bytes:="${wire_bytes:-0}" \
      compression="$( [[ $compress == none ]] && echo none || echo zstd)" \
      slot="$slot" settings_carried:=${#carried[@]} resumed:=true
    return 0
  fi
  cmp_method=${compress%%:*} cmp_level=""
  [[ $compress == *:* ]] && cmp_level=${compress#*:}
  if [[ $cmp_method != none ]]; then
    # One archive on stdout cannot hold tablespaces; the server must be 15 or later.
    spaces=$(src_psql -c "SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')") || spaces=0
    if ((spaces > 0)) || (($(src_psql -c "SHOW server_version_num") < 150000)); then
      [[ $cmp_method == auto ]] || fail "$EX_DATAERR" "--compress $compress needs PostgreSQL 15 or later and no tablespaces on the source (it has $spaces): use --compress none"
      cmp_method=none
      pgs_emit compression method=none chosen_by=auto reason="tablespaces or a server older than 15"
    elif [[ $cmp_method == auto && -n $archiver_failing ]]; then
      cmp_method=none
      pgs_emit compression method=none chosen_by=auto reason="$archiver_failing"
      pgs_log "base copy uncompressed: $archiver_failing"
    elif [[ $cmp_method == auto ]]; then
      sample_compression "$conninfo"
    else
      on_tgt sh -c 'command -v "$1" >/dev/null' x "$cmp_method" ||
        fail "$EX_UNAVAILABLE" "--compress $compress: $cmp_method is not installed on the target host $TARGET_SPEC, which decompresses the copy (apt install $cmp_method)"
      pgs_emit compression method="$cmp_method" level:="${cmp_level:-null}" chosen_by=option
    fi
  fi
  copy_start_lsn=$(src_psql -c "SELECT pg_current_wal_lsn()" 2>/dev/null || true)
  copy_stuck=$(mktemp /tmp/pgshift-copy.XXXXXX)
  watch_copy &
  watch_pid=$!
  if [[ $cmp_method == none ]]; then
    in_background pgs_on_pg "$TARGET_SPEC" "$PG_BIN/pg_basebackup" -D "$TARGET_PGDATA" -d "$conninfo" \
      -X stream -R -c fast -C -S "$slot" --no-clean "${opts[@]}" </dev/null ||
      fail "$EX_UNAVAILABLE" "pg_basebackup failed: ${bg_out//$'\n'/ }"
    stop_watch
    # The data directory without its WAL (the WAL is counted from the LSNs, as it streams).
    bytes_copied=$(on_tgt du -sb --exclude=pg_wal "$TARGET_PGDATA" | cut -f1)
    wire_bytes=$bytes_copied
  else
    # Compressed by the server, as one tar stream to the target: counted there (the bytes on
    # the wire), decompressed and unpacked into the data directory. The slot is made first
    # (it keeps the WAL from before the copy's start; the standby streams it from there), and
    # what -R would write is written after.
    ensure_slot
    decomp="$cmp_method -dc"
    # shellcheck disable=SC2016  # expanded on the target
    in_background pgs_on_pg "$TARGET_SPEC" bash -c 'set -o pipefail; umask 077
      rm -f "$4"
      "$1" -d "$2" -D - -Ft -X none --no-manifest -c fast --compress="server-$3" ${6:+"--max-rate=$6"} |
        tee >(wc -c >"$4") | $5 | tar -xf - -C "$7"' pgshift-copy \
      "$PG_BIN/pg_basebackup" "$conninfo" "$cmp_method${cmp_level:+:$cmp_level}" "$tgt_aux/wire.bytes" "$decomp" "$max_rate" "$TARGET_PGDATA" </dev/null ||
      { out=$(cat "$copy_stuck" 2>/dev/null) || true; fail "$EX_UNAVAILABLE" "${out:-pg_basebackup --compress=server-$cmp_method failed: ${bg_out//$'\n'/ }}"; }
    stop_watch
    standby_settings "$conninfo"
    bytes_copied=$(on_tgt du -sb --exclude=pg_wal "$TARGET_PGDATA" | cut -f1)
    # shellcheck disable=SC2016  # expanded on the target
    wire_bytes=$(on_tgt sh -c 'i=0; until [ -s "$1" ] || [ $i -ge 50 ]; do sleep 0.1; i=$((i + 1)); done; cat "$1"; rm -f "$1"' x "$tgt_aux/wire.bytes") || wire_bytes=0
  fi
  target_own_settings
  pgs_phase_end bytes:="$bytes_copied" wire_bytes:="${wire_bytes:-0}" compression="$cmp_method${cmp_level:+:$cmp_level}" \
    slot="$slot" settings_carried:=${#carried[@]}
}

# --- 3 catch up --------------------------------------------------------------------------
catch_up() {
  pgs_phase_begin catch_up
  state=standby
  local target_running=0 deadline
  put_passfiles
  on_tgt test -f "$TARGET_PGDATA/postmaster.pid" && target_running=1
  if [[ $mode == archive ]]; then
    # Archive only: no streaming; the target restores every segment from the archive. (All
    # three settings take effect on a reload in PostgreSQL 13 and later.)
    on_tgt sed -i '/^primary_conninfo/d; /^primary_slot_name/d; /^restore_command/d' "$TARGET_PGDATA/postgresql.auto.conf"
    on_tgt sh -c 'cat >> "$1/postgresql.auto.conf"' append "$TARGET_PGDATA" <<EOF
restore_command = $(pgs_conf_quote "$(pgs_wal_cmd_word "$bin/wal-ship") fetch --quiet --prefetch 4 --or-partial %f %p --from $(pgs_wal_cmd_word "$archive")")
EOF
    ((target_running)) && tgt_psql -c "SELECT pg_reload_conf()" >/dev/null
    ((fresh_target)) && drop_slot
  fi
  rewound=false
  if ((!fresh_target)) && [[ $mode == stream ]]; then
    # A standby from an earlier migration: it follows the source, rewound if it forked.
    follow "$TARGET_SPEC" "$TARGET_PGDATA" "$target_log" "$TARGET_ADDR" "$TARGET_PORT" \
      "$source_host_addr" "$source_port" ||
      { fail_if_slot_lost; fail "$EX_UNAVAILABLE" "the target does not stream from the source; see $target_log"; }
  elif ((!target_running)); then
    pgs_pg_start "$TARGET_SPEC" "$TARGET_PGDATA" "$target_log" ||
      fail "$EX_SOFTWARE" "the target did not start; see $target_log"
  fi
  pgs_wait_ready "$TARGET_ADDR" "$TARGET_PORT" 120 || fail "$EX_UNAVAILABLE" "the target did not accept connections; see $target_log"
  [[ $(retry 5 target_in_recovery) == t ]] || fail "$EX_SOFTWARE" "the target is not in recovery: it must be a standby until the switchover"
  if [[ $mode == stream ]]; then
    deadline=$((SECONDS + catchup_timeout))
    local polls=0
    until [[ $(tgt_psql -c "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'" 2>/dev/null) == 1 ]]; do
      ((SECONDS < deadline)) || fail "$EX_UNAVAILABLE" "the target does not stream from the source after --catchup-timeout $catchup_timeout s; see $target_log"
      ((++polls % 10)) || fail_if_slot_lost
      sleep 0.1
    done
  fi
  # The old source must be able to follow the target after the switch.
  probe_reverse
  pgs_phase_end mode="$mode" rewound:=$rewound
}

# --- 4 wait ------------------------------------------------------------------------------
wait_for_switch() {
  pgs_run_hook before_wait
  pgs_phase_begin wait
  local rec start_s deadline lag switched
  if [[ $when == advised ]]; then
    [[ -n $history && -r $history ]] || fail "$EX_USAGE" "--when advised needs a readable --history FILE"
    [[ -x $bin/window-advisor ]] || fail "$EX_UNAVAILABLE" "--when advised needs $bin/window-advisor (make release)"
    # The horizon starts now (window-advisor's default is the end of the history).
    rec=$("$bin/window-advisor" recommend --history "$history" --window "$window" --top 1 --from now |
      jq -c 'select(.type == "window")' | head -n 1)
    [[ -n $rec ]] || fail "$EX_DATAERR" "window-advisor recommended no window for $history"
    start_s=$(jq -r '.start' <<<"$rec" | xargs -I{} date -d {} +%s)
    pgs_emit window start="$(jq -r .start <<<"$rec")" end="$(jq -r .end <<<"$rec")" wait_s:=$((start_s > $(date +%s) ? start_s - $(date +%s) : 0))
    if ((start_s > $(date +%s))); then
      ((start_s - $(date +%s) <= max_wait)) || fail "$EX_TEMPFAIL" "the advised window starts in $((start_s - $(date +%s))) s, after --max-wait $max_wait s"
      pgs_log "waiting $((start_s - $(date +%s))) s for the advised window"
      while (($(date +%s) < start_s)); do sleep 1; done
    fi
  fi
  deadline=$((SECONDS + catchup_timeout))
  if [[ $mode == stream ]]; then
    # Convergence: every 5 s a `lag` record with the source's WAL rate, the target's replay
    # rate (over the last 30 s) and, when the lag shrinks, an ETA. When the lag has not shrunk
    # for --converge-window seconds the target cannot catch up: say so with the numbers now
    # rather than at --catchup-timeout.
    local row wal replay t0 now samples=() next_report=0 since_ms best_lag=-1 best_at limit=$max_lag polls=0 streamed_at
    t0=$(pgs_now_ms) best_at=$t0 streamed_at=$t0
    # What is not replayed at the stop crosses the link inside the downtime: with the link's
    # rate measured (--compress auto), switch only below what it carries in 0.25 s.
    if [[ -n $link_bps ]] && ((link_bps / 4 < limit)); then
      limit=$((link_bps / 4))
      pgs_log "switching once the lag is under $(numfmt --to=iec "$limit")B (what the measured link carries in 0.25 s; --max-lag $max_lag)"
    fi
    while :; do
      row=$(retry 10 src_psql -F ' ' -c "SELECT (pg_current_wal_lsn() - '0/0')::bigint, coalesce(max(pg_current_wal_lsn() - replay_lsn), -1)::bigint, coalesce(max(replay_lsn - '0/0'), -1)::bigint FROM pg_stat_replication WHERE application_name IN ('pgshift_target', 'pgshift_rejoin') OR pid IN (SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$slot')") ||
        fail "$EX_UNAVAILABLE" "cannot read the replication lag from the source: ${row//$'\n'/ }"
      read -r wal lag replay <<<"$row"
      ((lag >= 0 && lag <= limit)) && break
      now=$(pgs_now_ms)
      # Not streaming: the slot lost (nothing will come), or for --converge-window seconds.
      if ((lag < 0)); then
        ((++polls % 5)) || fail_if_slot_lost
        ((now - streamed_at < converge_window * 1000)) ||
          fail "$EX_UNAVAILABLE" "the target has not streamed from the source for $(((now - streamed_at) / 1000)) s (--converge-window); see $target_log; the standby and its slot are kept: run again to go on"
      else
        streamed_at=$now
      fi
      ((replay >= 0)) && samples+=("$now $wal $replay")
      if ((lag >= 0 && (best_lag < 0 || lag < best_lag))); then best_lag=$lag best_at=$now; fi
      if ((now >= next_report && ${#samples[@]} > 1)); then
        next_report=$((now + 5000))
        # The oldest sample of the last 30 s against the newest (older ones are dropped).
        local first="" smp rates kept=()
        for smp in "${samples[@]}"; do
          ((${smp%% *} >= now - 30000)) && kept+=("$smp")
        done
        samples=("${kept[@]}") first=${kept[0]}
        rates=$(awk -v a="$first" -v b="$now $wal $replay" -v lag="$lag" 'BEGIN {
          split(a, x, " "); split(b, y, " "); dt = (y[1] - x[1]) / 1000
          if (dt <= 0) { print "null null null"; exit }
          w = (y[2] - x[2]) / dt; r = (y[3] - x[3]) / dt
          printf "%.0f %.0f %s\n", w, r, (r > w ? sprintf("%.0f", lag / (r - w)) : "null") }')
        local wr rr eta
        read -r wr rr eta <<<"$rates"
        pgs_emit lag lag_bytes:="$lag" wal_bytes_per_s:="$wr" replay_bytes_per_s:="$rr" eta_s:="$eta" \
          waited_ms:=$((now - t0))
        if [[ -t 2 ]]; then
          pgs_log "waiting for the target: lag $(numfmt --to=iec-i --suffix=B "$lag"), the source writes $(numfmt --to=iec-i --suffix=B "${wr/null/0}")/s, the target replays $(numfmt --to=iec-i --suffix=B "${rr/null/0}")/s, ETA ${eta/null/?} s"
        fi
        since_ms=$((now - best_at))
        if ((since_ms >= converge_window * 1000)); then
          fail "$EX_TEMPFAIL" "the target cannot catch up: the source writes $(numfmt --to=iec "${wr/null/0}")B/s of WAL, the target receives and replays $(numfmt --to=iec "${rr/null/0}")B/s, and the lag ($(numfmt --to=iec "$lag")B) has not shrunk for $((since_ms / 1000)) s (--converge-window). Options: a quieter window (--when advised), more bandwidth, or archive mode (--mode archive: wal-ship sends the segments zstd-compressed); the standby and its slot are kept (the slot holds WAL on the source: --cleanup removes both)"
        fi
      fi
      ((SECONDS < deadline)) || fail "$EX_TEMPFAIL" "the target's replay lag is still $lag bytes after --catchup-timeout $catchup_timeout s (limit --max-lag $max_lag); the standby is kept: run again to go on"
      sleep 0.2
    done
  else
    # Archive mode: what the target has not replayed at the switch must travel through the
    # archive inside the downtime. So close the current segment (pg_switch_wal), wait until the
    # target has replayed it, and repeat until little WAL was written meanwhile.
    # A broken archive_command or restore_command is said within a minute, not at
    # --catchup-timeout: three failures in a row of the source's archiver since this wait
    # began, or no replay for a minute while the archive holds what the target waits for.
    local fails0 archived fails failed_wal last_failed seg row replayed="" progress_at=$SECONDS next_check=0
    fails0=$(retry 10 src_psql -c "SELECT failed_count FROM pg_stat_archiver") || fail "$EX_UNAVAILABLE" "reading pg_stat_archiver on the source: $fails0"
    while :; do
      switched=$(retry 10 src_psql -c "SELECT pg_switch_wal()") || fail "$EX_UNAVAILABLE" "pg_switch_wal on the source: $switched"
      until [[ $(tgt_psql -c "SELECT pg_last_wal_replay_lsn() >= '$switched'::pg_lsn" 2>/dev/null) == t ]]; do
        ((SECONDS < deadline)) || fail "$EX_TEMPFAIL" "the target did not replay $switched from the archive within --catchup-timeout $catchup_timeout s (check archive_command on the source and restore_command on the target)"
        if ((SECONDS >= next_check)); then
          next_check=$((SECONDS + 1))
          read -r archived fails failed_wal last_failed seg <<<"$(archiver_state "$fails0" "$switched")"
          archive_failing "${fails:-0}" "$failed_wal" "$last_failed" "during the wait" "the standby is kept: run again once the source archives"
          row=$(tgt_psql -c "SELECT pg_last_wal_replay_lsn()" 2>/dev/null) || row=""
          [[ $row != "$replayed" ]] && replayed=$row progress_at=$SECONDS
          if [[ $archived == t ]] && ((SECONDS - progress_at >= restore_stall)); then
            fail "$EX_UNAVAILABLE" "the target replayed nothing for $((SECONDS - progress_at)) s while the archive holds $seg, which it waits for: check restore_command on the target (see $target_log); the standby is kept: run again once it restores"
          fi
        fi
        sleep 0.05
      done
      lag=$(retry 10 src_psql -c "SELECT pg_current_wal_lsn() - '$switched'::pg_lsn") || fail "$EX_UNAVAILABLE" "reading the source's WAL position: $lag"
      ((lag <= max_lag)) && break
    done
  fi
  pgs_phase_end lag_bytes:="$lag" lag_limit_bytes:="${limit:-$max_lag}"
}

# --- 5 switchover ------------------------------------------------------------------------
downtime_ms=null ckpt_lsn="" new_tli=null wal_before_switch=""
switchover() {
  pgs_run_hook before_switchover
  pgs_phase_begin switchover
  if ((${#poolers[@]})); then
    # Now that the target runs: each pooler's host must reach it.
    pooler check --source "$source_host_addr:$source_port" --target "$TARGET_ADDR:$TARGET_PORT" \
      --pause-limit "$pause_limit" --switch-limit "$switch_timeout" >/dev/null || fail "$pooler_rc" "$pooler_msg"
  fi
  wal_before_switch=$(src_psql -c "SELECT pg_current_wal_lsn()" 2>/dev/null || true)
  local rc=0
  switch || rc=$?
  after_switch "$rc"
  read_switch_facts
  pgs_phase_end downtime_ms:="$downtime_ms" stop_ms:="$(jq '.stop_ms // null' <<<"$sw")" \
    promote_ms:="$(jq '.promote_ms // null' <<<"$sw")" stop_at_ms:="$(jq '.stop_at_ms // null' <<<"$sw")" \
    stopped_at_ms:="$(jq '.stopped_at_ms // null' <<<"$sw")" writable_at_ms:="$(jq '.writable_at_ms // null' <<<"$sw")" \
    checkpoint_lsn="$ckpt_lsn" new_timeline:="$new_tli" outcome="$(jq -r '.outcome // empty' <<<"$sw")" \
    promote_signals:="$(jq '.promote_signals // 0' <<<"$sw")"
}
read_switch_facts() {
  downtime_ms=$(jq '.downtime_ms // null' <<<"$sw")
  ckpt_lsn=$(jq -r '.checkpoint_lsn // empty' <<<"$sw")
  new_tli=$(jq '.new_timeline // null' <<<"$sw")
}

# --- 6 rejoin ----------------------------------------------------------------------------
# The old source comes back as a streaming standby of the new primary: its shutdown was clean
# and the new primary has all its WAL, so it follows the new timeline without a rewind. This
# keeps the pair replicated, and is what makes --reverse a plain switchover.
rejoin_old_source() {
  if ((${#poolers[@]})) && [[ $pooler_state != settled ]]; then
    # A run that resumes after its switchover: the poolers may still be paused, or point at
    # the old source.
    pooler_state=armed
    pooler_settle target ||
      fail "$EX_UNAVAILABLE" "the target is the primary, but a pooler does not reach it: $pooler_msg"
  fi
  ((rejoin)) || return 0
  pgs_run_hook before_rejoin
  pgs_phase_begin rejoin
  # The slot the target used on the source: a standby keeps its own slots, and this one
  # would hold WAL forever. The old source is stopped (fenced) or already following.
  if ! on_src test -f "$SOURCE_PGDATA/postmaster.pid"; then
    on_src rm -rf "$SOURCE_PGDATA/pg_replslot/$slot"
  fi
  follow "$SOURCE_SPEC" "$SOURCE_PGDATA" "$source_log" "$source_host_addr" "$source_port" \
    "$TARGET_ADDR" "$TARGET_PORT" ||
    fail "$EX_UNAVAILABLE" "the old source does not stream from the new primary; see $source_log (the new primary serves; run the same command again to retry the rejoin)"
  [[ $(retry 5 src_psql -c "SELECT pg_is_in_recovery()") == t ]] || fail "$EX_SOFTWARE" "the old source is not in recovery after fencing"
  pgs_phase_end rewound:=$rewound
}

# --- 7 verify ----------------------------------------------------------------------------
verdict=skipped
verify_pair() {
  ((verify && rejoin)) || return 0
  pgs_run_hook before_verify
  pgs_phase_begin verify
  local out_dir dbs db q rows_out sums_out rc_rows rc_sums db_verdict per_db=() n_equal=0 n_diff=0 n_err=0
  # The tools' own JSON lines go next to the report (or to a scratch directory).
  if [[ -n $report ]]; then
    out_dir=$(dirname "$report")
  else
    out_dir=$(mktemp -d /tmp/pgshift-verify.XXXXXX)
  fi
  # Every database a client can connect to (a cluster is migrated whole), or --databases.
  dbs=$(retry 5 tgt_psql -c "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1") ||
    fail "$EX_UNAVAILABLE" "cannot list the databases on the new primary: $dbs"
  if [[ -n $databases ]]; then
    local want=() w
    IFS=, read -ra want <<<"$databases"
    for w in "${want[@]}"; do
      grep -qxF -- "$w" <<<"$dbs" || fail "$EX_DATAERR" "--databases names '$w', which is not a connectable database on the new primary (it has: ${dbs//$'\n'/, })"
    done
    dbs=$(printf '%s\n' "${want[@]}")
  fi
  pgs_log "verifying $(wc -l <<<"$dbs") database(s); records in $out_dir/verify-*.jsonl"
  while IFS= read -r db; do
    [[ -n $db ]] || continue
    q=$(pgs_conninfo_quote "$db")
    rows_out=$out_dir/verify-${db//[^A-Za-z0-9_.-]/_}-rowcount.jsonl sums_out=$out_dir/verify-${db//[^A-Za-z0-9_.-]/_}-checksum.jsonl
    rc_rows=0 rc_sums=0
    "$bin/rowcount-diff" --source "$tgt_dsn dbname=$q" --target "$src_dsn dbname=$q" >"$rows_out" || rc_rows=$?
    "$bin/pg-checksum" --source "$tgt_dsn dbname=$q" --target "$src_dsn dbname=$q" --wait-replay --timeout 120s \
      --recheck 3 >"$sums_out" || rc_sums=$?
    ((rc_rows <= 1)) || pgs_log "warning: rowcount-diff failed on database $db (exit $rc_rows); see $rows_out"
    case $rc_sums in
      0) db_verdict=equal n_equal=$((n_equal + 1)) ;;
      1) db_verdict=different n_diff=$((n_diff + 1)) ;;
      *) db_verdict=error n_err=$((n_err + 1)) ;;
    esac
    ((rc_sums == 0)) || pgs_log "database $db: $db_verdict (pg-checksum exit $rc_sums); see $sums_out"
    per_db+=("$(jq -c -n --arg db "$db" --arg v "$db_verdict" --argjson rr "$rc_rows" --argjson rs "$rc_sums" \
      --argjson rsum "$(tail -n 1 "$rows_out" 2>/dev/null | jq -c . 2>/dev/null || echo null)" \
      --argjson ssum "$(tail -n 1 "$sums_out" 2>/dev/null | jq -c . 2>/dev/null || echo null)" \
      '{database: $db, verdict: $v, rowcount_exit: $rr, checksum_exit: $rs, rowcount_summary: $rsum, checksum_summary: $ssum}')")
  done <<<"$dbs"
  # One verdict for the cluster: equal only when every database is.
  if ((n_err > 0)); then
    verdict=error
  elif ((n_diff > 0)); then
    verdict=different
  else
    verdict=equal
  fi
  pgs_phase_end verdict="$verdict" databases:="$(printf '%s\n' "${per_db[@]}" | jq -c -s .)" \
    equal_databases:=$n_equal different_databases:=$n_diff error_databases:=$n_err
}

# --- Before the switchover: the question -------------------------------------------------
# confirm_switch: on a terminal without --yes (the only way here without it), ask before the
# source is stopped. The standby keeps streaming while the question waits; the lag is
# measured after the answer (wait_for_switch). Anything but y or yes stops the run as an
# interruption does: the target stays a standby of the source, exit 75, run again to go on.
confirm_switch() {
  ((!yes)) || return 0
  local answer=""
  phase=confirm
  printf '%s: stop %s and switch to %s? [y/N] ' "$PGS_NAME" "$src_id" "$tgt_id" >&2
  read -r answer || answer=""
  case ${answer,,} in
    y | yes) pgs_log "answered yes: switching over" ;;
    *) fail "$EX_TEMPFAIL" "not switched: answered no; run again to go on" ;;
  esac
}

# --- --dry-run: the plan ------------------------------------------------------------------
# print_plan: what a run of this command would do from here, as a `plan` record (plan:
# "migrate") and in words on stderr; then the summary, and exit 0. Nothing was changed.
print_plan() {
  local todo=() p steps="" base=false cmp=null
  if ((done_already)); then
    todo=()
  elif [[ $resume == switch ]]; then
    todo=(switchover)
  elif [[ $resume != after_switch ]]; then
    todo=(preflight)
    if ((fresh_target)); then todo+=(base_copy); base=true; fi
    todo+=(catch_up)
    ((yes)) || todo+=(confirm)
    todo+=(wait switchover)
  fi
  if ((!done_already)); then
    ((rejoin)) && todo+=(rejoin)
    ((rejoin && verify)) && todo+=(verify)
  fi
  ((fresh_target)) && cmp=$(pgs_json_str "$compress")
  for p in "${todo[@]}"; do steps+="${steps:+,}$(pgs_json_str "$p")"; done
  pgs_emit plan plan=migrate dry_run:=true source="$src_id" target="$tgt_id" mode="$mode" when="$when" \
    phases:="[$steps]" base_copy:=$base compression:="$cmp" switchover=pg-switch \
    poolers:=$((${#poolers[@]} / 4)) confirm="$( ((yes)) && echo yes || echo ask)" \
    resume="${resume:-none}" remove_partial_copy:="$( ((copy_cut && !resume_copy)) && echo true || echo false)" \
    resume_partial_copy:="$( ((resume_copy)) && echo true || echo false)" \
    already_done:="$( ((done_already)) && echo true || echo false)" slot="$slot" \
    target_pgdata="$TARGET_PGDATA" journal="$journal"
  {
    printf 'plan (dry run: nothing was changed):\n'
    printf '  migrate %s (%s) to %s (%s), %s mode, switch %s\n' "$src_id" "$SOURCE_PGDATA" "$tgt_id" \
      "$TARGET_PGDATA" "$mode" "$when"
    if ((done_already)); then
      printf '  nothing to do: %s is the primary and %s follows it (to move back: --reverse)\n' "$tgt_id" "$src_id"
    fi
    [[ -z $resume ]] || printf '  resumes an interrupted run (%s; journal %s)\n' "$resume" "$journal"
    ((copy_cut && !resume_copy)) && printf '  removes the partial base copy in %s and its slot first\n' "$TARGET_PGDATA"
    ((resume_copy)) && printf '  resumes the partial base copy in %s (pgdata-sync: only the blocks that differ)\n' "$TARGET_PGDATA"
    for p in "${todo[@]}"; do
      case $p in
        preflight) printf '  preflight: passed\n' ;;
        base_copy) printf '  base_copy: pg_basebackup with slot %s, compression %s\n' "$slot" \
          "$( [[ $compress == auto ]] && echo "auto (measured when the copy starts)" || echo "$compress")" ;;
        catch_up) printf '  catch_up: the target %s as a standby (%s)\n' \
          "$( ((fresh_target)) && echo starts || echo "goes on")" "$mode" ;;
        confirm) printf '  confirm: asks "stop %s and switch to %s? [y/N]" (--yes: does not ask)\n' "$src_id" "$tgt_id" ;;
        wait) printf '  wait: until the replay lag is under %s bytes\n' "$max_lag" ;;
        switchover) printf '  switchover: pg-switch fences and stops the source, proves, promotes the target%s\n' \
          "$( ((${#poolers[@]})) && echo "; $((${#poolers[@]} / 4)) pooler(s) paused and pointed at it")" ;;
        rejoin) printf '  rejoin: the old source follows the new primary\n' ;;
        verify) printf '  verify: pg-checksum and rowcount-diff over %s\n' "${databases:-every database}" ;;
      esac
    done
  } >&2
  pgs_emit summary success:=true exit_code:=0 dry_run:=true journal="$journal" elapsed_ms:=$(($(pgs_now_ms) - run_start))
  trap - EXIT
  exit 0
}

# --- Under way: --abort, and a copy cut short -------------------------------------------
# (Here, after every function: a failure calls recover, stop_watch and the rest.)
# --abort: undo what is under way, if that is still safe, and stop.
if ((abort)); then
  phase=abort
  case $resume in
    "")
      pgs_note aborted what=nothing
      pgs_emit summary success:=true exit_code:=0 aborted=nothing journal="$journal" elapsed_ms:=$(($(pgs_now_ms) - run_start))
      trap - EXIT
      exit 0 ;;
    switch | after_switch)
      rc=0
      switch --abort || rc=$?
      outcome=$(jq -r '.outcome // "unknown"' <<<"$sw")
      # The dead run may have left the poolers paused: they resume at whichever host is
      # the primary now (the source, rolled back; the target, if it could not be).
      pooler_settle || pgs_log "a pooler could not be settled: $pooler_msg"
      if ((rc == 0)); then
        pgs_note aborted what=switchover outcome="$outcome"
        pgs_emit summary success:=true exit_code:=0 aborted=switchover outcome="$outcome" journal="$journal" \
          elapsed_ms:=$(($(pgs_now_ms) - run_start))
        trap - EXIT
        exit 0
      fi
      state=none
      ((rc == 1)) && fail "$EX_DIFF" "cannot abort: the target was promoted and may have taken writes; to move back, run with --reverse (the journal stays open: a run of this command goes on)"
      ((rc == 126)) && jq -r '.commands[]? | "  " + .' <<<"$sw" >&2
      fail "$rc" "--abort could not confirm the target is not promoted; nothing more was touched" ;;
    *)
      # Before the switchover the source serves (its clients first: a dead run may have
      # left the poolers paused): remove the copy the interrupted run made, and its slot.
      pooler_settle source || pgs_log "a pooler could not be settled: $pooler_msg"
      what=run
      if [[ $(jq -r '.copied' <<<"$last_run") == true ]]; then
        fresh_target=1 what=copy
        # Cut in the copy: its pg_basebackup may outlive the dead run and hold the slot
        # (then not dropped). (A finished copy is a standby streaming under the same name.)
        if [[ $resume == base_copy ]]; then stop_left_copy || left_copy_running; fi
        if on_tgt test -f "$TARGET_PGDATA/PG_VERSION"; then remove_target; else drop_slot; fi
      else
        # No run since the last that ended made a copy: the target was a standby before (the
        # old source, rejoined by the migration before): it stays, and so does its slot.
        pgs_log "the target $tgt_id was a standby before this migration: it is kept"
      fi
      pgs_note aborted what="$what"
      pgs_emit summary success:=true exit_code:=0 aborted="$what" journal="$journal" elapsed_ms:=$(($(pgs_now_ms) - run_start))
      trap - EXIT
      exit 0 ;;
  esac
fi

copy_cut=0 resume_copy=0
if [[ $resume == base_copy ]]; then
  # Cut during the base copy: the copy is partial. The base copy resumes it (pgdata-sync),
  # or with --fresh-copy it goes, with its slot, and the copy starts again (a dry run only
  # says so).
  if on_tgt test -e "$TARGET_PGDATA/PG_VERSION" && ! on_tgt test -f "$TARGET_PGDATA/standby.signal"; then
    fresh_target=1 copy_cut=1
    if ((!fresh_copy)); then
      resume_copy=1
    elif ((!dry_run)); then
      stop_left_copy || left_copy_running
      remove_target
    fi
  fi
fi

# --- The runbook -------------------------------------------------------------------------
done_already=0 fresh_target=0 rewound=false
if ((dry_run)); then
  # After an interrupted switchover the preflight's questions do not apply: the plan is to
  # finish it (pg-switch decides, with its proofs, in the real run).
  [[ $resume == switch || $resume == after_switch ]] || preflight
  print_plan
fi
case $resume in
  switch)
    # Interrupted inside the switchover: pg-switch looks at both hosts and finishes it (with
    # its proofs) or rolls back; then this run goes on from there.
    pgs_phase_begin switchover resumed:=true
    rc=0
    switch || rc=$?
    if ((rc == 1)); then
      pgs_log "the interrupted switchover was rolled back; switching again"
      state=standby
      # The source serves again. Its clients wait in a pooler the dead run paused: resume
      # it now, not after this run's preflight and catch-up (its switchover pauses it again).
      pooler_settle source || pgs_log "a pooler could not be settled: $pooler_msg"
      pgs_phase_end outcome=rolled_back
      preflight
      catch_up
      confirm_switch
      wait_for_switch
      switchover
    else
      after_switch "$rc"
      read_switch_facts
      pgs_phase_end downtime_ms:="$downtime_ms" checkpoint_lsn="$ckpt_lsn" new_timeline:="$new_tli" \
        outcome="$(jq -r '.outcome // empty' <<<"$sw")" resumed:=true
    fi
    ;;
  after_switch) state=switched ;;
  *)
    # An interrupted run may have died with the poolers paused (before the switchover's
    # journal shows it): the source still serves, so they resume on it first.
    if [[ -n $resume ]]; then
      pooler_settle || pgs_log "a pooler could not be settled: $pooler_msg"
    fi
    preflight
    if ((done_already)); then
      pgs_note "done" verdict=already_done
      pgs_emit summary success:=true exit_code:=0 already_done:=true new_primary="$TARGET_ADDR:$TARGET_PORT" \
        journal="$journal" elapsed_ms:=$(($(pgs_now_ms) - run_start))
      pgs_log "nothing to do: $TARGET_ADDR:$TARGET_PORT is the primary and $src_id follows it (to move back: --reverse)"
      trap - EXIT
      exit 0
    fi
    base_copy
    catch_up
    confirm_switch
    wait_for_switch
    switchover
    ;;
esac
rejoin_old_source
verify_pair

# --- 8 report ----------------------------------------------------------------------------
phase=report
wal_moved=0 wal_streamed=null
if [[ -n $ckpt_lsn && -n $wal_before_switch ]]; then
  wal_moved=$(tgt_psql -c "SELECT pg_wal_lsn_diff('$ckpt_lsn', '$wal_before_switch')::bigint" 2>/dev/null || echo 0)
fi
# Bytes over the network (the price of egress): the base copy as it crossed (compressed or
# not), and the WAL the target streamed from the copy's start to the switch's checkpoint,
# which crosses uncompressed. (Verification sends hashes: not counted.)
if [[ -n $copy_start_lsn && -n $ckpt_lsn ]]; then
  wal_streamed=$(tgt_psql -c "SELECT pg_wal_lsn_diff('$ckpt_lsn', '$copy_start_lsn')::bigint" 2>/dev/null || echo null)
fi
bytes_json=$(jq -cn --argjson b "$bytes_copied" --argjson w "${wire_bytes:-0}" --argjson l "$wal_streamed" \
  '{base_copy: $b, base_copy_wire: $w, wal_streamed: $l, wire_total: (if $l == null then null else $w + $l end)}')
egress_json=null
if [[ -n $egress_price ]]; then
  egress_json=$(jq -cn --argjson bytes "$bytes_json" --argjson p "$egress_price" \
    'if $bytes.wire_total == null then null else ((($bytes.wire_total / 1e9) * $p * 10000 | round) / 10000) end')
fi
code=$EX_OK
case $verdict in different) code=$EX_DIFF ;; error) code=$EX_SOFTWARE ;; esac
ok=true
((code == 0)) || ok=false
phases=$(for p in "${phase_order[@]}"; do printf '"%s":%s\n' "$p" "${phase_ms[$p]}"; done | paste -sd, -)
pgs_note "done" verdict="$verdict" exit_code:=$code
pgs_emit summary success:=$ok exit_code:=$code mode="$mode" downtime_ms:="$downtime_ms" \
  phases_ms:="{$phases}" bytes_copied:="$bytes_copied" wal_bytes_during_switch:="${wal_moved:-0}" \
  bytes:="$bytes_json" compression="$cmp_method${cmp_level:+:$cmp_level}" egress_price_per_gb:="${egress_price:-null}" \
  egress_estimate:="$egress_json" \
  verdict="$verdict" new_primary="$TARGET_ADDR:$TARGET_PORT" old_primary="$source_host_addr:$source_port" \
  checkpoint_lsn="$ckpt_lsn" new_timeline:="$new_tli" resumed="${resume:-none}" journal="$journal" \
  elapsed_ms:=$(($(pgs_now_ms) - run_start))
# The closing line, for a person.
wire_h=$(jq -r '.wire_total // empty' <<<"$bytes_json")
pgs_log "migrated $src_id to $tgt_id in $(((($(pgs_now_ms) - run_start) + 500) / 1000)) s, downtime ${downtime_ms:-?} ms, verify: ${verdict:-not run}${wire_h:+, $(numfmt --to=iec-i --suffix=B "$wire_h") on the wire}"
trap - EXIT
exit "$code"
