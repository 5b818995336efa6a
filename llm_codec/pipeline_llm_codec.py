"""Few-shot audio pipelines: a frozen causal LM learns an audio task from demonstrations in its prompt.

* `audio-few-shot-classification`: scores every candidate label's log-likelihood after the prompt, reusing the KV
  cache of the shared prompt for every query and label; or compares LM hidden-state embeddings of the clips with
  per-class prototypes (`method="embedding"`).
* `audio-few-shot-generation`: the LM writes codec tokens under a logits processor that only allows what is valid
  at each position of the generation serialisation; the tokens are decoded to a waveform.

Both are created with `pipeline(TASK, model=codec, language_model=lm, tokenizer=lm_tokenizer)` (without
`language_model=`, the LM named by the codec's config is loaded). The LM is the one whose vocabulary the codec speaks
(checked), or, for classification with `audio_format="text"`, any causal LM: layer 1 is then written as its English
words, tokenised by that LM's own tokenizer.

Both follow transformers' `Pipeline` contract, so that `Pipeline.__call__` iterates lists, generators and datasets
(`KeyDataset`) and batches them (`batch_size=`):

* `_sanitize_parameters` checks a call's arguments and builds its *task context* once per call (the demonstrations
  encoded, the prompt prefix and its KV cache, the calibration baseline, the class prototypes, the generation
  prompt), handed to `_forward` and `postprocess` with the other parameters;
* `preprocess` reads one query (any accepted audio form, see `read_audio_input`) into the codec feature extractor's
  `input_values` `(1, 1, samples)` / `padding_mask` `(1, samples)` (classification) or its prompt ids (generation);
* `_forward` runs a whole batch: one codec encode of the right-padded audio, then one LM pass per stage of the
  KV-cached label scoring (`_score_batch`) on top of the shared prefix cache;
* `postprocess` ranks one query's labels, or trims one generated waveform.
"""

