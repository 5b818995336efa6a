"""Discriminators for adversarial codec training.

- `MultiFrequencyDiscriminator`: one 2-D convolutional network per STFT resolution (window = 4 x hop), looking at
  the complex spectrum as two channels (real, imaginary; domain "double") or at the log magnitude (domain
  "magnitude"), optionally with the frequency axis warped to a mel-like scale. This follows the description of the
  discriminator of the original LLM-Codec config (hop lengths 32..1024, widths 64..512, domain "double", mel scale).
- `MultiPeriodDiscriminator`: HiFi-GAN style, the waveform folded into `(time / p, p)` for periods 2, 3, 5, 7, 11.
- `CodecDiscriminator`: both together, with one flat list of logits and feature maps.

Every discriminator returns `(logits, feature_maps)`: `logits` a list with one tensor per sub-discriminator and
`feature_maps` a list (per sub-discriminator) of lists of intermediate activations, for feature matching.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm
from transformers.audio_utils import hertz_to_mel

from ..mel import stft

LLM_CODEC_HOP_LENGTHS = (32, 64, 128, 256, 512, 1024)
LLM_CODEC_HIDDEN_CHANNELS = (64, 128, 256, 512, 512, 512)
CPU_HIDDEN_CHANNELS = (8, 16, 32, 64, 64, 64)
HIFIGAN_PERIODS = (2, 3, 5, 7, 11)
HIFIGAN_PERIOD_CHANNELS = (32, 128, 512, 1024, 1024)


def mel_warp_matrix(sample_rate: int, n_fft: int, n_bands: int) -> torch.Tensor:
    """
    A linear map from the `n_fft // 2 + 1` STFT bins to `n_bands` bands whose centres are equally spaced on the mel
    scale. Band `k` is a triangle from the centre of band `k - 1` to that of band `k + 1`, widened to at least one
    bin on each side (so no band is empty where mel bands are denser than the bins), and each row sums to 1. Being
    linear it can be applied to the real and imaginary parts alike.

    Returns:
        `torch.FloatTensor` of shape `(n_bands, n_fft // 2 + 1)`.
    """
    n_bins = n_fft // 2 + 1
    top = float(hertz_to_mel(sample_rate / 2.0, mel_scale="slaney"))
    mels = torch.linspace(0.0, top, n_bands, dtype=torch.float64)
    # back to Hz (inverse of the Slaney scale), then to fractional bin positions
    step, log_start, log_step = 200.0 / 3.0, 15.0, torch.log(torch.tensor(6.4, dtype=torch.float64)) / 27.0
    hz = torch.where(mels >= log_start, 1000.0 * torch.exp(log_step * (mels - log_start)), mels * step)
    centres = hz / (sample_rate / 2.0) * (n_bins - 1)
    previous = torch.cat([centres[:1] - 1.0, centres[:-1]])
    following = torch.cat([centres[1:], centres[-1:] + 1.0])
    left = torch.clamp(centres - previous, min=1.0)
    right = torch.clamp(following - centres, min=1.0)
    bins = torch.arange(n_bins, dtype=torch.float64)[None, :]
    offset = bins - centres[:, None]
    weights = torch.where(offset < 0, 1.0 + offset / left[:, None], 1.0 - offset / right[:, None]).clamp_min(0.0)
    return (weights / weights.sum(dim=1, keepdim=True)).float()


class SpectrogramDiscriminator(nn.Module):
    """
    The sub-discriminator of one STFT resolution: a stack of weight-normalised 2-D convolutions over
    (frequency, time); the first keeps the resolution, each following one halves the frequency axis, and a last
    convolution gives one logit per (frequency, time) cell.

    Args:
        hop_length (`int`): STFT hop; the window and FFT size are `4 * hop_length`.
        hidden_channels (`Sequence[int]`): widths of the convolution stack.
        domain (`str`): "double" (real and imaginary parts as 2 channels) or "magnitude" (log magnitude, 1 channel).
        mel_scale (`bool`): warp the frequency axis with `mel_warp_matrix` to `n_fft // 4` bands.
        sample_rate (`int`): audio rate in Hz (for the mel warping).
    """

    def __init__(self, hop_length: int, hidden_channels: Sequence[int], domain: str = "double", mel_scale: bool = True,
                 sample_rate: int = 16000, negative_slope: float = 0.1):
        super().__init__()
        if domain not in ("double", "magnitude"):
            raise ValueError(f"`domain` must be 'double' or 'magnitude', got {domain!r}.")
        if not hidden_channels:
            raise ValueError("`hidden_channels` needs at least one width.")
        self.hop_length, self.n_fft, self.domain = int(hop_length), 4 * int(hop_length), domain
        self.negative_slope = negative_slope
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        if mel_scale:
            self.register_buffer("warp", mel_warp_matrix(sample_rate, self.n_fft, max(2, self.n_fft // 4)), persistent=False)
        else:
            self.warp = None
        channels = [2 if domain == "double" else 1, *[int(c) for c in hidden_channels]]
        layers = [weight_norm(nn.Conv2d(channels[0], channels[1], (7, 3), padding=(3, 1)))]
        for c_in, c_out in zip(channels[1:-1], channels[2:]):
            layers.append(weight_norm(nn.Conv2d(c_in, c_out, (5, 3), stride=(2, 1), padding=(2, 1))))
        self.layers = nn.ModuleList(layers)
        self.conv_out = weight_norm(nn.Conv2d(channels[-1], 1, (3, 3), padding=(1, 1)))

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """`audio`: (batch, 1, samples) -> `(batch, channels, bands, frames)` in float32."""
        with torch.autocast(audio.device.type, enabled=False):
            spec = stft(audio, self.n_fft, self.hop_length, self.window, normalized=True)  # (B, F, T)
            if self.domain == "double":
                x = torch.stack([spec.real, spec.imag], dim=1)
            else:
                x = torch.log(spec.abs().clamp_min(1e-5))[:, None]
            if self.warp is not None:
                x = torch.einsum("mf,bcft->bcmt", self.warp, x)
            return x

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`audio`: (batch, 1, samples) -> `(logits (batch, 1, bands', frames), feature_maps)`."""
        x = self.spectrogram(audio).to(next(self.parameters()).dtype)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), self.negative_slope)
            features.append(x)
        return self.conv_out(x), features


