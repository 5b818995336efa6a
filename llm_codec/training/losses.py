"""Training losses of the codec: spectral reconstruction losses and least-squares GAN losses.

All losses are computed in float32 with autocast disabled (STFTs are not supported in half precision everywhere),
whatever dtype the inputs come in. Audio is `(batch, 1, samples)` or `(batch, samples)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

DAC_MEL_WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
DAC_MEL_BANDS = (5, 10, 20, 40, 80, 160, 320)


# ------------------------------------------------------------------------------------------------- spectral helpers


def _hz_to_mel(freq: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    step = 200.0 / 3.0
    log_start_mel = 1000.0 / step
    log_step = math.log(6.4) / 27.0
    linear = freq / step
    logarithmic = log_start_mel + torch.log(freq.clamp_min(1e-10) / 1000.0) / log_step
    return torch.where(freq >= 1000.0, logarithmic, linear)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    step = 200.0 / 3.0
    log_start_mel = 1000.0 / step
    log_step = math.log(6.4) / 27.0
    linear = mel * step
    logarithmic = 1000.0 * torch.exp(log_step * (mel - log_start_mel))
    return torch.where(mel >= log_start_mel, logarithmic, linear)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """
    Triangular mel filters on the Slaney mel scale with Slaney area normalisation (the usual "librosa default"
    filterbank), built in float64 and returned in float32.

    Args:
        sample_rate (`int`): audio rate in Hz.
        n_fft (`int`): FFT size; the filters cover its `n_fft // 2 + 1` bins.
        n_mels (`int`): number of filters.
        f_min (`float`, defaults to 0): lowest edge in Hz.
        f_max (`float`, *optional*): highest edge in Hz (default: `sample_rate / 2`).

    Returns:
        `torch.FloatTensor` of shape `(n_mels, n_fft // 2 + 1)`.
    """
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    bins = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    edges_mel = torch.linspace(
        float(_hz_to_mel(torch.tensor(float(f_min), dtype=torch.float64))),
        float(_hz_to_mel(torch.tensor(f_max, dtype=torch.float64))),
        n_mels + 2,
        dtype=torch.float64,
    )
    edges = _mel_to_hz(edges_mel)
    widths = edges[1:] - edges[:-1]  # (n_mels + 1,)
    distance = edges[:, None] - bins[None, :]  # (n_mels + 2, bins)
    rising = -distance[:-2] / widths[:-1, None]
    falling = distance[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights = weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.float()


def _as_batch_of_signals(audio: torch.Tensor) -> torch.Tensor:
    if audio.dim() == 3:
        if audio.shape[1] != 1:
            raise ValueError(f"Expected mono audio (batch, 1, samples), got {tuple(audio.shape)}.")
        audio = audio[:, 0]
    elif audio.dim() == 1:
        audio = audio[None]
    elif audio.dim() != 2:
        raise ValueError(f"Expected audio of shape (batch, 1, samples) or (batch, samples), got {tuple(audio.shape)}.")
    return audio.float()


def stft(audio: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor, normalized: bool = False) -> torch.Tensor:
    """
    Centred STFT (reflect padding, or zero padding when the clip is shorter than half a window).

    Args:
        audio (`torch.Tensor` of shape `(batch, 1, samples)` or `(batch, samples)`).
        n_fft (`int`): window and FFT size.
        hop_length (`int`): hop in samples.
        window (`torch.Tensor` of shape `(n_fft,)`).
        normalized (`bool`): scale by `n_fft ** -0.5`.

    Returns:
        `torch.ComplexTensor` of shape `(batch, n_fft // 2 + 1, frames)` with `frames = samples // hop_length + 1`.
    """
    signal = _as_batch_of_signals(audio)
    pad = n_fft // 2
    mode = "reflect" if signal.shape[-1] > pad else "constant"
    signal = F.pad(signal[:, None], (pad, pad), mode=mode)[:, 0]
    return torch.stft(
        signal, n_fft, hop_length, window=window.to(signal.device, torch.float32), center=False,
        normalized=normalized, return_complex=True,
    )


# --------------------------------------------------------------------------------------------- reconstruction losses


class MultiScaleMelLoss(nn.Module):
    """
    Multi-scale mel reconstruction loss (DAC's): for every window length `w` (hop `w // 4`, Hann window), the L1
    distance between `log10(clamp(mel(magnitude), eps))` of prediction and target, summed over the scales.

    Args:
        sample_rate (`int`): audio rate in Hz.
        window_lengths (`Sequence[int]`, defaults to 32..2048): STFT sizes.
        n_mels (`Sequence[int]`, defaults to 5..320): mel bands of each scale.
        clamp_eps (`float`, defaults to 1e-5): floor before the log.
        log_weight (`float`, defaults to 1): weight of the log-mel L1 term.
        mag_weight (`float`, defaults to 0): weight of an L1 term on the linear mel magnitudes.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        window_lengths: Sequence[int] = DAC_MEL_WINDOWS,
        n_mels: Sequence[int] = DAC_MEL_BANDS,
        clamp_eps: float = 1e-5,
        log_weight: float = 1.0,
        mag_weight: float = 0.0,
    ):
        super().__init__()
        if len(window_lengths) != len(n_mels):
            raise ValueError(f"Give one mel band count per window length ({len(window_lengths)} vs {len(n_mels)}).")
        self.window_lengths = [int(w) for w in window_lengths]
        self.clamp_eps, self.log_weight, self.mag_weight = clamp_eps, log_weight, mag_weight
        for k, (window, bands) in enumerate(zip(self.window_lengths, n_mels)):
            self.register_buffer(f"window_{k}", torch.hann_window(window), persistent=False)
            self.register_buffer(f"filters_{k}", mel_filterbank(sample_rate, window, int(bands)), persistent=False)

    def mel_spectrograms(self, audio: torch.Tensor) -> list[torch.Tensor]:
        """`audio`: (batch, 1, samples) -> one `(batch, n_mels[k], frames_k)` mel magnitude per scale."""
        out = []
        for k, window in enumerate(self.window_lengths):
            magnitude = stft(audio, window, max(1, window // 4), getattr(self, f"window_{k}")).abs()
            out.append(getattr(self, f"filters_{k}") @ magnitude)
        return out

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`prediction`, `target`: (batch, 1, samples) -> scalar loss (0 when they are equal)."""
        with torch.autocast(prediction.device.type, enabled=False):
            loss = prediction.new_zeros((), dtype=torch.float32)
            for x, y in zip(self.mel_spectrograms(prediction), self.mel_spectrograms(target)):
                if self.log_weight:
                    loss = loss + self.log_weight * F.l1_loss(
                        x.clamp_min(self.clamp_eps).log10(), y.clamp_min(self.clamp_eps).log10()
                    )
                if self.mag_weight:
                    loss = loss + self.mag_weight * F.l1_loss(x, y)
            return loss


class MultiScaleSTFTLoss(nn.Module):
    """
    Multi-scale STFT magnitude loss (DAC's): for every window length `w` (hop `w // 4`), `log_weight` * L1 between
    `log10(clamp(|X|, eps) ** 2)` plus `mag_weight` * L1 between the magnitudes, summed over the scales.

    Args:
        window_lengths (`Sequence[int]`, defaults to `(2048, 512)`).
        clamp_eps (`float`, defaults to 1e-5), log_weight (`float`, defaults to 1), mag_weight (`float`,
        defaults to 1), pow (`float`, defaults to 2).
    """

    def __init__(
        self,
        window_lengths: Sequence[int] = (2048, 512),
        clamp_eps: float = 1e-5,
        log_weight: float = 1.0,
        mag_weight: float = 1.0,
        pow: float = 2.0,
    ):
        super().__init__()
        self.window_lengths = [int(w) for w in window_lengths]
        self.clamp_eps, self.log_weight, self.mag_weight, self.pow = clamp_eps, log_weight, mag_weight, pow
        for k, window in enumerate(self.window_lengths):
            self.register_buffer(f"window_{k}", torch.hann_window(window), persistent=False)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`prediction`, `target`: (batch, 1, samples) -> scalar loss (0 when they are equal)."""
        with torch.autocast(prediction.device.type, enabled=False):
            loss = prediction.new_zeros((), dtype=torch.float32)
            for k, window in enumerate(self.window_lengths):
                w = getattr(self, f"window_{k}")
                x = stft(prediction, window, max(1, window // 4), w).abs()
                y = stft(target, window, max(1, window // 4), w).abs()
                loss = loss + self.log_weight * F.l1_loss(
                    x.clamp_min(self.clamp_eps).pow(self.pow).log10(), y.clamp_min(self.clamp_eps).pow(self.pow).log10()
                )
                if self.mag_weight:
                    loss = loss + self.mag_weight * F.l1_loss(x, y)
            return loss


# --------------------------------------------------------------------------------------------------- GAN losses


def feature_matching_loss(real_features: list[list[torch.Tensor]], fake_features: list[list[torch.Tensor]]) -> torch.Tensor:
    """
    Feature-matching loss: L1 between the discriminators' intermediate activations on generated and real audio (the
    real ones detached), summed over discriminators and layers (as in DAC / HiFi-GAN).

    Args:
        real_features (`list[list[torch.Tensor]]`): per discriminator, its feature maps on real audio.
        fake_features (`list[list[torch.Tensor]]`): the same on generated audio (same shapes).

    Returns:
        `torch.FloatTensor` scalar.
    """
    if len(real_features) != len(fake_features):
        raise ValueError("real and fake feature lists come from different discriminators.")
    loss = None
    for real_maps, fake_maps in zip(real_features, fake_features):
        for real, fake in zip(real_maps, fake_maps):
            term = F.l1_loss(fake.float(), real.detach().float())
            loss = term if loss is None else loss + term
    if loss is None:
        raise ValueError("No feature maps were given.")
    return loss


def generator_adversarial_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """
    Least-squares GAN loss of the generator: `sum_d mean((1 - D_d(fake)) ** 2)`.

    Args:
        fake_logits (`list[torch.Tensor]`): each discriminator's logits on generated audio (any shape).

    Returns:
        `torch.FloatTensor` scalar.
    """
    return sum(torch.mean((1.0 - logits.float()) ** 2) for logits in fake_logits)


def discriminator_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """
    Least-squares GAN loss of the discriminators: `sum_d mean((1 - D_d(real)) ** 2) + mean(D_d(fake) ** 2)`.

    Args:
        real_logits (`list[torch.Tensor]`): each discriminator's logits on real audio.
        fake_logits (`list[torch.Tensor]`): the same on (detached) generated audio.

    Returns:
        `torch.FloatTensor` scalar.
    """
    if len(real_logits) != len(fake_logits):
        raise ValueError("real and fake logits come from different discriminators.")
    return sum(
        torch.mean((1.0 - real.float()) ** 2) + torch.mean(fake.float() ** 2) for real, fake in zip(real_logits, fake_logits)
    )


__all__ = [
    "DAC_MEL_BANDS",
    "DAC_MEL_WINDOWS",
    "MultiScaleMelLoss",
    "MultiScaleSTFTLoss",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
    "mel_filterbank",
    "stft",
]
