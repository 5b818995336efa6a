"""Codec evaluation results and how they are written: per-system results, the Markdown tables, strict JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .statistics import paired_difference

METRICS = ("pesq_wb", "stoi", "mel_distance", "si_sdr")
METRIC_TITLES = {"pesq_wb": "PESQ-WB", "stoi": "STOI", "mel_distance": "mel distance", "si_sdr": "SI-SDR (dB)"}


def format_number(value, digits: int) -> str:
    """`value` with `digits` decimals, or "n/a" for `None`, NaN and infinities."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def json_safe(value):
    """`value` with every non-finite float (NaN, inf) replaced by `None` and dict keys as strings, recursively through
    dicts, lists and tuples: what `json.dumps` writes as strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def metric_column(rows: list[dict], name: str) -> np.ndarray:
    """The values of metric `name` over per-clip result rows, as float64 (None -> NaN)."""
    """Metric `name` of each per-clip row, shape `(len(rows),)`; NaN (or `None`, as read back from JSON) stays NaN."""
    return np.array([row[name] for row in rows], dtype=np.float64)


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
        return json_safe(asdict(self))

    def paired_differences(self, metric: str = "pesq_wb", seed: int = 0) -> list[dict]:
        """
        The codec (first system) against each baseline, clip by clip, on `metric`.

        Returns:
            `list[dict]`, one per baseline: `baseline` and the keys of `paired_difference` (codec minus baseline).
        """
        codec = metric_column(self.systems[0].per_clip, metric)
        return [{"baseline": baseline.system, **paired_difference(codec, metric_column(baseline.per_clip, metric), seed=seed)}
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
            tokens = format_number(s.tokens_per_second, 2) if s.tokens_per_second is not None else "-"
            scores = [format_number(s.means.get(m), 3 if m == "stoi" else 2) for m in METRICS]
            lines.append(f"| {s.system} | {s.bitrate:.0f} | {tokens} | " + " | ".join(scores) + f" | {s.num_clips} |")
        lines += ["", "| system | measured bitrate (bit/s) | tokens/s per layer | real-time factor | clips scored "
                  "(PESQ / STOI / mel / SI-SDR) | note |", "| --- | --- | --- | --- | --- | --- |"]
        for s in self.systems:
            per_layer = " / ".join(f"{r:.2f}" for r in s.tokens_per_second_per_layer) if s.tokens_per_second_per_layer else "-"
            scored = " / ".join(str(s.num_scored.get(m, 0)) for m in METRICS)
            lines.append(f"| {s.system} | {format_number(s.measured_bitrate, 0)} | {per_layer} | {format_number(s.real_time_factor, 3)} "
                         f"| {scored} | {s.note} |")
        if any(s.by_source for s in self.systems):
            lines += ["", "Per source:", "", "| system | source | clips | PESQ-WB | STOI | mel distance | SI-SDR (dB) |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            for s in self.systems:
                for source, row in s.by_source.items():
                    scores = [format_number(row.get(m), 3 if m == "stoi" else 2) for m in METRICS]
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


__all__ = ["METRICS", "METRIC_TITLES", "CodecEvaluationResults", "SystemResult", "format_number", "json_safe",
           "metric_column", "save_results"]
