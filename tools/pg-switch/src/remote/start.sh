# pgshift-start PGDATA PG_BIN LOG [nowait]
# Start the cluster in PGDATA (whatever role its signal files give it) unless it runs, and
# wait until it accepts connections (with nowait: only until its postmaster runs, for a
# standby that may not reach consistency), the way its layout starts it:
#   - a postgresql-common cluster (Debian, Ubuntu: pg_lsclusters lists PGDATA): its systemd
#     unit postgresql@V-NAME where systemd runs and we may start units (root, or sudo -n),
#     else pg_ctlcluster (configuration under /etc/postgresql/V/NAME, log under
#     /var/log/postgresql);
#   - a PGDG/RHEL cluster whose unit postgresql-V names PGDATA: that unit where systemd runs;
#   - otherwise pg_ctl -D PGDATA -l LOG.
# A stale pid file of a crashed postmaster is left to the postmaster, which checks it itself.
# Also used by scripts/lib.sh (pgs_pg_start): one way to start a cluster.
d=$1 bin=$2 log=$3 wait=${4:-wait}
if [ -f "$d/postmaster.pid" ] && kill -0 "$(head -n 1 "$d/postmaster.pid")" 2>/dev/null; then
  echo already_running
  exit 0
fi
# systemctl as root, or through sudo without a password; nothing when neither is possible.
unit_ctl() {
  [ -d /run/systemd/system ] || return 1
  if [ "$(id -u)" = 0 ]; then
    systemctl "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n systemctl "$@"
  else
    return 1
  fi
}
how=pg_ctl cluster=""
if command -v pg_lsclusters >/dev/null 2>&1; then
  cluster=$(pg_lsclusters --no-header 2>/dev/null | awk -v d="$d" '$6 == d { print $1 " " $2; exit }')
fi
if [ -n "$cluster" ]; then
  how=pg_ctlcluster
  unit=postgresql@$(echo "$cluster" | tr ' ' -)
  if unit_ctl cat "$unit" >/dev/null 2>&1; then how=systemd; fi
else
  v=$(cat "$d/PG_VERSION" 2>/dev/null)
  unit=postgresql-$v
  if [ -n "$v" ] && unit_ctl show -p Environment "$unit" 2>/dev/null | grep -q "PGDATA=$d/\{0,1\}\( \|$\)"; then
    how=systemd
  fi
fi
echo "start=$how"
# After a crash the old postmaster's children may hold its shared memory for a moment
# ("pre-existing shared memory block is still in use"): try again for up to 10 s.
i=0
while :; do
  case $how in
    systemd) unit_ctl start "$unit" && break ;;
    pg_ctlcluster)
      if [ "$wait" = nowait ]; then
        # shellcheck disable=SC2086  # "V NAME"
        pg_ctlcluster $cluster start -- -W
        exit $?
      fi
      # shellcheck disable=SC2086
      pg_ctlcluster $cluster start && break ;;
    *)
      if [ "$wait" = nowait ]; then
        "$bin/pg_ctl" -D "$d" -l "$log" -W start
        exit $?
      else
        "$bin/pg_ctl" -D "$d" -l "$log" -w -t 300 start && exit 0
      fi ;;
  esac
  i=$((i + 1))
  [ "$i" -lt 10 ] || exit 1
  sleep 1
done
# pg_ctlcluster and a unit return once the postmaster runs; wait for connections as pg_ctl -w
# does (the pid file's status line says "ready" or "standby"), or for the postmaster's end.
[ "$wait" = nowait ] && exit 0
i=0
while :; do
  status=$(sed -n 8p "$d/postmaster.pid" 2>/dev/null | tr -d ' ')
  case $status in ready | standby) exit 0 ;; esac
  if ! { [ -f "$d/postmaster.pid" ] && kill -0 "$(head -n 1 "$d/postmaster.pid")" 2>/dev/null; }; then
    [ "$i" -lt 20 ] || { echo "the server stopped while starting; see its log"; exit 1; }
  fi
  i=$((i + 1))
  [ "$i" -lt 3000 ] || { echo "not ready after 300 s"; exit 1; }
  sleep 0.1
done
