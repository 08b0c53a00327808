#!/usr/bin/env bash
# The journey experiment (issue 7): does wrong-then-corrected data beat clean solutions at equal training
# tokens? Tiny models are trained from scratch on iGSM-style problems (quantities named by letters,
# arithmetic modulo 7, one distractor, 1..3 operations) and tested greedily on 300 unseen problems of the
# same sizes (in distribution) and 300 with 4..5 operations (out of distribution).
#
# Five arms over the same 8,000 problems, each trained for the same number of steps of the same token
# budget (so on the same number of training tokens; the clean arm sees more epochs of shorter rows), two
# seeds each (seed = the initial weights and the order of the data):
#   clean       the reference solutions
#   p02, p05    synthetic retries at a per-step error rate of 0.2 / 0.5 (all five error types)
#   p05-masked  as p05, with the wrong steps left out of the loss
#   verify      clean solutions with "let me verify" checks of correct steps (share 0.4)
# All arms share one tokenizer (byte-level BPE, 512 tokens, trained on all arms' rows) and one model shape.
# Two runs go at a time, one thread each (a tiny model uses one core better than two).
#
#   scripts/journey_experiment.sh [OUT]     # OUT defaults to runs/journey-igsm; about 90 min on 2 cores
#   python3 scripts/journey_report.py runs/journey-igsm -o notebooks/journey-results.json
#
# Every forge command here skips work that is already done, so a rerun after an interruption resumes
# (train-sft from its last checkpoint). STEPS and FORGE override the step count and the binary.
set -euo pipefail
export F=${FORGE:-forge} STEPS=${STEPS:-2200}
out=${1:-runs/journey-igsm}
mkdir -p "$out"
cd "$out"

igsm=(--modulus 7 --distractors 1 --names letters -q)
$F synth igsm --n 8000 --ops 1..3 --seed 11 "${igsm[@]}" -o problems
$F synth igsm --n 300 --ops 1..3 --seed 12 "${igsm[@]}" -o test-id
$F synth igsm --n 300 --ops 4..5 --seed 13 "${igsm[@]}" -o test-ood
$F journey --input problems --journey-share 0 -o clean -q
$F journey --input problems --error-rate 0.2 -o p02 -q
$F journey --input problems --error-rate 0.5 -o p05 -q
$F journey --input problems --error-rate 0.5 --mask-errors -o p05-masked -q
$F journey --input problems --strategy verify -o verify -q

model=(--hidden 64 --intermediate 256 --layers 3 --heads 4 --kv-heads 2)
[ -d init-1 ] || $F init-model "${model[@]}" --seed 1 --vocab-size 512 -o init-1 -q \
  --tokenizer-data clean --tokenizer-data p02 --tokenizer-data p05 --tokenizer-data verify
[ -d init-2 ] || $F init-model "${model[@]}" --seed 2 --tokenizer-from init-1 -o init-2 -q

arm() { # ARM SEED: train, then evaluate in and out of distribution
  export RAYON_NUM_THREADS=1
  $F train-sft --model "init-$2" --data "$1" --seed "$2" --max-steps "$STEPS" --epochs 1000 --lr 3e-3 \
    --batch-tokens 4096 --micro-batch-tokens 4096 --max-length 384 --eval-share 0 --save-every 200 -o "$1-$2" -q
  $F eval --model "$1-$2" --problems test-id --max-tokens 250 --batch-size 32 -o "eval-id-$1-$2" -q
  $F eval --model "$1-$2" --problems test-ood --max-tokens 350 --batch-size 32 -o "eval-ood-$1-$2" -q
  echo "done $1-$2"
}
export -f arm
for seed in 1 2; do
  for a in clean p02 p05 p05-masked verify; do echo "$a $seed"; done
done | xargs -P 2 -L 1 bash -c 'arm "$0" "$1"'
