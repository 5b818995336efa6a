"""Reading and writing audio files (soundfile), resampled to the codec rate (soxr)."""

from pathlib import Path

import numpy as np


def load_audio(path: str | Path, sampling_rate: int | None = None) -> tuple[np.ndarray, int]:
    """
    Reads an audio file -> `(samples (channels, time) float32, rate)`. With `sampling_rate`, the audio is resampled
    to that rate (soxr, high quality). Raises `FileNotFoundError` / `ValueError` with the file name on failure.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No audio file at {path}.")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:
        raise ValueError(f"Could not read {path} as audio ({error}). Supported: WAV, FLAC, OGG and other libsndfile formats.") from error
    data = data.T  # (channels, time)
    if sampling_rate is not None and rate != sampling_rate:
        import soxr

        data = soxr.resample(data.T, rate, sampling_rate, quality="HQ").T.astype(np.float32)
        rate = sampling_rate
    return np.ascontiguousarray(data), rate


def save_audio(path: str | Path, samples, sampling_rate: int) -> Path:
    """Writes `samples` ((time,), (channels, time) or a (1, 1, time) tensor) as 16-bit WAV; returns the path."""
    import soundfile as sf

    array = samples.detach().float().cpu().numpy() if hasattr(samples, "detach") else np.asarray(samples)
    array = np.squeeze(array)
    if array.ndim == 2:
        array = array.T
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(array, -1.0, 1.0), sampling_rate, subtype="PCM_16")
    return path
