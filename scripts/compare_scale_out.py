#!/usr/bin/env python3
"""Past one machine, measured on this one: what Slurm and object storage cost.

1. Filter with near-dup on N documents (compare_datatrove.py's corpus: half unique, half near-copies of
   real text), `forge filter` in one process against the same filter as a pipeline stage in 4 shards
   through Slurm (`forge run --executor slurm --wait`: 13 array tasks in four chained job arrays, each task
   asking for one CPU), alternating, ROUNDS rounds. The ratio is the scheduler's overhead plus the price of
   map/reduce files over one process's memory (and, on one 2-core node, nothing to gain from more nodes).
2. Object storage: the corpus dataset written to an S3 server on 127.0.0.1 (moto, in-memory) and to the local
   disk by the same command (`forge filter --input CORPUS -o ...`: row checks only), and read back (`forge stats`, an empty cache
   for S3); MB/s of the transfer alone = bytes / (time with S3 - time on disk).

    scripts/servers/start-slurm.sh            # a one-node Slurm (root; Debian's packages)
    cargo build --release
    python3 scripts/compare_scale_out.py --docs 1000000 --python /var/tmp/forge-ci-venv/bin/python
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_datatrove import build_corpus  # noqa: E402


def timed(cmd, env=None):
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def size(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and not f.name.startswith(".forge-"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--forge", default="/var/tmp/forge-target/release/forge")
    ap.add_argument("--python", default=sys.executable, help="a python with moto[server]")
    ap.add_argument("--work", default="/var/tmp/forge-scale-out")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--part", choices=["slurm", "s3", "both"], default="both")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    forge = args.forge
    corpus = build_corpus(args.docs, work, forge)
    print(f"corpus: {args.docs} documents, {size(corpus) / 1e6:.0f} MB of Parquet", flush=True)

    if args.part != "s3":
        slurm_vs_one(args, work, corpus)
    if args.part != "slurm":
        object_storage(args, work, corpus)


def slurm_vs_one(args, work, corpus):
    forge = args.forge
    pipeline = work / "filter.toml"
    pipeline.write_text(
        f'dir = "unused"\n[slurm]\ncpus = 1\nmem = "4G"\n\n[[stage]]\nname = "curated"\nshards = 4\n'
        f'filter = {{ input = "{corpus}", near_dup = true }}\n'
    )
    one, slurm = [], []
    for r in range(args.rounds):
        for d in ("one", "slurm"):
            shutil.rmtree(work / d, ignore_errors=True)
        one.append(timed([forge, "filter", "--input", str(corpus), "-o", str(work / "one"), "--near-dup", "-q"]))
        slurm.append(timed([forge, "run", str(pipeline), "--dir", str(work / "slurm"), "--executor", "slurm", "--wait", "-q"]))
        print(f"round {r + 1}: one process {one[-1]:.1f} s, Slurm 4 shards {slurm[-1]:.1f} s", flush=True)
    o, s = statistics.median(one), statistics.median(slurm)
    print(f"filter --near-dup, {args.docs} docs: one process {args.docs / o:,.0f} docs/s, "
          f"Slurm (4 shards, 13 tasks) {args.docs / s:,.0f} docs/s: Slurm / one process = {o / s:.2f}x speed")


def object_storage(args, work, corpus):
    forge = args.forge
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    port_no = port.getsockname()[1]
    port.close()
    moto = subprocess.Popen([args.python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port_no)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port_no), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        subprocess.run(["curl", "-sf", "-X", "PUT", f"http://127.0.0.1:{port_no}/bench"], check=True)
        env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port_no}", AWS_ACCESS_KEY_ID="bench",
                   AWS_SECRET_ACCESS_KEY="bench")
        disk_w, s3_w, disk_r, s3_r = [], [], [], []
        for r in range(args.rounds):
            cache = work / "cache"
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(work / "copy", ignore_errors=True)
            env["FORGE_CACHE"] = str(cache)
            disk_w.append(timed([forge, "filter", "--input", str(corpus), "-o", str(work / "copy"), "-q"], env))
            s3_w.append(timed([forge, "filter", "--input", str(corpus), "-o", f"s3://bench/copy-{r}", "-q"], env))
            shutil.rmtree(cache)
            disk_r.append(timed([forge, "stats", str(work / "copy"), "-q"], env))
            s3_r.append(timed([forge, "stats", f"s3://bench/copy-{r}", "-q"], env))
        mb = size(work / "copy") / 1e6
        dw, sw, dr, sr = (statistics.median(x) for x in (disk_w, s3_w, disk_r, s3_r))
        print(f"object storage, {mb:.0f} MB dataset: write {dw:.2f} s to disk, {sw:.2f} s to S3 "
              f"(transfer {mb / max(sw - dw, 1e-9):.0f} MB/s); read {dr:.2f} s from disk, {sr:.2f} s from S3 "
              f"(transfer {mb / max(sr - dr, 1e-9):.0f} MB/s); S3 / disk time: write {sw / dw:.2f}x, read {sr / dr:.2f}x")
    finally:
        moto.kill()


if __name__ == "__main__":
    main()
