"""Helpers shared by the shipped audio metric modules (`pesq_wb`, `stoi`, `si_sdr`, `mel_distance`).

The metric modules are loaded by file path through `evaluate.load` (which copies them into its module cache), so
they import this file absolutely (`llm_codec.evaluation.metrics._audio`) rather than relatively.
"""

from __future__ import annotations

import numpy as np

# A signal whose RMS is below this is treated as digital silence (about -140 dBFS).
SILENCE_RMS = 1e-7


def is_silent(signal: np.ndarray) -> bool:
    """True when `signal` (samples,) is empty or its RMS is below `SILENCE_RMS`."""
    return signal.size == 0 or float(np.sqrt(np.mean(np.square(signal)))) < SILENCE_RMS


def resample(signal: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """`signal` (samples,) float64 at `source_rate` -> (samples * target_rate / source_rate,) float64 (soxr HQ)."""
    if int(source_rate) == int(target_rate) or signal.size == 0:
        return signal
    import soxr

    return soxr.resample(signal, int(source_rate), int(target_rate), quality="HQ").astype(np.float64)


def prepare_pairs(predictions, references, sampling_rate, target_rate: int | None = None):
    """
    Checks and aligns clip pairs for an audio metric.

    Args:
        predictions, references (sequences of array-likes of shape `(samples,)`): decoded and original audio.
        sampling_rate (`int`): rate of both.
        target_rate (`int`, *optional*): resample both to this rate (soxr) after trimming.

    Returns:
        `list`: per pair, either `(prediction, reference)` as float64 arrays of equal length (trimmed to the
        shorter of the two), or a string saying why the pair cannot be scored (empty, non-finite, not 1-D).
    """
    if sampling_rate is None or int(sampling_rate) <= 0:
        raise ValueError("Pass `sampling_rate=` (Hz, a positive integer) to compute().")
    if len(predictions) != len(references):
        raise ValueError(f"Got {len(predictions)} predictions for {len(references)} references: give one each.")
    out = []
    for prediction, reference in zip(predictions, references):
        prediction = np.asarray(prediction, dtype=np.float64)
        reference = np.asarray(reference, dtype=np.float64)
        if prediction.ndim != 1 or reference.ndim != 1:
            prediction, reference = np.squeeze(prediction), np.squeeze(reference)
            if prediction.ndim != 1 or reference.ndim != 1:
                out.append(f"clips must be 1-D (mono) arrays, got shapes {prediction.shape} and {reference.shape}")
                continue
        length = min(prediction.size, reference.size)
        if length == 0:
            out.append("empty clip")
            continue
        prediction, reference = prediction[:length], reference[:length]
        if not (np.isfinite(prediction).all() and np.isfinite(reference).all()):
            out.append("non-finite samples (NaN or inf)")
            continue
        if target_rate is not None:
            prediction = resample(prediction, sampling_rate, target_rate)
            reference = resample(reference, sampling_rate, target_rate)
        out.append((prediction, reference))
    return out


def pair_features():
    """The `datasets.Features` every audio metric takes: `predictions` and `references`, lists of float32 samples."""
    import datasets

    clip = datasets.Sequence(datasets.Value("float32"))
    return datasets.Features({"predictions": clip, "references": clip})


def score_pairs(name: str, pairs: list, score_pair) -> dict:
    """
    Scores the output of `prepare_pairs` and summarizes it.

    Args:
        name (`str`): the metric's name (key of the mean).
        pairs (`list`): from `prepare_pairs`: `(prediction, reference)` arrays or a reason string.
        score_pair (`Callable[[np.ndarray, np.ndarray], float | str]`): a pair's score, or why it has none.

    Returns:
        `dict`: see `summarize`.
    """
    scores, reasons = [], []
    for pair in pairs:
        result = pair if isinstance(pair, str) else score_pair(*pair)
        if isinstance(result, str):
            scores.append(float("nan"))
            reasons.append(result)
        else:
            scores.append(float(result))
            reasons.append(None)
    return summarize(name, scores, reasons)


def summarize(name: str, scores: list[float], reasons: list[str | None]) -> dict:
    """
    The result dict of an audio metric.

    Returns:
        `dict` with `name` (mean over the scored clips, NaN when none could be scored), `scores` (one float per
        clip, NaN where it could not be scored), `nan_reasons` (one entry per clip: `None` or why it is NaN) and
        `num_scored` (clips with a finite score).
    """
    values = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(values)
    mean = float(values[finite].mean()) if finite.any() else float("nan")
    return {name: mean, "scores": [float(v) for v in values], "nan_reasons": list(reasons), "num_scored": int(finite.sum())}

