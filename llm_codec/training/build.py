"""The codec a training run starts from: the shipped default codec, a saved one, or a new codec whose codebooks
are a language model's tables (`TrainingConfig.init_from`, `lm`, `word_list`, `codec`)."""

from __future__ import annotations

from pathlib import Path

from torch import nn
from torch.nn.utils import parametrize

from ..codebooks import load_default_word_list
from ..default_model import load_default_codec
from ..modeling_llm_codec import LLMCodecModel
from .config import TrainingConfig
from .semantic_layer1 import add_semantic_layer1


def resolve_word_list(word_list):
    """
    The layer-1 word list a training config names (`TrainingConfig.word_list`): `None` -> `None` (the shipped list);
    10 / 20 -> that SCOWL size of the shipped list; a path -> its non-empty lines; a list -> its words as strings.
    """
    if word_list is None:
        return None
    if isinstance(word_list, int):
        return load_default_word_list(word_list)
    if isinstance(word_list, str):
        path = Path(word_list)
        if not path.is_file():
            raise FileNotFoundError(f"`word_list`: no file at {path}.")
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [str(w) for w in word_list]


def build_codec(config: TrainingConfig, lm=None, tokenizer=None) -> LLMCodecModel:
    """
    The codec to train: the shipped default codec (`init_from: default`), `LLMCodecModel.from_pretrained(init_from)`,
    or a new codec whose codebooks come from
    the LM (`lm` object if given, else `config.lm`: "default" or a local folder) with `config.codec` as the
    architecture. Returns it in float32, without weight norm.
    """
    if config.init_from == "default":
        codec = _trained_default_codec("init_from", lm, tokenizer).float()
    elif config.init_from:
        codec = LLMCodecModel.from_pretrained(config.init_from)
    else:
        source = lm if lm is not None else (None if config.lm in (None, "default") else config.lm)
        semantic = dict(semantic_teacher=config.semantic_teacher, semantic_clusters=config.semantic_clusters,
                        semantic_groups=config.semantic_groups)
        return LLMCodecModel.from_language_model(
            source,
            tokenizer=tokenizer,
            word_list=resolve_word_list(config.word_list),
            max_subwords=config.max_subwords,
            layer_subset=config.layer_subset,
            **(semantic if config.semantic_teacher else {}),
            **config.codec,
        )
    if config.semantic_teacher and codec.semantic is None:
        return add_semantic_layer1(codec, config.semantic_teacher, config.semantic_clusters,
                                   groups=config.semantic_groups)
    wanted = (config.semantic_teacher, config.semantic_clusters, config.semantic_groups)
    if config.semantic_teacher and (codec.config.semantic_teacher, codec.config.semantic_clusters,
                                    codec.config.semantic_groups) != wanted:
        raise ValueError(
            f"`semantic_teacher: {config.semantic_teacher}` with {config.semantic_clusters} clusters and "
            f"`semantic_groups: {config.semantic_groups}`, but the codec of `init_from` computes layer 1 with "
            f"{codec.config.semantic_teacher!r}, {codec.config.semantic_clusters} clusters and `semantic_groups: "
            f"{codec.config.semantic_groups}`: change the config or start from another codec."
        )
    return codec


def _trained_default_codec(option: str, lm=None, tokenizer=None) -> LLMCodecModel:
    """The shipped default codec for a config `option` set to "default" (codebooks from `lm` / `tokenizer` when
    given, else from the offline default LM); `FileNotFoundError` when no trained weights are installed."""
    codec, trained, _ = load_default_codec(lm, tokenizer)
    if not trained:
        raise FileNotFoundError(f"`{option}: default`: this installation ships no trained default codec.")
    return codec


def load_codec_teacher(source: str, lm=None, tokenizer=None) -> LLMCodecModel:
    """
    The frozen codec of `TrainingConfig.codec_teacher`: "default" for the shipped default codec (codebooks from
    `lm` / `tokenizer` when given, else from the offline default LM), or a saved codec folder.
    """
    if source == "default":
        return _trained_default_codec("codec_teacher", lm, tokenizer)
    if not Path(source).is_dir():
        raise FileNotFoundError(f"`codec_teacher`: no codec folder at {source}; give a folder written by "
                                "save_pretrained (or the trainer's export), or 'default'.")
    return LLMCodecModel.from_pretrained(source)


def check_codec_teacher(teacher: LLMCodecModel, codec: LLMCodecModel) -> LLMCodecModel:
    """
    `teacher` ready to give targets for `codec`: float32, eval mode, every tensor frozen. Raises `ValueError` when
    its sample rate differs from the trained codec's (their outputs could not be compared sample by sample).
    """
    if teacher is codec:
        raise ValueError("`codec_teacher` must be another codec object than the one trained (a frozen copy).")
    if teacher.config.sample_rate != codec.config.sample_rate:
        raise ValueError(f"`codec_teacher` runs at {teacher.config.sample_rate} Hz but the trained codec at "
                         f"{codec.config.sample_rate} Hz: their outputs cannot be compared.")
    return teacher.float().eval().requires_grad_(False)


def has_weight_norm(codec: nn.Module) -> bool:
    """Whether some convolution of `codec` is already weight-normalised (e.g. by an earlier `Trainer`)."""
    return any(
        parametrize.is_parametrized(m, "weight") for m in codec.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))
    )


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (frozen codebooks are buffers and do not count)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["build_codec", "check_codec_teacher", "count_parameters", "has_weight_norm", "load_codec_teacher",
           "resolve_word_list"]
