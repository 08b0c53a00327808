#!/usr/bin/env python3
"""Fixtures for forge's training checks against PyTorch and transformers (tests/it/model.rs).

1. Gradients: on the parity checkpoints (tests/fixtures/parity/<arch>, written by parity_fixtures.py), the
   mean cross-entropy of a fixed right-padded batch with some labels masked (-100), and its gradient for
   every parameter (norm and first 64 values), written to tests/fixtures/parity/<arch>/grads.json.
2. A trained forge checkpoint in transformers: runs `forge train-sft` on tiny models (Qwen2 saved in f32,
   Llama saved in bf16), copies the result to tests/fixtures/trained/<arch>/, loads it with
   `AutoModelForCausalLM.from_pretrained` and records its logits on a fixed prompt (expected.json).
3. A forge LoRA adapter in peft: `forge train-sft --lora-rank 4` on the trained Qwen2 above, copied to
   tests/fixtures/lora/qwen2/ (base path made relative), loaded with `PeftModel.from_pretrained`, logits
   recorded as above.

    pip install torch transformers peft   # CPU is enough
    python3 scripts/train_fixtures.py path/to/forge
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
ROWS = [[257, 117, 115, 101, 114, 10, 87, 104, 97, 116, 32, 105, 115, 32, 50, 43, 51, 63, 258, 10, 257, 97, 53],
        [72, 105, 33, 32, 49, 32, 43, 32, 49, 61, 50]]
# loss on predicting these positions (labels != -100): row 0 from position 12 except 15..17, row 1 from 4
TRAIN = [[j >= 12 and not 15 <= j < 18 for j in range(len(ROWS[0]))], [j >= 4 for j in range(len(ROWS[1]))]]
PROMPT = [257, 117, 115, 101, 114, 10, 67, 111, 109, 112, 117, 116, 101, 32, 55, 32, 43, 32, 53, 46, 258, 10, 257, 97]


def gradients():
    for arch in ("qwen2", "llama"):
        d = ROOT / "tests" / "fixtures" / "parity" / arch
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
        model.train()
        width = max(map(len, ROWS))
        ids = torch.tensor([r + [0] * (width - len(r)) for r in ROWS])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ROWS])
        labels = torch.tensor([[t if keep else -100 for t, keep in zip(r, k)] + [-100] * (width - len(r))
                               for r, k in zip(ROWS, TRAIN)])
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        grads = {name: {"norm": p.grad.norm().item(), "head": p.grad.flatten()[:64].tolist()}
                 for name, p in model.named_parameters()}
        expected = {"transformers": transformers.__version__, "torch": torch.__version__,
                    "rows": ROWS, "train": TRAIN, "loss": out.loss.item(), "grads": grads}
        (d / "grads.json").write_text(json.dumps(expected))
        print(arch, "loss", out.loss.item(), len(grads), "parameters")


def trained(forge):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = lambda *args: subprocess.run([forge, *map(str, args), "-q"], check=True)
        run("synth", "arith", "--n", "200", "--ops", "2", "--seed", "9", "-o", tmp / "data")
        for arch, dtype in (("qwen2", "float32"), ("llama", "bfloat16")):
            init = tmp / f"init-{arch}"
            run("init-model", "--family", arch, "--hidden", "32", "--intermediate", "64", "--layers", "2",
                "--heads", "4", "--kv-heads", "2", "--seed", "3", "-o", init)
            config = json.loads((init / "config.json").read_text())
            config["torch_dtype"] = dtype
            (init / "config.json").write_text(json.dumps(config, indent=2))
            out = tmp / f"out-{arch}"
            run("train-sft", "--model", init, "--data", tmp / "data", "-o", out, "--max-steps", "20", "--lr", "3e-3",
                "--batch-tokens", "1024", "--max-length", "256")
            dest = ROOT / "tests" / "fixtures" / "trained" / arch
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                      "generation_config.json"):
                shutil.copy(out / f, dest / f)
            model = AutoModelForCausalLM.from_pretrained(dest, dtype=torch.float32).eval()
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([PROMPT])).logits[0]
            expected = {"transformers": transformers.__version__, "torch": torch.__version__,
                        "class": type(model).__name__, "prompt": PROMPT, "logits": logits.tolist()}
            (dest / "expected.json").write_text(json.dumps(expected))
            print(arch, type(model).__name__, "argmax", logits.argmax(-1).tolist())


def lora(forge):
    from peft import PeftModel

    base = ROOT / "tests" / "fixtures" / "trained" / "qwen2"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = lambda *args: subprocess.run([forge, *map(str, args), "-q"], check=True)
        run("synth", "arith", "--n", "100", "--ops", "3", "--seed", "10", "-o", tmp / "data")
        run("train-sft", "--model", base, "--data", tmp / "data", "-o", tmp / "lora", "--max-steps", "10",
            "--lr", "1e-2", "--batch-tokens", "1024", "--max-length", "256", "--lora-rank", "4", "--lora-targets",
            "q_proj,v_proj,down_proj")
        dest = ROOT / "tests" / "fixtures" / "lora" / "qwen2"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        shutil.copy(tmp / "lora" / "adapter_model.safetensors", dest)
        config = json.loads((tmp / "lora" / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = "../../trained/qwen2"
        (dest / "adapter_config.json").write_text(json.dumps(config, indent=2))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), dest).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([PROMPT])).logits[0]
    import peft
    expected = {"peft": peft.__version__, "transformers": transformers.__version__, "prompt": PROMPT,
                "logits": logits.tolist()}
    (dest / "expected.json").write_text(json.dumps(expected))
    print("lora argmax", logits.argmax(-1).tolist())


if __name__ == "__main__":
    gradients()
    trained(sys.argv[1])
    lora(sys.argv[1])
