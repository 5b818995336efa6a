"""Probe, step 2 of 2: do the musicnn taggers' outputs carry instruments, drums and sound events, as vectors and as
words a frozen LM learns from in context?

Reads the clip features of `musicnn_features.py` (run first, in its TensorFlow environment) and scores the episodes
of docs/results.md (20 per setting, 2 queries per class, seed 0; `drum_type` demonstrations and queries from
different kits, `sound_event` from different games):

- prototypes, no LM: the nearest class prototype (cosine, `evaluation.fewshot.prototype_scores`) of each clip's mean
  tag probabilities (50-d), of its mean penultimate layer (200-d), and of the harness's log-mel reference;
- words: each clip written as its most probable tag ("tag1"), its two most probable tags in order ("tag2"), or the
  nearest of K centroids of the penultimate layer (spherical k-means, k-means++ seeding and 4 restarts, fitted without labels on the clips of
  `data/semantic_fit_balanced.jsonl`, one word per 3 s patch, repeats collapsed; "kmeansK"), scored by a
  prototype of the clips' word sets (no LM) and read as text by an LM (`audio_format="text"`: icl and calibrated,
  `FewShotEvaluator.episode_scores`, the paper's prompt format with the instruction line).

    python experiments/semantic_layer1/musicnn_probe.py --features /tmp/musicnn/features.npz \\
        --lm Qwen/Qwen2.5-Coder-1.5B-Instruct --out experiments/semantic_layer1/results/musicnn_probe.json

Method printed with the results. This is an experiment, not part of the package.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import pipeline

from llm_codec.audio_io import read_audio
from llm_codec.default_model import load_default_codec
from llm_codec.evaluation.fewshot import load_pool, prototype_scores, sample_episodes
from llm_codec.evaluation.metrics import load_metric
from llm_codec.evaluation.reference import logmel_statistics
from llm_codec.language_model import load_language_model
from llm_codec.pipeline_llm_codec import Prompt
from llm_codec.training.semantic_layer1 import spherical_kmeans

TASKS = {"instrument": None, "drum_type": "kit", "sound_event": "game", "speaker_id": None}  # task -> group key


def method_text(args) -> str:
    return (
        "musicnn 0.1.0 MTT_musicnn (MagnaTagATune, 50 tags; the package's TensorFlow graph and checkpoint, "
        "musicnn_features.py): 16 kHz, 96 mel bands, 3 s patches, short clips repeat-padded. Prototype (cosine) of "
        "the clip's mean tag probabilities / mean penultimate layer / the harness's log-mel statistics. Words: the "
        "top tag, the top two tags, or the nearest of K spherical k-means centroids of the penultimate layer per "
        f"patch (fitted on {args.fit}, seed 0, repeats collapsed); set-of-words prototype = mean of the clips' word "
        "indicator vectors; LMs read the words as text (icl / calibrated, instruction on). Episodes: "
        f"{args.episodes} per setting, 2 queries per class, seed 0, drum_type grouped by kit, sound_event by game. "
        "Accuracy with Wilson 95 % intervals."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", required=True)
    parser.add_argument("--tasks", default="data/tasks")
    parser.add_argument("--only", nargs="*", default=list(TASKS))
    parser.add_argument("--fit", default="data/semantic_fit_balanced.jsonl")
    parser.add_argument("--k", type=int, nargs="*", default=[16, 32])
    parser.add_argument("--settings", default="2x1,2x3,3x1,3x3,5x5")
    parser.add_argument("--lm", nargs="*", default=[])
    parser.add_argument("--lm-settings", default="2x1,3x3")
    parser.add_argument("--lm-words", nargs="*", default=["tag1", "kmeans16"])
    parser.add_argument("--pq", type=int, default=8, help="subspaces of the product-quantised words")
    parser.add_argument("--pq-k", type=int, default=16, help="centroids per subspace")
    parser.add_argument("--per-word-sum", action="store_true",
                        help="also score each query word alone after the usual demonstrations and sum")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    PQ = f"pq{args.pq}x{args.pq_k}"
    torch.set_num_threads(args.threads)
    print("Method:", method_text(args))
    data = np.load(args.features, allow_pickle=True)
    row = {p: i for i, p in enumerate(data["paths"])}
    tag_names = [str(t) for t in data["labels"]]
    tags, penultimate = torch.from_numpy(data["tags"]), torch.from_numpy(data["penultimate"])
    patch_penultimate = data["patch_penultimate"]

    fit_rows = []
    for line in Path(args.fit).read_text().splitlines():
        path = str((Path(args.fit).parent / json.loads(line)["path"]).resolve())
        if path in row:
            fit_rows.append(row[path])
    fit = torch.from_numpy(np.concatenate([patch_penultimate[i] for i in fit_rows]))
    centroids = {k: spherical_kmeans(F.normalize(fit, dim=-1), k, seed=0) for k in args.k}
    print(f"k-means fitted on {len(fit)} patches of {len(fit_rows)} clips")
    cuts = [torch.from_numpy(c) for c in np.array_split(np.arange(fit.shape[1]), args.pq)]
    pq_centroids = [spherical_kmeans(F.normalize(fit[:, c], dim=-1), args.pq_k, seed=0) for c in cuts]
    fit_tags = tags[fit_rows]
    tag_mean, tag_std = fit_tags.mean(0), fit_tags.std(0).clamp_min(1e-6)

    def words_of(i: int) -> dict[str, list[str]]:
        order = torch.argsort(tags[i], descending=True).tolist()
        out = {"tag1": [tag_names[order[0]]], "tag2": [tag_names[order[0]], tag_names[order[1]]]}
        z_order = torch.argsort((tags[i] - tag_mean) / tag_std, descending=True).tolist()
        out["ztag1"] = [tag_names[z_order[0]]]
        out["ztag2"] = [tag_names[z_order[0]], tag_names[z_order[1]]]
        patches = F.normalize(torch.from_numpy(patch_penultimate[i]), dim=-1)
        for k, c in centroids.items():
            codes = (patches @ c.T).argmax(-1).tolist()
            out[f"kmeans{k}"] = [f"w{k}_{c}" for j, c in enumerate(codes) if j == 0 or codes[j - 1] != c]
        raw = torch.from_numpy(patch_penultimate[i])
        pq, last = [], {}
        for patch in range(len(raw)):
            for view, (cut, c) in enumerate(zip(cuts, pq_centroids)):
                code = int((F.normalize(raw[patch, cut], dim=-1) @ c.T).argmax())
                if last.get(view) != code:
                    pq.append(f"pq{view}_{code}")
                last[view] = code
        out[PQ] = pq
        return out

    accuracy = load_metric("accuracy", keep_in_memory=True)
    settings = [tuple(int(v) for v in s.split("x")) for s in args.settings.split(",")]
    lm_settings = [tuple(int(v) for v in s.split("x")) for s in args.lm_settings.split(",")]
    results, timing, pipes, codec, english = [], {}, {}, None, {}
    for task in args.only:
        pool = load_pool(Path(args.tasks) / task, name=task)
        index = [row[str(Path(s).resolve())] for s in pool.sources]
        vectors = {"musicnn tags": F.normalize(tags[index], dim=-1),
                   "musicnn penultimate": F.normalize(penultimate[index], dim=-1)}
        logmel = {}
        words = [words_of(i) for i in index]
        kinds = list(words[0])
        vocab = {kind: sorted({w for ws in words for w in ws[kind]}) for kind in kinds}
        for n_way, k_shot in settings:
            if task == "sound_event" and (n_way, k_shot) == (5, 5):
                n_way, k_shot = 5, 3
            try:
                episodes = sample_episodes(pool, n_way, k_shot, 2, args.episodes, 0, TASKS[task])
            except ValueError as error:
                print(f"{task} {n_way}x{k_shot}: skipped ({' '.join(str(error).split())})")
                continue
            for i in {i for e in episodes for i in e.demos + e.queries} - set(logmel):
                logmel[i] = F.normalize(torch.from_numpy(logmel_statistics(read_audio(pool.sources[i], 16000))), dim=-1)
            tables = {**vectors, "logmel": torch.stack([logmel.get(i, torch.zeros_like(next(iter(logmel.values()))))
                                                         for i in range(len(pool))])}
            for kind in kinds:
                position = {w: j for j, w in enumerate(vocab[kind])}
                table = torch.zeros(len(pool), len(position))
                for i, ws in enumerate(words):
                    table[i, [position[w] for w in ws[kind]]] = 1.0
                tables[f"set-of-words {kind}"] = F.normalize(table, dim=-1)
            references = [label for e in episodes for label in e.query_labels]
            predictions = {name: [] for name in tables}
            for e in episodes:
                for name, table in tables.items():
                    scores = prototype_scores(table[e.demos], e.demo_labels, table[e.queries], e.labels)
                    predictions[name] += [e.labels[j] for j in np.asarray(scores).argmax(1)]
            if (n_way, k_shot) in lm_settings:
                for lm_name in args.lm:
                    if lm_name not in pipes:
                        if codec is None:
                            codec = load_default_codec()[0]
                        lm, tokenizer = load_language_model(lm_name)
                        pipes[lm_name] = pipeline("audio-few-shot-classification", model=codec, language_model=lm,
                                                  tokenizer=tokenizer, audio_format="text")
                        single = [w for w in codec.config.layer1_words
                                  if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1]
                        drawn = random.Random(1).sample(single, len(single))
                        names_needed = [f"w{k}_{c}" for k in args.k for c in range(k)] + [
                            f"pq{v}_{c}" for v in range(args.pq) for c in range(args.pq_k)]
                        english[lm_name] = dict(zip(names_needed, drawn))
                    pipe, short = pipes[lm_name], lm_name.split("/")[-1]
                    for kind in args.lm_words:
                        text = {w: english[lm_name][w] if w in english[lm_name] else w for ws in words for w in ws[kind]}

                        def ids(clip_words):
                            return pipe.tokenizer(" " + " ".join(text[w] for w in clip_words),
                                                  add_special_tokens=False)["input_ids"]

                        began = time.perf_counter()
                        names = [f"{m} {short} {kind}" for m in ("icl", "calibrated", "icl per-word sum", "icl word lines",
                                                                  "calibrated word lines", "icl glossary")]
                        if not args.per_word_sum:
                            names[2] = None
                        for name in names:
                            if name is not None:
                                predictions[name] = []
                        for e in tqdm(episodes, desc=f"{task} {n_way}x{k_shot} {short} {kind}", leave=False):
                            prefix = pipe.build_prefix([ids(words[i][kind]) for i in e.demos], e.demo_labels, e.labels)
                            icl = pipe.score_labels(prefix, [ids(words[i][kind]) for i in e.queries], e.labels,
                                                    True, 8, False)
                            content_free = Prompt().add_text(pipe.tokenizer, "N/A").ids  # as FewShotEvaluator
                            baseline = pipe.score_labels(prefix, [content_free], e.labels, True, 1, False)[0]
                            singles = [(q, w) for q, i in enumerate(e.queries) for w in words[i][kind]]
                            summed = np.zeros_like(icl)
                            if args.per_word_sum:
                                single = pipe.score_labels(prefix, [ids([w]) for _, w in singles], e.labels, True, 8, False)
                                for (q, _), row_scores in zip(singles, single):
                                    summed[q] += row_scores
                            # one prompt line per demonstration word (shuffled), each query word scored alone, scores
                            # summed over the query's words (and the same after subtracting the content-free scores)
                            lines = [(ids([w]), label) for i, label in zip(e.demos, e.demo_labels) for w in words[i][kind]]
                            random.Random(0).shuffle(lines)  # in demonstration order, the last label wins
                            line_prefix = pipe.build_prefix([x for x, _ in lines], [y for _, y in lines], e.labels)
                            line_scores = pipe.score_labels(line_prefix, [ids([w]) for _, w in singles], e.labels,
                                                            True, 8, False)
                            line_baseline = pipe.score_labels(line_prefix, [content_free], e.labels, True, 1, False)[0]
                            voted, voted_calibrated = np.zeros_like(icl), np.zeros_like(icl)
                            for (q, _), row_scores in zip(singles, line_scores):
                                voted[q] += row_scores
                                voted_calibrated[q] += row_scores - line_baseline
                            # one line per label listing its demonstrations' distinct words; each query word scored
                            # alone after "<word> ->", label log-likelihoods summed over the query's words
                            glossary_text = "".join(
                                f"{label}: " + " ".join(dict.fromkeys(
                                    text[w] for i, l in zip(e.demos, e.demo_labels) if l == label for w in words[i][kind]))
                                + "\n" for label in e.labels)
                            glossary = Prompt().add_ids(pipe.bos_ids).add_text(
                                pipe.tokenizer, "Each word below belongs to the label of the line it appears on.\n"
                                + glossary_text + "###\nInput:").ids
                            glossary_scores = pipe.score_labels(glossary, [ids([w]) for _, w in singles], e.labels,
                                                                True, 8, False)
                            looked_up = np.zeros_like(icl)
                            for (q, _), row_scores in zip(singles, glossary_scores):
                                looked_up[q] += row_scores
                            for name, table in zip(names, (icl, icl - baseline[None], summed, voted, voted_calibrated,
                                                           looked_up)):
                                if name is None:
                                    continue
                                predictions[name] += [e.labels[j] for j in table.argmax(1)]
                        timing[f"{task} {n_way}x{k_shot} {short} {kind}"] = time.perf_counter() - began
            for name, predicted in predictions.items():
                metric = accuracy.compute(predictions=predicted, references=references)
                results.append(dict(task=task, setting=f"{n_way}x{k_shot}", method=name, chance=1 / n_way, **metric))
                print(f"{task:<12} {n_way}x{k_shot} {name:<40} {metric['accuracy']:.3f} "
                      f"[{metric['ci_low']:.3f}, {metric['ci_high']:.3f}] n={metric['n']}", flush=True)
        top = {}
        for label, ws in zip(pool.labels, words):
            top.setdefault(label, {}).setdefault(ws["tag1"][0], 0)
            top[label][ws["tag1"][0]] += 1
        print(task, "top tag per class:", {label: sorted(c.items(), key=lambda x: -x[1])[:3] for label, c in top.items()})
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(dict(args=vars(args), method=method_text(args), results=results, timing=timing),
                                  indent=1))


if __name__ == "__main__":
    main()
