"""Training data: random fixed-length crops of audio files, resampled to the codec rate and downmixed to mono.

Sources: a folder of audio files (searched recursively for wav/flac/ogg), a JSONL or CSV manifest with a `path`
column (relative paths are resolved against the manifest's folder), or a Hugging Face `datasets.Dataset` whose
audio column is `Audio(decode=False)` (`{"bytes", "path"}` dicts) or holds file paths. Audio is decoded with
soundfile (only the frames of the crop are read) and resampled with soxr; `datasets`' own audio decoding is never
used.

Batches are a pure function of `(seed, step, process)`: `CropBatchSampler` walks through one shuffled permutation
of the clips per epoch and gives every crop its own random seed, so a resumed run sees exactly the batches it would
have seen without interruption, and several processes see different clips.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..audio_io import AUDIO_EXTENSIONS, HFAudioColumn, audio_files_under, read_audio


# ---------------------------------------------------------------------------------------------------- sources


def list_audio_files(folder: str | Path, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> list[str]:
    """`audio_files_under(folder, extensions)` as strings; raises when `folder` is missing or holds no audio."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"No folder at {folder}.")
    files = [str(p) for p in audio_files_under(folder, extensions)]
    if not files:
        raise ValueError(f"No audio files ({', '.join(sorted({e.lower() for e in extensions}))}) under {folder}.")
    return files


