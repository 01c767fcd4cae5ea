#!/usr/bin/env bash
# make test runs this first. When the suite runs as root, the PostgreSQL servers it starts run
# as the postgres user, and they execute pgshift's binaries from target/ (archive_command,
# restore_command); the CRIU VM build also writes its cache there as postgres. So postgres
# must be able to traverse every directory above target/. A checkout in a private directory
# (mktemp -d makes 0700) blocks it: add search permission for others (o+x, not read) on each
# directory that blocks, and say which. Nothing to do when not root (servers run as us).
#
#   scripts/grant-test-access.sh   (no options)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
PGS_NAME=grant-test-access
case ${1:-} in
  "") ;;
  -h | --help) pgs_help ;;
  *) pgs_usage "unknown option '$1' (it takes none)" ;;
esac

[[ $(id -u) == 0 ]] || exit 0
id postgres >/dev/null 2>&1 || pgs_die "$EX_UNAVAILABLE" "no postgres user (run 'make setup')"
target=$PGS_ROOT/target
mkdir -p "$target"
dir=/
IFS=/ read -r -a parts <<<"${target#/}"
for part in "${parts[@]}"; do
  dir=${dir%/}/$part
  if ! runuser -u postgres -- test -x "$dir"; then
    chmod o+x "$dir"
    pgs_log "let the postgres user traverse $dir (chmod o+x): test servers run pgshift binaries from $target"
  fi
done
