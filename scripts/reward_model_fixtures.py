#!/usr/bin/env python3
"""A tiny random reward model and its rewards, for forge's reward-model parity test (tests/it/eval.rs).

Builds a transformers `Qwen2ForSequenceClassification` with one label (the layout of outcome reward models
such as Skywork-Reward: the decoder and a `score` head, `[1, hidden]`, read at the last token), seeded, f32,
with the sample teacher's byte-level tokenizer and chat template; saves it as a checkpoint directory and
records the reward of a few conversations (user prompt, assistant reply), rendered with the chat template
(no generation prompt). Written to tests/fixtures/reward-model/ (about 0.5 MB).

    pip install torch transformers   # CPU is enough
    python3 scripts/reward_model_fixtures.py [OUT_DIR]
"""

import json
import shutil
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForSequenceClassification

ROOT = Path(__file__).resolve().parent.parent
CONVERSATIONS = [
    ("Compute (2 + 1) * 7.", "2 + 1 = 3\n3 * 7 = 21\nThe answer is \\boxed{21}."),
    ("Compute (2 + 1) * 7.", "2 + 1 = 3\n3 * 7 = 24\nThe answer is \\boxed{24}."),
    ("What is 9 - 4?", "9 - 4 = 5"),
    ("What is 9 - 4?", "The answer is 5, because nine take away four leaves five."),
]


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests" / "fixtures" / "reward-model"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(ROOT / "samples" / "tiny-teacher" / name, out / name)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=259, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False, num_labels=1,
                      bos_token_id=256, eos_token_id=258, pad_token_id=256)
    model = Qwen2ForSequenceClassification(cfg)
    # Larger weights than the default init, so rewards differ visibly between replies.
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else 0.2 * torch.randn_like(p))
    model = model.float().eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(out)
    cases = []
    for prompt, reply in CONVERSATIONS:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=False)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        with torch.no_grad():
            reward = model(torch.tensor([ids])).logits[0, 0].item()
        cases.append({"prompt": prompt, "reply": reply, "ids": ids, "reward": reward})
    (out / "expected.json").write_text(json.dumps({
        "transformers": transformers.__version__, "torch": torch.__version__, "cases": cases}, indent=1) + "\n")
    print(json.dumps([round(c["reward"], 4) for c in cases]))


if __name__ == "__main__":
    main()
