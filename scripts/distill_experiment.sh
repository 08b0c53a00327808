#!/usr/bin/env bash
# The distillation experiment: on the quickstart task, the quickstart's base student (samples/tiny-student,
# or MODEL) trained on the quickstart's curated traces and journey rows by SFT (train-sft), KD with forward
# KL, KD with JSD (beta 0.5) and SFT + KD (forward KL, CE weight 0.5), at equal training tokens (the same
# rows, epochs and batches: only the loss differs), and on-policy GKD (the tiny teacher online, JSD beta 0.5,
# half the steps on the student's own samples: the same steps, other tokens), two seeds (data order);
# greedy accuracy on the quickstart's held-out test problems, and the held-out cross-entropy.
# Run the quickstart first (its curated, journey and test stages are the data). Writes
# notebooks/distill-results.json and prints a table with 95% Wilson intervals (scripts/distill_report.py).
#   FORGE=target/release/forge bash scripts/distill_experiment.sh
set -euo pipefail
F=${FORGE:-forge}
Q=${QUICKSTART:-runs/quickstart}
OUT=${OUT:-runs/distill-experiment}
PY=${PYTHON:-python3}
MODEL=${MODEL:-samples/tiny-student}
LR=${LR:-1e-3}
mkdir -p "$OUT"
common=(--model "$MODEL" --data "$Q/curated" --data "$Q/journey" --epochs 3 --lr "$LR"
  --batch-tokens 4096 --max-length 512 --eval-every 10 --save-every 0 -q)
for seed in 1 2; do
  for arm in sft fkl jsd sft+fkl gkd; do
    case $arm in
      sft) cmd=(train-sft) ;;
      fkl) cmd=(train-distill --loss fkl) ;;
      jsd) cmd=(train-distill --loss jsd --beta 0.5) ;;
      sft+fkl) cmd=(train-distill --loss fkl --ce-weight 0.5) ;;
      gkd) cmd=(train-distill --teacher local:samples/tiny-teacher --loss jsd --beta 0.5 --lambda 0.5) ;;
    esac
    run="$OUT/$arm-$seed"
    start=$(date +%s)
    "$F" "${cmd[@]}" "${common[@]}" --seed "$seed" -o "$run"
    "$F" eval --model "$run" --problems "$Q/test" --max-tokens 160 -o "$OUT/eval-$arm-$seed" -q
    "$F" verify --input "$OUT/eval-$arm-$seed" --output "$OUT/verdicts-$arm-$seed.jsonl" --gold-col gold \
      --output-col completion -q
    echo "$arm seed $seed: $(( $(date +%s) - start )) s" >&2
  done
done
"$PY" scripts/distill_report.py "$OUT" notebooks/distill-results.json
