"""Open forge datasets with pyarrow, polars and DuckDB and check they agree with the manifest, and on the
log-probabilities of traces (float columns are written in byte stream split encoding: every reader must
decode it to the same values).

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
    if "top_logprobs" in columns:
        sums = logprob_sums(files, arrow, frame, con)
        assert all(abs(a - b) <= 1e-6 * abs(b) for pair in sums for a, b in zip(pair, sums[0])), (directory, sums)
        assert sums[0][1] < 0, (directory, sums)
    print(f"{directory}: {rows} rows, columns {', '.join(columns)}: pyarrow, polars and DuckDB agree")


def logprob_sums(files, arrow, frame, con):
    """(sum of token_logprobs, sum of top_logprobs' logprobs) as pyarrow, polars and DuckDB read them."""
    import pyarrow.compute as pc

    by_arrow = (
        pc.sum(pc.list_flatten(arrow.column("token_logprobs"))).as_py(),
        pc.sum(pc.struct_field(pc.list_flatten(pc.list_flatten(arrow.column("top_logprobs"))), "logprob")).as_py(),
    )
    by_polars = (
        frame["token_logprobs"].explode().sum(),
        frame["top_logprobs"].explode().explode().struct.field("logprob").sum(),
    )
    by_duckdb = con.execute(
        "SELECT (SELECT sum(x) FROM (SELECT unnest(token_logprobs) AS x FROM read_parquet($1))), "
        "(SELECT sum(e.logprob) FROM (SELECT unnest(p) AS e FROM "
        "(SELECT unnest(top_logprobs) AS p FROM read_parquet($1))))",
        [files],
    ).fetchall()[0]
    return [tuple(float(v) for v in sums) for sums in (by_arrow, by_polars, by_duckdb)]


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        check(pathlib.Path(arg))
