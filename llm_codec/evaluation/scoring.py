"""Scoring one decoded clip against its original: delay compensation, then the shipped metric modules."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..extras import missing_extra
from .metrics import load_metric
from .report import METRICS


@lru_cache(maxsize=None)
def _metric(name: str):
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
    try:
        from scipy.signal import correlate, correlation_lags  # lazy: optional (the "eval" extra)
    except ImportError as error:
        raise missing_extra(error, "scipy", "eval", "Aligning a reconstruction to its reference") from None

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


__all__ = ["MAX_LAG_S", "align_to_reference", "score_clip"]
