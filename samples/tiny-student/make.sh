#!/usr/bin/env bash
# The tiny student: a 1.7M-parameter Qwen2 with the tiny teacher's byte-level tokenizer, pretrained from
# scratch by forge on worked problems as plain text (no chat template, no instruction): a base model for the
# quickstart to distil into. Its text is the tiny teacher's own training problems (samples/tiny-teacher/make.sh),
# so the quickstart's test, decontaminated against those, is held out from the student too. Run from an empty
# directory; needs python3 with pyarrow.
set -euo pipefail
F=${FORGE:-forge}
PY=${PYTHON:-python3}
CORPUS=$(cd "$(dirname "$0")/../../scripts" && pwd)/student_corpus.py
$F synth arith --n 20000 --ops 1..2 --max-operand 9 --seed 3 -o arith-easy -q
$F synth arith --n 10000 --seed 1 -o arith -q
$F synth igsm --n 1500 --ops 2..3 --distractors 0 --seed 1 -o igsm -q
$F init-model --family qwen2 --hidden 192 --intermediate 512 --layers 4 --heads 4 --kv-heads 2 --seed 1 -o init -q
# Stage 1: arithmetic worked out step by step, each problem ending "So EXPRESSION = VALUE."
$PY "$CORPUS" --endings so arith-easy arith > corpus-1.jsonl
$F train-sft --model init --data corpus-1.jsonl -o stage-1 --epochs 8 --lr 2e-3 --batch-tokens 4096 \
  --max-length 512 --eval-every 100 --save-every 200
# Stage 2: the same problems ending as books end them ("The answer is V.", "The answer is \boxed{V}.") and the
# teacher's word problems (iGSM): the words and the answer line a student is asked to write. Saved in bf16.
$PY "$CORPUS" --endings mixed arith-easy arith igsm > corpus-2.jsonl
sed -i 's/"torch_dtype": "float32"/"torch_dtype": "bfloat16"/' stage-1/config.json
$F train-sft --model stage-1 --data corpus-2.jsonl -o student --epochs 1 --lr 1e-3 --batch-tokens 4096 \
  --max-length 1024 --eval-every 50 --save-every 100
