"""Identity of an LLM vocabulary, so a codec is never paired with a tokenizer whose ids mean something else."""

import hashlib
import json


def vocabulary_fingerprint(tokenizer) -> str:
    """
    A short, stable fingerprint of a tokenizer's vocabulary: SHA-256 over its `(token, id)` pairs sorted by id
    (added tokens included). Two tokenizers with the same fingerprint map every id to the same token.
    """
    vocab = tokenizer.get_vocab()
    pairs = sorted(((int(i), str(t)) for t, i in vocab.items()))
    digest = hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode("utf-8")).hexdigest()
    return f"sha256:{digest[:16]}:{len(pairs)}"


class VocabularyMismatchError(ValueError):
    """A codec was paired with a tokenizer (or LM) whose vocabulary is not the one its codebooks came from."""


def check_vocabulary(config, tokenizer, allow_mismatch: bool = False) -> None:
    """
    Raises `VocabularyMismatchError` when `tokenizer`'s vocabulary differs from the one recorded in the codec
    `config` (`llm_vocab_fingerprint`), naming the expected LLM. Codecs that record no vocabulary (random or
    converted without `--tokenizer`) are accepted. `allow_mismatch=True` turns the error off (for experts who know
    the two vocabularies share ids).
    """
    expected = getattr(config, "llm_vocab_fingerprint", None)
    if expected is None or allow_mismatch:
        return
    got = vocabulary_fingerprint(tokenizer)
    if got != expected:
        raise VocabularyMismatchError(
            f"This codec's codebooks come from the vocabulary of {config.llm_name_or_path!r} (fingerprint {expected}), "
            f"but the tokenizer given has fingerprint {got} ({getattr(tokenizer, 'name_or_path', '?')!r}). Codes would "
            "map to the wrong tokens. Use that LLM's tokenizer, build a codec for your LLM with "
            "`LLMCodecModel.from_language_model`, or pass `allow_vocabulary_mismatch=True` if you know the ids agree."
        )
