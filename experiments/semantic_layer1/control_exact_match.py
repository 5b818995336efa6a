"""Control for probe.py: one plain word per clip, the query's word equal to its class's demonstration word (2-way
1-shot, 10 episodes of 2 queries, Qwen2.5-Coder-0.5B reading text). Prints the prompt of the first episode, its
cached and uncached label scores, and the accuracy of both paths."""
import torch, numpy as np
from transformers import pipeline
from llm_codec.default_model import load_default_codec
from llm_codec.language_model import load_language_model
torch.set_num_threads(2)
codec, _, _ = load_default_codec()
lm, tok = load_language_model("Qwen/Qwen2.5-Coder-0.5B-Instruct")
pipe = pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tok, audio_format="text")
ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]
rng = np.random.default_rng(0)
words = ["apple", "river", "stone", "cloud", "green", "house", "table", "music", "light", "paper"]
acc = []; acc_naive = []
for trial in range(10):
    a, b = rng.choice(words, 2, replace=False)
    labels = ["kick", "snare"]
    demos = [ids(" " + a), ids(" " + b)]
    prefix = pipe.build_prefix(demos, labels, labels)
    q = [ids(" " + a), ids(" " + b)]
    s = pipe.score_labels(prefix, q, labels)
    n = pipe.score_labels_naive(prefix, q, labels)
    acc += [s[0].argmax() == 0, s[1].argmax() == 1]
    acc_naive += [n[0].argmax() == 0, n[1].argmax() == 1]
    if trial == 0:
        print(tok.decode(prefix + pipe.query_suffix(q[0])))
        print(s, n)
print("cached", np.mean(acc), "naive", np.mean(acc_naive))
