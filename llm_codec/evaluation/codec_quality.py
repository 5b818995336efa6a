"""Codec quality: reconstruct a set of clips with an LLM-Codec (and classic codecs as baselines) and score them.

`evaluate_codec` reads a folder of audio files or a JSONL manifest, resamples every clip to the codec's rate (16 kHz,
mono), encodes and decodes it (decoder noise from a seeded generator, so a run is reproducible), and scores the
reconstruction against the original with the shipped `evaluate` metric modules: wideband PESQ, STOI, the
multi-scale mel distance of training and SI-SDR. Baselines (codec2 at 8 kHz, Opus at its 6 kbit/s floor) run
through their command-line tools when those are installed and are scored against the same 16 kHz references.
`save_results` writes the results as JSON and a Markdown table; `benchmark_codec` times encode and decode.
"""

from __future__ import annotations

import json
import math
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..training.data import audio_files_under

METRICS = ("pesq_wb", "stoi", "mel_distance", "si_sdr")
METRIC_TITLES = {"pesq_wb": "PESQ-WB", "stoi": "STOI", "mel_distance": "mel distance", "si_sdr": "SI-SDR (dB)"}
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au")
CODEC2_MODES = ("3200", "2400", "1600", "1400", "1300", "1200", "700C", "450")
CODEC2_RATE = 8000
OPUS_MIN_KBPS = 6
DEFAULT_BASELINES = ("codec2-700C", "codec2-1200", "codec2-3200", "opus-6k")

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


# --------------------------------------------------------------------------------------------------------- results


@dataclass
class SystemResult:
    """
    Scores of one system (the codec or a baseline) over the evaluated clips.

    Attributes:
        system (`str`): name, e.g. "llm-codec", "codec2-700C", "opus-6k".
        bitrate (`float`): nominal bits per second (LLM-Codec: from its config; codec2: the mode; Opus: the target).
        tokens_per_second (`float`, *optional*): codes per second over all VQ layers (`None` for baselines).
        tokens_per_second_per_layer (`list[float]`, *optional*): per VQ layer.
        means (`dict[str, float]`): mean of each metric over the clips it could score (NaN when none).
        num_scored (`dict[str, int]`): clips each metric could score.
        num_clips (`int`): clips the system processed.
        real_time_factor (`float`, *optional*): processing wall time / audio duration (encode + decode).
        encode_seconds, decode_seconds (`float`, *optional*): total wall times (LLM-Codec only).
        measured_bitrate (`float`, *optional*): bits actually produced / audio duration (LLM-Codec: codes emitted,
            padding to whole windows included; codec2: the .bit file; Opus: Opus packets without Ogg framing).
        by_source (`dict[str, dict]`): per `source` of the manifest, `{"clips": n, metric: mean, ...}`.
        nan_reasons (`dict[str, dict[str, int]]`): per metric, how many clips were NaN for which reason.
        per_clip (`list[dict]`): per clip `clip` (its path as the manifest gives it, or relative to the folder),
            `source`, `duration_s`, the four metrics and, where some are NaN, `nan_reasons`.
        note (`str`): anything worth knowing about the row.
    """

    system: str
    bitrate: float
    tokens_per_second: float | None = None
    tokens_per_second_per_layer: list[float] | None = None
    means: dict[str, float] = field(default_factory=dict)
    num_scored: dict[str, int] = field(default_factory=dict)
    num_clips: int = 0
    real_time_factor: float | None = None
    encode_seconds: float | None = None
    decode_seconds: float | None = None
    measured_bitrate: float | None = None
    by_source: dict[str, dict] = field(default_factory=dict)
    nan_reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    per_clip: list[dict] = field(default_factory=list)
    note: str = ""


