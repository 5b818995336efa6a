"""
musicnn's MagnaTagATune music tagger (MTT_musicnn) in torch, a frozen teacher for notes, instruments and general
sounds. Its weights are read from the TensorFlow checkpoint inside the `musicnn` 0.1.0 wheel, without TensorFlow.

musicnn 0.1.0 (ISC licence, Music Technology Group, Universitat Pompeu Fabra) ships the checkpoint in the wheel:
`pip install --no-deps musicnn==0.1.0` installs it and nothing else. The package's own code needs TensorFlow
1.x-style layers and is never imported. The checkpoint is a TensorFlow "tensor bundle": a LevelDB-format table
(`.index`) that names each variable's dtype, shape and byte range in `.data-00000-of-00001`. `read_tensor_bundle`
parses it, and `MusicnnTagger` rebuilds the network from facts of the published model:

- Input: 16 kHz audio; power mel spectrogram, 512-point FFT (periodic Hann, centred with zero padding), hop 256,
  96 Slaney mel bands from 0 to 8 kHz; the mel values rounded to float16, then log10(1 + 10000 x); 187-frame (3 s)
  patches.
- Front end: a batch norm of the input, then five branches, each a conv + ReLU + batch norm + max over frequency.
  - Two timbral branches: 204 filters of 7 frames x 38 or 67 mel bands, time padded by 3.
  - Three temporal branches: 51 filters of 128, 64 or 32 frames x 1 band, "same" padding.
  - The branches are concatenated into 561 channels per frame.
- Mid end: three 64-channel convolutions over 7 frames (ReLU + batch norm), the last two residual.
- Back end:
  - The concatenation of the front end and the three mid-end outputs (753 channels) is pooled over time, max and
    mean interleaved per channel (1506).
  - Then a batch norm, a 200-unit dense + ReLU + batch norm (the "penultimate" features), and a 50-tag dense layer
    with a sigmoid.
- All batch norms use epsilon 1e-3.

Tag probabilities and penultimate features match the musicnn package's own TensorFlow graph to about 1e-5 (the
tests compare three clips with stored TensorFlow outputs).
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..mel import mel_filterbank, stft
from ..voice_encoder import file_sha256, find_distribution_files

MUSICNN_DISTRIBUTION = "musicnn"
MUSICNN_REQUIREMENT = "musicnn==0.1.0"
MUSICNN_SHA256 = {
    ".index": "da2d7bb670b2b31e9bc441bb1bd75eca31b5b061f963cc1f9630c1aff3238f57",
    ".data-00000-of-00001": "041f3935e981a65cea739842d30c188d3a7d2adf4410955c8668eb3de4a5acab",
}
"""sha256 of the MTT_musicnn checkpoint files in the musicnn 0.1.0 wheel (4948 and 9 465 596 bytes)."""
MUSICNN_SAMPLE_RATE = 16000
MUSICNN_PATCH_FRAMES = 187  # 3 s of 256-sample hops

MTT_TAGS = (  # the model's 50 outputs, in order
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano", "ambient",
    "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals", "no vocals",
    "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man",
    "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello",
    "no voice", "weird", "country", "metal", "female voice", "choral",
)
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}
_MAGIC = 0xDB4775248B80FB57


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _block(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of one uncompressed table block."""
    if data[offset + size] != 0:
        raise ValueError("Compressed tensor-bundle blocks are not supported.")
    block = data[offset : offset + size]
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * restarts
    entries, key, position = [], b"", 0
    while position < end:
        shared, position = _varint(block, position)
        unshared, position = _varint(block, position)
        length, position = _varint(block, position)
        key = key[:shared] + block[position : position + unshared]
        position += unshared
        entries.append((key, block[position : position + length]))
        position += length
    return entries


