"""Probe: the default codec's layer-1 words read through G clusters of the words (k-means of layer 1's projected
table), the word nearest each centroid standing for its cluster (the processor's `layer1_heads`, no retraining).

    python experiments/prompt_format/coarse_words_probe.py LM FORMAT GS SETTINGS TASKS
    e.g. python experiments/prompt_format/coarse_words_probe.py default ids 32,64 2x1,3x3 sound_event,instrument,drum_type
         python experiments/prompt_format/coarse_words_probe.py Qwen/Qwen2.5-Coder-1.5B-Instruct text 32 2x1,3x3 sound_event,instrument

Scores icl / calibrated (repeats collapsed), `codes` (prototype of the heads) and logmel on the episodes of
docs/results.md (20 per setting, 2 queries per class, seed 0). Outputs: results/coarse_heads_*.txt. The
prototype-only table (results/coarse_heads_prototype.txt) came from the same clustering with G = 8 ... 256 and
`prototype_scores` of the head histograms, without an LM.
"""
import sys, numpy as np, torch, torch.nn.functional as F, time
from transformers import pipeline
from llm_codec.default_model import load_default_codec
from llm_codec.language_model import load_language_model
from llm_codec.evaluation.fewshot import FewShotEvaluator, load_pool, sample_episodes
from llm_codec.training.semantic_layer1 import spherical_kmeans
from word_lookup_probe import GROUP_KEYS  # this folder is on sys.path when run as a script
lm_name, fmt, Gs, settings = sys.argv[1], sys.argv[2], [int(g) for g in sys.argv[3].split(",")], sys.argv[4].split(",")
tasks = sys.argv[5].split(",")
codec, _, (lm, tok) = load_default_codec()
if lm_name != "default":
    lm, tok = load_language_model(lm_name)
pipe = pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tok, **({"audio_format": fmt} if fmt != "ids" else {}))
table = codec.quantizer.layers[0].search_table()[0].float()
unit = F.normalize(table, dim=-1)
for G in Gs:
    cent = spherical_kmeans(table, G, seed=0, restarts=2)
    cluster = (unit @ cent.T).argmax(1)
    head_of_cluster = [int(torch.where(cluster == c)[0][(unit[cluster == c] @ cent[c]).argmax()]) for c in range(G)]
    heads = [head_of_cluster[int(c)] for c in cluster]
    pipe.codec_processor.layer1_heads = heads
    for task in tasks:
        pool = load_pool(f"data/tasks/{task}", name=task)
        ev = FewShotEvaluator(pipe, pool, progress=False, collapse_repeats=True)
        for st in settings:
            nw, ks = map(int, st.split("x"))
            eps = sample_episodes(pool, nw, ks, 2, 20, 0, GROUP_KEYS[task])
            t0 = time.time(); corr = {}; n = 0; L = []
            for e in eps:
                sc = ev.episode_scores(e, ("icl", "calibrated", "codes", "logmel"))
                truth = np.array([e.labels.index(l) for l in e.query_labels])
                for m, s in sc.items():
                    corr[m] = corr.get(m, 0) + int((s.argmax(1) == truth).sum())
                n += len(truth); L += [len(ev.clip_ids(i)) for i in e.queries]
            print(lm_name, "G", G, task, st, {m: round(c / n, 3) for m, c in corr.items()}, f"{time.time()-t0:.0f}s ids/query {np.mean(L):.1f}", flush=True)
