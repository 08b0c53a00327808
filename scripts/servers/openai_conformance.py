"""The official `openai` Python client against an OpenAI-compatible server serving forge's sample teacher
as `tiny` (`forge serve --model samples/tiny-teacher --served-model-name tiny`); the `serve::` test runs it.

    python scripts/servers/openai_conformance.py http://127.0.0.1:8000/v1

Each check asserts; the last line printed is "N checks passed".
"""

import sys

import openai

URL = sys.argv[1]
client = openai.OpenAI(base_url=URL, api_key="none", max_retries=0, timeout=120)
QUESTION = [{"role": "user", "content": "What is 3 + 4?"}]
checks = 0


def check(name, ok, detail=""):
    global checks
    if not ok:
        sys.exit(f"FAILED {name}: {detail}")
    checks += 1
    print(f"ok {name}")


models = client.models.list().data
check("models", [m.id for m in models] == ["tiny"], models)

# chat, greedy, with logprobs and the top two at each position
r = client.chat.completions.create(
    model="tiny", messages=QUESTION, temperature=0, max_tokens=40, logprobs=True, top_logprobs=2
)
c = r.choices[0]
text = c.message.content
check("chat text", isinstance(text, str) and len(text) > 0, r)
check("chat role", c.message.role == "assistant", c.message)
check("chat finish", c.finish_reason in ("stop", "length"), c.finish_reason)
positions = c.logprobs.content
check("chat logprobs", len(positions) == r.usage.completion_tokens, (len(positions), r.usage))
# as vLLM and llama.cpp, the end-of-sequence token a sample ended with is listed last (not in the text)
tokens = [p.token for p in positions]
if c.finish_reason == "stop":
    check("end of sequence listed", tokens[-1] == "<|im_end|>", tokens[-3:])
    tokens.pop()
check("chat tokens spell the text", "".join(tokens) == text, tokens)
check(
    "chat top logprobs",
    all(len(p.top_logprobs) == 2 and p.top_logprobs[0].logprob >= p.top_logprobs[1].logprob for p in positions),
)
check("greedy takes the most likely token", all(p.token == p.top_logprobs[0].token for p in positions))
check("usage", r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage)

