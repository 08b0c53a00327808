"""Write a Hugging Face Qwen2 checkpoint (safetensors, tokenizer.json, chat template) as a GGUF file that
llama.cpp's `llama-server` serves, without torch: `python make_gguf.py CKPT OUT.gguf`.

llama.cpp's own converter imports torch and only knows tokenizers it has a hash for; forge's sample teacher
has a byte-level tokenizer without merges, which this script writes as a "gpt2" vocabulary whose merges
never apply. Weights are written in f32 (the teacher's bf16 values exactly), so every server computes on the
same numbers as forge's local backend.
"""

import json
import struct
import sys
from pathlib import Path

import gguf
import numpy as np


def tensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        raw = data[a:b]
        if meta["dtype"] == "BF16":
            x = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif meta["dtype"] == "F32":
            x = np.frombuffer(raw, dtype=np.float32)
        elif meta["dtype"] == "F16":
            x = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
        else:
            raise SystemExit(f"{path}: tensor {name} has dtype {meta['dtype']}, not bf16/f16/f32")
        yield name, x.reshape(meta["shape"]).copy()


RENAME = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(name):
    if name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if name == "model.norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        return "output.weight"
    parts = name.split(".", 3)  # model.layers.N.rest
    if parts[:2] == ["model", "layers"] and parts[3] in RENAME:
        return f"blk.{parts[2]}.{RENAME[parts[3]]}"
    raise SystemExit(f"unknown tensor {name}")


def main(ckpt, out):
    ckpt = Path(ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    if cfg.get("model_type") != "qwen2":
        raise SystemExit(f"{ckpt}: model_type {cfg.get('model_type')!r}, this script writes qwen2 only")
    tok = json.loads((ckpt / "tokenizer.json").read_text())
    tok_cfg = json.loads((ckpt / "tokenizer_config.json").read_text())
    w = gguf.GGUFWriter(out, "qwen2")
    w.add_name(ckpt.name)
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(heads)
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = tok["model"]["vocab"]
    added = {t["id"]: t for t in tok["added_tokens"]}
    size = cfg["vocab_size"]
    tokens, types = [], []
    by_id = {i: t for t, i in vocab.items()}
    for i in range(size):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = tok["model"].get("merges") or []
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    if not merges:
        # llama.cpp requires the key; a merge of two control tokens never applies to text
        merges = [f"{tokens[size - 2]} {tokens[size - 1]}"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    eos = tok_cfg.get("eos_token")
    ids = {t: i for i, t in enumerate(tokens)}
    if eos in ids:
        w.add_eos_token_id(ids[eos])
    if tok_cfg.get("pad_token") in ids:
        w.add_pad_token_id(ids[tok_cfg["pad_token"]])
    w.add_add_bos_token(False)
    template = tok_cfg.get("chat_template")
    if template is None and (ckpt / "chat_template.jinja").exists():
        template = (ckpt / "chat_template.jinja").read_text()
    if template:
        w.add_chat_template(template)

    for f in sorted(ckpt.glob("*.safetensors")):
        for name, x in tensors(f):
            w.add_tensor(gguf_name(name), x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: make_gguf.py CKPT OUT.gguf")
    main(sys.argv[1], sys.argv[2])
