#!/usr/bin/env python3
"""Summarise the journey experiment (`scripts/journey_experiment.sh`).

Reads every `eval-{id,ood}-<arm>-<seed>` stage under the run directory, re-scores each greedy answer from
the traces (and checks that this equals forge's `eval-report.json`), and prints, per arm and split:
accuracy pooled over seeds with a 95% Wilson interval, each seed's accuracy, the difference from the clean
arm with a 95% paired bootstrap interval (resampling test problems, seeds kept paired), the mean reply
length, and the share of replies that contain a retry (a detection line). Writes the numbers as JSON.

    python3 scripts/journey_report.py runs/journey-igsm [-o notebooks/journey-results.json]

Needs pyarrow.
"""

import argparse
import json
import random
import re
from pathlib import Path

import pyarrow.parquet as pq

from intervals import wilson

ARMS = ["clean", "p02", "p05", "p05-masked", "verify"]
SPLITS = ["id", "ood"]
# the first words of forge journey's detection templates (natural language, or PoLM's [BACK] token)
DETECT = re.compile(r"^(Wait, (?!let me double-check)|Hmm, |Let me check that step again|That doesn't look right|\[BACK\])", re.M)
BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def load(stage: Path):
    report = json.loads((stage / "eval-report.json").read_text())
    rows = []
    for f in sorted(stage.glob("*.parquet")):
        rows += pq.read_table(f, columns=["problem_id", "gold", "completion", "completion_tokens"]).to_pylist()
    by_problem = {}
    for r in rows:
        found = BOXED.findall(r["completion"])
        correct = bool(found) and found[-1].strip() == (r["gold"] or "").strip()
        by_problem[r["problem_id"]] = (correct, r["completion_tokens"], bool(DETECT.search(r["completion"])))
    accuracy = sum(c for c, _, _ in by_problem.values()) / len(by_problem)
    if abs(accuracy - report["accuracy"]) > 1e-9:
        raise SystemExit(f"{stage}: re-scored accuracy {accuracy} differs from eval-report.json {report['accuracy']}")
    return by_problem


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("-o", "--output", type=Path)
    ap.add_argument("--bootstrap", type=int, default=2000)
    args = ap.parse_args()

    seeds = sorted({int(p.name.rsplit("-", 1)[1]) for p in args.run.glob("eval-id-clean-*")})
    data = {}  # (arm, split) -> [per seed: {problem: (correct, tokens, retried)}]
    for arm in ARMS:
        for split in SPLITS:
            runs = [args.run / f"eval-{split}-{arm}-{s}" for s in seeds]
            if all((r / "eval-report.json").exists() for r in runs):
                data[(arm, split)] = [load(r) for r in runs]

    rng = random.Random(0)
    results = {"seeds": seeds, "arms": {}}
    print(f"seeds {seeds}; accuracy pooled over seeds [95% Wilson]; diff vs clean [95% paired bootstrap]")
    print(f"{'arm':<11} {'split':<5} {'acc':>6} {'95% CI':>15} {'per seed':>17} {'vs clean':>8} {'95% CI':>17} {'tokens':>7} {'retry':>6}")
    for (arm, split), per_seed in data.items():
        problems = sorted(per_seed[0])
        n = len(problems) * len(per_seed)
        k = sum(run[p][0] for run in per_seed for p in problems)
        lo, hi = wilson(k, n)
        seed_acc = [sum(run[p][0] for p in problems) / len(problems) for run in per_seed]
        tokens = sum(run[p][1] for run in per_seed for p in problems) / n
        retry = sum(run[p][2] for run in per_seed for p in problems) / n
        entry = {
            "split": split, "accuracy": k / n, "ci": [lo, hi], "per_seed": seed_acc,
            "mean_tokens": tokens, "retry_share": retry, "n": n,
        }
        diff_txt = ""
        base = data.get(("clean", split))
        if base and arm != "clean":
            def diff(sample):
                return sum(
                    run[p][0] - b[p][0] for run, b in zip(per_seed, base) for p in sample
                ) / (len(sample) * len(per_seed))
            d = diff(problems)
            boots = sorted(diff([rng.choice(problems) for _ in problems]) for _ in range(args.bootstrap))
            ci = [boots[int(0.025 * len(boots))], boots[int(0.975 * len(boots)) - 1]]
            entry["vs_clean"] = d
            entry["vs_clean_ci"] = ci
            diff_txt = f"{d * 100:+7.1f} [{ci[0] * 100:+6.1f}, {ci[1] * 100:+6.1f}]"
        results["arms"].setdefault(arm, {})[split] = entry
        seeds_txt = " ".join(f"{a * 100:5.1f}" for a in seed_acc)
        print(f"{arm:<11} {split:<5} {k / n * 100:5.1f}% [{lo * 100:5.1f}, {hi * 100:5.1f}] {seeds_txt:>17} {diff_txt:>27} {tokens:7.1f} {retry * 100:5.1f}%")
    if args.output:
        args.output.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
