#!/usr/bin/env bash
# shellcheck disable=SC2016  # the sh -c '...' bodies are expanded on the host
# setup-pooler.sh (run as `setup-host.sh --role pooler`): a PgBouncer in front of the source,
# on a host of its own or on the source's, so the application has one address that
# migrate.sh --pooler switches without a client error. Idempotent: a second run changes
# nothing and says so.
#
#   setup-host.sh --role pooler --source CONNINFO [--host SPEC] [options]
#
# --source is the source as this, the control machine, reaches it: a conninfo of a superuser
# (no password in it: a passfile or ~/.pgpass). From it come the databases to front and the
# login roles' SCRAM verifiers for the pooler's auth_file (read from pg_authid here; they go
# to the host through stdin and into a file only postgres reads: the pooler then logs each
# client in to the server with the client's own SCRAM proof, no password is stored).
#
# On the host: Debian's pgbouncer (installed with apt-get when missing and we are root there),
# run as postgres; pgbouncer.ini, userlist.txt and pgshift-hba.conf in --conf-dir; with TLS a
# key made on the host and a certificate signed by the CA in --tls-ca (as for a source), in
# CONF_DIR/pgshift. The settings are the ones a switchover needs: pool_mode=transaction,
# server_login_retry=0.1, query_wait_timeout=120, the server connections verified against the
# CA (server_tls_sslmode=verify-full). Authentication: auth_type=hba, by default
#     local   all  postgres                peer
#     hostssl all  all       0.0.0.0/0     scram-sha-256   (and ::/0)
# (`host` lines with --no-tls), or the pgbouncer hba file given with --hba. A changed file is
# written beside the old one and renamed over it; the first one pgshift replaces is kept as
# FILE.pgshift-prev. A running pgbouncer is reloaded (SIGHUP), or restarted when its listening
# address changed; one that is not running is started (the pgbouncer unit where systemd runs
# and --conf-dir is /etc/pgbouncer, else `pgbouncer -d`). Then its console must answer and a
# query through it must reach the source.
#
# Options:
#   --source CONNINFO     the source (required; see above)
#   --backend HOST:PORT   the source as the pooler's host reaches it (default: --source's)
#   --host SPEC           where the pooler runs: local (default), ssh://..., netns://NAME
#   --databases LIST      comma-separated databases to front (default: every database of the
#                         source that allows connections, templates aside)
#   --users LIST          roles for the auth_file (default: every role that can log in)
#   --listen ADDR         listen_addr (default *)
#   --port PORT           listen_port (default 6432)
#   --conf-dir DIR        where the configuration goes (default /etc/pgbouncer)
#   --admin-user NAME     admin_users beside postgres (for migrate.sh --pooler; default postgres)
#   --hba FILE            a pgbouncer hba file (read here) instead of the default above
#   --tls-ca DIR          sign the pooler's certificate with the CA in DIR (made if absent);
#                         the server connections are then verify-full against it
#   --tls-name NAME       a name clients use for the pooler (repeatable; default: --listen, else
#                         the host name)
#   --no-tls              no TLS to clients or servers (`host` lines in the default hba)
#   --pool-size N         default_pool_size (default 20)
#
# Output: JSON lines (`check`, `file`, `role`, `action`), then a summary with `changed`, the
# pooler's admin conninfo (`admin_dsn`, for migrate.sh --pooler) and the entries. Exit 0; 2
# usage; 65 the source has no such database or role, or no role has a usable password; 69
# the host, the source or pgbouncer cannot be reached, or pgbouncer is not installed and
# cannot be; 70 pgbouncer did not start.
set -euo pipefail
if ! declare -F pgs_log >/dev/null; then
  # shellcheck source=scripts/lib.sh
  . "$(dirname "$0")/lib.sh"
fi
PGS_NAME=setup-host

usage() { pgs_usage "$1"; }

