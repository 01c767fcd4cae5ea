# pgshift-cluster-info WHAT PG_BIN
# The facts of one cluster on this host, as key=value lines: layout (debian, rhel, plain),
# version, name, port, pgdata, log, conf_dir, hba_file, unit, running (yes/no); or one
# error= line. WHAT is VERSION/NAME (a postgresql-common cluster, as pg_lsclusters lists it)
# or a data directory (any layout). Runs as the server's user; reads only.
what=$1 bin=$2 line=""
if command -v pg_lsclusters >/dev/null 2>&1; then
  line=$(pg_lsclusters --no-header 2>/dev/null |
    awk -v w="${what%/}" '($1 "/" $2) == w || $6 == w { print; exit }')
fi
if [ -n "$line" ]; then
  # shellcheck disable=SC2086  # the columns of pg_lsclusters
  set -- $line
  conf=/etc/postgresql/$1/$2 d=$6
  hba=$(sed -n "s/^[[:space:]]*hba_file[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" "$conf/postgresql.conf" 2>/dev/null | tail -n 1)
  printf '%s\n' layout=debian "version=$1" "name=$2" "port=$3" "pgdata=$d" "log=$7" \
    "conf_dir=$conf" "hba_file=${hba:-$conf/pg_hba.conf}" "unit=postgresql@$1-$2"
else
  case $what in
    /*) ;;
    *)
      known=$(pg_lsclusters --no-header 2>/dev/null | awk '{ printf "%s%s/%s", sep, $1, $2; sep = ", " }')
      echo "error=no cluster $what here (pg_lsclusters lists: ${known:-none}); name a cluster VERSION/NAME or give its data directory"
      exit 0 ;;
  esac
  d=${what%/} layout=plain unit=""
  case $bin in /usr/pgsql-*) layout=rhel unit=postgresql-$(cat "$d/PG_VERSION" 2>/dev/null) ;; esac
  port=""
  [ -f "$d/postmaster.pid" ] && port=$(sed -n 4p "$d/postmaster.pid")
  for f in "$d/postgresql.auto.conf" "$d/postgresql.conf"; do
    [ -z "$port" ] && [ -f "$f" ] &&
      port=$(sed -n "s/^[[:space:]]*port[[:space:]]*=[[:space:]]*'\{0,1\}\([0-9][0-9]*\).*/\1/p" "$f" | tail -n 1)
  done
  printf '%s\n' "layout=$layout" "version=$(cat "$d/PG_VERSION" 2>/dev/null)" name= "port=$port" \
    "pgdata=$d" "log=$(dirname "$d")/server.log" "conf_dir=$d" "hba_file=$d/pg_hba.conf" "unit=$unit"
fi
running=no
if [ -f "$d/postmaster.pid" ] && kill -0 "$(head -n 1 "$d/postmaster.pid")" 2>/dev/null; then running=yes; fi
echo "running=$running"
