#!/usr/bin/env bash
# bench/lib/peers.sh: the switchover tools a DBA would otherwise use, set up at their defaults
# on this machine for bench/migrate.sh (sourced; not a benchmark of its own).
#
#   Patroni 3 (Debian's patroni) with a one-member etcd (etcd-server): two members on
#   127.0.0.1 and 127.0.0.2, `patronictl switchover --force`.
#   pg_auto_failover 2.0 (pg-auto-failover-cli, postgresql-15-auto-failover): a monitor and
#   two nodes on 127.0.0.1 and 127.0.0.2, `pg_autoctl perform switchover`.
#
# Each peer_*_up DIR creates the pair, loads pgbench tables (scale 1) into database `app` and
# sets PEER_DSN (both hosts, target_session_attrs=read-write, as load-gen uses it);
# peer_*_switch switches once and waits until the old primary follows the new one again;
# peer_*_down stops everything. Everything runs as the postgres user.

PEER_PORT_BASE=${PEER_PORT_BASE:-27000}

peer_as_pg() { runuser -u postgres -- env HOME="$PEER_DIR" PATH="$PG_BIN:$PATH" "$@"; }

# peer_wait_for TIMEOUT_S DESCRIPTION CMD...: poll CMD every 0.2 s until it succeeds.
peer_wait_for() {
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || pgs_die "$EX_SOFTWARE" "$what did not happen within $limit s (see $PEER_DIR)"
    sleep 0.2
  done
}

# peer_is_primary HOST PORT: it accepts sessions and is not in recovery.
peer_is_primary() {
  "$PG_BIN/psql" -XAtq -v ON_ERROR_STOP=1 -d "host=$1 port=$2 user=postgres dbname=postgres sslmode=disable connect_timeout=2" \
    -c "DO \$\$ BEGIN IF pg_is_in_recovery() THEN RAISE 'standby'; END IF; END \$\$"
}

# peer_port_open HOST PORT: something listens there.
peer_port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

peer_load_data() {
  local primary_dsn=$1
  "$PG_BIN/psql" -XAtq -d "$primary_dsn dbname=postgres" -c "CREATE DATABASE app" >/dev/null
  "$PG_BIN/pgbench" -q -i -s 1 "$primary_dsn dbname=app" >/dev/null 2>&1
}