@dataclass
class CodecEvaluationResults:
    """
    Result of `evaluate_codec`.

    Attributes:
        systems (`list[SystemResult]`): the codec first, then the baselines that ran.
        data (`str`): the folder or manifest evaluated.
        num_clips (`int`), total_duration_s (`float`): clips scored and their total duration.
        sample_rate (`int`): rate of the comparison (the codec's).
        seed (`int`), max_clips (`int`, *optional*), filters (`dict[str, str]`): how the clips were chosen.
        skipped_baselines (`dict[str, str]`): requested baselines that did not run, and why.
        skipped_clips (`dict[str, str]`): clips left out (empty audio), and why.
        method (`str`): how everything was computed.
        spectrogram (`str`, *optional*): path of the spectrogram PNG of the first clip, when written.
    """

    systems: list[SystemResult]
    data: str
    num_clips: int
    total_duration_s: float
    sample_rate: int
    seed: int
    max_clips: int | None = None
    filters: dict[str, str] = field(default_factory=dict)
    skipped_baselines: dict[str, str] = field(default_factory=dict)
    skipped_clips: dict[str, str] = field(default_factory=dict)
    method: str = ""
    spectrogram: str | None = None

    def system(self, name: str) -> SystemResult:
        """The row of system `name` (e.g. "llm-codec", "opus-6k"); `KeyError` if it did not run."""
        for result in self.systems:
            if result.system == name:
                return result
        raise KeyError(f"No system {name!r} in these results; have {[s.system for s in self.systems]}.")

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN and inf become `None`)."""
        return _json_safe(asdict(self))

    def paired_differences(self, metric: str = "pesq_wb", seed: int = 0) -> list[dict]:
        """
        The codec (first system) against each baseline, clip by clip, on `metric`.

        Returns:
            `list[dict]`, one per baseline: `baseline` and the keys of `paired_difference` (codec minus baseline).
        """
        codec = _column(self.systems[0].per_clip, metric)
        return [{"baseline": baseline.system, **paired_difference(codec, _column(baseline.per_clip, metric), seed=seed)}
                for baseline in self.systems[1:]]

    def to_markdown(self) -> str:
        """The results as Markdown: summary table, details, per-source table (when there are sources), notes."""
        lines = [
            f"# Codec quality on {self.data}",
            "",
            f"{self.num_clips} clips, {self.total_duration_s:.1f} s of audio at {self.sample_rate} Hz, seed {self.seed}"
            + (f", at most {self.max_clips} clips" if self.max_clips else "")
            + (", " + ", ".join(f"{k} == {v!r}" for k, v in self.filters.items()) if self.filters else "")
            + ".",
            "",
            "| system | bitrate (bit/s) | tokens/s | PESQ-WB | STOI | mel distance | SI-SDR (dB) | clips |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for s in self.systems:
            tokens = _fmt(s.tokens_per_second, 2) if s.tokens_per_second is not None else "-"
            scores = [_fmt(s.means.get(m), 3 if m == "stoi" else 2) for m in METRICS]
            lines.append(f"| {s.system} | {s.bitrate:.0f} | {tokens} | " + " | ".join(scores) + f" | {s.num_clips} |")
        lines += ["", "| system | measured bitrate (bit/s) | tokens/s per layer | real-time factor | clips scored "
                  "(PESQ / STOI / mel / SI-SDR) | note |", "| --- | --- | --- | --- | --- | --- |"]
        for s in self.systems:
            per_layer = " / ".join(f"{r:.2f}" for r in s.tokens_per_second_per_layer) if s.tokens_per_second_per_layer else "-"
            scored = " / ".join(str(s.num_scored.get(m, 0)) for m in METRICS)
            lines.append(f"| {s.system} | {_fmt(s.measured_bitrate, 0)} | {per_layer} | {_fmt(s.real_time_factor, 3)} "
                         f"| {scored} | {s.note} |")
        if any(s.by_source for s in self.systems):
            lines += ["", "Per source:", "", "| system | source | clips | PESQ-WB | STOI | mel distance | SI-SDR (dB) |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            for s in self.systems:
                for source, row in s.by_source.items():
                    scores = [_fmt(row.get(m), 3 if m == "stoi" else 2) for m in METRICS]
                    lines.append(f"| {s.system} | {source} | {row['clips']} | " + " | ".join(scores) + " |")
        if len(self.systems) > 1 and self.systems[0].per_clip:
            lines += ["", f"{self.systems[0].system} minus each baseline, clip by clip (mean over the clips both scored, "
                      "95 % bootstrap interval of the mean, share of clips where it is higher):", "",
                      "| baseline | metric | clips | mean difference | 95 % interval | higher on |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for metric in ("pesq_wb", "stoi"):
                for d in self.paired_differences(metric):
                    lines.append(f"| {d['baseline']} | {METRIC_TITLES[metric]} | {d['clips']} | {d['mean']:+.3f} | "
                                 f"[{d['low']:+.3f}, {d['high']:+.3f}] | {100 * d['higher']:.0f} % |")
        notes = []
        for s in self.systems:
            for metric, reasons in s.nan_reasons.items():
                for reason, count in reasons.items():
                    notes.append(f"- {s.system}, {METRIC_TITLES[metric]}: {count} clip(s) NaN: {reason}")
        notes += [f"- baseline {name} skipped: {why}" for name, why in self.skipped_baselines.items()]
        notes += [f"- clip {path} skipped: {why}" for path, why in self.skipped_clips.items()]
        if notes:
            lines += ["", "Notes:", "", *notes]
        lines += ["", f"Method: {self.method}", ""]
        return "\n".join(lines)


def paired_difference(a: np.ndarray, b: np.ndarray, resamples: int = 10_000, seed: int = 0) -> dict:
    """
    Mean of the per-clip differences `a - b` over the clips both systems scored, with a bootstrap interval.

    Args:
        a, b (`np.ndarray` of shape `(num_clips,)`): one metric per clip, NaN where a clip was not scored.
        resamples (`int`), seed (`int`): the bootstrap (clips drawn with replacement, seeded).

    Returns:
        `dict` with `clips` (scored by both), `mean`, `low` and `high` (2.5th / 97.5th percentiles of the
        resampled means) and `higher` (share of those clips where `a > b`); NaNs when no clip was scored by both.
    """
    both = ~(np.isnan(a) | np.isnan(b))
    diff = a[both] - b[both]
    if diff.size == 0:
        return {"clips": 0, "mean": float("nan"), "low": float("nan"), "high": float("nan"), "higher": float("nan")}
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"clips": int(diff.size), "mean": float(diff.mean()), "low": float(low), "high": float(high),
            "higher": float((diff > 0).mean())}


@dataclass
class BenchmarkResult:
    """
    Result of `benchmark_codec` (times in seconds, memory in MB = 10^6 bytes).

    Attributes:
        seconds (`float`): length of the benchmark clip. repeats (`int`), threads (`int`): torch threads used.
        encode_first_s (`float`): first encode (includes projecting the codebooks once).
        encode_s, decode_s (`float`): median of `repeats` runs; encode_runs_s / decode_runs_s: every run.
        real_time_factor (`float`): (encode_s + decode_s) / seconds. encode_rtf, decode_rtf: each alone.
        peak_rss_mb (`float`): peak resident memory of this process so far (model loading included).
        tokens_per_second (`float`), bitrate (`float`): from the codec config.
        method (`str`): how it was measured.
    """

    seconds: float
    repeats: int
    threads: int
    encode_first_s: float
    encode_s: float
    decode_s: float
    encode_runs_s: list[float]
    decode_runs_s: list[float]
    real_time_factor: float
    encode_rtf: float
    decode_rtf: float
    peak_rss_mb: float
    tokens_per_second: float
    bitrate: float
    method: str


def _fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def save_results(results: CodecEvaluationResults, out_dir: str | Path) -> tuple[Path, Path]:
    """
    Writes `results.json` (everything, per clip included; NaN as null) and `results.md` (the tables) in `out_dir`.

    Args:
        results (`CodecEvaluationResults`): from `evaluate_codec`.
        out_dir (`str` or `Path`): folder (created if needed).

    Returns:
        `(json_path, markdown_path)`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "results.json", out / "results.md"
    json_path.write_text(json.dumps(results.to_dict(), indent=2))
    md_path.write_text(results.to_markdown())
    return json_path, md_path


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


