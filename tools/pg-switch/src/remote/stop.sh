# pgshift-stop PGDATA PG_BIN LIMIT_MS DELAY_MS < FENCE
# Fence the cluster in PGDATA (standby.signal, and FENCE, the primary_conninfo line naming the
# new primary, in postgresql.auto.conf instead of any primary_conninfo/primary_slot_name),
# durably, then stop it (fast shutdown: SIGINT to the postmaster, polled every 5 ms), then
# print pg_controldata. Idempotent: a cluster already fenced and stopped is fenced again (the
# same text) and reported. Lines before "---": fenced, then one of stop_sent, not_running,
# stale_pid_file. Exit 3 no data directory, 4 I/O error writing the fence, 5 the signal
# failed, 6 still running after LIMIT_MS, 7 no fence text.
umask 077
d=$1 bin=$2 limit=$3 delay=$4
f=$d/postgresql.auto.conf
[ -d "$d" ] || { echo "no data directory $d"; exit 3; }
# All of the fence first: a caller that died while sending it gets no stop.
fence=$(cat)
[ -n "$fence" ] || { echo "no fence text on standard input"; exit 7; }
{
  grep -v -e '^[[:space:]]*primary_conninfo[[:space:]=]' -e '^[[:space:]]*primary_slot_name[[:space:]=]' "$f" 2>/dev/null
  printf '%s\n' "$fence"
} >"$f.pgshift-fence" || exit 4
sync "$f.pgshift-fence" && mv -f "$f.pgshift-fence" "$f" && : >"$d/standby.signal" &&
  sync "$f" "$d/standby.signal" "$d" || exit 4
echo fenced
if [ -f "$d/postmaster.pid" ]; then
  pid=$(head -n 1 "$d/postmaster.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" || exit 5
    echo stop_sent
    if [ "$delay" -gt 0 ]; then sleep "$((delay / 1000)).$(printf '%03d' $((delay % 1000)))"; fi
    i=0 n=$((limit / 5))
    while [ -f "$d/postmaster.pid" ] && kill -0 "$pid" 2>/dev/null; do
      sleep 0.005
      i=$((i + 1))
      [ "$i" -lt "$n" ] || { echo still_running; exit 6; }
    done
  else
    echo stale_pid_file
  fi
else
  echo not_running
fi
echo ---
exec env LC_ALL=C "$bin/pg_controldata" "$d"
