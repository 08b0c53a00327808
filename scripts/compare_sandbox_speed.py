#!/usr/bin/env python3
"""Tests per second on MBPP's reference solutions: `forge verify` (every test in its own bubblewrap sandbox)
against the runners Python pipelines use, in one run, alternating, same concurrency:

- fork+exec: SkyThought/APPS-style, `exec` of the program in a forked child of the runner (as multiprocessing's
  `fork` start method does) with a timeout: no isolation, no interpreter start-up per test;
- subprocess: `python3 -c PROGRAM` per test with a timeout: no isolation, a fresh interpreter per test.

It also times one trivial program run after run (concurrency 1) through the sandbox and through a plain
subprocess: the difference is the sandbox's own cost per run (bwrap's namespaces, mounts, seccomp).

    python3 scripts/compare_sandbox_speed.py --forge /var/tmp/forge-target/release/forge --rounds 2

Needs ../shared/data/mbpp and bubblewrap. Prints tests/s per runner and the ratios.
"""

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MBPP = ROOT.parent / "shared" / "data" / "mbpp" / "mbpp.jsonl"
PYTHON = "/usr/bin/python3"  # the interpreter forge's sandbox uses by default


def mbpp_rows():
    """One verify row per MBPP problem: the reference in a fence, the tests as `forge import` makes them."""
    rows = []
    for line in MBPP.read_text().splitlines():
        r = json.loads(line)
        setup = r.get("test_setup_code") or ""
        tests = [f"{setup}\n{a}\n" if setup.strip() else f"{a}\n" for a in r["test_list"]]
        code = r["code"].replace("\r\n", "\n")
        rows.append({"id": str(r["task_id"]), "domain": "code", "tests": tests,
                     "completion": f"```python\n{code}\n```\n", "code": code})
    return rows


def programs(rows):
    """The program each test runs in the Python runners: the reference, then the test."""
    return [f"{r['code']}\n\n{t}" for r in rows for t in r["tests"]]


def run_forge(forge, rows, concurrency, workdir):
    src = Path(workdir) / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = Path(workdir) / "verdicts.jsonl"
    start = time.perf_counter()
    subprocess.run([forge, "verify", "--input", src, "--output", out, "--sandbox-concurrency", str(concurrency),
                    "-q"], check=True)
    seconds = time.perf_counter() - start
    verdicts = [json.loads(l) for l in out.read_text().splitlines()]
    passed = sum(v["tests_passed"] * len(r["tests"]) for v, r in zip(verdicts, rows))
    for v in verdicts:
        if not v["correct"]:
            print(f"  MBPP {v['id']} failed in the sandbox: {v['failed']} {v['test_error']}")
    return seconds, round(passed)


def fork_exec(program, timeout=10.0):
    """`exec` in a forked child, killed at the timeout (multiprocessing's fork start method, done by hand:
    its Process fails when started from a worker thread)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            exec(program, {"__name__": "__sandbox__"})  # noqa: S102 - the unsafe peer being measured
        except BaseException:  # noqa: BLE001 - any exception fails the test
            code = 1
        os._exit(code)
    fd = os.pidfd_open(pid)
    try:
        if not select.select([fd], [], [], timeout)[0]:
            os.kill(pid, signal.SIGKILL)
        return os.waitpid(pid, 0)[1] == 0
    finally:
        os.close(fd)


def subprocess_run(program, timeout=10.0):
    try:
        return subprocess.run([PYTHON, "-c", program], capture_output=True, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def run_python(runner, progs, concurrency):
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        passed = sum(pool.map(runner, progs))
    return time.perf_counter() - start, passed


def overhead(forge, n, workdir):
    """Seconds per run of a trivial program: the sandbox (through forge) and a plain subprocess."""
    rows = [{"id": str(i), "domain": "code", "tests": ["assert f() == 1\n"],
             "completion": "```python\ndef f():\n    return 1\n```"} for i in range(n)]
    sandbox, _ = run_forge(forge, rows, 1, workdir)
    plain, _ = run_python(subprocess_run, ["def f():\n    return 1\n\nassert f() == 1\n"] * n, 1)
    return sandbox / n, plain / n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--forge", default="/var/tmp/forge-target/release/forge")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=os.cpu_count())
    ap.add_argument("--trivial", type=int, default=200, help="runs of the trivial program for the overhead")
    args = ap.parse_args()
    rows = mbpp_rows()
    progs = programs(rows)
    n = len(progs)
    print(f"MBPP: {len(rows)} problems, {n} tests; concurrency {args.concurrency}; {os.cpu_count()} CPUs")
    times = {"forge sandbox": [], "fork+exec": [], "subprocess": []}
    with tempfile.TemporaryDirectory() as workdir:
        for r in range(args.rounds):
            for name in times:
                if name == "forge sandbox":
                    seconds, passed = run_forge(args.forge, rows, args.concurrency, workdir)
                elif name == "fork+exec":
                    seconds, passed = run_python(fork_exec, progs, args.concurrency)
                else:
                    seconds, passed = run_python(subprocess_run, progs, args.concurrency)
                times[name].append(seconds)
                print(f"round {r + 1} {name:14s} {seconds:7.2f} s  {n / seconds:6.1f} tests/s  {passed}/{n} passed")
        sandbox, plain = overhead(args.forge, args.trivial, workdir)
    best = {k: min(v) for k, v in times.items()}
    print()
    for name, seconds in best.items():
        print(f"{name:14s} {n / seconds:6.1f} tests/s (best of {args.rounds})")
    print(f"sandbox vs fork+exec: {best['fork+exec'] / best['forge sandbox']:.2f}x the throughput")
    print(f"sandbox vs subprocess: {best['subprocess'] / best['forge sandbox']:.2f}x the throughput")
    print(f"one trivial run, one at a time: sandbox {sandbox * 1000:.1f} ms, plain subprocess {plain * 1000:.1f} ms: "
          f"the sandbox adds {(sandbox - plain) * 1000:.1f} ms per run ({sandbox / plain:.2f}x)")


if __name__ == "__main__":
    main()
