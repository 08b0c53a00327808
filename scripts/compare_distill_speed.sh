#!/usr/bin/env bash
# train-distill (offline KD from top-20 log-probabilities) against train-sft on the same rows and settings:
# tokens per second of each, alternating, ROUNDS times, and the ratio of the medians. The data is the
# distillation experiment's curated traces (the quickstart's, with the teacher's top 20: run
# scripts/distill_experiment.sh first); the model the quickstart's base student.
#   FORGE=target/release/forge bash scripts/compare_distill_speed.sh
set -euo pipefail
F=${FORGE:-forge}
DATA=${DATA:-runs/distill-experiment/curated}
MODEL=${MODEL:-samples/tiny-student}
ROUNDS=${ROUNDS:-3}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
common=(--model "$MODEL" --data "$DATA" --epochs 2 --lr 1e-3 --batch-tokens 4096 --max-length 512 --eval-share 0
  --save-every 0 -q)
rate() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tokens_per_second"])' "$1/train-report.json"; }
sft=() kd=()
for i in $(seq "$ROUNDS"); do
  rm -rf "$OUT/sft" "$OUT/kd"
  "$F" train-sft "${common[@]}" -o "$OUT/sft"
  sft+=("$(rate "$OUT/sft")")
  "$F" train-distill --loss fkl "${common[@]}" -o "$OUT/kd"
  kd+=("$(rate "$OUT/kd")")
  echo "round $i: train-sft ${sft[-1]} tokens/s, train-distill ${kd[-1]} tokens/s" >&2
done
python3 - "${sft[*]}" "${kd[*]}" <<'PY'
import statistics, sys
sft = [float(x) for x in sys.argv[1].split()]
kd = [float(x) for x in sys.argv[2].split()]
a, b = statistics.median(sft), statistics.median(kd)
print(f"train-sft {a:.0f} tokens/s, train-distill {b:.0f} tokens/s (medians of {len(sft)}): train-sft / train-distill = {a / b:.2f}x")
PY
