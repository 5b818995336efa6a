"""Probe: each clip written as a short, order-free summary of its layer-1 words, so that clips of a class give the
same few words and a frozen LM has something to copy.

The harness's `icl` writes a clip as its whole run of layer-1 words (4-40 words). Those words almost never recur
between clips of a class (experiments/README.md, "prompt formats"), although their histograms do separate the
classes (`codes`). Here the layer-1 words are first read through G coarse clusters of layer 1's own vectors (as
`coarse_words_probe.py`: spherical k-means of the projected table, each cluster written as its word nearest the
centroid), then each clip is reduced to its K most characteristic clusters: the largest term frequency x inverse
document frequency, the document frequencies counted on 450 background clips of the codec's training split (150
per kind, seeded, no labels). The K clusters are written in a fixed (cluster-number) order, so two clips with the
same K clusters read the same.

Scored on the episodes of docs/results.md (20 per setting, 2 queries per class, seed 0, group keys as
`benchmarks/run_fewshot_tasks.sh`): icl / calibrated with the LM, `jaccard` (no LM: the label of the demonstration
whose summary shares most clusters with the query's, the mean over the class breaking ties), `codes` (no LM: the
class prototype of the summaries' indicator vectors) and logmel.

    python experiments/prompt_format/summary_words_probe.py --no-lm --groups 16 32 64 --keep 2 3 4 \\
        --out experiments/prompt_format/results/summary_prototype.jsonl
    python experiments/prompt_format/summary_words_probe.py --groups 16 --keep 2 \\
        --out experiments/prompt_format/results/summary_smollm2.jsonl

This is an experiment, not part of the package.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import pipeline

from llm_codec.audio_io import read_audio
from llm_codec.default_model import load_default_codec
from llm_codec.evaluation.fewshot import FewShotEvaluator, load_pool, sample_episodes
from llm_codec.evaluation.metrics import load_metric
from llm_codec.language_model import load_language_model
from llm_codec.training.semantic_layer1 import spherical_kmeans
from word_lookup_probe import GROUP_KEYS  # this folder is on sys.path when run as a script


def background_clips(manifest: str, per_kind: int, seed: int = 0) -> list[np.ndarray]:
    """`per_kind` random clips of each `kind` of a data manifest, as 16 kHz float arrays."""
    rows = [json.loads(line) for line in open(manifest)]
    rng = np.random.default_rng(seed)
    chosen = []
    for kind in sorted({r["kind"] for r in rows}):
        of_kind = [r for r in rows if r["kind"] == kind]
        chosen += [of_kind[i] for i in rng.choice(len(of_kind), min(per_kind, len(of_kind)), replace=False)]
    return [read_audio(str(Path(manifest).parent / row["path"]), 16000) for row in chosen]


def layer1_codes(pipe, arrays, batch_size=8) -> list[list[int]]:
    """Layer-1 codes of each 16 kHz clip."""
    return [codes[0].flatten().tolist() for codes in pipe.encode_audio(arrays, 16000, batch_size)]


def summary(clusters: np.ndarray, idf: np.ndarray, keep: int) -> list[int]:
    """The `keep` clusters of a clip (cluster number per code) with the largest tf x idf, in cluster order."""
    counts = np.bincount(clusters, minlength=len(idf)).astype(float)
    score = counts / counts.sum() * idf
    top = [int(c) for c in np.argsort(-score, kind="stable")[:keep] if counts[c] > 0]
    return sorted(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lm", default="default")
    parser.add_argument("--audio-format", default="ids")
    parser.add_argument("--groups", type=int, nargs="+", default=[32])
    parser.add_argument("--keep", type=int, nargs="+", default=[3])
    parser.add_argument("--tasks", nargs="+", default=["sound_event", "instrument", "drum_type"])
    parser.add_argument("--settings", nargs="+", default=["2x1", "3x3"])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--background", default="data/codec_train.jsonl")
    parser.add_argument("--background-per-kind", type=int, default=150)
    parser.add_argument("--no-lm", action="store_true", help="only the methods without an LM")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    codec, _, (lm, tokenizer) = load_default_codec()
    if args.lm != "default":
        lm, tokenizer = load_language_model(args.lm)
    kwargs = {"audio_format": args.audio_format} if args.audio_format != "ids" else {}
    pipe = pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tokenizer, **kwargs)
    processor = pipe.codec_processor
    accuracy = load_metric("accuracy")
    table = codec.quantizer.layers[0].search_table()[0].float()
    unit = F.normalize(table, dim=-1)

    began = time.perf_counter()
    background = layer1_codes(pipe, background_clips(args.background, args.background_per_kind))
    print(f"background: {len(background)} clips encoded in {time.perf_counter() - began:.0f} s", flush=True)
    pools = {task: load_pool(f"data/tasks/{task}", name=task) for task in args.tasks}
    task_codes = {}
    for task, pool in pools.items():
        task_codes[task] = layer1_codes(pipe, [pool.audio(i, 16000) for i in range(len(pool))])

    methods = ("jaccard", "codes", "logmel") if args.no_lm else ("icl", "calibrated", "jaccard", "codes", "logmel")
    out = open(args.out, "a")
    for groups in args.groups:
        centroids = spherical_kmeans(table, groups, seed=0, restarts=2)
        cluster_of = (unit @ centroids.T).argmax(1).numpy()
        head = [int(torch.where(torch.from_numpy(cluster_of == c))[0][(unit[cluster_of == c] @ centroids[c]).argmax()])
                if (cluster_of == c).any() else -1 for c in range(groups)]
        df = np.zeros(groups)
        for codes in background:
            df[np.unique(cluster_of[codes])] += 1
        idf = np.log((1 + len(background)) / (1 + df)) + 1.0
        for keep in args.keep:
            for task, pool in pools.items():
                summaries = [summary(cluster_of[codes], idf, keep) for codes in task_codes[task]]
                evaluator = FewShotEvaluator(pipe, pool, progress=False, collapse_repeats=False)
                for index, clusters in enumerate(summaries):
                    words = [head[c] for c in clusters]
                    evaluator._ids[index] = processor.codes_to_ids((torch.tensor([words]),), layers=(0,))[0]
                    indicator = torch.zeros(groups)
                    indicator[clusters] = 1.0
                    evaluator._code_histograms[index] = F.normalize(indicator, dim=-1)
                for setting in args.settings:
                    n_way, k_shot = map(int, setting.split("x"))
                    episodes = sample_episodes(pool, n_way, k_shot, 2, args.episodes, 0, GROUP_KEYS[task])
                    predictions = {m: [] for m in methods}
                    references, identical, began = [], [], time.perf_counter()
                    for episode in episodes:
                        scores = evaluator.episode_scores(episode, tuple(m for m in methods if m != "jaccard"))
                        truth = [episode.labels.index(label) for label in episode.query_labels]
                        jaccard = np.zeros((len(episode.queries), len(episode.labels)))
                        for q, query in enumerate(episode.queries):
                            qs = set(summaries[query])
                            for j, label in enumerate(episode.labels):
                                sims = [len(qs & set(summaries[d])) / len(qs | set(summaries[d]))
                                        for d, dl in zip(episode.demos, episode.demo_labels) if dl == label]
                                jaccard[q, j] = max(sims) + 1e-3 * np.mean(sims)
                            identical.append(any(summaries[d] == summaries[query] and dl == episode.query_labels[q]
                                                 for d, dl in zip(episode.demos, episode.demo_labels)))
                        scores["jaccard"] = jaccard
                        for m in methods:
                            predictions[m] += scores[m].argmax(1).tolist()
                        references += truth
                    row = {"lm": args.lm, "groups": groups, "keep": keep, "task": task, "setting": setting,
                           "queries": len(references), "seconds": round(time.perf_counter() - began, 1),
                           "query_matches_own_class_demo": round(float(np.mean(identical)), 3)}
                    for m in methods:
                        result = accuracy.compute(predictions=predictions[m], references=references)
                        row[m] = round(result["accuracy"], 3)
                    print(json.dumps(row), flush=True)
                    out.write(json.dumps(row) + "\n")
                    out.flush()


if __name__ == "__main__":
    main()
