#!/usr/bin/env bash
# RL alone raises held-out accuracy: the sample teacher (samples/tiny-teacher), trained by `forge train-rl`
# on two-operation one-digit arithmetic with the accuracy reward, evaluated greedily before and after on
# two-operation problems that are in none of its training sets (its two SFT stages, regenerated as
# samples/tiny-teacher/make.sh made them, and RL's problems). Two seeds; 95% Wilson intervals.
#
#   cargo build --release && bash scripts/rl_experiment.sh [OUT]      # about 25 minutes on 2 cores
#
# Prints a table and writes OUT/summary.json; README's RL section quotes it.
set -euo pipefail
cd "$(dirname "$0")/.."
F=${FORGE:-${CARGO_TARGET_DIR:-target}/release/forge}
OUT=${1:-runs/rl-experiment}
STEPS=${STEPS:-120}
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
    --steps "$STEPS" --prompts-per-step 8 --group-size 8 --max-tokens 128 --lr "${LR:-1e-4}" --beta "${BETA:-0.04}" \
    --reward accuracy=1 --save-every 20 -q
  evaluate "$OUT/rl-seed$seed" "seed$seed"
done
python3 - "$OUT" <<'EOF'
import json, sys
sys.path.insert(0, "scripts")
from intervals import wilson
out = sys.argv[1]
rows = {}
for name in ["before", "seed1", "seed2"]:
    r = json.load(open(f"{out}/eval-{name}/eval-report.json"))
    n = r["overall"]["problems"]
    k = round(r["accuracy"] * n)
    lo, hi = wilson(k, n)
    rows[name] = {"problems": n, "correct": k, "accuracy": k / n, "low": lo, "high": hi}
    print(f"{name:8} {k:4}/{n:<4} {100 * k / n:5.1f}%  95% CI [{100 * lo:.1f}, {100 * hi:.1f}]")
json.dump(rows, open(f"{out}/summary.json", "w"), indent=2)
EOF
