#!/usr/bin/env bash
# bench/resume.sh: a base copy cut at 80 % over a thin link, then resumed (pgdata-sync), against
# starting it again (a whole pg_basebackup, what migrate.sh did before --fresh-copy became the
# exception), in one run, on the same two hosts, under load.
#
#   bench/resume.sh [--pgbench-scale N] [--rate RATE] [--cut PERCENT] [--clients N] [--bin DIR]
#
# Two hosts in network namespaces (hosts-local.sh --netns --rate, default 100mbit), the source
# loaded with pgbench tables (--pgbench-scale, default 50: ~750 MB), each with its own sshd:
# migrate.sh reaches them over ssh, as real hosts, so the resumed copy's stream (source ->
# this host -> target) crosses the source's throttled link as pg_basebackup's does.
# Uncompressed copies (--compress none: the case where the link, not the data, decides).
# Bytes on the wire are read from the counters of the interface that feeds the target. In
# order:
#   again    pg_basebackup -X stream into a scratch directory on the target: what a copy
#            started again from zero costs (then removed)
#   cut      migrate.sh, stopped by SIGTERM once the target holds --cut % (default 80) of the
#            source's databases: the partial copy stays (partial_bytes: its data, without WAL)
#   resume   the same command again under load-gen (--clients, mixed workload): the copy
#            resumes (its base_copy phase and copy_resumed record: bytes reused, sent, on the
#            wire), then catch-up, switchover and verify
# Prints one `method` record each and a `summary` with the ratios of `again` to `resume`; also
# writes them to bench/results/resume-<timestamp>.jsonl.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/lib.sh"
! pgs_wants_help "$@" || pgs_help
PGS_NAME=bench-resume

scale=50 rate=100mbit cut=80 clients=2 bin=$here/target/release
while (($#)); do
  case $1 in
    --pgbench-scale) scale=${2:?}; shift ;;
    --rate) rate=${2:?}; shift ;;
    --cut) cut=${2:?}; shift ;;
    --clients) clients=${2:?}; shift ;;
    --bin) bin=${2:?}; shift ;;
    *) pgs_die "$EX_USAGE" "unknown option '$1' (usage: bench/resume.sh [--pgbench-scale N] [--rate RATE] [--cut PERCENT] [--clients N] [--bin DIR])" ;;
  esac
  shift
