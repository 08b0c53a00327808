#!/usr/bin/env python3
"""Render real chat templates with transformers, for forge's parity test (tests/it/model.rs).

Reads the templates and special tokens from ../shared/data/hf-configs (Qwen2.5-Instruct, Qwen2.5-Math, Qwen3,
DeepSeek-R1-Distill-Qwen, Llama-3.2-Instruct, and the .jinja files of templates/), renders a few conversations
with transformers' own renderer (`render_jinja_template`, what `apply_chat_template` calls), and writes the
expected texts to tests/fixtures/chat_templates.json. The templates themselves stay in ../shared/data.

    pip install transformers==5.24.0   # no torch needed
    python3 scripts/chat_template_fixtures.py
"""

import json
from pathlib import Path

from transformers.utils.chat_template_utils import render_jinja_template

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT.parent / "shared" / "data" / "hf-configs"

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 3? Put the answer in \\boxed{}."}],
    [
        {"role": "system", "content": "You are a careful math tutor."},
        {"role": "user", "content": "Solve x + 1 = 3."},
        {"role": "assistant", "content": "<think>\nx = 3 - 1\n</think>\nx = 2, so \\boxed{2}."},
        {"role": "user", "content": "And x + 2 = 3? Use <b>bold</b> & 'quotes'."},
    ],
]


def token(v):
    return v.get("content") if isinstance(v, dict) else v


def main():
    sources = []
    for d in sorted(CONFIGS.iterdir()):
        cfg = d / "tokenizer_config.json"
        if cfg.exists():
            c = json.loads(cfg.read_text())
            if isinstance(c.get("chat_template"), str):
                tokens = {k: token(c[k]) for k in ("bos_token", "eos_token", "pad_token", "unk_token") if token(c.get(k))}
                sources.append((f"{d.name}/tokenizer_config.json", c["chat_template"], tokens))
    for j in sorted((CONFIGS / "templates").glob("*.jinja")):
        sources.append((f"templates/{j.name}", j.read_text(), {"bos_token": "<s>", "eos_token": "</s>"}))
    cases = []
    for name, template, tokens in sources:
        for conversation in CONVERSATIONS:
            for add in (True, False):
                extra = {"date_string": "26 Jul 2024"}
                text = render_jinja_template(
                    conversations=[conversation], chat_template=template, add_generation_prompt=add, **tokens, **extra
                )[0][0]
                cases.append({"template": name, "messages": conversation, "add_generation_prompt": add,
                              "extra": extra, "tokens": tokens, "expected": text})
    out = ROOT / "tests" / "fixtures" / "chat_templates.json"
    out.write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(cases)} cases from {len(sources)} templates -> {out}")


if __name__ == "__main__":
    main()
