#!/usr/bin/env python3
"""The inference-time scaling experiment's results (scripts/scaling_experiment.sh's outputs) as
notebooks/scaling-results.json and the curve notebooks/scaling.png: accuracy (95% Wilson interval) against
tokens generated per problem for each strategy, and adaptive sampling's samples against a fixed -n at the
kept rows."""

import json
import os
import sys
from pathlib import Path

import pyarrow.dataset as ds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from intervals import wilson  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
W = Path(os.environ.get("WORK", "/var/tmp/forge-scaling"))


def point(label, accuracy, tokens, problems):
    k = round(accuracy * problems)
    return {"point": label, "accuracy": accuracy, "ci": wilson(k, problems), "tokens_per_problem": tokens}


def sweep(name, field=None):
    report = json.loads((W / f"{name}.json").read_text())
    problems = report["overall"]["problems"]
    out = []
    for p in report["sweep"]:
        accuracy = p["accuracy"] if field is None else p["scores"][field]
        if accuracy is None:  # best-by-logprob of one sample is that sample
            accuracy = p["scores"]["pass_at_1"]
        out.append(point(p["point"], accuracy, p["tokens_per_problem"], problems))
    return out, problems


def rows(d):
    parts = sorted(map(str, (W / d).glob("part-*.parquet")))
    return ds.dataset(parts).to_table(columns=["id", "completion"]).to_pylist() if parts else []


def manifest(d):
    return json.loads((W / d / "manifest.json").read_text())["report"]


def main():
    greedy = json.loads((W / "greedy.json").read_text())
    problems = greedy["overall"]["problems"]
    curves = {
        "greedy": [point("greedy", greedy["accuracy"], greedy["overall"]["tokens_per_problem"], problems)],
        "maj@k": sweep("maj")[0],
        "best-of-n (verifier: pass@n)": sweep("best")[0],
        "best-of-n (model: mean log-probability)": sweep("best", "best_by_logprob")[0],
        "beam@w": sweep("beam")[0],
        "thinking budget (greedy)": sweep("budget")[0],
    }
    fixed, adaptive = manifest("fixed"), manifest("adaptive")
    window = manifest("adaptive-window")
    kept = {d: rows(f"{d}-kept") for d in ("fixed", "adaptive")}
    kept_window = {d: rows(f"{d}-window-kept") for d in ("fixed", "adaptive-window")}
    results = {
        "machine": "2 vCPU AMD EPYC, shared; forge release build",
        "model": "samples/tiny-teacher (3.2M parameters)",
        "problems": problems,
        "held_out": "arith, 1-2 operations on one-digit numbers, none of whose prompts is in the teacher's training sets",
        "curves": curves,
        "adaptive": {
            "problems": 200,
            "n": 16,
            "fixed_samples": fixed["rows_out"],
            "until_correct_2": {
                "samples": adaptive["rows_out"],
                "fewer": 1 - adaptive["rows_out"] / fixed["rows_out"],
                "stopped": adaptive["flagged"],
                "kept_rows": len(kept["adaptive"]),
                "fixed_kept_rows": len(kept["fixed"]),
                "same_kept_rows": kept["adaptive"] == kept["fixed"],
            },
            "pass_rate_0.2_0.8": {
                "samples": window["rows_out"],
                "fewer": 1 - window["rows_out"] / fixed["rows_out"],
                "stopped": window["flagged"],
                "kept_rows": len(kept_window["adaptive-window"]),
                "fixed_kept_rows": len(kept_window["fixed"]),
                "kept_rows_in_common": len({r["id"] for r in kept_window["adaptive-window"]} & {r["id"] for r in kept_window["fixed"]}),
            },
        },
    }
    (ROOT / "notebooks" / "scaling-results.json").write_text(json.dumps(results, indent=1) + "\n")
    for name, c in curves.items():
        print(name)
        for p in c:
            print(f"  {p['point']:<12} {100 * p['accuracy']:5.1f}% [{100 * p['ci'][0]:.1f}, {100 * p['ci'][1]:.1f}]"
                  f"  {p['tokens_per_problem']:8.1f} tokens/problem")
    print(json.dumps(results["adaptive"], indent=1))
    draw(results, ROOT / "notebooks" / "scaling.png")


def draw(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, c in results["curves"].items():
        xs = [p["tokens_per_problem"] for p in c]
        ys = [100 * p["accuracy"] for p in c]
        ax.plot(xs, ys, "o-" if len(c) > 1 else "s", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("tokens generated per problem")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"tiny teacher, {results['problems']} held-out arithmetic problems")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
