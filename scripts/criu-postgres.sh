#!/usr/bin/env bash
# scripts/criu-postgres.sh: run PostgreSQL so that CRIU can checkpoint it, and move it to
# another host with criu-wrap.
#
#   scripts/criu-postgres.sh start DATA PORT [--pidns] [-- POSTGRES_OPTION...]
#   scripts/criu-postgres.sh pid DATA            the postmaster's PID (what criu-wrap needs)
#   scripts/criu-postgres.sh stop DATA           fast shutdown
#   scripts/criu-postgres.sh migrate DATA ssh://[user@]host[:port]/IMAGES [criu-wrap migrate options]
#
# What CRIU needs from PostgreSQL, and why (each was seen failing without it, in the VM of
# scripts/criu-vm.sh, CRIU 3.17.1 on Linux 6.1; tools/criu-wrap/tests/vm.rs):
#
# - Its own IPC namespace. The postmaster keeps a small System V shared memory segment (the
#   interlock beside the mmap'd main area), and CRIU refuses SysV memory shared with the host
#   ("Task ... with SysVIPC shmem map ... doesn't live in IPC ns"). `start` runs it under
#   `unshare -i`.
# - dynamic_shared_memory_type=mmap: parallel query's segments become files in
#   DATA/pg_dynshmem, copied with the data directory, instead of /dev/shm files that would
#   be missing on the target. huge_pages=off, too.
# - Its own session (setsid): CRIU dumps a session leader with its tree.
# - The same data directory on the target, at the same path, holding the same bytes: the
#   backends keep relation files open and CRIU reopens them by path. `migrate` copies DATA
#   once while the server runs (warm: most bytes move then), and again with rsync while it is
#   frozen (criu-wrap migrate --after-dump), so that the target's files are exactly those the
#   frozen memory expects. The frozen copy sends only what changed.
# - The same PostgreSQL build at the same path, and the same postgres uid/gid (CRIU checks
#   the binaries and libraries a process has mapped); the socket directory; the port and the
#   listen address free on the target (listen_addresses='*' or an address that moves along).
# - Free PIDs: without a PID namespace the processes keep their PIDs, and the target must not
#   use them (criu-wrap says `pid_in_use`, exit 75, and the source runs again).
# - Established client connections need `--tcp-established` and an IP address that moves with
#   the server; simpler: pause the pooler (PgBouncer PAUSE) so that none is open.
#
# --pidns (the issue's `unshare -ipf`): IPC + PID namespaces, and a mount namespace with a
# /proc of its own, since CRIU's parasite cannot work in a non-root task whose /proc belongs
# to another PID namespace ("can't dump unprivileged task whose /proc doesn't belong to it").
# The mounts are slaves of the host's and passed to CRIU as external. This dumps, but CRIU
# 3.17 fails to restore it ("mnt: BUG at criu/mount.c:48"), so it is not the default. Inside
# a PID namespace the postmaster is PID 1 and postmaster.pid says 1: never run pg_ctl from
# outside (it would signal the host's init); use `stop`.
#
# Output: JSON lines (the `postgres` record, criu-wrap's records for migrate) and a summary.
# CRIU_WRAP (default: criu-wrap on PATH, else target/release/criu-wrap) names the binary.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$ROOT/scripts/lib.sh"

usage() { pgs_usage "${1:-first argument must be start, pid, stop or migrate}"; }
! pgs_wants_help "$@" || pgs_help

criu_wrap() {
  if [[ -n ${CRIU_WRAP:-} ]]; then echo "$CRIU_WRAP"
  elif command -v criu-wrap >/dev/null 2>&1; then command -v criu-wrap
  elif [[ -x $ROOT/target/release/criu-wrap ]]; then echo "$ROOT/target/release/criu-wrap"
  else pgs_die "$EX_UNAVAILABLE" "criu-wrap not found: cargo build --release -p criu-wrap, or set CRIU_WRAP"
  fi
}

# postmaster_pid DATA: the PID (as this host sees it) of the postmaster serving DATA.
postmaster_pid() {
  local data=$1 p args ppid
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [[ -r /proc/$p/cmdline ]] || continue
    args=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) || continue
    [[ $args == *postgres*" -D $data "* ]] || continue
    # The postmaster is the one whose parent is not a postgres process.
    ppid=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null) || continue
    [[ $(cat "/proc/$ppid/comm" 2>/dev/null) == postgres ]] && continue
    [[ $(cat "/proc/$p/comm" 2>/dev/null) == postgres ]] || continue
    echo "$p"
    return 0
  done
  return 1
}

