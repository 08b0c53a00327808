#!/usr/bin/env python3
"""Turns scripts/rl_experiment.sh's runs into notebooks/rl-results.json and a table: held-out greedy accuracy
before and after RL with 95% Wilson intervals, the paired difference after − before per seed (the same
problems: a normal interval on the per-problem differences) and each run's per-step rollout curves.

    python3 scripts/rl_report.py OUT        # OUT as given to rl_experiment.sh
"""

import csv
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from intervals import wilson  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FORGE = os.environ.get("FORGE", str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "forge"))


def verdicts(eval_dir):
    """problem id -> correct, re-verified from the traces `forge eval` kept."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "v.jsonl"
        parts = sorted(Path(eval_dir).glob("part-*.parquet"))
        rows = {}
        for part in parts:
            subprocess.run([FORGE, "verify", "--input", part, "--output", out, "--gold-col", "gold", "--output-col",
                            "completion", "-q"], check=True)
            for line in out.read_text().splitlines():
                r = json.loads(line)
                rows[r["problem_id"]] = bool(r["correct"])
        return rows


def score(rows):
    n, k = len(rows), sum(rows.values())
    lo, hi = wilson(k, n)
    return {"problems": n, "correct": k, "accuracy": k / n, "ci": [lo, hi]}


def paired(before, after):
    d = [int(after[p]) - int(before[p]) for p in before]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    h = 1.96 * sd / math.sqrt(n)
    return {"difference": mean, "ci": [mean - h, mean + h],
            "gained": sum(1 for x in d if x > 0), "lost": sum(1 for x in d if x < 0)}


def curve(run_dir):
    rows = list(csv.DictReader(open(Path(run_dir) / "metrics.csv")))
    return {c: [float(r[c]) for r in rows] for c in ["step", "reward", "accuracy", "kl", "entropy", "completion_length"]}


def experiment(out, name, setup, before_dir, runs):
    before = verdicts(before_dir)
    result = {"setup": setup, "before": score(before), "after": {}, "vs_before": {}, "curves": {}}
    b = result["before"]
    print(f"{name}: before {b['correct']}/{b['problems']} {100 * b['accuracy']:.1f}% "
          f"[{100 * b['ci'][0]:.1f}, {100 * b['ci'][1]:.1f}]")
    for seed, (run_dir, eval_dir) in runs.items():
        after = verdicts(eval_dir)
        a, p = score(after), paired(before, after)
        result["after"][seed], result["vs_before"][seed], result["curves"][seed] = a, p, curve(run_dir)
        print(f"  {seed}: {a['correct']}/{a['problems']} {100 * a['accuracy']:.1f}% [{100 * a['ci'][0]:.1f}, "
              f"{100 * a['ci'][1]:.1f}]  after − before {100 * p['difference']:+.1f} [{100 * p['ci'][0]:+.1f}, "
              f"{100 * p['ci'][1]:+.1f}] ({p['gained']} gained, {p['lost']} lost)")
    return result


def main():
    out = Path(sys.argv[1])
    steps = int(os.environ.get("STEPS", "300"))
    results = {
        "from_teacher": experiment(out, "RL from the sample teacher", {
            "policy": "samples/tiny-teacher", "steps": steps, "prompts_per_step": 8, "group_size": 8,
            "max_tokens": 128, "lr": 1e-5, "beta": 0.0, "reward": "accuracy=1",
            "train": "arith, 2 ops, one-digit operands, seed 500, 4000 problems",
            "test": "arith, 2 ops, one-digit operands, seed 201: 399 problems in none of the training sets"},
            out / "eval-before", {f"seed{s}": (out / f"rl-seed{s}", out / f"eval-seed{s}") for s in (1, 2)}),
        "after_sft": experiment(out, "RL after SFT (pipelines/sft-then-rl.toml)", {
            "policy": "the pipeline's `sft` stage (the sample teacher after one epoch on its verified traces and "
                      "journey rows)", "steps": 40, "prompts_per_step": 8, "group_size": 8, "max_tokens": 128,
            "lr": 1e-5, "beta": 0.04, "reward": "accuracy=1,language=0.1",
            "train": "the pipeline's 600 problems (arith, 2 ops, one-digit operands, seed 300)",
            "test": "the pipeline's `test` stage: 252 problems in none of the training sets"},
            out / "sft-then-rl" / "eval-sft",
            {"seed1": (out / "sft-then-rl" / "rl", out / "sft-then-rl" / "eval-rl"),
             "seed2": (out / "sft-then-rl" / "rl-seed2", out / "sft-then-rl" / "eval-rl-seed2")}),
    }
    (ROOT / "notebooks" / "rl-results.json").write_text(json.dumps(results, indent=1) + "\n")
    print("wrote notebooks/rl-results.json")


if __name__ == "__main__":
    main()
