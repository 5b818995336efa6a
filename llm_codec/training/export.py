"""A trained codec as it ships: weight norm folded into the convolutions, saved with `save_pretrained` or as the
weights the embedded default codec ships without its frozen codebooks."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch.nn.utils import parametrize

from ..modeling_llm_codec import LLMCodecModel


def folded_codec(codec: LLMCodecModel) -> LLMCodecModel:
    """
    A new float32 codec in eval mode holding `codec`'s weights with weight norm folded in; `codec` is untouched.

    (Not `copy.deepcopy` + `remove_weight_norm()`: removing a parametrization deletes the property from the
    dynamically created module class, which a deep copy shares with the original.) Torch's global RNG is left as it
    was (the new model's random initialisation runs in a forked RNG), so exporting does not change training.
    """
    state = {k: v for k, v in codec.state_dict().items() if ".parametrizations." not in k}
    for name, module in codec.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            state[f"{name}.weight"] = module.weight.detach()
    with torch.random.fork_rng(devices=[]):
        fresh = type(codec)(copy.deepcopy(codec.config))
    fresh.load_state_dict({k: v.detach().float().cpu() for k, v in state.items()}, strict=True)
    return fresh.eval()


def weights_without_codebooks(codec: LLMCodecModel) -> dict[str, torch.Tensor]:
    """
    `folded_codec(codec)`'s state dict without the frozen codebooks (which the LM rebuilds): what the embedded
    default codec ships as `weights_without_codebooks.safetensors`. Tensors are contiguous float32 on the CPU.
    """
    state = folded_codec(codec).state_dict()
    return {k: v.contiguous() for k, v in state.items() if not k.endswith(".codebook")}


def export_codec(codec: LLMCodecModel, path: str | Path) -> Path:
    """`save_pretrained(path)` of `folded_codec(codec)` (no weight-norm keys); returns the folder."""
    folded_codec(codec).save_pretrained(str(path))
    return Path(path)


__all__ = ["export_codec", "folded_codec", "weights_without_codebooks"]