def _fields(message: bytes) -> dict[int, list]:
    """Protobuf wire format -> {field number: [values]} (varints as ints, length-delimited as bytes)."""
    fields, position = {}, 0
    while position < len(message):
        tag, position = _varint(message, position)
        number, kind = tag >> 3, tag & 7
        if kind == 0:
            value, position = _varint(message, position)
        elif kind == 2:
            length, position = _varint(message, position)
            value, position = message[position : position + length], position + length
        elif kind == 5:
            value, position = message[position : position + 4], position + 4
        elif kind == 1:
            value, position = message[position : position + 8], position + 8
        else:
            raise ValueError(f"Unsupported protobuf wire type {kind}.")
        fields.setdefault(number, []).append(value)
    return fields


def read_tensor_bundle(prefix: str | Path) -> dict[str, np.ndarray]:
    """All variables of a TensorFlow checkpoint `prefix` (`prefix.index` + `prefix.data-00000-of-00001`)."""
    prefix = str(prefix)
    index = Path(prefix + ".index").read_bytes()
    data = Path(prefix + ".data-00000-of-00001").read_bytes()
    footer = index[-48:]
    if struct.unpack("<Q", footer[-8:])[0] != _MAGIC:
        raise ValueError(f"{prefix}.index is not a tensor-bundle table.")
    _, position = _varint(footer, 0)
    _, position = _varint(footer, position)
    index_offset, position = _varint(footer, position)
    index_size, _ = _varint(footer, position)
    tensors = {}
    for _, handle in _block(index, index_offset, index_size):
        offset, position = _varint(handle, 0)
        size, _ = _varint(handle, position)
        for key, value in _block(index, offset, size):
            if not key:
                continue  # the bundle header
            entry = _fields(value)
            dtype = entry.get(1, [1])[0]
            shape = [(_fields(dim).get(1, [0])[0]) for dim in _fields(entry[2][0]).get(2, [])] if 2 in entry else []
            if entry.get(3, [0])[0] != 0 or dtype not in _DTYPES:
                continue
            start, length = entry.get(4, [0])[0], entry.get(5, [0])[0]
            tensors[key.decode()] = np.frombuffer(data[start : start + length], dtype=_DTYPES[dtype]).reshape(shape)
    return tensors


def find_musicnn_checkpoint() -> str:
    """
    The checkpoint prefix of MTT_musicnn inside the installed `musicnn` distribution (its files are
    `MTT_musicnn/.index` and `MTT_musicnn/.data-00000-of-00001`), found through the distribution's metadata without
    importing `musicnn` (which would import TensorFlow). Raises `TeacherUnavailable` naming the pip command.
    """
    paths = find_distribution_files(
        MUSICNN_DISTRIBUTION, MUSICNN_REQUIREMENT, [f"musicnn/MTT_musicnn/{name}" for name in MUSICNN_SHA256],
        "The musicnn teacher (ISC licence; only its checkpoint files are read, so TensorFlow is not needed) needs",
    )
    prefix = str(paths[0].parent) + "/"
    return prefix


class MusicnnNorm(nn.Module):
    """TensorFlow's batch norm at inference (epsilon 1e-3), over the last axis of a tensor of any shape."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(..., channels)` -> the same shape."""
        return (x - self.running_mean) * torch.rsqrt(self.running_var + 1e-3) * self.weight + self.bias


