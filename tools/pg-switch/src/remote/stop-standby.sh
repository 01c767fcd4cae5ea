# pgshift-stop-standby PGDATA PG_BIN
# Stop a cluster (fast) and remove any promote signal, so that it cannot promote when it
# starts again. No-op when it does not run.
d=$1 bin=$2
rm -f "$d/promote"
if [ -f "$d/postmaster.pid" ] && kill -0 "$(head -n 1 "$d/postmaster.pid")" 2>/dev/null; then
  "$bin/pg_ctl" -D "$d" -m fast -w -t 60 stop || exit $?
fi
rm -f "$d/promote"
