"""
Analysis-by-synthesis encoding: after the encoder has chosen its codes, search for codes that the (frozen) decoder
turns into audio closer to the input.

The codec's encoder picks codes in one pass. `refine_codes` then treats the latent that the quantizer reads as a
free variable: it decodes the current codes, measures the multi-scale mel distance to the input (the codec's own
reconstruction loss), and moves the latent by the straight-through gradient of that distance, so that the nearest
codebook entries (the codes) change where that helps. The codes of the lowest distance seen are kept, the
encoder's own among them (each step is scored with its own draw of the decoder noise). Codes stay ordinary codes
of the same layers, at the same token rate: any `decode` reads them, nothing about the decoder changes, only
encoding costs more (one decoder forward and backward per step).

By default the layer-1 codes (the whole words, which carry what the LLM reads) are kept as the encoder chose them
and only layers 2 and 3 are refined. Long items are refined window by window (`chunk_s`), each window decoded with
the decoder's context on both sides (the refined codes before it, the encoder's after it), so memory is bounded by
a window, not by the length of the item.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from .mel import MultiScaleMelLoss
from .modeling_llm_codec import LLMCodecEncoderOutput


def refine_codes(
    codec,
    input_values: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    steps: int = 50,
    learning_rate: float = 0.02,
    frozen_layers: int = 1,
    seed: int = 0,
    chunk_s: float | None = 10.0,
    progress: bool = False,
    return_dict: bool | None = None,
) -> tuple | LLMCodecEncoderOutput:
    """
    Encodes audio like `codec.encode`, then refines the codes of layers `frozen_layers..` by analysis-by-synthesis.

    Args:
        codec (`LLMCodecModel`): the codec; its weights are not changed (no gradient reaches them).
        input_values (`torch.FloatTensor` of shape `(batch, 1, samples)`): 16 kHz mono audio in [-1, 1].
        padding_mask (`torch.Tensor` of shape `(batch, samples)`, *optional*): 1 for real samples (right padding),
            as for `encode`; every item is refined on its own samples only.
        steps (`int`, defaults to 50): gradient steps per item; 0 returns exactly `codec.encode`'s codes.
        learning_rate (`float`, defaults to 0.02): Adam step size, relative to the standard deviation of the item's
            latent.
        frozen_layers (`int`, defaults to 1): the first layers whose codes stay the encoder's (1: the layer-1
            words; 0 refines every layer).
        seed (`int`, defaults to 0): seed of the decoder noise drawn at each step (the step's loss is over one
            draw; the decoder that later reads the codes draws its own).
        chunk_s (`float` or `None`, defaults to 10.0): items longer than about 1.5 times this many seconds are
            refined in windows of about this length (whole multiples of `config.pad_multiple`), one after the
            other, each decoded with `decoder.halo_frames()` of context on each side and scored on its own
            samples; memory then grows with the window, not with the item (about 1.2 GB for the default codec at
            10 s). `None` refines every item in one piece.
        progress (`bool`, defaults to `False`): show a tqdm progress bar over items and steps.
        return_dict (`bool`, *optional*): return an [`LLMCodecEncoderOutput`] (default) or a tuple, as `encode`.

    Returns:
        [`LLMCodecEncoderOutput`] as `codec.encode` returns it, with the refined `audio_codes` (one
        `(batch, frames / vq_strides[k])` LongTensor per layer) and their `quantized_representation`
        `(batch, latent_dim, frames)`.
    """
    num_layers = codec.config.num_quantizers
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"`steps` must be a non-negative integer, got {steps!r}.")
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be positive, got {learning_rate!r}.")
    if isinstance(frozen_layers, bool) or not isinstance(frozen_layers, int) or not 0 <= frozen_layers < num_layers:
        raise ValueError(
            f"`frozen_layers` must be an integer in 0..{num_layers - 1} (at least one layer must be refined), "
            f"got {frozen_layers!r}."
        )
    if frozen_layers == 0 and codec.semantic is not None:
        raise ValueError(
            "This codec computes layer 1 with a semantic teacher (`config.semantic_teacher`): its codes are the "
            "teacher's words, not a fit to the audio, so they cannot be refined. Use frozen_layers >= 1."
        )
    if chunk_s is not None and (isinstance(chunk_s, bool) or not isinstance(chunk_s, (int, float)) or not chunk_s > 0):
        raise ValueError(f"`chunk_s` must be a positive number of seconds or None, got {chunk_s!r}.")
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "`refine_codes` follows gradients through the decoder: call it outside `torch.inference_mode()` "
            "(inside `torch.no_grad()` is fine)."
        )
    return_dict = return_dict if return_dict is not None else codec.config.return_dict
    with torch.no_grad():
        encoded = codec.encode(input_values, padding_mask=padding_mask, return_dict=True)
    if steps == 0:
        return encoded if return_dict else encoded.to_tuple()

    input_values = input_values.to(codec.dtype)
    if padding_mask is not None:
        input_values = input_values * padding_mask[:, None, :].to(input_values.dtype)
    mel_loss = MultiScaleMelLoss(codec.config.sample_rate).to(codec.device)
    codes = [c.clone() for c in encoded.audio_codes]
    batch = input_values.shape[0]
    unit = _window_unit(codec.config)
    chunk_frames = None
    if chunk_s is not None:
        chunk_frames = max(1, round(chunk_s * codec.config.frame_rate / unit)) * unit
    windows = [
        _windows(int(encoded.audio_codes_lengths[item, -1]) * codec.config.vq_strides[-1], chunk_frames, unit)
        for item in range(batch)
    ]
    bar = tqdm(total=steps * sum(len(w) for w in windows), desc="refining codes", disable=not progress)
    try:
        for item in range(batch):
            length = int(encoded.audio_lengths[item])
            valid = encoded.audio_codes_lengths[item]
            start_codes = [c[item : item + 1, : int(n)] for c, n in zip(encoded.audio_codes, valid)]
            with torch.enable_grad():  # also under a caller's torch.no_grad()
                item_codes = _refine_item(
                    codec, input_values[item : item + 1, :, :length], start_codes, windows[item], steps,
                    learning_rate, frozen_layers, seed, mel_loss, bar,
                )
            for k, layer_codes in enumerate(item_codes):
                codes[k][item, : layer_codes.shape[-1]] = layer_codes[0]
    finally:
        bar.close()
    with torch.no_grad():
        quantized = codec.quantizer.from_codes(tuple(codes), dtype=codec.dtype)
    refined = LLMCodecEncoderOutput(
        audio_codes=tuple(codes),
        audio_codes_lengths=encoded.audio_codes_lengths,
        audio_lengths=encoded.audio_lengths,
        quantized_representation=quantized,
    )
    return refined if return_dict else refined.to_tuple()


def _quantize_with_gradient(codec, residual: torch.Tensor, fixed: torch.Tensor, frozen_layers: int):
    """
    `residual`: (1, latent_dim, frames), what the layers from `frozen_layers` on quantize; `fixed`: the quantized
    sum of the frozen layers. -> `(quantized (1, latent_dim, frames) carrying the straight-through gradient of the
    quantizer's training path, codes of the refined layers)`.
    """
    quantized, codes = fixed, []
    for layer in codec.quantizer.layers[frozen_layers:]:
        was_training = layer.training
        layer.train()  # the layer's own straight-through path
        try:
            layer_quantized, layer_codes, _, _ = layer(residual)
        finally:
            layer.train(was_training)
        quantized = quantized + layer_quantized
        residual = residual - layer_quantized
        codes.append(layer_codes)
    return quantized, codes


def _window_unit(config) -> int:
    """Latent frames that windows and their context are whole multiples of: the frames of `config.pad_multiple`,
    which every layer's stride and the attention window divide, so each window holds whole codes of every layer."""
    return config.pad_multiple // config.hop_length


