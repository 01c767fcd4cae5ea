#!/usr/bin/env bash
# setup-host.sh: make a PostgreSQL host ready for a pgshift migration (what an Ansible role
# would do), locally or over ssh. Idempotent: a second run changes nothing and says so.
#
#   setup-host.sh --role source --pgdata DIR [--host SPEC] [options]
#   setup-host.sh --role target --pgdata DIR [--host SPEC]
#
# Source role (a running cluster): settings through ALTER SYSTEM (wal_level=replica,
# max_wal_senders, max_replication_slots, wal_keep_size, wal_log_hints, hot_standby,
# listen_addresses, archive settings using wal-ship), a replication role with a
# scram-sha-256 password and its pg_hba.conf entries, a self-signed TLS certificate and
# ssl=on; then a reload, and a restart only with --restart when a setting needs one.
# Target role: PostgreSQL binaries present, the data directory absent or empty and owned by
# postgres with mode 0700.
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
#   --archive DEST              archive_mode=on, archive_command='WAL_SHIP push --quiet %p --to DEST'
#   --wal-ship PATH             wal-ship binary on that host (default: wal-ship on PATH)
#   --wal-keep-size SIZE        default 1GB
#   --no-ssl                    leave TLS alone
#   --restart                   restart the server if a changed setting needs it
set -euo pipefail
if ! declare -F pgs_log >/dev/null; then
  # shellcheck source=scripts/lib.sh
  . "$(dirname "$0")/lib.sh"
fi
PGS_NAME=setup-host

usage() { pgs_die "$EX_USAGE" "$1 (see the header of setup-host.sh for usage)"; }

role="" pgdata="" host=local listen="*" allow=0.0.0.0/0 repl_user=pgshift_repl
repl_password="" archive="" wal_ship=wal-ship wal_keep=1GB ssl=1 restart=0 remote=0
while (($#)); do
  case $1 in
    --role) role=${2:?}; shift ;;
    --pgdata) pgdata=${2:?}; shift ;;
    --host) host=${2:?}; shift ;;
    --listen) listen=${2:?}; shift ;;
    --allow) allow=${2:?}; shift ;;
    --repl-user) repl_user=${2:?}; shift ;;
    --repl-password-file)
      [[ -r ${2:?} ]] || usage "cannot read password file '$2'"
      repl_password=$(<"$2"); shift ;;
    --archive) archive=${2:?}; shift ;;
    --wal-ship) wal_ship=${2:?}; shift ;;
    --wal-keep-size) wal_keep=${2:?}; shift ;;
    --no-ssl) ssl=0 ;;
    --restart) restart=1 ;;
    --on-host) remote=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) usage "unknown option '$1'" ;;
  esac
  shift
done
[[ $role == source || $role == target ]] || usage "--role source|target is required"
[[ -n $pgdata ]] || usage "--pgdata DIR is required"
[[ $repl_user =~ ^[a-z_][a-z0-9_]*$ ]] || usage "--repl-user must be a plain lower-case name"
# On the host, the password comes in the script stream (see below), never in argv.
if ((remote)); then repl_password=${PGS_REPL_PASSWORD:-} && unset PGS_REPL_PASSWORD; fi

# Run the rest on the host itself: ship lib.sh and this script through stdin.
if ((!remote)) && [[ $host != local ]]; then
  pgs_host_reachable "$host" || pgs_die "$EX_UNAVAILABLE" "cannot run commands on $host (check ssh access: BatchMode, keys, host key)"
  args=(--role "$role" --pgdata "$pgdata" --listen "$listen" --allow "$allow"
    --repl-user "$repl_user" --wal-ship "$wal_ship" --wal-keep-size "$wal_keep" --on-host)
  [[ -n $archive ]] && args+=(--archive "$archive")
  ((ssl)) || args+=(--no-ssl)
  ((restart)) && args+=(--restart)
  # The password travels inside the script on stdin (a first line setting a variable), so
  # it is in no process's arguments on either machine.
  { printf 'PGS_REPL_PASSWORD=%q\n' "$repl_password"; cat "$(dirname "$0")/lib.sh" "$0"; } |
    pgs_on "$host" bash -s -- "${args[@]}"
  exit
fi

changed=0 pending_restart=0
note_change() { changed=$((changed + 1)); }

