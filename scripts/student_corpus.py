#!/usr/bin/env python3
"""Pretraining text for a small base student of the quickstart's task (issue #18), as plain `text` rows
for `forge train-sft` (every token trained): arithmetic facts and worked expressions, none of which is a
quickstart test problem (two operations on one-digit numbers). Work in progress: the base it made does not
yet help the quickstart (see below), so no such student is committed.

Modes (JSONL to stdout):
- `ROWS` (default 20,000): facts, one operation each, drawn as the steps of random expressions of one or
  two operations on 1 to 9 are (`forge synth arith`'s rules), so `3 + 4 = 7` comes often and `72 / 8 = 9`
  now and then; shuffled, 16 to a row.
- `--uniform PASSES`: every fact such steps can need (one operand 1 to 9, the other 0 to 81), each equally
  often.
- `--worked ROWS`: two worked expressions ("Compute 16 + 14 / (18 - 11).", one step per line, "So ... =
  18.") of one to three operations on 1 to 20 with no two-operation part on one-digit numbers alone, and 8
  facts, per row; `--asked ROWS`: the same, half the expressions followed by forge's request for steps;
  `--worked-only ROWS`: four such expressions and four facts per row.

What it gave (2026-12-03, a Qwen2 of 1.7M parameters: hidden 192, 4 layers, 4 heads, 2 KV heads,
intermediate 512, the sample teacher's byte-level tokenizer; `forge train-sft`, 4,096-token steps, on the
2-core development machine): `--uniform 40` (1.7M tokens, lr 2e-3): 2% of facts right, a plateau;
then `16000` (2.7M tokens, lr 1e-3): the arithmetic broke through near step 500, 84% of the answers of its
own last rows right (teacher-forced; recall, the facts repeat); then `--worked 12000` and `--asked 8000`
(2.7M and 2.3M tokens): it writes worked expressions but does not copy the problem's numbers into its steps;
`--worked-only 10000` stopped at step 800 of 1,265: 4 of 60 test problems right in plain text. Distilled
on the quickstart's 461 rows (3 epochs at lr 1e-3, or 10 at 2e-3), these bases reached 1.3-6.7% on its 150
held-out problems (the from-scratch student: 3.3%): the 111-token instruction and chat template between
the problem and the steps are new to them, and 461 rows do not teach the copy. Next: more steps on worked expressions (the copy, like the facts, may
break through late), or the chat layout in the pretraining text.

    python3 scripts/student_corpus.py 16000 > facts.jsonl
    python3 scripts/student_corpus.py --uniform 40 > facts-uniform.jsonl
"""

import json
import random
import sys

ROWS = 20000
FACTS_PER_ROW = 16


def apply(x, op, y):
    return {"+": x + y, "-": x - y, "*": x * y, "/": x // y if y else None}[op]


def allowed(x, y):
    ops = ["+", "*"]
    if x >= y:
        ops.append("-")
    if y > 1 and x % y == 0:
        ops.append("/")
    return ops


def steps(rng):
    """The steps of a random expression of one or two operations, as `forge synth arith` solves it."""
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    op = rng.choice(allowed(a, b))
    first = apply(a, op, b)
    out = [f"{a} {op} {b} = {first}"]
    if rng.random() < 0.5:
        return out
    c = rng.randint(1, 9)
    x, y = (first, c) if rng.random() < 0.5 else (c, first)
    op = rng.choice(allowed(x, y))
    out.append(f"{x} {op} {y} = {apply(x, op, y)}")
    return out


PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def tree(rng, ops, top):
    """A random expression of `ops` operations on 1..top, as `forge synth arith` builds and solves it:
    (text, value, steps, precedence, its numbers, whether a part of two operations has one-digit numbers
    only)."""
    if ops == 0:
        n = rng.randint(1, top)
        return str(n), n, [], 3, [n], False
    left = rng.randrange(ops)
    a, x, sa, pa, na, ba = tree(rng, left, top)
    b, y, sb, pb, nb, bb = tree(rng, ops - 1 - left, top)
    op = rng.choice(allowed(x, y))
    v = apply(x, op, y)
    text = (f"({a})" if pa < PREC[op] else a) + f" {op} " + (f"({b})" if pb <= PREC[op] else b)
    numbers = na + nb
    small_pair = ops == 2 and max(numbers) <= 9
    return text, v, sa + sb + [f"{x} {op} {y} = {v}"], PREC[op], numbers, ba or bb or small_pair


# forge's instruction for math problems (src/formats/prompt.rs), as a worked example in a textbook may
# follow a request to show the steps
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def worked(rng, asked=False):
    """A worked expression of one to three operations on 1..20 in which no part of two operations is on
    one-digit numbers alone (the quickstart's test problems are exactly those); with `asked`, the request
    for steps between the problem and its steps."""
    while True:
        text, value, steps, _, _, test_like = tree(rng, rng.choice([1, 2, 2, 3, 3]), 20)
        if not test_like and value <= 10_000:
            ask = f"\n{INSTRUCTION}\n" if asked else ""
            return f"Compute {text}.\n{ask}" + "\n".join(steps) + f"\nSo {text} = {value}."


def with_worked(rows, asked=False, worked_per_row=2):
    """Rows of two worked expressions and facts (the student's third stage; with `asked`, its fourth:
    half the expressions with the request for steps)."""
    rng = random.Random(rows + 1 + asked + 10 * (worked_per_row - 2))
    for _ in range(rows):
        facts = []
        while len(facts) < FACTS_PER_ROW // 2:
            facts.extend(steps(rng))
        parts = [worked(rng, asked and rng.random() < 0.5) for _ in range(worked_per_row)]
        parts += facts[: FACTS_PER_ROW // 2 if worked_per_row == 2 else 4]
        rng.shuffle(parts)
        sys.stdout.write(json.dumps({"text": "\n".join(parts)}) + "\n")


def every_fact():
    out = set()
    for small in range(1, 10):
        for big in range(0, 82):
            for x, y in ((small, big), (big, small)):
                for op in allowed(x, y):
                    out.add(f"{x} {op} {y} = {apply(x, op, y)}")
    return sorted(out)


def uniform(passes):
    rng = random.Random(1)
    table = every_fact()
    for _ in range(passes):
        rng.shuffle(table)
        for i in range(0, len(table), FACTS_PER_ROW):
            sys.stdout.write(json.dumps({"text": "\n".join(table[i : i + FACTS_PER_ROW])}) + "\n")


def main():
    if sys.argv[1:2] == ["--uniform"]:
        return uniform(int(sys.argv[2]))
    if sys.argv[1:2] == ["--worked"]:
        return with_worked(int(sys.argv[2]))
    if sys.argv[1:2] == ["--asked"]:
        return with_worked(int(sys.argv[2]), asked=True)
    if sys.argv[1:2] == ["--worked-only"]:
        return with_worked(int(sys.argv[2]), asked=True, worked_per_row=4)
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else ROWS
    rng = random.Random(rows)
    for _ in range(rows):
        facts = []
        while len(facts) < FACTS_PER_ROW:
            facts.extend(steps(rng))
        rng.shuffle(facts)
        sys.stdout.write(json.dumps({"text": "\n".join(facts[:FACTS_PER_ROW])}) + "\n")


if __name__ == "__main__":
    main()
