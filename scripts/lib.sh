#!/usr/bin/env bash
# scripts/lib.sh: what every pgshift script shares. Source it; it defines functions only.
#
#   . "$(dirname "$0")/lib.sh"
#
# - the exit-code table (the same numbers as the tools; README "Exit codes"),
# - messages on stderr and JSON lines on stdout (pgs_json),
# - throwaway clusters for demos and tests: initdb into a directory, start on a loopback port
#   as the postgres user (when run as root), wait with pg_isready, stop, remove, and a standby
#   of a cluster with pg_basebackup -R. The Rust fixture (testkit) does the same for Rust tests.
#
# Conventions: functions are prefixed pgs_; a cluster directory DIR holds data/, server.log,
# the socket, and cluster.env (HOST, PORT) written at creation.

# Exit codes: the README table; scripts branch on these.
# shellcheck disable=SC2034  # used by the scripts that source this file
readonly EX_OK=0 EX_DIFF=1 EX_USAGE=2 EX_DATAERR=65 EX_UNAVAILABLE=69 EX_SOFTWARE=70 \
  EX_IOERR=74 EX_TEMPFAIL=75 EX_FATAL=126

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
# The checkout this file belongs to (absolute, so it survives a cd).
PGS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGS_NAME=${PGS_NAME:-$(basename "${0:-pgshift}" .sh)}
# Numbers as the scripts and the tools read and write them (bash's EPOCHREALTIME, awk's
# printf, psql's output): with a decimal point, whatever the user's locale says (de_DE writes
# 1,5). LC_ALL would override LC_NUMERIC: its value goes to the other categories instead.
if [[ -n ${LC_ALL:-} ]]; then
  for pgs_c in LC_CTYPE LC_COLLATE LC_MESSAGES LC_MONETARY LC_TIME; do export "$pgs_c=$LC_ALL"; done
  unset LC_ALL pgs_c
fi
export LC_NUMERIC=C
# A script says how it ended in its own closing line (pgs_print_record): the tools it runs
# keep theirs to themselves, so a person at a terminal reads one line, not one per step.
export PGSHIFT_CLOSING_LINE=0

# pgs_log MESSAGE...: one line on stderr, prefixed with the script's name.
pgs_log() { printf '%s: %s\n' "$PGS_NAME" "$*" >&2; }

# pgs_die CODE MESSAGE...: log and exit with CODE (from the table above). When stdout is not a
# terminal it carries JSON lines, and a failed script still ends them the way every pgshift
# stream ends (shared/PROTOCOL.md, "scripts"): see pgs_end_failed.
pgs_die() {
  local code=$1
  shift
  pgs_log "$*"
  pgs_end_failed "$code" "$*"
  exit "$code"
}

# pgs_end_failed CODE MESSAGE: when stdout is not a terminal, an `error` and a `summary` record
# (success false, exit_code CODE, message) on it, once per script: a script that ends its own
# stream (migrate.sh) sets PGS_ENDED=1 when it has. Not from a subshell (a command substitution
# or a pipeline stage): there stdout is the caller's variable or pipe, and the caller may go
# on; the caller's own failure ends the stream. A closed stdout is no error here.
pgs_end_failed() {
  [[ -z ${PGS_ENDED:-} && $BASHPID == "$$" && ! -t 1 ]] || return 0
  PGS_ENDED=1
  (
    trap '' PIPE
    pgs_json error exit_code:="$1" message="$2"
    pgs_json summary success:=false exit_code:="$1" message="$2"
  ) 2>/dev/null || true
}

# pgs_usage MESSAGE...: a usage error (exit 2) on one line; MESSAGE names the option as the
# user typed it.
pgs_usage() { pgs_die "$EX_USAGE" "$* (try --help)"; }

# pgs_val OPTION [VALUE...]: in an option loop (pgs_val "$@"), OPTION has a value: a next
# argument that is neither empty nor another option; else a usage error naming OPTION.
pgs_val() {
  if (($# < 2)) || [[ -z $2 || $2 == --* ]]; then pgs_usage "$1 needs a value"; fi
}

# pgs_wants_help ARG...: true when -h or --help is among ARGs (up to a `--`), so that
# `script --help` and `script SUBCOMMAND [OPTIONS] --help` both show the usage.
pgs_wants_help() {
  local a
  for a in "$@"; do
    case $a in --) return 1 ;; -h | --help) return 0 ;; esac
  done
  return 1
}

# pgs_help: the usage of the script (its header comment, from line 2 to `set -euo`,
# without shellcheck directives) on stdout, and exit 0.
pgs_help() {
  sed -n '2,/^set -euo/p' "$0" | sed '/^set -euo/d; /^# shellcheck /d; s/^# \{0,1\}//; s/^#$//'
  exit 0
}

