"""forge verify vs HF Math-Verify on the same inputs: verdict disagreements and items/s, one core each.

Workloads:
  cases  - the team's (gold, prediction) pairs, tests/fixtures/answer_cases.tsv (short answer pairs)
  outputs - the team's whole outputs (tests/fixtures/output_cases.tsv): answers in prose, several answers,
           labelled answers, relations, matrices, percent, false accepts
  gsm8k  - GSM8K model solutions with human is_correct labels (full chain-of-thought outputs)
  math   - MATH train/test and MATH-500 reference solutions against the gold answers forge imports
  corpus - with --corpus FILE: the differential corpus of scripts/verify_corpus.py (model-style phrasings,
           right and wrong), reported by category

Usage: python scripts/compare_math_verify.py [--forge PATH] [--limit N] [--show K] [--corpus FILE] [--only W]
Needs ../shared/data and `pip install -r scripts/requirements.txt`. forge runs as `forge verify --input
--output` (process start and JSON I/O included, best of three runs); Math-Verify runs parse(gold) + parse(pred) +
verify per item in this process, once.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from math_verify import parse, verify

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def table(name):
    """The fields of each row of one of the team's tables (tab-separated, `#` comments)."""
    for line in (ROOT / "tests/fixtures" / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            yield line.split("\t")


def cases():
    # Answer-vs-answer pairs: Math-Verify needs LaTeX in a math environment, so both sides get `$`.
    return [
        {"answer": gold, "completion": pred, "mv_completion": f"${pred}$", "expected": expected == "yes"}
        for gold, pred, expected in table("answer_cases.tsv")
    ]


def outputs():
    rows = []
    for gold, output, expected in table("output_cases.tsv"):
        # A gold that is prose around math goes to Math-Verify as written; any other gold gets `$`s.
        mv_gold = gold if "$" in gold else f"${gold}$"
        rows.append({"answer": gold, "mv_answer": mv_gold, "completion": output.replace("⏎", "\n"), "expected": expected == "yes"})
    return rows


def last_number(text):
    import re

    found = re.findall(r"-?\d[\d,]*\.?\d*", text)
    return found[-1].replace(",", "").rstrip(".") if found else ""


def gsm8k():
    rows = []
    for line in open(DATA / "gsm8k/example_model_solutions.jsonl"):
        d = json.loads(line)
        gold = last_number(d["ground_truth"].split("A:")[-1])
        for model in ["6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"]:
            rows.append({"answer": gold, "completion": d[model]["solution"], "expected": d[model]["is_correct"]})
    return rows


def math(forge):
    """MATH train/test and MATH-500 solutions against the gold answers `forge import` gives them."""
    import polars as pl

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset, name in [("math", "math/train.jsonl"), ("math", "math/test.jsonl"), ("math500", "math500/test.jsonl")]:
            out = os.path.join(tmp, name.replace("/", "_"))
            subprocess.run([forge, "import", "--preset", preset, str(DATA / name), "-o", out, "-q"], check=True)
            gold = dict(pl.read_parquet(os.path.join(out, "*.parquet")).select("id", "gold").iter_rows())
            for line in open(DATA / name):
                d = json.loads(line)
                if gold.get(d["unique_id"]) is not None:  # two MATH train rows box nothing
                    rows.append({"answer": gold[d["unique_id"]], "completion": d["solution"], "expected": True})
    return rows


def corpus(path):
    return [json.loads(line) for line in open(path)]


def by_category(rows, f, m):
    """Per category: items, forge agrees with the expected verdict, Math-Verify does, and they differ."""
    table = {}
    for r, a, b in zip(rows, f, m):
        t = table.setdefault(r["category"], [0, 0, 0, 0])
        t[0] += 1
        t[1] += a == r["expected"]
        t[2] += b == r["expected"]
        t[3] += a != b
    print(f"  {'category':16} {'items':>6} {'forge ok':>9} {'MV ok':>7} {'differ':>7}")
    for c, (n, ok_f, ok_m, d) in sorted(table.items()):
        print(f"  {c:16} {n:6} {ok_f:9} {ok_m:7} {d:7}")


def run_forge(forge, rows):
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
        with open(src, "w") as f:
            for r in rows:
                f.write(json.dumps({"answer": r["answer"], "completion": r["completion"]}) + "\n")
        # forge's run is short (tens of ms) next to Math-Verify's (seconds), so one scheduling hiccup on a shared
        # machine moves its rate a lot: the best of three runs.
        seconds = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([forge, "verify", "--input", src, "--output", dst, "-q"], check=True)
            seconds = min(seconds, time.perf_counter() - start)
        verdicts = [json.loads(line)["correct"] for line in open(dst)]
    return verdicts, seconds


def run_math_verify(rows):
    verdicts = []
    start = time.perf_counter()
    for r in rows:
        try:
            gold = parse(r.get("mv_answer", f"${r['answer']}$"))
            pred = parse(r.get("mv_completion", r["completion"]))
            verdicts.append(bool(verify(gold, pred)))
        except Exception:
            verdicts.append(False)
    return verdicts, time.perf_counter() - start


def run_math_verify_cached(rows, path):
    """Math-Verify's verdicts, reused from `path` when it holds them for exactly these rows (for iterating on
    forge; the speed figure then comes from the run that wrote the cache)."""
    import hashlib

    key = hashlib.sha256(
        json.dumps([[r.get("mv_answer", r["answer"]), r.get("mv_completion", r["completion"])] for r in rows]).encode()
    ).hexdigest()
    cached = json.load(open(path)) if path and os.path.exists(path) else {}
    if key in cached:
        return cached[key]["verdicts"], cached[key]["seconds"]
    verdicts, seconds = run_math_verify(rows)
    if path:
        cached[key] = {"verdicts": verdicts, "seconds": seconds}
        json.dump(cached, open(path, "w"))
    return verdicts, seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--forge", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"), "release", "forge"))
    ap.add_argument("--limit", type=int, default=0, help="at most N items per workload (0: all)")
    ap.add_argument("--show", type=int, default=15, help="disagreements to print per workload")
    ap.add_argument("--corpus", help="also run the differential corpus written by scripts/verify_corpus.py")
    ap.add_argument("--only", help="run only this workload (cases, outputs, gsm8k, math, corpus)")
    ap.add_argument("--dump", help="write every disagreement to this JSONL file")
    ap.add_argument("--mv-cache", help="reuse Math-Verify's verdicts (and time) stored in this JSON file")
    args = ap.parse_args()
    workloads = [("cases", cases), ("outputs", outputs), ("gsm8k", gsm8k), ("math", lambda: math(args.forge))]
    if args.corpus:
        workloads.append(("corpus", lambda: corpus(args.corpus)))
    if args.only:
        workloads = [w for w in workloads if w[0] == args.only]
    print(f"{'workload':8} {'items':>6} {'forge ok':>9} {'MV ok':>7} {'differ':>7} {'forge/s':>10} {'MV/s':>8} {'ratio':>7}")
    report = []
    for name, make in workloads:
        rows = make()
        if args.limit:
            rows = rows[: args.limit]
        f, fs = run_forge(args.forge, rows)
        m, ms = run_math_verify_cached(rows, args.mv_cache)
        right_f = sum(a == r["expected"] for a, r in zip(f, rows))
        right_m = sum(a == r["expected"] for a, r in zip(m, rows))
        differ = [(r, a, b) for r, a, b in zip(rows, f, m) if a != b]
        n = len(rows)
        print(f"{name:8} {n:6} {right_f:9} {right_m:7} {len(differ):7} {n / fs:10.0f} {n / ms:8.0f} {(n / fs) / (n / ms):7.1f}")
        if name == "corpus":
            by_category(rows, f, m)
        report.append((name, differ))
    if args.dump:
        with open(args.dump, "w") as out:
            for name, differ in report:
                for r, a, b in differ:
                    out.write(json.dumps({"workload": name, "forge": a, "math_verify": b, **r}) + "\n")
    for name, differ in report:
        for r, a, b in differ[: args.show]:
            tail = r["completion"][-120:].replace("\n", " ")
            label = f"{name}/{r['category']}" if "category" in r else name
            print(f"[{label}] expected={r['expected']} forge={a} math-verify={b} gold={r['answer']!r} pred=...{tail!r}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
