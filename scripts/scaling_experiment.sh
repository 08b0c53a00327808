#!/usr/bin/env bash
# Inference-time scaling on the tiny teacher (samples/tiny-teacher), on arithmetic held out from its
# training problems: accuracy against tokens per problem for greedy decoding, maj@k and best-of-n (the
# verifier picking: pass@n; and the model picking by mean log-probability) over k = 1..16 samples, beam
# search over 1..8 beams, and thinking budgets (s1 budget forcing); then adaptive sampling's savings
# against a fixed -n at equal kept rows. scripts/scaling_report.py turns the outputs into
# notebooks/scaling-results.json and notebooks/scaling.png.
#
#   cargo build --release && bash scripts/scaling_experiment.sh && python3 scripts/scaling_report.py
set -euo pipefail
cd "$(dirname "$0")/.."
F=${FORGE:-${CARGO_TARGET_DIR:-target}/release/forge}
W=${WORK:-/var/tmp/forge-scaling}
PY=${PYTHON:-python3}
T=samples/tiny-teacher
mkdir -p "$W"

# 200 problems held out from the teacher's training problems (samples/tiny-teacher/make.sh).
bash scripts/heldout_arith.sh "$F" "$W" "$PY"

ev() { $F eval --model $T --problems "$W/heldout.jsonl" --max-tokens 200 --json "$@"; }
ev --strategy greedy -o "$W/greedy" > "$W/greedy.json"
ev --strategy maj@16 --sweep n=1,2,4,8,16 --temperature 0.8 -o "$W/sampled" > "$W/maj.json"
# the same 16 samples per problem (the traces are up to date), scored as best-of-n
ev --strategy best-of-16 --sweep n=1,2,4,8,16 --temperature 0.8 -o "$W/sampled" > "$W/best.json"
ev --strategy beam@8 --sweep n=1,2,4,8 -o "$W/beam" > "$W/beam.json"
ev --strategy greedy --thinking-end 'The answer is' --answer-cue ' ' --sweep budget=2,4,6,8,12,16,24 \
  -o "$W/budget" > "$W/budget.json"

# Adaptive sampling for data: 200 fresh problems (one to three operations), 16 samples each at most.
[ -d "$W/gen-problems" ] || $F synth arith --n 200 --ops 1..3 --max-operand 9 --seed 5000 -o "$W/gen-problems" -q
gen() { $F generate --teacher local:$T --problems "$W/gen-problems" -n 16 --temperature 0.8 --max-tokens 200 "$@"; }
gen -o "$W/fixed" -q
gen --until-correct 2 --samples-per-round 2 -o "$W/adaptive" 2> "$W/adaptive.log"
gen --pass-rate 0.2:0.8 --pass-rate-confidence 0.8 --samples-per-round 2 -o "$W/adaptive-window" 2> "$W/adaptive-window.log"
for d in fixed adaptive; do
  $F filter --input "$W/$d" --no-exact-dup --max-per-problem 2 --pick first -o "$W/$d-kept" -q
done
for d in fixed adaptive-window; do
  $F filter --input "$W/$d" --no-exact-dup --pass-rate 0.2:0.8 -o "$W/$d-window-kept" -q
done
echo "outputs in $W"
