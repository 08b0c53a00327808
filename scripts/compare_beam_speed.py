#!/usr/bin/env python3
"""Beam search speed: `forge generate --beams W` vs transformers' `generate(num_beams=W)`, same checkpoint,
prompts and settings, CPU.

Makes (with the forge binary) the random Qwen2 checkpoint of about 10M parameters that
`compare_transformers_generate.py` uses and 32 `arith` problems, then runs beam search (W beams, length
penalty 1, transformers' default early stopping, at most `--max-tokens` new tokens) over the problems in
batches of 1 and 8 problems with both: forge through its CLI (wall clock of the command, loading included),
transformers with `model.generate` on left-padded batches of the same chat-rendered prompts (wall clock of
tokenisation plus generation, loading excluded). Same number of CPU threads; runs alternate, the fastest of
`--repeat` counts. Prints problems/s of each, the ratio, and how many best beams are the same text.

    pip install torch transformers pyarrow
    cargo build --release
    python3 scripts/compare_beam_speed.py --forge /var/tmp/forge-target/release/forge --threads 2 --repeat 2
    python3 scripts/compare_beam_speed.py --forge ... --checkpoint samples/tiny-teacher --max-tokens 200 --batches 8
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_transformers_generate import setup  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--forge", required=True)
    ap.add_argument("--work", default="/tmp/forge-beam-bench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,8", help="problems per batch, comma-separated")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--checkpoint", help="a trained checkpoint instead of the random one (samples/tiny-teacher: "
                    "its beams end, so early stopping and the length penalty are compared too)")
    args = ap.parse_args()
    synth = ("--ops", "1..2", "--max-operand", 9) if args.checkpoint else ()
    run, ck, problems, tok, model, texts = setup(args.forge, Path(args.work), args.threads, args.problems,
                                                 args.checkpoint, synth)
    results = {}
    for batch in map(int, args.batches.split(",")):
        f_s, t_s = float("inf"), float("inf")
        for _ in range(args.repeat):
            out = Path(args.work) / f"traces-{batch}"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            run("generate", "--teacher", f"local:{ck}", "--problems", problems, "--beams", args.beams,
                "--length-penalty", 1.0, "--max-tokens", args.max_tokens, "--batch-size", batch, "-o", out, "-q")
            f_s = min(f_s, time.perf_counter() - start)
            start = time.perf_counter()
            t_texts = transformers_beams(tok, model, texts, batch, args.beams, args.max_tokens)
            t_s = min(t_s, time.perf_counter() - start)
        traces = pq.read_table(sorted(out.glob("part-*.parquet"))[0]).to_pylist()
        same = sum(a == b["completion"] for a, b in zip(t_texts, traces))
        n = len(traces)
        results[batch] = dict(forge_s=f_s, hf_s=t_s, ratio=t_s / f_s, identical=f"{same}/{n}")
        print(f"{batch} problems per batch, {args.beams} beams: forge {n / f_s:.2f} problems/s, transformers "
              f"{n / t_s:.2f} problems/s; ratio {t_s / f_s:.2f}; identical best beams {same}/{n}", flush=True)
    print(json.dumps({"threads": args.threads, "torch": torch.__version__, "beams": args.beams,
                      "max_tokens": args.max_tokens, "repeat": args.repeat, "results": results}))


def transformers_beams(tok, model, texts, batch, beams, max_tokens):
    """The best beam of each of `texts`, in left-padded batches."""
    out = []
    for i in range(0, len(texts), batch):
        enc = tok(texts[i:i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, num_beams=beams,
                                 length_penalty=1.0, eos_token_id=[258, 256], pad_token_id=256)
        for row in gen[:, enc["input_ids"].shape[1]:]:
            ids = row.tolist()
            if 258 in ids or 256 in ids:
                ids = ids[:min(ids.index(e) for e in (258, 256) if e in ids)]
            out.append(tok.decode(ids))
    return out


if __name__ == "__main__":
    main()
