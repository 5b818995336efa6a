"""Scale-invariant signal-to-distortion ratio (SI-SDR), an `evaluate` metric module shipped with llm-codec."""

import evaluate
import numpy as np

from llm_codec.evaluation.metrics._audio import is_silent, pair_features, prepare_pairs, score_pairs

_DESCRIPTION = """
SI-SDR measures how much of a decoded waveform is the original waveform, in dB, ignoring its overall gain. Both
signals are made zero-mean; the reference is scaled by the factor that best explains the decoded signal (its
least-squares projection onto the reference), and the ratio of the energy of that scaled reference to the energy
of what is left over is expressed in decibels. Multiplying the decoded signal by any non-zero constant leaves the
value unchanged; additive noise at a given SNR gives about that SNR. It is a waveform measure: codecs that do not
keep the phase (parametric vocoders, GAN decoders) can sound good and still score low or negative.

Clips are compared sample by sample: when a prediction and its reference differ in length both are trimmed to the
shorter one. A clip whose reference or prediction is silent (RMS below 1e-7) has no defined SI-SDR and is scored
NaN with a reason. Identical signals have an infinite SI-SDR; it is capped at 300 dB.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 1-D float arrays): decoded audio, one array per clip.
    references (`list` of 1-D float arrays): original audio, same order.
    sampling_rate (`int`): rate of both in Hz (SI-SDR does not depend on it; it is checked for consistency).
Returns:
    si_sdr (`float`): mean SI-SDR in dB over the clips that could be scored (NaN when none could).
    scores (`list[float]`): per-clip SI-SDR in dB (NaN where undefined).
    nan_reasons (`list`): per clip, `None` or why its score is NaN.
    num_scored (`int`): clips with a finite score.
Examples:
    >>> from llm_codec.evaluation.metrics import load_metric
    >>> import numpy as np
    >>> x = np.sin(np.arange(16000) / 10.0)
    >>> round(load_metric("si_sdr").compute(predictions=[0.5 * x], references=[x], sampling_rate=16000)["si_sdr"])
    300
"""

_CITATION = """
@inproceedings{leroux2019sdr,
  title     = {{SDR} -- Half-baked or Well Done?},
  author    = {Le Roux, Jonathan and Wisdom, Scott and Erdogan, Hakan and Hershey, John R.},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  pages     = {626--630},
  year      = {2019}
}
"""

MAX_DB = 300.0


def si_sdr(prediction: np.ndarray, reference: np.ndarray) -> float:
    """SI-SDR in dB of `prediction` against `reference` (both (samples,) float64, same length, not silent)."""
    prediction = prediction - prediction.mean()
    reference = reference - reference.mean()
    scale = np.dot(prediction, reference) / np.dot(reference, reference)
    target = scale * reference
    residual = prediction - target
    target_energy, residual_energy = np.dot(target, target), np.dot(residual, residual)
    floor = target_energy * 10.0 ** (-MAX_DB / 10.0)
    if target_energy == 0.0:  # prediction orthogonal to the reference: nothing of it is left
        return -MAX_DB
    return float(10.0 * np.log10(target_energy / max(residual_energy, floor)))


def _si_sdr_or_reason(prediction, reference):
    """SI-SDR of one pair, or why it is undefined."""
    if is_silent(reference - reference.mean()):
        return "reference is silent (SI-SDR undefined)"
    if is_silent(prediction - prediction.mean()):
        return "prediction is silent (SI-SDR undefined)"
    return si_sdr(prediction, reference)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SiSdr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=pair_features(),
            reference_urls=["https://arxiv.org/abs/1811.02508"],
        )

    def _compute(self, predictions, references, sampling_rate=None):
        return score_pairs("si_sdr", prepare_pairs(predictions, references, sampling_rate), _si_sdr_or_reason)
