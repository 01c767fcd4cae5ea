#!/usr/bin/env bash
# setup-host.sh: make a PostgreSQL host ready for a pgshift migration (what an Ansible role
# would do), locally or over ssh. Idempotent: a second run changes nothing and says so.
#
#   setup-host.sh --role source (--pgdata DIR | --cluster V/NAME) [--host SPEC] [options]
#   setup-host.sh --role target (--pgdata DIR | --cluster V/NAME) [--host SPEC] [options]
#   setup-host.sh --role pooler --source CONNINFO [--host SPEC] [options]   (scripts/setup-pooler.sh)
#
# A cluster is named by its data directory (any layout) or, for a Debian/Ubuntu
# postgresql-common cluster, by VERSION/NAME as pg_lsclusters shows it (its configuration
# stays under /etc/postgresql/V/NAME). See lib.sh "Clusters on a host: layouts".
#
# Source role (a running cluster): settings through ALTER SYSTEM (wal_level=replica,
# max_wal_senders, max_replication_slots, wal_keep_size, wal_log_hints, hot_standby,
# listen_addresses, archive settings using wal-ship), a replication role whose password is
# set as a SCRAM verifier computed here (pg-scram: the password reaches neither the host nor
# the server), its pg_hba.conf entries (hostssl only, unless --no-tls), TLS (below); then a
# reload, and a restart only with --restart when a setting needs one.
# Target role: PostgreSQL binaries present, the data directory absent or empty and owned by
# postgres with mode 0700. A --cluster V/NAME that does not exist is made with
# pg_createcluster (--port) and its fresh data directory emptied; a postgresql-common target
# gets the replication entries in its own pg_hba.conf and listen_addresses in
# conf.d/pgshift.conf (its own configuration files stay; migrate.sh carries the settings
# that matter).
#
# TLS: with --tls-ca DIR (on this, the control machine; a CA is made there when DIR holds
# none, or the one there is taken), the host makes a key (it never leaves the host) and a
# certificate request, the CA here signs it for --tls-name NAMEs, and the certificate, key and
# CA certificate go to the cluster's pgshift directory beside its data directory
# (DIR/../pgshift-BASENAME). migrate.sh then connects with sslmode=verify-full. Without
# --tls-ca a source keeps the CA-signed certificate an earlier run installed, or else gets a
# self-signed one (for migrate.sh --tls require).
#
# Output: JSON lines on stdout, one per check or change (`setting`, `file`, `role`,
# `action`), and a `summary` with `changed` and `pending_restart`.
#
# Options:
#   --host SPEC                 local (default), ssh://[user@]host[:port], netns://NAME
#   --listen ADDRS              listen_addresses (default '*')
#   --allow CIDR                client network for the replication entries (default 0.0.0.0/0)
#   --repl-user NAME            replication role (default pgshift_repl)
#   --repl-password-file FILE   its password (read here, on the control machine)
#   --tls-ca DIR                sign the host's certificate with the CA in DIR (made if absent)
#   --tls-name NAME             a name (address or DNS name) clients use for the host;
#                               repeatable; default: the --listen address, else the host name
#   --no-tls                    leave TLS alone; pg_hba entries are `host`, not `hostssl`
#   --port PORT                 the port of a cluster --cluster creates (target role)
#   --logical                   ready for migrate.sh --mode logical, on either side: wal_level=logical,
#                               max_replication_slots and max_wal_senders 20, max_logical_replication_workers 8,
#                               max_worker_processes 16 (a restart)
#   --archive DEST              archive_mode=on, archive_command='WAL_SHIP push --quiet %p --to DEST'
#                               (the archive made one first: wal-ship init)
#   --wal-ship PATH             wal-ship binary on that host (default: wal-ship on PATH)
#   --wal-keep-size SIZE        default 1GB
#   --bin DIR                   where pg-scram is (default: target/release of this checkout,
#                               then PATH)
#   --restart                   restart the server if a changed setting needs it
set -euo pipefail
if ! declare -F pgs_log >/dev/null; then
  # shellcheck source=scripts/lib.sh
  . "$(dirname "$0")/lib.sh"
