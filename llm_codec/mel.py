"""Mel spectrograms of the codec: the multi-scale mel distance (DAC's) that code refinement minimises, the codec's
training reconstruction loss and the `mel_distance` metric, with its STFT and mel filterbank.

Computed in float32 with autocast disabled (STFTs are not supported in half precision everywhere), whatever dtype
the inputs come in. Audio is `(batch, 1, samples)` or `(batch, samples)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers.audio_utils import mel_filter_bank

DAC_MEL_WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
DAC_MEL_BANDS = (5, 10, 20, 40, 80, 160, 320)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """
    Triangular mel filters on the Slaney mel scale with Slaney area normalisation (the usual "librosa default"
    filterbank): `transformers.audio_utils.mel_filter_bank`, built in float64 and returned in float32.

    Args:
        sample_rate (`int`): audio rate in Hz.
        n_fft (`int`): FFT size; the filters cover its `n_fft // 2 + 1` bins.
        n_mels (`int`): number of filters.
        f_min (`float`, defaults to 0): lowest edge in Hz.
        f_max (`float`, *optional*): highest edge in Hz (default: `sample_rate / 2`).

    Returns:
        `torch.FloatTensor` of shape `(n_mels, n_fft // 2 + 1)`.
    """
    filters = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=float(f_min),
        max_frequency=sample_rate / 2.0 if f_max is None else float(f_max), sampling_rate=sample_rate,
        norm="slaney", mel_scale="slaney",
    )
    return torch.from_numpy(filters.T).float()


def mel_band_centres(filters: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """
    Centre of each mel band: the centre of mass, in Hz, of its triangular filter.

    Args:
        filters (`torch.Tensor` of shape `(n_mels, n_fft // 2 + 1)`): a filterbank from `mel_filterbank`.
        sample_rate (`int`): audio rate in Hz.

    Returns:
        `torch.FloatTensor` of shape `(n_mels,)`.
    """
    bin_hz = torch.linspace(0, sample_rate / 2, filters.shape[1])
    return (filters * bin_hz).sum(1) / filters.sum(1).clamp_min(1e-12)


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


def stft(audio: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor, normalized: bool = False,
         pad_mode: str = "reflect") -> torch.Tensor:
    """
    Centred STFT (reflect padding, or zero padding when the clip is shorter than half a window).

    Args:
        audio (`torch.Tensor` of shape `(batch, 1, samples)` or `(batch, samples)`).
        n_fft (`int`): window and FFT size.
        hop_length (`int`): hop in samples.
        window (`torch.Tensor` of shape `(n_fft,)`).
        normalized (`bool`): scale by `n_fft ** -0.5`.
        pad_mode (`str`, defaults to "reflect"): "constant" pads with zeros whatever the clip's length (librosa's
            default since 0.10).

    Returns:
        `torch.ComplexTensor` of shape `(batch, n_fft // 2 + 1, frames)` with `frames = samples // hop_length + 1`.
    """
    signal = _as_batch_of_signals(audio)
    pad = n_fft // 2
    if pad_mode not in ("reflect", "constant"):
        raise ValueError(f"`pad_mode` must be 'reflect' or 'constant', got {pad_mode!r}.")
    mode = "reflect" if pad_mode == "reflect" and signal.shape[-1] > pad else "constant"
    signal = F.pad(signal[:, None], (pad, pad), mode=mode)[:, 0]
    return torch.stft(
        signal, n_fft, hop_length, window=window.to(signal.device, torch.float32), center=False,
        normalized=normalized, return_complex=True,
    )


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
        low_band_hz (`float`, *optional*): with `low_band_weight`, the mel bands whose centre lies below this
            frequency count `low_band_weight` times in the L1 mean (the others once). `None` (default) weighs every
            band alike, which is DAC's loss and the `mel_distance` metric.
        low_band_weight (`float`, defaults to 1): weight of the bands below `low_band_hz`.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        window_lengths: Sequence[int] = DAC_MEL_WINDOWS,
        n_mels: Sequence[int] = DAC_MEL_BANDS,
        clamp_eps: float = 1e-5,
        log_weight: float = 1.0,
        mag_weight: float = 0.0,
        low_band_hz: float | None = None,
        low_band_weight: float = 1.0,
    ):
        super().__init__()
        if len(window_lengths) != len(n_mels):
            raise ValueError(f"Give one mel band count per window length ({len(window_lengths)} vs {len(n_mels)}).")
        if low_band_hz is not None and not 0 < low_band_hz < sample_rate / 2:
            raise ValueError(f"`low_band_hz` must lie between 0 and the Nyquist frequency {sample_rate / 2:g} Hz, "
                             f"got {low_band_hz}.")
        if low_band_weight <= 0:
            raise ValueError(f"`low_band_weight` must be positive, got {low_band_weight}.")
        self.window_lengths = [int(w) for w in window_lengths]
        self.clamp_eps, self.log_weight, self.mag_weight = clamp_eps, log_weight, mag_weight
        self.band_weighted = low_band_hz is not None and low_band_weight != 1.0
        for k, (window, bands) in enumerate(zip(self.window_lengths, n_mels)):
            filters = mel_filterbank(sample_rate, window, int(bands))
            self.register_buffer(f"window_{k}", torch.hann_window(window), persistent=False)
            self.register_buffer(f"filters_{k}", filters, persistent=False)
            if self.band_weighted:
                centre_hz = mel_band_centres(filters, sample_rate)
                weights = torch.where(centre_hz < low_band_hz, float(low_band_weight), 1.0)
                self.register_buffer(f"band_weights_{k}", weights[:, None], persistent=False)

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
            for k, (x, y) in enumerate(zip(self.mel_spectrograms(prediction), self.mel_spectrograms(target))):
                if self.log_weight:
                    loss = loss + self.log_weight * self._l1(
                        x.clamp_min(self.clamp_eps).log10(), y.clamp_min(self.clamp_eps).log10(), k
                    )
                if self.mag_weight:
                    loss = loss + self.mag_weight * self._l1(x, y, k)
            return loss

    def _l1(self, x: torch.Tensor, y: torch.Tensor, scale: int) -> torch.Tensor:
        """Mean absolute difference of two `(batch, n_mels, frames)` spectrograms, bands weighted if asked."""
        if not self.band_weighted:
            return F.l1_loss(x, y)
        return ((x - y).abs() * getattr(self, f"band_weights_{scale}")).mean()


__all__ = ["DAC_MEL_BANDS", "DAC_MEL_WINDOWS", "MultiScaleMelLoss", "mel_band_centres", "mel_filterbank", "stft"]
