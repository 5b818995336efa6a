"""`evaluate` metric modules shipped inside the package and loaded by file path (the Hub is never contacted)."""

from pathlib import Path

from ...extras import missing_extra
from ._audio import pesq_wb_score, speech_scores, stoi_score

METRICS_DIR = Path(__file__).resolve().parent


def available_metrics() -> list[str]:
    """Names of the shipped metric modules (`<name>/<name>.py` under this folder)."""
    return sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())


def load_metric(name: str, **kwargs):
    """`evaluate.load` of the shipped module `name` (e.g. "accuracy", "pesq_wb") by its path; kwargs go to it."""
    try:
        import evaluate  # lazy: optional (the "eval" extra)
    except ImportError as error:
        raise missing_extra(error, "evaluate", "eval", "Loading a metric module") from None

    path = METRICS_DIR / name / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"No shipped metric {name!r}; available: {available_metrics()}.")
    return evaluate.load(str(path), **kwargs)


__all__ = ["METRICS_DIR", "available_metrics", "load_metric", "pesq_wb_score", "speech_scores", "stoi_score"]