done
pgs_bench_begin resume "$bin" load-gen rowcount-diff pg-checksum pg-switch pgdata-sync
[[ $(id -u) == 0 ]] || pgs_die "$EX_USAGE" "network namespaces need root"
pgs_require_cmd jq ip tc ssh-keygen
[[ -x /usr/sbin/sshd ]] || pgs_die "$EX_UNAVAILABLE" "/usr/sbin/sshd is missing (apt-get install openssh-server)"
pgs_bench_workdir resume
work=$PGS_WORK
cleanup() {
  local rc=$?
  [[ -n ${PGS_LOAD_PID:-} ]] && kill "$PGS_LOAD_PID" 2>/dev/null
  for f in "$work"/sshd-*/sshd.pid; do [[ -f $f ]] && kill "$(<"$f")" 2>/dev/null; done
  "$here/scripts/hosts-local.sh" destroy "$work/h" >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

pgs_log "creating two hosts over a $rate link, pgbench scale $scale"
"$here/scripts/hosts-local.sh" create "$work/h" --netns --rate "$rate" --pgbench-scale "$scale" --bin "$bin" >/dev/null
env=$work/h/hosts.env
# shellcheck disable=SC1090
. "$env"
size=$("$PG_BIN/psql" -XAtq -d "$SOURCE_DSN" -c "SELECT sum(pg_database_size(oid)) FROM pg_database")
host_a=$(pgs_conninfo_value "$SOURCE_DSN" host) port_a=$(pgs_conninfo_value "$SOURCE_DSN" port)
pgs_log "source: $(numfmt --to=iec "$size")B in its databases"
rx() { cat "/sys/class/net/$TARGET_LINK/statistics/tx_bytes"; }

# An sshd inside each host's namespace, for postgres, with a key of this run's.
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N "" -f "$work/client_key"
chown postgres "$work/client_key"
: >"$work/known_hosts"
netns_sshd() { # NAME NETNS ADDR: starts it; prints ssh://postgres@ADDR:PORT
  local d=$work/sshd-$1 port=$((20000 + RANDOM % 20000))
  mkdir -p "$d"
  ssh-keygen -q -t ed25519 -N "" -f "$d/host_key"
  cp "$work/client_key.pub" "$d/authorized_keys"
  printf '[%s]:%s %s\n' "$3" "$port" "$(cat "$d/host_key.pub")" >>"$work/known_hosts"
  printf '%s\n' "ListenAddress $3:$port" "HostKey $d/host_key" "PidFile $d/sshd.pid" \
    "AuthorizedKeysFile $d/authorized_keys" "StrictModes no" "UsePAM yes" "PasswordAuthentication no" \
    "PubkeyAuthentication yes" "PermitRootLogin no" "AllowUsers postgres" "MaxStartups 50" >"$d/sshd_config"
  ip netns exec "$2" /usr/sbin/sshd -f "$d/sshd_config" -E "$d/sshd.log"
  printf 'ssh://postgres@%s:%s\n' "$3" "$port"
}
chmod 755 "$work"
chmod 644 "$work/known_hosts"
ssh_a=$(netns_sshd a "${SOURCE_SPEC#netns://}" "$host_a")
ssh_b=$(netns_sshd b "${TARGET_SPEC#netns://}" "$TARGET_ADDR")
export PGS_SSH_OPTS="-i $work/client_key -o UserKnownHostsFile=$work/known_hosts"
over_ssh=(--source-host "$ssh_a" --target-host "$ssh_b")

# again: a whole copy, as the replication role with its passfile and TLS.
scratch=$(dirname "$TARGET_PGDATA")/scratch
aux=$(dirname "$TARGET_PGDATA")/pgshift-$(basename "$TARGET_PGDATA")
pgs_put_passfile "$TARGET_SPEC" "$aux" "$REPL_USER" "$REPL_PASSWORD_FILE"
pgs_on_pg "$TARGET_SPEC" mkdir -p "$scratch"
b0=$(rx) t0=$(pgs_now_ms)
pgs_on_pg "$TARGET_SPEC" "$PG_BIN/pg_basebackup" -D "$scratch/again" -X stream -c fast --no-sync \
  -d "host=$host_a port=$port_a user=$REPL_USER passfile=$aux/pgpass sslmode=verify-full sslrootcert=$aux/ca.crt"
t1=$(pgs_now_ms) b1=$(rx)
pgs_record "$(jq -cn --argjson ms $((t1 - t0)) --argjson wire $((b1 - b0)) --argjson size "$size" \
  '{type: "method", method: "again", what: "pg_basebackup -X stream from zero (uncompressed)", ms: $ms, wire_bytes: $wire, database_bytes: $size}')"
pgs_on_pg "$TARGET_SPEC" rm -rf "$scratch"

load_dsn=$(pgs_bench_both_dsn "$SOURCE_DSN" "$TARGET_ADDR" "$TARGET_PORT" user=postgres)
pgs_load_start "$bin/load-gen" "$load_dsn" "$work/load.jsonl" -c "$clients" -w mixed --log "$work/load.acks"

# cut: SIGTERM to migrate.sh once the target holds cut % of the source's databases.
want=$((size * cut / 100))
hook="before_base_copy=(for i in \$(seq 36000); do [ \"\$(du -sb $TARGET_PGDATA 2>/dev/null | cut -f1)\" -ge $want ] 2>/dev/null && break; sleep 0.1; done; kill -TERM \$PGSHIFT_MIGRATE_PID) >/dev/null 2>&1 &"
b0=$(rx) t0=$(pgs_now_ms)
rc=0
"$here/scripts/migrate.sh" --hosts-env "$env" "${over_ssh[@]}" --bin "$bin" --yes --no-pooler --compress none --hook "$hook" \
  >"$work/cut.jsonl" 2>"$work/cut.err" || rc=$?
t1=$(pgs_now_ms) b1=$(rx)
((rc == 75)) || pgs_die "$EX_SOFTWARE" "the cut run did not stop as asked (exit $rc): $(tail -n 3 "$work/cut.err")"
# What of the partial copy is data a resumption can reuse (its WAL is not).
partial=$(pgs_on_pg "$TARGET_SPEC" du -sb --exclude=pg_wal "$TARGET_PGDATA" | cut -f1)
pgs_record "$(jq -cn --argjson ms $((t1 - t0)) --argjson wire $((b1 - b0)) --argjson partial "$partial" --argjson size "$size" \
  '{type: "method", method: "cut", what: "migrate.sh stopped during its base copy", ms: $ms, wire_bytes: $wire, partial_bytes: $partial, database_bytes: $size}')"

# resume: the same command again.
b0=$(rx) t0=$(pgs_now_ms)
rc=0
"$here/scripts/migrate.sh" --hosts-env "$env" "${over_ssh[@]}" --bin "$bin" --yes --no-pooler --compress none \
  >"$work/resume.jsonl" 2>"$work/resume.err" || rc=$?
t1=$(pgs_now_ms) b1=$(rx)
pgs_load_stop
verified=$("$bin/load-gen" verify --dsn "$load_dsn" --log "$work/load.acks" | tail -n 1)
((rc == 0)) || pgs_die "$EX_SOFTWARE" "the resumed run failed: $(tail -n 1 "$work/resume.jsonl") $(tail -n 3 "$work/resume.err")"
m=$(tail -n 1 "$work/resume.jsonl")
copy=$(jq -c 'select(.type == "phase" and .name == "base_copy")' "$work/resume.jsonl")
resumed=$(jq -c 'select(.type == "copy_resumed")' "$work/resume.jsonl")
[[ -n $resumed ]] || pgs_die "$EX_SOFTWARE" "the second run did not resume the copy: $(grep -m1 copy "$work/resume.err")"
pgs_record "$(jq -cn --argjson ms $((t1 - t0)) --argjson wire $((b1 - b0)) --argjson m "$m" --argjson copy "$copy" \
  --argjson r "$resumed" --argjson v "$verified" \
  '{type: "method", method: "resume", what: "migrate.sh again: the copy resumed with pgdata-sync, then the switch", ms: $ms,
    wire_bytes: $wire, base_copy_ms: $copy.ms, bytes_reused: $r.bytes_reused, bytes_sent: $r.bytes_sent,
    copy_wire_bytes: $r.wire_bytes, downtime_ms: $m.downtime_ms, verdict: $m.verdict, lost: ($v.lost // null)}')"

pgs_record "$(jq -cs '(map(select(.type == "method")) | INDEX(.method)) as $m |
  {type: "summary", rate: $ARGS.named.rate, pgbench_scale: ($ARGS.named.scale | tonumber), cut_percent: ($ARGS.named.cut | tonumber),
   database_bytes: $m.again.database_bytes, partial_bytes: $m.cut.partial_bytes,
   again_ms: $m.again.ms, resume_copy_ms: $m.resume.base_copy_ms,
   again_wire_bytes: $m.again.wire_bytes, resume_copy_wire_bytes: $m.resume.copy_wire_bytes,
   bytes_reused: $m.resume.bytes_reused, bytes_sent: $m.resume.bytes_sent,
   reused_of_partial: (($m.resume.bytes_reused / $m.cut.partial_bytes) * 100 | round / 100),
   time_ratio_again_vs_resume: (($m.again.ms / $m.resume.base_copy_ms) * 100 | round / 100),
   bytes_ratio_again_vs_resume: (($m.again.wire_bytes / $m.resume.copy_wire_bytes) * 100 | round / 100),
   downtime_ms: $m.resume.downtime_ms, lost: $m.resume.lost, verdict: $m.resume.verdict}' \
  --arg rate "$rate" --arg scale "$scale" --arg cut "$cut" "$PGS_RESULTS")"
