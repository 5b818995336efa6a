"""Training losses of the codec: the multi-scale STFT loss and least-squares GAN losses (the multi-scale mel loss
lives in `llm_codec.mel`, shared with code refinement and the `mel_distance` metric).

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
