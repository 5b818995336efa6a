"""Audio I/O of llm-codec: reading audio files and encoded bytes (soundfile), finding them in folders and
`datasets` columns, resampling (soxr), and writing WAV files and reports safely."""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


def resample(array: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """
    Resamples `array` along its last axis (soxr, high quality); every leading index is an independent signal.

    Args:
        array (`np.ndarray` of shape `(..., samples)`): float32 or float64 audio.
        source_rate (`int`), target_rate (`int`): rates in Hz.

    Returns:
        `np.ndarray` of shape `(..., round(samples * target_rate / source_rate))` in the input's float dtype;
        `array` itself when the rates are equal or it holds no samples.
    """
    source_rate, target_rate = int(source_rate), int(target_rate)
    if source_rate == target_rate or array.size == 0:
        return array
    if array.ndim == 1:
        return soxr.resample(array, source_rate, target_rate, quality="HQ")
    rows = array.reshape(-1, array.shape[-1])
    out = soxr.resample(rows.T, source_rate, target_rate, quality="HQ").T  # soxr: (time, channels)
    return np.ascontiguousarray(out).reshape(*array.shape[:-1], out.shape[-1])


def audio_files_under(folder: str | Path, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """All files under `folder` (recursively) whose suffix is in `extensions` (case-insensitive), sorted; may be empty."""
    suffixes = {e.lower() for e in extensions}
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _open(source):
    if isinstance(source, (bytes, bytearray, memoryview)):
        return sf.SoundFile(io.BytesIO(bytes(source)))
    return sf.SoundFile(str(source))


def _describe(source) -> str:
    return f"<{len(source)} bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)


def read_audio(source, sample_rate: int, seconds: float | None = None, offset_fraction: float = 0.0) -> np.ndarray:
    """
    Decodes (part of) a source to mono float32 at `sample_rate`.

    Args:
        source: a path or encoded audio bytes (any libsndfile format).
        sample_rate (`int`): output rate (soxr resampling when the file's differs).
        seconds (`float`, *optional*): read only this much, starting at `offset_fraction` of the remaining room
            (`None`: the whole file).
        offset_fraction (`float` in [0, 1], defaults to 0): where the excerpt starts.

    Returns:
        `np.ndarray` of shape `(samples,)` (at most `round(seconds * sample_rate)` samples).
    """
    try:
        with _open(source) as handle:
            rate, total = handle.samplerate, handle.frames
            if seconds is None:
                start, count, margin_before = 0, total, 0
            else:
                wanted = math.ceil(seconds * rate)
                start = int(offset_fraction * max(0, total - wanted))
                margin_before = min(start, math.ceil(0.01 * rate))  # a little context for the resampler
                count = min(total - start, wanted) + margin_before + math.ceil(0.01 * rate)
                start -= margin_before
            handle.seek(start)
            data = handle.read(count, dtype="float32", always_2d=True)
    except Exception as error:
        raise ValueError(f"Could not decode {_describe(source)} ({error}).") from error
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    mono = resample(mono, rate, sample_rate).astype(np.float32)
    skip = round(margin_before * sample_rate / rate)
    if seconds is not None:
        mono = mono[skip : skip + round(seconds * sample_rate)]
    return np.ascontiguousarray(mono, dtype=np.float32)


class HFAudioColumn:
    """
    Random access to the audio of a `datasets.Dataset` column without `datasets`' decoding: items are `Audio(
    decode=False)` dicts (`{"bytes": ..., "path": ...}`) or plain paths. Indexable and picklable.
    """

    def __init__(self, dataset, column: str = "audio"):
        if column not in dataset.column_names:
            raise ValueError(f"The dataset has no {column!r} column (columns: {dataset.column_names}).")
        feature = dataset.features[column]
        if getattr(feature, "decode", False):
            dataset = dataset.cast_column(column, type(feature)(decode=False))
        self.dataset = dataset.select_columns([column])
        self.column = column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        value = self.dataset[int(index)][self.column]
        if isinstance(value, dict):
            if value.get("bytes"):
                return value["bytes"]
            if value.get("path"):
                return value["path"]
            raise ValueError(f"Row {index} of the dataset has neither audio bytes nor a path.")
        return value


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


def load_audio(path: str | Path | bytes, sampling_rate: int | None = None) -> tuple[np.ndarray, int]:
    """
    Reads an audio file, given by its path or as the bytes of a whole file (WAV, FLAC, OGG and other libsndfile
    formats).

    Args:
        path (`str`, `os.PathLike` or `bytes`): the file's path, or its contents.
        sampling_rate (`int`, *optional*): resample to this rate (soxr, high quality).

    Returns:
        `tuple`: `(samples, rate)`, samples a float32 array of shape `(channels, time)`.

    Raises:
        `FileNotFoundError`: no file at the path. `ValueError`: not an audio file, or a truncated WAV file (the
        message names the file).
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        source, what = io.BytesIO(bytes(path)), f"the given {len(path)} bytes"
    else:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No audio file at {path}.")
        source, what = str(path), str(path)
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as error:
        raise ValueError(
            f"Could not read {what} as audio ({error}). Supported: a whole file in WAV, FLAC, OGG or another "
            "libsndfile format; pass raw samples as an array with their sampling rate instead."
        ) from error
    if isinstance(path, Path):
        _check_wav_complete(path)
    data = data.T  # (channels, time)
    if sampling_rate is not None and rate != sampling_rate:
        data = resample(data, rate, sampling_rate).astype(np.float32)
        rate = sampling_rate
    return np.ascontiguousarray(data), rate


def load_mono_audio(path: str | Path, sampling_rate: int) -> np.ndarray:
    """An audio file -> mono `(samples,)` float32 at `sampling_rate` (channels averaged after soxr resampling)."""
    samples, _ = load_audio(path, sampling_rate=sampling_rate)
    return np.ascontiguousarray(samples.mean(axis=0), dtype=np.float32)


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
    array = samples.detach().float().cpu().numpy() if hasattr(samples, "detach") else np.asarray(samples)
    array = np.squeeze(array)
    if array.ndim == 2:
        array = array.T
    clipped = np.clip(array, -1.0, 1.0)
    return atomic_write(path, lambda tmp: sf.write(str(tmp), clipped, sampling_rate, subtype="PCM_16", format="WAV"))