def load_clip(path: str | Path, sampling_rate: int) -> np.ndarray:
    """Audio file -> mono `(samples,)` float32 at `sampling_rate` (channels averaged, soxr resampling)."""
    from ..audio_io import load_audio

    samples, _ = load_audio(path, sampling_rate=sampling_rate)
    return np.ascontiguousarray(samples.mean(axis=0), dtype=np.float32)


# ----------------------------------------------------------------------------------------------------- baselines


@dataclass(frozen=True)
class Baseline:
    """
    A classic codec run through its command-line tools.

    Attributes:
        name (`str`): "codec2-<MODE>" (MODE one of `CODEC2_MODES`) or "opus-<N>k" (N >= 6 kbit/s).
        tool (`str`): "codec2" or "opus". setting (`str`): the codec2 mode or the Opus kbit/s.
        bitrate (`float`): nominal bits per second.
    """

    name: str
    tool: str
    setting: str
    bitrate: float

    @classmethod
    def parse(cls, name: str) -> "Baseline":
        """`"codec2-700C"` / `"opus-6k"` -> `Baseline`; `ValueError` naming the accepted forms otherwise."""
        match = re.fullmatch(r"codec2-(\w+)", name.strip(), flags=re.I)
        if match:
            mode = match.group(1).upper()
            if mode not in CODEC2_MODES:
                raise ValueError(f"Unknown codec2 mode in {name!r}: use one of {', '.join('codec2-' + m for m in CODEC2_MODES)}.")
            return cls(f"codec2-{mode}", "codec2", mode, float(mode.rstrip("C")))
        match = re.fullmatch(r"opus-(\d+(?:\.\d+)?)k", name.strip(), flags=re.I)
        if match:
            kbps = float(match.group(1))
            if kbps < OPUS_MIN_KBPS:
                raise ValueError(f"{name!r}: Opus does not go below {OPUS_MIN_KBPS} kbit/s; use opus-6k or more.")
            return cls(f"opus-{match.group(1)}k", "opus", match.group(1), kbps * 1000.0)
        raise ValueError(f"Unknown baseline {name!r}: use codec2-<MODE> (e.g. codec2-700C, codec2-3200) or opus-<N>k (e.g. opus-6k).")

    @property
    def tools(self) -> tuple[str, str]:
        return ("c2enc", "c2dec") if self.tool == "codec2" else ("opusenc", "opusdec")

    def unavailable(self) -> str | None:
        """Why this baseline cannot run here (`None` when its tools are on the PATH)."""
        missing = [t for t in self.tools if shutil.which(t) is None]
        if missing:
            package = "codec2" if self.tool == "codec2" else "opus-tools"
            return f"{' and '.join(missing)} not found on the PATH (install {package}, e.g. `apt-get install {package}`)"
        return None

    def run(self, reference: np.ndarray, sampling_rate: int, workdir: str | Path) -> tuple[np.ndarray, int, float]:
        """
        Encodes and decodes one clip with the tools.

        Args:
            reference (`np.ndarray` of shape `(samples,)`): audio at `sampling_rate`.
            sampling_rate (`int`): its rate (the output comes back at this rate).
            workdir (`str` or `Path`): folder for the temporary files.

        Returns:
            `(decoded (samples',) float32, bitstream bits, wall seconds of the tool processes)`.
        """
        import soundfile as sf
        import soxr

        workdir = Path(workdir)
        if self.tool == "codec2":
            narrow = soxr.resample(reference, sampling_rate, CODEC2_RATE, quality="HQ")
            (np.clip(narrow, -1.0, 1.0) * 32767.0).round().astype("<i2").tofile(workdir / "in.raw")
            start = time.perf_counter()
            _call(["c2enc", self.setting, str(workdir / "in.raw"), str(workdir / "out.bit")])
            _call(["c2dec", self.setting, str(workdir / "out.bit"), str(workdir / "out.raw")])
            wall = time.perf_counter() - start
            decoded = np.fromfile(workdir / "out.raw", dtype="<i2").astype(np.float32) / 32768.0
            decoded = soxr.resample(decoded, CODEC2_RATE, sampling_rate, quality="HQ").astype(np.float32)
            bits = (workdir / "out.bit").stat().st_size * 8
        else:
            sf.write(str(workdir / "in.wav"), np.clip(reference, -1.0, 1.0), sampling_rate, subtype="PCM_16")
            start = time.perf_counter()
            _call(["opusenc", "--quiet", "--bitrate", self.setting, str(workdir / "in.wav"), str(workdir / "out.opus")])
            _call(["opusdec", "--quiet", "--rate", str(sampling_rate), str(workdir / "out.opus"), str(workdir / "out.wav")])
            wall = time.perf_counter() - start
            decoded, _ = sf.read(str(workdir / "out.wav"), dtype="float32", always_2d=True)
            decoded = decoded.mean(axis=1)
            bits = ogg_audio_payload_bytes(workdir / "out.opus") * 8
        return np.ascontiguousarray(decoded, dtype=np.float32), bits, wall