source_dsn="" backend="" host=local databases="" users="" listen="*" port=6432 conf_dir=/etc/pgbouncer
admin_user=postgres hba_src="" tls=1 tls_ca="" tls_names=() pool_size=20
while (($#)); do
  case $1 in
    --role) [[ ${2:-} == pooler ]] || usage "setup-pooler.sh is the pooler role"; shift ;;
    --source) pgs_val "$@"; source_dsn=$2; shift ;;
    --backend) pgs_val "$@"; backend=$2; shift ;;
    --host) pgs_val "$@"; host=$2; shift ;;
    --databases) pgs_val "$@"; databases=$2; shift ;;
    --users) pgs_val "$@"; users=$2; shift ;;
    --listen) pgs_val "$@"; listen=$2; shift ;;
    --port) pgs_val "$@"; port=$2; shift ;;
    --conf-dir) pgs_val "$@"; conf_dir=$2; shift ;;
    --admin-user) pgs_val "$@"; admin_user=$2; shift ;;
    --hba)
      pgs_val "$@"
      [[ -r $2 ]] || usage "cannot read the hba file '$2'"
      hba_src=$2; shift ;;
    --tls-ca) pgs_val "$@"; tls_ca=$2; shift ;;
    --tls-name) pgs_val "$@"; tls_names+=("$2"); shift ;;
    --no-tls | --no-ssl) tls=0 ;;
    --pool-size) pgs_val "$@"; pool_size=$2; shift ;;
    --bin) shift ;; # setup-host's; nothing here needs the tools
    -h | --help) pgs_help ;;
    *) usage "unknown option '$1'" ;;
  esac
  shift
