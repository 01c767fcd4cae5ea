#!/usr/bin/env bash
# bench/window-advisor.sh: how good and how fast are window-advisor's recommendations?
#
#   bench/window-advisor.sh                    # SEEDS="1 2 3" WEEKS=8 STEP=1m
#   SEEDS=1 bench/window-advisor.sh            # one trace per kind (quicker, noisier)
#
# 1. Quality (issue #7): for each kind of synthetic trace (`window-advisor synth --kind K`:
#    seasonal, holiday, regime-shift, bursts, mixed) and each seed, `window-advisor evaluate`
#    backtests every model and baseline walk-forward (origins 1 day apart, 7-day horizons,
#    30-minute windows) and reports the p90 regret: how much busier than the best window of
#    the horizon the chosen one was, in tps (90th percentile over origins). The peers are
#    the baselines, measured in the same run: same time last week, hour-of-week mean, always
#    03:00, random. Goal: `auto` (the nested, honest model selection among the learned models
#    and the hour-of-week and last-week baselines, guarded by the profile's forecast) at or
#    below the best baseline on every trace, and clearly below on the regime shifts.
#    `auto_followed` counts the origins at which auto followed each candidate.
#    Regret on traces without a regime shift is mostly noise (a random burst landing in the
#    chosen window on one Sunday decides a p90 over ~43 origins), hence several seeds, and
#    per kind the mean over seeds.
# 2. Speed: fit + recommend (`--model auto`, which includes its own backtest, and each model
#    alone) on 8 weeks of 1-minute samples (80640 rows), release build, with hyperfine.
#    Goal: under 2 s.
# Prints one JSON line per trace and per kind, the timings and a summary line; keeps them
# under bench/results/. On a machine shared with other work the timings are noisy.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"

SEEDS=${SEEDS:-1 2 3}
WEEKS=${WEEKS:-8}
STEP=${STEP:-1m}
KINDS=${KINDS:-seasonal holiday regime-shift bursts mixed}

pgs_require_cmd jq hyperfine
# WINDOW_ADVISOR_BIN=path uses that binary; otherwise build the release one.
WINDOW_ADVISOR_BIN=$(pgs_release_bin window-advisor)
wa=$WINDOW_ADVISOR_BIN

work=$(mktemp -d /tmp/pgshift-bench-window-advisor.XXXXXX)
trap 'rm -rf "$work"' EXIT
out=$(pgs_results_file window-advisor jsonl)
: >"$out"
emit() { printf '%s\n' "$1" | tee -a "$out"; }

# 1. Quality.
for kind in $KINDS; do
  for seed in $SEEDS; do
    trace=$work/$kind-$seed.jsonl
    "$wa" synth --kind "$kind" --seed "$seed" --weeks "$WEEKS" --step "$STEP" >"$trace"
    "$wa" evaluate --history "$trace" --seed "$seed" >"$work/eval.jsonl"
    line=$(jq -sc --arg kind "$kind" --argjson seed "$seed" '
      (map(select(.type == "evaluation")) | map({key: .model, value: .p90_regret}) | from_entries) as $p90
      | (map(select(.type == "evaluation" and .kind == "baseline")) | min_by(.p90_regret)) as $bb
      | (map(select(.type == "summary")) | .[0]) as $s
      | {type: "trace", kind: $kind, seed: $seed, origins: $s.origins,
         p90_regret: $p90, best_baseline: $bb.model, best_baseline_p90: $bb.p90_regret,
         auto_p90: $p90.auto, auto_followed: $s.auto_followed,
         auto_vs_best_baseline: (if $bb.p90_regret > 0 then ($p90.auto / $bb.p90_regret * 1000 | round / 1000) else null end),
         auto_le_best_baseline: ($p90.auto <= $bb.p90_regret)}' "$work/eval.jsonl")
    emit "$line"
  done
done

# Per kind: the mean over seeds of each strategy's p90 regret.
jq -sc '
  map(select(.type == "trace")) | group_by(.kind)[]
  | . as $runs
  | ($runs[0].p90_regret | keys) as $models
  | ($models | map({key: ., value: ([$runs[].p90_regret[.]] | add / length * 1000 | round / 1000)}) | from_entries) as $mean
  | ($mean | to_entries | map(select(.key | IN("last-week", "hour-of-week", "at-0300", "random"))) | min_by(.value)) as $bb
  | {type: "kind", kind: $runs[0].kind, seeds: ($runs | length), mean_p90_regret: $mean,
     best_baseline: $bb.key, best_baseline_p90: $bb.value, auto_p90: $mean.auto,
     auto_vs_best_baseline: (if $bb.value > 0 then ($mean.auto / $bb.value * 1000 | round / 1000) else null end),
     auto_le_best_baseline: ($mean.auto <= $bb.value)}' "$out" >"$work/kinds.jsonl"
while IFS= read -r line; do emit "$line"; done <"$work/kinds.jsonl"

# 2. Speed: 8 weeks of 1-minute samples.
trace=$work/speed.jsonl
"$wa" synth --kind mixed --seed 1 --weeks 8 --step 1m >"$trace"
rows=$(grep -c '"type":"sample"' "$trace")
pgs_log "timing recommend on $rows samples"
hyperfine --warmup 1 --runs "${RUNS:-5}" --style basic --export-json "$work/speed.json" \
  -n auto "$wa recommend --history $trace --model auto" \
  -n profile "$wa recommend --history $trace --model profile" \
  -n forest "$wa recommend --history $trace --model forest" \
  -n evaluate "$wa evaluate --history $trace" >&2
timings=$(jq -c --argjson rows "$rows" '{type: "timing", samples: $rows,
  mean_s: (.results | map({key: .command, value: (.mean * 1000 | round / 1000)}) | from_entries),
  max_s: (.results | map({key: .command, value: (.max * 1000 | round / 1000)}) | from_entries)}' \
  "$work/speed.json")
emit "$timings"

summary=$(jq -sc '
  (map(select(.type == "kind"))) as $k
  | (map(select(.type == "trace"))) as $t
  | (map(select(.type == "timing")) | .[0]) as $time
  | {type: "summary", bench: "window-advisor",
     traces: ($t | length),
     traces_auto_le_best_baseline: ($t | map(select(.auto_le_best_baseline)) | length),
     kinds_auto_le_best_baseline: ($k | map(select(.auto_le_best_baseline)) | length),
     kinds: ($k | length),
     auto_vs_best_baseline: ($k | map({key: .kind, value: .auto_vs_best_baseline}) | from_entries),
     recommend_auto_s: $time.mean_s.auto,
     recommend_under_2s: ($time.mean_s.auto < 2)}' "$out")
emit "$summary"
pgs_log "results in $out"
