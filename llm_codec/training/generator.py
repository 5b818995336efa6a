"""The generator side of LLM-Codec training: the codec plus the learned heads of the auxiliary teacher losses."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..modeling_llm_codec import LLMCodecModel
from .teachers import consistency_loss, distillation_loss, semantic_loss


class CodecTrainingModule(nn.Module):
    """
    The generator side of training: the codec plus the learned heads of the auxiliary losses (all trained by the
    generator optimizer).

    Args:
        codec (`LLMCodecModel`).
        consistency_dim (`int`, *optional*): width of the frame teacher's features (adds `consistency_head`,
            Linear teacher_dim -> latent_dim).
        semantic_dim (`int`, *optional*): width of the clip teacher's embedding (adds `semantic_head`,
            Linear latent_dim -> semantic_dim).
        distill_dim (`int`, *optional*): width of the distillation teacher's frame features (adds `distill_head`,
            Linear latent_dim -> distill_dim).
        consistency_layer (`int`, defaults to 1), semantic_layer (`int`, defaults to 0), distill_layer (`int`,
            defaults to 0): 0-based VQ layers.
        decoder_only (`bool`, defaults to `False`): freeze the encoder and quantizer (no gradient, codes unchanged);
            only the decoder learns, and no VQ / consistency / semantic losses are returned.
        frozen_decoder (`bool`, defaults to `False`): freeze the decoder instead (gradients still flow through it
            to the encoder and quantizer, which learn).
    """

    def __init__(self, codec: LLMCodecModel, consistency_dim: int | None = None, semantic_dim: int | None = None,
                 consistency_layer: int = 1, semantic_layer: int = 0, decoder_only: bool = False,
                 distill_dim: int | None = None, distill_layer: int = 0, frozen_decoder: bool = False):
        super().__init__()
        self.codec = codec
        self.decoder_only = decoder_only
        if decoder_only and frozen_decoder:
            raise ValueError("`decoder_only` and `frozen_decoder` together would leave nothing to train.")
        if frozen_decoder:
            codec.decoder.requires_grad_(False)
        if decoder_only:
            if consistency_dim or semantic_dim or distill_dim:
                raise ValueError("A decoder-only run has no VQ-layer losses: pass no consistency/semantic/distill teacher.")
            for name, parameter in codec.named_parameters():
                if not name.startswith("decoder."):
                    parameter.requires_grad_(False)
        latent = codec.config.latent_dim
        for name, layer in (("consistency_layer", consistency_layer), ("semantic_layer", semantic_layer),
                            ("distill_layer", distill_layer)):
            if not 0 <= layer < codec.config.num_quantizers:
                raise ValueError(f"`{name}` {layer} is not a VQ layer (0..{codec.config.num_quantizers - 1}).")
        self.consistency_layer, self.semantic_layer = consistency_layer, semantic_layer
        self.consistency_head = nn.Linear(consistency_dim, latent) if consistency_dim else None
        self.semantic_head = nn.Linear(latent, semantic_dim) if semantic_dim else None
        self.distill_layer = distill_layer
        self.distill_head = nn.Linear(latent, distill_dim) if distill_dim else None

    def forward(self, audio: torch.Tensor, teacher_features: torch.Tensor | None = None,
                teacher_embedding: torch.Tensor | None = None,
                distill_features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """
        Args:
            audio (`torch.FloatTensor` of shape `(batch, 1, samples)`).
            teacher_features (`(batch, teacher_frames, teacher_dim)`, *optional*): frame-teacher output.
            teacher_embedding (`(batch, semantic_dim)`, *optional*): clip-teacher output.
            distill_features (`(batch, teacher_frames, distill_dim)`, *optional*): distillation-teacher output.

        Returns:
            `dict` with `audio` (reconstruction `(batch, 1, samples)`), scalar `commitment` and `codebook` losses,
            and `consistency` / `semantic` / `distill` when their teacher output and head are there.
        """
        codec = self.codec
        samples = audio.shape[-1]
        if self.decoder_only:
            with torch.no_grad():
                latents = codec.encode_latents(audio)
                quantized = codec.quantizer(latents, codec.semantic_codes(audio, frames=latents.shape[-1]))[0]
            return {"audio": codec.decoder(quantized)[..., :samples]}
        latents = codec.encode_latents(audio)
        first_codes = codec.semantic_codes(audio, frames=latents.shape[-1])  # None unless layer 1 is teacher-computed
        quantized, _, commitment, codebook, per_layer = codec.quantizer(latents, first_codes)
        reconstruction = codec.decoder(quantized)[..., :samples]
        out = {"audio": reconstruction}
        if commitment is not None:
            out["commitment"], out["codebook"] = commitment.mean(), codebook.mean()
        valid_frames = math.ceil(samples / codec.config.hop_length)
        if teacher_features is not None and self.consistency_head is not None:
            layer = per_layer[self.consistency_layer][..., :valid_frames]
            out["consistency"] = consistency_loss(layer, teacher_features, self.consistency_head)
        if teacher_embedding is not None and self.semantic_head is not None:
            layer = per_layer[self.semantic_layer][..., :valid_frames]
            out["semantic"] = semantic_loss(layer, teacher_embedding, self.semantic_head)
        if distill_features is not None and self.distill_head is not None:
            layer = per_layer[self.distill_layer][..., :valid_frames]
            stride = codec.config.vq_strides[self.distill_layer]
            out["distill"] = distillation_loss(layer, distill_features, self.distill_head, stride)
        return out


__all__ = ["CodecTrainingModule"]