class MusicnnBranch(nn.Module):
    """Conv over (time, mel) + ReLU + batch norm + max over the mel axis: `(B, 1, T, 96)` -> `(B, T, filters)`."""

    def __init__(self, filters: int, frames: int, bands: int):
        super().__init__()
        self.frames = frames
        self.conv = nn.Conv2d(1, filters, (frames, bands))
        self.norm = MusicnnNorm(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(batch, 1, frames, 96)` -> `(batch, frames, filters)`."""
        # TensorFlow "same" in time (an even kernel's extra frame of zeros goes after; for the timbral branches'
        # 7 frames this is their explicit 3 + 3)
        x = F.pad(x, (0, 0, (self.frames - 1) // 2, self.frames // 2))
        y = F.relu(self.conv(x))  # (B, filters, T, bands')
        return self.norm(y.permute(0, 2, 3, 1)).amax(2)  # (B, T, filters)


class MusicnnTagger(nn.Module):
    """MTT_musicnn. `forward(log_mel (B, T, 96))` -> `(tag probabilities (B, 50), penultimate (B, 200))`."""

    # (torch name, TensorFlow name) in the order the TensorFlow graph creates the layers
    RENAMES = (
        ("input_norm", "batch_normalization"),
        ("timbral_74.conv", "conv2d"), ("timbral_74.norm", "batch_normalization_1"),
        ("timbral_77.conv", "conv2d_1"), ("timbral_77.norm", "batch_normalization_2"),
        ("temporal_128.conv", "conv2d_2"), ("temporal_128.norm", "batch_normalization_3"),
        ("temporal_64.conv", "conv2d_3"), ("temporal_64.norm", "batch_normalization_4"),
        ("temporal_32.conv", "conv2d_4"), ("temporal_32.norm", "batch_normalization_5"),
        ("mid_conv1", "conv2d_5"), ("mid_norm1", "batch_normalization_6"),
        ("mid_conv2", "conv2d_6"), ("mid_norm2", "batch_normalization_7"),
        ("mid_conv3", "conv2d_7"), ("mid_norm3", "batch_normalization_8"),
        ("pool_norm", "batch_normalization_9"),
        ("dense", "dense"), ("dense_norm", "batch_normalization_10"),
        ("tags", "dense_1"),
    )

    def __init__(self):
        super().__init__()
        self.input_norm = MusicnnNorm(1)
        self.timbral_74, self.timbral_77 = MusicnnBranch(204, 7, 38), MusicnnBranch(204, 7, 67)
        self.temporal_128 = MusicnnBranch(51, 128, 1)
        self.temporal_64 = MusicnnBranch(51, 64, 1)
        self.temporal_32 = MusicnnBranch(51, 32, 1)
        self.mid_conv1, self.mid_norm1 = nn.Conv1d(561, 64, 7, padding=3), MusicnnNorm(64)
        self.mid_conv2, self.mid_norm2 = nn.Conv1d(64, 64, 7, padding=3), MusicnnNorm(64)
        self.mid_conv3, self.mid_norm3 = nn.Conv1d(64, 64, 7, padding=3), MusicnnNorm(64)
        self.pool_norm, self.dense, self.dense_norm = MusicnnNorm(1506), nn.Linear(1506, 200), MusicnnNorm(200)
        self.tags = nn.Linear(200, 50)
        self.eval()

    @classmethod
    def from_checkpoint(cls, prefix: str | None = None, check_sha256: bool = True) -> "MusicnnTagger":
        """
        The tagger with the weights of the checkpoint at `prefix` (a folder path ending in "/", as TensorFlow names
        it; default: the installed wheel's MTT_musicnn). With `check_sha256`, files whose sha256 differs from the
        pinned MTT_musicnn ones raise `ValueError`.
        """
        prefix = prefix or find_musicnn_checkpoint()
        if check_sha256:
            for name, expected in MUSICNN_SHA256.items():
                if file_sha256(prefix + name) != expected:
                    raise ValueError(f"{prefix}{name} is not the pinned musicnn 0.1.0 MTT_musicnn file (sha256 differs); "
                                     f"reinstall it: pip install --no-deps --force-reinstall {MUSICNN_REQUIREMENT}")
        variables = read_tensor_bundle(prefix)
        model, state = cls(), {}
        for ours, theirs in cls.RENAMES:
            for a, b in (("weight", "kernel"), ("bias", "bias"), ("weight", "gamma"), ("bias", "beta"),
                         ("running_mean", "moving_mean"), ("running_var", "moving_variance")):
                if f"{theirs}/{b}" not in variables:
                    continue
                value = variables[f"{theirs}/{b}"]
                if b == "kernel" and value.ndim == 2:  # dense (in, out) -> (out, in)
                    value = value.T
                elif b == "kernel" and ours.startswith("mid_conv"):  # (7, channels, 1, 64): a conv over time
                    value = value[:, :, 0, :].transpose(2, 1, 0)  # -> (64, channels, 7)
                elif b == "kernel":  # (frames, bands, 1, filters) -> (filters, 1, frames, bands)
                    value = value.transpose(3, 2, 0, 1)
                value = torch.from_numpy(np.array(value))  # a writable copy
                state[f"{ours}.{a}"] = value
        expected = set(model.state_dict())
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise ValueError(f"Checkpoint mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}.")
        model.load_state_dict(state)
        return model

    def forward(self, log_mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            log_mel (`torch.FloatTensor` of shape `(batch, frames, 96)`): `musicnn_log_mel` patches (187 frames as
                trained; any length of at least 1 frame works, the back end pools over time).

        Returns:
            `(tags, penultimate)`: `(batch, 50)` tag probabilities in `MTT_TAGS` order, `(batch, 200)` features.
        """
        x = self.input_norm(log_mel[:, None, :, :, None])[..., 0]  # (B, 1, T, 96), one scalar norm
        front = torch.cat([b(x) for b in (self.timbral_74, self.timbral_77, self.temporal_128, self.temporal_64,
                                          self.temporal_32)], dim=-1)  # (B, T, 561)
        m1 = self.mid_norm1(F.relu(self.mid_conv1(front.transpose(1, 2))).transpose(1, 2))
        m2 = self.mid_norm2(F.relu(self.mid_conv2(m1.transpose(1, 2))).transpose(1, 2)) + m1
        m3 = self.mid_norm3(F.relu(self.mid_conv3(m2.transpose(1, 2))).transpose(1, 2)) + m2
        features = torch.cat([front, m1, m2, m3], dim=-1)  # (B, T, 753)
        pooled = torch.stack([features.amax(1), features.mean(1)], dim=-1).flatten(1)  # max, mean interleaved
        penultimate = self.dense_norm(F.relu(self.dense(self.pool_norm(pooled))))
        return torch.sigmoid(self.tags(penultimate)), penultimate


@functools.lru_cache(maxsize=1)
def _mel_filters() -> torch.Tensor:
    return mel_filterbank(MUSICNN_SAMPLE_RATE, 512, 96)


def musicnn_log_mel(audio) -> torch.Tensor:
    """
    The model's input: 16 kHz mono audio (numpy array or tensor of shape `(samples,)`) -> `torch.FloatTensor` of
    shape `(frames, 96)` (one frame per 256 samples, centred), log10(1 + 10000 x) of the float16-rounded mel power.
    """
    wave = torch.as_tensor(audio, dtype=torch.float32)
    if wave.dim() != 1 or wave.numel() == 0:
        raise ValueError(f"Expected mono audio of shape (samples,) with at least one sample, got {tuple(wave.shape)}.")
    spectrum = stft(wave, 512, 256, torch.hann_window(512), pad_mode="constant")[0].abs() ** 2  # (257, frames)
    mel = (_mel_filters() @ spectrum).T
    return torch.log10(10000 * mel.half().float() + 1)


def musicnn_patches(mel: torch.Tensor, frames: int = MUSICNN_PATCH_FRAMES) -> torch.Tensor:
    """
    `(T, 96)` log mel -> `(patches, frames, 96)`: a clip shorter than a patch repeated to fill one (how the model was
    trained), a longer one cut into consecutive patches, the last one ending at the clip's end.
    """
    if len(mel) < frames:
        mel = mel.repeat(-(-frames // max(len(mel), 1)), 1)[:frames]
    starts = list(range(0, len(mel) - frames + 1, frames))
    if starts[-1] + frames < len(mel):
        starts.append(len(mel) - frames)
    return torch.stack([mel[s : s + frames] for s in starts])


__all__ = [
    "MTT_TAGS",
    "MUSICNN_SHA256",
    "MusicnnTagger",
    "find_musicnn_checkpoint",
    "musicnn_log_mel",
    "musicnn_patches",
    "read_tensor_bundle",
]