# pgs_json_str STRING: STRING as a JSON string literal.
pgs_json_str() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  # Any other control character (an escape sequence in a command's error) as \u00XX.
  if [[ $s == *[$'\001'-$'\037'$'\177']* ]]; then
    local out="" c i
    for ((i = 0; i < ${#s}; i++)); do
      c=${s:i:1}
      [[ $c == [$'\001'-$'\037'$'\177'] ]] && printf -v c '\\u%04x' "'$c"
      out+=$c
    done
    s=$out
  fi
  printf '"%s"' "$s"
}

# pgs_json TYPE [key=string | key:=raw-json]...: print one JSON line, "type" first.
#   pgs_json phase name=switchover ms:=170 ok:=true
pgs_json() {
  local out
  out="{\"type\":$(pgs_json_str "$1")"
  shift
  local kv key
  for kv in "$@"; do
    if [[ $kv == *:=* && ${kv%%:=*} != *=* ]]; then
      key=${kv%%:=*}
      out+=",$(pgs_json_str "$key"):${kv#*:=}"
    else
      key=${kv%%=*}
      out+=",$(pgs_json_str "$key"):$(pgs_json_str "${kv#*=}")"
    fi
  done
  pgs_print_record "$out}"
}

# pgs_print_record LINE: write one record on stdout: as it is on a pipe (the contract), as a
# line for a person on a terminal (`type  key value, ...`; not an `error`, whose message is on
# stderr), unless PGSHIFT_OUTPUT=json. A
# `summary` also gives the closing line on stderr when a person reads it there (stderr a
# terminal), unless the script says its own (PGS_OWN_CLOSING=1, migrate.sh).
pgs_print_record() {
  if [[ -t 1 && ${PGSHIFT_OUTPUT:-} != json ]]; then
    # An error is on stderr already, as its message (the tools' text does the same).
    [[ $1 != '{"type":"error"'* ]] || return 0
    jq -r 'def h: if type == "object" or type == "array" then tojson else tostring end;
      (.type + "          ")[0:10] + " " +
        ([to_entries[] | select(.key != "type" and .value != null) | "\(.key | gsub("_"; " ")) \(.value | h)"] | join(", "))' \
      <<<"$1" 2>/dev/null || printf '%s\n' "$1"
  else
    printf '%s\n' "$1"
  fi
  if [[ $1 == '{"type":"summary"'* && -t 2 && -z ${PGS_OWN_CLOSING:-} ]]; then
    pgs_closing_line "$1"
  fi
}

# pgs_closing_line SUMMARY: one line on stderr for a person: `NAME: ok, key value, ...` (the
# summary's short fields) or `NAME: failed (exit N): message`.
pgs_closing_line() {
  local line
  line=$(jq -r 'def h: tostring;
    if .success == false then "failed (exit \(.exit_code // "?"))" + (if .message then ": \(.message)" else "" end)
    else "ok" + ([to_entries[]
        | select(.key as $k | ["type", "success", "exit_code", "elapsed_ms", "format_version", "tool"] | index($k) | not)
        | select(.value != null and (.value | type) != "object" and (.value | type) != "array")
        | "\(.key | gsub("_"; " ")) \(.value | h)"][0:5] | map(", " + .) | join(""))
      + (if .elapsed_ms then ", in \(.elapsed_ms) ms" else "" end)
    end' <<<"$1" 2>/dev/null) || return 0
  printf '%s: %s\n' "$PGS_NAME" "$line" >&2
}

# pgs_require_cmd CMD...: fail with EX_UNAVAILABLE naming the first missing command.
pgs_require_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 ||
      pgs_die "$EX_UNAVAILABLE" "required command '$c' not found (run 'make setup')"
  done
}

# pgs_pg_dir: where other PostgreSQL majors are kept (scripts/fetch-pg.sh puts them there;
# the tests and benchmarks look there): $PGSHIFT_PG_DIR, else /usr/local/lib/pgshift/pg for
# root, ~/.cache/pgshift/pg for others.
pgs_pg_dir() {
  if [[ -n ${PGSHIFT_PG_DIR:-} ]]; then
    printf '%s\n' "$PGSHIFT_PG_DIR"
  elif [[ $(id -u) == 0 ]]; then
    printf '%s\n' /usr/local/lib/pgshift/pg
  else
    printf '%s\n' "$HOME/.cache/pgshift/pg"
  fi
}

# pgs_pg_is_major DIR MAJOR: true when DIR/postgres runs and is PostgreSQL MAJOR (its
# `--version`); what it says on stderr stays there.
pgs_pg_is_major() {
  "$1/postgres" --version | grep -q " $2\."
}

# pgs_pg_major_bin MAJOR: the directory of PostgreSQL MAJOR's server binaries: Debian's
# package, else what scripts/fetch-pg.sh fetched (pgs_pg_dir); fails naming the fix.
pgs_pg_major_bin() {
  local d
  for d in "/usr/lib/postgresql/$1/bin" "$(pgs_pg_dir)/$1/bin"; do
    if pgs_pg_is_major "$d" "$1" 2>/dev/null; then
      printf '%s\n' "$d"
      return 0
    fi
  done
  pgs_log "no PostgreSQL $1 server binaries: run scripts/fetch-pg.sh $1 (make setup does), or apt install postgresql-$1"
  return "$EX_UNAVAILABLE"
}

# The server settings of the logical mode, on either side of a move (setup-host.sh --logical
# sets them on a running server, hosts-local.sh --logical writes them into its target's
# configuration): one slot, walsender and apply worker per database moved, and one per table
# copied at once.
# shellcheck disable=SC2034  # used by the scripts that source this file
PGS_LOGICAL_SETTINGS=(wal_level=logical max_wal_senders=20 max_replication_slots=20
  max_logical_replication_workers=8 max_worker_processes=16)

# pgs_as_pg CMD...: run CMD here as the postgres user when we are root, else as ourselves.
pgs_as_pg() { pgs_on_pg local "$@"; }

# pgs_free_port [HOST]: print a TCP port on HOST (default 127.0.0.1) that nothing listens on.
pgs_free_port() {
  local host=${1:-127.0.0.1} port i low=32768
  # Below the kernel's ephemeral range: a port that no client connection can be holding (a
  # port in that range may be the local end of any outgoing connection, and the server's
  # bind then fails although nothing listens there).
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
  ((low > 12000)) || low=32768
  for i in $(seq 1 200); do
    port=$((10000 + (RANDOM * 32768 + RANDOM + i) % (low - 10000)))
    if ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
      printf '%s\n' "$port"
      return 0
    fi
  done
  pgs_die "$EX_TEMPFAIL" "no free port found on $host"
}

# pgs_wait_ready HOST PORT [TIMEOUT_S [LOG [FROM]]]: poll pg_isready until the server accepts
# connections; with its LOG (its lines after line FROM: this start's), give up at once when
# the server says it has shut down (a port taken, a bad setting) instead of waiting out the
# time.
pgs_wait_ready() {
  local host=$1 port=$2 timeout=${3:-60} log=${4:-} from=${5:-0} start=$SECONDS
  until "$PG_BIN/pg_isready" -q -t 1 -h "$host" -p "$port" -U postgres; do
    if ((SECONDS - start >= timeout)); then
      pgs_log "server on $host:$port not ready after ${timeout}s"
      return "$EX_UNAVAILABLE"
    fi
    if [[ -n $log ]] && tail -n +"$((from + 1))" "$log" 2>/dev/null | grep -q 'database system is shut down'; then
      pgs_log "server on $host:$port stopped while starting"
      return "$EX_UNAVAILABLE"
    fi
    sleep 0.05
  done
}

# pgs_cluster_env DIR: load HOST, PORT and SPEC (where its commands run) of the cluster in DIR.
pgs_cluster_env() {
  SPEC=local BIN=$PG_BIN
  [[ -f $1/cluster.env ]] || pgs_die "$EX_USAGE" "$1 is not a cluster directory (no cluster.env)"
  # shellcheck disable=SC1091
  . "$1/cluster.env"
}

# Make DIR owned by the server's user, with the modes PostgreSQL insists on.
pgs_own_dir() {
  mkdir -p "$1"
  chmod 700 "$1"
  if [[ $(id -u) == 0 ]]; then chown postgres:postgres "$1"; fi
}

# Append the fixture's settings for DIR (listen address, port, socket) and any KEY=VALUE.
# PGS_SPEC (default local) is recorded as where the cluster's commands run.
pgs_write_conf() {
  local dir=$1 host=$2 port=$3 kv
  shift 3
  {
    printf '\n# pgshift lib.sh\n'
    printf "listen_addresses = '%s'\n" "$host"
    printf 'port = %s\n' "$port"
    printf "unix_socket_directories = '%s'\n" "$dir"
    printf 'wal_keep_size = 128MB\n'
    for kv in "$@"; do printf '%s = %s\n' "${kv%%=*}" "${kv#*=}"; done
  } >>"$dir/data/postgresql.conf"
  printf 'HOST=%s\nPORT=%s\nSPEC=%s\nBIN=%s\n' "$host" "$port" "${PGS_SPEC:-local}" \
    "${PGS_SERVER_BIN:-$PG_BIN}" >"$dir/cluster.env"
}

# pgs_cluster_create DIR PORT [HOST] [KEY=VALUE...]: initdb into DIR/data with trust auth for
# loopback, or for PGS_TRUST_NET (replication included), and the given settings. Does not
# start it. The server's binaries are PGS_SERVER_BIN's (another major: pgs_pg_major_bin),
# default PG_BIN; cluster.env remembers them.
pgs_cluster_create() {
  local dir=$1 port=$2 host=${3:-127.0.0.1}
  shift 2
  (($# > 0)) && shift
  pgs_own_dir "$dir"
  pgs_on_pg local "${PGS_SERVER_BIN:-$PG_BIN}/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
    --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 ||
    pgs_die "$EX_SOFTWARE" "initdb failed in $dir/data: $(tail -n 5 "$dir/initdb.log")"
  local net=${PGS_TRUST_NET:-127.0.0.0/8}
  printf 'host all all %s trust\nhost replication all %s trust\n' "$net" "$net" \
    >>"$dir/data/pg_hba.conf"
  pgs_write_conf "$dir" "$host" "$port" "$@"
}

# pgs_cluster_start DIR: start the cluster in DIR and wait until it accepts connections.
pgs_cluster_start() {
  local dir=$1 HOST PORT SPEC BIN
  pgs_cluster_env "$dir"
  local from=0
  [[ ! -f $dir/server.log ]] || from=$(wc -l <"$dir/server.log")
  pgs_on_pg "$SPEC" "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -W start \
    >/dev/null || pgs_die "$EX_SOFTWARE" "pg_ctl start failed for $dir"
  pgs_wait_ready "$HOST" "$PORT" 60 "$dir/server.log" "$from" || {
    tail -n 20 "$dir/server.log" >&2
    return "$EX_UNAVAILABLE"
  }
}

# pgs_cluster_stop DIR [MODE]: pg_ctl stop -m MODE (default fast); no-op if not running.
pgs_cluster_stop() {
  local dir=$1 mode=${2:-fast} HOST PORT SPEC BIN
  [[ -f $dir/data/postmaster.pid ]] || return 0
  pgs_cluster_env "$dir"
  pgs_on_pg "$SPEC" "$BIN/pg_ctl" -D "$dir/data" -m "$mode" -w -t 60 stop >/dev/null
}

# pgs_cluster_destroy DIR: stop immediately and remove DIR.
pgs_cluster_destroy() {
  [[ -d $1 ]] || return 0
  if [[ -f $1/cluster.env ]]; then pgs_cluster_stop "$1" immediate || true; fi
  rm -rf "$1"
}

# pgs_standby_create PRIMARY_DIR DIR PORT [HOST] [KEY=VALUE...]: a streaming standby of the
# cluster in PRIMARY_DIR (pg_basebackup -R -X stream); does not start it.
pgs_standby_create() {
  local pdir=$1 dir=$2 port=$3 host=${4:-127.0.0.1} HOST PORT SPEC BIN
  shift 3
  (($# > 0)) && shift
  pgs_cluster_env "$pdir"
  pgs_own_dir "$dir"
  pgs_on_pg "${PGS_SPEC:-local}" "$PG_BIN/pg_basebackup" -D "$dir/data" -R -X stream -c fast \
    --no-sync -U postgres -h "$HOST" -p "$PORT" >"$dir/basebackup.log" 2>&1 ||
    pgs_die "$EX_UNAVAILABLE" "pg_basebackup from $HOST:$PORT failed: $(tail -n 5 "$dir/basebackup.log")"
  pgs_write_conf "$dir" "$host" "$port" "$@"
}

# pgs_dsn DIR [DBNAME]: a conninfo string for the cluster in DIR.
pgs_dsn() {
  local HOST PORT SPEC BIN
  pgs_cluster_env "$1"
  printf 'host=%s port=%s user=postgres dbname=%s sslmode=disable\n' "$HOST" "$PORT" "${2:-postgres}"
}

# pgs_psql DSN SQL: run SQL, print unaligned tuples-only output; fail on the first error.
pgs_psql() {
  "$PG_BIN/psql" -XAtq -v ON_ERROR_STOP=1 -d "$1" -c "$2"
}

# --- Running commands on a "host" -------------------------------------------------------
# A host spec says where a command runs:
#   local (or empty)           this machine
#   ssh://[user@]host[:port]   through the system ssh (host may be [v6addr]; the policy
#                              of pgs_ssh_opts; extra options from PGS_SSH_OPTS, e.g.
#                              "-i key -F cfg")
#   netns://NAME               inside network namespace NAME on this machine (root only)

# pgs_quote ARG...: the arguments as one shell-quoted command string.
pgs_quote() {
  local out="" a
  for a in "$@"; do out+="$(printf '%q' "$a") "; done
  printf '%s' "${out% }"
}

# pgs_on SPEC CMD...: run CMD on the host SPEC, as the calling user (root stays root).
pgs_on() {
  local spec=${1:-local}
  shift
  case $spec in
    local | "") "$@" ;;
    netns://*) ip netns exec "${spec#netns://}" "$@" ;;
    ssh://*)
      local target=${spec#ssh://} port="" user="" opts=()
      if [[ $target == *@* ]]; then user=${target%%@*}@ target=${target#*@}; fi
      if [[ $target =~ ^\[(.*)\](:([0-9]+))?$ ]]; then # [v6addr] or [v6addr]:port
        target=${BASH_REMATCH[1]} port=${BASH_REMATCH[3]}
      elif [[ $target =~ ^([^:]*):([0-9]+)$ ]]; then
        target=${BASH_REMATCH[1]} port=${BASH_REMATCH[2]}
      fi
      pgs_ssh_opts opts
      ssh "${opts[@]}" ${port:+-p "$port"} "$user$target" -- "$(pgs_quote "$@")"
      ;;
    *) pgs_die "$EX_USAGE" "unknown host spec '$spec' (use local, ssh://user@host[:port] or netns://NAME)" ;;
  esac
}

# pgs_on_pg SPEC CMD...: run CMD on SPEC as the postgres user (runuser where we are root),
# from a directory postgres can read.
pgs_on_pg() {
  local spec=${1:-local}
  shift
  # shellcheck disable=SC2016  # expanded by the remote sh, not here
  pgs_on "$spec" sh -c 'cd /tmp && if [ "$(id -u)" = 0 ]; then exec runuser -u postgres -- "$@"; else exec "$@"; fi' \
    pgs-on-pg "$@"
}

# pgs_ssh_opts ARRAY: the ssh options of every call into the array named ARRAY: the policy
# shared::host applies in the tools (BatchMode, host keys checked, keep-alives and a connect
# timeout, first so a config file cannot override them), then the user's PGS_SSH_OPTS (words
# split with shell quoting, by xargs; never evaluated). Turning host key checking or BatchMode
# off is refused (exit 2), as in the tools; -o StrictHostKeyChecking=accept-new is allowed.
pgs_ssh_opts() {
  local -n _out=$1
  local extra=() strict=yes w lower
  if [[ -n ${PGS_SSH_OPTS:-} ]]; then
    xargs -r true <<<"$PGS_SSH_OPTS" 2>/dev/null ||
      pgs_die "$EX_USAGE" "PGS_SSH_OPTS '$PGS_SSH_OPTS' cannot be split into words (an unclosed quote?)"
    mapfile -d '' extra < <(xargs -r printf '%s\0' <<<"$PGS_SSH_OPTS")
  fi
  for w in "${extra[@]}"; do
    lower=${w,,} lower=${lower#-o} lower=${lower// /=}
    case $lower in
      stricthostkeychecking=no | stricthostkeychecking=off | stricthostkeychecking=false)
        pgs_die "$EX_USAGE" "PGS_SSH_OPTS turns host key checking off, which pgshift refuses: add the host's key to a known_hosts file (ssh-keyscan, after checking the fingerprint) and pass -o UserKnownHostsFile=FILE, or use -o StrictHostKeyChecking=accept-new" ;;
      stricthostkeychecking=accept-new) strict=accept-new ;;
      batchmode=*)
        [[ $lower == batchmode=yes ]] ||
          pgs_die "$EX_USAGE" "pgshift always runs ssh with BatchMode=yes (a password prompt would hang the migration): use a key (PGS_SSH_OPTS='-i FILE')" ;;
    esac
  done
  _out=(-o BatchMode=yes -o "StrictHostKeyChecking=$strict" "${extra[@]}"
    -o ConnectTimeout=5 -o ServerAliveInterval=2 -o ServerAliveCountMax=3)
}

# --- Clusters on a host: layouts --------------------------------------------------------
# A cluster is named by its data directory or, for a postgresql-common cluster (Debian,
# Ubuntu), by VERSION/NAME as pg_lsclusters shows it. Three layouts:
#   debian  configuration under /etc/postgresql/V/NAME (postgresql.conf, pg_hba.conf, the
#           port), started by pg_ctlcluster or the postgresql@V-NAME unit, log under
#           /var/log/postgresql
#   rhel    PGDG packages (PG_BIN /usr/pgsql-V/bin): configuration inside PGDATA, unit
#           postgresql-V
#   plain   configuration inside PGDATA, started with pg_ctl, the log beside PGDATA
# The two remote scripts below are the one implementation (pg-switch starts clusters with
# the same start.sh). A script re-invoked on a host through stdin (setup-host.sh) carries
# their text in PGS_CLUSTER_INFO_SH and PGS_START_SH.
PGS_CLUSTER_INFO_SH=${PGS_CLUSTER_INFO_SH:-$(cat "$PGS_ROOT/scripts/remote/cluster-info.sh" 2>/dev/null)}
PGS_START_SH=${PGS_START_SH:-$(cat "$PGS_ROOT/tools/pg-switch/src/remote/start.sh" 2>/dev/null)}

# pgs_cluster_info SPEC WHAT ARRAY: the facts of the cluster WHAT (V/NAME or a data
# directory) on host SPEC into the associative array named ARRAY (see
# scripts/remote/cluster-info.sh), plus aux: pgshift's own files for that cluster (its TLS
# certificate and key, the CA, the replication passfile), beside PGDATA and never in it, so
# that no base copy or rewind carries them to another host. Exits 65 when there is no such
# cluster, 69 when the host cannot be reached.
pgs_cluster_info() {
  local spec=$1 what=$2 out k v
  local -n _info=$3
  _info=()
  out=$(pgs_on_pg "$spec" sh -c "$PGS_CLUSTER_INFO_SH" pgshift-cluster-info "$what" "$PG_BIN") ||
    pgs_die "$EX_UNAVAILABLE" "cannot look at cluster $what on host $spec (check ssh access)"
  while IFS='=' read -r k v; do
    # shellcheck disable=SC2004  # an associative array: the key is a string
    [[ -n $k ]] && _info[$k]=$v
  done <<<"$out"
  [[ -z ${_info[error]:-} ]] || pgs_die "$EX_DATAERR" "${_info[error]} (host $spec)"
  _info[aux]=$(dirname "${_info[pgdata]}")/pgshift-$(basename "${_info[pgdata]}")
}

# pgs_pg_start SPEC PGDATA LOG [nowait]: start the cluster in PGDATA on host SPEC the way its layout
# starts it (its systemd unit, pg_ctlcluster or pg_ctl) and wait until it accepts
# connections. A running cluster is left alone.
pgs_pg_start() {
  pgs_on_pg "$1" sh -c "$PGS_START_SH" pgshift-start "$2" "$PG_BIN" "$3" "${4:-wait}" >/dev/null
}

# pgs_pgpass_line USER PASSWORD: a passfile line for USER on any host, port and database,
# with : and \ escaped the way libpq reads them.
pgs_pgpass_line() {
  local u=${1//\\/\\\\} p=${2//\\/\\\\}
  printf '*:*:*:%s:%s\n' "${u//:/\\:}" "${p//:/\\:}"
}

# pgs_put_passfile SPEC AUX USER PASSWORD_FILE: write AUX/pgpass (mode 0600, the server's
# user's) on host SPEC. The password travels on stdin, never in an argument; connections
# name the file with passfile=, so no password is in any conninfo either.
pgs_put_passfile() {
  local spec=$1 aux=$2 user=$3 pwfile=$4
  # shellcheck disable=SC2016  # expanded on the host
  pgs_pgpass_line "$user" "$(<"$pwfile")" |
    pgs_on_pg "$spec" sh -c 'umask 077 && mkdir -p "$1" && cat >"$1/pgpass.new" && mv -f "$1/pgpass.new" "$1/pgpass"' \
      pgshift-passfile "$aux"
}

# pgs_tls_conninfo MODE AUX: the conninfo keywords for TLS MODE (verify-full, require, off)
# on a host whose pgshift files are in AUX (the CA certificate setup-host.sh put there).
pgs_tls_conninfo() {
  case $1 in
    verify-full) printf 'sslmode=verify-full sslrootcert=%s' "$(pgs_conninfo_quote "$2/ca.crt")" ;;
    require) printf 'sslmode=require' ;;
    off) printf 'sslmode=disable' ;;
    *) pgs_die "$EX_USAGE" "unknown TLS mode '$1' (use verify-full, require or off)" ;;
  esac
}

# --- TLS: a small CA on the control machine ------------------------------------------------

# pgs_ca_ensure DIR: the CA in DIR (ca.crt, ca.key 0600), made if absent. Prints "created"
# when it made one.
pgs_ca_ensure() {
  local dir=$1
  [[ -f $dir/ca.crt && -f $dir/ca.key ]] && return 0
  pgs_require_cmd openssl
  (umask 077 && mkdir -p "$dir") || pgs_die "$EX_IOERR" "cannot create the CA directory $dir"
  (umask 077 && openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=pgshift CA $(hostname)" \
    -keyout "$dir/ca.key.new" -out "$dir/ca.crt.new" >/dev/null 2>&1) ||
    pgs_die "$EX_SOFTWARE" "openssl could not make a CA in $dir"
  mv -f "$dir/ca.key.new" "$dir/ca.key" && mv -f "$dir/ca.crt.new" "$dir/ca.crt"
  chmod 644 "$dir/ca.crt"
  echo created
}

# pgs_tls_issue CA_DIR SPEC AUX NAME...: make sure host SPEC has AUX/server.crt for NAMEs (IP
# addresses or DNS names, the first is the CN) signed by the CA in CA_DIR, with AUX/server.key
# and AUX/ca.crt. The key is made on the host and never leaves it: the host sends a
# certificate request, signed here. Prints "unchanged" or "issued".
pgs_tls_issue() {
  local ca=$1 spec=$2 aux=$3 name san="" have tmp
  shift 3
  for name in "$@"; do
    if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san+=",IP:$name"; else san+=",DNS:$name"; fi
  done
  san=${san#,}
  tmp=$(mktemp -d /tmp/pgshift-tls.XXXXXX)
  # What the host has: a certificate this CA signed for these names, and its CA file.
  # shellcheck disable=SC2016  # expanded on the host
  have=$(pgs_on_pg "$spec" sh -c 'cat "$1/server.crt" 2>/dev/null' pgshift-tls "$aux")
  if [[ -n $have ]]; then
    printf '%s\n' "$have" >"$tmp/have.crt"
    # shellcheck disable=SC2016  # expanded on the host
    if openssl verify -CAfile "$ca/ca.crt" "$tmp/have.crt" >/dev/null 2>&1 &&
      [[ $(openssl x509 -noout -ext subjectAltName -in "$tmp/have.crt" 2>/dev/null | tail -n +2 |
        tr -d ' ' | sed 's/IPAddress:/IP:/g') == "$san" ]] &&
      [[ $(pgs_on_pg "$spec" sh -c 'cat "$1/ca.crt" 2>/dev/null' pgshift-tls "$aux") == "$(<"$ca/ca.crt")" ]]; then
      rm -rf "$tmp"
      echo unchanged
      return 0
    fi
  fi
  # shellcheck disable=SC2016  # expanded on the host
  pgs_on_pg "$spec" sh -c 'umask 077 && mkdir -p "$1" &&
    openssl req -new -newkey rsa:2048 -nodes -subj "/CN=$2" -keyout "$1/server.key.new" 2>/dev/null' \
    pgshift-tls "$aux" "$1" >"$tmp/req.csr" ||
    pgs_die "$EX_SOFTWARE" "host $spec could not make a key and certificate request in $aux (is openssl installed there?)"
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' \
    "$san" >"$tmp/ext.cnf"
  openssl x509 -req -days 825 -in "$tmp/req.csr" -CA "$ca/ca.crt" -CAkey "$ca/ca.key" -CAcreateserial \
    -CAserial "$ca/ca.srl" -extfile "$tmp/ext.cnf" -out "$tmp/server.crt" >/dev/null 2>&1 ||
    pgs_die "$EX_SOFTWARE" "cannot sign the certificate request of $spec with the CA in $ca"
  # shellcheck disable=SC2016  # expanded on the host
  if ! pgs_on_pg "$spec" sh -c 'cat >"$1/ca.crt.new" && mv -f "$1/ca.crt.new" "$1/ca.crt"' pgshift-tls "$aux" <"$ca/ca.crt" ||
    ! pgs_on_pg "$spec" sh -c 'cat >"$1/server.crt.new" && chmod 600 "$1/server.key.new" &&
      mv -f "$1/server.key.new" "$1/server.key" && mv -f "$1/server.crt.new" "$1/server.crt"' \
      pgshift-tls "$aux" <"$tmp/server.crt"; then
    pgs_die "$EX_IOERR" "cannot install the certificate in $aux on $spec"
  fi
  rm -rf "$tmp"
  echo issued
}

# pgs_host_reachable SPEC: true if commands can run on SPEC (ssh answers, netns exists).
pgs_host_reachable() {
  pgs_on "$1" true >/dev/null 2>&1
}

# --- The journal (see tools/pg-switch/src/journal.rs and shared/PROTOCOL.md) -------------

# pgs_journal_path SOURCE_ID TARGET_ID: the default journal of a pair of hosts (either
# direction: the ids are sorted), under PGSHIFT_STATE_DIR (default
# $XDG_STATE_HOME/pgshift, i.e. ~/.local/state/pgshift).
pgs_journal_path() {
  local dir=${PGSHIFT_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/pgshift} a b
  a=${1//[^A-Za-z0-9._-]/_} b=${2//[^A-Za-z0-9._-]/_}
  [[ $a < $b ]] || { local t=$a; a=$b b=$t; }
  printf '%s/%s--%s.jsonl\n' "$dir" "$a" "$b"
}

# pgs_journal FILE EVENT [key=string | key:=json]...: append one journal record, on stable
# storage (fsync) before this returns. A torn last line (a crash mid-write) is ended first.
pgs_journal() {
  local file=$1 event=$2 seq line
  shift 2
  if [[ ! -e $file ]]; then
    mkdir -p "$(dirname "$file")" && : >>"$file" && sync "$(dirname "$file")" || return 74
  fi
  [[ ! -s $file || $(tail -c 1 "$file" | od -An -c | tr -d ' ') == '\n' ]] || printf '\n' >>"$file"
  seq=$(($(wc -l <"$file") + 1))
  line=$(pgs_json journal seq:="$seq" at="$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" by=migrate.sh \
    pid:=$$ event="$event" "$@")
  printf '%s\n' "$line" >>"$file" && sync "$file" || return 74
}

# --- A migration's run: what migrate.sh and migrate-logical.sh share --------------------------
# Their records go to stdout and to the --report file (`report`); each phase is journalled
# (`journal`, `src_id`, `tgt_id`, and PGS_NOTE_EXTRA's fields on every record; nothing in a dry
# run, `dry_run`) and ends with a `phase` record (`phase`, `phase_t0`, `phase_ms`,
# `phase_order`); hooks are `hooks[NAME]`. The script defines `fail CODE MESSAGE`.
PGS_NOTE_EXTRA=()

# pgs_preload_hosts_env ARGS...: source the file of --hosts-env in ARGS (sets hosts_env), before
# the options are read, so that the options given override it.
pgs_preload_hosts_env() {
  local i args=("$@")
  for ((i = 0; i < ${#args[@]}; i++)); do
    if [[ ${args[i]} == --hosts-env ]]; then
      hosts_env=${args[i + 1]:-}
      [[ -r $hosts_env ]] || pgs_usage "cannot read --hosts-env '$hosts_env'"
      # shellcheck disable=SC1090  # plain assignments: they stay global
      . "$hosts_env"
    fi
  done
}

# pgs_emit TYPE [key=string | key:=json]...: one record, on stdout and in the report.
pgs_emit() { pgs_emit_line "$(pgs_json "$@")"; }
# pgs_emit_line LINE: a record made elsewhere (a tool's), the same way.
pgs_emit_line() {
  pgs_print_record "$1"
  if [[ -n $report ]]; then printf '%s\n' "$1" >>"$report"; fi
}

# pgs_phase_begin NAME [key=value]...: a phase starts (said on stderr, journalled).
pgs_phase_begin() {
  phase=$1 phase_t0=$(pgs_now_ms)
  shift
  pgs_log "phase $phase"
  pgs_note phase phase="$phase" state=begin "$@"
}
# pgs_phase_end [key=value]...: the phase ends: journalled, and its `phase` record with these
# fields.
# shellcheck disable=SC2004  # phase_ms is the script's associative array (keyed by name)
pgs_phase_end() {
  local now ms
  now=$(pgs_now_ms) ms=$((now - phase_t0))
  phase_ms[$phase]=$ms
  phase_order+=("$phase")
  pgs_note phase phase="$phase" state=end
  pgs_emit phase name="$phase" status=ok ms:=$ms started_at_ms:="$phase_t0" ended_at_ms:="$now" "$@"
}

# pgs_note EVENT k=v...: one journal record (on disk before this returns). None in a dry run: a
# later run must not find one to resume.
# shellcheck disable=SC2154  # the script's dry_run, journal, src_id and tgt_id
pgs_note() {
  ((!dry_run)) || return 0
  pgs_journal "$journal" "$@" "${PGS_NOTE_EXTRA[@]}" source="$src_id" target="$tgt_id" ||
    fail "$EX_IOERR" "cannot write the journal $journal"
}

# pgs_run_hook NAME: the user's command for hook NAME, if any (its output on stderr); its
# failure fails the run.
pgs_run_hook() {
  [[ -n ${hooks[$1]:-} ]] || return 0
  pgs_log "hook $1: ${hooks[$1]}"
  bash -c "${hooks[$1]}" >&2 || fail "$EX_SOFTWARE" "hook $1 failed: ${hooks[$1]}"
}

# pgs_conninfo_quote VALUE: VALUE as a libpq conninfo value ('...' with \' and \\).
pgs_conninfo_quote() {
  local v=${1//\\/\\\\}
  printf "'%s'" "${v//\'/\\\'}"
}

# pgs_no_password DSN: true unless DSN (a conninfo or a URL) holds a password, which would be
# in process arguments: the scripts refuse it and ask for a passfile.
# (Spaces around the = are conninfo too: password = x.)
pgs_no_password() { [[ ! $1 =~ password[[:space:]]*= && $1 != *://*:*@* ]]; }
PGS_PASSWORD_HINT="put it in a passfile (passfile=FILE, or ~/.pgpass) so it is in no process's arguments"

# pgs_url_conninfo DSN: DSN in keyword=value form. A postgresql:// or postgres:// URL
# (user[:password]@host[:port]/dbname?key=value&...; %XX decoded; [v6] hosts) becomes the
# keyword form libpq gives it (a value with spaces or quotes quoted with pgs_conninfo_quote);
# anything else is
# printed as it is. One host only (exit 2 with a message for host lists, which a --source
# cannot be).
pgs_url_conninfo() {
  local dsn=$1 rest auth="" hostport="" path="" query="" out="" kv k v
  case $dsn in postgresql://* | postgres://*) ;; *) printf '%s' "$dsn"; return 0 ;; esac
  rest=${dsn#*://}
  if [[ $rest == *\?* ]]; then query=${rest#*\?} rest=${rest%%\?*}; fi
  if [[ $rest == */* ]]; then path=${rest#*/} rest=${rest%%/*}; fi
  if [[ $rest == *@* ]]; then auth=${rest%@*} hostport=${rest##*@}; else hostport=$rest; fi
  [[ $hostport != *,* ]] || { pgs_log "a URL with several hosts cannot name one server: give one host"; return 2; }
  _pgs_url_kv() { # a plain value as it is (the scripts read host= and port= with sed), else quoted
    [[ -n $2 ]] || return 0
    local d
    d=$(_pgs_url_dec "$2")
    if [[ $d =~ ^[A-Za-z0-9._:/@+,=-]+$ ]]; then out+="${out:+ }$1=$d"; else out+="${out:+ }$1=$(pgs_conninfo_quote "$d")"; fi
  }
  _pgs_url_dec() { local x=${1//+/ }; printf '%b' "${x//%/\\x}"; }
  if [[ -n $auth ]]; then
    _pgs_url_kv user "${auth%%:*}"
    [[ $auth == *:* ]] && _pgs_url_kv password "${auth#*:}"
  fi
  if [[ $hostport =~ ^\[([^]]*)\](:([0-9]*))?$ ]]; then
    local h6=${BASH_REMATCH[1]} p6=${BASH_REMATCH[3]:-}
    _pgs_url_kv host "$h6"
    _pgs_url_kv port "$p6"
  else
    _pgs_url_kv host "${hostport%%:*}"
    [[ $hostport == *:* ]] && _pgs_url_kv port "${hostport#*:}"
  fi
  _pgs_url_kv dbname "$path"
  if [[ -n $query ]]; then
    local IFS='&'
    for kv in $query; do
      k=${kv%%=*} v=${kv#*=}
      _pgs_url_kv "$(_pgs_url_dec "$k")" "$v"
    done
  fi
  printf '%s' "$out"
}

# pgs_conninfo_value DSN KEY: the value of keyword KEY in conninfo DSN, a plain (unquoted)
# one as hosts.env's SOURCE_DSN has them (host, port); empty when DSN has no KEY.
pgs_conninfo_value() {
  sed -n "s/\(^\|.* \)$2=\([^ ]*\).*/\2/p" <<<"$1"
}

# pgs_conf_quote VALUE: VALUE as a postgresql.conf string ('...' with '' and \\), the same
# as shared::host::conf_quote.
pgs_conf_quote() {
  local v=${1//\\/\\\\}
  printf "'%s'" "${v//\'/\'\'}"
}

# pgs_wal_cmd_word VALUE: VALUE as one word of an archive_command or restore_command, which
# PostgreSQL runs with /bin/sh after replacing %p, %f and %%: as it is when plain, else in
# single quotes ('\'' for a quote), with every % doubled. (A path with a space, a quote or a
# % in it otherwise breaks the command, and the server keeps retrying it.)
pgs_wal_cmd_word() {
  local w=$1
  [[ $w =~ ^[A-Za-z0-9._/:@+,=-]+$ ]] || w="'${w//\'/\'\\\'\'}'"
  printf '%s' "${w//%/%%}"
}

# pgs_repl_probe SPEC HOST PORT USER PASSWORD_FILE TLS: on host SPEC, open a replication
# connection to HOST:PORT as USER (IDENTIFY_SYSTEM) with the TLS keywords TLS (see
# pgs_tls_conninfo); the password travels on stdin, never in an argument. Prints psql's
# error on failure.
pgs_repl_probe() {
  local spec=$1 host=$2 port=$3 user=$4 pwfile=$5 tls=$6
  # shellcheck disable=SC2016  # expanded by the remote sh
  pgs_on_pg "$spec" sh -c 'IFS= read -r PGPASSWORD || [ -n "$PGPASSWORD" ]; export PGPASSWORD
    exec "$0" -XAtq -d "$1" -c IDENTIFY_SYSTEM' "$PG_BIN/psql" \
    "host=$host port=$port user=$user dbname=replication replication=true $tls connect_timeout=5" \
    <"$pwfile" 2>&1 >/dev/null
}

# pgs_now_ms: wall clock in milliseconds.
pgs_now_ms() {
  local s=${EPOCHREALTIME//[!0-9]/}
  printf '%s\n' "${s:0:-3}"
}

# --- load-gen in the background -----------------------------------------------------------

# pgs_load_start LOAD_GEN DSN OUT [LOAD-GEN OPTIONS...]: start load-gen against DSN in the
# background (its JSON lines to OUT), and return once it has committed something. Sets
# PGS_LOAD_PID. Call pgs_load_stop from the same shell (not a subshell: only this shell can
# wait for it).
pgs_load_start() {
  local bin=$1 dsn=$2 out=$3 deadline
  shift 3
  "$bin" --dsn "$dsn" --json-only "$@" >"$out" 2>/dev/null &
  PGS_LOAD_PID=$! PGS_LOAD_OUT=$out
  deadline=$((SECONDS + 60))
  until grep -q '"type":"tick".*"committed":[1-9]' "$out" 2>/dev/null; do
    if ((SECONDS >= deadline)) || ! kill -0 "$PGS_LOAD_PID" 2>/dev/null; then
      pgs_die "$EX_SOFTWARE" "load-gen did not start committing (see $out)"
    fi
    sleep 0.1
  done
}

# pgs_load_stop: SIGINT the load-gen started by pgs_load_start, wait for it, and put its
# summary (the last line of its output) in PGS_LOAD_SUMMARY.
pgs_load_stop() {
  kill -INT "$PGS_LOAD_PID" 2>/dev/null || true
  wait "$PGS_LOAD_PID" || true
  PGS_LOAD_SUMMARY=$(tail -n 1 "$PGS_LOAD_OUT")
}

# --- benchmarks ---------------------------------------------------------------------------

# pgs_release_bin TOOL: print the path of TOOL's release binary. A variable named after the
# tool (WAL_SHIP_BIN for wal-ship) overrides it; otherwise the binary is built first.
pgs_release_bin() {
  local tool=$1 var
  var=$(tr 'a-z-' 'A-Z_' <<<"$tool")_BIN
  if [[ -n ${!var:-} ]]; then
    printf '%s\n' "${!var}"
    return
  fi
  (cd "$PGS_ROOT" && cargo build --release -q -p "$tool") || pgs_die "$EX_SOFTWARE" "cannot build $tool"
  printf '%s\n' "$PGS_ROOT/target/release/$tool"
}

# pgs_bench_begin NAME BIN TOOL...: a benchmark's start: every TOOL built in BIN (else exit 69,
# naming make release), and its results file bench/results/NAME-<UTC timestamp>.jsonl made
# empty and named in PGS_RESULTS (pgs_record appends to it).
pgs_bench_begin() {
  local name=$1 bin=$2 t
  shift 2
  for t in "$@"; do
    [[ -x $bin/$t ]] || pgs_die "$EX_UNAVAILABLE" "$bin/$t is missing: run 'make release' first"
  done
  PGS_RESULTS=$(pgs_results_file "$name" jsonl)
  : >"$PGS_RESULTS"
}

# pgs_bench_workdir NAME: a benchmark's scratch directory, /tmp/pgshift-bench-NAME.XXXXXX, made
# and named in PGS_WORK: mode 755 (the hosts made under it run as postgres), and the journals
# of the migrate.sh runs in it (PGSHIFT_STATE_DIR=PGS_WORK/state, exported). The benchmark
# removes it in its own clean-up.
pgs_bench_workdir() {
  PGS_WORK=$(mktemp -d "/tmp/pgshift-bench-$1.XXXXXX")
  chmod 755 "$PGS_WORK"
  export PGSHIFT_STATE_DIR=$PGS_WORK/state
}

# pgs_bench_both_dsn SOURCE_DSN ADDR PORT [KEYWORD=VALUE...]: the conninfo through both hosts
# of a pair, the source (host and port of SOURCE_DSN) and ADDR:PORT, to whichever takes writes
# (target_session_attrs=read-write), as the application reaches them in a benchmark: database
# app, no TLS, the KEYWORDs (user=...) after the ports.
pgs_bench_both_dsn() {
  local a=$1 addr=$2 port=$3 kw kws=""
  shift 3
  for kw in "$@"; do kws+=" $kw"; done
  printf 'host=%s,%s port=%s,%s%s dbname=app sslmode=disable target_session_attrs=read-write\n' \
    "$(pgs_conninfo_value "$a" host)" "$addr" "$(pgs_conninfo_value "$a" port)" "$port" "$kws"
}

# pgs_record LINE: a benchmark's record, on stdout and in PGS_RESULTS.
pgs_record() {
  printf '%s\n' "$1"
  printf '%s\n' "$1" >>"$PGS_RESULTS"
}

# pgs_results_file NAME EXT: print bench/results/NAME-<UTC timestamp>.EXT, making the
# directory.
pgs_results_file() {
  local dir=$PGS_ROOT/bench/results
  mkdir -p "$dir"
  printf '%s/%s-%s.%s\n' "$dir" "$1" "$(date -u +%Y%m%dT%H%M%SZ)" "$2"
}