def _windows(frames: int, chunk_frames: int | None, unit: int) -> list[tuple[int, int]]:
    """
    `frames` latent frames (a multiple of `unit`) -> `(start, end)` windows that cover them, whole multiples of
    `unit` long: one window unless `frames` exceeds 1.5 x `chunk_frames`, else `round(frames / chunk_frames)` windows
    of (nearly) equal length.
    """
    count = 1 if chunk_frames is None or frames <= 1.5 * chunk_frames else round(frames / chunk_frames)
    units = frames // unit
    bounds = [round(k * units / count) * unit for k in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _refine_item(
    codec, audio, start_codes, windows, steps, learning_rate, frozen_layers, seed, mel_loss, bar
) -> list[torch.Tensor]:
    """
    `audio`: (1, 1, samples); `start_codes`: the encoder's codes of it, one (1, frames / vq_strides[k]) tensor per
    layer; `windows`: `(start, end)` latent frames refined one after the other -> the best codes found, in the same
    form.
    """
    with torch.no_grad():
        latents = codec.encode_latents(audio).float()
        if frozen_layers:
            fixed = codec.quantizer.from_codes(start_codes[:frozen_layers], dtype=latents.dtype)
        else:
            fixed = torch.zeros_like(latents)
    step_size = learning_rate * float(latents.std().clamp_min(1e-8))
    strides = codec.config.vq_strides
    codes = [c.clone() for c in start_codes]
    unit = _window_unit(codec.config)
    halo = math.ceil(codec.decoder.halo_frames() / unit) * unit if len(windows) > 1 else 0
    frames, hop, length = latents.shape[-1], codec.config.hop_length, audio.shape[-1]
    for start, end in windows:
        lo, hi = max(0, start - halo), min(frames, end + halo)
        with torch.no_grad():  # the context: refined codes before the window, the encoder's after it
            current = codec.quantizer.from_codes(tuple(c[..., lo // s : hi // s] for c, s in zip(codes, strides)),
                                                 dtype=latents.dtype)
        window_codes = _refine_window(
            codec, audio[..., start * hop : min(end * hop, length)], latents[..., start:end], fixed[..., start:end],
            current[..., : start - lo], current[..., end - lo :],
            [c[..., start // s : end // s] for c, s in zip(codes, strides)], steps, step_size, frozen_layers, seed,
            mel_loss, bar,
        )
        for k, (layer_codes, stride) in enumerate(zip(window_codes, strides)):
            codes[k][..., start // stride : end // stride] = layer_codes
    return codes


def _refine_window(
    codec, target, latents, fixed, left, right, start_codes, steps, step_size, frozen_layers, seed, mel_loss, bar
) -> list[torch.Tensor]:
    """
    `target`: (1, 1, samples) the window's audio; `latents`, `fixed`: (1, latent_dim, frames) the encoder's latent
    and the frozen layers' quantized sum over the window; `left`, `right`: (1, latent_dim, context frames) the
    quantized context decoded with it; `start_codes`: the window's current codes, one (1, frames / vq_strides[k])
    tensor per layer -> the codes of the lowest mel distance seen, in the same form.
    """
    residual = (latents - fixed).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([residual], lr=step_size)
    target = target.float()
    offset = left.shape[-1] * codec.config.hop_length
    best_loss, best_codes = float("inf"), list(start_codes)
    for step in range(steps + 1):  # the last pass only scores the last update
        generator = torch.Generator(device=codec.device).manual_seed(seed + step)
        quantized, refined = _quantize_with_gradient(
            codec, residual.to(codec.dtype), fixed.to(codec.dtype), frozen_layers
        )
        hidden = torch.cat([left.to(codec.dtype), quantized, right.to(codec.dtype)], dim=-1)
        prediction = codec.decoder(hidden, generator=generator)[..., offset : offset + target.shape[-1]].float()
        loss = mel_loss(prediction, target)
        if loss.item() < best_loss:
            best_loss, best_codes = loss.item(), list(start_codes[:frozen_layers]) + [c.detach() for c in refined]
        if step == steps:
            break
        (gradient,) = torch.autograd.grad(loss, [residual])
        optimizer.zero_grad(set_to_none=True)
        residual.grad = gradient
        optimizer.step()
        bar.update(1)
    return best_codes
