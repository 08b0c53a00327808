"""Client overhead of forge's HTTP teacher against the `openai` package's AsyncOpenAI: the same number of
chat requests at the same concurrency, against a server that answers at once
(`scripts/servers/instant_server.py`), each client pinned to CPU 0 and the server to CPU 1. Rounds alternate
the two clients; prints each one's requests/s per round, the medians and their ratio.

forge is timed as a user runs it (`forge generate`: reading the problems, the fsynced request journal,
writing Parquet, process start); AsyncOpenAI from its first request to its last answer, doing nothing with
them. Needs `openai` (scripts/requirements.txt) and `taskset`.

    python scripts/compare_http_client.py --forge /var/tmp/forge-target/release/forge --requests 20000
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CLIENT = r"""
import asyncio, json, sys, time
from openai import AsyncOpenAI

url, concurrency, prompts = sys.argv[1], int(sys.argv[2]), json.load(open(sys.argv[3]))

async def main():
    client = AsyncOpenAI(base_url=url, api_key="none", max_retries=8)
    gate = asyncio.Semaphore(concurrency)

    async def one(i, prompt):
        async with gate:
            r = await client.chat.completions.create(
                model="instant", messages=[{"role": "user", "content": prompt}], temperature=0.7,
                top_p=1.0, max_tokens=16, seed=i, logprobs=True)
            return r.choices[0].message.content

    start = time.perf_counter()
    answers = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    assert len(answers) == len(prompts)
    print(time.perf_counter() - start)

asyncio.run(main())
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--forge", required=True)
    ap.add_argument("--python", default=sys.executable, help="a Python with `openai` installed")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="forge-http-"))
    problems = tmp / "problems"
    subprocess.run([args.forge, "synth", "arith", "--n", str(args.requests), "--seed", "1", "-o", problems, "-q"],
                   check=True)
    import pyarrow.parquet as pq
    prompts = [r["prompt"] for p in sorted(problems.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    (tmp / "prompts.json").write_text(json.dumps(prompts))

    port = free_port()
    server = subprocess.Popen(["taskset", "-c", "1", sys.executable, HERE / "servers/instant_server.py", str(port)],
                              stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()
    rates = {"forge": [], "AsyncOpenAI": []}
    try:
        for round in range(args.rounds):
            out = tmp / f"traces-{round}"
            start = time.perf_counter()
            subprocess.run(["taskset", "-c", "0", args.forge, "generate", "--teacher", f"openai:{url}",
                            "--problems", problems, "--temperature", "0.7", "--max-tokens", "16",
                            "--concurrency", str(args.concurrency), "--journal", tmp / f"journal-{round}",
                            "-o", out, "-q"], check=True)
            rates["forge"].append(args.requests / (time.perf_counter() - start))
            seconds = subprocess.run(["taskset", "-c", "0", args.python, "-c", CLIENT, url, str(args.concurrency),
                                      tmp / "prompts.json"], check=True, capture_output=True, text=True).stdout
            rates["AsyncOpenAI"].append(args.requests / float(seconds))
            print(f"round {round}: forge {rates['forge'][-1]:.0f} req/s, "
                  f"AsyncOpenAI {rates['AsyncOpenAI'][-1]:.0f} req/s", flush=True)
    finally:
        server.kill()
    f, o = statistics.median(rates["forge"]), statistics.median(rates["AsyncOpenAI"])
    print(f"{args.requests} requests at concurrency {args.concurrency}, one core each: forge {f:.0f} req/s, "
          f"AsyncOpenAI {o:.0f} req/s, ratio {f / o:.2f}x")
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
