"""Short-time objective intelligibility (STOI), an `evaluate` metric module shipped with llm-codec (`pystoi`)."""

import evaluate
import pystoi  # noqa: F401 - `evaluate.load` reports a missing package from the module's imports

from llm_codec.evaluation.metrics._audio import pair_features, prepare_pairs, score_pairs, stoi_score

_DESCRIPTION = """
STOI predicts how intelligible a degraded speech recording is, from 0 to 1 (1: as intelligible as the original).
Both signals are resampled to 10 kHz, frames where the original is silent (more than 40 dB below its loudest
frame) are dropped, and the short-time temporal envelopes of one-third-octave bands over about 384 ms segments
are compared by correlation; the score is the average correlation. Like PESQ it is meant for speech.

Computed with `pystoi` (classic STOI, or extended STOI with `extended=True`). When a prediction and its reference
differ in length both are trimmed to the shorter one. Clips with too little non-silent speech for one analysis
segment (including a silent reference) get NaN with the reason instead of `pystoi`'s 1e-5 placeholder.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 1-D float arrays): decoded audio, one array per clip.
    references (`list` of 1-D float arrays): original audio, same order.
    sampling_rate (`int`): rate of both in Hz.
    extended (`bool`, defaults to `False`): extended STOI (Jensen & Taal 2016) instead of classic STOI.
Returns:
    stoi (`float`): mean STOI over the clips that could be scored (NaN when none could).
    scores (`list[float]`): per-clip STOI (NaN where undefined).
    nan_reasons (`list`): per clip, `None` or why its score is NaN.
    num_scored (`int`): clips with a finite score.
Examples:
    >>> from llm_codec.evaluation.metrics import load_metric
    >>> stoi = load_metric("stoi")
    >>> result = stoi.compute(predictions=[decoded], references=[original], sampling_rate=16000)
"""

_CITATION = """
@article{taal2011stoi,
  title   = {An Algorithm for Intelligibility Prediction of Time-Frequency Weighted Noisy Speech},
  author  = {Taal, Cees H. and Hendriks, Richard C. and Heusdens, Richard and Jensen, Jesper},
  journal = {IEEE Transactions on Audio, Speech, and Language Processing},
  volume  = {19},
  number  = {7},
  pages   = {2125--2136},
  year    = {2011}
}
@article{jensen2016estoi,
  title   = {An Algorithm for Predicting the Intelligibility of Speech Masked by Modulated Noise Maskers},
  author  = {Jensen, Jesper and Taal, Cees H.},
  journal = {IEEE/ACM Transactions on Audio, Speech, and Language Processing},
  volume  = {24},
  number  = {11},
  pages   = {2009--2022},
  year    = {2016}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Stoi(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=pair_features(),
            reference_urls=["https://github.com/mpariente/pystoi"],
        )

    def _compute(self, predictions, references, sampling_rate=None, extended=False):
        pairs = prepare_pairs(predictions, references, sampling_rate)
        return score_pairs("stoi", pairs, lambda p, r: stoi_score(p, r, int(sampling_rate), bool(extended)))
