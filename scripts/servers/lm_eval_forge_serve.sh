#!/usr/bin/env bash
# lm-eval-harness against `forge serve`: a loglikelihood (multiple-choice) task through its
# `local-completions` model, which sends token-id prompts with `echo` and `max_tokens: 0`. The task is
# written here (40 one-digit additions, three choices each; no dataset download), the server serves the
# sample teacher. Run by hand:
#
#   python3 -m venv /var/tmp/forge-lmeval-venv
#   /var/tmp/forge-lmeval-venv/bin/pip install "lm-eval[api]==0.4.13" transformers
#   scripts/servers/lm_eval_forge_serve.sh path/to/forge [/var/tmp/forge-lmeval-venv]
set -euo pipefail
forge=$1
venv=${2:-/var/tmp/forge-lmeval-venv}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
"$forge" serve --model "$root/samples/tiny-teacher" --served-model-name tiny --port 0 >"$work/url" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
until [ -s "$work/url" ]; do sleep 0.2; done
mkdir "$work/tasks"
python3 - "$work/tasks" <<'PY'
import json, random, sys
random.seed(1)
with open(f"{sys.argv[1]}/arith.jsonl", "w") as f:
    for _ in range(40):
        a, b = random.randint(1, 9), random.randint(1, 9)
        choices = [f" {a + b}", f" {a + b + 1}", f" {a + b - 1}"]
        random.shuffle(choices)
        f.write(json.dumps({"question": f"What is {a} + {b}? The answer is", "choices": choices,
                            "gold": choices.index(f" {a + b}")}) + "\n")
open(f"{sys.argv[1]}/arith.yaml", "w").write(f"""task: forge_arith
dataset_path: json
dataset_kwargs:
  data_files:
    test: {sys.argv[1]}/arith.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
PY
HF_HUB_OFFLINE=1 "$venv/bin/lm_eval" --model local-completions \
  --model_args "model=tiny,base_url=$(head -1 "$work/url")/completions,tokenizer=$root/samples/tiny-teacher,tokenizer_backend=huggingface,num_concurrent=1,max_retries=1" \
  --include_path "$work/tasks" --tasks forge_arith 2>&1 | grep -v "Requesting API" | tail -4