def _call(command: list[str]) -> None:
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise OSError(f"`{' '.join(command)}` failed (exit {completed.returncode}): {completed.stderr.strip()[-500:]}")


def ogg_audio_payload_bytes(path: str | Path) -> int:
    """Bytes of the audio packets of a single-stream Ogg Opus file: page payloads after the two header pages."""
    data = Path(path).read_bytes()
    position, total = 0, 0
    while position + 27 <= len(data):
        if data[position : position + 4] != b"OggS":
            raise ValueError(f"{path} is not an Ogg file (no page at byte {position}).")
        sequence = int.from_bytes(data[position + 18 : position + 22], "little")
        segments = data[position + 26]
        payload = sum(data[position + 27 : position + 27 + segments])
        if sequence >= 2:  # page 0: OpusHead, page 1: OpusTags
            total += payload
        position += 27 + segments + payload
    return total


# --------------------------------------------------------------------------------------------------- evaluation


@lru_cache(maxsize=None)
def _metric(name: str):
    from .metrics import load_metric

    return load_metric(name, keep_in_memory=True)  # no Arrow cache file per compute() call


MAX_LAG_S = 0.1


def _envelope(audio: np.ndarray, hop: int) -> np.ndarray:
    """Log RMS of `hop`-sample frames (window 4 * hop), mean removed: a phase-free outline of the signal."""
    padded = np.pad(audio.astype(np.float64), (2 * hop, 2 * hop))
    squares = np.concatenate([[0.0], np.cumsum(padded**2)])
    starts = np.arange(0, audio.size, hop)
    energy = (squares[starts + 4 * hop] - squares[starts]) / (4 * hop)
    outline = np.log(energy + 1e-8)
    return outline - outline.mean()