fi
PGS_NAME=setup-host
# The pooler role is a script of its own (a PgBouncer in front of the source).
for ((i = 1; i < $#; i++)); do
  j=$((i + 1))
  [[ ${!i} == --role && ${!j} == pooler ]] && exec "$(dirname "$0")/setup-pooler.sh" "$@"
done

usage() { pgs_usage "$1"; }

role="" pgdata="" cluster="" host=local listen="*" allow=0.0.0.0/0 repl_user=pgshift_repl
pwfile="" archive="" wal_ship=wal-ship wal_keep=1GB tls=1 tls_ca="" tls_names=() port="" logical=0
restart=0 remote=0 bin=""
while (($#)); do
  case $1 in
    --role) pgs_val "$@"; role=$2; shift ;;
    --pgdata) pgs_val "$@"; pgdata=$2; shift ;;
    --cluster) pgs_val "$@"; cluster=$2; shift ;;
    --host) pgs_val "$@"; host=$2; shift ;;
    --listen) pgs_val "$@"; listen=$2; shift ;;
    --allow) pgs_val "$@"; allow=$2; shift ;;
    --repl-user) pgs_val "$@"; repl_user=$2; shift ;;
    --repl-password-file)
      pgs_val "$@"
      [[ -r $2 ]] || usage "cannot read password file '$2'"
      pwfile=$2; shift ;;
    --tls-ca) pgs_val "$@"; tls_ca=$2; shift ;;
    --tls-name) pgs_val "$@"; tls_names+=("$2"); shift ;;
    --no-tls | --no-ssl) tls=0 ;;
    --port) pgs_val "$@"; port=$2; shift ;;
    --archive) pgs_val "$@"; archive=$2; shift ;;
    --logical) logical=1 ;;
    --wal-ship) pgs_val "$@"; wal_ship=$2; shift ;;
    --wal-keep-size) pgs_val "$@"; wal_keep=$2; shift ;;
    --bin) pgs_val "$@"; bin=$2; shift ;;
    --restart) restart=1 ;;
    --on-host) remote=1 ;;
    -h | --help) pgs_help ;;
    *) usage "unknown option '$1'" ;;
  esac
  shift
done
[[ $role == source || $role == target ]] || usage "--role source|target|pooler is required"
[[ -n $pgdata || -n $cluster ]] || usage "--pgdata DIR or --cluster VERSION/NAME is required"
[[ -z $pgdata || -z $cluster ]] || usage "give --pgdata or --cluster, not both"
[[ -z $cluster || $cluster =~ ^[0-9]+/[A-Za-z0-9._-]+$ ]] || usage "--cluster takes VERSION/NAME as pg_lsclusters shows it (e.g. 15/main)"
[[ -z $port || $port =~ ^[0-9]+$ ]] || usage "--port takes a number"
[[ $repl_user =~ ^[a-z_][a-z0-9_]*$ ]] || usage "--repl-user must be a plain lower-case name"
[[ -z $tls_ca ]] || ((tls)) || usage "--tls-ca and --no-tls contradict each other"

# set_host_args: the options of the part that runs on a host other than this one (this
# script again, --on-host) into the array host_args, from the values parsed above (once
# --pgdata is the data directory pgs_cluster_info found). Every
# option of the loop above is either here or used on this machine only: --host, --cluster
# (the host gets its data directory), --repl-password-file (the host gets the SCRAM
# verifier), --tls-ca (its directory goes as PGS_TLS_CA), --tls-name, --port (for
# pg_createcluster), --bin (for pg-scram).
set_host_args() {
  host_args=(--role "$role" --pgdata "$pgdata" --listen "$listen" --allow "$allow"
    --repl-user "$repl_user" --wal-ship "$wal_ship" --wal-keep-size "$wal_keep" --on-host)
  [[ -z $archive ]] || host_args+=(--archive "$archive")
  ((tls)) || host_args+=(--no-tls)
  ((!logical)) || host_args+=(--logical)
  ((!restart)) || host_args+=(--restart)
}

