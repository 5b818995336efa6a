"""Probe: several coarse quantisations ("views") of slowly varying teacher embeddings as layer-1 words.

`teacher_words_probe.py` found that a frozen LM learns in context from layer-1 words when one word identifies the
class (speakers), and that one k-means partition of a speaker teacher loses the class on the other tasks. Here each
layer-1 position gets a word from one of V views, cycling (position t -> view t mod V), each view its own spherical
k-means partition (own K, own seed, own disjoint words) of a long-context teacher vector:

- `resemblyzer`: the voice encoder's 1.6 s window embedding at the layer-1 rate (`teacher_words_probe.py`'s windows),
- `whisper`: Whisper tiny.en encoder frames averaged over 6 (8.33/s) and then over a 1.6 s moving window (13
  positions, centred, shorter at the clip's ends), so both teachers vary slowly,
- `both`: the two unit vectors concatenated,
- `logmel`: the log-mel statistics of the harness's no-learning reference over the same 1.6 s windows (no network).

Two similar clips then share several words, a dissimilar pair few: a coarse hash an LM can match word by word. The
prompt writes each clip's distinct words in order of first appearance (a drum hit of 0.5 s has 4 positions, so it
gets the first 4 views). Fitted without labels on codec-training clips in none of the tasks; scored like the other
probes (bag-of-codes prototype without an LM, overlap, icl / calibrated with an LM reading the words as text), on the
episodes of docs/results.md.

    nice -n 5 python experiments/semantic_layer1/multiview_words_probe.py --views resemblyzer:16:0 whisper:16:0 \\
        resemblyzer:16:1 whisper:16:1 --lm Qwen/Qwen2.5-Coder-1.5B-Instruct --out /tmp/mv.json

This is an experiment, not part of the package.
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
from teacher_words_probe import DENSE_RATE, TASKS, lm_word_scores, prototype_episode_scores, word_overlap  # noqa: E402

from llm_codec.audio_io import read_audio  # noqa: E402
from llm_codec.default_model import load_default_codec  # noqa: E402
from llm_codec.evaluation.fewshot import load_pool, sample_episodes  # noqa: E402
from llm_codec.evaluation.metrics import load_metric  # noqa: E402
from llm_codec.evaluation.reference import logmel_statistics  # noqa: E402
from llm_codec.language_model import load_language_model  # noqa: E402
from llm_codec.training.teachers import ResemblyzerSpeakerTeacher, WhisperTeacher  # noqa: E402

SMOOTH = 13  # layer-1 positions (1.56 s) in the Whisper moving window
SAMPLES_PER_POSITION = 480 * 4  # hop 480, layer-1 pooling 4: 120 ms


def positions(samples: int) -> int:
    return max(1, -(-samples // SAMPLES_PER_POSITION))


class Windows:
    """Slowly varying teacher vectors, one per layer-1 position: (positions, dim), unit length."""

    def __init__(self):
        self.resemblyzer = ResemblyzerSpeakerTeacher.from_pretrained(rate=DENSE_RATE)
        self.whisper = WhisperTeacher.from_pretrained()

    def __call__(self, audio: np.ndarray) -> dict[str, torch.Tensor]:
        n = positions(len(audio))
        clip = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
        r = self.resemblyzer.partials(clip)[0][0]
        r = r[torch.clamp(torch.arange(n), max=len(r) - 1)]
        w = teacher_frames(self.whisper, audio)
        w = F.avg_pool1d(w.T[None], SMOOTH, stride=1, padding=SMOOTH // 2, count_include_pad=False)[0].T
        w = w[torch.clamp(torch.arange(n), max=len(w) - 1)]
        return {"resemblyzer": F.normalize(r, dim=-1), "whisper": F.normalize(w, dim=-1)}


def logmel_windows(audio: np.ndarray) -> torch.Tensor:
    """The `logmel` teacher: the harness's no-learning reference features (`logmel_statistics`, L2-normalised) of
    the 1.6 s window starting at each layer-1 position (the whole clip when shorter; later positions reuse the last
    window that fits): (positions, 80)."""
    n, span = positions(len(audio)), 25600  # 1.6 s windows
    starts = range(0, max(1, (len(audio) - span) // SAMPLES_PER_POSITION + 1))
    vectors = torch.stack([torch.from_numpy(logmel_statistics(audio[s * SAMPLES_PER_POSITION: s * SAMPLES_PER_POSITION + span], 16000))
                           for s in starts]).float()
    return F.normalize(vectors[torch.clamp(torch.arange(n), max=len(vectors) - 1)], dim=-1)


class Quantizer:
    """One view's partition: `K` centroids (spherical k-means), or with `K1xK2` a two-level one: K1 coarse centroids,
    then K2 centroids fitted within each coarse cluster's own points, the code being the leaf (coarse * K2 + fine), so
    the fine words split each kind of sound (speech, notes, drum hits) by what differs within it."""

    def __init__(self, points: torch.Tensor, k: str, seed: int):
        coarse, _, fine = str(k).partition("x")
        self.k1, self.k2 = int(coarse), int(fine or 1)
        self.coarse = spherical_kmeans(points, self.k1, seed=seed)
        assign = (F.normalize(points, dim=-1) @ self.coarse.T).argmax(1)
        self.fine = []
        for c in range(self.k1):
            members = points[assign == c]
            self.fine.append(spherical_kmeans(members, min(self.k2, len(members)), seed=seed) if self.k2 > 1 and len(members)
                             else self.coarse[c : c + 1])
        self.size = self.k1 * self.k2

    def assign(self, vector: torch.Tensor) -> int:
        c = int((vector @ self.coarse.T).argmax())
        return c * self.k2 + int((vector @ self.fine[c].T).argmax())


def with_both(vectors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adds the `both` teacher: the two unit vectors concatenated (cosine = the mean of the two cosines)."""
    return {**vectors, "both": F.normalize(torch.cat([vectors["resemblyzer"], vectors["whisper"]], dim=-1), dim=-1)}


