#!/usr/bin/env python3
"""Pretraining text for the quickstart's base student (`samples/tiny-student`, issue #18): worked problems as
a textbook page prints them, no chat template, no instruction:

    Compute (2 + 1) * 7.
    2 + 1 = 3
    3 * 7 = 21
    So (2 + 1) * 7 = 21.

Problems are packed into pages of at most PAGE problems and PAGE_BYTES bytes (the tokenizer is byte-level), blank lines between them,
one `text` row each (a row ends with the end-of-text token `forge train-sft` appends: a base that has read
pages writes problem after problem, as base models ramble). The problems are `forge synth` datasets given on
the command line; `samples/tiny-student/make.sh` gives the tiny teacher's own training problems, so the
quickstart's held-out test, decontaminated against those, is held out from the student's pretraining too.

`--endings so` ends every arithmetic problem with `So EXPRESSION = VALUE.` (the first stage); `--endings
mixed` ends each problem in one of the ways books do (`So ... = V.`, `The answer is V.`, `The answer is
\\boxed{V}.`) and writes word problems (iGSM) with their statement and steps (the second stage: the words
and the answer line a student will be asked to write).

    python3 scripts/student_corpus.py --endings so SYNTH_DIR [SYNTH_DIR ...] > corpus.jsonl

Needs pyarrow (in the CI venv).
"""

import argparse
import glob
import json
import random

import pyarrow.parquet as pq

PAGE = 8
PAGE_BYTES = 1000


def worked(row, endings, rng):
    steps = "\n".join(step["text"] for step in row["steps"])
    gold = row["gold"]
    expression = json.loads(row["metadata"]).get("expression")
    if expression is None:  # a word problem
        ending = rng.choice([f"The answer is {gold}.", f"The answer is \\boxed{{{gold}}}."])
        return f"{row['prompt']}\n{steps}\n{ending}"
    so = f"So {expression} = {gold}."
    if endings == "mixed":
        so = rng.choice([so, f"The answer is {gold}.", f"The answer is \\boxed{{{gold}}}."])
    return f"Compute {expression}.\n{steps}\n{so}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endings", choices=["so", "mixed"], default="so")
    parser.add_argument("datasets", nargs="+")
    args = parser.parse_args()
    rng = random.Random(0)
    problems = []
    for directory in args.datasets:
        for shard in sorted(glob.glob(f"{directory}/*.parquet")):
            problems.extend(worked(row, args.endings, rng) for row in pq.read_table(shard).to_pylist())
    rng.shuffle(problems)
    page = []
    for problem in problems:
        if page and (len(page) == PAGE or sum(len(p) + 2 for p in page) + len(problem) > PAGE_BYTES):
            print(json.dumps({"text": "\n\n".join(page)}))
            page = []
        page.append(problem)
    if page:
        print(json.dumps({"text": "\n\n".join(page)}))


if __name__ == "__main__":
    main()
