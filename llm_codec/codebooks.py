"""Codec codebooks from any causal language model (the LLM-Codec / UniAudio 1.5 recipe).

- Layer 1 (the coarsest VQ layer) is a table of *words*: English words that the LM tokenizer splits into at most
  `max_subwords` sub-words, each represented by the mean of its sub-word embeddings.
- Layers 2.. are the LM's input embedding table itself, so a code is an LM token id (or, with `layer_subset`, an
  index into an explicit list of token ids recorded in `config.layer_token_ids`).

The codebooks are frozen buffers of the codec (`model.quantizer.layers[k].codebook`).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedModel

from .configuration_llm_codec import LLMCodecConfig
from .language_model import load_language_model
from .vocabulary import vocabulary_fingerprint

WORD_LIST_SIZES = (10, 20)
_WORD_LIST_FILES = {10: "english_words.txt", 20: "english_words_20.txt"}
_BYTE_FALLBACK = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
_SPACE_MARKERS = ("\u2581", "\u0120")  # SentencePiece "▁" and byte-level "Ġ"

# Config fields that the recipe derives from the LM; they cannot be overridden.
_DERIVED_FIELDS = (
    "codebook_sizes",
    "codebook_dim",
    "layer1_words",
    "llm_vocab_size",
    "llm_vocab_fingerprint",
    "layer_token_ids",
)


# ---------------------------------------------------------------------------------------------------- word lists


def load_default_word_list(size: int = 10) -> list[str]:
    """
    The shipped English word list (SCOWL, see `llm_codec/assets/english_words.LICENSE`): lowercase alphabetic
    words, sorted.

    Args:
        size (`int`, defaults to 10): SCOWL size. 10: the most common words (3973); 20: those plus the size-20
            words (10902 in all, size-10 words first).

    Returns:
        `list[str]`: the words, without duplicates.
    """
    if size not in WORD_LIST_SIZES:
        raise ValueError(f"`size` must be one of {WORD_LIST_SIZES}, got {size!r}.")
    words: list[str] = []
    assets = resources.files(__package__).joinpath("assets")
    for level in WORD_LIST_SIZES:
        if level > size:
            break
        text = assets.joinpath(_WORD_LIST_FILES[level]).read_text(encoding="utf-8")
        words.extend(line.strip() for line in text.splitlines() if line.strip())
    return words


def _strip_space_token(tokenizer, ids: list[int]) -> list[int]:
    """Drops a leading token that is only the word-separating space (e.g. Llama-2's lone "▁"), if a word follows."""
    if len(ids) < 2:
        return ids
    token = tokenizer.convert_ids_to_tokens(ids[0])
    if isinstance(token, str) and token and not token.strip("".join(_SPACE_MARKERS) + " \t"):
        return ids[1:]
    return ids


def word_token_ids(tokenizer, words: list[str]) -> list[list[int]]:
    """
    The sub-word token ids of each word *as it appears mid-sentence*: each word is encoded as `" " + word`, without
    special tokens (so GPT-2/SmolLM2-style byte-level tokenizers give their space-prefixed "Ġword" tokens and
    SentencePiece tokenizers their "▁word" tokens, the forms words take in running text). A leading token that
    is only the space itself (Llama-2's legacy tokenizer encodes " word" as "▁", "▁word") is not counted.

    Args:
        tokenizer: a transformers tokenizer.
        words (`list[str]`): words without surrounding spaces.

    Returns:
        `list[list[int]]`: one list of token ids per word.
    """
    if not words:
        return []
    encoded = tokenizer([" " + word for word in words], add_special_tokens=False)["input_ids"]
    return [_strip_space_token(tokenizer, list(map(int, ids))) for ids in encoded]


def build_word_codebook(
    embedding: torch.Tensor,
    tokenizer,
    words: list[str],
    max_subwords: int = 2,
) -> tuple[torch.Tensor, list[str], list[list[int]]]:
    """
    The layer-1 word codebook: keeps the words that the tokenizer splits into 1..`max_subwords` sub-words and
    represents each by the mean of its sub-word embeddings.

    Words are tokenized as `" " + word` without special tokens (see `word_token_ids`). Words are stripped of
    surrounding whitespace; empty words, repeated words (first occurrence kept), words containing the unknown
    token, and words whose token sequence equals that of an earlier kept word are dropped. The input order is kept.

    Args:
        embedding (`torch.Tensor` of shape `(V, D)`): the LM's input embedding table (`V` may exceed
            `len(tokenizer)`).
        tokenizer: the LM's tokenizer.
        words (`list[str]`): candidate words, in the order the codebook should have.
        max_subwords (`int`, defaults to 2): the most sub-words a kept word may have.

    Returns:
        `tuple`: `table` (`torch.FloatTensor` of shape `(N, D)`, float32, computed in float32), `kept_words`
        (`list[str]`, length `N`) and `token_ids` (`list[list[int]]`, the sub-word ids of each kept word).

    Raises:
        `ValueError`: bad arguments, a token id outside the embedding, or no word left after filtering.
    """
    if not torch.is_tensor(embedding) or embedding.dim() != 2:
        raise ValueError(f"`embedding` must be a 2-D (vocab, dim) tensor, got {getattr(embedding, 'shape', embedding)!r}.")
    if int(max_subwords) < 1:
        raise ValueError(f"`max_subwords` must be at least 1, got {max_subwords}.")
    if isinstance(words, str):
        raise ValueError("`words` must be a list of words, not a single string.")
    candidates, seen_words = [], set()
    for word in words:
        if not isinstance(word, str):
            raise ValueError(f"`words` must hold strings, got {type(word).__name__} ({word!r}).")
        word = word.strip()
        if word and word not in seen_words:
            seen_words.add(word)
            candidates.append(word)
    unk = getattr(tokenizer, "unk_token_id", None)
    kept_words, kept_ids, seen_ids = [], [], set()
    for word, ids in zip(candidates, word_token_ids(tokenizer, candidates)):
        if not 1 <= len(ids) <= max_subwords or (unk is not None and unk in ids):
            continue
        key = tuple(ids)
        if key in seen_ids:
            continue
        seen_ids.add(key)
        kept_words.append(word)
        kept_ids.append(ids)
    if not kept_words:
        sample = ", ".join(repr(w) for w in candidates[:3])
        raise ValueError(
            f"No word is left for the layer-1 codebook: none of the {len(candidates)} candidate words ({sample}"
            f"{', ...' if len(candidates) > 3 else ''}) tokenizes (as ' ' + word) into 1..{max_subwords} known "
            "sub-words. Give more (or more common) words, or raise `max_subwords`."
        )
    vocab = embedding.shape[0]
    largest = max(max(ids) for ids in kept_ids)
    if largest >= vocab:
        raise ValueError(
            f"The tokenizer produced token id {largest} but the embedding table has only {vocab} rows: the "
            "tokenizer does not belong to this language model."
        )
    weights = embedding.detach()
    table = torch.stack([weights[ids].float().mean(dim=0) for ids in kept_ids]).cpu()
    return table, kept_words, kept_ids


# ------------------------------------------------------------------------------------------- vocabulary subsets


def special_token_ids(tokenizer) -> set[int]:
    """Ids of the tokenizer's special tokens: named ones, additional ones, and added tokens marked special."""
    ids = {int(i) for i in (getattr(tokenizer, "all_special_ids", None) or []) if i is not None}
    for index, token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(token, "special", False):
            ids.add(int(index))
    return ids


def byte_fallback_token_ids(tokenizer) -> set[int]:
    """Ids of SentencePiece byte-fallback tokens (`<0x00>` .. `<0xFF>`, e.g. `<0x0A>` for a newline)."""
    return {int(i) for token, i in tokenizer.get_vocab().items() if _BYTE_FALLBACK.match(token)}


def resolve_layer_subset(layer_subset, tokenizer, vocab_rows: int) -> list[int] | None:
    """
    The token ids that layers 2.. use, as an explicit code-index -> token-id list.

    Args:
        layer_subset: `None` (all `vocab_rows` rows, code == token id: returns `None`); `"no_special"` (every id
            below `min(len(tokenizer), vocab_rows)` except special tokens and byte-fallback tokens, ascending); or
            a sequence of distinct token ids (kept in the given order).
        tokenizer: the LM's tokenizer.
        vocab_rows (`int`): rows of the LM's input embedding table.

    Returns:
        `list[int] | None`.
    """
    if layer_subset is None:
        return None
    if isinstance(layer_subset, str):
        if layer_subset != "no_special":
            raise ValueError(f"Unknown `layer_subset` {layer_subset!r}: use None, 'no_special' or a list of token ids.")
        excluded = special_token_ids(tokenizer) | byte_fallback_token_ids(tokenizer)
        ids = [i for i in range(min(len(tokenizer), vocab_rows)) if i not in excluded]
    else:
        if torch.is_tensor(layer_subset):
            layer_subset = layer_subset.tolist()
        try:
            ids = [int(i) for i in layer_subset]
        except (TypeError, ValueError) as error:
            raise ValueError(f"`layer_subset` must be None, 'no_special' or a list of token ids: {error}") from None
        if any(isinstance(i, bool) or float(i) != int(i) for i in layer_subset):
            raise ValueError("`layer_subset` token ids must be integers.")
        bad = [i for i in ids if not 0 <= i < vocab_rows]
        if bad:
            raise ValueError(f"`layer_subset` ids {bad[:5]} are outside the embedding table (0..{vocab_rows - 1}).")
        if len(set(ids)) != len(ids):
            raise ValueError("`layer_subset` lists some token ids more than once: each codebook entry needs its own id.")
    if not ids:
        raise ValueError("`layer_subset` selects no token: layers 2.. would have empty codebooks.")
    return ids


# ------------------------------------------------------------------------------------------------- codec configs


def codec_config_from_language_model(
    lm,
    tokenizer,
    words: list[str] | None = None,
    max_subwords: int = 2,
    layer_subset=None,
    **config_overrides,
) -> tuple[LLMCodecConfig, list[torch.Tensor]]:
    """
    The codec configuration and codebooks that the LLM-Codec recipe gives for a causal LM.

    Args:
        lm: a causal LM (`PreTrainedModel`) whose `get_input_embeddings().weight` is the `(V, D)` table.
        tokenizer: its tokenizer.
        words (`list[str]`, *optional*): layer-1 candidate words (default: `load_default_word_list()`).
        max_subwords (`int`, defaults to 2): see `build_word_codebook`.
        layer_subset (*optional*): restricts layers 2.. to part of the vocabulary; see `resolve_layer_subset`.
        **config_overrides: other `LLMCodecConfig` arguments (architecture, `llm_name_or_path`, ...). The fields
            derived from the LM (`codebook_sizes`, `codebook_dim`, `layer1_words`, `llm_vocab_size`,
            `llm_vocab_fingerprint`, `layer_token_ids`) cannot be overridden.

    Returns:
        `tuple`: the `LLMCodecConfig` (`codebook_dim = D`, `codebook_sizes = [N, V', V', ...]` with `N` kept words
        and `V'` = `V` or the subset size, `layer1_words`, `llm_name_or_path`, `llm_vocab_size = len(tokenizer)`,
        `llm_vocab_fingerprint`, `layer_token_ids` = `None` or `[None, ids, ids, ...]`) and the codebooks, one
        float32 `torch.Tensor` of shape `(codebook_sizes[k], D)` per VQ layer (on the CPU, independent copies).
    """
    derived = sorted(set(config_overrides) & set(_DERIVED_FIELDS))
    if derived:
        raise ValueError(f"{derived} are derived from the language model and cannot be given.")
    embeddings = lm.get_input_embeddings()
    if embeddings is None or getattr(embeddings, "weight", None) is None:
        raise ValueError("The language model has no input embedding table (`get_input_embeddings().weight`).")
    weight = embeddings.weight.detach()
    vocab_rows, dim = weight.shape
    if words is None:
        words = load_default_word_list()
    word_table, kept_words, _ = build_word_codebook(weight, tokenizer, words, max_subwords=max_subwords)

    num_layers = len(config_overrides.get("vq_strides", LLMCodecConfig.vq_strides))
    if num_layers < 2:
        raise ValueError("The LLM-Codec recipe needs at least two VQ layers (words, then LM tokens).")
    ids = resolve_layer_subset(layer_subset, tokenizer, vocab_rows)
    token_table = (weight if ids is None else weight[torch.tensor(ids, device=weight.device)]).float().cpu()
    codebooks = [word_table] + [token_table.clone() for _ in range(num_layers - 1)]

    name = config_overrides.pop("llm_name_or_path", None)
    if name is None:
        name = getattr(lm.config, "_name_or_path", None) or getattr(lm, "name_or_path", None) or None
    config = LLMCodecConfig(
        codebook_sizes=[t.shape[0] for t in codebooks],
        codebook_dim=int(dim),
        layer1_words=list(kept_words),
        llm_name_or_path=str(name) if name else None,
        llm_vocab_size=len(tokenizer),
        llm_vocab_fingerprint=vocabulary_fingerprint(tokenizer),
        layer_token_ids=None if ids is None else [None] + [list(ids) for _ in range(num_layers - 1)],
        **config_overrides,
    )
    config.validate_architecture()
    return config, codebooks


def build_codec_from_language_model(
    lm_or_path=None,
    tokenizer=None,
    word_list: list[str] | None = None,
    max_subwords: int = 2,
    layer_subset=None,
    model_class=None,
    **config_kwargs,
):
    """
    A new (untrained) LLM-Codec whose codebooks are taken from a causal LM.

    Args:
        lm_or_path (*optional*): a loaded causal LM, a `(model, tokenizer)` pair, a local folder / name accepted by
            `load_language_model`, or `None` for the offline default (SmolLM2-135M-Instruct).
        tokenizer (*optional*): the LM's tokenizer; required with a loaded model unless the model's
            `name_or_path` is a local folder holding its tokenizer.
        word_list (`list[str]`, *optional*): layer-1 candidate words (default: `load_default_word_list()`).
        max_subwords (`int`, defaults to 2): see `build_word_codebook`.
        layer_subset (*optional*): `None`, `"no_special"` or a list of token ids; see `resolve_layer_subset`.
        model_class (*optional*): the class to instantiate (default `LLMCodecModel`; the classmethod passes `cls`).
        **config_kwargs: further `LLMCodecConfig` arguments (architecture, `llm_name_or_path`, ...).

    Returns:
        `LLMCodecModel`: randomly initialised encoder/decoder, codebook buffers
        `model.quantizer.layers[k].codebook` `(codebook_sizes[k], D)` equal to the LM tables (cast to the codec's
        dtype), and the LM's identity in `model.config`.
    """
    if isinstance(lm_or_path, PreTrainedModel) or (
        hasattr(lm_or_path, "get_input_embeddings") and not isinstance(lm_or_path, (str, tuple, list))
    ):
        lm = lm_or_path
        if tokenizer is None:
            source = getattr(lm.config, "_name_or_path", None)
            if not source or not Path(source).is_dir():
                raise ValueError("Pass the language model's `tokenizer` (it cannot be found from the model alone).")
            tokenizer = AutoTokenizer.from_pretrained(source)
    else:
        lm, loaded_tokenizer = load_language_model(lm_or_path)
        tokenizer = tokenizer if tokenizer is not None else loaded_tokenizer
    config, codebooks = codec_config_from_language_model(
        lm, tokenizer, words=word_list, max_subwords=max_subwords, layer_subset=layer_subset, **config_kwargs
    )
    if model_class is None:
        from .modeling_llm_codec import LLMCodecModel  # lazy: an import cycle (modeling imports this module)

        model_class = LLMCodecModel
    model = model_class(config)
    with torch.no_grad():
        for layer, table in zip(model.quantizer.layers, codebooks):
            layer.codebook.copy_(table.to(layer.codebook.dtype))
            if hasattr(layer, "clear_cache"):
                layer.clear_cache()
    return model


__all__ = [
    "build_codec_from_language_model",
    "build_word_codebook",
    "byte_fallback_token_ids",
    "codec_config_from_language_model",
    "load_default_word_list",
    "resolve_layer_subset",
    "special_token_ids",
    "word_token_ids",
]
