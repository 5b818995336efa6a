"""Processor: audio <-> LLM-Codec inputs, and codec codes <-> token ids of the LLM whose vocabulary they use.

Two serialisations of codes as LLM token ids (see `docs/pipelines.md`):

* **understanding** (prompt input, one-way): the chosen layers one after the other (layer order 1, 2, 3), with
  layer-1 codes written as their words (each word = the LLM ids of `" " + word`, 1-2 sub-words) and layer-2/3 codes
  as the LLM token ids themselves. The paper feeds only layer 1 for understanding tasks; that is the default.
* **generation** (what an LLM writes, invertible): all layers, layer-major:
  `words of layer 1 ... SEP ids of layer 2 ... ids of layer 3`, where SEP is the separator token (a newline by
  default) and layer k holds exactly `T1 * vq_strides[0] / vq_strides[k]` ids. Layer 1 must hold a whole number of
  attention windows (`window / vq_strides[0]` words; 2 for the released model). `ids_to_codes` is the exact inverse;
  a malformed sequence raises `CodeSequenceError` saying where, or with `repair=True` keeps, from each layer's own
  block (whose place the number of layer-1 words fixes), the longest prefix holding whole windows in every layer
  (documented rule; blocks are never shifted to fit).

With `audio_format="text"` the processor serves an LLM whose vocabulary is *not* the codec's: layer 1 is written as
its English words, tokenised by that LLM's own tokenizer (the understanding serialisation of layer 1, with another
tokenizer). Layers 2-3 (ids of the codec's LLM) and the generation serialisation are refused in that mode, and the
vocabulary check is not needed; every layer-1 word is checked to survive the tokenizer (see `check_words`).
"""

import math

import numpy as np
import torch
from transformers import ProcessorMixin
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import PROCESSOR_NAME, cached_file

from .codebooks import word_token_ids
from .feature_extraction_llm_codec import LLMCodecFeatureExtractor
from .vocabulary import check_vocabulary


class CodeSequenceError(ValueError):
    """A token sequence is not a valid serialisation of codec codes; the message says where it breaks."""


AUDIO_FORMATS = ("ids", "text")
"""`"ids"`: codes are ids of the codec's own LLM vocabulary (checked). `"text"`: layer-1 words as text, any LLM."""


class UntokenizableWordError(ValueError):
    """A layer-1 word does not survive the tokenizer of the LLM that is to read it as text."""


def check_collapse_repeats(collapse_repeats: bool, layers=(0,), format: str = "understanding") -> None:
    """
    Raises `ValueError` when `collapse_repeats=True` cannot apply: it is only for the understanding serialisation
    of layer 1 alone (`layers=(0,)`), since the codes of layers 2-3 are aligned to layer 1's and the generation
    serialisation must stay invertible by `ids_to_codes`.
    """
    if not collapse_repeats:
        return
    if format != "understanding":
        raise ValueError(
            "collapse_repeats=True is only for format='understanding': the generation serialisation must stay "
            "invertible by ids_to_codes (collapsed repeats cannot be restored)."
        )
    if tuple(layers) != (0,):
        raise ValueError(
            f"collapse_repeats=True needs layers=(0,) (layer 1 alone), got layers={tuple(layers)}: the codes "
            "of layers 2-3 are aligned to layer 1's, which collapsing would break."
        )


def _layer1_heads(codec) -> list[int]:
    """The fitted `word_heads` of a codec with `semantic_groups` (a model, not a config: they are a buffer)."""
    quantizer = getattr(codec, "quantizer", None)
    if quantizer is None:
        raise ValueError(
            "This codec's layer-1 words are grouped (`semantic_groups`) and the groups are weights of the model, not "
            "of its config: build the processor from the model, `LLMCodecProcessor.from_codec(model, tokenizer)`."
        )
    if not quantizer.layers[0].groups_fitted:
        raise ValueError(
            "This codec's layer-1 word groups were never fitted (`quantizer.layers.0.word_heads` holds -1): fit them "
            "with llm_codec.training.fit_semantic_layer1(codec, clips) first."
        )
    return quantizer.layers[0].word_heads.tolist()


