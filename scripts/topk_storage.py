#!/usr/bin/env python3
"""Bytes per generated token that the teacher's top-k log-probabilities take in forge's traces Parquet
(`top_logprobs: list<list<struct<token: uint32, logprob: float32>>>`, zstd as forge writes it), against the
raw sizes of other layouts: k x (4 B id + 2 B bf16), DistillKit's raw form, and k x (4 B + 4 B).

    python3 scripts/topk_storage.py traces-k20/ traces-k64/ ...
"""

import glob
import sys

import pyarrow.parquet as pq


def measure(path):
    files = sorted(glob.glob(f"{path}/*.parquet")) if not path.endswith(".parquet") else [path]
    stored = positions = 0
    k = 0
    for f in files:
        meta = pq.ParquetFile(f).metadata
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            for c in range(rg.num_columns):
                col = rg.column(c)
                if col.path_in_schema.startswith("top_logprobs"):
                    stored += col.total_compressed_size
        table = pq.read_table(f, columns=["top_logprobs"])
        for row in table.column("top_logprobs").to_pylist():
            for pos in row or []:
                positions += 1
                k = max(k, len(pos))
    return stored, positions, k


def main():
    print(f"{'traces':<40} {'k':>4} {'positions':>10} {'forge B/token':>14} {'k x 6 B':>8} {'k x 8 B':>8}")
    for path in sys.argv[1:]:
        stored, positions, k = measure(path)
        print(f"{path:<40} {k:>4} {positions:>10} {stored / max(positions, 1):>14.1f} {6 * k:>8} {8 * k:>8}")


if __name__ == "__main__":
    main()
