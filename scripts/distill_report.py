#!/usr/bin/env python3
"""The distillation experiment's table (scripts/distill_experiment.sh): greedy accuracy per arm pooled over
seeds with a 95% Wilson interval, each seed's in parentheses, the final training and held-out losses, and
the difference to SFT with a paired bootstrap interval over problems (seeds pooled). Stdlib only.

    python3 scripts/distill_report.py runs/distill-experiment notebooks/distill-results.json
"""

import json
import random
import sys
from pathlib import Path

from intervals import wilson

ARMS = ["sft", "fkl", "jsd", "sft+fkl", "online", "gkd"]


def correct(verdicts):
    """problem_id -> 1/0 from `forge verify`'s JSONL verdicts of one eval's traces."""
    rows = [json.loads(line) for line in open(verdicts)]
    return {r["problem_id"]: int(bool(r["correct"])) for r in rows}


def main():
    out, target = Path(sys.argv[1]), Path(sys.argv[2])
    seeds = sorted({p.name.rsplit("-", 1)[1] for p in out.glob("sft-*") if p.is_dir()})
    results = {"seeds": seeds, "arms": {}}
    arms = [arm for arm in ARMS if (out / f"verdicts-{arm}-{seeds[0]}.jsonl").exists()]
    per = {arm: {s: correct(out / f"verdicts-{arm}-{s}.jsonl") for s in seeds} for arm in arms}
    rng = random.Random(0)
    print(f"| arm | greedy accuracy, 95% interval (per seed) | vs SFT (paired bootstrap 95%) | loss | held-out CE |")
    print("|---|---|---|---|---|")
    for arm in arms:
        pooled = [(s, p, v) for s in seeds for p, v in per[arm][s].items()]
        k, n = sum(v for _, _, v in pooled), len(pooled)
        lo, hi = wilson(k, n)
        each = [100 * sum(per[arm][s].values()) / len(per[arm][s]) for s in seeds]
        reports = [json.loads((out / f"{arm}-{s}" / "train-report.json").read_text()) for s in seeds]
        loss = sum(r["final_loss"] for r in reports) / len(reports)
        held = sum(r["final_eval_loss"] for r in reports) / len(reports)
        diff = ""
        if arm != "sft":
            pairs = [(per[arm][s][p], per["sft"][s][p]) for s in seeds for p in per[arm][s]]
            base = sum(a - b for a, b in pairs) / len(pairs)
            boots = sorted(
                sum(a - b for a, b in (rng.choice(pairs) for _ in pairs)) / len(pairs) for _ in range(2000)
            )
            diff = f"{100 * base:+.1f} [{100 * boots[50]:+.1f}, {100 * boots[1949]:+.1f}]"
        results["arms"][arm] = {
            "accuracy": k / n,
            "interval": [lo, hi],
            "per_seed": [e / 100 for e in each],
            "problems": n // len(seeds),
            "final_loss": loss,
            "held_out_ce": held,
            "vs_sft": diff,
        }
        seeds_text = ", ".join(f"{e:.1f}" for e in each)
        print(f"| {arm} | {100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] ({seeds_text}) | {diff} | {loss:.3f} | {held:.3f} |")
    target.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