# the same request streamed: the deltas add up to the same text, the role comes first, usage last
chunks = list(
    client.chat.completions.create(
        model="tiny",
        messages=QUESTION,
        temperature=0,
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
)
deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
check("stream role first", deltas[0].role == "assistant", deltas[0])
check("stream text", "".join(d.content or "" for d in deltas) == text, deltas)
finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
check("stream finish", finishes == [c.finish_reason], finishes)
check("stream usage", chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens)

# n samples with a seed: n choices, reproducible with the same seed
def sampled(seed):
    r = client.chat.completions.create(
        model="tiny", messages=QUESTION, temperature=1.0, max_tokens=24, n=3, seed=seed
    )
    return [ch.message.content for ch in sorted(r.choices, key=lambda ch: ch.index)]


a, b = sampled(11), sampled(11)
check("n choices", len(a) == 3, a)
check("seeded samples repeat", a == b, (a, b))
check("samples differ", len(set(a)) > 1, a)

# a stop string ends the text before it
full = client.chat.completions.create(model="tiny", messages=QUESTION, temperature=0, max_tokens=40)
full_text = full.choices[0].message.content
stop = full_text[3:5]
cut = client.chat.completions.create(model="tiny", messages=QUESTION, temperature=0, max_tokens=40, stop=[stop])
cut_text = cut.choices[0].message.content
check("stop string", cut.choices[0].finish_reason == "stop" and full_text.startswith(cut_text + stop), (cut_text, stop))
check("stop string left out", not cut_text.endswith(stop), cut_text)

# the legacy completions API, plain and streamed, with logprobs
r = client.completions.create(model="tiny", prompt="12 + 5 =", temperature=0, max_tokens=16, logprobs=2)
c = r.choices[0]
check("completion", len(c.text) > 0 and c.finish_reason in ("stop", "length"), r)
check("completion logprobs", len(c.logprobs.tokens) == len(c.logprobs.token_logprobs) == r.usage.completion_tokens)
check("completion top logprobs", all(len(t) <= 2 for t in c.logprobs.top_logprobs))
streamed = client.completions.create(model="tiny", prompt="12 + 5 =", temperature=0, max_tokens=16, stream=True)
check("completion stream", "".join(ch.choices[0].text for ch in streamed if ch.choices) == c.text)

# echo: a prompt scored as lm-eval-harness's loglikelihood asks (max_tokens 0), and given back before a
# completion; scoring prompt + greedy completion gives the completion's tokens the logprobs they were
# sampled with
prompt = "12 + 5 ="
scored = client.completions.create(model="tiny", prompt=prompt + c.text, echo=True, max_tokens=0, logprobs=1,
                                   temperature=0)
e = scored.choices[0]
check("echo text", e.text == prompt + c.text, e.text)
check("echo first token has no logprob", e.logprobs.token_logprobs[0] is None and e.logprobs.top_logprobs[0] is None)
check("echo spans the prompt", len(e.logprobs.tokens) == scored.usage.prompt_tokens and scored.usage.completion_tokens == 0,
      (len(e.logprobs.tokens), scored.usage))
# the completion's positions without the end-of-sequence token it may end with (not part of its text)
n = len(c.logprobs.tokens) - (c.finish_reason == "stop")
tail = e.logprobs.token_logprobs[-n:]
check("echo scores the completion as it was sampled",
      e.logprobs.tokens[-n:] == c.logprobs.tokens[:n]
      and all(abs(a - b) < 1e-4 for a, b in zip(tail, c.logprobs.token_logprobs[:n])),
      (e.logprobs.tokens[-n:], c.logprobs.tokens, tail, c.logprobs.token_logprobs))
check("echo offsets", e.logprobs.text_offset[0] == 0 and e.logprobs.text_offset == sorted(e.logprobs.text_offset))
both = client.completions.create(model="tiny", prompt=prompt, echo=True, max_tokens=16, logprobs=2, temperature=0)
b = both.choices[0]
# the same prompt as token ids (as lm-eval-harness sends it): the same scores
named = client.completions.create(model="tiny", prompt=prompt + c.text, echo=True, max_tokens=0, logprobs=1,
                                  extra_body={"return_tokens_as_token_ids": True}).choices[0]
ids = [int(t.removeprefix("token_id:")) for t in named.logprobs.tokens]
by_ids = client.completions.create(model="tiny", prompt=[ids], echo=True, max_tokens=0, logprobs=1).choices[0]
check("echo of token ids", by_ids.text == e.text and by_ids.logprobs.token_logprobs == e.logprobs.token_logprobs,
      (by_ids.text, e.text))
m = len(c.logprobs.tokens)
check("echo before a completion", b.text == prompt + c.text and b.logprobs.tokens[-m:] == c.logprobs.tokens,
      (b.text, b.logprobs.tokens))
check("echo completion offsets move past the prompt", b.logprobs.text_offset[-m] == len(prompt), b.logprobs.text_offset)

# echo streamed: the prompt comes first, the chunks add up to the whole response
streamed = [ch.choices[0] for ch in client.completions.create(
    model="tiny", prompt=prompt, echo=True, max_tokens=16, logprobs=2, temperature=0, stream=True) if ch.choices]
check("streamed echo text", "".join(ch.text for ch in streamed) == b.text and streamed[0].text.startswith(prompt),
      [ch.text for ch in streamed])
joined = {key: sum((getattr(ch.logprobs, key) for ch in streamed if ch.logprobs), [])
          for key in ("tokens", "token_logprobs", "text_offset")}
check("streamed echo logprobs", joined == {key: getattr(b.logprobs, key) for key in joined}, (joined, b.logprobs))

# several prompts in one request (as lm-eval-harness batches them): choices prompt by prompt, each as the
# prompt alone would get them (samples depend on the seed and their index only)
prompts = ["12 + 5 =", "What is 3 + 4?"]
many = client.completions.create(model="tiny", prompt=prompts, temperature=1.0, max_tokens=16, n=2, seed=5)
alone = [client.completions.create(model="tiny", prompt=p, temperature=1.0, max_tokens=16, n=2, seed=5)
         for p in prompts]
check("several prompts", [ch.index for ch in many.choices] == [0, 1, 2, 3], many.choices)
check("several prompts answered as alone",
      [ch.text for ch in many.choices] == [ch.text for a in alone for ch in a.choices], (many, alone))
check("several prompts' usage", many.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
      and many.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone), many.usage)
