"""Codec quality: reconstruct a set of clips with an LLM-Codec (and classic codecs as baselines) and score them.

`evaluate_codec` reads a folder of audio files or a JSONL manifest, resamples every clip to the codec's rate (16 kHz,
mono), encodes and decodes it (decoder noise from a seeded generator, so a run is reproducible), and scores the
reconstruction against the original with the shipped `evaluate` metric modules: wideband PESQ, STOI, the
multi-scale mel distance of training and SI-SDR. Baselines (codec2 at 8 kHz, Opus at its 6 kbit/s floor) run
through their command-line tools when those are installed and are scored against the same 16 kHz references.
Clip selection and the evaluation loop live here; the results and their Markdown / JSON in `report`, the
baselines in `baselines`, scoring in `scoring`, the bootstrap in `statistics`, encode / decode timing in `timing`.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..audio_io import audio_files_under, load_mono_audio
from ..plotting import plot_spectrograms
from ..refinement import refine_codes
from .baselines import DEFAULT_BASELINES, Baseline
from .report import METRICS, CodecEvaluationResults, SystemResult, metric_column, save_results
from .scoring import align_to_reference, score_clip
from .timing import benchmark_codec, peak_rss_mb


AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au")

METHOD = (
    "Each clip is read with soundfile, averaged to mono and resampled to {rate} Hz (soxr HQ). LLM-Codec: encode then "
    "decode one clip at a time, decoder noise from torch.Generator seeded with seed + the clip's index in the data "
    "set, output trimmed to the input length; the real-time factor is (encode + decode wall time) / audio duration "
    "after one untimed warm-up call. codec2: 16 kHz -> 8 kHz (soxr) -> 16-bit raw -> c2enc/c2dec -> 8 kHz -> "
    "16 kHz; Opus: 16-bit WAV at 16 kHz -> opusenc --bitrate N -> opusdec --rate 16000; both are scored against the "
    "same 16 kHz reference, and their real-time factor is the wall time of the two tool processes. Every system's "
    "output is first delay-compensated: shifted by the lag (within +-100 ms, 1 ms steps) that maximises the "
    "cross-correlation of its log-energy envelope with the reference's (codec2 and Opus delay their output; STOI "
    "and SI-SDR do not search for it). Metrics (shipped "
    "evaluate modules): wideband PESQ (pesq, 16 kHz), STOI (pystoi), multi-scale log-mel L1 distance (the training "
    "loss, 16 kHz), SI-SDR; prediction and reference are trimmed to the shorter of the two; a clip a metric cannot "
    "score (silence, too short) is NaN and left out of that metric's mean. Bitrate: LLM-Codec sum over VQ layers of "
    "tokens/s * log2(codebook size) from the config; codec2 the mode's rate; Opus the target bitrate."
)


# ------------------------------------------------------------------------------------------------------ the data


def select_clips(
    data: str | Path,
    kind: str | None = None,
    filters: dict[str, str] | None = None,
    max_clips: int | None = None,
    seed: int = 0,
) -> list[dict]:
    """
    The clips to evaluate.

    Args:
        data (`str` or `Path`): a folder (every audio file below it, recursively, sorted by path) or a JSONL
            manifest whose rows have `path` (absolute, or relative to the manifest's folder) and optionally
            `source`, `kind`, `speaker`, ...
        kind (`str`, *optional*): keep manifest rows with `kind == kind` (e.g. "speech").
        filters (`dict[str, str]`, *optional*): keep manifest rows whose fields equal these values.
        max_clips (`int`, *optional*): keep a random subset of this many (seeded by `seed`, in data-set order).
        seed (`int`): seed of that subset.

    Returns:
        `list[dict]`: the selected rows, each with `path` (absolute `str`), `clip` (the path as the manifest gives
        it, or relative to the folder), `index` (position in the whole data set, before filtering),
        `source` (or `None`) and the manifest's other fields.
    """
    data = Path(data)
    filters = dict(filters or {})
    if kind is not None:
        filters["kind"] = kind
    if data.is_dir():
        if filters:
            raise ValueError(f"Filters ({', '.join(filters)}) need a JSONL manifest with those fields; {data} is a folder.")
        paths = audio_files_under(data, AUDIO_EXTENSIONS)
        if not paths:
            raise ValueError(f"No audio files ({', '.join(AUDIO_EXTENSIONS)}) under {data}.")
        rows = [
            {"path": str(p.resolve()), "clip": str(p.relative_to(data)), "source": None, "index": i}
            for i, p in enumerate(paths)
        ]
    elif data.is_file():
        rows = []
        for number, line in enumerate(data.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{data} line {number} is not JSON ({error}): give a JSONL manifest or a folder.") from error
            if not isinstance(row, dict) or "path" not in row:
                raise ValueError(f"{data} line {number} has no `path` field: every manifest row needs one.")
            path = Path(row["path"])
            row = dict(row, path=str(path if path.is_absolute() else (data.parent / path).resolve()), clip=str(path))
            row.setdefault("source", None)
            row["index"] = len(rows)
            rows.append(row)
        for key, value in filters.items():
            if rows and not any(key in row for row in rows):
                raise ValueError(f"No row of {data} has a `{key}` field to filter on.")
            rows = [row for row in rows if str(row.get(key)) == str(value)]
        if not rows:
            raise ValueError(f"No clip of {data} matches {filters or 'anything'}.")
    else:
        raise FileNotFoundError(f"No folder or manifest at {data}: give a folder of audio files or a JSONL manifest.")
    if max_clips is not None:
        if max_clips < 1:
            raise ValueError(f"max_clips must be at least 1, got {max_clips}.")
        if max_clips < len(rows):
            keep = np.sort(np.random.default_rng(seed).choice(len(rows), size=max_clips, replace=False))
            rows = [rows[i] for i in keep]
    missing = [row["path"] for row in rows if not Path(row["path"]).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} clip(s) of {data} do not exist, e.g. {missing[0]}; fix the paths.")
    return rows


# ----------------------------------------------------------------------------------------------------- baselines


# --------------------------------------------------------------------------------------------------- evaluation


def _summarize(result: SystemResult) -> SystemResult:
    rows = result.per_clip
    result.num_clips = len(rows)
    for name in METRICS:
        column = metric_column(rows, name)
        finite = np.isfinite(column)
        result.means[name] = float(column[finite].mean()) if finite.any() else float("nan")
        result.num_scored[name] = int(finite.sum())
        reasons: dict[str, int] = {}
        for row in rows:
            reason = row.get("nan_reasons", {}).get(name)
            if reason:
                reasons[reason] = reasons.get(reason, 0) + 1
        if reasons:
            result.nan_reasons[name] = reasons
    sources = sorted({row["source"] for row in rows if row.get("source") is not None})
    for source in sources:
        subset = [row for row in rows if row.get("source") == source]
        entry = {"clips": len(subset)}
        for name in METRICS:
            column = metric_column(subset, name)
            entry[name] = float(np.nanmean(column)) if np.isfinite(column).any() else float("nan")
        result.by_source[source] = entry
    return result


@torch.no_grad()
def evaluate_codec(
    codec,
    data: str | Path,
    max_clips: int | None = None,
    seed: int = 0,
    baselines=(),
    kind: str | None = None,
    filters: dict[str, str] | None = None,
    name: str = "llm-codec",
    spectrogram_path: str | Path | None = None,
    progress: bool = True,
    refine_steps: int = 0,
) -> CodecEvaluationResults:
    """
    Reconstructs clips with `codec` (and the baselines) and scores them against the originals.

    Args:
        codec (`LLMCodecModel`): the codec (put in eval mode here; its device is used).
        data (`str` or `Path`): a folder of audio files or a JSONL manifest (see `select_clips`).
        max_clips (`int`, *optional*): evaluate a seeded random subset of this many clips.
        seed (`int`, defaults to 0): seed of the subset and of the decoder noise (clip `i` of the data set uses
            `seed + i`, so a clip's result does not depend on which others are evaluated).
        baselines (iterable of `str`, or one comma-separated `str`): e.g. `("codec2-700C", "opus-6k")` (see
            `Baseline.parse`); a baseline whose tools are not installed is skipped and listed in
            `skipped_baselines`.
        kind (`str`, *optional*), filters (`dict[str, str]`, *optional*): manifest row filters, e.g. `kind="speech"`.
        name (`str`, defaults to "llm-codec"): the codec's row name.
        spectrogram_path (`str` or `Path`, *optional*): write spectrograms of the first clip (original, codec,
            baselines) to this PNG (needs matplotlib).
        progress (`bool`, defaults to `True`): show a tqdm progress bar.
        refine_steps (`int`, defaults to 0): encode with `refine_codes` and this many analysis-by-synthesis steps
            (seed `seed + i` for clip `i`) instead of the encoder's codes alone; the refinement counts as encoding
            time.

    Returns:
        `CodecEvaluationResults`: one `SystemResult` per system with means, per-source means and per-clip rows.
    """
    if isinstance(baselines, str):
        baselines = [b for b in baselines.split(",") if b.strip()]
    parsed = [Baseline.parse(b) for b in baselines]
    skipped_baselines = {b.name: b.unavailable() for b in parsed if b.unavailable()}
    runnable = [b for b in parsed if b.name not in skipped_baselines]
    rows = select_clips(data, kind=kind, filters=filters, max_clips=max_clips, seed=seed)

    config = codec.config
    rate = int(config.sample_rate)
    codec.eval()
    device = codec.device
    # One untimed call first: the projected codebooks are computed and cached on the first encode.
    warm = torch.zeros(1, 1, config.pad_multiple, device=device)
    warm_codes = codec.encode(warm)
    codec.decode(warm_codes.audio_codes, generator=torch.Generator(device=device).manual_seed(seed))

    tokens = [float(r) for r in config.tokens_per_second]
    bits_per_code = [math.log2(n) for n in config.codebook_sizes]
    ours = SystemResult(system=name, bitrate=float(config.bitrate), tokens_per_second=sum(tokens),
                        tokens_per_second_per_layer=tokens, encode_seconds=0.0, decode_seconds=0.0)
    others = {b.name: SystemResult(system=b.name, bitrate=b.bitrate, real_time_factor=0.0) for b in runnable}
    for b in runnable:
        others[b.name].note = (
            f"8 kHz narrowband codec, mode {b.setting} (.bit file: whole bytes per frame)" if b.tool == "codec2"
            else f"opusenc --bitrate {b.setting} (VBR); measured: Opus packets without Ogg framing"
        )
    ours.note = f"{config.num_quantizers} VQ layers, codebooks {list(config.codebook_sizes)}"
    if refine_steps:
        ours.note += f"; codes refined by analysis-by-synthesis ({refine_steps} steps, layers 2-{config.num_quantizers})"
    baseline_bits = {b.name: 0 for b in runnable}
    codec_bits, total_duration, skipped_clips, first = 0.0, 0.0, {}, None

    with tempfile.TemporaryDirectory(prefix="llm_codec_eval_") as workdir:
        for row in tqdm(rows, desc="codec quality", disable=not progress):
            reference = load_mono_audio(row["path"], rate)
            if reference.size == 0:
                skipped_clips[row["clip"]] = "empty audio"
                continue
            duration = reference.size / rate
            total_duration += duration
            base = {"clip": row["clip"], "source": row.get("source"), "duration_s": duration}

            generator = torch.Generator(device=device).manual_seed(seed + row["index"])
            audio = torch.from_numpy(reference).to(device)[None, None]
            start = time.perf_counter()
            if refine_steps:
                encoded = refine_codes(codec, audio, steps=refine_steps, seed=seed + row["index"])
            else:
                encoded = codec.encode(audio)
            middle = time.perf_counter()
            decoded = codec.decode(encoded.audio_codes, audio_lengths=encoded.audio_lengths, generator=generator)
            end = time.perf_counter()
            ours.encode_seconds += middle - start
            ours.decode_seconds += end - middle
            prediction = decoded.audio_values[0, 0].float().cpu().numpy()
            num_codes = [int(c.shape[-1]) for c in encoded.audio_codes]
            codec_bits += sum(n * b for n, b in zip(num_codes, bits_per_code))
            aligned, lag = align_to_reference(prediction, reference, rate)
            values, reasons = score_clip(aligned, reference, rate)
            ours.per_clip.append({**base, **values, "lag_samples": lag, "num_codes": num_codes,
                                  **({"nan_reasons": reasons} if reasons else {})})
            outputs = {name: prediction}

            for baseline in runnable:
                result = others[baseline.name]
                decoded_baseline, bits, wall = baseline.run(reference, rate, workdir)
                baseline_bits[baseline.name] += bits
                result.real_time_factor += wall
                aligned, lag = align_to_reference(decoded_baseline, reference, rate)
                values, reasons = score_clip(aligned, reference, rate)
                result.per_clip.append({**base, **values, "lag_samples": lag,
                                        **({"nan_reasons": reasons} if reasons else {})})
                outputs[baseline.name] = decoded_baseline
            if first is None:
                first = (row["clip"], reference, outputs)

    if not ours.per_clip:
        raise ValueError(f"Every selected clip of {data} is empty: nothing to evaluate.")
    ours.real_time_factor = (ours.encode_seconds + ours.decode_seconds) / total_duration
    ours.measured_bitrate = codec_bits / total_duration
    systems = [_summarize(ours)]
    for baseline in runnable:
        result = others[baseline.name]
        result.real_time_factor /= total_duration
        result.measured_bitrate = baseline_bits[baseline.name] / total_duration
        systems.append(_summarize(result))

    spectrogram = None
    if spectrogram_path is not None and first is not None:
        path, reference, outputs = first
        clips = {"original": reference, **{k: v[: reference.size] for k, v in outputs.items()}}
        spectrogram = str(plot_spectrograms(clips, rate, spectrogram_path, title=Path(path).name))

    return CodecEvaluationResults(
        systems=systems,
        data=str(data),
        num_clips=len(ours.per_clip),
        total_duration_s=total_duration,
        sample_rate=rate,
        seed=seed,
        max_clips=max_clips,
        filters={**(filters or {}), **({"kind": kind} if kind is not None else {})},
        skipped_baselines=skipped_baselines,
        skipped_clips=skipped_clips,
        method=METHOD.format(rate=rate),
        spectrogram=spectrogram,
    )


__all__ = [
    "AUDIO_EXTENSIONS",
    "DEFAULT_BASELINES",
    "METHOD",
    "Baseline",
    "benchmark_codec",
    "evaluate_codec",
    "peak_rss_mb",
    "save_results",
    "select_clips",
]