cmd_start() {
  local data=${1:-} port=${2:-}
  [[ -n $data && -n $port ]] || usage "start needs DATA and PORT"
  shift 2
  local pidns=0 opts=()
  while (($#)); do
    case $1 in
      --pidns) pidns=1 ;;
      --) shift; opts+=("$@"); break ;;
      *) usage "unknown option '$1'" ;;
    esac
    shift
  done
  data=$(realpath "$data")
  [[ -f $data/PG_VERSION ]] || pgs_die "$EX_DATAERR" "$data is not a PostgreSQL data directory"
  [[ $(id -u) == 0 ]] || pgs_die "$EX_USAGE" "run as root: creating namespaces needs it (postgres itself runs as the postgres user)"
  if postmaster_pid "$data" >/dev/null; then
    pgs_die "$EX_USAGE" "a postmaster already serves $data (PID $(postmaster_pid "$data"))"
  fi
  local q
  q="exec $(pgs_quote "$PG_BIN/postgres") -D $(pgs_quote "$data") -c port=$port"
  q+=" -c dynamic_shared_memory_type=mmap -c huge_pages=off"
  local o
  for o in "${opts[@]}"; do q+=" $(pgs_quote "$o")"; done
  # The server's stderr: a file CRIU reopens on the target, so it lives in DATA and moves
  # with it.
  local log=$data/criu-postgres.log
  # Inside the namespaces: reopen the standard descriptors there, lead a session, drop to
  # the postgres user with setpriv (which execs: no extra process in the tree).
  local inner
  inner="exec </dev/null >>$(pgs_quote "$log") 2>&1; exec setsid setpriv --reuid=postgres --regid=postgres --init-groups -- sh -c $(pgs_quote "$q")"
  if ((pidns)); then
    setsid unshare -ipfm --propagation slave --mount-proc sh -c "$inner" </dev/null >/dev/null 2>&1 &
  else
    unshare -i sh -c "$inner" </dev/null >/dev/null 2>&1 &
  fi
  local i pid=""
  for i in $(seq 1 100); do
    pid=$(postmaster_pid "$data") && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" && break
    pid=""
    sleep 0.2
  done
  [[ -n $pid ]] || pgs_die "$EX_SOFTWARE" "postgres did not become ready on port $port (see $log)"
  pgs_json postgres data="$data" pid:="$pid" port:="$port" \
    namespaces="$( ((pidns)) && echo ipc,pid,mnt || echo ipc)" log="$(realpath "$log")"
  pgs_json summary tool=criu-postgres success:=true exit_code:=0
}

cmd_pid() {
  local data
  [[ -n ${1:-} ]] || usage "pid needs DATA"
  data=$(realpath "$1")
  postmaster_pid "$data" || pgs_die "$EX_DIFF" "no postmaster serves $data"
}

cmd_stop() {
  local data pid i
  [[ -n ${1:-} ]] || usage "stop needs DATA"
  data=$(realpath "$1")
  pid=$(postmaster_pid "$data") || pgs_die "$EX_DIFF" "no postmaster serves $data"
  kill -INT "$pid"
  for i in $(seq 1 150); do
    [[ -d /proc/$pid ]] || break
    sleep 0.2
  done
  [[ ! -d /proc/$pid ]] || pgs_die "$EX_TEMPFAIL" "postmaster $pid did not stop within 30 s"
  pgs_json summary tool=criu-postgres success:=true exit_code:=0 stopped:="$pid"
}

cmd_migrate() {
  local data=${1:-} dest=${2:-}
  [[ -n $data && $dest == ssh://* ]] || usage "migrate needs DATA and ssh://[user@]host[:port]/IMAGES"
  shift 2
  data=$(realpath "$data")
  local pid host port
  pid=$(postmaster_pid "$data") || pgs_die "$EX_DATAERR" "no postmaster serves $data"
  # ssh://[user@]host[:port]/dir -> host and port for rsync ([v6addr] kept in brackets).
  local auth=${dest#ssh://} user="" opts=() w ssh=ssh
  auth=${auth%%/*}
  if [[ $auth == *@* ]]; then user=${auth%%@*}@ auth=${auth#*@}; fi
  port=""
  if [[ $auth =~ ^(\[.*\])(:([0-9]+))?$ ]]; then
    host=$user${BASH_REMATCH[1]} port=${BASH_REMATCH[3]}
  elif [[ $auth =~ ^([^:]*):([0-9]+)$ ]]; then
    host=$user${BASH_REMATCH[1]} port=${BASH_REMATCH[2]}
  else
    host=$user$auth
  fi
  # The one ssh policy (lib.sh, the same as criu-wrap's), as the command rsync -e runs: words
  # in single quotes, the way rsync splits it.
  pgs_ssh_opts opts
  for w in "${opts[@]}" ${port:+-p "$port"}; do
    [[ $w != *"'"* ]] || pgs_die "$EX_USAGE" "an ssh option holds a single quote, which rsync -e cannot carry: $w"
    ssh+=" '$w'"
  done
  # rsync 3.2.4+ protects remote arguments itself: no quoting for the remote shell.
  local remote=$host:$data/
  pgs_log "warm copy of $data to $host (the server keeps running)"
  rsync -a --delete -e "$ssh" --exclude=postmaster.pid "$data/" "$remote" ||
    pgs_die "$EX_UNAVAILABLE" "rsync of $data to $host failed"
  local cw rc=0
  cw=$(criu_wrap)
  "$cw" migrate --pid "$pid" --to "$dest" \
    --after-dump "rsync -a --delete -e $(pgs_quote "$ssh") $(pgs_quote "$data/") $(pgs_quote "$remote")" \
    "$@" | jq -c 'select(.type != "summary")' || rc=${PIPESTATUS[0]}
  pgs_json summary tool=criu-postgres success:="$( ((rc == 0)) && echo true || echo false)" \
    exit_code:="$rc" pid:="$pid"
  exit "$rc"
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  pid) shift; cmd_pid "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  migrate) shift; cmd_migrate "$@" ;;
  *) usage ;;
esac
