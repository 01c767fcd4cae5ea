#!/usr/bin/env bash
# make demo: two local "hosts" (a primary and its streaming standby on loopback ports), a
# write on one read back on the other, and every pgshift tool's version. Later issues grow
# this into the live migration under load.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BIN=${PGSHIFT_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
work=$(mktemp -d /tmp/pgshift-demo.XXXXXX)
chmod 755 "$work"
trap 'pgs_cluster_destroy "$work/b"; pgs_cluster_destroy "$work/a"; rm -rf "$work"' EXIT

pgs_log "starting host A"
pgs_cluster_create "$work/a" "$(pgs_free_port)" 127.0.0.1
pgs_cluster_start "$work/a"
pgs_log "making host B a streaming standby of A"
pgs_standby_create "$work/a" "$work/b" "$(pgs_free_port 127.0.0.2)" 127.0.0.2
pgs_cluster_start "$work/b"

a=$(pgs_dsn "$work/a") b=$(pgs_dsn "$work/b")
pgs_psql "$a" "CREATE TABLE demo AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 10000) g"
lsn=$(pgs_psql "$a" "SELECT pg_current_wal_lsn()")
until [[ $(pgs_psql "$b" "SELECT pg_last_wal_replay_lsn() >= '$lsn'") == t ]]; do sleep 0.05; done
pgs_json host name=A dsn="$a" rows:="$(pgs_psql "$a" "SELECT count(*) FROM demo")"
pgs_json host name=B dsn="$b" rows:="$(pgs_psql "$b" "SELECT count(*) FROM demo")" \
  in_recovery:="$(pgs_psql "$b" "SELECT pg_is_in_recovery()" | sed 's/t/true/;s/f/false/')"
for tool in wal-ship pg-checksum rowcount-diff load-gen window-advisor criu-wrap; do
  pgs_json tool name="$tool" version="$("$BIN/$tool" --version)"
done
pgs_json summary success:=true