def align_to_reference(prediction: np.ndarray, reference: np.ndarray, sampling_rate: int,
                       max_lag_s: float = MAX_LAG_S) -> tuple[np.ndarray, int]:
    """
    Compensates a codec's delay: shifts `prediction` by the lag (within +-`max_lag_s`, 1 ms steps) that maximises
    the cross-correlation of its log-energy envelope with the reference's, and pads/trims it to the reference's
    length. Envelopes rather than waveforms, because a codec that does not keep the phase (a negative SI-SDR)
    correlates with the waveform at spurious lags.

    Args:
        prediction, reference (`np.ndarray` of shape `(samples,)`): decoded and original audio at `sampling_rate`.
        sampling_rate (`int`), max_lag_s (`float`, defaults to 0.1 s).

    Returns:
        `(aligned (len(reference),) float32, lag)`: `lag` > 0 when the prediction was late by that many samples.
    """
    from scipy.signal import correlate, correlation_lags

    prediction = np.asarray(prediction, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    if prediction.size == 0 or reference.size == 0:
        return np.zeros(reference.size, dtype=np.float32), 0
    hop = max(1, sampling_rate // 1000)
    a, b = _envelope(prediction, hop), _envelope(reference, hop)
    correlation = correlate(a, b, mode="full", method="fft")
    lags = correlation_lags(a.size, b.size, mode="full")
    window = np.abs(lags) <= round(max_lag_s * 1000)
    lag = int(lags[window][np.argmax(correlation[window])]) * hop if window.any() else 0
    shifted = prediction[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag, np.float32), prediction])
    aligned = np.zeros(reference.size, dtype=np.float32)
    aligned[: min(reference.size, shifted.size)] = shifted[: reference.size]
    return aligned, lag


def score_clip(prediction: np.ndarray, reference: np.ndarray, sampling_rate: int) -> tuple[dict, dict]:
    """
    The four metrics of one clip with the shipped metric modules.

    Args:
        prediction, reference (`np.ndarray` of shape `(samples,)`): decoded and original audio.
        sampling_rate (`int`): their rate.

    Returns:
        `(values, reasons)`: `values` maps each of `METRICS` to a float (NaN where undefined), `reasons` maps the NaN
        ones to why.
    """
    values, reasons = {}, {}
    # Python lists go into the metrics' Arrow tables faster than numpy arrays do.
    prediction, reference = np.asarray(prediction).tolist(), np.asarray(reference).tolist()
    for name in METRICS:
        result = _metric(name).compute(predictions=[prediction], references=[reference], sampling_rate=sampling_rate)
        values[name] = result["scores"][0]
        if result["nan_reasons"][0]:
            reasons[name] = result["nan_reasons"][0]
    return values, reasons


def _column(rows: list[dict], name: str) -> np.ndarray:
    """Metric `name` of each per-clip row, shape `(len(rows),)`; NaN (or `None`, as read back from JSON) stays NaN."""
    return np.array([row[name] for row in rows], dtype=np.float64)