if [[ $role == target ]]; then
  [[ -x $PG_BIN/postgres ]] || pgs_die "$EX_UNAVAILABLE" "no PostgreSQL server binaries in $PG_BIN (install postgresql-15 or set PG_BIN)"
  version=$("$PG_BIN/postgres" --version)
  pgs_json check name=binaries value="$version"
  if [[ -e $pgdata && -n $(ls -A "$pgdata" 2>/dev/null) ]]; then
    pgs_die "$EX_DATAERR" "target data directory $pgdata is not empty (move it away or choose another --pgdata)"
  fi
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
  pgs_json summary success:=true role=target changed:=$changed pending_restart:=false
  exit 0
fi

[[ -f $pgdata/postmaster.pid ]] || pgs_die "$EX_UNAVAILABLE" "no server running on $pgdata (start it first: setup-host configures a running source)"
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
if [[ -n $archive ]]; then
  want+=("archive_mode=on" "archive_command=$wal_ship push --quiet %p --to $archive" "archive_timeout=60")
fi
if ((ssl)); then
  if [[ ! -f $pgdata/server.crt ]]; then
    cn=$(hostname)
    pgs_as_pg openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$cn" \
      -keyout "$pgdata/server.key" -out "$pgdata/server.crt" >/dev/null 2>&1 ||
      pgs_die "$EX_SOFTWARE" "openssl could not make a certificate in $pgdata (is openssl installed?)"
    chmod 600 "$pgdata/server.key"
    pgs_json file path="$pgdata/server.crt" action=created what="self-signed TLS certificate, CN=$cn"
    note_change
  fi
  # The certificate stays at the default, relative paths (server.crt, server.key in the data
  # directory), so a base backup carries a working configuration to the target.
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

# The replication role.
# The password goes to psql on stdin as an SQL literal (not as a -v argument, which any user
# sees in ps), in a session that logs no statement (log_statement = 'ddl' or 'all' would
# write it to the server log).
set_password() { # set_password CREATE|ALTER
  local q="'" lit
  lit=${repl_password//$q/$q$q}
  psql_local -v u="$repl_user" >/dev/null <<EOF
SET log_statement = 'none'; SET log_min_duration_statement = -1; SET log_min_error_statement = 'panic';
SET pg_stat_statements.track_utility = off;
SET password_encryption = 'scram-sha-256';
$1 ROLE :"u" LOGIN REPLICATION PASSWORD '$lit';
EOF
}
if [[ -n $repl_password ]]; then
  exists=$(psql_local -v u="$repl_user" <<<"SELECT count(*) FROM pg_roles WHERE rolname = :'u'")
  if [[ $exists == 0 ]]; then
    set_password CREATE
    pgs_json role name="$repl_user" action=created
    note_change
  else
    # Keep the password in step with the file.
    set_password ALTER
    pgs_json role name="$repl_user" action=unchanged
  fi
fi

# pg_hba.conf entries for the replication role (and pg_rewind/verification need a normal
# connection too).
hba=$(psql_local -c "SHOW hba_file")
for line in "hostssl replication $repl_user $allow scram-sha-256" \
  "host replication $repl_user $allow scram-sha-256" \
  "host all $repl_user $allow scram-sha-256"; do
  if grep -qxF "$line" "$hba"; then
    pgs_json file path="$hba" line="$line" changed:=false
  else
    # First match wins in pg_hba.conf: put ours at the top.
    existing=$(<"$hba")
    printf '%s\n%s\n' "$line" "$existing" >"$hba"
    pgs_json file path="$hba" line="$line" changed:=true
    note_change
  fi
done

if ((changed > 0)); then
  psql_local -c "SELECT pg_reload_conf()" >/dev/null
  pgs_json action name=reload
fi
if ((pending_restart)); then
  if ((restart)); then
    pgs_as_pg "$PG_BIN/pg_ctl" -D "$pgdata" -m fast -w -t 120 restart -l "$pgdata/../server.log" >/dev/null
    pending_restart=0
    pgs_json action name=restart
  else
    pgs_log "settings changed that need a restart; run again with --restart, or restart $pgdata yourself"
  fi
fi
pr=false
((pending_restart)) && pr=true
pgs_json summary success:=true role=source changed:=$changed pending_restart:=$pr
