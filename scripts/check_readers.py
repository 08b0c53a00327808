"""Open forge datasets with pyarrow, polars and DuckDB and check they agree with the manifest.

Usage: python scripts/check_readers.py DATASET_DIR [DATASET_DIR ...]
Exits non-zero on the first disagreement. Requirements: scripts/requirements.txt.
"""

import json
import pathlib
import sys

import duckdb
import polars as pl
import pyarrow.parquet as pq


def check(directory: pathlib.Path) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    files = [str(directory / f["path"]) for f in manifest["files"]]
    arrow = pq.read_table(files)
    frame = pl.read_parquet(files)
    con = duckdb.connect()
    (count,) = con.execute("SELECT count(*) FROM read_parquet(?)", [files]).fetchall()[0]
    rows = manifest["rows"]
    assert arrow.num_rows == frame.height == count == rows, (directory, arrow.num_rows, frame.height, count, rows)
    columns = [name for name in arrow.schema.names]
    assert columns == frame.columns, (columns, frame.columns)
    print(f"{directory}: {rows} rows, columns {', '.join(columns)}: pyarrow, polars and DuckDB agree")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        check(pathlib.Path(arg))
