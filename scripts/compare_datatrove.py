#!/usr/bin/env python3
"""MinHash near-duplicate removal: forge vs datatrove on the same corpus, same settings.

Builds (once, cached under --work) a corpus of N documents from the text in ../shared/data: half are
"mosaics" of 3-8 random sentences (unique documents), half are copies of a real text (a GSM8K or MATH
question or solution, an MBPP or HumanEval prompt) with 0-3 random word edits (near-duplicates). The
corpus is written once as JSONL and imported with `forge import` into Parquet shards, and both tools read
those same Parquet files.

Then it runs datatrove's four MinHash steps (signatures, buckets, clusters, filter; LocalPipelineExecutor
with 2 workers, the machine's cores) and `forge filter --near-dup` with the same settings: word 5-gram
shingles, 14 bands x 8 rows, seed 1, no exact-Jaccard check, no exact dedup. Prints documents per second of
each (whole pipeline, wall clock), the ratio, forge's peak memory, and how far the removed sets agree
(datatrove normalises text a little differently: punctuation, diacritics; digits are kept by both here).

    pip install -r scripts/requirements.txt   # datatrove, tokenizers, pyarrow
    cargo build --release
    python3 scripts/compare_datatrove.py --docs 1000000 --forge /var/tmp/forge-target/release/forge
"""

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def texts():
    out = []
    for split in ("train", "test"):
        for line in open(DATA / "gsm8k" / f"{split}.jsonl"):
            d = json.loads(line)
            out += [d["question"], d["answer"]]
        for line in open(DATA / "math" / f"{split}.jsonl"):
            d = json.loads(line)
            out += [d["problem"], d["solution"]]
    for name in ("mbpp", "humaneval"):
        for path in sorted((DATA / name).glob("*.jsonl")):
            for line in open(path):
                d = json.loads(line)
                out.append(d.get("text") or d.get("prompt") or "")
    return [t for t in out if len(t.split()) >= 8]


def build_corpus(n, work, forge):
    dataset = work / f"corpus-{n}"
    if (dataset / "manifest.json").exists():
        return dataset
    rng = random.Random(7)
    base = texts()
    sentences = [s for t in base for s in re.split(r"(?<=[.?!])\s+", t) if len(s.split()) >= 4]
    jsonl = work / f"corpus-{n}.jsonl"
    with open(jsonl, "w") as f:
        for i in range(n):
            if i % 2 == 0:
                text = " ".join(rng.choice(sentences) for _ in range(rng.randint(3, 8)))
            else:
                words = rng.choice(base).split(" ")
                for _ in range(rng.randint(0, 3)):
                    at = rng.randrange(len(words))
                    if rng.random() < 0.5:
                        words[at] = rng.choice(["the", "a", "number", "value", "total", "x", "7"])
                    elif len(words) > 8:
                        del words[at]
                text = " ".join(words)
            f.write(json.dumps({"id": f"d{i}", "prompt": text}) + "\n")
    subprocess.run(
        [forge, "import", "--prompt-col", "prompt", "--id-col", "id", "--source", "bench", "-q", str(jsonl), "-o", str(dataset)],
        check=True,
    )
    jsonl.unlink()
    return dataset


def run_timed(cmd):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}")
    return seconds, usage.ru_maxrss / 1024  # MiB


def run_datatrove(dataset, work, workers):
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import TextNormConfig

    out = work / "datatrove"
    shutil.rmtree(out, ignore_errors=True)
    config = MinhashConfig(
        n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1,
        hash_config=HashConfig(precision=64, hash_fc="xxhash"),
        norm_config=TextNormConfig(norm_numbers=False),
    )
    files = len(list(Path(dataset).glob("part-*.parquet")))
    reader = lambda: ParquetReader(str(dataset), text_key="prompt", id_key="id", glob_pattern="part-*.parquet")
    stages = [
        LocalPipelineExecutor(pipeline=[reader(), MinhashDedupSignature(str(out / "sigs"), config=config)],
                              tasks=files, workers=workers, logging_dir=str(out / "logs1")),
        LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(str(out / "sigs"), str(out / "buckets"), config=config)],
                              tasks=config.num_buckets, workers=workers, logging_dir=str(out / "logs2")),
        LocalPipelineExecutor(pipeline=[MinhashDedupCluster(str(out / "buckets"), str(out / "remove"), config=config)],
                              tasks=1, workers=1, logging_dir=str(out / "logs3")),
        LocalPipelineExecutor(pipeline=[reader(), MinhashDedupFilter(str(out / "remove"),
                                        exclusion_writer=JsonlWriter(str(out / "removed"), compression=None)),
                                        JsonlWriter(str(out / "kept"), compression=None)],
                              tasks=files, workers=workers, logging_dir=str(out / "logs4")),
    ]
    start = time.perf_counter()
    for stage in stages:
        stage.run()
    seconds = time.perf_counter() - start
    removed = set()
    for path in (out / "removed").glob("*.jsonl"):
        for line in open(path):
            removed.add(json.loads(line)["id"])
    return seconds, removed


def run_forge(forge, dataset, work, extra):
    out = work / "forge"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [forge, "filter", "--input", str(dataset), "-o", str(out), "--near-dup", "--no-exact-dup", "-q", *extra]
    seconds, peak = run_timed(cmd)
    import pyarrow.parquet as pq

    removed = set()
    for path in (out / "rejected").glob("part-*.parquet"):
        removed.update(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    return seconds, peak, removed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--forge", default="/var/tmp/forge-target/release/forge")
    ap.add_argument("--work", default="/var/tmp/forge-dedup-bench")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--skip-datatrove", action="store_true", help="time forge only (memory figures)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    dataset = build_corpus(args.docs, work, args.forge)
    n = args.docs
    print(f"corpus: {n} documents, {sum(p.stat().st_size for p in dataset.glob('part-*')) / 2**20:.0f} MiB of Parquet")

    same = ["--bands", "14", "--rows", "8", "--jaccard", "0"]
    f_s, f_peak, f_removed = run_forge(args.forge, dataset, work, same)
    print(f"forge (14 x 8, no exact check): {f_s:.1f} s, {n / f_s:,.0f} docs/s, peak RSS {f_peak:.0f} MiB, removed {len(f_removed):,}")
    d_s, d_peak, d_removed = run_forge(args.forge, dataset, work, [])
    print(f"forge defaults (20 x 6, exact Jaccard >= 0.8): {d_s:.1f} s, {n / d_s:,.0f} docs/s, peak RSS {d_peak:.0f} MiB, removed {len(d_removed):,}")
    if args.skip_datatrove:
        return
    t_s, t_removed = run_datatrove(dataset, work, args.workers)
    print(f"datatrove (14 x 8, {args.workers} workers): {t_s:.1f} s, {n / t_s:,.0f} docs/s, removed {len(t_removed):,}")
    print(f"speed ratio forge / datatrove (same settings): {t_s / f_s:.1f}x")
    both = len(f_removed & t_removed)
    print(f"removed by both: {both:,}; only forge: {len(f_removed - t_removed):,}; only datatrove: {len(t_removed - f_removed):,}")


if __name__ == "__main__":
    main()
