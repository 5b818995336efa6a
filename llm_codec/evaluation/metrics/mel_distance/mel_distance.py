"""Multi-scale log-mel L1 distance (LLM-Codec's training reconstruction loss), an `evaluate` metric module."""

import evaluate
import torch

from llm_codec.evaluation.metrics._audio import pair_features, prepare_pairs, score_pairs
from llm_codec.mel import MultiScaleMelLoss

_DESCRIPTION = """
The multi-scale mel distance is the reconstruction loss LLM-Codec is trained with (the one of DAC,
`llm_codec.training.losses.MultiScaleMelLoss` with its defaults): for seven STFT sizes from 32 to 2048 samples
(hop a quarter of the window, Hann window) with 5 to 320 mel bands, the mean absolute difference between the
log10 mel magnitudes (floored at 1e-5) of the decoded and the original audio, summed over the seven scales. Lower
is better; identical signals give 0. Fine scales weigh timing and transients, coarse ones pitch and timbre.

The audio is resampled to 16 kHz (soxr) when it comes at another rate, so the window lengths and values are those
of training at any input rate. When a prediction and its reference differ in length both are trimmed to the
shorter one. Silence is a valid input (two silent clips are at distance 0); empty or non-finite clips get NaN with
the reason.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 1-D float arrays): decoded audio, one array per clip.
    references (`list` of 1-D float arrays): original audio, same order.
    sampling_rate (`int`): rate of both in Hz (resampled to 16 kHz when different).
Returns:
    mel_distance (`float`): mean distance over the clips that could be scored (NaN when none could).
    scores (`list[float]`): per-clip distance (NaN where undefined).
    nan_reasons (`list`): per clip, `None` or why its score is NaN.
    num_scored (`int`): clips with a finite score.
Examples:
    >>> from llm_codec.evaluation.metrics import load_metric
    >>> import numpy as np
    >>> x = np.sin(np.arange(16000) / 10.0)
    >>> load_metric("mel_distance").compute(predictions=[x], references=[x], sampling_rate=16000)["mel_distance"]
    0.0
"""

_CITATION = """
@inproceedings{kumar2023dac,
  title     = {High-Fidelity Audio Compression with Improved {RVQGAN}},
  author    = {Kumar, Rithesh and Seetharaman, Prem and Luebs, Alejandro and Kumar, Ishaan and Kumar, Kundan},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2023}
}
"""

RATE = 16000


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MelDistance(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=pair_features(),
            reference_urls=["https://github.com/descriptinc/descript-audio-codec"],
        )

    def _download_and_prepare(self, dl_manager):
        self.mel_loss = MultiScaleMelLoss(sample_rate=RATE)

    def _compute(self, predictions, references, sampling_rate=None):
        pairs = prepare_pairs(predictions, references, sampling_rate, target_rate=RATE)
        return score_pairs("mel_distance", pairs, self._distance)

    @torch.no_grad()
    def _distance(self, prediction, reference):
        prediction, reference = (torch.from_numpy(a).float()[None, None] for a in (prediction, reference))
        return float(self.mel_loss(prediction, reference))