def resolve_collapse_repeats(collapse_repeats: bool | None, config=None, layers=(0,)) -> bool:
    """
    The `collapse_repeats` a few-shot prompt uses: `None` (the default) means `True` for a codec whose layer 1 is
    computed by a teacher (`config.semantic_teacher`: its words repeat for as long as the sound stays the same) when
    layer 1 alone is written, else `False`; `True` / `False` are checked (`check_collapse_repeats`) and kept.
    """
    if collapse_repeats is None:
        return getattr(config, "semantic_teacher", None) is not None and tuple(layers) == (0,)
    if not isinstance(collapse_repeats, (bool, np.bool_)):
        raise ValueError(f"collapse_repeats must be True, False or None (automatic), got {collapse_repeats!r}.")
    check_collapse_repeats(bool(collapse_repeats), layers)
    return bool(collapse_repeats)


class LLMCodecProcessor(ProcessorMixin):
    """
    Wraps an [`LLMCodecFeatureExtractor`] (audio -> `input_values`, `padding_mask`) and the tokenizer of the LLM
    the codebooks came from, and converts codec codes to and from that LLM's token ids.

    Args:
        feature_extractor (`LLMCodecFeatureExtractor`): turns raw audio into model inputs.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): the LLM's tokenizer (needed for token conversions).
        layer1_words (`list[str]`, *optional*): word of each layer-1 codebook entry (from the codec config).
        vq_strides (`list[int]`): pooling stride of each VQ layer.
        codebook_sizes (`list[int]`, *optional*): entries of each codebook.
        layer_token_ids (`list`, *optional*): per layer, the LLM token id of each code when a layer uses a subset
            of the vocabulary (`None`: code == token id).
        attn_window_size (`int`, *optional*): the codec's attention window in frames.
        llm_name_or_path, llm_vocab_fingerprint (`str`, *optional*): the vocabulary the codes belong to.
        separator (`str`): text of the separator token of the generation serialisation (default newline).
        allow_vocabulary_mismatch (`bool`): skip the vocabulary check (experts only).
        audio_format (`str`): `"ids"` (default: the tokenizer must be the codec's LLM's, checked) or `"text"` (any
            tokenizer; only layer 1 is written, as words; understanding serialisation only).
        layer1_heads (`list[int]`, *optional*): for a codec with `semantic_groups`, the head word of each layer-1
            word's group (its `quantizer.layers.0.word_heads`): the understanding serialisation writes every layer-1
            code as its head, the word of the teacher's centroid, which is what an LM can match in context; the
            generation serialisation keeps the codes themselves.
    """

    def __init__(
        self,
        feature_extractor,
        tokenizer=None,
        layer1_words=None,
        vq_strides=(4, 2, 1),
        codebook_sizes=None,
        layer_token_ids=None,
        attn_window_size=8,
        llm_name_or_path=None,
        llm_vocab_fingerprint=None,
        separator="\n",
        allow_vocabulary_mismatch=False,
        audio_format="ids",
        layer1_heads=None,
    ):
        if audio_format not in AUDIO_FORMATS:
            raise ValueError(
                f"audio_format must be one of {AUDIO_FORMATS}, got {audio_format!r}: 'ids' for the LLM whose vocabulary "
                "the codec speaks, 'text' to write layer-1 words as text for any other LLM."
            )
        self.audio_format = audio_format
        self.layer1_words = list(layer1_words) if layer1_words is not None else None
        self.layer1_heads = [int(h) for h in layer1_heads] if layer1_heads is not None else None
        self.vq_strides = list(vq_strides)
        self.codebook_sizes = list(codebook_sizes) if codebook_sizes is not None else None
        self.layer_token_ids = layer_token_ids
        self.attn_window_size = attn_window_size
        self.llm_name_or_path = llm_name_or_path
        self.llm_vocab_fingerprint = llm_vocab_fingerprint
        self.separator = separator
        self.allow_vocabulary_mismatch = allow_vocabulary_mismatch
        super().__init__(feature_extractor, tokenizer)
        self._tables = None
        if tokenizer is not None and audio_format == "ids":
            check_vocabulary(self, tokenizer, allow_mismatch=allow_vocabulary_mismatch)

    @classmethod
    def from_codec(cls, codec, tokenizer, feature_extractor=None, allow_vocabulary_mismatch=False, **kwargs):
        """
        Builds the processor for a codec (an `LLMCodecModel` or its config) and the LLM's tokenizer. Raises
        `VocabularyMismatchError` if the tokenizer's vocabulary is not the codec's.
        """
        config = getattr(codec, "config", codec)
        feature_extractor = feature_extractor or LLMCodecFeatureExtractor(sampling_rate=config.sample_rate)
        if getattr(config, "semantic_groups", False) and "layer1_heads" not in kwargs:
            kwargs["layer1_heads"] = _layer1_heads(codec)
        return cls(
            feature_extractor,
            tokenizer,
            layer1_words=config.layer1_words,
            vq_strides=config.vq_strides,
            codebook_sizes=config.codebook_sizes,
            layer_token_ids=config.layer_token_ids,
            attn_window_size=config.attn_window_size,
            llm_name_or_path=config.llm_name_or_path,
            llm_vocab_fingerprint=config.llm_vocab_fingerprint,
            allow_vocabulary_mismatch=allow_vocabulary_mismatch,
            **kwargs,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """
        `ProcessorMixin.from_pretrained` for a folder (or Hub repository) holding a processor: `processor_config.json`
        and the LLM's tokenizer, as `save_pretrained` of this processor writes.

        A codec folder alone (what `LLMCodecModel.save_pretrained`, `llm-codec convert` and training write) holds the
        feature extractor but no tokenizer. Through `AutoProcessor.from_pretrained` it then gives that
        [`LLMCodecFeatureExtractor`], as transformers does for codecs such as DAC; called on this class directly, a
        `ValueError` says how to build the processor instead.
        """
        hub_keys = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")
        lookup = {key: kwargs[key] for key in hub_keys if key in kwargs}
        lookup.update(_raise_exceptions_for_gated_repo=False, _raise_exceptions_for_missing_entries=False,
                      _raise_exceptions_for_connection_errors=False)
        if any(cached_file(pretrained_model_name_or_path, name, **lookup) is not None
               for name in (PROCESSOR_NAME, "tokenizer_config.json", "tokenizer.json")):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if kwargs.pop("_from_auto", False):
            kwargs.pop("trust_remote_code", None)
            return LLMCodecFeatureExtractor.from_pretrained(pretrained_model_name_or_path, **kwargs)
        raise ValueError(
            f"{pretrained_model_name_or_path} holds no processor (no processor_config.json or tokenizer): it is a "
            "codec folder. Load its feature extractor with `AutoFeatureExtractor.from_pretrained`, or build the "
            "processor from the codec and its LLM's tokenizer: `LLMCodecProcessor.from_codec(model, tokenizer)`."
        )

    # ------------------------------------------------------------------------------------------------ features

    def __call__(self, audio=None, text=None, sampling_rate=None, return_tensors=None, **kwargs) -> BatchFeature:
        """
        `audio`: one clip or a list of clips (1-D `(time,)` or 2-D `(channels, time)`), with `sampling_rate`
        required -> `input_values` `(batch, 1, time)` and `padding_mask` `(batch, time)`. `text`: a string or list of
        strings -> the tokenizer's `input_ids` and `attention_mask`. Both may be given.
        """
        if audio is None and text is None:
            raise ValueError("Give `audio` (with `sampling_rate`) and/or `text` to the processor.")
        outputs = {}
        if audio is not None:
            outputs.update(self.feature_extractor(audio, sampling_rate=sampling_rate, return_tensors=return_tensors, **kwargs))
        if text is not None:
            outputs.update(self._require_tokenizer()(text, return_tensors=return_tensors))
        return BatchFeature(outputs, tensor_type=return_tensors)

    # ------------------------------------------------------------------------------------------- token tables

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("This processor has no tokenizer: build it with the LLM's tokenizer (`from_codec`).")
        return self.tokenizer

    @property
    def window_words(self) -> int:
        """Layer-1 codes per attention window: generated layer-1 blocks must be a multiple of this."""
        window = self.attn_window_size or 1
        return max(1, math.lcm(window, self.vq_strides[0]) // self.vq_strides[0])

    def tables(self) -> dict:
        """Lazily built lookup tables (word ids, layer id maps, separator id, a trie over layer-1 word ids)."""
        if self._tables is not None:
            return self._tables
        tokenizer = self._require_tokenizer()
        if self.layer1_words is None:
            raise ValueError("The codec records no layer-1 words (`config.layer1_words`): layer 1 cannot become text.")
        word_ids = [tuple(ids) for ids in word_token_ids(tokenizer, self.layer1_words)]
        if self.audio_format == "text":
            self._check_words(tokenizer, word_ids)
        if any(len(ids) == 0 for ids in word_ids):
            raise ValueError("A layer-1 word tokenises to no ids with this tokenizer.")
        trie: dict = {}
        for code, ids in enumerate(word_ids):
            node = trie
            for token in ids:
                node = node.setdefault(token, {})
            node.setdefault(None, []).append(code)
        separator = tokenizer(self.separator, add_special_tokens=False)["input_ids"]
        separator_id = separator[0] if len(separator) == 1 else None
        if separator_id is not None and any(separator_id in ids for ids in word_ids):
            separator_id = None
        layer_maps = []
        for k in range(len(self.vq_strides)):
            ids = (self.layer_token_ids or [None] * len(self.vq_strides))[k]
            if k == 0 or ids is None:
                layer_maps.append(None)
            else:
                ids = np.asarray(ids, dtype=np.int64)
                inverse = {int(t): i for i, t in enumerate(ids)}
                layer_maps.append((ids, inverse))
        self._tables = {"word_ids": word_ids, "trie": trie, "separator_id": separator_id, "layer_maps": layer_maps}
        return self._tables

    def _check_words(self, tokenizer, word_ids) -> None:
        """Raises `UntokenizableWordError` naming the first layer-1 words whose ids are empty, hold the unknown
        token, or do not decode back to the word (the LLM would read something else)."""
        unknown = getattr(tokenizer, "unk_token_id", None)
        bad = []
        for word, ids in zip(self.layer1_words, word_ids):
            if not ids or (unknown is not None and unknown in ids) or tokenizer.decode(list(ids)).strip() != word:
                bad.append(word)
        if bad:
            shown = ", ".join(repr(w) for w in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise UntokenizableWordError(
                f"{len(bad)} layer-1 word(s) of this codec do not survive the tokenizer of "
                f"{getattr(tokenizer, 'name_or_path', 'the LLM')!r} ({shown}): the LLM would not read them as written. "
                "Use an LLM whose tokenizer covers plain English words, or audio_format='ids' with the codec's own LLM."
            )

    def check_words(self) -> None:
        """
        For `audio_format="text"`: checks that every layer-1 word of the codec tokenises (as `" " + word`) to ids
        that hold no unknown token and decode back to the word. Raises `UntokenizableWordError` naming the words.
        """
        self.tables()

    def separator_id(self) -> int:
        """Id of the separator token of the generation serialisation (a single token not used by any word)."""
        separator_id = self.tables()["separator_id"]
        if separator_id is None:
            raise ValueError(
                f"The separator {self.separator!r} is not a single token of this tokenizer outside every layer-1 word; "
                "pass another `separator=` (text of one token) to the processor or pipeline."
            )
        return separator_id

    def _layer_ids(self, k: int, codes: list[int]) -> list[int]:
        """Codes of layer k >= 1 -> LLM token ids."""
        mapping = self.tables()["layer_maps"][k]
        size = self.codebook_sizes[k] if self.codebook_sizes else None
        for c in codes:
            if c < 0 or (size is not None and c >= size):
                raise CodeSequenceError(f"Code {c} of layer {k + 1} is outside its codebook (0..{size - 1}).")
        return list(codes) if mapping is None else [int(mapping[0][c]) for c in codes]

    def _layer_codes(self, k: int, ids: list[int], position: int) -> list[int]:
        """LLM token ids of layer k >= 1 -> codes (errors name the position in the sequence)."""
        mapping = self.tables()["layer_maps"][k]
        size = self.codebook_sizes[k] if self.codebook_sizes else None
        codes = []
        for offset, token in enumerate(ids):
            code = token if mapping is None else mapping[1].get(token)
            if code is None or code < 0 or (size is not None and code >= size):
                raise CodeSequenceError(
                    f"Token id {token} at position {position + offset} is not a code of layer {k + 1}."
                )
            codes.append(code)
        return codes

    # ------------------------------------------------------------------------------------- codes -> token ids

    @staticmethod
    def _per_item(audio_codes, audio_codes_lengths=None) -> list[list[list[int]]]:
        """Codes (tuple of (batch, T_k)) -> per item, per layer, the valid codes as Python lists."""
        codes = [torch.as_tensor(c) for c in audio_codes]
        codes = [c[None] if c.dim() == 1 else c for c in codes]
        batch = codes[0].shape[0]
        items = []
        for i in range(batch):
            layers = []
            for k, c in enumerate(codes):
                n = int(audio_codes_lengths[i][k]) if audio_codes_lengths is not None else c.shape[1]
                layers.append(c[i, :n].tolist())
            items.append(layers)
        return items

    def codes_to_ids(
        self, audio_codes, audio_codes_lengths=None, layers=(0,), format="understanding", collapse_repeats=False
    ) -> list[list[int]]:
        """
        Codec codes -> LLM token ids, one list per batch item.

        Args:
            audio_codes: tuple with one `(batch, T_k)` (or `(T_k,)`) tensor per layer, from `LLMCodecModel.encode`.
            audio_codes_lengths: `(batch, layers)` valid lengths (from `encode`), to drop batch padding.
            layers: layers to serialise for `format="understanding"` (0-based; default layer 1 only).
            format: `"understanding"` (chosen layers back to back) or `"generation"` (all layers with the separator,
                invertible by `ids_to_codes`).
            collapse_repeats: write each run of consecutive equal layer-1 codes once (`a b b b c c` -> `a b c`): a
                shorter prompt of the distinct words in order. Only for `format="understanding"` with `layers=(0,)`
                (layer 1 alone): the codes of layers 2-3 are aligned to layer 1's, and the generation serialisation
                must stay invertible by `ids_to_codes`. Default `False` (every code written).
        """
        tables = self.tables()
        if format not in ("understanding", "generation"):
            raise ValueError(f"format must be 'understanding' or 'generation', got {format!r}.")
        check_collapse_repeats(collapse_repeats, layers, format)
        self._check_text_format(format, layers)
        if format == "generation":
            layers = tuple(range(len(self.vq_strides)))
        for k in layers:
            if not 0 <= k < len(self.vq_strides):
                raise ValueError(f"Layer {k} does not exist (0..{len(self.vq_strides) - 1}).")
        result = []
        for item in self._per_item(audio_codes, audio_codes_lengths):
            ids = []
            for k in layers:
                if k == 0:
                    codes = item[0]
                    if format == "understanding":
                        codes = self.read_layer1(codes)
                    if collapse_repeats:
                        codes = [c for position, c in enumerate(codes) if position == 0 or c != codes[position - 1]]
                    for c in codes:
                        if not 0 <= c < len(tables["word_ids"]):
                            raise CodeSequenceError(f"Layer-1 code {c} is outside the word list (0..{len(tables['word_ids']) - 1}).")
                        ids.extend(tables["word_ids"][c])
                    if format == "generation":
                        ids.append(self.separator_id())
                else:
                    ids.extend(self._layer_ids(k, item[k]))
            result.append(ids)
        return result

    def codes_to_text(self, audio_codes, audio_codes_lengths=None, layers=(0,), collapse_repeats=False) -> list[str]:
        """Codec codes -> the text the LLM reads (the tokenizer's decoding of `codes_to_ids`, `collapse_repeats` as
        there), one string per item."""
        ids = self.codes_to_ids(audio_codes, audio_codes_lengths, layers=layers, collapse_repeats=collapse_repeats)
        return [self._require_tokenizer().decode(i) for i in ids]

    def read_layer1(self, layer1_codes):
        """
        The layer-1 codes an LM reads in the understanding serialisation: each code's group head for a codec with
        `semantic_groups` (`layer1_heads`), else the codes themselves. `layer1_codes`: a list of ints or a LongTensor
        of any shape -> the same type and shape (codes outside the word list are left for the caller to reject).
        """
        if self.layer1_heads is None:
            return layer1_codes
        heads = self.layer1_heads
        if torch.is_tensor(layer1_codes):
            table = torch.tensor(heads, dtype=torch.long, device=layer1_codes.device)
            inside = (layer1_codes >= 0) & (layer1_codes < len(heads))
            return torch.where(inside, table[layer1_codes.clamp(0, len(heads) - 1)], layer1_codes)
        return [heads[c] if 0 <= c < len(heads) else c for c in layer1_codes]

    def codes_to_words(self, layer1_codes) -> list[list[str]]:
        """Layer-1 codes `(batch, T1)` -> their words."""
        if self.layer1_words is None:
            raise ValueError("The codec records no layer-1 words.")
        layer1_codes = torch.as_tensor(layer1_codes)
        layer1_codes = layer1_codes[None] if layer1_codes.dim() == 1 else layer1_codes
        return [[self.layer1_words[c] for c in row.tolist()] for row in layer1_codes]

    # ------------------------------------------------------------------------------------- token ids -> codes

    def _parse_words(self, ids: list[int]) -> tuple[list[int], int]:
        """
        Splits a run of ids (ending where the separator or the sequence ends) into layer-1 words. Returns the codes
        and the number of ids consumed. A word whose ids are a prefix of another's is resolved by dynamic programming
        (the parse must consume every id); several full parses take the one with the longest first words.
        """
        trie = self.tables()["trie"]
        n = len(ids)
        # best[i]: a parse of ids[i:] as words, or None.
        best: list = [None] * (n + 1)
        best[n] = []
        for start in range(n - 1, -1, -1):
            node, pos, choice = trie, start, None
            while pos < n and ids[pos] in node:
                node = node[ids[pos]]
                pos += 1
                if None in node and best[pos] is not None:
                    choice = [node[None][0]] + best[pos]  # keep the longest match that completes a parse
            best[start] = choice
        if best[0] is None:
            known = {token for word in self.tables()["word_ids"] for token in word}
            stray = next((p for p, token in enumerate(ids) if token not in known), None)
            if stray is not None:
                raise CodeSequenceError(f"Token id {ids[stray]} at position {stray} is not part of any layer-1 word.")
            raise CodeSequenceError("The layer-1 ids do not split into whole words (a word is cut or out of order).")
        return best[0], n

    @staticmethod
    def _as_int_ids(ids) -> list[int]:
        """Token ids as Python ints; a bool, a fractional number or a non-number is a `CodeSequenceError` naming its
        position (`int(1234.7)` would silently give another token)."""
        values = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        result = []
        for position, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not value.is_integer()
            ):
                raise CodeSequenceError(f"Token id {value!r} at position {position} is not an integer id.")
            result.append(int(value))
        return result

    def _check_text_format(self, format: str, layers=(0,)) -> None:
        """In `audio_format="text"` only layer 1 in the understanding serialisation exists; say so otherwise."""
        if self.audio_format != "text":
            return
        if format == "generation":
            raise ValueError(
                "audio_format='text' is for understanding tasks: generating audio needs the ids of the codec's own "
                "LLM (audio_format='ids' with that LLM)."
            )
        if tuple(layers) != (0,):
            raise ValueError(
                f"audio_format='text' writes layer 1 only (its English words); layers {[k + 1 for k in layers if k]} "
                "are ids of the codec's own LLM vocabulary. Use layers=(0,), or audio_format='ids' with that LLM."
            )

    def ids_to_codes(self, ids, repair: bool = False) -> tuple[torch.LongTensor, ...]:
        """
        Inverse of `codes_to_ids(..., format="generation")`: LLM token ids -> one `(1, T_k)` LongTensor per layer.

        Raises `CodeSequenceError` if the separator is missing, a token is not valid where it stands, layer 1 is not
        a whole number of attention windows, or layers 2-3 are shorter or longer than layer 1 implies. With
        `repair=True`, a sequence that is cut short or too long keeps, from each layer's own block (placed by the
        number of layer-1 words), the longest prefix holding whole attention windows in every layer (at least one
        window, else the error is raised).
        """
        self._check_text_format("generation")
        ids = self._as_int_ids(ids)
        separator = self.separator_id()
        if separator not in ids:
            raise CodeSequenceError("No separator after the layer-1 words: the sequence is not in the generation format.")
        cut = ids.index(separator)
        words, _ = self._parse_words(ids[:cut])
        rest = ids[cut + 1 :]
        ratios = [self.vq_strides[0] // s for s in self.vq_strides]
        written = len(words)  # the separator fixes the layout: layer k holds written * ratio_k ids
        blocks, offset = [], 0
        for ratio in ratios[1:]:
            blocks.append((offset, rest[offset : offset + written * ratio]))
            offset += written * ratio
        n1 = written
        if not repair and (written == 0 or written % self.window_words):
            raise CodeSequenceError(
                f"Layer 1 holds {written} words; it must be a positive multiple of {self.window_words} (whole attention "
                "windows)."
            )
        if repair:
            # whole windows that every layer can fill, each layer read from its own block
            whole = min([written] + [len(block) // ratio for (_, block), ratio in zip(blocks, ratios[1:])])
            n1 = whole // self.window_words * self.window_words
            if n1 == 0:
                raise CodeSequenceError("Not even one whole attention window of codes in the sequence; cannot repair.")
        elif len(rest) != offset:
            raise CodeSequenceError(
                f"After {written} layer-1 words, layers 2-{len(self.vq_strides)} need "
                f"{[written * r for r in ratios[1:]]} ids ({offset} in all), got {len(rest)}. The sequence is truncated "
                "or has extra tokens (use repair=True to cut to whole windows)."
            )
        codes = [torch.tensor([words[:n1]], dtype=torch.long)]
        for k, ((start, block), ratio) in enumerate(zip(blocks, ratios[1:]), start=1):
            layer = self._layer_codes(k, block[: n1 * ratio], cut + 1 + start)
            codes.append(torch.tensor([layer], dtype=torch.long))
        return tuple(codes)


__all__ = [
    "AUDIO_FORMATS",
    "CodeSequenceError",
    "LLMCodecProcessor",
    "UntokenizableWordError",
    "check_collapse_repeats",
    "resolve_collapse_repeats",
]
