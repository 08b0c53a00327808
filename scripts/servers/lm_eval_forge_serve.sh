#!/usr/bin/env bash
# lm-eval-harness against `forge serve`, both kinds of task, through its `local-completions` model with
# batched requests (`batch_size=8`: several prompts in one completions request):
# - loglikelihood (multiple choice): token-id prompts with `echo` and `max_tokens: 0`;
# - generate_until, with `--apply_chat_template`: the sample teacher's own chat format, greedy, stopped at
#   a blank line, the answer read from `\boxed{}`.
# The tasks are written here (40 problems each; no dataset download), the server serves the sample teacher.
# Run by hand:
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
ops = ["+", "-", "*"]
with open(f"{sys.argv[1]}/compute.jsonl", "w") as f:
    for _ in range(40):
        a, b, c = (random.randint(1, 9) for _ in range(3))
        expr = f"({a} {random.choice(ops)} {b}) {random.choice(ops)} {c}"
        f.write(json.dumps({"question": f"Compute {expr}.", "answer": str(eval(expr))}) + "\n")
open(f"{sys.argv[1]}/compute.yaml", "w").write(f"""task: forge_compute
dataset_path: json
dataset_kwargs:
  data_files:
    test: {sys.argv[1]}/compute.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}\\n\\nPlease reason step by step, and put your final answer within \\\\boxed{{}}."
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n\\n"]
  do_sample: false
  temperature: 0
  max_gen_toks: 128
filter_list:
  - name: boxed
    filter:
      - function: regex
        regex_pattern: "boxed\\\\{{(-?[0-9]+)\\\\}}"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""")
PY
args="model=tiny,base_url=$(head -1 "$work/url")/completions,tokenizer=$root/samples/tiny-teacher"
args="$args,tokenizer_backend=huggingface,num_concurrent=1,max_retries=1"
for task in forge_arith "forge_compute --apply_chat_template"; do
  # shellcheck disable=SC2086
  HF_HUB_OFFLINE=1 "$venv/bin/lm_eval" --model local-completions --model_args "$args" --batch_size 8 \
    --include_path "$work/tasks" --tasks $task 2>&1 | grep -v "Requesting API" | tail -5
done
