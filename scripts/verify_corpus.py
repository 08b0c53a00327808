"""A differential corpus for answer verifiers: final answers phrased the way reasoning models write them.

For gold answers from ../shared/data/math (the last box of each test solution) and ../shared/data/math500, plus
a few synthetic golds for shapes MATH rarely has (inequalities, labelled answers, percentages), it writes
completions that end the way Numina / OpenThoughts / s1-style outputs end: a box, a "final answer" line, an
inline `$…$` span in a sentence, display math, several answers, labelled answers, relations, matrices in
other environments, `\\text{}`, answers split over lines. Each phrasing comes right (the gold, rewritten into
an equivalent form) and deliberately wrong (a perturbed value, an earlier answer that was abandoned, a
near-miss that a lax verifier accepts).

Every row: {"category", "answer" (gold), "completion", "expected" (true/false)}. The categories are named
after the rule they exercise; `scripts/compare_math_verify.py --corpus FILE` runs forge and Math-Verify on it
and lists the disagreements by category.

Usage: python scripts/verify_corpus.py [--out FILE] [--golds N] [--seed S]
"""

import argparse
import json
import pathlib
import random
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"

PREAMBLES = [
    "Let me work through this carefully. First, I set up the equation from the problem statement, "
    "then simplify step by step, checking 2 cases along the way.",
    "We start by noting the constraints: there are 3 conditions and 12 sub-cases to rule out. "
    "After simplifying, everything reduces to one computation.",
    "<think>\nOkay, so I need to find the value asked for. Let me try 4 first... that fails. "
    "Let me recompute with 7 instead.\n</think>\n\nWe compute the quantity directly.",
    "Step 1: Rewrite the expression.\nStep 2: Substitute the known values (for example 10 and 20).\n"
    "Step 3: Simplify.",
]


def last_boxed(text):
    i = text.rfind("\\boxed")
    if i < 0:
        return None
    j = text.find("{", i)
    if j < 0:
        return None
    depth = 0
    for k in range(j, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1 : k].strip()
    return None


def golds(n, rng):
    seen, out = set(), []
    for line in open(DATA / "math500/test.jsonl"):
        g = json.loads(line)["answer"].strip()
        if g and g not in seen:
            seen.add(g)
            out.append(g)
    rest = []
    for line in open(DATA / "math/test.jsonl"):
        g = last_boxed(json.loads(line)["solution"])
        if g and g not in seen and "\n" not in g and len(g) < 80:
            seen.add(g)
            rest.append(g)
    rng.shuffle(rest)
    return out + rest[: max(0, n - len(out))]


def kind(g):
    """The shape of a gold answer, as the phrasings need it."""
    if "matrix" in g or "\\begin{array}" in g:
        return "matrix"
    if re.fullmatch(r"-?\d+", g):
        return "int"
    if re.fullmatch(r"-?\d*\.\d+", g) or re.fullmatch(r"-?\\[dt]?frac\{\d+\}\{\d+\}", g):
        return "number"
    if g.startswith("\\text{") and g.endswith("}") and not re.search(r"\d", g):
        return "text"
    if re.fullmatch(r"\\left\(.*\\right\)|\(.*\)", g) and "," in g and not re.search(r"[\[\]]", g):
        return "tuple"
    if re.search(r"^[\[(].*,.*[\])]$", g) or "\\cup" in g:
        return "interval"
    if re.search(r"\d(,|\{,\})(\\!)? ?\d{3}", g):
        return "number" if re.fullmatch(r"[\d,\\!. ]+", g) else "expr"
    if re.search(r"(?<!\\),", g) and "\\{" not in g and not re.search(r"[(){}\[\]]", g.replace("\\frac", "").replace("{", "").replace("}", "")):
        return "list"
    return "expr"


