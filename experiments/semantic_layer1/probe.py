"""Probe: does a layer 1 computed from a frozen teacher (design 2 of a semantic first layer) let an LM learn in context?

Layer-1 "words" are made without the codec's encoder: Whisper tiny.en encoder frames (50/s) are averaged over 6
frames (8.33/s, the rate of the codec's layer 1), assigned to the nearest of K spherical k-means centroids, and each
centroid is written as one English word. The centroids are fitted without labels on codec-training clips that are
not in the evaluated task. Each clip's words are then scored like the codec's layer 1 (`audio_format="text"`), next
to a bag-of-codes prototype (same codes, no LM) and the log-mel reference, on the same episodes.

    python experiments/semantic_layer1/probe.py --task data/tasks/instrument --lm Qwen/Qwen2.5-Coder-0.5B-Instruct

Method printed with the results. This is an experiment, not part of the package.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import pipeline

from llm_codec.default_model import load_default_codec
from llm_codec.evaluation.fewshot import FewShotEvaluator, load_pool, prototype_scores, sample_episodes
from llm_codec.evaluation.metrics import load_metric
from llm_codec.evaluation.reference import logmel_statistics
from llm_codec.language_model import load_language_model
from llm_codec.audio_io import read_audio
from llm_codec.training.teachers import WhisperTeacher

POOL = 6  # Whisper frames (20 ms) per layer-1 word (120 ms)


def teacher_frames(teacher, audio: np.ndarray) -> torch.Tensor:
    """(samples,) 16 kHz -> (words, 384) Whisper features averaged over POOL frames (last partial group kept)."""
    features = teacher.features(torch.from_numpy(audio)[None, None])[0]
    groups = torch.split(features, POOL)
    return torch.stack([g.mean(0) for g in groups])


def spherical_kmeans(x: torch.Tensor, k: int, iterations: int = 30, seed: int = 0) -> torch.Tensor:
    """(n, d) -> (k, d) unit centroids (cosine k-means, k-means++-like random init from the data)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(x, dim=-1)
    centroids = x[torch.randperm(len(x), generator=generator)[:k]].clone()
    for _ in range(iterations):
        assign = (x @ centroids.T).argmax(1)
        for c in range(k):
            members = x[assign == c]
            if len(members):
                centroids[c] = members.mean(0)
            else:  # re-seed an empty cluster
                centroids[c] = x[torch.randint(len(x), (1,), generator=generator)][0]
        centroids = torch.nn.functional.normalize(centroids, dim=-1)
    return centroids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, nargs="+")
    parser.add_argument("--group-key", default=None, nargs="*", help="group key per task ('-' for none)")
    parser.add_argument("--lm", default=None, nargs="*", help="LMs to score with (default SmolLM2-135M)")
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--no-lm", action="store_true", help="only the bag-of-codes and logmel prototypes")
    parser.add_argument("--fit-clips", type=int, default=600, help="codec-training clips the k-means is fitted on")
    parser.add_argument("--balance-kinds", action="store_true", help="fit on as many clips of each kind (speech, "
                        "instrument, drums) as possible, --fit-clips in all")
    parser.add_argument("--settings", default="2x1,3x3")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--collapse", action="store_true", help="also score with repeated words collapsed")
    parser.add_argument("--bag", type=int, default=0, help="also score with the N most frequent distinct words")
    parser.add_argument("--tfidf", type=int, default=0, help="also score with the N codes of highest count x idf")
    parser.add_argument("--bag-only", action="store_true", help="score only the --bag / --tfidf views with the LMs")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher = WhisperTeacher.from_pretrained()
    pools = [load_pool(t) for t in args.task]
    task_clips = {str(Path(s).resolve()) for p in pools for s in p.sources}

    # 1. k-means on codec-training clips outside the evaluated tasks (no labels)
    rows = [json.loads(line) for line in Path("data/codec_train.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if str((Path("data") / r["path"]).resolve()) not in task_clips]
    random.Random(0).shuffle(rows)
    if args.balance_kinds:
        kinds = sorted({r["kind"] for r in rows})
        share = args.fit_clips // len(kinds)
        rows = [r for kind in kinds for r in [r for r in rows if r["kind"] == kind][:share]]
        random.Random(0).shuffle(rows)
    paths = [str(Path("data") / r["path"]) for r in rows]
    began = time.perf_counter()
    fit = []
    for path in tqdm(paths[: args.fit_clips], desc="fit frames"):
        fit.append(teacher_frames(teacher, read_audio(path, 16000)[: 16000 * 8]))
    fit_sizes = [len(f) for f in fit]
    fit = torch.cat(fit)
    centroids = spherical_kmeans(fit, args.k)
    # document frequency of every code over the fitting clips -> idf (for the --tfidf view)
    fit_codes = (torch.nn.functional.normalize(fit, dim=-1) @ centroids.T).argmax(1)
    df = torch.zeros(args.k)
    for clip in torch.split(fit_codes, fit_sizes):
        df[clip.unique()] += 1
    idf = torch.log((len(fit_sizes) + 1) / (df + 1))
    print(f"k-means: {args.k} centroids from {len(fit)} pooled frames of {args.fit_clips} clips ({time.perf_counter() - began:.0f} s)")

    codec, _, default_lm = load_default_codec()
    accuracy = load_metric("accuracy", keep_in_memory=True)
    settings = [tuple(int(v) for v in s.split("x")) for s in args.settings.split(",")]
    group_keys = args.group_key or ["-"] * len(pools)
    results = []
    lms = [] if args.no_lm else (args.lm or [None])
    pipes = {}
    for pool, group_key in zip(pools, group_keys):
        group_key = None if group_key == "-" else group_key
        codes, logmel = {}, {}
        for i in tqdm(range(len(pool)), desc=f"{pool.name} clips"):
            audio = pool.audio(i, 16000)
            codes[i] = (torch.nn.functional.normalize(teacher_frames(teacher, audio), dim=-1) @ centroids.T).argmax(1).tolist()
            logmel[i] = torch.from_numpy(logmel_statistics(audio, 16000))
        bags = {i: torch.nn.functional.normalize(torch.bincount(torch.tensor(c), minlength=args.k).float(), dim=0) for i, c in codes.items()}
        logmel = {i: torch.nn.functional.normalize(v.float(), dim=0) for i, v in logmel.items()}
        for n_way, k_shot in settings:
            episodes = sample_episodes(pool, n_way, k_shot, 2, args.episodes, 0, group_key)
            predictions: dict[str, list] = {}
            references = [l for e in episodes for l in e.query_labels]

            def add(name, episode, scores):
                predictions.setdefault(name, []).extend(episode.labels[j] for j in np.asarray(scores).argmax(1))

            for episode in episodes:
                for name, table in (("bag-of-codes", bags), ("logmel", logmel)):
                    add(name, episode, prototype_scores(torch.stack([table[i] for i in episode.demos]), episode.demo_labels,
                                                        torch.stack([table[i] for i in episode.queries]), episode.labels))
            for lm_name in lms:
                if lm_name not in pipes:
                    lm, tokenizer = load_language_model(lm_name) if lm_name else default_lm
                    pipes[lm_name] = pipeline("audio-few-shot-classification", model=codec, language_model=lm,
                                              tokenizer=tokenizer, audio_format="text")
                pipe = pipes[lm_name]
                tokenizer = pipe.tokenizer
                single = [w for w in codec.config.layer1_words if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1]
                words = random.Random(1).sample(single, args.k)
                variants = {} if args.bag_only else {"": lambda c: c}
                if args.collapse:
                    variants[" collapsed"] = lambda c: [w for j, w in enumerate(c) if j == 0 or c[j - 1] != w]
                if args.tfidf:
                    # the clip's distinct codes by count x idf (codes common to all audio last), at most --tfidf
                    def distinctive(c):
                        counts = Counter(c)
                        return sorted(counts, key=lambda w: -counts[w] * float(idf[w]))[: args.tfidf]
                    variants[" tfidf"] = distinctive
                if args.bag:
                    # the clip's distinct codes, most frequent first (ties: first seen), at most --bag of them
                    variants[" bag"] = lambda c: [w for w, _ in Counter(c).most_common(args.bag)]
                for suffix, view in variants.items():
                    evaluator = FewShotEvaluator(pipe, pool)
                    evaluator._ids = {i: tokenizer(" " + " ".join(words[c] for c in view(codes[i])), add_special_tokens=False)["input_ids"]
                                      for i in codes}
                    short = (lm_name or "SmolLM2-135M").split("/")[-1]
                    began = time.perf_counter()
                    for episode in tqdm(episodes, desc=f"{short}{suffix} {n_way}x{k_shot}"):
                        scores = evaluator.episode_scores(episode, ("icl", "calibrated"))
                        add(f"icl {short}{suffix}", episode, scores["icl"])
                        add(f"calibrated {short}{suffix}", episode, scores["calibrated"])
                    print(f"{short}{suffix}: {time.perf_counter() - began:.1f} s for {len(references)} queries")
            for name, predicted in predictions.items():
                metric = accuracy.compute(predictions=predicted, references=references)
                results.append(dict(task=pool.name, setting=f"{n_way}-way {k_shot}-shot", method=name, **metric))
                print(f"{pool.name} {n_way}-way {k_shot}-shot {name:<40} {metric['accuracy']:.3f} [{metric['ci_low']:.3f}, {metric['ci_high']:.3f}] n={metric['n']}")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
