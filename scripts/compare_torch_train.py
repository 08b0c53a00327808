#!/usr/bin/env python3
"""Training speed, peak memory and losses: `forge train-sft` against a plain PyTorch training loop, same
model, same tokens, same optimizer, CPU, side by side.

Two sizes (`--size`): `small`, a Qwen2 of 9.5M parameters (hidden 384, 6 layers) on 8 rows of 512 tokens
per step, and `large`, one of 38M (hidden 768, 6 layers, intermediate 2048) on 2 rows of 2,048 tokens, so
the figures are not a small-model artefact. `forge init-model` writes the checkpoint (byte-level
tokenizer); PyTorch loads it with transformers (`attn_implementation="sdpa"`, its default: causal flash
attention on the CPU). Each row is the same plain text, every token trained (forge's `text` rows; HF's
`labels = input_ids`), one forward pass per step, AdamW (lr 1e-4, weight decay 0.01 off norms and biases,
constant schedule), clipping at 1.0. Tokens per second exclude the first step on both sides; peak RSS is
GNU time's for each process. Rounds alternate which side runs first. `--checkpoint` compares activation
checkpointing on both sides: forge's `--checkpoint-layers` against transformers' `gradient_checkpointing_enable()`
(each layer recomputed in the backward pass).

The losses of the first steps must agree (same weights, same tokens, same optimizer): the script prints
them and fails when one differs by more than 1e-3 relative.

    pip install torch transformers
    python3 scripts/compare_torch_train.py path/to/forge [--size small|large|both] [--rounds 2] [--threads 2]
        [--checkpoint]
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

SIZES = {
    # name: (init-model flags, rows, sequence length, steps)
    "small": (["--hidden", "384", "--intermediate", "1024", "--layers", "6", "--heads", "6", "--kv-heads", "2"],
              8, 512, 12),
    "large": (["--hidden", "768", "--intermediate", "2048", "--layers", "6", "--heads", "12", "--kv-heads", "4"],
              2, 2048, 6),
}
TEXT = "The quick brown fox jumps over the lazy dog. "
LOSS_TOLERANCE = 1e-3


def torch_side(model_dir, rows, seq, steps, threads, checkpoint):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    if checkpoint:
        model.gradient_checkpointing_enable()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4)
    ids = AutoTokenizer.from_pretrained(model_dir)(TEXT * (seq // 8), add_special_tokens=False)["input_ids"][:seq]
    assert len(ids) == seq
    ids = torch.tensor([ids] * rows)
    times, losses = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        losses.append(out.loss.item())
    tokens = rows * seq * (steps - 1)
    print(json.dumps({"tokens_per_second": tokens / sum(times[1:]), "losses": losses}))


def run_child(args, env=None):
    """Run `args`; returns its stdout and peak RSS in MiB."""
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *map(str, args)], check=True, capture_output=True, text=True,
                          env=env)
    return proc.stdout, int(proc.stderr.strip().splitlines()[-1]) / 1024


def forge_side(forge, init, tmp, rows, seq, steps, threads, checkpoint):
    data = tmp / "data.jsonl"
    with open(data, "w") as f:
        for _ in range(rows * steps):
            f.write(json.dumps({"text": TEXT * (seq // 8)}) + "\n")
    out = tmp / "out"
    subprocess.run(["rm", "-rf", out], check=True)
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    _, peak = run_child([forge, "train-sft", "--model", init, "--data", data, "-o", out, "--epochs", "1",
                         "--lr", "1e-4", "--schedule", "constant", "--warmup-ratio", "0",
                         "--batch-tokens", str(rows * seq), "--micro-batch-tokens", str(rows * seq),
                         "--max-length", str(seq), "--eval-share", "0", "--save-every", "0", "-q"]
                         + (["--checkpoint-layers"] if checkpoint else []), env=env)
    steps = list(csv.DictReader(open(out / "metrics.csv")))
    t = lambda r: int(r["tokens"]) / float(r["tokens_per_second"])
    tps = (int(steps[-1]["tokens"]) - int(steps[0]["tokens"])) / (t(steps[-1]) - t(steps[0]))
    return tps, peak, [float(r["loss"]) for r in steps]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("forge")
    ap.add_argument("--size", choices=["small", "large", "both"], default="both")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", action="store_true")
    ap.add_argument("--torch-only", action="store_true")
    ap.add_argument("--model-dir")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--steps", type=int)
    args = ap.parse_args()
    if args.torch_only:
        torch_side(args.model_dir, args.rows, args.seq, args.steps, args.threads, args.checkpoint)
        return
    failed = False
    for size in ["small", "large"] if args.size == "both" else [args.size]:
        flags, rows, seq, steps = SIZES[size]
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            init = tmp / "init"
            subprocess.run([args.forge, "init-model", "--family", "qwen2", *flags, "--seed", "1", "-o", init],
                           check=True, capture_output=True)
            print(f"{size}: qwen2 {' '.join(flags)}, byte-level vocabulary; {rows} x {seq} tokens per step, "
                  f"{steps} steps, {args.threads} threads"
                  + (", activation checkpointing" if args.checkpoint else ""), flush=True)
            for r in range(args.rounds):
                results = {}
                order = ["forge", "torch"] if r % 2 == 0 else ["torch", "forge"]
                for side in order:
                    if side == "forge":
                        results[side] = forge_side(args.forge, init, tmp, rows, seq, steps, args.threads,
                                                   args.checkpoint)
                    else:
                        stdout, peak = run_child([sys.executable, __file__, args.forge, "--torch-only",
                                                  "--model-dir", init, "--rows", rows, "--seq", seq,
                                                  "--steps", steps, "--threads", args.threads]
                                                 + (["--checkpoint"] if args.checkpoint else []))
                        got = json.loads(stdout.strip().splitlines()[-1])
                        results[side] = (got["tokens_per_second"], peak, got["losses"])
                (ftps, fpeak, flosses), (ttps, tpeak, tlosses) = results["forge"], results["torch"]
                first = [(f, t) for f, t in zip(flosses[:3], tlosses[:3])]
                worst = max(abs(f - t) / abs(t) for f, t in first)
                failed |= worst > LOSS_TOLERANCE
                print(f"  round {r + 1} ({' then '.join(order)}): forge {ftps:7.0f} tok/s {fpeak:6.0f} MiB | "
                      f"PyTorch {ttps:7.0f} tok/s {tpeak:6.0f} MiB | speed {ftps / ttps:.2f}x, "
                      f"memory {fpeak / tpeak:.2f}x | first losses "
                      + ", ".join(f"{f:.4f}/{t:.4f}" for f, t in first) + f" (worst {worst:.1e})", flush=True)
    if failed:
        sys.exit(f"the first losses differ by more than {LOSS_TOLERANCE} relative")


if __name__ == "__main__":
    main()
