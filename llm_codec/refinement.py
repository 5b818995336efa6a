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
and only layers 2 and 3 are refined.
"""

from __future__ import annotations

import torch

from .modeling_llm_codec import LLMCodecEncoderOutput


def refine_codes(
    codec,
    input_values: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    steps: int = 50,
    learning_rate: float = 0.02,
    frozen_layers: int = 1,
    seed: int = 0,
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

    from tqdm.auto import tqdm

    from .training.losses import MultiScaleMelLoss

    input_values = input_values.to(codec.dtype)
    if padding_mask is not None:
        input_values = input_values * padding_mask[:, None, :].to(input_values.dtype)
    mel_loss = MultiScaleMelLoss(codec.config.sample_rate).to(codec.device)
    codes = [c.clone() for c in encoded.audio_codes]
    batch = input_values.shape[0]
    bar = tqdm(total=batch * steps, desc="refining codes", disable=not progress)
    try:
        for item in range(batch):
            length = int(encoded.audio_lengths[item])
            valid = encoded.audio_codes_lengths[item]
            start_codes = [c[item : item + 1, : int(n)] for c, n in zip(encoded.audio_codes, valid)]
            with torch.enable_grad():  # also under a caller's torch.no_grad()
                item_codes = _refine_item(
                    codec, input_values[item : item + 1, :, :length], start_codes, steps, learning_rate,
                    frozen_layers, seed, mel_loss, bar,
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


def _refine_item(
    codec, audio, start_codes, steps, learning_rate, frozen_layers, seed, mel_loss, bar
) -> list[torch.Tensor]:
    """
    `audio`: (1, 1, samples); `start_codes`: the encoder's codes of it, one (1, frames / vq_strides[k]) tensor per
    layer -> the best codes found, in the same form.
    """
    length = audio.shape[-1]
    with torch.no_grad():
        latents = codec.encode_latents(audio).float()
        if frozen_layers:
            fixed = codec.quantizer.from_codes(start_codes[:frozen_layers], dtype=latents.dtype)
        else:
            fixed = torch.zeros_like(latents)
    residual = (latents - fixed).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([residual], lr=learning_rate * float(latents.std().clamp_min(1e-8)))
    target = audio.float()
    best_loss, best_codes = float("inf"), list(start_codes)
    for step in range(steps + 1):  # the last pass only scores the last update
        generator = torch.Generator(device=codec.device).manual_seed(seed + step)
        quantized, refined = _quantize_with_gradient(codec, residual.to(codec.dtype), fixed.to(codec.dtype), frozen_layers)
        prediction = codec.decoder(quantized, generator=generator)[..., :length].float()
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