class _DiscriminatorBank(nn.Module):
    """Runs every sub-discriminator of `self.discriminators` on the same audio."""

    def forward(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """`audio`: (batch, 1, samples) -> `(logits, feature_maps)`, one entry per sub-discriminator."""
        logits, features = [], []
        for discriminator in self.discriminators:
            out, maps = discriminator(audio)
            logits.append(out)
            features.append(maps)
        return logits, features


class MultiFrequencyDiscriminator(_DiscriminatorBank):
    """
    One `SpectrogramDiscriminator` per hop length.

    Args:
        hop_lengths (`Sequence[int]`, defaults to `(32, 64, 128, 256, 512, 1024)`).
        hidden_channels (`Sequence[int]`, defaults to `(64, 128, 256, 512, 512, 512)`; `CPU_HIDDEN_CHANNELS` is an
            8x narrower option).
        domain (`str`, defaults to "double"), mel_scale (`bool`, defaults to `True`), sample_rate (`int`).
    """

    def __init__(self, hop_lengths: Sequence[int] = LLM_CODEC_HOP_LENGTHS,
                 hidden_channels: Sequence[int] = LLM_CODEC_HIDDEN_CHANNELS, domain: str = "double",
                 mel_scale: bool = True, sample_rate: int = 16000):
        super().__init__()
        self.discriminators = nn.ModuleList(
            SpectrogramDiscriminator(h, hidden_channels, domain, mel_scale, sample_rate) for h in hop_lengths
        )



class PeriodDiscriminator(nn.Module):
    """
    Folds the waveform into `(frames, period)` (reflect-padding the end to a multiple of `period`) and applies 2-D
    convolutions with kernels `(5, 1)` strided along the frames.
    """

    def __init__(self, period: int, channels: Sequence[int] = HIFIGAN_PERIOD_CHANNELS, negative_slope: float = 0.1):
        super().__init__()
        self.period, self.negative_slope = int(period), negative_slope
        widths = [1, *[int(c) for c in channels]]
        layers = []
        for k, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            stride = 1 if k == len(widths) - 2 else 3
            layers.append(weight_norm(nn.Conv2d(c_in, c_out, (5, 1), stride=(stride, 1), padding=(2, 0))))
        self.layers = nn.ModuleList(layers)
        self.conv_out = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`audio`: (batch, 1, samples) -> `(logits (batch, 1, frames', period), feature_maps)`."""
        batch, channels, length = audio.shape
        extra = -length % self.period
        if extra:
            audio = F.pad(audio, (0, extra), mode="reflect" if length > extra else "constant")
        x = audio.view(batch, channels, -1, self.period)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), self.negative_slope)
            features.append(x)
        return self.conv_out(x), features


class MultiPeriodDiscriminator(_DiscriminatorBank):
    """One `PeriodDiscriminator` per period (default 2, 3, 5, 7, 11)."""

    def __init__(self, periods: Sequence[int] = HIFIGAN_PERIODS, channels: Sequence[int] = HIFIGAN_PERIOD_CHANNELS):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels) for p in periods)



class CodecDiscriminator(nn.Module):
    """
    The discriminators used for training: a `MultiFrequencyDiscriminator` and, optionally, a
    `MultiPeriodDiscriminator`, with their outputs concatenated.

    Args:
        sample_rate (`int`, defaults to 16000).
        hop_lengths, hidden_channels, domain, mel_scale: see `MultiFrequencyDiscriminator`.
        periods (`Sequence[int]`, *optional*): periods of the multi-period discriminator (`None`/empty: none).
        period_channels (`Sequence[int]`, defaults to `(32, 128, 512, 1024, 1024)`).
    """

    def __init__(self, sample_rate: int = 16000, hop_lengths: Sequence[int] = LLM_CODEC_HOP_LENGTHS,
                 hidden_channels: Sequence[int] = LLM_CODEC_HIDDEN_CHANNELS, domain: str = "double",
                 mel_scale: bool = True, periods: Sequence[int] | None = None,
                 period_channels: Sequence[int] = HIFIGAN_PERIOD_CHANNELS):
        super().__init__()
        self.mfd = MultiFrequencyDiscriminator(hop_lengths, hidden_channels, domain, mel_scale, sample_rate)
        self.mpd = MultiPeriodDiscriminator(periods, period_channels) if periods else None

    def forward(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """
        `audio`: (batch, 1, samples) -> `(logits, feature_maps)`: `len(hop_lengths) + len(periods)` logit tensors
        and as many lists of feature maps.
        """
        logits, features = self.mfd(audio)
        if self.mpd is not None:
            more_logits, more_features = self.mpd(audio)
            logits, features = logits + more_logits, features + more_features
        return logits, features


__all__ = [
    "CPU_HIDDEN_CHANNELS",
    "CodecDiscriminator",
    "HIFIGAN_PERIODS",
    "LLM_CODEC_HIDDEN_CHANNELS",
    "LLM_CODEC_HOP_LENGTHS",
    "MultiFrequencyDiscriminator",
    "MultiPeriodDiscriminator",
    "PeriodDiscriminator",
    "SpectrogramDiscriminator",
    "mel_warp_matrix",
]
