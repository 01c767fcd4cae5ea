# pgshift-start PGDATA PG_BIN LOG
# Start the cluster in PGDATA (whatever role its signal files give it) unless it runs, and
# wait until it accepts connections. A stale pid file of a crashed postmaster is left to the
# postmaster, which checks it itself.
d=$1 bin=$2 log=$3
if [ -f "$d/postmaster.pid" ] && kill -0 "$(head -n 1 "$d/postmaster.pid")" 2>/dev/null; then
  echo already_running
  exit 0
fi
# After a crash the old postmaster's children may hold its shared memory for a moment
# ("pre-existing shared memory block is still in use"): try again for up to 10 s.
i=0
until "$bin/pg_ctl" -D "$d" -l "$log" -w -t 300 start; do
  i=$((i + 1))
  [ "$i" -lt 10 ] || exit 1
  sleep 1
done
