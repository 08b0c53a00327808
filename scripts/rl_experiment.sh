#!/usr/bin/env bash
# Does RL alone raise held-out accuracy? Two starting points, two seeds each, greedy accuracy before and after
# on two-operation one-digit arithmetic that is in none of the policy's training sets:
#  1. the sample teacher (samples/tiny-teacher), RL with the accuracy reward on 4,000 other problems;
#  2. the same teacher after a short SFT (pipelines/sft-then-rl.toml's `sft` stage), RL as that pipeline does.
# scripts/rl_report.py re-verifies every eval trace, prints accuracies with 95% Wilson intervals and the paired
# after − before differences, and writes notebooks/rl-results.json (plotted by notebooks/rl.ipynb).
#
#   cargo build --release && STEPS=300 LR=1e-5 BETA=0 bash scripts/rl_experiment.sh [OUT]   # ~45 min, 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
F=${FORGE:-${CARGO_TARGET_DIR:-target}/release/forge}
OUT=${1:-runs/rl-experiment}
STEPS=${STEPS:-300}
mkdir -p "$OUT"
synth() { [ -e "$OUT/$1/manifest.json" ] || "$F" synth arith "${@:2}" -o "$OUT/$1" -q; }
synth teacher-data --n 20000 --ops 1..2 --max-operand 9 --seed 3
synth teacher-data-1 --n 10000 --seed 1
synth train --n 4000 --ops 2 --max-operand 9 --seed 500
synth test-pool --n 3000 --ops 2 --max-operand 9 --seed 201
[ -e "$OUT/test/manifest.json" ] || "$F" filter --input "$OUT/test-pool" -o "$OUT/test" \
  --decontaminate "$OUT/teacher-data" --decontaminate "$OUT/teacher-data-1" --decontaminate "$OUT/train" \
  --decontam-ngram 64 --decontam-symbols -q
evaluate() { # model name
  [ -e "$OUT/eval-$2/eval-report.json" ] || "$F" eval --model "$1" --problems "$OUT/test" --max-tokens 160 -o "$OUT/eval-$2" -q
}
evaluate samples/tiny-teacher before
for seed in 1 2; do
  "$F" train-rl --model samples/tiny-teacher --problems "$OUT/train" -o "$OUT/rl-seed$seed" --seed "$seed" \
    --steps "$STEPS" --prompts-per-step 8 --group-size 8 --max-tokens 128 --lr "${LR:-1e-5}" --beta "${BETA:-0}" \
    --reward accuracy=1 --save-every 20 -q
  evaluate "$OUT/rl-seed$seed" "seed$seed"
done
# RL after a short SFT: pipelines/sft-then-rl.toml (its `rl` stage is seed 1), and seed 2 of the same stage
"$F" run pipelines/sft-then-rl.toml --dir "$OUT/sft-then-rl"
S="$OUT/sft-then-rl"
"$F" train-rl --model "$S/sft" --problems "$S/problems" -o "$S/rl-seed2" --seed 2 --reward accuracy=1,language=0.1 \
  --group-size 8 --prompts-per-step 8 --steps 40 --max-tokens 128 --lr 1e-5 -q
[ -e "$S/eval-rl-seed2/eval-report.json" ] || "$F" eval --model "$S/rl-seed2" --problems "$S/test" --max-tokens 160 -o "$S/eval-rl-seed2" -q
FORGE="$F" STEPS="$STEPS" python3 scripts/rl_report.py "$OUT"
