#!/usr/bin/env bash
# The held-out arithmetic of the inference-time-scaling experiments (scripts/scaling_experiment.sh,
# scripts/rm_experiment.sh): 200 problems of one or two operations on one-digit numbers, none of whose
# prompts is among the tiny teacher's training problems (samples/tiny-teacher/make.sh: the same seeds).
# Writes DIR/heldout.jsonl, and the teacher's training sets it checked against, into DIR.
#
#   scripts/heldout_arith.sh FORGE DIR [PYTHON]
set -euo pipefail
F=$1
W=$2
PY=${3:-python3}
mkdir -p "$W"
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