def perturb(g, rng):
    """A gold with one number changed: a different value for all but degenerate answers."""
    numbers = list(re.finditer(r"(?<![_\\a-zA-Z^])\d+", g))
    if not numbers:
        return None
    m = rng.choice(numbers)
    value = int(m.group())
    new = value + rng.choice([1, 2, 3]) if value < 2 or rng.random() < 0.7 else value - 1
    return g[: m.start()] + str(new) + g[m.end() :]


def list_items(g):
    depth, items, start = 0, [], 0
    for i, c in enumerate(g):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(g[start:i].strip())
            start = i + 1
    items.append(g[start:].strip())
    return [x for x in items if x]


def tuple_items(g):
    inner = re.sub(r"^\\left\(|\\right\)$", "", g)
    inner = inner[1:-1] if inner.startswith("(") and inner.endswith(")") else inner
    return list_items(inner)


def to_bmatrix(g, env):
    body = re.search(r"\\begin\{(\w+)\}(?:\{[^}]*\})?(.*)\\end\{\1\}", g, re.S)
    if not body:
        return None
    inner = body.group(2)
    cols = max(len(r.split("&")) for r in inner.split("\\\\"))
    if env == "array":
        return "\\left[\\begin{array}{" + "c" * cols + "}" + inner + "\\end{array}\\right]"
    return "\\begin{" + env + "}" + inner + "\\end{" + env + "}"


def frame(rng, body):
    return rng.choice(PREAMBLES) + "\n\n" + body


def phrasings(g, k, rng):
    """(category, completion, expected) for one gold."""
    wrong = perturb(g, rng)
    out = []

    def both(category, template):
        # `{a}` is the answer, `{{`/`}}` literal braces (labels are spliced in with single braces).
        fill = lambda a: template.replace("{a}", "\0").replace("{{", "{").replace("}}", "}").replace("\0", a)
        out.append((category, frame(rng, fill(g)), True))
        if wrong is not None:
            out.append((category, frame(rng, fill(wrong)), False))

    both("boxed", rng.choice(["Therefore, the answer is $\\boxed{{{a}}}$.", "So the final result is \\(\\boxed{{{a}}}\\)."]))
    both(
        "final_answer",
        rng.choice(
            [
                "Final Answer: The final answer is ${a}$. I hope it is correct.",
                "**Final Answer**\n\\[\n\\boxed{{{a}}}\n\\]",
                "Final answer: ${a}$",
                "The final answer is $ {a} $.",
            ]
        ),
    )
    both(
        "inline_last",
        rng.choice(
            [
                "Therefore ${a}$ is the answer.",
                "Putting it together, we find that ${a}$.",
                "Thus the value we want is \\({a}\\).",
                "So we get ${a}$, as required.",
            ]
        ),
    )
    both("display", rng.choice(["Hence\n\\[\n{a}\n\\]", "The result:\n$$\n{a}\n$$", "So\n\\[ {a} \\]"]))
    if k in ("int", "number", "expr") and wrong is not None:
        # An earlier box that the model abandoned: the last answer counts.
        out.append(("abandoned", frame(rng, f"At first I got $\\boxed{{{wrong}}}$, but that was an arithmetic slip. Redoing it: $\\boxed{{{g}}}$."), True))
        out.append(("abandoned", frame(rng, f"At first I got $\\boxed{{{g}}}$. Wait, I mis-added. Correcting: the answer is $\\boxed{{{wrong}}}$."), False))
    if k in ("int", "number", "expr") and "=" not in g:
        label = rng.choice(["x", "n", "k", "a_3", "f(2)", "AB", "\\frac{NO}{BO}"])
        both("labelled", rng.choice(["Therefore $" + label + " = {a}$.", "So the answer is $" + label + " = {a}$.", "\\[\n\\boxed{{" + label + " = {a}}}\n\\]"]))
        both("prose_number", rng.choice(["Final Answer: The largest value is {a}.", "The answer is {a}.", "Answer: {a}"]) if k == "int" else "The answer is ${a}$.")
    if k == "int":
        out.append(("split_lines", frame(rng, f"Answer $\n{g}\n$"), True))
        out.append(("split_lines", frame(rng, f"The answer is\n\\[\n{g}\n\\]\nwhich completes the proof."), True))
        out.append(("no_false_accept", frame(rng, f"The code printed on the box is AZYUK{g}A."), False))
        out.append(("percent", frame(rng, f"The rate is $\\boxed{{{g}\\%}}$."), True))
        if g != "0":
            out.append(("percent", frame(rng, f"So the answer is $\\boxed{{{g} \\frac{{1}}{{2}}\\%}}$."), False))
    if k == "tuple":
        items = tuple_items(g)
        both("labelled", "So $(" + ",".join("pqrstuvw"[: len(items)]) + ") = {a}$.")
        if len(items) == 2 and items[0] != items[1]:
            out.append(("tuple_order", frame(rng, f"The point is $\\boxed{{({items[1]}, {items[0]})}}$."), False))
    if k == "list":
        items = list_items(g)
        rev = list(reversed(items))
        out.append(("several", frame(rng, ", ".join(f"$\\boxed{{{x}}}$" for x in rev[:-1]) + f" and $\\boxed{{{rev[-1]}}}$."), True))
        out.append(("several", frame(rng, "\\[\n" + " \\quad \\text{and} \\quad ".join(f"\\boxed{{{x}}}" for x in items) + "\n\\]"), True))
        out.append(("several", frame(rng, "The solutions are $" + "$, $".join(rev) + "$."), True))
        out.append(("several", frame(rng, "So the answer is $\\{" + ", ".join(rev) + "\\}$."), True))
        out.append(("several", frame(rng, "The solutions are $" + ", ".join(items[:-1]) + "$."), len(items) == 1))
        out.append(("no_false_accept", frame(rng, "The terms are $" + ", ".join(items) + ", \\ldots$"), False))
        labels = [f"x_{i + 1}" for i in range(len(items))]
        out.append(("labelled", frame(rng, "$" + ", ".join(f"{l} = {x}" for l, x in zip(labels, items)) + "$"), True))
    if k == "matrix":
        for env in ("bmatrix", "array"):
            m = to_bmatrix(g, env)
            if m:
                out.append(("matrix", frame(rng, f"The matrix is\n\\[\n{m}\n\\]"), True))
                w = to_bmatrix(wrong, env) if wrong else None
                if w:
                    out.append(("matrix", frame(rng, f"The matrix is\n\\[\n{w}\n\\]"), False))
    if k == "text":
        word = g[len("\\text{") : -1]
        out.append(("text", frame(rng, f"The answer is {word}."), True))
        out.append(("text", frame(rng, f"Final Answer: $\\text{{{word}}}$"), True))
    return out


