#!/usr/bin/env bash
# bench/criu-wrap.sh: frozen time and image size of a checkpoint, single stop-and-copy dump
# against iterative pre-copy, for a process owning 256 MiB that dirties 1 MiB/s (issue #8).
#
# Real CRIU runs in a VM (scripts/criu-vm.sh: Debian's 6.1 kernel under qemu with software
# emulation, since this machine's kernel breaks the distribution's CRIU and lacks soft-dirty
# tracking), so absolute times are those of an emulated CPU, several times slower than
# hardware; the ratio between the modes is the figure that carries over. Per run, each on a
# fresh process (tools/criu-wrap/examples/criu-workload.rs):
#   raw       criu dump -t PID            (the peer: plain CRIU, wall time)
#   single    criu-wrap dump --pre-dump 0 (one stop-and-copy dump)
#   precopy   criu-wrap dump              (pre-dump rounds by P.Haul's rule, then the dump;
#                                          the process is then restored and checks its pages)
# frozen_ms is CRIU's own frozen_time of the final dump (stats-dump).
#
#   bench/criu-wrap.sh                 # 256 MiB, 1 MiB/s, 2 runs
#   MIB=64 RATE=4 RUNS=1 bench/criu-wrap.sh
#
# Prints a table on stderr and one JSON summary line on stdout; keeps the console and the
# summary under bench/results/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../scripts/lib.sh
. "$ROOT/scripts/lib.sh"
! pgs_wants_help "$@" || pgs_help

MIB=${MIB:-256} RATE=${RATE:-1} RUNS=${RUNS:-2}
pgs_require_cmd jq qemu-system-x86_64
(cd "$ROOT" && cargo build --release -q -p criu-wrap --bin criu-wrap --example criu-workload)
RESULTS=$ROOT/bench/results
mkdir -p "$RESULTS"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
console=$RESULTS/criu-wrap-$stamp.console

pgs_log "booting the CRIU VM: ${MIB} MiB dirtied at ${RATE} MiB/s, $RUNS runs (several minutes under emulation)"
CRIU_WRAP_BIN=$ROOT/target/release/criu-wrap \
  CRIU_WORKLOAD_BIN=$ROOT/target/release/examples/criu-workload \
  "$ROOT/scripts/criu-vm.sh" --mode bench --mem $((MIB * 4 + 768)) --timeout 1800 \
  --cmdline "CW_MIB=$MIB CW_RATE=$RATE CW_RUNS=$RUNS" >"$console"
tr -d '\r' <"$console" >"$console.tmp" && mv "$console.tmp" "$console"
grep -q '^CW DONE' "$console" || pgs_die "$EX_SOFTWARE" "the VM did not finish the benchmark (see $console)"

# record STEP: the dump record criu-wrap wrote in that step.
record() { sed -n "s/^CW JSON $1 //p" "$console" | jq -c 'select(.type == "dump")'; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "null"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

raw_ms=() single_frozen=() single_dump=() single_kib=() pre_frozen=() pre_dump=() pre_kib=()
pre_total=() pre_rounds=() pre_final_kib=() restored_ok=0
for run in $(seq 1 "$RUNS"); do
  line=$(grep "^CW BENCH raw run=$run " "$console")
  [[ $line == *" rc=0 "* ]] || pgs_die "$EX_SOFTWARE" "raw criu dump failed in run $run: $line"
  w=${line#* wall_s=}
  raw_ms+=("$(awk -v s="${w%% *}" 'BEGIN{printf "%d", s*1000}')")
  s=$(record "bench-single-$run")
  [[ -n $s ]] || pgs_die "$EX_SOFTWARE" "criu-wrap single dump failed in run $run (see $console)"
  single_frozen+=("$(jq .frozen_ms <<<"$s")") single_dump+=("$(jq .dump_ms <<<"$s")")
  single_kib+=("$(jq '.image_bytes / 1024 | floor' <<<"$s")")
  p=$(record "bench-precopy-$run")
  [[ -n $p ]] || pgs_die "$EX_SOFTWARE" "criu-wrap pre-copy dump failed in run $run (see $console)"
  pre_frozen+=("$(jq .frozen_ms <<<"$p")") pre_dump+=("$(jq .dump_ms <<<"$p")")
  pre_kib+=("$(jq '.image_bytes / 1024 | floor' <<<"$p")") pre_total+=("$(jq .total_ms <<<"$p")")
  pre_rounds+=("$(jq .rounds <<<"$p")") pre_final_kib+=("$(jq '.final_pages * 4' <<<"$p")")
  grep -q "^CW BENCH restored run=$run rc=0 .*errors=0" "$console" && restored_ok=$((restored_ok + 1))
done
m() { printf '%s\n' "$@" | median; }
r_raw=$(m "${raw_ms[@]}") r_sf=$(m "${single_frozen[@]}") r_sd=$(m "${single_dump[@]}") r_sk=$(m "${single_kib[@]}")
r_pf=$(m "${pre_frozen[@]}") r_pd=$(m "${pre_dump[@]}") r_pk=$(m "${pre_kib[@]}") r_pt=$(m "${pre_total[@]}")
r_pr=$(m "${pre_rounds[@]}") r_pfk=$(m "${pre_final_kib[@]}")
ratio=$(awk -v a="$r_sf" -v b="$r_pf" 'BEGIN{ if (b > 0) printf "%.1f", a/b; else print "null" }')

{
  printf '%-26s %12s %12s %14s\n' "median of $RUNS runs" "frozen ms" "dump ms" "image KiB"
  printf '%-26s %12s %12s %14s\n' "criu dump (peer, wall)" "~$r_raw" "$r_raw" "-"
  printf '%-26s %12s %12s %14s\n' "criu-wrap single dump" "$r_sf" "$r_sd" "$r_sk"
  printf '%-26s %12s %12s %14s\n' "criu-wrap pre-copy" "$r_pf" "$r_pd" "$r_pk"
  printf 'pre-copy: %s rounds, final dump wrote %s KiB, %s ms in all; frozen time %sx shorter than a single dump; %s/%s restores checked every page\n' \
    "$r_pr" "$r_pfk" "$r_pt" "$ratio" "$restored_ok" "$RUNS"
  echo "(emulated CPU: absolute times are several times those of hardware; see $console)"
} >&2

summary=$(pgs_json summary tool=criu-wrap-bench mib:="$MIB" dirty_mib_per_s:="$RATE" runs:="$RUNS" \
  raw_criu_dump_ms:="$r_raw" single_frozen_ms:="$r_sf" single_dump_ms:="$r_sd" single_image_kib:="$r_sk" \
  precopy_frozen_ms:="$r_pf" precopy_dump_ms:="$r_pd" precopy_image_kib:="$r_pk" precopy_total_ms:="$r_pt" \
  precopy_rounds:="$r_pr" precopy_final_kib:="$r_pfk" frozen_ratio_single_over_precopy:="$ratio" \
  restores_verified:="$restored_ok" emulated:=true)
echo "$summary" | tee "$RESULTS/criu-wrap-$stamp.json"
