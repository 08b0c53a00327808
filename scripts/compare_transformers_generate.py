#!/usr/bin/env python3
"""Generation speed: `forge generate` vs transformers' `generate`, same checkpoint, prompts and settings, CPU.

Makes (with the forge binary) a random Qwen2 checkpoint of about 10M parameters and 32 `arith` problems, then
decodes greedily 64 new tokens per problem at batch sizes 1, 8 and 32 with both: forge through its CLI (wall
clock of the command, loading included), transformers with `model.generate` on left-padded batches of the same
chat-rendered prompts (wall clock of tokenisation plus generation, loading excluded). Both use the same number
of CPU threads. Prints completion tokens/s of each, the ratio, and whether the greedy texts are identical. `--repeat N` runs each tool N times per batch
size, alternating, and keeps the fastest of each; `--max-tokens 256` weighs decoding over the prompts' prefill.

    pip install torch transformers pyarrow
    cargo build --release
    python3 scripts/compare_transformers_generate.py --forge /var/tmp/forge-target/release/forge --threads 2
"""

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

INSTRUCTION = "{prompt}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--forge", required=True)
    ap.add_argument("--work", default="/tmp/forge-gen-bench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,8,32", help="batch sizes, comma-separated")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each tool per batch size, alternating; the fastest of each counts (this "
                         "machine's timings vary by 10-20%% from minute to minute)")
    args = ap.parse_args()
    run, ck, problems, tok, model, texts = setup(args.forge, Path(args.work), args.threads, args.problems)
    results = {}
    for batch in map(int, args.batches.split(",")):
        f_s, t_s = float("inf"), float("inf")
        for _ in range(args.repeat):
            out = Path(args.work) / f"traces-{batch}"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            run("generate", "--teacher", f"local:{ck}", "--problems", problems, "-n", 1, "--temperature", 0,
                "--max-tokens", args.max_tokens, "--batch-size", batch, "-o", out, "-q")
            f_s = min(f_s, time.perf_counter() - start)
            start = time.perf_counter()
            t_texts, t_tokens = transformers_generate(tok, model, texts, batch, args.max_tokens)
            t_s = min(t_s, time.perf_counter() - start)
        traces = pq.read_table(sorted(out.glob("part-*.parquet"))[0]).to_pylist()
        f_tokens = sum(t["completion_tokens"] for t in traces)
        same = sum(a == b["completion"] for a, b in zip(t_texts, traces))
        results[batch] = dict(forge_s=f_s, forge_tok_s=f_tokens / f_s, hf_s=t_s, hf_tok_s=t_tokens / t_s,
                              ratio=(f_tokens / f_s) / (t_tokens / t_s), identical=f"{same}/{len(traces)}")
        print(f"batch {batch:2}: forge {f_tokens} tokens in {f_s:.2f} s ({f_tokens / f_s:,.0f} tok/s); "
              f"transformers {t_tokens} in {t_s:.2f} s ({t_tokens / t_s:,.0f} tok/s); ratio {results[batch]['ratio']:.2f}; "
              f"identical greedy texts {same}/{len(traces)}", flush=True)
    print(json.dumps({"threads": args.threads, "torch": torch.__version__, "max_tokens": args.max_tokens,
                      "repeat": args.repeat, "results": results}))


def setup(forge, work, threads, problems, checkpoint=None, synth=()):
    """The benchmark's teacher (a random 9.9M-parameter Qwen2 made by `forge init-model`, or `checkpoint`) and
    `problems` `forge synth arith` problems (`synth`: more flags), loaded for transformers on `threads`
    threads: (run forge, checkpoint, problems directory, tokenizer, model, chat-rendered prompts)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ck, out = Path(checkpoint).resolve() if checkpoint else work / "ckpt", work / "problems"
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads)}
    run = lambda *a: subprocess.run([forge, *map(str, a)], check=True, env=env)
    if not checkpoint:
        run("init-model", "--family", "qwen2", "--hidden", 256, "--layers", 10, "--heads", 8, "--kv-heads", 4,
            "--intermediate", 1024, "--seed", 1, "-o", ck, "-q")
    run("synth", "arith", "--n", problems, *synth, "--seed", 1, "-o", out, "-q")
    rows = pq.read_table(out / "part-00000.parquet").to_pylist()
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(ck)
    tok.padding_side = "left"
    tok.pad_token = "<|endoftext|>"
    model = AutoModelForCausalLM.from_pretrained(ck, dtype=torch.float32).eval()
    texts = [tok.apply_chat_template([{"role": "user", "content": INSTRUCTION.format(prompt=r["prompt"])}],
                                     tokenize=False, add_generation_prompt=True) for r in rows]
    return run, ck, out, tok, model, texts


def transformers_generate(tok, model, texts, batch, max_tokens):
    """Greedy continuations of `texts` in left-padded batches: their texts and token count."""
    t_texts, t_tokens = [], 0
    for i in range(0, len(texts), batch):
        enc = tok(texts[i:i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False,
                                 eos_token_id=[258, 256], pad_token_id=256)
        for row in gen[:, enc["input_ids"].shape[1]:]:
            ids = row.tolist()
            if 258 in ids or 256 in ids:
                ids = ids[:min(ids.index(e) for e in (258, 256) if e in ids)]
            t_tokens += len(ids)
            t_texts.append(tok.decode(ids))
    return t_texts, t_tokens


if __name__ == "__main__":
    main()