def _summarize(result: SystemResult) -> SystemResult:
    rows = result.per_clip
    result.num_clips = len(rows)
    for name in METRICS:
        column = _column(rows, name)
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
            column = _column(subset, name)
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
    from tqdm.auto import tqdm

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
        from ..refinement import refine_codes

        ours.note += f"; codes refined by analysis-by-synthesis ({refine_steps} steps, layers 2-{config.num_quantizers})"
    baseline_bits = {b.name: 0 for b in runnable}
    codec_bits, total_duration, skipped_clips, first = 0.0, 0.0, {}, None

    with tempfile.TemporaryDirectory(prefix="llm_codec_eval_") as workdir:
        for row in tqdm(rows, desc="codec quality", disable=not progress):
            reference = load_clip(row["path"], rate)
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
        from ..plotting import plot_spectrograms

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


# ---------------------------------------------------------------------------------------------------- benchmark


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (10^6 bytes; Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def benchmark_audio(seconds: float, sampling_rate: int) -> torch.Tensor:
    """The bundled speech clip (`llm_codec/assets/example_speech.flac`) repeated to `seconds`: (1, 1, samples)."""
    from importlib.resources import files

    clip = load_clip(str(files("llm_codec") / "assets" / "example_speech.flac"), sampling_rate)
    total = int(round(seconds * sampling_rate))
    if total < 1:
        raise ValueError(f"--seconds must be positive, got {seconds}.")
    return torch.from_numpy(np.resize(clip, total).astype(np.float32))[None, None]


@torch.no_grad()
def benchmark_codec(codec, seconds: float = 10.0, repeats: int = 3, seed: int = 0) -> BenchmarkResult:
    """
    Times `codec` on the bundled speech clip repeated to `seconds`.

    Args:
        codec (`LLMCodecModel`): the codec (put in eval mode).
        seconds (`float`, defaults to 10): clip length.
        repeats (`int`, defaults to 3): timed runs of encode and of decode (medians are reported).
        seed (`int`, defaults to 0): seed of the decoder noise.

    Returns:
        `BenchmarkResult`.
    """
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {repeats}.")
    codec.eval()
    audio = benchmark_audio(seconds, int(codec.config.sample_rate)).to(codec.device)
    start = time.perf_counter()
    encoded = codec.encode(audio)
    encode_first = time.perf_counter() - start
    encode_runs, decode_runs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        encoded = codec.encode(audio)
        encode_runs.append(time.perf_counter() - start)
    generator = torch.Generator(device=codec.device)
    codec.decode(encoded.audio_codes, audio_lengths=encoded.audio_lengths, generator=generator.manual_seed(seed))
    for _ in range(repeats):
        start = time.perf_counter()
        codec.decode(encoded.audio_codes, audio_lengths=encoded.audio_lengths, generator=generator.manual_seed(seed))
        decode_runs.append(time.perf_counter() - start)
    encode_s, decode_s = statistics.median(encode_runs), statistics.median(decode_runs)
    method = (
        f"Input: the bundled speech clip repeated to {seconds:g} s at {codec.config.sample_rate} Hz, batch 1, "
        f"{torch.get_num_threads()} torch thread(s), device {codec.device}, dtype {codec.dtype}. Encode once untimed "
        f"apart (first call, projects and caches the codebooks), then {repeats} timed encodes; decode once untimed, "
        f"then {repeats} timed decodes of the same codes (seeded noise). Wall times by time.perf_counter, medians "
        "reported; real-time factor = (encode + decode) / clip duration (below 1: faster than real time). Peak RSS: "
        "getrusage ru_maxrss of this process, model loading included."
    )
    return BenchmarkResult(
        seconds=float(seconds),
        repeats=int(repeats),
        threads=torch.get_num_threads(),
        encode_first_s=encode_first,
        encode_s=encode_s,
        decode_s=decode_s,
        encode_runs_s=encode_runs,
        decode_runs_s=decode_runs,
        real_time_factor=(encode_s + decode_s) / seconds,
        encode_rtf=encode_s / seconds,
        decode_rtf=decode_s / seconds,
        peak_rss_mb=peak_rss_mb(),
        tokens_per_second=float(sum(codec.config.tokens_per_second)),
        bitrate=float(codec.config.bitrate),
        method=method,
    )


__all__ = [
    "DEFAULT_BASELINES",
    "METRICS",
    "Baseline",
    "BenchmarkResult",
    "CodecEvaluationResults",
    "SystemResult",
    "benchmark_codec",
    "evaluate_codec",
    "load_clip",
    "save_results",
    "score_clip",
    "select_clips",
]
