"""Feature extractor of LLM-Codec: raw audio clips -> the `(batch, 1, samples)` 16 kHz mono batch the model takes."""

import logging
import numbers

import numpy as np
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import PaddingStrategy, TensorType, is_torch_tensor

from .audio_io import resample as resample_audio


# Heuristic for 2-D clips: more rows than this while having at most this many columns looks like (time, channels).
logger = logging.getLogger(__name__)

_MAX_PLAUSIBLE_CHANNELS = 8

# Integer PCM formats and how they map to floats in [-1, 1): (offset, scale) with value = (x - offset) * scale.
_INTEGER_PCM = {
    np.dtype(np.int8): (0.0, 1.0 / 128.0),
    np.dtype(np.int16): (0.0, 1.0 / 32768.0),
    np.dtype(np.int32): (0.0, 1.0 / 2147483648.0),
    np.dtype(np.uint8): (128.0, 1.0 / 128.0),
}

_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _as_numpy(clip) -> np.ndarray:
    """numpy array / torch tensor / Python list -> numpy array (no dtype conversion except for Python lists)."""
    if is_torch_tensor(clip):
        clip = clip.detach().cpu()
        if clip.dtype == torch.bfloat16:  # numpy has no bfloat16
            clip = clip.float()
        return clip.numpy()
    if isinstance(clip, np.ndarray):
        return clip
    if isinstance(clip, (list, tuple)):
        # Python lists hold float samples (any numbers in them are read as float values, not as integer PCM).
        try:
            return np.asarray(clip, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(
                "Could not read a Python list as audio: a clip given as a list must be a flat list of numbers "
                f"(float samples), e.g. [0.0, 0.1, -0.2] ({error}). For multi-channel audio pass a numpy array or "
                "torch tensor of shape (channels, time)."
            ) from None
    if isinstance(clip, numbers.Number):
        raise ValueError(
            f"Got a single number ({clip!r}) as an audio clip: a clip must be a 1-D (time,) or 2-D (channels, time) "
            "array, tensor or list of float samples."
        )
    raise ValueError(
        f"Unsupported audio clip type {type(clip).__name__}: pass a numpy array, a torch tensor or a list of floats "
        "of shape (time,) or (channels, time)."
    )


def to_mono_float32(clip) -> np.ndarray:
    """
    Converts one audio clip to a validated mono float32 waveform (no resampling).

    Conversion rules:

    - float16 / float32 / float64 samples are taken as they are (cast to float32). Values outside [-1, 1] (clipped
      audio) are passed through unchanged: nothing is normalised or clamped.
    - integer PCM is scaled to [-1, 1): int16 by 1/32768, int32 by 1/2147483648, int8 by 1/128, and uint8 (unsigned,
      centred on 128) as `(x - 128) / 128`. Other integer widths (int64, uint16, ...) and booleans are refused as
      ambiguous.
    - a Python list is read as float samples.
    - a 2-D clip is `(channels, time)` and is downmixed to mono by averaging the channels.

    Args:
        clip (`np.ndarray`, `torch.Tensor` or `list[float]` of shape `(time,)` or `(channels, time)`):
            One audio clip.

    Returns:
        `np.ndarray` of shape `(time,)` and dtype float32. A 1-D float32 numpy input comes back bit-identical.

    Raises:
        `ValueError`: for a clip that is empty, has more than 2 dimensions, has more than 8 rows (not
        `(channels, time)`: transpose it; more rows than columns only logs a warning), has a complex / boolean / unsupported dtype, or contains NaN or
        infinite values (also after the cast to float32, e.g. float64 values beyond the float32 range).
    """
    array = _as_numpy(clip)

    if array.ndim == 0 or array.ndim > 2:
        raise ValueError(
            f"Expected an audio clip of shape (time,) for mono or (channels, time) for multi-channel audio, got an "
            f"array of shape {tuple(array.shape)}. A batch must be passed as a list of clips, not as one "
            f"{array.ndim}-D array."
        )
    if array.size == 0:
        raise ValueError(
            f"The audio clip is empty (shape {tuple(array.shape)}, 0 samples): give at least one sample of audio."
        )
    if array.ndim == 2 and array.shape[0] > _MAX_PLAUSIBLE_CHANNELS:
        raise ValueError(
            f"The clip has shape {tuple(array.shape)}: read as (channels, time) that is {array.shape[0]} channels, "
            f"more than the {_MAX_PLAUSIBLE_CHANNELS} audio has. If it is (time, channels), transpose it (e.g. "
            "`audio.T`); if it is several clips, pass them as a list."
        )
    if array.ndim == 2 and array.shape[0] > array.shape[1]:
        logger.warning(
            "An audio clip of shape %s is read as (channels, time): %d channels of %d samples each. If it is "
            "(time, channels), transpose it.", tuple(array.shape), array.shape[0], array.shape[1],
        )

    dtype = array.dtype
    if np.issubdtype(dtype, np.complexfloating):
        raise ValueError(
            f"Complex audio (dtype {dtype}) is not supported: pass the real waveform (e.g. `np.real(x)` if the "
            "imaginary part is zero)."
        )
    if dtype in _FLOAT_DTYPES:
        with np.errstate(over="ignore"):  # float64 beyond the float32 range becomes inf, reported just below
            array = array.astype(np.float32, copy=False)
    elif dtype in _INTEGER_PCM:
        offset, scale = _INTEGER_PCM[dtype]
        work = np.float32 if dtype.itemsize <= 2 else np.float64  # float32 is exact for 8/16-bit PCM
        array = array.astype(work)
        if offset:
            array -= offset
        array = (array * scale).astype(np.float32, copy=False)
    else:
        raise ValueError(
            f"Unsupported audio dtype {dtype}: give float16/float32/float64 samples (nominally in [-1, 1]) or integer "
            "PCM as int16, int32, int8 or uint8. Convert other formats to float yourself, e.g. `x.astype(np.float32) "
            "/ full_scale`."
        )

    if not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(
            f"The audio clip contains {bad} NaN or infinite value(s) (after conversion to float32). Remove or replace "
            "them (e.g. `np.nan_to_num`) before feature extraction."
        )

    if array.ndim == 2:
        if array.shape[0] == 1:
            array = array[0]
        else:
            array = array.mean(axis=0, dtype=np.float64).astype(np.float32)
    return array


MIN_SAMPLING_RATE = 1000
"""Lowest accepted rate (Hz): below it a rate is almost surely kHz typed for Hz (16 for 16000), which would turn
seconds of audio into hours."""


def _check_sampling_rate(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive number of Hz (e.g. 16000), got {value!r}.")
    if value < MIN_SAMPLING_RATE:
        raise ValueError(
            f"`{name}`={value!r} Hz is below {MIN_SAMPLING_RATE} Hz: rates are in Hz, not kHz (16 kHz is "
            f"{name}=16000)."
        )


class LLMCodecFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Constructs an LLM-Codec feature extractor: turns one or several raw audio clips into the padded mono batch
    `input_values` `(batch, 1, samples)` + `padding_mask` `(batch, samples)` that [`LLMCodecModel`] takes.

    Every clip is converted to float32 (integer PCM is scaled, see [`to_mono_float32`]), downmixed to mono by averaging
    its channels, resampled to `sampling_rate` with soxr when needed, then right-padded with `padding_value` to the
    longest clip (or to `max_length`). Samples outside [-1, 1] (clipped audio) are passed through unchanged: no
    normalisation or clamping is applied.

    This feature extractor inherits from [`~feature_extraction_sequence_utils.SequenceFeatureExtractor`].

    Args:
        feature_size (`int`, *optional*, defaults to 1):
            Channels of the produced features; LLM-Codec is mono, so this must stay 1.
        sampling_rate (`int`, *optional*, defaults to 16000):
            The sampling rate, in Hz, the model expects; inputs at other rates are resampled to it.
        padding_value (`float`, *optional*, defaults to 0.0):
            The value used to fill the padding.
    """

    model_input_names = ["input_values", "padding_mask"]

    def __init__(self, feature_size: int = 1, sampling_rate: int = 16000, padding_value: float = 0.0, **kwargs):
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        if feature_size != 1:
            raise ValueError(f"LLM-Codec takes mono audio: `feature_size` must be 1, got {feature_size}.")
        _check_sampling_rate(sampling_rate, "sampling_rate")
        if getattr(self, "padding_side", "right") != "right":
            raise ValueError(
                f"LLM-Codec's `padding_mask` assumes right padding, got padding_side={self.padding_side!r}: "
                "use padding_side='right'."
            )

    def __call__(
        self,
        raw_audio,
        sampling_rate: int | None = None,
        padding: bool | str | PaddingStrategy = True,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | TensorType | None = None,
        resample: bool = True,
    ) -> BatchFeature:
        """
        Prepares one clip or a batch of clips for the model.

        Args:
            raw_audio (`np.ndarray`, `torch.Tensor`, `list[float]`, or a list of those):
                One clip or a list of clips. A clip is a `(time,)` or `(channels, time)` numpy array / torch tensor
                (float16/32/64, or integer PCM int16/int32/int8/uint8), or a flat Python list of float samples.
                Clips in a batch may differ in length, channel count and dtype. A single 2-D array is one
                multi-channel clip, not a batch: pass a list for a batch.
            sampling_rate (`int`):
                Sampling rate, in Hz, of `raw_audio` (the same for every clip). Required.
            padding (`bool`, `str` or [`~utils.PaddingStrategy`], *optional*, defaults to `True`):
                `True` / `"longest"`: right-pad to the longest clip; `"max_length"`: right-pad to `max_length`;
                `False` / `"do_not_pad"`: no padding (then all clips must have the same length after resampling).
            truncation (`bool`, *optional*, defaults to `False`):
                Cut clips longer than `max_length` (in samples at the model rate) to `max_length`.
            max_length (`int`, *optional*):
                Length, in samples at the model rate, used by `padding="max_length"` and `truncation=True`.
            return_tensors (`str` or [`~utils.TensorType`], *optional*):
                `"pt"` for torch tensors, `"np"` or `None` for numpy arrays.
            resample (`bool`, *optional*, defaults to `True`):
                Resample clips whose `sampling_rate` differs from the model's with soxr (quality "HQ"). With `False`
                such input raises a `ValueError`.

        Returns:
            [`BatchFeature`] with
            - `input_values`: float32 of shape `(batch, 1, samples)`, padded positions set to `padding_value`;
            - `padding_mask`: int64 of shape `(batch, samples)`, 1 for real samples and 0 for padding.
            Both are numpy arrays, or torch tensors with `return_tensors="pt"`, that go straight into
            `LLMCodecModel.forward(input_values, padding_mask)` / `encode`.
        """
        if sampling_rate is None:
            raise ValueError(
                f"`sampling_rate` is required: pass the rate of your audio, e.g. `feature_extractor(audio, "
                f"sampling_rate={self.sampling_rate})` if it is already at the model's {self.sampling_rate} Hz. It is "
                "resampled to the model's rate when it differs."
            )
        _check_sampling_rate(sampling_rate, "sampling_rate")
        needs_resampling = sampling_rate != self.sampling_rate
        if needs_resampling and not resample:
            raise ValueError(
                f"The audio is at {sampling_rate} Hz but the model expects {self.sampling_rate} Hz, and "
                f"resample=False. Pass resample=True (the default) or resample it to {self.sampling_rate} Hz yourself."
            )

        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral) or max_length <= 0
        ):
            raise ValueError(f"`max_length` must be a positive integer number of samples, got {max_length!r}.")
        padding_strategy = self._get_padding_strategies(padding=padding, max_length=max_length)
        if truncation and max_length is None:
            raise ValueError("truncation=True needs `max_length` (in samples at the model's sampling rate).")

        clips = self._split_batch(raw_audio)

        waveforms = []
        for index, clip in enumerate(clips):
            try:
                waveform = to_mono_float32(clip)
            except ValueError as error:
                raise ValueError(f"Audio clip {index}: {error}") from None
            if needs_resampling:
                original = waveform.shape[0]
                waveform = np.asarray(resample_audio(waveform, sampling_rate, self.sampling_rate), dtype=np.float32)
                if waveform.shape[0] == 0:
                    raise ValueError(
                        f"Audio clip {index}: {original} sample(s) at {sampling_rate} Hz leave no sample after "
                        f"resampling to {self.sampling_rate} Hz: give a longer clip."
                    )
            if truncation and waveform.shape[0] > max_length:
                waveform = waveform[:max_length]
            waveforms.append(waveform)

        lengths = [w.shape[0] for w in waveforms]
        if padding_strategy == PaddingStrategy.DO_NOT_PAD:
            if len(set(lengths)) != 1:
                raise ValueError(
                    f"padding=False but the clips have different lengths {lengths} (samples at "
                    f"{self.sampling_rate} Hz): pass padding=True to right-pad them into one batch."
                )
            target = lengths[0]
        elif padding_strategy == PaddingStrategy.MAX_LENGTH:
            longest = max(lengths)
            if longest > max_length:
                index = lengths.index(longest)
                raise ValueError(
                    f"Audio clip {index} has {longest} samples (at {self.sampling_rate} Hz), more than "
                    f"max_length={max_length}: pass truncation=True to cut it, or a larger max_length."
                )
            target = max_length
        else:  # LONGEST
            target = max(lengths)

        input_values = np.full((len(waveforms), 1, target), self.padding_value, dtype=np.float32)
        padding_mask = np.zeros((len(waveforms), target), dtype=np.int64)
        for row, waveform in enumerate(waveforms):
            input_values[row, 0, : waveform.shape[0]] = waveform
            padding_mask[row, : waveform.shape[0]] = 1

        return BatchFeature(
            {"input_values": input_values, "padding_mask": padding_mask}, tensor_type=return_tensors
        )

    @staticmethod
    def _split_batch(raw_audio) -> list:
        """One clip or a list of clips -> list of clips (a flat list/tuple of numbers is one clip)."""
        if isinstance(raw_audio, (list, tuple)):
            if len(raw_audio) == 0:
                raise ValueError("`raw_audio` is an empty list: give at least one audio clip.")
            if isinstance(raw_audio[0], (np.ndarray, list, tuple)) or is_torch_tensor(raw_audio[0]):
                return list(raw_audio)
            return [raw_audio]
        return [raw_audio]


__all__ = ["LLMCodecFeatureExtractor", "to_mono_float32"]
