#!/usr/bin/env bash
# The tiny teacher: a 3M-parameter Qwen2 with a byte-level tokenizer, trained from scratch by forge on the
# reference solutions of synthetic arithmetic and iGSM problems. Run from an empty directory.
set -euo pipefail
F=${FORGE:-forge}
$F synth arith --n 10000 --seed 1 -o train-arith -q
$F synth igsm --n 1500 --ops 2..3 --distractors 0 --seed 1 -o train-igsm -q
$F init-model --family qwen2 --hidden 256 --intermediate 704 --layers 4 --heads 4 --kv-heads 2 --seed 1 -o init -q
sed -i 's/"torch_dtype": "float32"/"torch_dtype": "bfloat16"/' init/config.json   # saved in bf16: half the size
$F train-sft --model init --data train-arith --data train-igsm -o teacher --epochs 1 --lr 2e-3 \
  --batch-tokens 8192 --micro-batch-tokens 4096 --max-length 1280 --eval-every 25 --save-every 25
# Stage 2: after stage 1 the model had the format but not the numbers (held-out: 0% on arith, 6% on iGSM).
# Continue on easier arithmetic (one or two operations on one-digit numbers) in short rows.
$F synth arith --n 20000 --ops 1..2 --max-operand 9 --seed 3 -o train-arith-easy -q
$F train-sft --model teacher --data train-arith-easy -o teacher-2 --epochs 1 --lr 1e-3 \
  --batch-tokens 8192 --micro-batch-tokens 4096 --max-length 256 --eval-every 50 --save-every 50
