"""Wideband PESQ (ITU-T P.862.2), an `evaluate` metric module shipped with llm-codec; wraps the `pesq` package."""

import evaluate
import pesq  # noqa: F401 - `evaluate.load` reports a missing package from the module's imports

from llm_codec.evaluation.metrics._audio import PESQ_RATE, pair_features, pesq_wb_score, prepare_pairs, score_pairs

_DESCRIPTION = """
Wideband PESQ predicts the mean opinion score listeners would give a degraded speech recording against its clean
original, following ITU-T P.862.2 (the wideband extension of P.862). Both signals are level-aligned, time-aligned
and passed through a model of human loudness perception; the audible differences are mapped to a MOS-LQO value
between about 1.0 (bad) and 4.64 (indistinguishable). It is designed for speech: on music or other sounds the
number has no validated meaning.

Computed with the `pesq` package at 16 kHz: clips at other rates are resampled to 16 kHz (soxr) first. When a
prediction and its reference differ in length both are trimmed to the shorter one. Clips that PESQ cannot score
(a silent reference or prediction, no speech detected, clips shorter than about 0.25 s) get NaN with the reason.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 1-D float arrays): decoded audio, one array per clip.
    references (`list` of 1-D float arrays): original audio, same order.
    sampling_rate (`int`): rate of both in Hz (resampled to 16 kHz when different).
Returns:
    pesq_wb (`float`): mean wideband PESQ (MOS-LQO) over the clips that could be scored (NaN when none could).
    scores (`list[float]`): per-clip PESQ-WB (NaN where PESQ failed).
    nan_reasons (`list`): per clip, `None` or why its score is NaN.
    num_scored (`int`): clips with a finite score.
Examples:
    >>> from llm_codec.evaluation.metrics import load_metric
    >>> pesq_wb = load_metric("pesq_wb")
    >>> result = pesq_wb.compute(predictions=[decoded], references=[original], sampling_rate=16000)
"""

_CITATION = """
@misc{itu2007p862_2,
  title        = {Wideband extension to Recommendation P.862 for the assessment of wideband telephone networks and
                  speech codecs},
  author       = {{ITU-T}},
  howpublished = {Recommendation P.862.2},
  year         = {2007}
}
@inproceedings{rix2001pesq,
  title     = {Perceptual evaluation of speech quality ({PESQ}) -- a new method for speech quality assessment of
               telephone networks and codecs},
  author    = {Rix, Antony W. and Beerends, John G. and Hollier, Michael P. and Hekstra, Andries P.},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  year      = {2001}
}
"""

@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PesqWb(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=pair_features(),
            reference_urls=["https://www.itu.int/rec/T-REC-P.862.2", "https://github.com/ludlows/PESQ"],
        )

    def _compute(self, predictions, references, sampling_rate=None):
        pairs = prepare_pairs(predictions, references, sampling_rate, target_rate=PESQ_RATE)
        return score_pairs("pesq_wb", pairs, pesq_wb_score)
