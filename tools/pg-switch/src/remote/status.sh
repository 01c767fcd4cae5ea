# pgshift-status PGDATA PG_BIN
# What a cluster's own host says of it: whether its postmaster runs (yes, no, or a stale pid
# file), whether standby.signal and a promote signal are there, then pg_controldata after
# "---". Exit 3: no data directory.
d=$1 bin=$2
[ -f "$d/global/pg_control" ] || { echo "no data directory $d"; exit 3; }
running=no
if [ -f "$d/postmaster.pid" ]; then
  running=stale
  kill -0 "$(head -n 1 "$d/postmaster.pid")" 2>/dev/null && running=yes
fi
echo "running=$running"
if [ -f "$d/standby.signal" ]; then echo standby_signal=yes; else echo standby_signal=no; fi
if [ -f "$d/promote" ]; then echo promote_signal=yes; else echo promote_signal=no; fi
echo ---
exec env LC_ALL=C "$bin/pg_controldata" "$d"
