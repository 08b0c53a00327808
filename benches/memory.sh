#!/usr/bin/env bash
# Peak resident memory of forge's streaming paths at 100k and 1M rows: if it grows with the row count,
# something collects instead of streaming. Run from the repository root; prints a table.
#   benches/memory.sh [path/to/forge]   (default: a release build in $CARGO_TARGET_DIR)
set -euo pipefail
target="${CARGO_TARGET_DIR:-target}"
forge="${1:-$target/release/forge}"
[ -x "$forge" ] || cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rss() { /usr/bin/time -f "%M %e" "$@" 2>&1 >/dev/null | tail -1; }
printf '%-44s %10s %12s %8s\n' "command" "rows" "peak RSS MB" "seconds"
for n in 100000 1000000; do
  read -r kb s < <(rss "$forge" synth arith --n "$n" -q -o "$work/synth-$n")
  printf '%-44s %10s %12.1f %8s\n' "synth arith (write)" "$n" "$(echo "$kb/1024" | bc -l)" "$s"
  read -r kb s < <(rss "$forge" import --prompt-col prompt --answer-col gold --id-col id -q "$work/synth-$n" -o "$work/import-$n")
  printf '%-44s %10s %12.1f %8s\n' "import of that dataset (read + write)" "$n" "$(echo "$kb/1024" | bc -l)" "$s"
  read -r kb s < <(rss "$forge" stats -q "$work/import-$n")
  printf '%-44s %10s %12.1f %8s\n' "stats of the import (read)" "$n" "$(echo "$kb/1024" | bc -l)" "$s"
done
