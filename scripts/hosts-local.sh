#!/usr/bin/env bash
# hosts-local.sh: two local "hosts" for a migration (what Terraform would provision).
#
#   hosts-local.sh create DIR [--netns] [--rate RATE] [--scale N] [--pgbench-scale N]
#                             [--archive] [--layout A[,B]] [--pooler] [--bin DIR]
#                             [--logical [--target-version N]]
#   hosts-local.sh destroy DIR
#
# create: host A (the source) is a running PostgreSQL 15 cluster configured by setup-host.sh
# (replication role with a scram password, TLS, wal_log_hints, ...) and loaded with a
# Pagila-like dataset (scripts/sql/pagila-like.sql, --scale) and pgbench tables
# (--pgbench-scale, 0 for none). Host B (the target) is an empty data directory and a port,
# ready for migrate.sh.
#   --layout plain|debian for A and B (default plain,plain): plain is initdb into DIR/a/data
#   started with pg_ctl; debian is a postgresql-common cluster made with pg_createcluster
#   (named pgs-ID-a / pgs-ID-b, configuration under /etc/postgresql/15/NAME, started with
#   pg_ctlcluster; for B only its configuration: the data directory is empty).
#   Both hosts get certificates from a CA in DIR/ca (setup-host.sh --tls-ca), so migrate.sh
#   runs with sslmode=verify-full; hosts.env names it (TLS_CA).
#   Without --netns, A listens on 127.0.0.1 and B will listen on 127.0.0.2 (two loopback
#   addresses). With --netns (root), A and B live in their own network namespaces joined by a
#   bridge, each with a `tc tbf` bandwidth limit (--rate, default 1gbit) on its egress:
#   what crosses between them crosses a network.
#   --pooler starts a PgBouncer (Debian's pgbouncer, as postgres) on this machine in front of
#   A, made by setup-host.sh --role pooler (DIR/pooler): transaction pooling, the database
#   app, server_login_retry 0.1 s, TLS to the servers verified against the CA; clients connect to POOLER_ADDR:POOLER_PORT, migrate.sh switches it
#   (POOLER_DSN, its admin console, in hosts.env).
#   --archive configures A's archive_command with wal-ship for archive mode, into
#   "DIR/wal archive 100%": a space and a percent sign, so every archive-mode run shows that
#   archive_command and restore_command carry such a path intact.
#   --logical: for migrate.sh --mode logical. A gets wal_level = logical and an application
#   role `app` (LOGIN, owner of the database app, rights on its tables: the role clients use,
#   which the cutover fences); B is a running cluster (plain layout) of PostgreSQL
#   --target-version N (default 15; other majors from scripts/fetch-pg.sh), empty.
# Writes DIR/hosts.env (the variables migrate.sh --hosts-env reads) and prints one `host`
# record per host, then `summary`.
# destroy: stops both clusters, removes the namespaces and bridge, and DIR, only if DIR is
# one create made (it holds DIR/.pgshift-hosts-local; create takes only a new or empty
# DIR): any other directory is refused (exit 65) and left alone.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PGS_NAME=hosts-local
here=$(cd "$(dirname "$0")" && pwd)

usage() { pgs_usage "$1"; }

cmd=${1:-}
! pgs_wants_help "$@" || pgs_help
dir=${2:-}
[[ $cmd == create || $cmd == destroy ]] || usage "first argument must be create or destroy"
[[ -n $dir ]] || usage "$cmd needs DIR"
shift 2
netns=0 rate=1gbit scale=1 pgbench_scale=1 archive=0 pooler=0 bin=$(cd "$here/.." && pwd)/target/release
logical=0 target_version=15
layout_a=plain layout_b=plain
while (($#)); do
  case $1 in
    --netns) netns=1 ;;
    --rate) pgs_val "$@"; rate=$2; shift ;;
    --scale) pgs_val "$@"; scale=$2; shift ;;
    --pgbench-scale) pgs_val "$@"; pgbench_scale=$2; shift ;;
    --archive) archive=1 ;;
    --pooler) pooler=1 ;;
    --logical) logical=1 ;;
    --target-version) pgs_val "$@"; target_version=$2; shift ;;
    --bin) pgs_val "$@"; bin=$2; shift ;;
    --layout)
      pgs_val "$@"
      IFS=, read -r layout_a layout_b <<<"$2"
      layout_b=${layout_b:-$layout_a}
      for l in "$layout_a" "$layout_b"; do
        [[ $l == plain || $l == debian ]] || usage "--layout takes plain or debian for A and B (e.g. debian,plain)"
      done
      shift ;;
    *) usage "unknown option '$1'" ;;
  esac
  shift
