"""Probe: do layer-1 words that vary slowly with a speaker teacher's long-context embedding let a frozen LM learn in context?

Each clip's Resemblyzer voice-encoder embeddings (`training.teachers.ResemblyzerSpeakerTeacher`) are computed for
1.6 s windows (160 mel frames) at a dense step of 12 mel frames (120 ms, the rate of the codec's layer 1: 8.33 per
second) with the teacher's own partial rule (`rate=100/12`: windows from frame 0 while the start is at most
`frames - 160 + step`, the last dropped when less than 75 % of it is audio unless it is the only one, the clip
zero-padded to the last window; a clip shorter than 1.6 s is one zero-padded window). Every window embedding is
assigned the nearest of K spherical k-means centroids fitted without labels on codec-training clips that are in none
of the evaluated tasks (as `probe.py`: `data/codec_train.jsonl`, a third each of speech, instrument notes and drum
hits, first 8 s of each); centroid c is written as a fixed English word (K words drawn with seed 1 from the default
codec's word list among those that are one token for the LM, as `probe.py`), and repeated words are collapsed.
The words are scored like the codec's layer 1 (`audio_format="text"`, the harness's `FewShotEvaluator` with the
prompt ids replaced), next to prototypes without an LM, on the episodes of docs/results.md.

    nice -n 5 python experiments/semantic_layer1/teacher_words_probe.py --k 16 64 \\
        --lm default Qwen/Qwen2.5-Coder-0.5B-Instruct \\
        --out experiments/semantic_layer1/results/teacher_words_probe.json

`--teacher whisper` makes the words from Whisper tiny.en frames averaged over 6 (probe.py's words) instead, for the
same collapsed view; `--teacher whisper-slow` from Whisper frames averaged over the Resemblyzer windows' 1.6 s. Method printed with the results. This is an experiment, not part of the package.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe import spherical_kmeans, teacher_frames  # noqa: E402

from llm_codec.audio_io import read_audio  # noqa: E402
from llm_codec.default_model import load_default_codec  # noqa: E402
from llm_codec.evaluation.fewshot import FewShotEvaluator, load_pool, prototype_scores, sample_episodes  # noqa: E402
from llm_codec.evaluation.metrics import load_metric  # noqa: E402
from llm_codec.evaluation.reference import logmel_statistics  # noqa: E402
from llm_codec.evaluation.statistics import wilson_interval  # noqa: E402
from llm_codec.language_model import load_language_model  # noqa: E402
from llm_codec.training.teachers import ResemblyzerSpeakerTeacher, WhisperTeacher  # noqa: E402

TASKS = {"speaker_id": None, "drum_type": "kit", "language_id": None, "instrument": None,
         "sound_event": "game"}  # task -> group key
DENSE_RATE = 100 / 12  # windows per second: a step of 12 mel frames (120 ms)
SLOW_WINDOW, SLOW_STEP = 80, 6  # whisper-slow: Whisper frames (50/s) averaged over 1.6 s windows every 120 ms


def collapse(codes: list[int]) -> list[int]:
    return [c for j, c in enumerate(codes) if j == 0 or codes[j - 1] != c]


class Frames:
    """One teacher vector per layer-1 position: dense Resemblyzer windows, Whisper frames averaged over 6
    ("whisper"), or Whisper frames averaged over 1.6 s windows every 120 ms ("whisper-slow": the Resemblyzer
    windows' span and step; a clip shorter than 1.6 s is one window of all its frames)."""

    def __init__(self, name: str):
        self.name = name
        if name == "resemblyzer":
            self.teacher = ResemblyzerSpeakerTeacher.from_pretrained(rate=DENSE_RATE)
        else:
            self.teacher = WhisperTeacher.from_pretrained()

    def __call__(self, audio: np.ndarray) -> torch.Tensor:
        if self.name == "resemblyzer":
            clip = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
            return self.teacher.partials(clip)[0][0]
        if self.name == "whisper-slow":
            features = self.teacher.features(torch.from_numpy(audio)[None, None])[0]
            if len(features) <= SLOW_WINDOW:
                return features.mean(0, keepdim=True)
            starts = range(0, len(features) - SLOW_WINDOW + 1, SLOW_STEP)
            return torch.stack([features[s : s + SLOW_WINDOW].mean(0) for s in starts])
        return teacher_frames(self.teacher, audio)


def prototype_episode_scores(episode, tables: dict) -> dict:
    """`{name: prototype_scores(...)}` of an episode for each table of clip vectors (`{name: {clip: vector}}`)."""
    return {name: prototype_scores(torch.stack([table[i] for i in episode.demos]), episode.demo_labels,
                                   torch.stack([table[i] for i in episode.queries]), episode.labels)
            for name, table in tables.items()}


def word_overlap(episodes, clip_words: dict) -> tuple[int, int, int]:
    """Queries whose words include a word of a demonstration of their own class, of another class, and of their own
    class only: `(own, other, own_only)` counts over `episodes` (`clip_words`: clip -> list of words)."""
    own = other = only_own = 0
    for e in episodes:
        for q, ql in zip(e.queries, e.query_labels):
            words = set(clip_words[q])
            a = any(words & set(clip_words[d]) for d, dl in zip(e.demos, e.demo_labels) if dl == ql)
            b = any(words & set(clip_words[d]) for d, dl in zip(e.demos, e.demo_labels) if dl != ql)
            own, other, only_own = own + a, other + b, only_own + (a and not b)
    return own, other, only_own


def lm_word_scores(pipe, pool, episodes, clip_words: dict, vocabulary_size: int, desc: str):
    """
    Yields `(episode, scores)` with the icl and calibrated scores of the pipeline's LM reading each clip's word
    indices (`clip_words`: clip -> list of indices) as words: index c is the c-th of `vocabulary_size` words drawn
    with seed 1 from the codec's layer-1 list among those that are one token for the LM.
    """
    tokenizer = pipe.tokenizer
    single = [w for w in pipe.model.config.layer1_words if len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    words = random.Random(1).sample(single, vocabulary_size)
    evaluator = FewShotEvaluator(pipe, pool)
    evaluator._ids = {i: tokenizer(" " + " ".join(words[c] for c in w), add_special_tokens=False)["input_ids"]
                      for i, w in clip_words.items()}
    for e in tqdm(episodes, desc=desc, leave=False):
        yield e, evaluator.episode_scores(e, ("icl", "calibrated"))


def method_text(args) -> str:
    frames = (
        "Resemblyzer 0.1.4 voice-encoder embeddings (training.teachers.ResemblyzerSpeakerTeacher, clip raised to "
        "-30 dBFS if quieter) of 1.6 s windows at a step of 12 mel frames (120 ms, 8.33/s; the teacher's partial rule "
        "with rate 100/12: a clip shorter than 1.6 s is one zero-padded window, a clip of d >= 1.6 s gets about "
        "(d - 1.6) / 0.12 + 1 windows)"
        if args.teacher == "resemblyzer" else
        "Whisper tiny.en encoder frames averaged over 6 (8.33/s, probe.py's words)"
        if args.teacher == "whisper" else
        "Whisper tiny.en encoder frames (50/s) averaged over 1.6 s windows (80 frames) every 120 ms (6 frames); a "
        "clip shorter than 1.6 s is one window of all its frames"
    )
    return (
        f"Layer-1 words from {frames}; spherical k-means (30 iterations, seed 0) with K in {args.k} fitted without "
        f"labels on {args.fit_clips} codec-training clips (data/codec_train.jsonl, none in any evaluated task, a third "
        "each of speech, instrument and drums, first 8 s); each window gets its nearest centroid, centroid c written "
        "as a fixed English word (K one-token words drawn with seed 1 from the default codec's word list), repeated "
        "words collapsed. Methods: bag-of-codes (nearest class prototype of the clips' code histograms before "
        "collapsing, cosine, no LM), teacher mean (the normalised mean of the clip's window vectors, no quantisation, "
        "no LM), logmel (harness reference), icl / calibrated with an LM reading the collapsed words "
        "(audio_format='text', FewShotEvaluator.episode_scores, instruction on, 1 repeat). Overlap: share of queries "
        "whose collapsed words include at least one word of a demonstration of their own class / of another class. "
        f"Episodes as docs/results.md: settings {args.settings}, {args.episodes} episodes, 2 queries per class, seed 0, "
        "drum_type grouped by kit. Accuracy with Wilson 95 % intervals over all queries."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=list(TASKS), nargs="+")
    parser.add_argument("--teacher", default="resemblyzer", choices=("resemblyzer", "whisper", "whisper-slow"))
    parser.add_argument("--k", type=int, default=[16, 64], nargs="+")
    parser.add_argument("--lm", default=[], nargs="*", help="LMs to score with ('default': the default codec's SmolLM2-135M; none: prototypes and overlap only)")
    parser.add_argument("--lm-settings", default=None, help="settings scored with the LMs (default: --settings)")
    parser.add_argument("--lm-tasks", default=None, nargs="*", help="tasks scored with the LMs (default: all)")
    parser.add_argument("--fit-clips", type=int, default=900)
    parser.add_argument("--settings", default="2x1,3x3")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=None, help="JSON file of the clips' codes (written if missing)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print("Method:", method_text(args))
    settings = [tuple(int(v) for v in s.split("x")) for s in args.settings.split(",")]
    lm_settings = settings if args.lm_settings is None else [tuple(int(v) for v in s.split("x")) for s in args.lm_settings.split(",")]
    lm_tasks = args.lm_tasks or args.tasks
    pools = {t: load_pool(Path("data/tasks") / t, name=t) for t in args.tasks}
    episodes = {(t, n, k): sample_episodes(pools[t], n, k, 2, args.episodes, 0, TASKS[t]) for t in args.tasks for n, k in settings}
    used = {t: sorted({i for (task, _, _), eps in episodes.items() if task == t for e in eps for i in e.demos + e.queries})
            for t in args.tasks}

    cache_path = Path(args.cache) if args.cache else None
    cache = json.loads(cache_path.read_text()) if cache_path and cache_path.exists() else None
    timing = {}
    if cache is None or cache.get("teacher") != args.teacher or not {str(k) for k in args.k} <= set(cache["codes"]):
        frames = Frames(args.teacher)
        all_task_clips = {str(Path(s).resolve()) for t in TASKS for s in load_pool(Path("data/tasks") / t).sources}
        rows = [json.loads(line) for line in Path("data/codec_train.jsonl").read_text().splitlines() if line.strip()]
        rows = [r for r in rows if str((Path("data") / r["path"]).resolve()) not in all_task_clips]
        random.Random(0).shuffle(rows)
        kinds = sorted({r["kind"] for r in rows})
        share = args.fit_clips // len(kinds)
        rows = [r for kind in kinds for r in [r for r in rows if r["kind"] == kind][:share]]
        random.Random(0).shuffle(rows)
        began = time.perf_counter()
        fit = torch.cat([frames(read_audio(str(Path("data") / r["path"]), 16000)[: 16000 * 8])
                         for r in tqdm(rows, desc="fit windows")])
        timing["fit_windows_seconds"] = time.perf_counter() - began
        vectors, means = {}, {}
        began = time.perf_counter()
        for t in args.tasks:
            for i in tqdm(used[t], desc=f"{t} windows"):
                v = frames(pools[t].audio(i, 16000))
                vectors[(t, i)] = F.normalize(v, dim=-1)
                means[(t, i)] = F.normalize(v.mean(0), dim=0).tolist()
        timing["task_windows_seconds"] = time.perf_counter() - began
        codes = {}
        for k in args.k:
            centroids = spherical_kmeans(fit, k)
            codes[str(k)] = {f"{t}/{i}": (v @ centroids.T).argmax(1).tolist() for (t, i), v in vectors.items()}
        cache = dict(teacher=args.teacher, fit_windows=len(fit), fit_clips=len(rows), codes=codes,
                     means={f"{t}/{i}": m for (t, i), m in means.items()}, timing=timing)
        print(f"{len(fit)} fit windows from {len(rows)} clips; {timing}")
        if cache_path:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_text(json.dumps(cache))

    accuracy = load_metric("accuracy", keep_in_memory=True)
    codec, _, default_lm = load_default_codec() if args.lm else (None, None, None)
    results, overlap, lengths = [], [], {}
    pipes = {}
    for t in args.tasks:
        pool = pools[t]
        logmel = {i: F.normalize(torch.from_numpy(logmel_statistics(pool.audio(i, 16000), 16000)).float(), dim=0) for i in used[t]}
        means = {i: torch.tensor(cache["means"][f"{t}/{i}"]) for i in used[t]}
        for k in args.k:
            codes = {i: cache["codes"][str(k)][f"{t}/{i}"] for i in used[t]}
            collapsed = {i: collapse(c) for i, c in codes.items()}
            lengths[f"{t} K={k}"] = dict(windows=float(np.mean([len(c) for c in codes.values()])),
                                         collapsed_words=float(np.mean([len(c) for c in collapsed.values()])),
                                         distinct_codes_used=len({w for c in codes.values() for w in c}))
            bags = {i: F.normalize(torch.bincount(torch.tensor(c), minlength=k).float(), dim=0) for i, c in codes.items()}
            for n_way, k_shot in settings:
                eps = episodes[(t, n_way, k_shot)]
                references = [l for e in eps for l in e.query_labels]
                predictions: dict[str, list] = {}

                def add(name, episode, scores):
                    predictions.setdefault(name, []).extend(episode.labels[j] for j in np.asarray(scores).argmax(1))

                tables = {"bag-of-codes": bags, **({"teacher mean": means, "logmel": logmel} if k == args.k[0] else {})}
                for e in eps:
                    for name, scores in prototype_episode_scores(e, tables).items():
                        add(name, e, scores)
                own, other, only_own = word_overlap(eps, collapsed)
                n = len(references)
                overlap.append(dict(task=t, k=k, setting=f"{n_way}x{k_shot}", n=n,
                                    **{name: value / n for name, value in (("own_class", own), ("other_class", other), ("own_only", only_own))},
                                    own_class_ci=wilson_interval(own, n), other_class_ci=wilson_interval(other, n),
                                    own_only_ci=wilson_interval(only_own, n)))
                print(f"{t} K={k} {n_way}x{k_shot} overlap: own {own / n:.3f} other {other / n:.3f} own only {only_own / n:.3f} (n={n})")
                if t in lm_tasks and (n_way, k_shot) in lm_settings:
                    for lm_name in args.lm:
                        if lm_name not in pipes:
                            default = lm_name == "default"
                            lm, tokenizer = default_lm if default else load_language_model(lm_name)
                            pipes[lm_name] = pipeline("audio-few-shot-classification", model=codec, language_model=lm,
                                                      tokenizer=tokenizer, audio_format="text")
                        short = "SmolLM2-135M" if lm_name == "default" else lm_name.split("/")[-1]
                        began = time.perf_counter()
                        for e, scores in lm_word_scores(pipes[lm_name], pool, eps, {i: collapsed[i] for i in used[t]}, k,
                                                        f"{t} K={k} {short} {n_way}x{k_shot}"):
                            add(f"icl {short}", e, scores["icl"])
                            add(f"calibrated {short}", e, scores["calibrated"])
                        timing[f"{t} K={k} {short} {n_way}x{k_shot}"] = time.perf_counter() - began
                for name, predicted in predictions.items():
                    metric = accuracy.compute(predictions=predicted, references=references)
                    k_label = k if name not in ("teacher mean", "logmel") else None
                    results.append(dict(task=t, setting=f"{n_way}x{k_shot}", k=k_label, method=name, chance=1 / n_way, **metric))
                    print(f"{t} {n_way}x{k_shot} K={k_label} {name:<36} {metric['accuracy']:.3f} "
                          f"[{metric['ci_low']:.3f}, {metric['ci_high']:.3f}] n={metric['n']}")
                out = Path(args.out)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(dict(args=vars(args), method=method_text(args), results=results, overlap=overlap,
                                               lengths=lengths, fit=dict(windows=cache["fit_windows"], clips=cache["fit_clips"]),
                                               timing={**cache.get("timing", {}), **timing}), indent=1))


if __name__ == "__main__":
    main()