scored = client.completions.create(model="tiny", prompt=[ids, ids[:5]], echo=True, max_tokens=0, logprobs=1)
check("several token-id prompts scored", [ch.logprobs.token_logprobs for ch in scored.choices]
      == [e.logprobs.token_logprobs, e.logprobs.token_logprobs[:5]], scored.choices)

# best_of: the n samples of the best_of drawn with the highest log-probability per token (the end of
# sequence included); the usage counts all that were drawn
drawn = client.completions.create(model="tiny", prompt=prompt, temperature=1.0, max_tokens=16, n=4, seed=3, logprobs=0)
mean = {ch.index: sum(ch.logprobs.token_logprobs) / len(ch.logprobs.token_logprobs) for ch in drawn.choices}
ranked = [drawn.choices[i].text for i in sorted(mean, key=lambda i: -mean[i])]
best = client.completions.create(model="tiny", prompt=prompt, temperature=1.0, max_tokens=16, n=2, best_of=4, seed=3)
check("best_of draws apart from the first samples", ranked[:2] != [ch.text for ch in drawn.choices[:2]], mean)
check("best_of keeps the best", [ch.text for ch in best.choices] == ranked[:2] and
      [ch.index for ch in best.choices] == [0, 1], (best.choices, ranked))
check("best_of usage", best.usage.completion_tokens == drawn.usage.completion_tokens, (best.usage, drawn.usage))

# logit_bias: -100 bans the greedy first token, so the next most likely is taken, with the model's own
# log-probability (the bias steers the choice, not the reported numbers); +100 makes a token the only choice
named = {"return_tokens_as_token_ids": True}
plain = client.completions.create(model="tiny", prompt=prompt, temperature=0, max_tokens=4, logprobs=2,
                                  extra_body=named).choices[0].logprobs
first, second = sorted(plain.top_logprobs[0].items(), key=lambda kv: -kv[1])
banned = client.completions.create(model="tiny", prompt=prompt, temperature=0, max_tokens=4, logprobs=1,
                                   extra_body=named, logit_bias={first[0].removeprefix("token_id:"): -100})
lp = banned.choices[0].logprobs
check("logit_bias bans a token", lp.tokens[0] == second[0] and abs(lp.token_logprobs[0] - second[1]) < 1e-5,
      (lp.tokens[0], lp.token_logprobs[0], first, second))
forced = client.completions.create(model="tiny", prompt=prompt, temperature=1.0, max_tokens=6, seed=1,
                                   logit_bias={"65": 100})
check("logit_bias forces a token", forced.choices[0].text == "AAAAAA", forced.choices[0].text)

# errors, as OpenAI reports them
try:
    client.chat.completions.create(model="gpt-nothing", messages=QUESTION, max_tokens=4)
    check("unknown model", False, "no error")
except openai.NotFoundError:
    check("unknown model", True)
try:
    client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=10**6)
    check("overlong request", False, "no error")
except openai.BadRequestError as e:
    check("overlong request", "context" in str(e), e)

try:
    client.completions.create(model="tiny", prompt=prompt, max_tokens=0)
    check("nothing to do without echo", False, "no error")
except openai.BadRequestError as e:
    check("nothing to do without echo", "max_tokens" in str(e), e)

try:
    client.completions.create(model="tiny", prompt=[10**7], max_tokens=1)
    check("token id outside the vocabulary", False, "no error")
except openai.BadRequestError as e:
    check("token id outside the vocabulary", "vocabulary" in str(e), e)

try:
    client.completions.create(model="tiny", prompt=prompt, max_tokens=4, logit_bias={"1000000": 5})
    check("logit_bias outside the vocabulary", False, "no error")
except openai.BadRequestError as e:
    check("logit_bias outside the vocabulary", "vocabulary" in str(e), e)

try:
    list(client.completions.create(model="tiny", prompt=prompt, max_tokens=4, n=1, best_of=2, stream=True))
    check("best_of is not streamed", False, "no error")
except openai.BadRequestError as e:
    check("best_of is not streamed", "best_of" in str(e), e)

print(f"{checks} checks passed")
