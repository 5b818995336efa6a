"""Probe: exact overlap of the default codec's layer-1 words between a query and the demonstrations of its class.

No LM. For the episodes of docs/results.md (20 per setting, 2 queries per class, seed 0): the share of a query's distinct
words found in its own class's demonstrations, and two word-matching classifiers (ties counted as wrong). Output:
results/word_overlap.txt. Run: python experiments/prompt_format/word_overlap.py
"""
import numpy as np, collections
from transformers import pipeline
from llm_codec.default_model import load_default_codec
from llm_codec.evaluation.fewshot import FewShotEvaluator, load_pool, sample_episodes
from word_lookup_probe import GROUP_KEYS  # this folder is on sys.path when run as a script
codec, _, (lm, tok) = load_default_codec()
pipe = pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tok)
for task in ("instrument", "sound_event", "drum_type"):
    gk = GROUP_KEYS[task]
    pool = load_pool(f"data/tasks/{task}", name=task)
    ev = FewShotEvaluator(pipe, pool, progress=False, collapse_repeats=False)
    for nw, ks in [(2, 1), (3, 3)]:
        eps = sample_episodes(pool, nw, ks, 2, 20, 0, gk)
        c_match = c_count = n = 0; hit = []; nwords = []
        for e in eps:
            demo = collections.defaultdict(collections.Counter)
            for i, l in zip(e.demos, e.demo_labels):
                demo[l].update(ev.clip_ids(i))
            for q, ql in zip(e.queries, e.query_labels):
                ids = ev.clip_ids(q); qc = collections.Counter(ids)
                nwords.append(len(qc))
                # exact-match vote on distinct words
                s1 = np.array([sum(1 for w in qc if w in demo[l]) for l in e.labels], float)
                # count-weighted: sum over query words of count * demo-count share
                s2 = np.array([sum(qc[w] * demo[l][w] / sum(demo[l].values()) for w in qc) for l in e.labels])
                t = e.labels.index(ql)
                c_match += s1.argmax() == t and s1.max() > s1.min(); c_count += s2.argmax() == t and s2.max() > s2.min()
                hit.append(np.mean([w in demo[ql] for w in qc]))
                n += 1
        print(task, f"{nw}x{ks}", "distinct-words vote", round(c_match / n, 3), "count-weighted", round(c_count / n, 3),
              "share of query words seen in own-class demos", round(float(np.mean(hit)), 3), "distinct words/query", np.mean(nwords), flush=True)
