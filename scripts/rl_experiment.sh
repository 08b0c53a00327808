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
python3 - "$OUT" "$STEPS" <<'EOF'
import csv, json, sys
sys.path.insert(0, "scripts")
from intervals import wilson
out, steps = sys.argv[1], int(sys.argv[2])
def score(name):
    r = json.load(open(f"{out}/eval-{name}/eval-report.json"))
    n = r["overall"]["problems"]
    k = round(r["accuracy"] * n)
    lo, hi = wilson(k, n)
    print(f"{name:8} {k:4}/{n:<4} {100 * k / n:5.1f}%  95% CI [{100 * lo:.1f}, {100 * hi:.1f}]")
    return {"problems": n, "correct": k, "accuracy": k / n, "ci": [lo, hi]}
def curve(seed):
    rows = list(csv.DictReader(open(f"{out}/rl-seed{seed}/metrics.csv")))
    return {c: [float(r[c]) for r in rows] for c in ["step", "reward", "accuracy", "kl", "entropy", "completion_length"]}
results = {
    "setup": {"policy": "samples/tiny-teacher", "steps": steps, "prompts_per_step": 8, "group_size": 8,
              "max_tokens": 128, "reward": "accuracy=1", "train": "arith, 2 ops, one-digit, seed 500, n 4000",
              "test": "arith, 2 ops, one-digit, seed 201, decontaminated against every training set"},
    "before": score("before"),
    "after": {f"seed{s}": score(f"seed{s}") for s in (1, 2)},
    "curves": {f"seed{s}": curve(s) for s in (1, 2)},
}
json.dump(results, open("notebooks/rl-results.json", "w"), indent=1)
print("wrote notebooks/rl-results.json")
EOF
