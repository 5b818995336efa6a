"""Training losses of the codec: the multi-scale STFT loss, an intelligibility (STOI-style) loss and least-squares GAN
losses (the multi-scale mel loss lives in `llm_codec.mel`, shared with code refinement and the `mel_distance` metric).

All losses are computed in float32 with autocast disabled (STFTs are not supported in half precision everywhere),
whatever dtype the inputs come in. Audio is `(batch, 1, samples)` or `(batch, samples)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..mel import stft


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


class STOILoss(nn.Module):
    """
    One minus a differentiable short-time objective intelligibility: the measure of Taal et al. (2011) that the
    `stoi` metric reports, computed at the codec's rate so that it can train the codec.

    Both signals go through a 25.6 ms Hann-windowed STFT (half overlap); the power in 15 one-third-octave bands from
    150 Hz (centres 150 Hz x 2^(k/3)) gives band envelopes; over every run of 30 frames (384 ms) the prediction's
    envelope is scaled to the target's energy and clipped at 15 dB above it, and the two are correlated. The loss is
    one minus the mean correlation, each 384 ms segment weighted by its share of frames within 40 dB of the loudest
    frame of the target clip (the metric drops quieter frames; weighting keeps the batch rectangular). Differences
    from the metric: no resampling to 10 kHz, and silent frames are weighted down instead of removed, so its values
    track `stoi` without equalling it.

    Args:
        sample_rate (`int`, defaults to 16000).
        segment_frames (`int`, defaults to 30), num_bands (`int`, defaults to 15), lowest_band_hz (`float`, defaults
        to 150), clip_db (`float`, defaults to 15), dynamic_range_db (`float`, defaults to 40).
    """

    def __init__(self, sample_rate: int = 16000, segment_frames: int = 30, num_bands: int = 15,
                 lowest_band_hz: float = 150.0, clip_db: float = 15.0, dynamic_range_db: float = 40.0):
        super().__init__()
        window = round(0.0256 * sample_rate)
        self.n_fft = 1 << (window - 1).bit_length()
        self.hop = window // 2
        self.segment_frames, self.dynamic_range_db = segment_frames, dynamic_range_db
        self.clip = 1.0 + 10.0 ** (clip_db / 20.0)
        padded = torch.zeros(self.n_fft)
        start = (self.n_fft - window) // 2
        padded[start : start + window] = torch.hann_window(window, periodic=False)
        self.register_buffer("window", padded, persistent=False)
        centres = lowest_band_hz * 2.0 ** (torch.arange(num_bands) / 3.0)
        frequencies = torch.arange(self.n_fft // 2 + 1) * sample_rate / self.n_fft
        low, high = centres * 2.0 ** (-1 / 6), centres * 2.0 ** (1 / 6)
        bands = ((frequencies[None] >= low[:, None]) & (frequencies[None] < high[:, None])).float()
        if (bands.sum(1) == 0).any() or high[-1] > sample_rate / 2:
            raise ValueError(f"{num_bands} one-third-octave bands from {lowest_band_hz} Hz do not fit {sample_rate} Hz audio.")
        self.register_buffer("bands", bands, persistent=False)

    def _envelopes(self, audio: torch.Tensor) -> torch.Tensor:
        power = stft(audio, self.n_fft, self.hop, self.window).abs().square()  # (batch, bins, frames)
        return torch.einsum("kf,bft->bkt", self.bands, power).clamp_min(1e-12).sqrt()  # (batch, bands, frames)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`prediction`, `target`: (batch, 1, samples) -> scalar loss in [0, 2] (0 when they are equal)."""
        with torch.autocast(prediction.device.type, enabled=False):
            prediction, target = prediction.float(), target.float()
            x, y = self._envelopes(target), self._envelopes(prediction)
            if x.shape[-1] < self.segment_frames:
                raise ValueError(
                    f"STOILoss needs at least {self.segment_frames} frames ({self.segment_frames * self.hop} samples) "
                    f"per clip, got {x.shape[-1]}: train on longer crops."
                )
            energy = x.square().sum(1)  # (batch, frames)
            loudest = energy.amax(-1, keepdim=True).clamp_min(1e-20)
            active = (10 * torch.log10(energy.clamp_min(1e-20) / loudest) > -self.dynamic_range_db).float()
            x = x.unfold(-1, self.segment_frames, 1)  # (batch, bands, segments, frames)
            y = y.unfold(-1, self.segment_frames, 1)
            scale = x.norm(dim=-1, keepdim=True) / y.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            y = torch.minimum(y * scale, x * self.clip)
            x = x - x.mean(-1, keepdim=True)
            y = y - y.mean(-1, keepdim=True)
            correlation = (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1)).clamp_min(1e-12)  # (batch, bands, segments)
            weight = active.unfold(-1, self.segment_frames, 1).mean(-1)  # (batch, segments)
            mean = (correlation.mean(1) * weight).sum() / weight.sum().clamp_min(1e-12)
            return 1.0 - mean


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
    "MultiScaleSTFTLoss",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
]
