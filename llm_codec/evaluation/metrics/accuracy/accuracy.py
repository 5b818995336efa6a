"""Accuracy with its 95 % Wilson score interval: an `evaluate` metric module shipped inside llm_codec.

Load it with `llm_codec.evaluation.metrics.load_metric("accuracy")` (by file path; the Hub is never contacted).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Accuracy = the fraction of predictions equal to their reference, with the Wilson score interval of that fraction
(scipy's `binomtest(...).proportion_ci(method="wilson")`). The Wilson interval stays inside [0, 1] and is sensible
for small n and for accuracies near 0 or 1, unlike the normal approximation.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int` or `str`): predicted labels, one per example.
    references (`list` of `int` or `str`): true labels, same length and type as `predictions`.
    confidence (`float`, defaults to 0.95): confidence level of the interval.

Returns:
    `accuracy` (`float` in [0, 1]), `n` (`int`, number of examples), `correct`
    (`int`), `ci_low` and `ci_high` (`float`, the Wilson interval).

Example:
    >>> from llm_codec.evaluation.metrics import load_metric
    >>> load_metric("accuracy").compute(predictions=[1, 0, 1, 1], references=[1, 1, 1, 1])["accuracy"]
    0.75
"""

_CITATION = """
@article{wilson1927,
  title={Probable inference, the law of succession, and statistical inference},
  author={Wilson, Edwin B.},
  journal={Journal of the American Statistical Association},
  volume={22}, number={158}, pages={209--212}, year={1927}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """Accuracy plus n and the Wilson score interval (predictions and references: ints or strings)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://en.wikipedia.org/wiki/Binomial_proportion_confidence_interval#Wilson_score_interval"],
        )

    def _compute(self, predictions, references, confidence=0.95):
        from scipy.stats import binomtest

        n = len(references)
        correct = int(np.sum(np.asarray(predictions, dtype=object) == np.asarray(references, dtype=object)))
        interval = binomtest(correct, n).proportion_ci(confidence_level=confidence, method="wilson")
        return {
            "accuracy": correct / n,
            "n": n,
            "correct": correct,
            "ci_low": float(interval.low),
            "ci_high": float(interval.high),
        }
