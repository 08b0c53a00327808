#!/usr/bin/env python3
"""Writes tests/fixtures/code/*.jsonl: a few problems in the layouts of APPS/TACO, CodeContests and
LiveCodeBench (code_generation_lite), written here (no upstream text), for `forge import`'s presets and the
code verifier's stdin/stdout and call-based tests. LiveCodeBench's private cases are packed as its release
packs them: base64 of zlib of a pickled JSON string.

    python3 scripts/code_import_fixtures.py
"""

import base64
import json
import pickle
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "code"

SUM = "a, b = map(int, input().split())\nprint(a + b)\n"
MAX = "input()\nprint(max(map(int, input().split())))\n"


def apps():
    return [
        {"problem_id": 4001, "question": "Read two integers and print their sum.", "starter_code": "",
         "input_output": json.dumps({"inputs": ["1 2\n", "-5 5\n"], "outputs": ["3\n", "0\n"]}),
         "solutions": json.dumps([SUM]), "difficulty": "introductory"},
        {"problem_id": 4002, "question": "Return the number of vowels in s.",
         "starter_code": "class Solution:\n    def count(self, s):\n",
         "input_output": json.dumps({"fn_name": "count", "inputs": [["hello"], ["xyz"]], "outputs": [[2], [0]]}),
         "solutions": json.dumps(["class Solution:\n    def count(self, s):\n        return sum(c in 'aeiou' for c in s)\n"]),
         "difficulty": "interview"},
    ]


def codecontests():
    return [
        {"name": "1000_A. Largest", "description": "Given n and n integers, print the largest.",
         "public_tests": {"input": ["3\n1 5 2\n"], "output": ["5\n"]},
         "private_tests": {"input": ["1\n-7\n", "4\n0 0 9 9\n"], "output": ["-7\n", "9\n"]},
         "generated_tests": {"input": ["2\n1 1\n"], "output": ["1\n"]},
         "solutions": {"language": [2, 3], "solution": ["int main() {}", MAX]}, "difficulty": 7},
    ]


def pack(cases):
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


def livecodebench():
    return [
        {"question_id": "abc300_a", "question_title": "Sum", "question_content": "Print A+B.", "platform": "atcoder",
         "starter_code": "", "difficulty": "easy",
         "public_test_cases": json.dumps([{"input": "2 3\n", "output": "5\n", "testtype": "stdin"}]),
         "private_test_cases": pack([{"input": "10 -4\n", "output": "6\n", "testtype": "stdin"}]),
         "metadata": "{}"},
        {"question_id": "lc-2000", "question_title": "Twice", "question_content": "Return x doubled.",
         "platform": "leetcode", "starter_code": "class Solution:\n    def twice(self, x: int) -> int:\n        ",
         "difficulty": "easy",
         "public_test_cases": json.dumps([{"input": "4", "output": "8", "testtype": "functional"}]),
         "private_test_cases": pack([{"input": "-1", "output": "-2", "testtype": "functional"}]),
         "metadata": json.dumps({"func_name": "twice"})},
    ]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in [("apps", apps()), ("codecontests", codecontests()), ("livecodebench", livecodebench())]:
        (OUT / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
