"""Statistics of the evaluations: the mean difference of paired per-clip scores with a bootstrap interval, and the
Wilson interval of a proportion."""

from __future__ import annotations

import numpy as np


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


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """
    Wilson score interval `(low, high)` of the proportion `successes / n` (scipy's `binomtest(...).proportion_ci(
    method="wilson")`, as the shipped `accuracy` metric reports it); `(nan, nan)` when `n` is 0.
    """
    if n == 0:
        return (float("nan"), float("nan"))
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n ({n}), got {successes}.")
    from scipy.stats import binomtest  # lazy: the "eval" extra

    interval = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(interval.low), float(interval.high))


__all__ = ["paired_difference", "wilson_interval"]