import collections.abc
import copy
import logging
import math
import numbers
import os
import threading
import types
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (
    AutoModel,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    Pipeline,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from .audio_io import load_audio
from .language_model import adds_bos_token, load_language_model
from .processing_llm_codec import LLMCodecProcessor, resolve_collapse_repeats

logger = logging.getLogger(__name__)


@dataclass
class Prompt:
    """A prompt as LLM ids, built piece by piece (token ids, not re-tokenised text, so audio ids stay exact)."""

    ids: list[int] = field(default_factory=list)

    def add_text(self, tokenizer, text: str) -> "Prompt":
        self.ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        return self

    def add_ids(self, ids) -> "Prompt":
        self.ids.extend(int(i) for i in ids)
        return self


def rank_labels(scores, labels, top_k: int | None = None) -> list[list[dict]]:
    """
    Scores `(num_queries, num_labels)` -> per query, `[{"label", "score"}]` best first, the scores a softmax over the
    labels (summing to 1), cut to the best `top_k` when given.
    """
    rankings = []
    for row in scores:
        probabilities = torch.softmax(torch.as_tensor(row, dtype=torch.float64), dim=0).tolist()
        ranked = sorted(zip(labels, probabilities), key=lambda x: -x[1])[: top_k or len(labels)]
        rankings.append([{"label": l, "score": p} for l, p in ranked])
    return rankings


def _check_count(name: str, value, minimum: int = 1, allow_none: bool = False) -> None:
    """Raises a `ValueError` naming `name` unless `value` is an int >= `minimum` (or `None` when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{' or None' if allow_none else ''}, got {value!r}.")


def _check_labels(labels, what: str, distinct: bool = True) -> None:
    """Labels are written into the prompt: each must be a non-empty one-line string without the `###` separator,
    and, with `distinct` (candidate labels), each given once (a duplicate would split its probability)."""
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"{what}: every label must be a non-empty string, got {label!r}.")
        if "\n" in label or "\r" in label or "###" in label:
            raise ValueError(
                f"{what}: the label {label!r} holds a line break or '###', which would change the prompt's layout; "
                "use a one-line label without '###'."
            )
    duplicates = sorted({label for label in labels if list(labels).count(label) > 1}) if distinct else []
    if duplicates:
        raise ValueError(f"{what}: {duplicates} appear more than once; give each candidate label once.")


# -------------------------------------------------------------------------------------------------------- audio

AUDIO_FILE_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
"""A `str` ending with one of these is a file path where text is also accepted (generation inputs)."""

ACCEPTED_AUDIO = (
    "a numpy array or torch tensor of shape (time,) or (channels, time) with `sampling_rate=`, a file path (str or "
    "pathlib.Path), the file's contents as bytes, a dict {'array' (or 'raw'): samples, 'sampling_rate': Hz}, or a "
    "dict {'path': ..., 'bytes': ...} (a `datasets.Audio(decode=False)` value)"
)


def _is_number_list(value) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
    )


def read_audio_input(audio, sampling_rate: int | None = None) -> tuple:
    """
    Reads one clip given in any form the pipelines accept.

    Args:
        audio: a numpy array / torch tensor `(time,)` or `(channels, time)` (or a flat list of float samples), a file
            path (`str` or `os.PathLike`), the bytes of an audio file, a dict `{"array" | "raw": samples,
            "sampling_rate": Hz}`, or a dict `{"path": str | None, "bytes": bytes | None}` (what
            `datasets.Audio(decode=False)` gives; the bytes are decoded when set, else the path is read).
        sampling_rate (`int`, *optional*): the rate of samples given without one (arrays, `{"array"}` dicts without
            `"sampling_rate"`).

    Returns:
        `tuple`: `(samples, rate)`, samples as given (arrays, tensors) or decoded `(channels, time)` float32.

    Raises:
        `TypeError`: `audio` is none of these forms (the message lists them).
        `ValueError`: samples without a rate, a dict without usable keys, bytes that are no audio file.
        `FileNotFoundError`: a path without a file.
    """
    if isinstance(audio, (str, os.PathLike)):
        return load_audio(audio)
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return load_audio(audio)
    if isinstance(audio, dict):
        if "array" in audio or "raw" in audio:
            samples = audio["array"] if "array" in audio else audio["raw"]
            rate = audio.get("sampling_rate", sampling_rate)
            if rate is None:
                raise ValueError(
                    "An audio dict {'array': ...} needs its 'sampling_rate' (or pass `sampling_rate=` to the call)."
                )
            return samples, rate
        if "path" in audio or "bytes" in audio:
            if audio.get("bytes") is not None:
                return load_audio(audio["bytes"])
            if audio.get("path") is not None:
                return load_audio(audio["path"])
            raise ValueError("An audio dict {'path', 'bytes'} has both set to None: give the file's path or bytes.")
        raise ValueError(
            f"An audio dict needs 'array' (or 'raw') and 'sampling_rate', or 'path' and/or 'bytes'; got the keys "
            f"{sorted(audio)}."
        )
    if isinstance(audio, (np.ndarray, torch.Tensor)) or _is_number_list(audio):
        if sampling_rate is None:
            raise ValueError(
                "Audio given as an array needs `sampling_rate=` (or pass file paths or {'array', 'sampling_rate'} dicts)."
            )
        return audio, sampling_rate
    raise TypeError(f"Cannot read a {type(audio).__name__} as audio: give {ACCEPTED_AUDIO}.")


def _is_clip(value) -> bool:
    """Whether `value` has the form of one clip (not whether it decodes)."""
    return isinstance(value, (str, os.PathLike, bytes, bytearray, memoryview, dict, np.ndarray, torch.Tensor)) or (
        _is_number_list(value)
    )


def _progress_bar(total: int | None, enabled: bool | None, description: str) -> tqdm:
    """A tqdm bar over `total` items; `enabled=None` shows it for 16 items or more."""
    if enabled is None:
        enabled = (total or 0) >= 16
    return tqdm(total=total, desc=description, disable=not enabled)


@dataclass
class _Progress:
    """A per-call progress bar over the queries, advanced by `postprocess` (which sees every query once)."""

    total: int | None
    enabled: bool | None
    description: str
    bar: object = None
    done: int = 0

    def advance(self):
        if self.bar is None:
            self.bar = _progress_bar(self.total, self.enabled, self.description)
        self.bar.update(1)
        self.done += 1
        if self.total is not None and self.done >= self.total:
            self.bar.close()


class _LLMCodecPipelineBase(Pipeline):
    """
    Shared set-up: a codec (`self.model`), a causal LM and its tokenizer, the processor binding them, and the codec's
    feature extractor (`self.feature_extractor`, saved by `save_pretrained`).
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    _call_parameters: tuple[str, ...] = ()
    """Arguments of a call (the task); refused at construction, where they would be silently ignored."""
    _empty_inputs_message = "Give at least one query (an empty list was given)."

    def __init__(
        self,
        model,
        language_model=None,
        tokenizer=None,
        allow_vocabulary_mismatch=False,
        dtype=None,
        separator="\n",
        audio_format="ids",
        batch_size=8,
        **kwargs,
    ):
        misplaced = sorted(set(kwargs) & set(self._call_parameters))
        if misplaced:
            raise ValueError(
                f"{misplaced} belong to each call, not to the pipeline's construction: "
                f"pipe(inputs, demonstrations=..., {misplaced[0]}=...)."
            )
        _check_count("batch_size", batch_size)
        if language_model is None:
            language_model, loaded_tokenizer = self._configured_language_model(model)
            tokenizer = tokenizer or loaded_tokenizer
        elif isinstance(language_model, (str, os.PathLike)):
            language_model, loaded_tokenizer = load_language_model(os.fspath(language_model))
            tokenizer = tokenizer or loaded_tokenizer
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
        if tokenizer is None:
            raise ValueError("Give the LM's `tokenizer` (an object or a local path).")
        kwargs.pop("feature_extractor", None)  # always the codec's own (built by the processor below)
        super().__init__(model=model, tokenizer=tokenizer, batch_size=batch_size, **kwargs)
        self.model.eval()
        self.language_model = language_model.eval()
        if dtype is not None and dtype != "auto":
            dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
            self.language_model.to(dtype)
            self.model.to(dtype)
        if self.language_model.device != self.device:
            self.language_model.to(self.device)
        self.codec_processor = LLMCodecProcessor.from_codec(
            self.model, tokenizer, allow_vocabulary_mismatch=allow_vocabulary_mismatch, separator=separator,
            audio_format=audio_format,
        )
        if audio_format == "text":
            self.codec_processor.check_words()  # fail now, naming the word, not at the first query
        self.feature_extractor = self.codec_processor.feature_extractor
        self.bos_ids = [tokenizer.bos_token_id] if adds_bos_token(tokenizer) else []
        self._lock = threading.Lock()  # the codec's projection cache is shared; encode under a lock

    @staticmethod
    def _configured_language_model(codec) -> tuple:
        """`language_model=None`: the LM named by the codec's config (`llm_name_or_path`) -> `(model, tokenizer)`."""
        name = getattr(codec.config, "llm_name_or_path", None)
        if not name:
            raise ValueError(
                "No `language_model=` was given and the codec's config names no LM (`llm_name_or_path` is not set): "
                "pass language_model= (a causal LM or its local folder) and tokenizer=."
            )
        try:
            return load_language_model(name)
        except (OSError, ValueError, ImportError) as error:
            raise ValueError(
                f"No `language_model=` was given and the LM named by the codec's config (llm_name_or_path={name!r}) "
                f"could not be loaded: {error}\nPass language_model= (a causal LM or its local folder) and "
                "tokenizer=, or make that LM available (see `llm_codec.language_model.load_language_model`)."
            ) from error

    # ------------------------------------------------------------------------------------------ Pipeline contract

    def _queries(self, inputs):
        """
        Normalises a call's `inputs` for `Pipeline.__call__` -> `(inputs, num_queries)`: one clip stays as it is
        (one result), a list / tuple / `datasets` column becomes a list (a list of results), a generator or a torch
        `Dataset` (`KeyDataset`) streams (an iterator of results). Anything else raises, saying what is accepted.
        """
        if self._is_query(inputs) and not isinstance(inputs, (list, tuple)):
            return inputs, 1
        if isinstance(inputs, (types.GeneratorType, torch.utils.data.Dataset)):
            return inputs, len(inputs) if isinstance(inputs, collections.abc.Sized) else None
        if hasattr(inputs, "column_names") and not isinstance(inputs, collections.abc.Sequence):
            raise TypeError(
                f"Got a whole {type(inputs).__name__} (rows of several columns): pass its audio column, "
                "`dataset['audio']`, or `KeyDataset(dataset, 'audio')` (transformers.pipelines.pt_utils) to stream it."
            )
        if isinstance(inputs, collections.abc.Sequence):  # list, tuple, a `datasets` Column
            queries = list(inputs)
            if not queries:
                raise ValueError(self._empty_inputs_message)
            for index, query in enumerate(queries):
                if not self._is_query(query):
                    hint = " (one clip given as a list of samples: pass it as `np.asarray(samples)`)"
                    hint = hint if isinstance(query, numbers.Real) else ""
                    raise TypeError(f"Query {index} is a {type(query).__name__}{hint}: {self._accepted_queries()}")
            return queries, len(queries)
        if isinstance(inputs, collections.abc.Iterator):
            return (query for query in inputs), None
        raise TypeError(f"Cannot read a {type(inputs).__name__} as queries: {self._accepted_queries()}")

    def _is_query(self, value) -> bool:
        return _is_clip(value)

    def _accepted_queries(self) -> str:
        return (
            f"a query is {ACCEPTED_AUDIO}; several queries are a list, a generator, a `datasets` column or a "
            "`KeyDataset`."
        )

    def _call(self, inputs, batch_size, num_workers, kwargs):
        inputs, num_queries = self._queries(inputs)
        _check_count("batch_size", batch_size, allow_none=True)
        encode_batch_size = batch_size or self._batch_size or 1
        return super().__call__(
            inputs, batch_size=batch_size, num_workers=num_workers, num_queries=num_queries,
            encode_batch_size=encode_batch_size, **kwargs,
        )

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        """
        `Pipeline.get_iterator` with this pipeline's `_collate`: transformers' `pad_collate_fn` needs a pad token in
        the LM's tokenizer (many causal LMs have none) and pads 2-D tensors only, while a query's audio is
        `(1, 1, samples)`.
        """
        if isinstance(inputs, collections.abc.Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            if num_workers > 1:
                logger.warning("Streamed inputs are read by one worker (num_workers=1), keeping their order.")
                num_workers = 1
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the DataLoader may use worker processes
        dataloader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=self._collate)
        model_iterator = PipelineIterator(dataloader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def _collate(self, items: list[dict]) -> dict:
        """
        `preprocess` outputs (each a batch of one query) -> one batch: tensors are right-padded along their last
        (time) axis, `input_values` with the feature extractor's padding value and the rest (`padding_mask`) with 0,
        and concatenated; lists are concatenated.
        """
        keys = set(items[0])
        batch = {}
        for key in items[0]:
            values = [item[key] for item in items]
            if any(set(item) != keys for item in items):
                raise ValueError(f"Cannot batch queries prepared with different keys: {[sorted(i) for i in items]}.")
            if torch.is_tensor(values[0]):
                width = max(v.shape[-1] for v in values)
                fill = self.feature_extractor.padding_value if key == "input_values" else 0
                batch[key] = torch.cat(
                    [torch.nn.functional.pad(v, (0, width - v.shape[-1]), value=fill) for v in values]
                )
            else:
                batch[key] = [x for value in values for x in value]
        return batch

    # -------------------------------------------------------------------------------------------------- audio

    def _encode(self, input_values: torch.Tensor, padding_mask: torch.Tensor) -> list[tuple]:
        """
        Feature-extractor outputs -> per clip, its codes.

        Args:
            input_values (`torch.FloatTensor` of shape `(batch, 1, samples)`): right-padded audio at the codec rate.
            padding_mask (`torch.LongTensor` of shape `(batch, samples)`): 1 for real samples, 0 for padding.

        Returns:
            `list[tuple[torch.LongTensor, ...]]`: per clip, one `(1, T_k)` tensor per codec layer (on the CPU). The
            codec gives every clip of a padded batch the codes it gets alone.
        """
        with self._lock, torch.no_grad():
            encoded = self.model.encode(input_values.to(self.device), padding_mask=padding_mask.to(self.device))
        return [
            tuple(c[i : i + 1, : int(n)].cpu() for c, n in zip(encoded.audio_codes, encoded.audio_codes_lengths[i]))
            for i in range(input_values.shape[0])
        ]

    def _features(self, audio, sampling_rate) -> dict:
        """One clip in any accepted form -> `{"input_values": (1, 1, samples), "padding_mask": (1, samples)}`."""
        samples, rate = read_audio_input(audio, sampling_rate)
        features = self.feature_extractor(samples, sampling_rate=rate, return_tensors="pt")
        return {"input_values": features["input_values"], "padding_mask": features["padding_mask"]}

    def encode_audio(self, clips, sampling_rate=None, batch_size=8) -> list[tuple]:
        """
        Clips -> per clip, its codes as a tuple of `(1, T_k)` LongTensors, encoded `batch_size` clips at a time.

        Args:
            clips (`list`): clips in any form `read_audio_input` accepts.
            sampling_rate (`int`, *optional*): the rate of clips given as arrays.
            batch_size (`int`, defaults to 8): clips per codec pass.
        """
        results = []
        for start in range(0, len(clips), batch_size):
            group = [read_audio_input(c, sampling_rate) for c in clips[start : start + batch_size]]
            rates = {rate for _, rate in group}
            arrays = [a for a, _ in group]
            if len(rates) > 1:  # resample one by one, then batch at the codec rate
                arrays = [self.feature_extractor(a, sampling_rate=r)["input_values"][0, 0] for a, r in group]
                rates = {self.model.config.sample_rate}
            inputs = self.feature_extractor(arrays, sampling_rate=rates.pop(), return_tensors="pt")
            results.extend(self._encode(inputs["input_values"], inputs["padding_mask"]))
        return results

    def check_context(self, length: int, what: str):
        """Raises a clear error when a prompt of `length` tokens exceeds the LM's context window."""
        config = self.language_model.config
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if limit is not None and length > limit:
            raise ValueError(
                f"The {what} needs {length} tokens but the LM's context is {limit}: use shorter or fewer clips, fewer "
                "demonstrations or repeats, or a smaller `max_audio_seconds`."
            )


@dataclass
class ClassificationContext:
    """
    What every query of one classification call shares, built once per call by `_sanitize_parameters`
    (`AudioFewShotClassificationPipeline.build_context`) and handed to `_forward` and `postprocess`.

    `prefix_ids` / `prefix_cache` / `label_ids` / `baseline` are set for `method="icl"` (`baseline`, `(num_labels,)`
    float64, with `calibrate=True`), `prototypes` `(num_labels, hidden)` for `method="embedding"`.
    """

    labels: list[str]
    layers: tuple
    method: str
    collapse_repeats: bool
    length_normalize: bool
    top_k: int | None
    progress: _Progress
    prefix_ids: list[int] | None = None
    prefix_cache: object = None
    label_ids: list[list[int]] | None = None
    baseline: torch.Tensor | None = None
    prototypes: torch.Tensor | None = None


class AudioFewShotClassificationPipeline(_LLMCodecPipelineBase):
    """
    Few-shot audio classification with a frozen causal LM.

    Prompt (the paper's format): an instruction line listing the labels, then per demonstration
    `###\\nInput: <audio tokens>\\nOutput: <label>\\n` (repeated `n_repeats` times), then the query
    `###\\nInput: <audio tokens>\\nOutput:`; each candidate `" <label>"` is scored by its log-likelihood.
    """

    _call_parameters = (
        "demonstrations", "candidate_labels", "sampling_rate", "method", "calibrate", "n_repeats", "instruction",
        "layers", "collapse_repeats", "length_normalize", "progress", "top_k",
    )
    _empty_inputs_message = "Give at least one query clip (an empty list was given)."

    def __call__(self, inputs, demonstrations=None, *, batch_size=None, num_workers=None, **kwargs):
        """
        Ranks the candidate labels of each query clip.

        Args:
            inputs: one query clip, or several: a list, a generator, a `datasets` column (`dataset["audio"]`) or a
                `KeyDataset(dataset, "audio")`. A clip is a numpy array / torch tensor `(time,)` or
                `(channels, time)` (with `sampling_rate`), a file path (`str` or `pathlib.Path`), the bytes of an
                audio file, a dict `{"array" | "raw", "sampling_rate"}`, or a dict `{"path", "bytes"}` (a
                `datasets.Audio(decode=False)` value).
            demonstrations: list of `(audio, label)` pairs, the audio in any of the query forms.
            candidate_labels: labels to rank (default: the demonstrations' labels, in first-seen order).
            sampling_rate: the rate of audio given as arrays.
            method: `"icl"` (label likelihood after the prompt) or `"embedding"` (LM hidden-state prototypes).
            calibrate: divide label probabilities by those after a content-free query (contextual calibration).
            n_repeats: how many times the demonstrations are repeated in the prompt.
            instruction: start the prompt with a line listing the labels.
            layers: codec layers written into the prompt (default layer 1, as in the paper; with the pipeline's
                `audio_format="text"`, layer 1 only).
            collapse_repeats: write each run of consecutive equal layer-1 words once (`a b b b c c` -> `a b c`), in
                the demonstrations and the queries alike (and in what `method="embedding"` embeds). Needs
                `layers=(0,)`. It helps a codec whose layer 1 holds few, slowly varying words per clip: the prompt
                is shorter and a word held over many codes counts once. Default `None`: `True` for a codec whose
                layer 1 is teacher-computed (`config.semantic_teacher`) and `layers=(0,)`, else `False`.
            length_normalize: score labels by mean (True) or summed (False) token log-probability.
            batch_size: queries per codec and LM pass (default: the pipeline's, 8); also the demonstrations per codec
                pass.
            num_workers: `DataLoader` workers reading the queries (default 0: in this process).
            progress: show a progress bar (default: when there are 16 queries or more).
            top_k: keep only the best k labels.

        Returns:
            For one query a list of `{"label", "score"}` sorted by score (scores sum to 1); for a list (or a
            `datasets` column), one such list per query; for a generator or a `KeyDataset`, an iterator of them.
        """
        return self._call(inputs, batch_size, num_workers, dict(kwargs, demonstrations=demonstrations))

    def _sanitize_parameters(self, demonstrations=None, sampling_rate=None, num_queries=None, encode_batch_size=None,
                             **task):
        """
        Called by `Pipeline.__init__` (with nothing: every argument belongs to a call) and by `Pipeline.__call__`
        with a call's arguments, plus `num_queries` (for the progress bar) and `encode_batch_size` (demonstrations per
        codec pass) from `__call__`. Builds the call's [`ClassificationContext`] (`build_context`).
        """
        if encode_batch_size is None:  # the pipeline's construction (`__init__` refuses call arguments)
            return {}, {}, {}
        context = self.build_context(
            demonstrations, sampling_rate=sampling_rate, num_queries=num_queries, batch_size=encode_batch_size, **task
        )
        return {"sampling_rate": sampling_rate}, {"context": context}, {"context": context}

    @torch.no_grad()
    def build_context(
        self,
        demonstrations,
        candidate_labels=None,
        sampling_rate=None,
        method="icl",
        calibrate=False,
        n_repeats=1,
        instruction=True,
        layers=(0,),
        length_normalize=True,
        top_k=None,
        progress=None,
        num_queries=None,
        batch_size=8,
        collapse_repeats=None,
    ) -> ClassificationContext:
        """
        Checks a call's arguments (before any work), then does the work all its queries share: encodes the
        demonstrations, builds the prompt prefix and runs it once through the LM (its KV cache serves every query),
        scores the content-free query (`calibrate=True`) or builds the class prototypes (`method="embedding"`).

        Arguments as for `__call__`; `num_queries` (`int`, *optional*) sizes the progress bar, `batch_size`
        (`int`) is the number of demonstrations per codec pass.

        Returns:
            [`ClassificationContext`]
        """
        if not demonstrations:
            raise ValueError("Give at least one `(audio, label)` demonstration.")
        _check_labels([l for _, l in demonstrations], "demonstrations", distinct=False)
        labels = list(candidate_labels) if candidate_labels is not None else list(dict.fromkeys(l for _, l in demonstrations))
        _check_labels(labels, "candidate_labels")
        _check_count("n_repeats", n_repeats)
        _check_count("top_k", top_k, allow_none=True)
        if len(labels) < 2:
            raise ValueError(f"Need at least two candidate labels, got {labels}.")
        unknown = {l for _, l in demonstrations} - set(labels)
        if unknown:
            raise ValueError(f"Demonstration labels {sorted(unknown)} are not among candidate_labels {labels}.")
        if method not in ("icl", "embedding"):
            raise ValueError(f"method must be 'icl' or 'embedding', got {method!r}.")
        collapse_repeats = resolve_collapse_repeats(collapse_repeats, self.model.config, layers)
        demo_labels = [l for _, l in demonstrations]
        if method == "embedding":
            missing = [label for label in labels if label not in demo_labels]
            if missing:
                raise ValueError(
                    f"method='embedding' needs at least one demonstration of every label; none for {missing}."
                )

        demo_codes = self.encode_audio([a for a, _ in demonstrations], sampling_rate, batch_size)
        demo_ids = [
            self.codec_processor.codes_to_ids(c, layers=layers, collapse_repeats=collapse_repeats)[0]
            for c in demo_codes
        ]
        context = ClassificationContext(
            labels=labels, layers=layers, method=method, collapse_repeats=collapse_repeats,
            length_normalize=length_normalize, top_k=top_k,
            progress=_Progress(num_queries, progress, "classifying queries"),
        )
        if method == "embedding":
            context.prototypes = self._prototypes(demo_ids, demo_labels, labels, batch_size)
            return context
        context.prefix_ids = self.build_prefix(demo_ids, demo_labels, labels, n_repeats, instruction)
        context.label_ids = self.label_ids(labels)
        self.check_context(
            len(context.prefix_ids) + max(len(l) for l in context.label_ids), "prompt (demonstrations + label)"
        )
        context.prefix_cache, _ = self.prefix_cache(context.prefix_ids)
        if calibrate:
            content_free = Prompt().add_text(self.tokenizer, "N/A").ids
            baseline = self._score_batch(
                context.prefix_cache, len(context.prefix_ids), [self.query_suffix(content_free)], context.label_ids,
                length_normalize,
            )
            context.baseline = torch.from_numpy(baseline.astype(np.float64))[0]
        return context

    def preprocess(self, inputs, sampling_rate=None):
        """One query clip -> the codec feature extractor's `input_values` `(1, 1, samples)` and `padding_mask`
        `(1, samples)` at the codec rate; a batch of them is right-padded by `_collate` and encoded in one pass."""
        return self._features(inputs, sampling_rate)

    def _forward(self, model_inputs, context: ClassificationContext):
        """
        A batch of queries -> `{"scores": (batch, num_labels)}`: one codec encode of the padded batch, then either the
        KV-cached label scoring on top of the call's prefix cache (`_score_batch`: one LM pass for the query
        suffixes, one for the labels), minus the calibration baseline, or cosine similarity with the prototypes.
        """
        codes = self._encode(model_inputs["input_values"], model_inputs["padding_mask"])
        query_ids = [
            self.codec_processor.codes_to_ids(c, layers=context.layers, collapse_repeats=context.collapse_repeats)[0]
            for c in codes
        ]
        if context.method == "embedding":
            return {"scores": self._prototype_scores(query_ids, context.prototypes)}
        longest = max(len(q) for q in query_ids) + 8 + max(len(l) for l in context.label_ids)
        self.check_context(len(context.prefix_ids) + longest, "prompt (demonstrations + query + label)")
        suffixes = [self.query_suffix(q) for q in query_ids]
        scores = self._score_batch(
            context.prefix_cache, len(context.prefix_ids), suffixes, context.label_ids, context.length_normalize
        )
        scores = torch.from_numpy(scores.astype(np.float64))
        if context.baseline is not None:
            scores = scores - context.baseline[None, :]
        return {"scores": scores}

    def postprocess(self, model_outputs, context: ClassificationContext):
        """`{"scores": (1, num_labels)}` -> `[{"label", "score"}]` best first (a softmax over the labels)."""
        context.progress.advance()
        return rank_labels(model_outputs["scores"], context.labels, context.top_k)[0]

    # ---------------------------------------------------------------------------------------------- prompting

    def build_prefix(self, demo_ids, demo_labels, labels, n_repeats=1, instruction=True) -> list[int]:
        """The shared prompt (ids) up to and including the query's `###\\nInput: `."""
        tokenizer = self.tokenizer
        prompt = Prompt().add_ids(self.bos_ids)
        if instruction:
            prompt.add_text(tokenizer, f"Classify each input as one of: {', '.join(labels)}.\n")
        _check_count("n_repeats", n_repeats)
        for _ in range(n_repeats):
            for ids, label in zip(demo_ids, demo_labels):
                prompt.add_text(tokenizer, "###\nInput:").add_ids(ids)
                prompt.add_text(tokenizer, f"\nOutput: {label}\n")
        prompt.add_text(tokenizer, "###\nInput:")
        return prompt.ids

    def query_suffix(self, query_ids) -> list[int]:
        """A query's own part of the prompt: its audio ids then `\\nOutput:`."""
        return Prompt().add_ids(query_ids).add_text(self.tokenizer, "\nOutput:").ids

    def label_ids(self, labels) -> list[list[int]]:
        """Each label as scored: the ids of `" " + label`."""
        ids = [self.tokenizer(" " + l, add_special_tokens=False)["input_ids"] for l in labels]
        if any(len(i) == 0 for i in ids):
            raise ValueError("A candidate label tokenises to nothing.")
        return ids

    @torch.no_grad()
    def prefix_cache(self, prefix_ids):
        """Runs the LM once on the shared prefix -> (cache, logits of its last position)."""
        input_ids = torch.tensor([prefix_ids], device=self.device)
        out = self.language_model(input_ids=input_ids, use_cache=True)
        return out.cache, out.logits[:, -1]

    @torch.no_grad()
    def score_labels(self, prefix_ids, query_ids, labels, length_normalize=True, batch_size=8, progress=None):
        """
        Log-likelihood score of every label for every query, `(num_queries, num_labels)` numpy array.

        The prefix runs once; its KV cache is copied for each batch of queries, which run their suffixes in one
        right-padded pass; then the labels of every query run in one more pass on top of the query caches.
        """
        label_ids = self.label_ids(labels)
        longest = max(len(q) for q in query_ids) + 8 + max(len(l) for l in label_ids)
        self.check_context(len(prefix_ids) + longest, "prompt (demonstrations + query + label)")
        prefix_cache, _ = self.prefix_cache(prefix_ids)
        prefix_len = len(prefix_ids)
        scores = np.zeros((len(query_ids), len(labels)))
        bar = _progress_bar(len(query_ids), progress, "scoring queries")
        for start in range(0, len(query_ids), batch_size):
            suffixes = [self.query_suffix(q) for q in query_ids[start : start + batch_size]]
            scores[start : start + len(suffixes)] = self._score_batch(
                prefix_cache, prefix_len, suffixes, label_ids, length_normalize
            )
            bar.update(len(suffixes))
        bar.close()
        return scores

    @torch.no_grad()
    def score_labels_naive(self, prefix_ids, query_ids, labels, length_normalize=True):
        """
        Reference for `score_labels`: one full forward pass of prefix + query + label for every (query, label)
        pair, no cache. Same output; used to verify the cached path and to measure what the cache saves.
        """
        label_ids = self.label_ids(labels)
        scores = np.zeros((len(query_ids), len(labels)))
        for i, query in enumerate(query_ids):
            context = list(prefix_ids) + self.query_suffix(query)
            for j, ids in enumerate(label_ids):
                logits = self.language_model(input_ids=torch.tensor([context + ids], device=self.device)).logits[0]
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                total = sum(logprobs[len(context) + t - 1, token].item() for t, token in enumerate(ids))
                scores[i, j] = total / len(ids) if length_normalize else total
        return scores

    def _score_batch(self, prefix_cache, prefix_len, suffixes, label_ids, length_normalize):
        device, lm = self.device, self.language_model
        batch, num_labels = len(suffixes), len(label_ids)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # stage 1: query suffixes on top of the prefix cache (right-padded)
        lengths = torch.tensor([len(s) for s in suffixes], device=device)
        width = int(lengths.max())
        input_ids = torch.full((batch, width), pad, device=device)
        for i, s in enumerate(suffixes):
            input_ids[i, : len(s)] = torch.tensor(s, device=device)
        valid = torch.arange(width, device=device)[None, :] < lengths[:, None]
        mask = torch.cat([torch.ones(batch, prefix_len, dtype=torch.long, device=device), valid.long()], dim=1)
        positions = prefix_len + torch.arange(width, device=device)[None, :].expand(batch, -1)
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(batch)
        out = lm(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
        first_logprobs = torch.log_softmax(out.logits[torch.arange(batch), lengths - 1].float(), dim=-1)  # (B, V)
        # stage 2: every label after every query, on the query caches
        cache = out.cache
        cache.batch_repeat_interleave(num_labels)
        label_width = max(len(l) for l in label_ids)
        totals = torch.zeros(batch, num_labels, device=device)
        for j, ids in enumerate(label_ids):
            totals[:, j] = first_logprobs[:, ids[0]]
        if label_width > 1:
            label_input = torch.full((batch * num_labels, label_width - 1), pad, device=device)
            for j, ids in enumerate(label_ids):
                if len(ids) > 1:
                    label_input[j::num_labels, : len(ids) - 1] = torch.tensor(ids[:-1], device=device)
            mask2 = torch.cat(
                [
                    mask.repeat_interleave(num_labels, dim=0),
                    torch.ones(batch * num_labels, label_width - 1, dtype=torch.long, device=device),
                ],
                dim=1,
            )
            start = (prefix_len + lengths).repeat_interleave(num_labels)
            positions2 = start[:, None] + torch.arange(label_width - 1, device=device)[None, :]
            out2 = lm(input_ids=label_input, attention_mask=mask2, position_ids=positions2, cache=cache)
            logprobs = torch.log_softmax(out2.logits.float(), dim=-1)  # (B*L, W-1, V)
            for j, ids in enumerate(label_ids):
                for t in range(1, len(ids)):
                    totals[:, j] += logprobs[j::num_labels, t - 1, ids[t]]
        if length_normalize:
            totals = totals / torch.tensor([len(l) for l in label_ids], device=device, dtype=totals.dtype)[None, :]
        return totals.cpu().numpy()

    # -------------------------------------------------------------------------------------------- embeddings

    @torch.no_grad()
    def embed_ids(self, id_lists, batch_size=8, progress=None) -> torch.Tensor:
        """Mean last-layer hidden state of each id list (the clip's audio tokens alone), `(n, hidden)` float32."""
        embeddings = []
        bar = _progress_bar(len(id_lists), progress, "embedding clips")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for start in range(0, len(id_lists), batch_size):
            group = [self.bos_ids + list(ids) for ids in id_lists[start : start + batch_size]]
            width = max(len(g) for g in group)
            input_ids = torch.full((len(group), width), pad, device=self.device)
            mask = torch.zeros((len(group), width), dtype=torch.long, device=self.device)
            for i, g in enumerate(group):
                input_ids[i, : len(g)] = torch.tensor(g, device=self.device)
                mask[i, : len(g)] = 1
            out = self.language_model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
            hidden = out.hidden_states[-1].float()
            skip = len(self.bos_ids)
            weights = mask.float()
            weights[:, :skip] = 0
            pooled = (hidden * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp_min(1)
            embeddings.append(pooled.cpu())
            bar.update(len(group))
        bar.close()
        return torch.cat(embeddings)

    def _prototypes(self, demo_ids, demo_labels, labels, batch_size=8) -> torch.Tensor:
        """L2-normalised mean embedding of each label's demonstrations, `(num_labels, hidden)` float32."""
        demos = torch.nn.functional.normalize(self.embed_ids(demo_ids, batch_size, False), dim=-1)
        prototypes = torch.stack([demos[[i for i, l in enumerate(demo_labels) if l == label]].mean(0) for label in labels])
        return torch.nn.functional.normalize(prototypes, dim=-1)

    def _prototype_scores(self, query_ids, prototypes) -> torch.Tensor:
        """Cosine similarity of each query's embedding with each prototype at temperature 0.05, `(n, num_labels)`."""
        queries = torch.nn.functional.normalize(self.embed_ids(query_ids, max(1, len(query_ids)), False), dim=-1)
        return queries @ prototypes.t() / 0.05

class CodecTokenLogitsProcessor(LogitsProcessor):
    """
    Lets the LM write only valid codec serialisations (see `LLMCodecProcessor`): whole layer-1 words (a trie over
    their ids), the separator after a whole number of attention windows, then exactly the number of layer-2 and
    layer-3 ids that layer 1 implies (restricted to each layer's ids), then the end-of-sequence token.
    """

    def __init__(self, processor: LLMCodecProcessor, prompt_length: int, max_words: int, eos_token_id: int, vocab_size: int):
        tables = processor.tables()
        self.trie = tables["trie"]
        self.separator = processor.separator_id()
        self.prompt_length = prompt_length
        self.window_words = processor.window_words
        self.max_words = max(self.window_words, max_words // self.window_words * self.window_words)
        self.eos = eos_token_id
        self.vocab_size = vocab_size
        ratios = [processor.vq_strides[0] // s for s in processor.vq_strides]
        self.ratios = ratios[1:]
        self.layer_allowed = []
        for k in range(1, len(processor.vq_strides)):
            mapping = tables["layer_maps"][k]
            allowed = torch.zeros(vocab_size, dtype=torch.bool)
            if mapping is None:
                allowed[: min(vocab_size, processor.codebook_sizes[k])] = True
            else:
                allowed[torch.as_tensor(mapping[0])] = True
            self.layer_allowed.append(allowed)

    def _walk(self, ids: list[int]) -> tuple[int, dict]:
        """Greedy walk of layer-1 ids: a token continues the current word when it can, else starts a new one.
        Returns (completed words before the current one, trie node of the current word; the root if none)."""
        node, words = self.trie, 0
        for token in ids:
            if node is not self.trie and token in node:
                node = node[token]
            else:
                words += node is not self.trie
                node = self.trie[token]
        return words, node

    def allowed_tokens(self, generated: list[int]) -> torch.Tensor | list[int]:
        """Boolean mask (vocab,) or list of ids allowed after `generated` (the ids written so far)."""
        if self.separator in generated:
            cut = generated.index(self.separator)
            words, node = self._walk(generated[:cut])
            words += node is not self.trie
            done = len(generated) - cut - 1
            for ratio, allowed in zip(self.ratios, self.layer_allowed):
                if done < words * ratio:
                    return allowed
                done -= words * ratio
            return [self.eos]
        words, node = self._walk(generated)
        if node is self.trie:
            return [k for k in self.trie if k is not None]
        options = [k for k in node if k is not None]
        if None in node:  # the current word may end here
            total = words + 1
            if total < self.max_words:
                options += [k for k in self.trie if k is not None and k not in options]
            if total % self.window_words == 0:
                options.append(self.separator)
        return options

    def is_complete(self, generated: list[int]) -> bool:
        """Whether `generated` already holds a whole serialisation (every layer filled)."""
        if self.separator not in generated:
            return False
        cut = generated.index(self.separator)
        words, node = self._walk(generated[:cut])
        words += node is not self.trie
        return len(generated) - cut - 1 >= words * sum(self.ratios)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """`input_ids`: (batch, length), `scores`: (batch, vocab) -> scores with disallowed tokens at -inf."""
        mask = torch.ones_like(scores, dtype=torch.bool)
        for row in range(input_ids.shape[0]):
            allowed = self.allowed_tokens(input_ids[row, self.prompt_length :].tolist())
            if torch.is_tensor(allowed):
                mask[row, : allowed.shape[0]] = ~allowed.to(scores.device)
            else:
                mask[row, allowed] = False
        return scores.masked_fill(mask, float("-inf"))


class _SerialisationComplete(StoppingCriteria):
    """Stops generation once every layer of the serialisation is written (codes may equal the EOS id, so EOS
    cannot be the stop signal)."""

    def __init__(self, logits_processor: CodecTokenLogitsProcessor):
        self.logits_processor = logits_processor

    def __call__(self, input_ids, scores, **kwargs):
        start = self.logits_processor.prompt_length
        done = [self.logits_processor.is_complete(row[start:].tolist()) for row in input_ids]
        return torch.tensor(done, device=input_ids.device)




@dataclass
class GenerationContext:
    """
    What every query of one generation call shares, built once per call by `_sanitize_parameters`
    (`AudioFewShotGenerationPipeline.build_context`): the prompt ids up to the query (instruction and encoded
    demonstrations), the longest generation in layer-1 words, and the decoding options.
    """

    prompt_ids: list[int]
    max_words: int
    do_sample: bool
    temperature: float
    top_k: int | None
    seed: int | None
    progress: _Progress = field(repr=False, default=None)


class AudioFewShotGenerationPipeline(_LLMCodecPipelineBase):
    """
    Few-shot audio generation: demonstrations of `(input, output)` pairs, where each side is audio or text; the LM
    continues `###\\nInput: <query>\\nOutput:` with codec tokens (generation serialisation), which are decoded.
    The LM must be the codec's own (`audio_format="ids"`): it writes ids of that vocabulary.
    """

    _call_parameters = (
        "demonstrations", "sampling_rate", "max_audio_seconds", "do_sample", "temperature", "top_k", "instruction",
        "seed", "progress",
    )

    def __init__(self, *args, audio_format="ids", **kwargs):
        if audio_format != "ids":
            raise ValueError(
                "audio-few-shot-generation needs audio_format='ids' with the codec's own LLM: the LM writes codec "
                "ids of that vocabulary (audio_format='text' is for understanding tasks such as classification)."
            )
        super().__init__(*args, audio_format=audio_format, **kwargs)

    def __call__(self, inputs, demonstrations=None, *, batch_size=None, num_workers=None, **kwargs):
        """
        Generates audio for each query.

        Args:
            inputs: one query or several (a list, a generator, a `datasets` column or a `KeyDataset`). A query is
                text (a `str` not ending in .wav/.flac/.ogg/.mp3) or audio in any form the classification pipeline
                takes (array / tensor with `sampling_rate`, file path, file bytes, `{"array", "sampling_rate"}` or
                `{"path", "bytes"}` dict).
            demonstrations: list of `(input, output)` pairs; outputs must be audio.
            sampling_rate: the rate of audio given as arrays.
            max_audio_seconds: longest audio to generate (rounded down to whole attention windows).
            do_sample, temperature, top_k: decoding options (greedy by default).
            instruction: optional first line of the prompt.
            seed: seeds sampling and the decoder noise for reproducible audio (each query starts from this seed).
            batch_size: queries per batch (default: the pipeline's, 8); each query is generated on its own within it.
            num_workers: `DataLoader` workers reading the queries (default 0: in this process).
            progress: show a progress bar (default: when there are 16 queries or more).

        Returns:
            For one query `{"audio": np.ndarray (samples,), "sampling_rate": int, "tokens": list[int]}`; for a list,
            one such dict per query; for a generator or a `KeyDataset`, an iterator of them.
        """
        return self._call(inputs, batch_size, num_workers, dict(kwargs, demonstrations=demonstrations))

    def _is_query(self, value) -> bool:
        return isinstance(value, str) or _is_clip(value)

    def _accepted_queries(self) -> str:
        return "a query is text (a str) or audio: " + super()._accepted_queries()

    def _sanitize_parameters(self, demonstrations=None, sampling_rate=None, num_queries=None, encode_batch_size=None,
                             **task):
        """As for classification: builds the call's [`GenerationContext`] (`build_context`) once per call."""
        if encode_batch_size is None:  # the pipeline's construction (`__init__` refuses call arguments)
            return {}, {}, {}
        context = self.build_context(demonstrations, sampling_rate=sampling_rate, num_queries=num_queries, **task)
        return {"sampling_rate": sampling_rate}, {"context": context}, {"context": context}

    @torch.no_grad()
    def build_context(
        self,
        demonstrations,
        sampling_rate=None,
        max_audio_seconds=2.0,
        do_sample=False,
        temperature=1.0,
        top_k=None,
        instruction=None,
        seed=None,
        progress=None,
        num_queries=None,
    ) -> GenerationContext:
        """
        Checks a call's arguments (before any work), then encodes the demonstrations into the prompt every query
        continues. Arguments as for `__call__`; `num_queries` (`int`, *optional*) sizes the progress bar.

        Returns:
            [`GenerationContext`]
        """
        if not demonstrations:
            raise ValueError("Give at least one `(input, output)` demonstration.")
        if isinstance(max_audio_seconds, bool) or not isinstance(max_audio_seconds, (int, float)) or not (
            math.isfinite(max_audio_seconds) and max_audio_seconds > 0
        ):
            raise ValueError(f"max_audio_seconds must be a positive number of seconds, got {max_audio_seconds!r}.")
        if any(self._is_text(target) for _, target in demonstrations):
            raise ValueError("Demonstration outputs must be audio (this pipeline generates audio).")
        prompt = Prompt().add_ids(self.bos_ids)
        if instruction:
            prompt.add_text(self.tokenizer, instruction.rstrip("\n") + "\n")
        for source, target in demonstrations:
            prompt.add_text(self.tokenizer, "###\nInput:").add_ids(self._side_ids(source, sampling_rate, "understanding"))
            target_ids = self._side_ids(target, sampling_rate, "generation")
            prompt.add_text(self.tokenizer, "\nOutput:").add_ids(target_ids).add_text(self.tokenizer, "\n")
        config = self.model.config
        return GenerationContext(
            prompt_ids=prompt.ids, max_words=int(max_audio_seconds * config.frame_rate / config.vq_strides[0]),
            do_sample=do_sample, temperature=temperature, top_k=top_k, seed=seed,
            progress=_Progress(num_queries, progress, "generating"),
        )

    def preprocess(self, inputs, sampling_rate=None):
        """One query (text or audio) -> `{"query_ids": [ids]}`: its part of the prompt, `###\\nInput: <query>\\nOutput:`
        (a list of one id list; a batch concatenates them)."""
        ids = Prompt().add_text(self.tokenizer, "###\nInput:").ids
        ids += self._side_ids(inputs, sampling_rate, "understanding")
        ids += Prompt().add_text(self.tokenizer, "\nOutput:").ids
        return {"query_ids": [ids]}

    def _forward(self, model_inputs, context: GenerationContext):
        """
        A batch of queries -> each generated on its own after the shared prompt (a seeded query gives the same audio
        in any batch), returned right-padded: `audio` `(batch, samples)` float32 with `audio_length` `(batch,)`, and
        `tokens` `(batch, n)` with `tokens_length` `(batch,)`.
        """
        results = [
            self._generate(
                context.prompt_ids + ids, context.max_words, context.do_sample, context.temperature, context.top_k,
                context.seed,
            )
            for ids in model_inputs["query_ids"]
        ]
        audio = torch.zeros(len(results), max(len(r["audio"]) for r in results), dtype=torch.float32)
        tokens = torch.zeros(len(results), max(len(r["tokens"]) for r in results), dtype=torch.long)
        for i, result in enumerate(results):
            audio[i, : len(result["audio"])] = torch.from_numpy(result["audio"])
            tokens[i, : len(result["tokens"])] = torch.tensor(result["tokens"], dtype=torch.long)
        return {
            "audio": audio,
            "audio_length": torch.tensor([len(r["audio"]) for r in results]),
            "tokens": tokens,
            "tokens_length": torch.tensor([len(r["tokens"]) for r in results]),
        }

    def postprocess(self, model_outputs, context: GenerationContext):
        """One query's padded outputs -> `{"audio": (samples,) float32, "sampling_rate", "tokens": list[int]}`."""
        context.progress.advance()
        audio = model_outputs["audio"][0, : int(model_outputs["audio_length"][0])]
        tokens = model_outputs["tokens"][0, : int(model_outputs["tokens_length"][0])]
        return {"audio": audio.numpy(), "sampling_rate": self.model.config.sample_rate, "tokens": tokens.tolist()}

    @staticmethod
    def _is_text(side) -> bool:
        return isinstance(side, str) and not side.lower().endswith(AUDIO_FILE_SUFFIXES)

    def _side_ids(self, side, sampling_rate, format):
        if self._is_text(side):
            return Prompt().add_text(self.tokenizer, " " + side).ids
        codes = self.encode_audio([side], sampling_rate)[0]
        return self.codec_processor.codes_to_ids(codes, format=format)[0]

    @torch.no_grad()
    def _generate(self, prompt_ids, max_words, do_sample, temperature, top_k, seed):
        processor = self.codec_processor
        vocab = self.language_model.get_output_embeddings().weight.shape[0]
        eos = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else processor.separator_id()
        if eos == processor.separator_id():
            raise ValueError("The separator token is the LM's end-of-sequence token; pass another `separator=`.")
        logits_processor = CodecTokenLogitsProcessor(processor, len(prompt_ids), max_words, eos, vocab)
        ratios = sum(processor.vq_strides[0] // s for s in processor.vq_strides[1:])
        longest_word = max(len(w) for w in processor.tables()["word_ids"])
        max_new = max_words * longest_word + 1 + max_words * ratios + 1
        self.check_context(len(prompt_ids) + max_new, "prompt plus the longest generation")
        if seed is not None:
            torch.manual_seed(seed)
        generation_config = copy.deepcopy(self.language_model.generation_config)
        generation_config.eos_token_id = []  # codes may equal EOS: stop on a complete serialisation instead (None
        # would be filled in from the model defaults)
        generation_config.pad_token_id = eos
        generation_config.max_new_tokens = max_new
        generation_config.do_sample = do_sample
        if do_sample:
            generation_config.temperature = temperature
            generation_config.top_k = top_k
        output = self.language_model.generate(
            torch.tensor([prompt_ids], device=self.device),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long, device=self.device),
            generation_config=generation_config,
            logits_processor=LogitsProcessorList([logits_processor]),
            stopping_criteria=StoppingCriteriaList([_SerialisationComplete(logits_processor)]),
        )
        tokens = output[0, len(prompt_ids) :].tolist()
        codes = processor.ids_to_codes(tokens, repair=True)
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        with self._lock:
            audio = self.model.decode(tuple(c.to(self.device) for c in codes), generator=generator).audio_values
        return {"audio": audio[0, 0].float().cpu().numpy(), "sampling_rate": self.model.config.sample_rate, "tokens": tokens}




PIPELINE_TASKS = {
    "audio-few-shot-classification": AudioFewShotClassificationPipeline,
    "audio-few-shot-generation": AudioFewShotGenerationPipeline,
}
"""The tasks of this module and their pipeline classes."""


def custom_pipelines() -> dict:
    """
    The `custom_pipelines` entry of a saved codec's `config.json` (written by `LLMCodecModel.save_pretrained` and
    `Pipeline.save_pretrained`): for each task, its class in this module (saved next to the weights) and `AutoModel`,
    so that `pipeline(task, model=folder, trust_remote_code=True)` works where `llm_codec` is not installed.

    Returns:
        `dict[str, dict]`: `{task: {"impl": "pipeline_llm_codec.<Class>", "pt": ["AutoModel"], "type": "audio"}}`.
    """
    module = __name__.split(".")[-1]
    return {
        task: {"impl": f"{module}.{cls.__name__}", "pt": ["AutoModel"], "type": "audio"}
        for task, cls in PIPELINE_TASKS.items()
    }


def register_pipelines():
    """
    Registers both tasks with transformers' pipeline registry (done on `import llm_codec`), with `AutoModel` as their
    model class (resolvable by name in any process, unlike `LLMCodecModel`, so saved pipelines load as remote code).
    """
    for task, pipeline_class in PIPELINE_TASKS.items():
        PIPELINE_REGISTRY.register_pipeline(task, pipeline_class=pipeline_class, pt_model=AutoModel, type="audio")


__all__ = [
    "AudioFewShotClassificationPipeline",
    "AudioFewShotGenerationPipeline",
    "ClassificationContext",
    "CodecTokenLogitsProcessor",
    "GenerationContext",
    "custom_pipelines",
    "read_audio_input",
    "register_pipelines",
]
