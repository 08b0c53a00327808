#!/usr/bin/env python3
"""Training speed and peak memory: `forge train-sft` against a plain PyTorch training loop, same model,
same batch, same sequence length, same optimizer, CPU.

The model is a Qwen2 of about 10M parameters that `forge init-model` writes (byte-level tokenizer);
PyTorch loads the same checkpoint with transformers. Each step is 8 rows of 512 tokens (4096 tokens, one
forward pass), full causal attention (one example per row), loss on every token after the first few,
AdamW (lr 1e-4, weight decay 0.01, decay groups as transformers' Trainer), gradient clipping at 1.0.
Tokens per second exclude the first step in both. Each side runs in its own process with the same thread
count; peak RSS is what GNU time reports for each process (`/usr/bin/time -f %M`).

    pip install torch transformers
    python3 scripts/compare_torch_train.py path/to/forge [--steps 12] [--threads 2]
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEQ, ROWS = 512, 8


def torch_side(model_dir, steps, threads):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4)
    text = (b"The quick brown fox jumps over the lazy dog. " * 20)[:SEQ]
    ids = torch.tensor([list(text)] * ROWS)
    labels = ids.clone()
    labels[:, :4] = -100
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        out = model(input_ids=ids, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    tokens = ROWS * SEQ * (steps - 1)
    print(json.dumps({"tokens_per_second": tokens / sum(times[1:]), "loss": out.loss.item()}))


def run_child(args, env=None):
    """Run `args`; returns its stdout and peak RSS in MiB."""
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *map(str, args)], check=True, capture_output=True, text=True,
                          env=env)
    return proc.stdout, int(proc.stderr.strip().splitlines()[-1]) / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("forge")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--torch-only", action="store_true")
    ap.add_argument("--model-dir")
    args = ap.parse_args()
    if args.torch_only:
        torch_side(args.model_dir, args.steps, args.threads)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        init = tmp / "init"
        subprocess.run([args.forge, "init-model", "--family", "qwen2", "--hidden", "384", "--intermediate", "1024",
                        "--layers", "6", "--heads", "6", "--kv-heads", "2", "--seed", "1", "-o", init], check=True)
        text = ("The quick brown fox jumps over the lazy dog. " * 20)
        with open(tmp / "data.jsonl", "w") as f:
            for i in range(ROWS * args.steps):
                f.write(json.dumps({"prompt": "x", "completion": text}) + "\n")
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
        out = tmp / "out"
        _, forge_peak = run_child([args.forge, "train-sft", "--model", init, "--data", tmp / "data.jsonl", "-o", out,
                                   "--epochs", "1", "--lr", "1e-4", "--batch-tokens", str(ROWS * SEQ),
                                   "--micro-batch-tokens", str(ROWS * SEQ), "--max-length", str(SEQ), "--eval-share",
                                   "0", "--save-every", "0", "--warmup-ratio", "0", "-q"], env=env)
        rows = list(csv.DictReader(open(out / "metrics.csv")))
        t = lambda r: int(r["tokens"]) / float(r["tokens_per_second"])
        forge_tps = (int(rows[-1]["tokens"]) - int(rows[0]["tokens"])) / (t(rows[-1]) - t(rows[0]))
        stdout, torch_peak = run_child([sys.executable, __file__, args.forge, "--torch-only", "--model-dir", init,
                                        "--steps", args.steps, "--threads", args.threads])
        torch_tps = json.loads(stdout.strip().splitlines()[-1])["tokens_per_second"]
        print(f"model: qwen2 hidden 384, 6 layers, intermediate 1024, vocab 259; {ROWS} x {SEQ} tokens per step, "
              f"{args.steps} steps, {args.threads} threads")
        print(f"forge   {forge_tps:8.0f} tokens/s   peak RSS {forge_peak:7.0f} MiB")
        print(f"PyTorch {torch_tps:8.0f} tokens/s   peak RSS {torch_peak:7.0f} MiB")
        print(f"forge / PyTorch: speed {forge_tps / torch_tps:.2f}, peak memory {forge_peak / torch_peak:.2f}")


if __name__ == "__main__":
    main()
