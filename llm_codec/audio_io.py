"""Reading and writing audio files (soundfile), resampled to the codec rate (soxr)."""

import os
import tempfile
from pathlib import Path

import numpy as np


def _check_wav_complete(path: Path) -> None:
    """
    A RIFF/WAVE file whose `data` chunk declares more bytes than the file holds was cut short (an interrupted copy or
    download); libsndfile would silently read the part that is there. Raises `ValueError` saying how much is missing.
    Other formats and files without a readable header are left to libsndfile.
    """
    with open(path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return
        size = path.stat().st_size
        position = 12
        while position + 8 <= size:
            handle.seek(position)
            chunk = handle.read(8)
            declared = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                available = size - position - 8
                if declared != 0xFFFFFFFF and declared > available:  # 0xFFFFFFFF: size unknown (streamed)
                    raise ValueError(
                        f"{path} is truncated: its header declares {declared} bytes of audio but the file holds "
                        f"{available} ({100 * available / declared:.0f} %). Copy or download it again."
                    )
                return
            position += 8 + declared + (declared & 1)


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
    _check_wav_complete(path)
    data = data.T  # (channels, time)
    if sampling_rate is not None and rate != sampling_rate:
        import soxr

        data = soxr.resample(data.T, rate, sampling_rate, quality="HQ").T.astype(np.float32)
        rate = sampling_rate
    return np.ascontiguousarray(data), rate


class OutputError(ValueError):
    """An output path that cannot or must not be written (checked before any work)."""


def check_output(path: str | Path, inputs=(), overwrite: bool = False, suffixes: tuple[str, ...] = (".wav",)) -> Path:
    """
    Checks an output file before any work is done, so that nothing is computed for a file that cannot be written
    and nothing the user has is lost.

    Args:
        path: the file to write. inputs: files the command reads (the output may never be one of them).
        overwrite: allow replacing an existing file. suffixes: accepted file name endings (empty: any).

    Returns:
        `Path`: `path`.

    Raises:
        `OutputError` (a `ValueError`): the path is one of the inputs, exists without `overwrite`, is a folder, has
        another suffix, or its folder cannot be created or written.
    """
    path = Path(path)
    for source in inputs:
        if source is not None and Path(source).exists() and path.exists() and path.resolve() == Path(source).resolve():
            raise OutputError(f"The output {path} is the input {source}: writing it would destroy the input. Choose "
                              "another output file.")
    if path.is_dir():
        raise OutputError(f"The output {path} is a folder: give a file name, e.g. {path / 'out.wav'}.")
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(f"The output {path} must end with {' or '.join(suffixes)}.")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it, or choose another output file.")
    check_output_folder(path.parent)
    return path


def check_output_folder(path: str | Path) -> Path:
    """
    Checks, before any work, that the results folder `path` can be created and written (its files are the command's
    own reports, replaced on each run). Raises `OutputError` otherwise; returns the folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"The output folder {path} is a file: give a folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"Cannot create the output folder {path}: {error.strerror or error}.") from None
    if not os.access(path, os.W_OK):
        raise OutputError(f"Cannot write into {path}: choose a writable output folder.")
    return path


def atomic_write(path: str | Path, write) -> Path:
    """
    `write(tmp_path)` fills a temporary file beside `path`, which then replaces `path` in one rename: an interrupted
    write never leaves a truncated file, and the old file stays whole until the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(descriptor)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_audio(path: str | Path, samples, sampling_rate: int) -> Path:
    """
    Writes `samples` ((time,), (channels, time) or a (1, 1, time) tensor) as 16-bit WAV, atomically (see
    `atomic_write`); returns the path.
    """
    import soundfile as sf

    array = samples.detach().float().cpu().numpy() if hasattr(samples, "detach") else np.asarray(samples)
    array = np.squeeze(array)
    if array.ndim == 2:
        array = array.T
    clipped = np.clip(array, -1.0, 1.0)
    return atomic_write(path, lambda tmp: sf.write(str(tmp), clipped, sampling_rate, subtype="PCM_16", format="WAV"))