done
[[ $scale =~ ^[0-9]+$ && $pgbench_scale =~ ^[0-9]+$ ]] || usage "--scale and --pgbench-scale take whole numbers"
[[ $target_version =~ ^1[3-9]$ ]] || usage "--target-version takes a major version (e.g. 17)"
((logical || target_version == 15)) || usage "--target-version needs --logical (a physical target is a copy of the source)"
((!logical)) || [[ $layout_a == plain && $layout_b == plain ]] || usage "--logical makes plain clusters (no --layout debian)"
bin_b=$PG_BIN
if ((logical)); then
  bin_b=$(pgs_pg_major_bin "$target_version") || exit "$EX_UNAVAILABLE"
fi
# Absolute: it ends up in archive_command, run from the data directory.
[[ -d $bin ]] && bin=$(cd "$bin" && pwd)

# A short id from DIR names the namespaces and the bridge (interface names are ≤ 15 chars).
id=$(printf '%s' "$(cd "$(dirname "$dir")" 2>/dev/null && pwd)/$(basename "$dir")" | cksum | cut -c1-6)
ns_a=pgs-$id-a ns_b=pgs-$id-b br=pgsbr$id

destroy() {
  local d n pid i
  if [[ -f $dir/pooler/pgbouncer.pid ]]; then
    pid=$(<"$dir/pooler/pgbouncer.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  for d in "$dir/b" "$dir/a"; do pgs_cluster_destroy "$d"; done
  for n in "pgs-$id-a" "pgs-$id-b"; do
    if [[ -d /etc/postgresql/15/$n ]]; then
      pg_ctlcluster 15 "$n" stop -m immediate >/dev/null 2>&1 || true
      pg_dropcluster 15 "$n" >/dev/null 2>&1 || true
    fi
  done
  if [[ -f $dir/netns ]]; then
    # Deleting a namespace frees its veth ends asynchronously; delete ours now.
    ip link del "pgs${id}v1" 2>/dev/null || true
    ip link del "pgs${id}v2" 2>/dev/null || true
    ip netns del "$ns_a" 2>/dev/null || true
    ip netns del "$ns_b" 2>/dev/null || true
    ip link del "$br" 2>/dev/null || true
  fi
  rm -rf "$dir"
}

marker=.pgshift-hosts-local
if [[ $cmd == destroy ]]; then
  if [[ ! -e $dir ]]; then
    pgs_json summary success:=true destroyed=null message="$dir does not exist: nothing to remove"
    exit 0
  fi
  # Only what create made: a directory with its marker (or, made before the marker, the
  # hosts.env it writes).
  if [[ ! -f $dir/$marker ]] && ! head -n 1 "$dir/hosts.env" 2>/dev/null | grep -q '^# written by hosts-local.sh'; then
    pgs_die "$EX_DATAERR" "$dir was not made by hosts-local.sh create (no $dir/$marker): not removing it"
  fi
  destroy
  pgs_json summary success:=true destroyed="$dir"
  exit 0
fi

[[ ! -e $dir/hosts.env ]] || pgs_die "$EX_USAGE" "$dir already holds hosts (run 'hosts-local.sh destroy $dir' first)"
# A new or empty directory only: a failed create removes DIR, which must hold nothing else.
[[ ! -e $dir || -d $dir && -z $(ls -A "$dir" 2>/dev/null) ]] ||
  pgs_die "$EX_USAGE" "$dir exists and is not empty: give a new directory (create removes it again if it fails)"
mkdir -p "$dir"
chmod 755 "$dir"
: >"$dir/$marker"
dir=$(cd "$dir" && pwd)
on_exit() {
  local rc=$?
  if ((rc != 0)); then
    pgs_log "create failed (exit $rc); cleaning up"
    destroy
  fi
}
trap on_exit EXIT

if ((netns)); then
  [[ $(id -u) == 0 ]] || pgs_die "$EX_USAGE" "--netns needs root (ip netns, tc)"
  pgs_require_cmd ip tc
  # 10.X.Y.0/24 from the id, so two sets of hosts do not collide.
  net="10.$((10#${id:0:3} % 200 + 20)).$((10#${id:3:3} % 250 + 1))"
  : >"$dir/netns"
  ip link add "$br" type bridge
  ip addr add "$net.1/24" dev "$br"
  ip link set "$br" up
  n=0
  for ns in "$ns_a" "$ns_b"; do
    n=$((n + 1))
    ip netns add "$ns"
    ip netns exec "$ns" ip link set lo up
    ip link add "pgs${id}v$n" type veth peer name "pgs${id}p$n"
    ip link set "pgs${id}p$n" netns "$ns"
    ip link set "pgs${id}v$n" master "$br" up
    ip netns exec "$ns" ip link set "pgs${id}p$n" name eth0
    ip netns exec "$ns" ip addr add "$net.$((n + 1))/24" dev eth0
    ip netns exec "$ns" ip link set eth0 up
    ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst 512kb latency 100ms
  done
  host_a=$net.2 host_b=$net.3 spec_a=netns://$ns_a spec_b=netns://$ns_b allow=$net.0/24
else
  host_a=127.0.0.1 host_b=127.0.0.2 spec_a=local spec_b=local allow=127.0.0.0/8
fi

port_a=$(pgs_free_port "$host_a")
# The control machine (this one) is trusted as postgres; the target host must use the
# replication role and its password like a real remote host.
trust=127.0.0.0/8
((netns)) && trust=$net.1/32
if [[ $layout_a == debian ]]; then
  # A packaged cluster, as `apt install postgresql` and pg_createcluster make them.
  pgs_require_cmd pg_createcluster
  name_a=pgs-$id-a
  pgdata_a=/var/lib/postgresql/15/$name_a
  pgs_on_pg local pg_createcluster --start-conf=manual -p "$port_a" 15 "$name_a" -- -A trust -E UTF8 \
    --locale=C.UTF-8 --no-sync >"$dir/createcluster-a.log" 2>&1 ||
    pgs_die "$EX_SOFTWARE" "pg_createcluster failed: $(tail -n 5 "$dir/createcluster-a.log")"
  printf "listen_addresses = '%s'\nwal_keep_size = 128MB\n" "$host_a" >"/etc/postgresql/15/$name_a/conf.d/pgs-hosts-local.conf"
  # The control machine logs in as postgres without a password (before Debian's own lines,
  # which ask 127.0.0.1 for one; first match wins).
  sed -i "1i host all postgres $trust trust\nhost replication postgres $trust trust" "/etc/postgresql/15/$name_a/pg_hba.conf"
  pgs_pg_start "$spec_a" "$pgdata_a" "/var/log/postgresql/postgresql-15-$name_a.log" ||
    pgs_die "$EX_SOFTWARE" "cluster 15/$name_a did not start; see /var/log/postgresql/postgresql-15-$name_a.log"
  pgs_wait_ready "$host_a" "$port_a"
  cluster_a=15/$name_a
else
  PGS_SPEC=$spec_a PGS_TRUST_NET=$trust pgs_cluster_create "$dir/a" "$port_a" "$host_a"
  pgs_cluster_start "$dir/a"
  pgdata_a=$dir/a/data cluster_a=""
fi

# The replication password lives in a file readable only by its owner. It holds a quote, a
# space, a backslash and a colon, so every run shows they travel intact (pgpass, conninfo).
(umask 077 && printf "it's a \\ pass:%s" "$(head -c 12 /dev/urandom | base64 | tr -d '/+=')" >"$dir/repl.pw")
setup_args=(--role source --pgdata "$pgdata_a" --host "$spec_a" --listen "$host_a"
  --allow "$allow" --repl-password-file "$dir/repl.pw" --restart --tls-ca "$dir/ca" --bin "$bin")
((logical)) && setup_args+=(--logical)
archive_dir="wal archive 100%"
if ((archive)); then
  [[ -x $bin/wal-ship ]] || pgs_die "$EX_UNAVAILABLE" "--archive needs $bin/wal-ship (build it: make release)"
  mkdir -p "$dir/$archive_dir"
  chmod 700 "$dir/$archive_dir"
  [[ $(id -u) == 0 ]] && chown postgres:postgres "$dir/$archive_dir"
  setup_args+=(--archive "$dir/$archive_dir" --wal-ship "$bin/wal-ship")
fi
"$here/setup-host.sh" "${setup_args[@]}" >"$dir/setup-a.jsonl"

dsn_a="host=$host_a port=$port_a user=postgres dbname=postgres"
pgs_log "loading the Pagila-like dataset (scale $scale) into A"
pgs_psql "$dsn_a" "CREATE DATABASE app"
"$PG_BIN/psql" -Xq -v scale="$scale" -d "host=$host_a port=$port_a user=postgres dbname=app" \
  -f "$here/sql/pagila-like.sql" >/dev/null
if ((pgbench_scale > 0)); then
  pgs_log "loading pgbench tables (scale $pgbench_scale) into A"
  "$PG_BIN/pgbench" -q -i -s "$pgbench_scale" "host=$host_a port=$port_a user=postgres dbname=app" 2>/dev/null
fi

if ((logical)); then
  # The application's role: it owns the database and may write its tables (not a superuser).
  pgs_psql "$dsn_a" "CREATE ROLE app LOGIN" >/dev/null
  pgs_psql "$dsn_a" "ALTER DATABASE app OWNER TO app" >/dev/null
  pgs_psql "host=$host_a port=$port_a user=postgres dbname=app" \
    "GRANT ALL ON ALL TABLES IN SCHEMA public TO app; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO app" >/dev/null
fi

# Host B: an empty data directory and a port (or, --logical, a running empty cluster).
port_b=$(pgs_free_port "$host_b")
if [[ $layout_b == plain ]]; then # (--logical's B is plain)
  # Like /var/lib/postgresql on a real host: the server's user owns the parent of its data
  # directory (the log and the socket go there).
  mkdir -p "$dir/b"
  chmod 755 "$dir/b"
  if [[ $(id -u) == 0 ]]; then chown postgres:postgres "$dir/b"; fi
fi
if ((logical)); then
  # Its certificate signed by the hosts' CA, as setup-host.sh makes them (the pooler and the
  # way back verify it).
  tls_res=$(pgs_tls_issue "$dir/ca" "$spec_b" "$dir/b/tls" "$host_b")
  pgs_log "B's certificate: $tls_res"
  # The logical mode's settings, the ones setup-host.sh --logical gives A (B may be of another
  # major: set before its first start).
  PGS_SERVER_BIN=$bin_b PGS_SPEC=$spec_b PGS_TRUST_NET=$trust pgs_cluster_create "$dir/b" "$port_b" "$host_b" \
    "${PGS_LOGICAL_SETTINGS[@]}" ssl=on "ssl_cert_file='$dir/b/tls/server.crt'" "ssl_key_file='$dir/b/tls/server.key'" \
    "ssl_ca_file='$dir/b/tls/ca.crt'"
  pgs_cluster_start "$dir/b"
  pgdata_b=$dir/b/data cluster_b=""
elif [[ $layout_b == debian ]]; then
  # setup-host.sh makes the cluster's configuration (pg_createcluster) and empties its data
  # directory; the control machine's superuser login is the administrator's own business.
  name_b=pgs-$id-b
  pgdata_b=/var/lib/postgresql/15/$name_b cluster_b=15/$name_b
  "$here/setup-host.sh" --role target --cluster "$cluster_b" --port "$port_b" --host "$spec_b" \
    --listen "$host_b" --allow "$allow" --tls-ca "$dir/ca" --tls-name "$host_b" >"$dir/setup-b.jsonl"
  sed -i "1i host all postgres $trust trust" "/etc/postgresql/15/$name_b/pg_hba.conf"
else
  pgdata_b=$dir/b/data cluster_b=""
  "$here/setup-host.sh" --role target --pgdata "$pgdata_b" --host "$spec_b" --tls-ca "$dir/ca" \
    --tls-name "$host_b" >"$dir/setup-b.jsonl"
  printf 'HOST=%s\nPORT=%s\nSPEC=%s\n' "$host_b" "$port_b" "$spec_b" >"$dir/b/cluster.env"
fi

pooler_dsn="" pooler_port=""
if ((pooler)); then
  # What a user gets from setup-host.sh --role pooler, with one line for the lab: postgres,
  # which has no password here, gets in from this machine's loopback (like the clusters'
  # trust line); every other login is SCRAM over TLS.
  pgs_require_cmd pgbouncer
  pooler_port=$(pgs_free_port 127.0.0.1)
  mkdir -p "$dir/pooler"
  printf '%s\n' "# hosts-local.sh: the lab's pooler hba" "local all postgres peer" \
    "host all postgres 127.0.0.1/32 trust" "hostssl all all 0.0.0.0/0 scram-sha-256" >"$dir/pooler-hba.conf"
  "$here/setup-host.sh" --role pooler --source "$dsn_a" --backend "$host_a:$port_a" --databases app \
    --listen 127.0.0.1 --port "$pooler_port" --conf-dir "$dir/pooler" --hba "$dir/pooler-hba.conf" \
    --tls-ca "$dir/ca" --tls-name 127.0.0.1 >"$dir/setup-pooler.jsonl"
  pooler_dsn="host=127.0.0.1 port=$pooler_port user=postgres dbname=pgbouncer"
fi

cat >"$dir/hosts.env" <<EOF
# written by hosts-local.sh; read by migrate.sh --hosts-env
SOURCE_DSN='host=$host_a port=$port_a user=postgres dbname=app'
SOURCE_PGDATA='$pgdata_a'
SOURCE_CLUSTER='$cluster_a'
SOURCE_SPEC='$spec_a'
TARGET_ADDR='$host_b'
TARGET_PORT='$port_b'
TARGET_PGDATA='$pgdata_b'
TARGET_CLUSTER='$cluster_b'
TARGET_SPEC='$spec_b'
TLS_CA='$dir/ca/ca.crt'
REPL_USER='pgshift_repl'
REPL_PASSWORD_FILE='$dir/repl.pw'
ARCHIVE='$( ((archive)) && printf '%s' "$dir/$archive_dir")'
POOLER_DSN='$pooler_dsn'
POOLER_SPEC='local'
POOLER_ADDR='$( ((pooler)) && echo 127.0.0.1)'
POOLER_PORT='$pooler_port'
# With --logical: the application's role, and the target's server binaries (its major)
APP_USER='$( ((logical)) && echo app)'
TARGET_BIN='$bin_b'
# With --netns: this machine's end of each host's link (its egress is what the host receives)
SOURCE_LINK='$( ((netns)) && echo "pgs${id}v1")'
TARGET_LINK='$( ((netns)) && echo "pgs${id}v2")'
EOF
trap - EXIT
size=$(pgs_psql "$dsn_a" "SELECT pg_database_size('app')")
pgs_json host name=A role=source addr="$host_a" port:="$port_a" spec="$spec_a" pgdata="$pgdata_a" layout="$layout_a" app_bytes:="$size"
((pooler)) && pgs_json host name=P role=pooler addr=127.0.0.1 port:="$pooler_port" spec=local admin="$pooler_dsn"
pgs_json host name=B role=target addr="$host_b" port:="$port_b" spec="$spec_b" pgdata="$pgdata_b" layout="$layout_b" \
  version:="$target_version" running:="$( ((logical)) && echo true || echo false)"
pgs_json summary success:=true hosts_env="$dir/hosts.env" netns:="$( ((netns)) && echo true || echo false)"