def read_manifest(path: str | Path, column: str = "path") -> list[str]:
    """
    The audio paths listed in a JSONL (`.jsonl`/`.json`, one object per line) or CSV/TSV manifest under `column`.
    Relative paths are resolved against the manifest's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No manifest at {path}.")
    rows: list[dict] = []
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number} is not a JSON object ({error}).") from None
    else:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    if rows and column not in rows[0]:
        raise ValueError(f"{path} has no {column!r} column (columns: {sorted(rows[0])}).")
    paths = []
    for row in rows:
        entry = Path(str(row[column]))
        paths.append(str(entry if entry.is_absolute() else path.parent / entry))
    if not paths:
        raise ValueError(f"{path} lists no audio.")
    return paths


def resolve_sources(data, column: str = "audio", path_column: str = "path"):
    """
    A sequence of audio sources (paths or encoded bytes) from: a folder, a manifest file (.jsonl/.json/.csv/.tsv),
    a single audio file, a list of paths, or a `datasets.Dataset` (see `HFAudioColumn`).
    """
    if hasattr(data, "column_names") and hasattr(data, "features"):
        return HFAudioColumn(data, column)
    if isinstance(data, (list, tuple)):
        return list(data)
    path = Path(data)
    if path.is_dir():
        return list_audio_files(path)
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        if not path.is_file():
            raise FileNotFoundError(f"No audio file at {path}.")
        return [str(path)]
    return read_manifest(path, path_column)


# ---------------------------------------------------------------------------------------------------- datasets


class AudioCropDataset(Dataset):
    """
    Random crops of fixed length. Indexed by `(clip_index, crop_seed)` pairs (see `CropBatchSampler`); the seed
    decides the crop position and the gain, so an item is reproducible.

    Args:
        sources: a sequence of paths / encoded bytes (see `resolve_sources`).
        sample_rate (`int`): codec rate.
        crop_seconds (`float`): crop length; shorter clips are right-padded with zeros.
        gain_db (`tuple[float, float]`, *optional*): random gain range in dB (uniform); the result is scaled down
            if its peak would exceed 1.

    Items: `torch.FloatTensor` of shape `(1, round(crop_seconds * sample_rate))`.
    """

    def __init__(self, sources, sample_rate: int, crop_seconds: float, gain_db: Sequence[float] | None = None):
        self.sources, self.sample_rate = sources, int(sample_rate)
        self.crop_seconds = float(crop_seconds)
        self.crop_samples = round(self.crop_seconds * self.sample_rate)
        self.gain_db = tuple(float(g) for g in gain_db) if gain_db else None
        if self.gain_db is not None and len(self.gain_db) != 2:
            raise ValueError(f"`gain_db` must be a (low, high) pair in dB, got {gain_db!r}.")

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, item) -> torch.Tensor:
        index, seed = item if isinstance(item, tuple) else (item, item)
        rng = np.random.default_rng(seed)
        audio = read_audio(self.sources[index], self.sample_rate, self.crop_seconds, float(rng.random()))
        if self.gain_db is not None:
            audio = audio * np.float32(10 ** (rng.uniform(*self.gain_db) / 20))
            peak = float(np.abs(audio).max()) if audio.size else 0.0
            if peak > 1.0:
                audio = audio / peak
        if audio.shape[0] < self.crop_samples:
            audio = np.pad(audio, (0, self.crop_samples - audio.shape[0]))
        return torch.from_numpy(audio[: self.crop_samples].copy())[None]


class CropBatchSampler(Sampler):
    """
    Yields, for steps `start_step, start_step + 1, ...` (up to `end_step`), the batch of `(clip_index, crop_seed)`
    pairs of this process. Position `p = (step * num_processes + process_index) * batch_size + j` takes clip
    `perm_e[p % N]` of epoch `e = p // N` (one seeded permutation per epoch) and crop seed `(seed, p)`.
    """

    def __init__(self, num_clips: int, batch_size: int, seed: int = 0, start_step: int = 0, end_step: int | None = None,
                 num_processes: int = 1, process_index: int = 0):
        if num_clips <= 0:
            raise ValueError("The dataset is empty.")
        self.num_clips, self.batch_size, self.seed = int(num_clips), int(batch_size), int(seed)
        self.start_step, self.end_step = int(start_step), end_step
        self.num_processes, self.process_index = int(num_processes), int(process_index)
        self._permutations: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) > 4:
                self._permutations.clear()
            self._permutations[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.num_clips)
        return self._permutations[epoch]

    def batch(self, step: int) -> list[tuple[int, int]]:
        """The `(clip_index, crop_seed)` pairs of this process at `step`."""
        first = (step * self.num_processes + self.process_index) * self.batch_size
        items = []
        for position in range(first, first + self.batch_size):
            epoch, offset = divmod(position, self.num_clips)
            crop_seed = int(np.random.default_rng([self.seed, 1 << 20, position]).integers(2**63 - 1))
            items.append((int(self._permutation(epoch)[offset]), crop_seed))
        return items

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while self.end_step is None or step < self.end_step:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:
        if self.end_step is None:
            raise TypeError("An open-ended sampler has no length.")
        return max(0, self.end_step - self.start_step)


def _stack(items: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(items)


def make_dataloader(dataset: AudioCropDataset, batch_size: int, seed: int = 0, start_step: int = 0,
                    end_step: int | None = None, num_workers: int = 0, num_processes: int = 1,
                    process_index: int = 0) -> DataLoader:
    """
    A `DataLoader` of `(batch_size, 1, crop_samples)` float tensors for steps `start_step..end_step - 1`, in order.
    Each item's crop is decided by its seed alone, so the batches are the same for any `num_workers`.
    """
    if num_workers < 0:
        raise ValueError(f"`num_workers` must be 0 or more, got {num_workers}.")
    sampler = CropBatchSampler(len(dataset), batch_size, seed, start_step, end_step, num_processes, process_index)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                      persistent_workers=False, collate_fn=_stack, pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(int(seed)))  # keeps torch's global RNG untouched


def split_holdout(sources, count: int, seed: int = 0):
    """
    Splits plain source lists into `(train, held_out)` with `count` held-out items chosen by a seeded shuffle (the
    training list keeps its order). Sequences that are not lists (a `datasets` column) are split by index.
    """
    total = len(sources)
    if count <= 0:
        return sources, []
    if count >= total:
        raise ValueError(f"Cannot hold out {count} of {total} clips for validation: give `val_data` or more clips.")
    held = set(np.random.default_rng([seed, 7]).permutation(total)[:count].tolist())
    train = [i for i in range(total) if i not in held]
    if isinstance(sources, list):
        return [sources[i] for i in train], [sources[i] for i in sorted(held)]
    return _Subset(sources, train), [sources[i] for i in sorted(held)]


class _Subset:
    def __init__(self, base, indices):
        self.base, self.indices = base, list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.base[self.indices[i]]


def load_validation_clips(sources, sample_rate: int, seconds: float, limit: int | None = None) -> list[torch.Tensor]:
    """
    Held-out clips for validation: the first `seconds` of each source (whole clip if shorter), as
    `(1, 1, samples)` float tensors, at most `limit` of them.
    """
    clips = []
    for source in list(sources)[: limit if limit is not None else None]:
        audio = read_audio(source, sample_rate, seconds, 0.0)
        if audio.size:
            clips.append(torch.from_numpy(audio)[None, None])
    return clips


__all__ = [
    "AUDIO_EXTENSIONS",
    "audio_files_under",
    "AudioCropDataset",
    "CropBatchSampler",
    "HFAudioColumn",
    "list_audio_files",
    "load_validation_clips",
    "make_dataloader",
    "read_audio",
    "read_manifest",
    "resolve_sources",
    "split_holdout",
]