def synthetic(rng):
    """Golds with shapes MATH has few of: inequalities, ratios, labelled pairs, percentages."""
    rows = []
    for _ in range(60):
        a, b = sorted(rng.sample(range(-20, 30), 2))
        v = rng.choice("xyzt")
        # relation gold, right and wrong predictions
        rows += [
            ("relation", f"{v} \\geq {a}", f"Therefore ${v} \\geq {a}$ is the solution.", True),
            ("relation", f"{v} \\geq {a}", f"Therefore ${v} \\ge {a}$.", True),
            ("relation", f"{v} \\geq {a}", f"So the solution set is $[{a}, \\infty)$.", True),
            ("relation", f"{v} \\geq {a}", f"Therefore ${v} > {a}$ is the solution.", False),
            ("relation", f"{v} \\geq {a}", f"Therefore ${v} \\leq {a}$ is the solution.", False),
            ("relation", f"{v} < {b}", f"We find that ${v} \\lt {b}$.", True),
            ("relation", f"{v} < {b}", f"We find that ${b} > {v}$.", True),
            ("relation", f"{v} < {b}", f"We find that ${v} < {b + 1}$.", False),
            ("relation", f"{a} \\le {v} \\le {b}", f"Hence ${a} \\leq {v} \\leq {b}$.", True),
            ("relation", f"{a} \\le {v} \\le {b}", f"Hence $ {v} \\in [{a}, {b}]$.", True),
            ("relation", f"{a} \\le {v} \\le {b}", f"Hence ${a} < {v} \\leq {b}$.", False),
            ("relation", f"{v} \\neq {a}", f"so ${v} \\ne {a}$.", True),
            ("relation", f"{v} \\neq {a}", f"so ${v} != {a}$.", True),
            ("relation", f"{v} \\neq {a}", f"so ${v} = {a}$.", False),
            ("relation", f"11{v}+{abs(a) + 1}", f"We get $7 = 11{v}+{abs(a) + 1}$.", False),
        ]
        p, q = rng.sample(range(2, 40), 2)
        rows += [
            ("labelled", f"({p},{q})", f"Therefore $(p,q)=({p},{q})$.", True),
            ("labelled", f"({p},{q})", f"Therefore $(p,q)=({q},{p})$.", False),
            ("labelled", f"{p}, {q}", f"We get $AB={p}, CD={q}$.", True),
            ("labelled", f"a_3 = {p}, a_{{37}} = {q}", f"so $a_{{37}} = {q}, a_3 = {p}$.", True),
            ("labelled", f"a_3 = {p}, a_{{37}} = {q}", f"so $a_{{37}} = {p}, a_3 = {q}$.", False),
            ("labelled", f"\\frac{{1}}{{\\sqrt{{{p}}}}}", f"Thus $\\frac{{NO}}{{BO}}=\\frac{{1}}{{\\sqrt{{{p}}}}}$.", True),
            ("ratio", f"{p}:{q}", f"The ratio is ${p}:{q}$.", True),
            ("ratio", f"{p}:{q}", f"The ratio is ${q}:{p}$.", p == q),
            ("several", f"({p},{q}),({q},{p})", f"The pairs are $\\{{({q},{p}),({p},{q})\\}}$.", True),
            ("several", f"({p},{q}),({q},{p})", f"The pairs are $({p},{q})$.", False),
            ("several", f"\\{{{p}, {q}, {p + q}\\}}", f"$\\boxed{{{q}}}, \\boxed{{{p}}}, \\boxed{{{p + q}}}$", True),
            ("percent", f"{p} {q % 7 + 1}/{q % 7 + 2}\\%", f"The answer is $\\boxed{{{p} {q % 7 + 1}/{q % 7 + 2}\\%}}$.", True),
            ("percent", f"{p} {q % 7 + 1}/{q % 7 + 2}\\%", f"The answer is $\\boxed{{{p * (q % 7 + 2) + q % 7 + 1}/{q % 7 + 2}}}$.", False),
            ("percent", f"{p}\\%", f"That is {p} percent.", True),
            ("no_false_accept", f"{p}", f"The answer is $\\boxed{{{p} {q}/0}}$.", False),
            ("no_false_accept", "1", "The set is $\\boxed{-[0,1)}$.", False),
        ]
    return [(c, g, frame(rng, t), e) for c, g, t, e in rows]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/verify-corpus.jsonl")
    ap.add_argument("--golds", type=int, default=1500, help="gold answers to phrase (MATH-500's 500 first)")
    ap.add_argument("--seed", type=int, default=16)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    rows = []
    for g in golds(args.golds, rng):
        for category, completion, expected in phrasings(g, kind(g), rng):
            rows.append({"category": category, "answer": g, "completion": completion, "expected": expected})
    for category, g, completion, expected in synthetic(rng):
        rows.append({"category": category, "answer": g, "completion": completion, "expected": expected})
    with open(args.out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    by = {}
    for r in rows:
        by.setdefault(r["category"], [0, 0])[r["expected"]] += 1
    print(f"{len(rows)} rows -> {args.out}")
    for c, (wrong, right) in sorted(by.items()):
        print(f"  {c:16} {right:5} right {wrong:5} wrong")


if __name__ == "__main__":
    main()