changed=0 pending_restart=0
note_change() { changed=$((changed + 1)); }

# --- Here, on the control machine: what needs it (the CA's key, pg-scram) ----------------
if ((!remote)); then
  [[ $host == local ]] || pgs_host_reachable "$host" ||
    pgs_die "$EX_UNAVAILABLE" "cannot run commands on $host (check ssh access: BatchMode, keys, host key)"
  # The role's password becomes a SCRAM verifier here: the host and its server never see it.
  verifier=""
  if [[ $role == source && -n $pwfile ]]; then
    scram=${bin:-$PGS_ROOT/target/release}/pg-scram
    [[ -x $scram ]] || scram=$(command -v pg-scram || true)
    [[ -n $scram ]] || pgs_die "$EX_UNAVAILABLE" "pg-scram not found (make release, or --bin DIR where it is)"
    verifier=$("$scram" <"$pwfile" | jq -r 'select(.type == "verifier") | .verifier') || verifier=""
    [[ -n $verifier ]] ||
      pgs_die "$EX_DATAERR" "cannot compute the SCRAM verifier of $pwfile (see pg-scram's message above)"
  fi
  # A postgresql-common target cluster that does not exist yet: create it (for its
  # configuration files and port), then empty the data directory initdb just filled.
  # shellcheck disable=SC2016  # expanded on the host
  if [[ $role == target && -n $cluster ]] &&
    ! pgs_on_pg "$host" sh -c 'pg_lsclusters --no-header 2>/dev/null | awk -v w="$1" '\''($1 "/" $2) == w { f = 1 } END { exit !f }'\''' x "$cluster"; then
    pgs_on_pg "$host" sh -c 'command -v pg_createcluster >/dev/null' ||
      pgs_die "$EX_UNAVAILABLE" "no cluster $cluster on $host and no pg_createcluster to make one (install postgresql-common, or give --pgdata)"
    out=$(pgs_on_pg "$host" pg_createcluster ${port:+-p "$port"} "${cluster%%/*}" "${cluster#*/}" 2>&1) ||
      pgs_die "$EX_SOFTWARE" "pg_createcluster $cluster failed on $host: ${out//$'\n'/ }"
    declare -A fresh
    pgs_cluster_info "$host" "$cluster" fresh
    # shellcheck disable=SC2016  # expanded on the host
    pgs_on_pg "$host" sh -c 'rm -rf "${1:?}"/* "${1:?}"/.[!.]* 2>/dev/null; true' x "${fresh[pgdata]}"
    pgs_json action name=create_cluster cluster="$cluster" port="${fresh[port]}" pgdata="${fresh[pgdata]}" conf_dir="${fresh[conf_dir]}"
    note_change
  fi
  declare -A info
  pgs_cluster_info "$host" "${cluster:-$pgdata}" info
  pgdata=${info[pgdata]}
  if [[ -n $tls_ca ]]; then
    [[ $(pgs_ca_ensure "$tls_ca") == created ]] && pgs_json file path="$tls_ca/ca.crt" action=created what="pgshift CA (its key stays in $tls_ca)" && note_change
    if ((${#tls_names[@]} == 0)); then
      if [[ $listen != "*" && $listen != *,* && $listen != localhost ]]; then
        tls_names=("$listen")
      else
        tls_names=("$(pgs_on "$host" hostname -f 2>/dev/null || pgs_on "$host" hostname)")
      fi
    fi
    res=$(pgs_tls_issue "$tls_ca" "$host" "${info[aux]}" "${tls_names[@]}")
    pgs_json file path="${info[aux]}/server.crt" action="$res" what="certificate signed by the CA in $tls_ca" \
      names="${tls_names[*]}"
    [[ $res == issued ]] && note_change
  fi
  if [[ $host != local ]]; then
    # Run the rest on the host itself: ship lib.sh, the remote scripts and this script
    # through stdin. What only this machine had (the verifier, the count of changes) is set
    # by the first lines of that stream: in no process's arguments on either machine.
    set_host_args
    {
      printf 'PGS_REPL_VERIFIER=%q PGS_CHANGED=%q PGS_TLS_CA=%q\n' "$verifier" "$changed" "$tls_ca"
      printf 'PGS_CLUSTER_INFO_SH=%q\nPGS_START_SH=%q\n' "$PGS_CLUSTER_INFO_SH" "$PGS_START_SH"
      cat "$(dirname "$0")/lib.sh" "$0"
    } | pgs_on "$host" bash -s -- "${host_args[@]}"
    exit
  fi
else
  verifier=${PGS_REPL_VERIFIER:-} changed=${PGS_CHANGED:-0} tls_ca=${PGS_TLS_CA:-}
  unset PGS_REPL_VERIFIER
  declare -A info
  pgs_cluster_info local "$pgdata" info
fi

# --- On the host ---------------------------------------------------------------------------
aux=${info[aux]}
# A CA-signed certificate made by this run or an earlier one (a later run without --tls-ca
# keeps it: re-running setup-host never downgrades verify-full to a self-signed certificate).
signed=0
((tls)) && [[ -f $aux/server.crt && -f $aux/server.key && -f $aux/ca.crt ]] && signed=1

# add_hba_lines FILE LINE...: put each LINE at the top of pg_hba.conf FILE (first match
# wins) unless it is there; with TLS, remove the `host` twins of `hostssl` lines (an entry
# that would let the role in without TLS).
add_hba_lines() {
  local hba=$1 line existing
  shift
  for line in "$@"; do
    if ((tls)) && grep -qxF "${line/#hostssl/host}" "$hba"; then
      existing=$(grep -vxF "${line/#hostssl/host}" "$hba")
      printf '%s\n' "$existing" >"$hba"
      pgs_json file path="$hba" line="${line/#hostssl/host}" action=removed
      note_change
    fi
    if grep -qxF "$line" "$hba"; then
      pgs_json file path="$hba" line="$line" changed:=false
    else
      existing=$(<"$hba")
      printf '%s\n%s\n' "$line" "$existing" >"$hba"
      pgs_json file path="$hba" line="$line" changed:=true
      note_change
    fi
  done
}
hba_kind=hostssl
((tls)) || hba_kind=host
hba_lines=("$hba_kind replication $repl_user $allow scram-sha-256" "$hba_kind all $repl_user $allow scram-sha-256")

if [[ $role == target ]]; then
  [[ -x $PG_BIN/postgres ]] || pgs_die "$EX_UNAVAILABLE" "no PostgreSQL server binaries in $PG_BIN (install postgresql-15 or set PG_BIN)"
  version=$("$PG_BIN/postgres" --version)
  pgs_json check name=binaries value="$version" layout="${info[layout]}"
  if [[ -e $pgdata && -n $(ls -A "$pgdata" 2>/dev/null) ]]; then
    pgs_die "$EX_DATAERR" "target data directory $pgdata is not empty (move it away or choose another --pgdata)"
  fi
  [[ ${info[running]} == no ]] || pgs_die "$EX_DATAERR" "a server runs on the target $pgdata (stop it first)"
  if [[ ! -d $pgdata ]]; then
    mkdir -p "$pgdata"
    pgs_json action name=create_dir path="$pgdata"
    note_change
  fi
  if [[ $(stat -c '%U %a' "$pgdata") != "postgres 700" && $(id -u) == 0 ]]; then
    chown postgres:postgres "$pgdata"
    chmod 700 "$pgdata"
    pgs_json action name=fix_owner path="$pgdata" owner=postgres mode=0700
    note_change
  fi
  if [[ ${info[layout]} == debian ]]; then
    # Its own configuration stays; it must listen where the other host reaches it and let
    # the replication role in (the old source follows it after the switch).
    conf=${info[conf_dir]}/conf.d/pgshift.conf
    want_conf="# pgshift setup-host.sh (the target's own settings; migrate.sh adds the migrated ones)
listen_addresses = $(pgs_conf_quote "$listen")"
    if [[ ! -f $conf || $(<"$conf") != "$want_conf" ]]; then
      mkdir -p "$(dirname "$conf")"
      printf '%s\n' "$want_conf" >"$conf"
      pgs_json file path="$conf" changed:=true what="listen_addresses = '$listen'"
      note_change
    else
      pgs_json file path="$conf" changed:=false
    fi
    add_hba_lines "${info[hba_file]}" "${hba_lines[@]}"
  fi
  pgs_json summary success:=true role=target changed:="$changed" pending_restart:=false layout="${info[layout]}" \
    pgdata="$pgdata" port="${info[port]}" tls:="$( ((signed)) && echo '"verify-full"' || echo null)"
  exit 0
fi

[[ ${info[running]} == yes ]] || pgs_die "$EX_UNAVAILABLE" "no server running on $pgdata (start it first: setup-host configures a running source)"
sockdir=$(sed -n 5p "$pgdata/postmaster.pid")
port=$(sed -n 4p "$pgdata/postmaster.pid")
psql_local() { pgs_as_pg "$PG_BIN/psql" -XAtq -v ON_ERROR_STOP=1 -h "$sockdir" -p "$port" -U postgres -d postgres "$@"; }

# Settings: compare the value the server would use after a reload (pg_file_settings wins over
# pg_settings for pending edits) with the wanted one; change through ALTER SYSTEM only if
# different.
want=(
  "wal_level=replica"
  "max_wal_senders=10"
  "max_replication_slots=10"
  "wal_keep_size=$wal_keep"
  "wal_log_hints=on"
  "hot_standby=on"
  "listen_addresses=$listen"
)
if ((logical)); then
  # The logical mode's (lib.sh): a setting above takes its value there, the others follow.
  for kv in "${PGS_LOGICAL_SETTINGS[@]}"; do
    for i in "${!want[@]}"; do
      if [[ ${want[i]%%=*} == "${kv%%=*}" ]]; then want[i]=$kv; continue 2; fi
    done
    want+=("$kv")
  done
fi
if [[ -n $archive ]]; then
  # The archive made one (as the server's user, who pushes into it): wal-ship push refuses a
  # directory without its marker, which is what a share that is not mounted looks like.
  init_out=$(pgs_as_pg "$wal_ship" init --archive "$archive") ||
    pgs_die "$EX_UNAVAILABLE" "wal-ship init --archive $archive failed (its message is above): the archive must be reachable and writable by the server's user"
  [[ $(jq -r 'select(.type == "archive") | .created' <<<"$init_out" 2>/dev/null) != true ]] || {
    pgs_json file path="$archive" action=created what="wal-ship archive (wal-ship init)"
    note_change
  }
  want+=("archive_mode=on" "archive_command=$(pgs_wal_cmd_word "$wal_ship") push --quiet %p --to $(pgs_wal_cmd_word "$archive")" "archive_timeout=60")
fi
if ((signed)); then
  # The CA-signed certificate, in the cluster's pgshift directory (absolute paths: migrate.sh
  # points the target at its own).
  want+=("ssl=on" "ssl_cert_file=$aux/server.crt" "ssl_key_file=$aux/server.key" "ssl_ca_file=$aux/ca.crt")
elif ((tls)); then
  if [[ ! -f $pgdata/server.crt ]]; then
    cn=$(hostname)
    pgs_as_pg openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$cn" \
      -keyout "$pgdata/server.key" -out "$pgdata/server.crt" >/dev/null 2>&1 ||
      pgs_die "$EX_SOFTWARE" "openssl could not make a certificate in $pgdata (is openssl installed?)"
    chmod 600 "$pgdata/server.key"
    pgs_json file path="$pgdata/server.crt" action=created what="self-signed TLS certificate, CN=$cn (for --tls require; --tls-ca DIR signs one for verify-full)"
    note_change
  fi
  # Relative paths (server.crt, server.key in the data directory): a base backup carries a
  # working configuration to the target.
  want+=("ssl=on" "ssl_cert_file=server.crt" "ssl_key_file=server.key")
fi

for kv in "${want[@]}"; do
  name=${kv%%=*} value=${kv#*=}
  row=$(psql_local -v name="$name" -F $'\t' <<'SQL'
SELECT coalesce((SELECT f.setting FROM pg_file_settings f
                  WHERE f.name = s.name AND f.applied IS NOT NULL AND f.error IS NULL
                  ORDER BY f.seqno DESC LIMIT 1), s.setting),
       s.context, s.unit
FROM pg_settings s WHERE s.name = :'name'
SQL
  )
  IFS=$'\t' read -r current context unit <<<"$row"
  # Compare sizes in the server's own unit: ask the server to normalise the wanted value.
  normalised=$value
  if [[ -n $unit ]]; then
    normalised=$(psql_local -v v="$value" -v u="$unit" 2>/dev/null <<<"SELECT (pg_size_bytes(:'v') / pg_size_bytes('1' || CASE :'u' WHEN 'B' THEN 'bytes' ELSE :'u' END))::bigint" || printf '%s' "$value")
  fi
  if [[ $current == "$normalised" || $current == "$value" ]]; then
    pgs_json setting name="$name" value="$value" changed:=false
    continue
  fi
  psql_local -v name="$name" -v value="$value" >/dev/null <<<"ALTER SYSTEM SET :\"name\" = :'value'"
  restart_needed=false
  if [[ $context == postmaster ]]; then restart_needed=true pending_restart=1; fi
  pgs_json setting name="$name" old="$current" value="$value" changed:=true needs_restart:=$restart_needed
  note_change
done

# The replication role, with the verifier computed on the control machine. It goes to psql
# on stdin (not as a -v argument, which any user sees in ps), in a session that logs no
# statement; a verifier is not the password, but it is kept out of logs all the same.
set_password() { # set_password CREATE|ALTER
  psql_local -v u="$repl_user" >/dev/null <<EOF
SET log_statement = 'none'; SET log_min_duration_statement = -1; SET log_min_error_statement = 'panic';
SET pg_stat_statements.track_utility = off;
$1 ROLE :"u" LOGIN REPLICATION PASSWORD '$verifier';
EOF
}
if [[ -n $verifier ]]; then
  [[ $verifier =~ ^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$ ]] ||
    pgs_die "$EX_SOFTWARE" "the SCRAM verifier has an unexpected form"
  exists=$(psql_local -v u="$repl_user" <<<"SELECT count(*) FROM pg_roles WHERE rolname = :'u'")
  if [[ $exists == 0 ]]; then
    set_password CREATE
    pgs_json role name="$repl_user" action=created password=scram_verifier
    note_change
  else
    # Keep the password in step with the file (a fresh salt: not a change of the password).
    set_password ALTER
    pgs_json role name="$repl_user" action=unchanged password=scram_verifier
  fi
fi

# pg_hba.conf entries for the replication role (pg_rewind and verification need a normal
# connection too).
add_hba_lines "$(psql_local -c "SHOW hba_file")" "${hba_lines[@]}"

if ((changed > 0)); then
  psql_local -c "SELECT pg_reload_conf()" >/dev/null
  pgs_json action name=reload
fi
if ((pending_restart)); then
  if ((restart)); then
    pgs_as_pg "$PG_BIN/pg_ctl" -D "$pgdata" -m fast -w -t 120 stop >/dev/null
    pgs_pg_start local "$pgdata" "${info[log]}" ||
      pgs_die "$EX_SOFTWARE" "the server did not start again after the restart; see ${info[log]}"
    pending_restart=0
    pgs_json action name=restart
  else
    pgs_log "settings changed that need a restart; run again with --restart, or restart $pgdata yourself"
  fi
fi
pr=false
((pending_restart)) && pr=true
tls_json=null
((tls)) && tls_json='"require"'
((signed)) && tls_json='"verify-full"'
pgs_json summary success:=true role=source changed:="$changed" pending_restart:=$pr layout="${info[layout]}" \
  pgdata="$pgdata" tls:="$tls_json"
