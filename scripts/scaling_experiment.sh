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

# The teacher's training problems (samples/tiny-teacher/make.sh), and a pool to hold out from them.
[ -d "$W/train-arith" ] || $F synth arith --n 10000 --seed 1 -o "$W/train-arith" -q
[ -d "$W/train-easy" ] || $F synth arith --n 20000 --ops 1..2 --max-operand 9 --seed 3 -o "$W/train-easy" -q
[ -d "$W/pool" ] || $F synth arith --n 4000 --ops 1..2 --max-operand 9 --seed 4000 -o "$W/pool" -q
"$PY" - "$W" <<'PYEOF'
import json, sys
from pathlib import Path
import pyarrow.dataset as ds
w = Path(sys.argv[1])
prompts = lambda d: set(ds.dataset(sorted(map(str, (w / d).glob("part-*.parquet")))).to_table(columns=["prompt"]).column("prompt").to_pylist())
seen = prompts("train-arith") | prompts("train-easy")
rows, kept = ds.dataset(sorted(map(str, (w / "pool").glob("part-*.parquet")))).to_table().to_pylist(), []
for r in rows:
    if r["prompt"] not in seen and r["prompt"] not in {k["prompt"] for k in kept}:
        kept.append(r)
kept = kept[:200]
(w / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
print(f"held out: {len(kept)} problems (of {len(rows)} drawn; none in the teacher's {len(seen)} training prompts)")
PYEOF

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
