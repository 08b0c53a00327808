#!/usr/bin/env python3
"""Tiny random transformers checkpoints and their outputs, for forge's parity test (tests/it/model.rs).

For each architecture forge runs (Qwen2 with q/k/v bias and tied embeddings; Llama with Llama 3 rope scaling
and grouped-query attention), builds a tiny random model with transformers (seeded, f32), saves it as a
checkpoint directory, and records for fixed token-id prompts: the full logits of a left-padded batch (with
transformers' position ids for left padding) and the greedy continuation of each prompt (16 new tokens, no end
token). Written to tests/fixtures/parity/<arch>/ (config.json, model.safetensors, expected.json), about 0.4 MB
each.

    pip install torch transformers   # CPU is enough
    python3 scripts/parity_fixtures.py [OUT_DIR]
"""

import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

PROMPTS = [[257, 117, 115, 101, 114, 10, 87, 104, 97, 116, 32, 105, 115, 32, 50, 43, 51, 63], [72, 105, 33, 32, 49]]
COMMON = dict(vocab_size=259, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-6, bos_token_id=256, eos_token_id=258)


def build(arch):
    torch.manual_seed(0)
    if arch == "qwen2":
        cfg = Qwen2Config(**COMMON, rope_theta=10000.0, tie_word_embeddings=True)
        model = Qwen2ForCausalLM(cfg)
    else:
        cfg = LlamaConfig(**COMMON, rope_theta=500000.0, tie_word_embeddings=False,
                          rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                        "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
        model = LlamaForCausalLM(cfg)
    # Larger weights than the default init, so logits differ visibly between tokens and positions.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return model.float().eval()


def main():
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "parity"
    for arch in ("qwen2", "llama"):
        model = build(arch)
        out = root / arch
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        width = max(map(len, PROMPTS))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in PROMPTS])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in PROMPTS])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        greedy = []
        for p in PROMPTS:
            with torch.no_grad():
                g = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                   max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)
            greedy.append(g[0, len(p):].tolist())
        expected = {
            "transformers": transformers.__version__, "torch": torch.__version__,
            "prompts": PROMPTS, "width": width,
            # real (unpadded) positions only, row by row: [row][position][vocab]
            "logits": [logits[r, width - len(p):].tolist() for r, p in enumerate(PROMPTS)],
            "greedy": greedy,
        }
        (out / "expected.json").write_text(json.dumps(expected))
        for extra in ("generation_config.json",):
            (out / extra).unlink(missing_ok=True)
        print(arch, "greedy", greedy)


if __name__ == "__main__":
    main()