# The primary answers read-write and the standby streams from it on the same timeline.
peer_pair_healthy() {
  local p s
  p=$("$PG_BIN/psql" -XAtq -d "${PEER_DSN/dbname=app/dbname=postgres}" -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") || return 1
  [[ $p == 1 ]] || return 1
  s=$(for h in 127.0.0.1:$PEER_P1 127.0.0.2:$PEER_P2; do
    "$PG_BIN/psql" -XAtq -d "host=${h%:*} port=${h#*:} user=postgres dbname=postgres sslmode=disable connect_timeout=2" \
      -c "SELECT pg_is_in_recovery()" 2>/dev/null
  done | sort | paste -sd, -)
  [[ $s == f,t ]]
}

# --- Patroni --------------------------------------------------------------------------------
peer_patroni_up() {
  PEER_DIR=$1
  pgs_require_cmd patroni patronictl etcd
  mkdir -p "$PEER_DIR"
  chown postgres:postgres "$PEER_DIR"
  local ep=$((PEER_PORT_BASE + 1)) epeer=$((PEER_PORT_BASE + 2)) n
  PEER_P1=$((PEER_PORT_BASE + 11)) PEER_P2=$((PEER_PORT_BASE + 12))
  peer_as_pg etcd --data-dir "$PEER_DIR/etcd" --name e1 \
    --listen-client-urls "http://127.0.0.1:$ep" --advertise-client-urls "http://127.0.0.1:$ep" \
    --listen-peer-urls "http://127.0.0.1:$epeer" --initial-advertise-peer-urls "http://127.0.0.1:$epeer" \
    --initial-cluster "e1=http://127.0.0.1:$epeer" >"$PEER_DIR/etcd.log" 2>&1 &
  peer_wait_for 30 "etcd start" peer_port_open 127.0.0.1 "$ep"
  for n in 1 2; do
    local port=$((PEER_PORT_BASE + 10 + n))
    mkdir -p "$PEER_DIR/n$n"
    # Patroni's defaults (ttl 30, loop_wait 10, retry_timeout 10, maximum_lag_on_failover
    # 1 MiB, asynchronous replication); only addresses, paths and trust for the bench.
    cat >"$PEER_DIR/n$n.yml" <<EOF
scope: pgshift-bench
name: n$n
restapi:
  listen: 127.0.0.$n:$((PEER_PORT_BASE + 20 + n))
  connect_address: 127.0.0.$n:$((PEER_PORT_BASE + 20 + n))
etcd3:
  hosts: 127.0.0.1:$ep
bootstrap:
  dcs: {ttl: 30, loop_wait: 10, retry_timeout: 10, maximum_lag_on_failover: 1048576}
  initdb: [{encoding: UTF8}, {locale: C.UTF-8}]
  pg_hba:
    - host all all 127.0.0.0/8 trust
    - host replication all 127.0.0.0/8 trust
postgresql:
  listen: 127.0.0.$n:$port
  connect_address: 127.0.0.$n:$port
  data_dir: $PEER_DIR/n$n/data
  bin_dir: $PG_BIN
  pgpass: $PEER_DIR/n$n/pgpass
  authentication:
    superuser: {username: postgres, password: x}
    replication: {username: postgres, password: x}
  parameters:
    unix_socket_directories: $PEER_DIR/n$n
EOF
    chown -R postgres:postgres "$PEER_DIR/n$n" "$PEER_DIR/n$n.yml"
    peer_as_pg patroni "$PEER_DIR/n$n.yml" >"$PEER_DIR/n$n.log" 2>&1 &
    if ((n == 1)); then
      peer_wait_for 60 "Patroni's first member becoming the leader" peer_is_primary 127.0.0.1 "$PEER_P1"
    fi
  done
  PEER_DSN="host=127.0.0.1,127.0.0.2 port=$PEER_P1,$PEER_P2 user=postgres dbname=app sslmode=disable target_session_attrs=read-write"
  peer_wait_for 120 "Patroni's replica streaming" peer_pair_healthy
  # The data once both run: a base copy of a freshly loaded primary waits for a spread
  # checkpoint (minutes).
  peer_load_data "host=127.0.0.1 port=$PEER_P1 user=postgres sslmode=disable"
}

peer_patroni_switch() {
  local leader candidate
  leader=$(patronictl -c "$PEER_DIR/n1.yml" list -f json | jq -r '.[] | select(.Role == "Leader") | .Member')
  candidate=$(patronictl -c "$PEER_DIR/n1.yml" list -f json | jq -r '.[] | select(.Role != "Leader") | .Member')
  patronictl -c "$PEER_DIR/n1.yml" switchover --leader "$leader" --candidate "$candidate" --force pgshift-bench >/dev/null
  peer_wait_for 120 "the old Patroni leader following the new one" peer_pair_healthy
}

peer_patroni_down() {
  pkill -INT -f "patroni $PEER_DIR/n" 2>/dev/null || true
  local i
  for i in $(seq 1 100); do pgrep -f "patroni $PEER_DIR/n" >/dev/null || break; sleep 0.2; done
  pkill -f "etcd --data-dir $PEER_DIR/etcd" 2>/dev/null || true
  for i in 1 2; do
    [[ -f $PEER_DIR/n$i/data/postmaster.pid ]] && peer_as_pg "$PG_BIN/pg_ctl" -D "$PEER_DIR/n$i/data" -m immediate stop >/dev/null 2>&1
  done
  return 0
}

# --- pg_auto_failover -----------------------------------------------------------------------
peer_pgaf() { peer_as_pg env XDG_CONFIG_HOME="$PEER_DIR/config" XDG_DATA_HOME="$PEER_DIR/share" pg_autoctl "$@"; }

peer_pgaf_up() {
  PEER_DIR=$1
  pgs_require_cmd pg_autoctl
  mkdir -p "$PEER_DIR"
  chown postgres:postgres "$PEER_DIR"
  local mon_port=$((PEER_PORT_BASE + 30)) n
  PEER_P1=$((PEER_PORT_BASE + 31)) PEER_P2=$((PEER_PORT_BASE + 32))
  peer_pgaf create monitor --pgdata "$PEER_DIR/monitor" --pgport "$mon_port" --hostname 127.0.0.1 \
    --auth trust --no-ssl --run >"$PEER_DIR/monitor.log" 2>&1 &
  peer_wait_for 60 "the pg_auto_failover monitor" "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$mon_port"
  sleep 1
  for n in 1 2; do
    # Its defaults: two nodes, replication-quorum on (a synchronous standby), priority 50.
    peer_pgaf create postgres --pgdata "$PEER_DIR/n$n" --pgport $((PEER_PORT_BASE + 30 + n)) \
      --hostname 127.0.0.$n --name "n$n" --auth trust --no-ssl \
      --monitor "postgres://autoctl_node@127.0.0.1:$mon_port/pg_auto_failover" --run >"$PEER_DIR/n$n.log" 2>&1 &
    if ((n == 1)); then
      peer_wait_for 90 "the first pg_auto_failover node becoming primary" peer_is_primary 127.0.0.1 "$PEER_P1"
    fi
  done
  PEER_DSN="host=127.0.0.1,127.0.0.2 port=$PEER_P1,$PEER_P2 user=postgres dbname=app sslmode=disable target_session_attrs=read-write"
  peer_wait_for 180 "the pg_auto_failover secondary" peer_pgaf_settled
  peer_load_data "host=127.0.0.1 port=$PEER_P1 user=postgres sslmode=disable"
}

# Both nodes report the state the monitor assigned, one primary and one secondary.
peer_pgaf_settled() {
  peer_pgaf show state --pgdata "$PEER_DIR/monitor" --json 2>/dev/null |
    jq -e '[.[] | select(.current_group_state == .assigned_group_state) | .current_group_state] | sort == ["primary", "secondary"]' >/dev/null &&
    peer_pair_healthy
}

peer_pgaf_switch() {
  peer_pgaf perform switchover --pgdata "$PEER_DIR/monitor" >/dev/null 2>&1
  peer_wait_for 120 "the pg_auto_failover switchover settling" peer_pgaf_settled
}

peer_pgaf_down() {
  local d
  for d in n1 n2 monitor; do
    [[ -d $PEER_DIR/$d ]] && peer_pgaf stop --pgdata "$PEER_DIR/$d" >/dev/null 2>&1
  done
  sleep 1
  pkill -f "pg_autoctl.*$PEER_DIR" 2>/dev/null || true
  return 0
}
