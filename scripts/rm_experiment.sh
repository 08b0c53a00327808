#!/usr/bin/env bash
# Best-of-n without gold, by a reward model forge trains (`forge train-rm`): the tiny teacher
# (samples/tiny-teacher) samples 8 solutions of each of 2,000 of its own training problems at temperature
# 0.8, the verifier labels them, `train-rm` turns a copy of the teacher into an outcome reward model (pairwise,
# the default, and pointwise); then
# on 200 arithmetic problems held out from every training set (built as scripts/scaling_experiment.sh
# builds them, same seeds) the teacher samples 16 solutions each and `forge eval --reward-model` picks one,
# against greedy decoding, majority vote, the model's own mean log-probability and the verifier (pass@n).
#
#   cargo build --release && bash scripts/rm_experiment.sh
set -euo pipefail
cd "$(dirname "$0")/.."
F=${FORGE:-${CARGO_TARGET_DIR:-target}/release/forge}
W=${WORK:-/var/tmp/forge-rm}
PY=${PYTHON:-python3}
T=samples/tiny-teacher
mkdir -p "$W"

# The held-out problems: the scaling experiment's.
bash scripts/heldout_arith.sh "$F" "$W" "$PY"

# The reward model's data: 2,000 of the teacher's own training problems (the first rows of `train-easy`),
# 8 samples each.
[ -d "$W/rm-problems" ] || $F synth arith --n 2000 --ops 1..2 --max-operand 9 --seed 3 -o "$W/rm-problems" -q
$F generate --teacher local:$T --problems "$W/rm-problems" -n 8 --temperature 0.8 --max-tokens 200 -o "$W/rm-samples" -q
# pairwise (the default: a problem's samples share a row, so --max-length holds all 8), and pointwise
for objective in pairwise pointwise; do
  out=$W/rm; [ $objective = pairwise ] || out=$W/rm-$objective
  $F train-rm --model $T --data "$W/rm-samples" -o "$out" --objective $objective --epochs 2 --lr 3e-4 \
    --batch-tokens 16384 --max-length 2048 --eval-share 0.05 -q
done

ev() { $F eval --model $T --problems "$W/heldout.jsonl" --max-tokens 200 --json "$@"; }
ev --strategy greedy -o "$W/greedy" > "$W/greedy.json"
# the same 16 samples per problem for every scoring (the traces are generated once, then up to date)
ev --strategy best-of-16 --sweep n=1,2,4,8,16 --temperature 0.8 --reward-model "$W/rm" -o "$W/sampled" > "$W/best.json"
ev --strategy best-of-16 --sweep n=1,2,4,8,16 --temperature 0.8 --reward-model "$W/rm-pointwise" -o "$W/sampled" \
  > "$W/best-pointwise.json"
ev --strategy maj@16 --sweep n=1,2,4,8,16 --temperature 0.8 -o "$W/sampled" > "$W/maj.json"
"$PY" - "$W" <<'PYEOF'
import json, sys
from pathlib import Path
w = Path(sys.argv[1])
greedy = json.loads((w / "greedy.json").read_text())
best, maj = json.loads((w / "best.json").read_text()), json.loads((w / "maj.json").read_text())
point = json.loads((w / "best-pointwise.json").read_text())
print(f"greedy: {greedy['accuracy']:.3f} ({greedy['overall']['tokens_per_problem']:.0f} tokens/problem)")
print("n  tokens  maj@n  best-by-logprob  best-by-rm-pairwise  best-by-rm-pointwise  pass@n (verifier)")
opt = lambda x: "" if x is None else f"{x:.3f}"
for b, p, m in zip(best["sweep"], point["sweep"], maj["sweep"]):
    s = b["scores"]
    print(f"{b['point'].split('-')[-1]:>2} {b['tokens_per_problem']:7.0f}  {opt(m['scores'].get('maj_at_n'))}"
          f"  {opt(s.get('best_by_logprob'))}  {opt(s.get('best_by_reward'))}"
          f"  {opt(p['scores'].get('best_by_reward'))}  {opt(s.get('pass_at_n'))}")
PYEOF
echo "outputs in $W"
