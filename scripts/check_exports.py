"""Load `forge export` outputs the way other tools do, and check their shape.

Usage: python scripts/check_exports.py HF_DIR MESSAGES_DIR SHAREGPT_DIR JSONL_DIR ROWS
Each export is read with HF `datasets` (from local files), pyarrow, polars and DuckDB; every reader must see
ROWS rows, and the `messages` column must have the shape TRL's conversational format expects (a list of
{role, content} with roles system/user/assistant, ending with the assistant). Exits non-zero on the first
failure. CI installs the packages (.ci/run); by hand: pip install datasets pyarrow polars duckdb.
"""

import json
import pathlib
import sys

import datasets
import duckdb
import polars as pl
import pyarrow.parquet as pq


def check_messages(rows, column="messages", role="role", content="content", roles=("system", "user", "assistant"),
                   last="assistant"):
    for r in rows:
        messages = r[column]
        assert isinstance(messages, list) and messages, r
        for m in messages:
            assert set(m) == {role, content}, m
            assert m[role] in roles, m
            assert isinstance(m[content], str), m
        assert messages[-1][role] == last, messages


def readers(files, n):
    arrow = pq.read_table(files)
    frame = pl.read_parquet(files)
    (count,) = duckdb.connect().execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchall()[0]
    assert arrow.num_rows == frame.height == count == n, (files, arrow.num_rows, frame.height, count, n)
    return arrow


def main(hf, messages, sharegpt, jsonl, n):
    n = int(n)
    hf, messages, sharegpt, jsonl = map(pathlib.Path, (hf, messages, sharegpt, jsonl))

    ds = datasets.load_dataset(str(hf), split="train")
    assert len(ds) == n and "messages" in ds.column_names, ds
    check_messages(ds)
    assert (hf / "README.md").read_text().startswith("---\nconfigs:")
    readers([str(p) for p in sorted((hf / "data").glob("train-*.parquet"))], n)

    files = [str(messages / "train.parquet")]
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert len(ds) == n
    check_messages(ds)
    check_messages(ds, column="prompt", last="user")
    check_messages(ds, column="completion", last="assistant")
    readers(files, n)

    files = [str(sharegpt / "train.parquet")]
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    check_messages(ds, column="conversations", role="from", content="value", roles=("system", "human", "gpt"),
                   last="gpt")
    readers(files, n)
    info = json.loads((sharegpt / "dataset_info.json").read_text())
    (entry,) = info.values()
    assert entry["formatting"] == "sharegpt" and entry["columns"]["messages"] == "conversations", entry

    ds = datasets.load_dataset("json", data_files=[str(jsonl / "train.jsonl")], split="train")
    assert len(ds) == n
    check_messages(ds)
    print(f"{n} rows: datasets, pyarrow, polars and DuckDB read every export; messages have TRL's shape")


if __name__ == "__main__":
    main(*sys.argv[1:])
