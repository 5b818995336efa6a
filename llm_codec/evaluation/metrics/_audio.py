"""Helpers shared by the shipped audio metric modules (`pesq_wb`, `stoi`, `si_sdr`, `mel_distance`), and the
one implementation of per-clip PESQ-WB and STOI that those modules and the trainer's validation both use.

The metric modules are loaded by file path through `evaluate.load` (which copies them into its module cache), so
they import this file absolutely (`llm_codec.evaluation.metrics._audio`) rather than relatively.

Silence: a clip whose RMS is below `SILENCE_RMS` (about -140 dBFS) is not scored. PESQ-WB is NaN when the
reference or the prediction is silent, STOI when the reference is (a silent prediction of speech is then scored,
as unintelligible); both say why in their reason string instead of passing the packages' errors or placeholders
(pystoi's 1e-5) off as scores.
"""

from __future__ import annotations

import warnings

import numpy as np

from llm_codec.audio_io import resample as _resample_any
from llm_codec.extras import missing_extra

PESQ_RATE = 16000

# A signal whose RMS is below this is treated as digital silence (about -140 dBFS).
SILENCE_RMS = 1e-7


def is_silent(signal: np.ndarray) -> bool:
    """True when `signal` (samples,) is empty or its RMS is below `SILENCE_RMS`."""
    return signal.size == 0 or float(np.sqrt(np.mean(np.square(signal)))) < SILENCE_RMS


def resample(signal: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """`signal` (samples,) float64 at `source_rate` -> (samples * target_rate / source_rate,) float64 (soxr HQ)."""
    return _resample_any(signal, source_rate, target_rate).astype(np.float64, copy=False)


def pesq_wb_score(prediction: np.ndarray, reference: np.ndarray) -> float | str:
    """
    Wideband PESQ (`pesq` package) of one pair of float64 clips at 16 kHz, or a string saying why there is none
    (silence, see the module docstring, or PESQ's own error for short or speechless clips).
    """
    try:
        import pesq  # lazy: optional ("eval" / "train" extras)
    except ImportError as error:
        raise missing_extra(error, "pesq", "eval", "PESQ-WB") from None

    if is_silent(reference):
        return "reference is silent (PESQ needs speech)"
    if is_silent(prediction):
        return "prediction is silent (PESQ needs speech)"
    try:
        return float(pesq.pesq(PESQ_RATE, reference, prediction, "wb"))
    except Exception as error:  # noqa: BLE001 - PESQ reports short / speechless clips this way
        message = error.args[0] if error.args else ""
        message = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
        return f"{type(error).__name__}: {message}".strip()[:200]


def stoi_score(prediction: np.ndarray, reference: np.ndarray, sampling_rate: int, extended: bool = False) -> float | str:
    """
    (Extended) STOI (`pystoi`) of one pair of float64 clips at `sampling_rate`, or a string saying why there is none
    (a silent reference, or too little speech for one 384 ms segment, where pystoi would return 1e-5).
    """
    try:
        import pystoi  # lazy: optional ("eval" / "train" extras)
    except ImportError as error:
        raise missing_extra(error, "pystoi", "eval", "STOI") from None

    if is_silent(reference):
        return "reference is silent (STOI needs speech)"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            score = float(pystoi.stoi(reference, prediction, int(sampling_rate), extended=bool(extended)))
    except Exception as error:  # noqa: BLE001
        return f"{type(error).__name__}: {error}".strip()[:200]
    if any("Not enough STFT frames" in str(w.message) for w in caught):  # pystoi then returns the placeholder 1e-5
        return "too little non-silent speech for one STOI segment (384 ms)"
    return score


def speech_scores(reference: np.ndarray, estimate: np.ndarray, sampling_rate: int) -> tuple[dict, dict]:
    """
    PESQ-WB (at 16 kHz, soxr resampling) and classic STOI of one clip, as the `pesq_wb` and `stoi` metrics score it.

    Args:
        reference, estimate (`np.ndarray` of shape `(samples,)`): original and decoded audio (trimmed to the shorter).
        sampling_rate (`int`): their rate.

    Returns:
        `(values, errors)`: `values` maps "pesq_wb" and "stoi" to floats (NaN where the clip cannot be scored or the
        package is missing) and `errors` maps the NaN ones to the reason.
    """
    values, errors = {}, {}
    pair = prepare_pairs([estimate], [reference], sampling_rate)[0]
    for name, score in (("pesq_wb", lambda p, r: pesq_wb_score(resample(p, sampling_rate, PESQ_RATE),
                                                               resample(r, sampling_rate, PESQ_RATE))),
                        ("stoi", lambda p, r: stoi_score(p, r, sampling_rate))):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # both packages warn on silence / very short clips
                result = pair if isinstance(pair, str) else score(*pair)
        except ImportError as error:
            result = f"{type(error).__name__}: {error}"[:200]
        values[name] = float("nan") if isinstance(result, str) else float(result)
        if isinstance(result, str):
            errors[name] = result
    return values, errors


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
    try:
        import datasets  # lazy: optional ("eval" / "train" extras)
    except ImportError as error:
        raise missing_extra(error, "datasets", "eval", "Building an audio metric's features") from None

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

