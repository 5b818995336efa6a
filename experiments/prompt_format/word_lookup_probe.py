"""Probe: does a prompt of one layer-1 word per demonstration line, with the query scored word by word, let a frozen
LM learn in context what the words carry?

The harness's `icl` writes each clip as its whole run of layer-1 words, then the label. An LM copies the label of a
demonstration that shares a distinctive word with the query, but it does not add up many partial overlaps inside
long runs (experiments/README.md). Here each demonstration clip becomes one prompt line per distinct layer-1 word
(`###\\nInput: <word>\\nOutput: <label>`), in the clip's order, clips in the episode's order, so a query word's
label is one associative recall away; the query is scored once per distinct word (each on the same cached prefix),
and the query's score for a label is the mean over its words of the LM's (length-normalised) log-probability of the
label. The LM does the learning (word -> label recall from the prompt); the probe only averages the LM's
per-word answers. Same episodes as docs/results.md (20 per setting, 2 queries per class, seed 0, group keys as
`benchmarks/run_fewshot_tasks.sh`), scored next to the whole-run `icl`, `codes` and `logmel`.

    nice -n 5 python experiments/prompt_format/word_lookup_probe.py --tasks drum_type instrument sound_event \\
        --out experiments/prompt_format/results/lookup_smollm2.json

This is an experiment, not part of the package. Method printed with the results.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from llm_codec.default_model import load_default_codec
from llm_codec.evaluation.fewshot import FewShotEvaluator, load_pool, sample_episodes
from llm_codec.evaluation.metrics import load_metric
from llm_codec.language_model import load_language_model
from llm_codec.pipeline_llm_codec import Prompt
from llm_codec.training.semantic_layer1 import spherical_kmeans
from transformers import pipeline

GROUP_KEYS = {"drum_type": "kit", "sound_event": "game", "speaker_id": None, "language_id": None, "instrument": None}


def distinct(ids: list[int]) -> list[int]:
    """The ids in order of first appearance, each once."""
    return list(dict.fromkeys(ids))


def lookup_scores(pipe, evaluator, episode, max_words: int | None, shuffle: bool = False):
    """`(num_queries, N)` mean per-word label log-probabilities, and the per-word vote counts. `shuffle`: the
    demonstration lines in a seeded random order instead of clip by clip (in clip order the lines of the last
    demonstration's label come last, and the LM answers that label for most words)."""
    lines = []
    for index, label in zip(episode.demos, episode.demo_labels):
        for word in distinct(evaluator.clip_ids(index))[:max_words]:
            lines.append(([word], label))
    if shuffle:
        random.Random(0).shuffle(lines)
    demo_ids, demo_labels = [x for x, _ in lines], [y for _, y in lines]
    prefix = pipe.build_prefix(demo_ids, demo_labels, episode.labels, 1, True)
    words_per_query = [distinct(evaluator.clip_ids(i))[:max_words] for i in episode.queries]
    flat = [[w] for words in words_per_query for w in words]
    table = pipe.score_labels(prefix, flat, episode.labels, True, 16, False)
    content_free = Prompt().add_text(pipe.tokenizer, "N/A").ids
    baseline = pipe.score_labels(prefix, [content_free], episode.labels, True, 1, False)[0]
    means, votes, calibrated, start = [], [], [], 0
    for words in words_per_query:
        block = table[start : start + len(words)]
        start += len(words)
        mean = block.mean(axis=0)
        means.append(mean)
        calibrated.append(mean - baseline)
        votes.append(np.bincount(block.argmax(axis=1), minlength=len(episode.labels)) + 1e-3 * mean)
    return np.stack(means), np.stack(votes), np.stack(calibrated), len(prefix)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["drum_type", "instrument", "sound_event"])
    parser.add_argument("--settings", nargs="+", default=["2x1", "3x3"])
    parser.add_argument("--lm", default="default", help="'default' (the embedded codec's SmolLM2) or an offline LM name")
    parser.add_argument("--model", default=None, help="a saved codec folder (default: the embedded default codec)")
    parser.add_argument("--audio-format", default=None, help="'text' for an LM whose vocabulary differs")
    parser.add_argument("--max-words", type=int, default=None, help="at most this many distinct words per clip")
    parser.add_argument("--shuffle", action="store_true", help="demonstration lines in a seeded random order")
    parser.add_argument("--coarse", type=int, default=None,
                        help="read each layer-1 word as the head of its cluster among G clusters of the word table")
    parser.add_argument("--methods", default="icl,calibrated,codes,logmel",
                        help="the harness's methods scored next to the lookup")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    codec, _, (lm, tokenizer) = load_default_codec()
    if args.model:
        from llm_codec import LLMCodecModel

        codec = LLMCodecModel.from_pretrained(args.model).eval()
    if args.lm != "default":
        lm, tokenizer = load_language_model(args.lm)
    kwargs = {"audio_format": args.audio_format} if args.audio_format else {}
    pipe = pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tokenizer, **kwargs)
    if args.coarse:  # coarse_words_probe.py's clusters: each word read as the head word of its cluster
        table = codec.quantizer.layers[0].search_table()[0].float()
        unit = torch.nn.functional.normalize(table, dim=-1)
        centroids = spherical_kmeans(table, args.coarse, seed=0, restarts=2)
        cluster = (unit @ centroids.T).argmax(1)
        head_of_cluster = [int(torch.where(cluster == c)[0][(unit[cluster == c] @ centroids[c]).argmax()])
                           for c in range(args.coarse)]
        pipe.codec_processor.layer1_heads = [head_of_cluster[int(c)] for c in cluster]
    print(f"method: lookup prompt (one demonstration line per distinct layer-1 word{', lines shuffled' if args.shuffle else ''}"
          f"{f', words read as heads of {args.coarse} clusters' if args.coarse else ''}), query scored per distinct word,"
          f" mean log-probability / vote; LM {args.lm}; codec {args.model or 'embedded default'};"
          f" {args.episodes} episodes, 2 queries per class, seed 0")
    accuracy = load_metric("accuracy", keep_in_memory=True)  # with its Wilson interval
    results = {}
    for task in args.tasks:
        pool = load_pool(f"data/tasks/{task}", name=task)
        evaluator = FewShotEvaluator(pipe, pool, progress=False)
        for setting in args.settings:
            n_way, k_shot = map(int, setting.split("x"))
            episodes = sample_episodes(pool, n_way, k_shot, 2, args.episodes, 0, GROUP_KEYS[task])
            predictions = {m: [] for m in (*args.methods.split(","), "lookup", "lookup_vote", "lookup_calibrated")}
            references, began, prefix_lengths = [], time.perf_counter(), []
            for episode in episodes:
                scores = evaluator.episode_scores(episode, args.methods.split(","))
                scores["lookup"], scores["lookup_vote"], scores["lookup_calibrated"], length = lookup_scores(
                    pipe, evaluator, episode, args.max_words, args.shuffle)
                prefix_lengths.append(length)
                references += [episode.labels.index(l) for l in episode.query_labels]
                for method, table in scores.items():
                    predictions[method] += np.asarray(table).argmax(axis=1).tolist()
            cell = {}
            for method, predicted in predictions.items():
                score = accuracy.compute(predictions=predicted, references=references)
                cell[method] = {"accuracy": round(score["accuracy"], 3),
                                "interval": (round(score["ci_low"], 3), round(score["ci_high"], 3))}
            cell.update(queries=len(references), seconds=round(time.perf_counter() - began, 1),
                        mean_prefix_tokens=round(float(np.mean(prefix_lengths)), 1))
            results[f"{task} {setting}"] = cell
            print(task, setting, {m: cell[m]["accuracy"] for m in predictions}, f"{cell['seconds']} s,"
                  f" prefix {cell['mean_prefix_tokens']} tokens", flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
