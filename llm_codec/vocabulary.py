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