done
[[ -n $source_dsn ]] || usage "--source CONNINFO (the source, as this machine reaches it) is required"
source_dsn=$(pgs_url_conninfo "$source_dsn") || usage "--source names one server: give one host in it"
pgs_no_password "$source_dsn" || usage "the --source conninfo holds a password: $PGS_PASSWORD_HINT"
[[ $port =~ ^[0-9]+$ && $pool_size =~ ^[0-9]+$ ]] || usage "--port and --pool-size take numbers"
[[ $conf_dir == /* ]] || usage "--conf-dir takes an absolute path"
[[ $admin_user =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || usage "--admin-user must be a plain name"
[[ -z $tls_ca ]] || ((tls)) || usage "--tls-ca and --no-tls contradict each other"
[[ -z $backend || $backend =~ ^[^:]+:[0-9]+$ || $backend =~ ^\[.*\]:[0-9]+$ ]] || usage "--backend takes HOST:PORT"

changed=0
note_change() { changed=$((changed + 1)); }
src() { PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-10} "$PG_BIN/psql" -XAtq -v ON_ERROR_STOP=1 -d "$source_dsn" "$@"; }

# --- The source, read from here ----------------------------------------------------------
if ! who=$(src -F $'\t' -c "SELECT current_setting('port'), inet_server_addr(), rolsuper FROM pg_roles WHERE rolname = current_user" 2>&1); then
  pgs_die "$EX_UNAVAILABLE" "cannot connect to the source ($source_dsn): ${who//$'\n'/ }"
fi
IFS=$'\t' read -r src_port src_addr is_super <<<"$who"
[[ $is_super == t ]] || pgs_die "$EX_DATAERR" "the --source role is not a superuser: the roles' SCRAM verifiers are in pg_authid, which only a superuser reads (connect as postgres)"
if [[ -z $backend ]]; then
  h=$(grep -oE '(^| )host=[^ ]+' <<<"$source_dsn" | head -n 1 | sed 's/.*host=//') || true
  [[ -n $h && $h != /* ]] || h=${src_addr:-}
  [[ -n $h ]] || pgs_die "$EX_USAGE" "--source connects through a Unix socket: give --backend HOST:PORT, the source as the pooler's host reaches it"
  [[ $h == *:* ]] && h="[$h]"
  backend=$h:$src_port
fi
b_host=${backend%:*} b_port=${backend##*:}
b_host=${b_host#[} b_host=${b_host%]}

all_dbs=$(src -c "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1")
if [[ -n $databases ]]; then
  dbs=$(tr ',' '\n' <<<"$databases" | sed '/^$/d')
  while IFS= read -r d; do
    grep -qxF -- "$d" <<<"$all_dbs" ||
      pgs_die "$EX_DATAERR" "the source has no database '$d' (it has: $(paste -sd, <<<"$all_dbs")): fix --databases"
  done <<<"$dbs"
else
  dbs=$all_dbs
fi
[[ -n $dbs ]] || pgs_die "$EX_DATAERR" "the source has no database to front"
for d in $dbs; do
  [[ $d =~ ^[A-Za-z0-9_.-]+$ ]] || pgs_die "$EX_DATAERR" "database '$d' has a name pgbouncer.ini cannot hold unquoted: leave it out with --databases"
done

# Roles: the verifier if it is SCRAM, an empty entry if there is none (only a trust or peer
# line of the hba lets such a role in: pgbouncer refuses an empty password), and md5 ones
# left out with a warning (scram-sha-256 cannot check an md5 hash).
roles=$(src -F $'\t' -v users="$users" <<'SQL'
SELECT rolname, coalesce(rolpassword, '') FROM pg_authid
WHERE rolcanlogin AND (:'users' = '' OR rolname = ANY (string_to_array(:'users', ',')))
ORDER BY 1
SQL
)
if [[ -n $users ]]; then
  for u in ${users//,/ }; do
    cut -f 1 <<<"$roles" | grep -qxF -- "$u" ||
      pgs_die "$EX_DATAERR" "the source has no login role '$u': fix --users"
  done
fi
userlist="" scram_roles=0
while IFS=$'\t' read -r name pw; do
  [[ -n $name ]] || continue
  case $pw in
    SCRAM-SHA-256\$*) kind=scram_verifier scram_roles=$((scram_roles + 1)) ;;
    "") kind=none ;;
    *)
      pgs_json role name="$name" action=skipped password=md5 \
        message="an md5 password: scram-sha-256 cannot check it; set the password again with password_encryption=scram-sha-256"
      pgs_log "role $name has an md5 password: it cannot log in through the pooler (set it again with password_encryption = scram-sha-256)"
      continue ;;
  esac
  userlist+="\"${name//\"/\"\"}\" \"$pw\""$'\n'
  pgs_json role name="$name" action=listed password="$kind"
done <<<"$roles"
[[ -z $hba_src ]] && ((scram_roles == 0)) &&
  pgs_die "$EX_DATAERR" "no login role of the source has a SCRAM password: no client could log in through the pooler (set one, or give --hba with the lines you want)"

# --- The host ------------------------------------------------------------------------------
[[ $host == local ]] || pgs_host_reachable "$host" ||
  pgs_die "$EX_UNAVAILABLE" "cannot run commands on $host (check ssh access: BatchMode, keys, host key)"
if ! bouncer=$(pgs_on "$host" sh -c 'command -v pgbouncer || ls /usr/sbin/pgbouncer 2>/dev/null'); then
  if pgs_on "$host" sh -c '[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null'; then
    pgs_log "installing pgbouncer on $host (apt-get)"
    out=$(pgs_on "$host" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer 2>&1) ||
      pgs_die "$EX_UNAVAILABLE" "apt-get could not install pgbouncer on $host: $(tail -n 1 <<<"$out")"
    pgs_json action name=install package=pgbouncer
    note_change
    bouncer=$(pgs_on "$host" sh -c 'command -v pgbouncer || ls /usr/sbin/pgbouncer')
  else
    pgs_die "$EX_UNAVAILABLE" "pgbouncer is not installed on $host (apt install pgbouncer there, or run this as root on it)"
  fi
fi
bouncer=$(head -n 1 <<<"$bouncer")
version=$(pgs_on "$host" "$bouncer" --version | head -n 1)
pgs_json check name=pgbouncer value="$version" path="$bouncer"

# The state next to the configuration, or where Debian's package keeps it.
if [[ $conf_dir == /etc/pgbouncer ]]; then
  sock_dir=/var/run/postgresql log_file=/var/log/postgresql/pgbouncer.log pid_file=/var/run/postgresql/pgbouncer.pid
else
  sock_dir=$conf_dir log_file=$conf_dir/pgbouncer.log pid_file=$conf_dir/pgbouncer.pid
fi
aux=$conf_dir/pgshift
pgs_on "$host" sh -c 'mkdir -p "$1" && if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$1"; fi' x "$conf_dir" ||
  pgs_die "$EX_IOERR" "cannot make $conf_dir on $host"
pgs_on_pg "$host" sh -c 'mkdir -p "$1" && chmod 700 "$1" && test -w "$2"' x "$aux" "$conf_dir" ||
  pgs_die "$EX_IOERR" "postgres cannot write $conf_dir on $host (give it to postgres, or choose --conf-dir)"

server_tls=disable client_tls=""
if ((tls)); then
  if [[ -n $tls_ca ]]; then
    [[ $(pgs_ca_ensure "$tls_ca") == created ]] && pgs_json file path="$tls_ca/ca.crt" action=created what="pgshift CA (its key stays in $tls_ca)" && note_change
    if ((${#tls_names[@]} == 0)); then
      if [[ $listen != "*" && $listen != *,* ]]; then tls_names=("$listen"); else tls_names=("$(pgs_on "$host" hostname)"); fi
    fi
    res=$(pgs_tls_issue "$tls_ca" "$host" "$aux" "${tls_names[@]}")
    pgs_json file path="$aux/server.crt" action="$res" what="certificate signed by the CA in $tls_ca" names="${tls_names[*]}"
    [[ $res == issued ]] && note_change
    server_tls=verify-full
  else
      res=$(pgs_on_pg "$host" sh -c 'if [ -f "$1/server.crt" ]; then echo unchanged; else umask 077 &&
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$(hostname)" \
        -keyout "$1/server.key" -out "$1/server.crt" >/dev/null 2>&1 && echo created; fi' x "$aux") ||
      pgs_die "$EX_SOFTWARE" "openssl could not make a certificate in $aux on $host (is openssl installed there?)"
    pgs_json file path="$aux/server.crt" action="$res" what="self-signed TLS certificate (--tls-ca DIR signs one that clients can verify)"
    [[ $res == created ]] && note_change
    server_tls=require
  fi
  client_tls="client_tls_sslmode = prefer
client_tls_key_file = $aux/server.key
client_tls_cert_file = $aux/server.crt"
fi

if [[ -n $hba_src ]]; then
  hba=$(<"$hba_src")
else
  kind=hostssl
  ((tls)) || kind=host
  hba="# written by pgshift setup-host.sh --role pooler
local   all  postgres              peer
$kind all  all       0.0.0.0/0   scram-sha-256
$kind all  all       ::/0        scram-sha-256"
fi
admins=postgres
[[ $admin_user == postgres ]] || admins="postgres, $admin_user"
entries=""
for d in $dbs; do entries+="$d = host=$b_host port=$b_port dbname=$d"$'\n'; done
ini=";; written by pgshift setup-host.sh --role pooler: a re-run rewrites it; migrate.sh --pooler
;; points the [databases] entries at the new primary (the old file kept as pgbouncer.ini.pgshift-prev)
[databases]
${entries}
[pgbouncer]
listen_addr = $listen
listen_port = $port
unix_socket_dir = $sock_dir
auth_type = hba
auth_hba_file = $conf_dir/pgshift-hba.conf
auth_file = $conf_dir/userlist.txt
admin_users = $admins
pool_mode = transaction
default_pool_size = $pool_size
max_client_conn = 1000
server_login_retry = 0.1
query_wait_timeout = 120
${client_tls:+$client_tls
}server_tls_sslmode = $server_tls
${tls_ca:+server_tls_ca_file = $aux/ca.crt
}logfile = $log_file
pidfile = $pid_file"

# put FILE MODE < CONTENT: install CONTENT as FILE on the host (as postgres), unless it is
# already that; prints changed or unchanged.
put() {
  pgs_on_pg "$host" sh -c 'umask 077; cat >"$1.pgshift-new" || exit 1
    if cmp -s "$1.pgshift-new" "$1"; then rm -f "$1.pgshift-new"; echo unchanged; exit 0; fi
    if [ -f "$1" ] && [ ! -f "$1.pgshift-prev" ] && ! grep -q "written by pgshift" "$1"; then cp -p "$1" "$1.pgshift-prev" || exit 1; fi
    chmod "$2" "$1.pgshift-new" && mv -f "$1.pgshift-new" "$1" && echo changed' x "$1" "$2"
}
old_listen=$(pgs_on_pg "$host" sh -c 'grep -E "^(listen_addr|listen_port|unix_socket_dir) " "$1" 2>/dev/null' x "$conf_dir/pgbouncer.ini") || old_listen=""
for f in pgshift-hba.conf:600 userlist.txt:600 pgbouncer.ini:640; do
  name=${f%:*} mode=${f#*:}
  case $name in
    pgshift-hba.conf) content=$hba ;;
    userlist.txt) content=${userlist%$'\n'} ;;
    pgbouncer.ini) content=$ini ;;
  esac
  res=$(printf '%s\n' "$content" | put "$conf_dir/$name" "$mode") ||
    pgs_die "$EX_IOERR" "cannot write $conf_dir/$name on $host"
  pgs_json file path="$conf_dir/$name" changed:="$([[ $res == changed ]] && echo true || echo false)"
  [[ $res == changed ]] && note_change
done
new_listen=$(grep -E "^(listen_addr|listen_port|unix_socket_dir) " <<<"$ini")

# Running, reloaded or restarted; or started.
pid=$(pgs_on "$host" sh -c 'p=$(cat "$1" 2>/dev/null) && kill -0 "$p" 2>/dev/null && echo "$p"' x "$pid_file") || pid=""
systemd=0
[[ $conf_dir == /etc/pgbouncer ]] && pgs_on "$host" sh -c '[ -d /run/systemd/system ] && systemctl cat pgbouncer >/dev/null 2>&1' && systemd=1
start() {
  if ((systemd)); then
    pgs_on "$host" systemctl enable --now pgbouncer >/dev/null 2>&1 && pgs_on "$host" systemctl restart pgbouncer
  else
    pgs_on_pg "$host" "$bouncer" -d -q "$conf_dir/pgbouncer.ini"
  fi
}
if [[ -n $pid && $old_listen != "$new_listen" ]]; then
  # A new listening address needs a new process: a clean shutdown (SIGINT waits for the
  # transactions in flight), then a start.
  pgs_on "$host" kill -INT "$pid" || true
  pgs_on "$host" sh -c 'i=0; while kill -0 "$1" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done' x "$pid"
  start || pgs_die "$EX_SOFTWARE" "pgbouncer did not start again on $host: see $log_file there"
  pgs_json action name=restart why="listen_addr, listen_port or unix_socket_dir changed"
elif [[ -n $pid ]]; then
  if ((changed)); then
    pgs_on "$host" kill -HUP "$pid"
    pgs_json action name=reload pid:="$pid"
  fi
else
  start || pgs_die "$EX_SOFTWARE" "pgbouncer did not start on $host: $(pgs_on "$host" tail -n 2 "$log_file" 2>/dev/null | tr '\n' ' ')"
  pgs_json action name=start how="$( ((systemd)) && echo systemd || echo pgbouncer -d)"
  note_change
fi

# The console answers (as postgres, through the socket: the default hba's peer line) and a
# query through it reaches the source. Where the host has no psql, from here over TCP.
addr=${tls_names[0]:-}
[[ -n $addr ]] || { [[ $listen != "*" && $listen != *,* ]] && addr=$listen; } || addr=$(pgs_on "$host" hostname)
psql_host=$(pgs_on "$host" sh -c 'command -v "$1/psql" || command -v psql' x "$PG_BIN" 2>/dev/null) || psql_host=""
through() { # through DB SQL
  if [[ -n $psql_host ]]; then
    pgs_on_pg "$host" env PGCONNECT_TIMEOUT=5 "$psql_host" -XAtq -h "$sock_dir" -p "$port" -U postgres -d "$1" -c "$2"
  else
    PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -XAtq -d "host=$addr port=$port user=$admin_user dbname=$1" -c "$2"
  fi
}
ok=0
for ((i = 0; i < 50; i++)); do
  if out=$(through pgbouncer "SHOW VERSION" 2>&1); then ok=1; break; fi
  sleep 0.1
done
((ok)) || pgs_die "$EX_SOFTWARE" "the pooler on $host does not answer on its console: ${out//$'\n'/ } (see $log_file there)"
first=$(head -n 1 <<<"$dbs")
if ans=$(through "$first" "SELECT current_setting('port')" 2>&1) && [[ $ans == "$b_port" ]]; then
  pgs_json check name=reaches_source ok:=true database="$first" backend="$backend"
elif [[ $ans == *password* || $ans == *authentication* ]]; then
  # The default hba lets postgres in by peer: the pooler then has no SCRAM proof to give the
  # server. Clients that log in with a password are served; say what was seen.
  pgs_json check name=reaches_source ok:=null database="$first" backend="$backend" message="${ans//$'\n'/ }"
  pgs_log "could not check the way to the source as postgres (${ans//$'\n'/ }); clients logging in with a SCRAM password are passed through"
else
  # The client only sees a timeout; the pooler's log says why.
  why=$(pgs_on_pg "$host" sh -c 'grep -E "closing because|ERROR|WARNING" "$1" 2>/dev/null | tail -n 1 | sed "s/.*closing because: //"' x "$log_file") || why=""
  pgs_die "$EX_UNAVAILABLE" "the pooler on $host cannot reach the source at $backend: ${why:-${ans//$'\n'/ }} (check --backend, the source's TLS, pg_hba.conf and listen_addresses)"
fi

pgs_json summary success:=true role=pooler changed:="$changed" version="$version" host="$host" \
  listen="$listen" port:="$port" backend="$backend" conf_file="$conf_dir/pgbouncer.ini" \
  entries:="$(jq -Rsc 'split("\n") | map(select(. != ""))' <<<"$dbs")" \
  admin_dsn="host=$addr port=$port user=$admin_user dbname=pgbouncer" \
  tls:="$( ((tls)) && { [[ -n $tls_ca ]] && echo '"verify-full"' || echo '"require"'; } || echo null)"
