#!/usr/bin/env bash
# Run the quickstart pipeline with two forge binaries (e.g. before and after a refactor) and compare what
# they wrote: every Parquet shard and every safetensors file must be byte-identical (same seeds); files
# that hold times or the command line (manifests, reports, metrics) are left out.
#   scripts/compare_quickstart.sh OLD_FORGE NEW_FORGE
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 OLD_FORGE NEW_FORGE" >&2; exit 2; }
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# both write the same path (eval traces record the model's path), then are moved aside
"$1" run pipelines/quickstart.toml --dir "$work/run" --quiet && mv "$work/run" "$work/old"
"$2" run pipelines/quickstart.toml --dir "$work/run" --quiet && mv "$work/run" "$work/new"
(cd "$work/old" && find . -type f \( -name '*.parquet' -o -name '*.safetensors' \) | sort) > "$work/files"
[ -s "$work/files" ] || { echo "no Parquet or safetensors files were written" >&2; exit 1; }
same=0; differ=0
while read -r f; do
  if [ -f "$work/new/$f" ] && cmp -s "$work/old/$f" "$work/new/$f"; then
    same=$((same + 1))
  else
    differ=$((differ + 1)); echo "differs: $f"
  fi
done < "$work/files"
extra=$(cd "$work/new" && find . -type f \( -name '*.parquet' -o -name '*.safetensors' \) | sort | comm -13 "$work/files" -)
[ -z "$extra" ] || { echo "only in the new run:"; echo "$extra"; differ=$((differ + 1)); }
echo "$same identical, $differ different"
[ "$differ" -eq 0 ]