def fit_audio(pools, count: int):
    """The first 8 s of `count` codec-training clips in no task, a third per kind, drawn with seed 0 (a generator)."""
    task_clips = {str(Path(s).resolve()) for pool in pools.values() for s in pool.sources}
    rows = [json.loads(line) for line in Path("data/codec_train.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if str((Path("data") / r["path"]).resolve()) not in task_clips]
    random.Random(0).shuffle(rows)
    kinds = sorted({r["kind"] for r in rows})
    for row in [r for kind in kinds for r in [r for r in rows if r["kind"] == kind][: count // len(kinds)]]:
        yield read_audio(str(Path("data") / row["path"]), 16000)[: 16000 * 8]


def distinct(words: list[int]) -> list[int]:
    seen: list[int] = []
    for w in words:
        if w not in seen:
            seen.append(w)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--views", nargs="+", required=True, help="teacher:K:seed, cycled over the layer-1 positions")
    parser.add_argument("--tasks", default=list(TASKS), nargs="+")
    parser.add_argument("--lm", default=[], nargs="*")
    parser.add_argument("--lm-tasks", default=None, nargs="*")
    parser.add_argument("--fit-clips", type=int, default=900)
    parser.add_argument("--settings", default="2x1,3x3")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default="/tmp/mv/windows.pt")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    views = [(t, k, int(s)) for t, k, s in (v.split(":") for v in args.views)]
    method = (f"Layer-1 position t (120 ms) gets the word of view t mod {len(views)}; views {args.views} "
              "(teacher:K:k-means seed; resemblyzer: 1.6 s voice-encoder windows at 8.33/s; whisper: tiny.en frames "
              f"averaged over 6 then a {SMOOTH}-position centred moving mean); spherical k-means (30 iterations) fitted "
              f"without labels on the windows of {args.fit_clips} codec-training clips in no task (a third per kind, "
              "first 8 s); each view's centroids written as their own one-token words (drawn with seed 1 from the "
              "default codec's word list); a clip's prompt is its distinct words in order of first appearance. "
              "bag-of-codes: prototype of the per-view code histograms (no LM); icl/calibrated: LM reading the words "
              f"(audio_format='text'); episodes as docs/results.md ({args.settings}, {args.episodes} episodes, 2 "
              "queries per class, seed 0, drum_type grouped by kit); Wilson 95 % intervals.")
    print("Method:", method)
    settings = [tuple(int(v) for v in s.split("x")) for s in args.settings.split(",")]
    pools = {t: load_pool(Path("data/tasks") / t, name=t) for t in TASKS}
    episodes = {(t, n, k): sample_episodes(pools[t], n, k, 2, args.episodes, 0, TASKS[t]) for t in args.tasks for n, k in settings}
    used = {t: sorted({i for (task, _, _), eps in episodes.items() if task == t for e in eps for i in e.demos + e.queries})
            for t in args.tasks}

    cache_path = Path(args.cache)
    cache = torch.load(cache_path) if cache_path.exists() else {"fit": None, "clips": {}}
    windows = None
    if cache["fit"] is None:
        windows = Windows()
        fit = [windows(audio) for audio in tqdm(fit_audio(pools, args.fit_clips), desc="fit windows")]
        cache["fit"] = {name: torch.cat([f[name] for f in fit]) for name in fit[0]}
    for t in args.tasks:
        missing = [i for i in used[t] if f"{t}/{i}" not in cache["clips"]]
        if missing:
            windows = windows or Windows()
            for i in tqdm(missing, desc=f"{t} windows"):
                cache["clips"][f"{t}/{i}"] = windows(pools[t].audio(i, 16000))
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(cache, cache_path)

    if any(t == "logmel" for t, _, _ in views):
        logmel_path = cache_path.with_name("logmel_windows.pt")
        if logmel_path.exists():
            logmel_cache = torch.load(logmel_path)
        else:
            fit = [logmel_windows(audio) for audio in tqdm(fit_audio(pools, args.fit_clips), desc="fit logmel")]
            logmel_cache = {"fit": torch.cat(fit), "clips": {}}
        for t in args.tasks:
            for i in used[t]:
                if f"{t}/{i}" not in logmel_cache["clips"]:
                    logmel_cache["clips"][f"{t}/{i}"] = logmel_windows(pools[t].audio(i, 16000))
        torch.save(logmel_cache, logmel_path)
        cache["fit"]["logmel"] = logmel_cache["fit"]
        for key, vectors in logmel_cache["clips"].items():
            cache["clips"][key]["logmel"] = vectors
    cache["fit"] = with_both(cache["fit"])
    cache["clips"] = {key: with_both(value) for key, value in cache["clips"].items()}
    quantizers = [Quantizer(cache["fit"][teacher], k, seed) for teacher, k, seed in views]
    offsets = np.cumsum([0] + [q.size for q in quantizers])

    def codes(key: str) -> list[int]:
        vectors = cache["clips"][key]
        n = len(vectors["resemblyzer"])
        return [int(offsets[t % len(views)] + quantizers[t % len(views)].assign(vectors[views[t % len(views)][0]][t]))
                for t in range(n)]

    accuracy = load_metric("accuracy", keep_in_memory=True)
    codec, _, default_lm = load_default_codec() if args.lm else (None, None, None)
    results, overlap, lengths, timing, pipes = [], [], {}, {}, {}
    out = Path(args.out)
    for t in args.tasks:
        pool = pools[t]
        clip_codes = {i: codes(f"{t}/{i}") for i in used[t]}
        words = {i: distinct(c) for i, c in clip_codes.items()}
        lengths[t] = dict(positions=float(np.mean([len(c) for c in clip_codes.values()])),
                          distinct_words=float(np.mean([len(w) for w in words.values()])),
                          vocabulary_used=len({w for c in clip_codes.values() for w in c}))
        print(t, lengths[t])
        logmel = {i: F.normalize(torch.from_numpy(logmel_statistics(pool.audio(i, 16000), 16000)).float(), dim=0) for i in used[t]}
        bags = {i: F.normalize(torch.bincount(torch.tensor(c), minlength=int(offsets[-1])).float(), dim=0) for i, c in clip_codes.items()}
        sets = {i: F.normalize(torch.bincount(torch.tensor(w), minlength=int(offsets[-1])).float(), dim=0) for i, w in words.items()}
        for n_way, k_shot in settings:
            eps = episodes[(t, n_way, k_shot)]
            references = [l for e in eps for l in e.query_labels]
            predictions: dict[str, list] = {}

            def add(name, episode, scores):
                predictions.setdefault(name, []).extend(episode.labels[j] for j in np.asarray(scores).argmax(1))

            for e in eps:
                for name, scores in prototype_episode_scores(e, {"bag-of-codes": bags, "set-of-words": sets,
                                                                 "logmel": logmel}).items():
                    add(name, e, scores)
            own, other, only_own = word_overlap(eps, words)
            n = len(references)
            overlap.append(dict(task=t, setting=f"{n_way}x{k_shot}", n=n, own_class=own / n, other_class=other / n, own_only=only_own / n))
            print(f"{t} {n_way}x{k_shot} overlap: own {own / n:.3f} other {other / n:.3f} own only {only_own / n:.3f}")
            if t in (args.lm_tasks or args.tasks):
                for lm_name in args.lm:
                    if lm_name not in pipes:
                        lm, tokenizer = default_lm if lm_name == "default" else load_language_model(lm_name)
                        pipes[lm_name] = pipeline("audio-few-shot-classification", model=codec, language_model=lm,
                                                  tokenizer=tokenizer, audio_format="text")
                    short = "SmolLM2-135M" if lm_name == "default" else lm_name.split("/")[-1]
                    began = time.perf_counter()
                    for e, scores in lm_word_scores(pipes[lm_name], pool, eps, {i: words[i] for i in used[t]},
                                                    int(offsets[-1]), f"{t} {short} {n_way}x{k_shot}"):
                        add(f"icl {short}", e, scores["icl"])
                        add(f"calibrated {short}", e, scores["calibrated"])
                    timing[f"{t} {short} {n_way}x{k_shot}"] = time.perf_counter() - began
            for name, predicted in predictions.items():
                metric = accuracy.compute(predictions=predicted, references=references)
                results.append(dict(task=t, setting=f"{n_way}x{k_shot}", method=name, chance=1 / n_way, **metric))
                print(f"{t} {n_way}x{k_shot} {name:<36} {metric['accuracy']:.3f} [{metric['ci_low']:.3f}, {metric['ci_high']:.3f}] n={metric['n']}")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(dict(args=vars(args), method=method, results=results, overlap=overlap,
                                           lengths=lengths, timing=timing), indent=1))


if __name__ == "__main__":
    main()
