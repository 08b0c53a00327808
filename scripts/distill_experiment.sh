#!/usr/bin/env bash
# The distillation experiment: on the quickstart task, the quickstart's base student (samples/tiny-student,
# or MODEL) trained on the quickstart's curated traces and journey rows by SFT (train-sft), KD with forward
# KL, KD with JSD (beta 0.5) and SFT + KD (forward KL, CE weight 0.5), at equal training tokens (the same
# rows, 8 epochs as the quickstart and batches: only the loss differs), KD from the tiny teacher online
# (forward KL over its whole vocabulary, every trained token) and on-policy GKD (the same, half the steps on
# the student's own samples: the same steps, other tokens), two seeds (data order);
# greedy accuracy on the quickstart's held-out test problems, and the held-out cross-entropy.
# Run the quickstart first (its problems, journey and test stages are the data; the teacher's traces are
# sampled again as the quickstart samples them, with its top 20 log-probabilities, and curated alike). Writes
# notebooks/distill-results.json and prints a table with 95% Wilson intervals (scripts/distill_report.py).
#   FORGE=target/release/forge bash scripts/distill_experiment.sh
set -euo pipefail
F=${FORGE:-forge}
Q=${QUICKSTART:-runs/quickstart}
OUT=${OUT:-runs/distill-experiment}
PY=${PYTHON:-python3}
MODEL=${MODEL:-samples/tiny-student}
LR=${LR:-1e-3}
EPOCHS=${EPOCHS:-8}
mkdir -p "$OUT"
if [ ! -f "$OUT/curated/manifest.json" ]; then
  "$F" generate --teacher local:samples/tiny-teacher --problems "$Q/problems" -n 4 --batch-size 32 \
    --temperature 0.8 --max-tokens 160 --top-logprobs 20 -o "$OUT/traces" -q
  "$F" filter --input "$OUT/traces" --near-dup --max-per-problem 2 -o "$OUT/curated" -q
fi
common=(--model "$MODEL" --data "$OUT/curated" --data "$Q/journey" --epochs "$EPOCHS" --lr "$LR"
  --batch-tokens 4096 --max-length 512 --eval-every 10 --save-every 0 -q)
for seed in 1 2; do
  for arm in ${ARMS:-sft fkl jsd sft+fkl online gkd}; do
    case $arm in
      sft) cmd=(train-sft) ;;
      fkl) cmd=(train-distill --loss fkl) ;;
      jsd) cmd=(train-distill --loss jsd --beta 0.5) ;;
      sft+fkl) cmd=(train-distill --loss fkl --ce-weight 0.5) ;;
      online) cmd=(train-distill --teacher local:samples/tiny-teacher --loss fkl) ;;
      gkd) cmd=(train-distill --teacher local:samples/tiny-teacher --loss fkl --lambda 0.5) ;;
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
