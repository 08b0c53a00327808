"""`forge serve` against vLLM's CPU build serving the same checkpoint to the same client: completion tokens per
second of `forge generate --teacher openai:URL` (forge's HTTP teacher, so the client side is identical), both
servers up, rounds alternating between them. Prints the ratio forge serve / vLLM.

    python3 scripts/compare_serve_vllm.py --forge target/release/forge \
        --vllm-python "$(scripts/servers/install-vllm.sh)" [--checkpoint samples/tiny-teacher] [--rounds 3]

The sample teacher (a 3M-parameter byte-level Qwen2) by default: on this CPU the servers' own overhead
(scheduling, detokenising, HTTP) weighs as much as the model, which is what this compares. Both servers get
the same batch limit (64 sequences) and f32 weights; the client asks for 64 problems x 4 samples,
temperature 1.0, at most 128 new tokens, 64 requests in flight, no request journal reuse.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request


def wait_ready(url, timeout, log):
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "2 + 2"}], "max_tokens": 2})
    start = time.time()
    while time.time() - start < timeout:
        try:
            req = urllib.request.Request(
                url + "/chat/completions", body.encode(), {"Content-Type": "application/json"}
            )
            urllib.request.urlopen(req, timeout=30).read()
            return time.time() - start
        except Exception:
            time.sleep(1)
    sys.exit(f"server did not start; see {log}")


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_forge(args, work):
    log = open(os.path.join(work, "forge-serve.log"), "w")
    proc = subprocess.Popen(
        [args.forge, "serve", "--model", args.checkpoint, "--served-model-name", "tiny", "--port", "0",
         "--max-batch", "64", "--max-tokens", "128"],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )
    url = proc.stdout.readline().strip()
    wait_ready(url, 60, log.name)
    return proc, url


def start_vllm(args, work):
    ckpt = os.path.join(work, "vllm-checkpoint")
    if not os.path.exists(ckpt):
        os.makedirs(ckpt)
        for name in os.listdir(args.checkpoint):
            if name != "config.json":
                shutil.copy(os.path.join(args.checkpoint, name), ckpt)
        config = json.load(open(os.path.join(args.checkpoint, "config.json")))
        config["architectures"] = ["Qwen2ForCausalLM"]
        json.dump(config, open(os.path.join(ckpt, "config.json"), "w"))
    port = free_port()
    log = open(os.path.join(work, "vllm.log"), "w")
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind",
               VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1", VLLM_CACHE_ROOT=os.path.join(work, "vllm-cache"))
    proc = subprocess.Popen(
        [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", ckpt,
         "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
         "--max-model-len", "2048", "--dtype", "float32", "--max-num-seqs", "64",
         # vllm-cpu 0.32.0 dies ("CPU Generator does not use offset") when a seeded request's prefill is
         # split over steps: a budget above every step's prompt tokens keeps prefills whole
         "--max-num-batched-tokens", "16384"],
        stdout=subprocess.DEVNULL, stderr=log, env=env,
    )
    url = f"http://127.0.0.1:{port}/v1"
    wait_ready(url, 600, log.name)
    return proc, url


def measure(args, work, url, name, round_):
    out = os.path.join(work, f"traces-{name}-{round_}")
    cmd = [args.forge, "generate", "--teacher", f"openai:{url}", "--model", "tiny", "--problems",
           os.path.join(work, "problems"), "-n", "4", "--temperature", "1.0", "--max-tokens", "128",
           "--seed", str(round_), "--concurrency", "64", "--journal", os.path.join(work, f"journal-{name}-{round_}"),
           "-o", out]
    start = time.time()
    run = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.time() - start
    if run.returncode != 0:
        sys.exit(run.stderr)
    tokens = int(re.search(r"generate: (\d+) completion tokens", run.stderr).group(1))
    return tokens, seconds


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--forge", required=True)
    p.add_argument("--vllm-python", required=True)
    p.add_argument("--checkpoint", default=os.path.join(os.path.dirname(__file__), "..", "samples", "tiny-teacher"))
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    args.checkpoint = os.path.abspath(args.checkpoint)
    work = tempfile.mkdtemp(prefix="serve-vs-vllm-")
    subprocess.run([args.forge, "synth", "arith", "--n", "64", "--seed", "7", "-o", os.path.join(work, "problems"),
                    "-q"], check=True)
    rates = {"forge": [], "vllm": []}
    # both servers up at once (idle, neither uses the CPU), the rounds alternating between them
    servers = {}
    try:
        for name, start in (("forge", start_forge), ("vllm", start_vllm)):
            servers[name] = start(args, work)
        for r in range(args.rounds):
            for name, (_, url) in servers.items():
                tokens, seconds = measure(args, work, url, name, r)
                rates[name].append(tokens / seconds)
                print(f"round {r} {name}: {tokens} tokens in {seconds:.2f} s = {tokens / seconds:.0f} tokens/s",
                      flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
    best = {k: max(v) for k, v in rates.items()}
    print(f"forge serve / vLLM (best round each): {best['forge'] / best['vllm']:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
