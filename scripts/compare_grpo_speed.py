#!/usr/bin/env python3
"""GRPO speed: `forge train-rl` against TRL's `GRPOTrainer` on the same tiny model, problems and settings.

Both train samples/tiny-teacher (3.2M parameters, f32 on the CPU, 2 threads) with the accuracy reward on
two-operation arithmetic: 8 prompts per step, 8 completions each (64 rollouts), at most 128 new tokens,
temperature 1, β = 0.04 (a reference model), loss `dapo`, lr 1e-5, one update per batch. Each run is timed
from its first step to its last (TRL's model loading excluded, forge's process included), runs alternate,
and the ratio is of completion tokens sampled per second (the two policies start equal and stay near each
other, so their completions are about as long) and of steps per second.

    pip install torch==2.13.0 transformers==5.19.0 trl==1.16.0 accelerate==1.12.0 datasets==5.2.0 pyarrow
    cargo build --release
    python3 scripts/compare_grpo_speed.py [--steps 10] [--rounds 2]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "samples" / "tiny-teacher"
FORGE = Path(os.environ.get("FORGE", Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "forge"))
TEMPLATE = "{prompt}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."


def problems(tmp):
    out = tmp / "problems"
    if not out.exists():
        subprocess.run([FORGE, "synth", "arith", "--n", "2000", "--ops", "2", "--max-operand", "9", "--seed", "500",
                        "-o", out, "-q"], check=True)
    return out


def forge_run(tmp, data, steps):
    out = tmp / "forge-rl"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([FORGE, "train-rl", "--model", MODEL, "--problems", data, "-o", out, "--steps", str(steps),
                    "--prompts-per-step", "8", "--group-size", "8", "--max-tokens", "128", "--temperature", "1",
                    "--beta", "0.04", "--loss-type", "dapo", "--lr", "1e-5", "--reward", "accuracy=1",
                    "--skip-flat-groups", "false", "--save-every", "0", "-q"], check=True,
                   env={**os.environ, "RAYON_NUM_THREADS": "2"})
    seconds = time.perf_counter() - started
    import pyarrow.dataset as ds
    parts = sorted(str(p) for p in (out / "rollouts").glob("part-*.parquet"))
    tokens = sum(ds.dataset(parts, format="parquet").to_table(columns=["completion_tokens"])
                 .column("completion_tokens").to_pylist())
    return seconds, tokens


def trl_run(tmp, data, steps):
    import pyarrow.dataset as pds
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(2)
    parts = sorted(str(p) for p in Path(data).glob("part-*.parquet"))
    table = pds.dataset(parts, format="parquet").to_table(columns=["prompt", "gold"]).to_pylist()
    rows = [{"prompt": [{"role": "user", "content": TEMPLATE.format(prompt=r["prompt"])}], "gold": r["gold"]}
            for r in table]

    def accuracy(completions, gold, **_):
        out = []
        for c, g in zip(completions, gold):
            found = re.findall(r"\\boxed\{([^}]*)\}", c[0]["content"])
            out.append(1.0 if found and found[-1].strip() == g else 0.0)
        return out

    # TRL loads its reference model by the config's `architectures`, which forge's sample checkpoint leaves out
    model_dir = tmp / "model"
    if not model_dir.exists():
        shutil.copytree(MODEL, model_dir)
        config_path = model_dir / "config.json"
        config_json = json.loads(config_path.read_text())
        config_json["architectures"] = ["Qwen2ForCausalLM"]
        config_path.write_text(json.dumps(config_json))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = GRPOConfig(output_dir=str(tmp / "trl-rl"), use_cpu=True, bf16=False, max_steps=steps,
                        per_device_train_batch_size=64, num_generations=8, gradient_accumulation_steps=1,
                        max_completion_length=128, temperature=1.0, top_p=1.0, beta=0.04, loss_type="dapo",
                        learning_rate=1e-5, lr_scheduler_type="constant", report_to="none", logging_steps=1,
                        save_strategy="no", seed=1, dataloader_num_workers=0,
                        model_init_kwargs={"dtype": torch.float32})
    lengths, marks = [], []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not marks:
                marks.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    trainer = GRPOTrainer(model=model, reward_funcs=accuracy, args=config, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, callbacks=[Clock()])
    trainer.train()
    seconds = time.perf_counter() - marks[0]
    return seconds, sum(lengths) * 64


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="grpo-speed-"))
    data = problems(tmp)
    results = {"forge": [], "trl": []}
    for r in range(args.rounds):
        for name, run in [("forge", forge_run), ("trl", trl_run)]:
            seconds, tokens = run(tmp, data, args.steps)
            results[name].append((seconds, tokens))
            print(f"round {r + 1} {name:5}: {args.steps} steps in {seconds:6.1f} s, {tokens} completion tokens, "
                  f"{tokens / seconds:7.1f} tok/s, {args.steps / seconds:.3f} steps/s", flush=True)
    rate = {k: [t / s for s, t in v] for k, v in results.items()}
    steps = {k: [args.steps / s for s, _ in v] for k, v in results.items()}
    print(f"forge / TRL, completion tokens per second: {min(rate['forge']) / max(rate['trl']):.2f}x to "
          f"{max(rate['forge']) / min(rate['trl']):.2f}x")
    print(f"forge / TRL, steps per second: {min(steps['forge']) / max(steps['trl']):.2f}x to "
          f"{max(steps['forge']) / min(steps['trl']):.2f}x")
    print(json.dumps(results))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
