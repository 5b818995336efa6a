"""Few-shot audio pipelines: a frozen causal LM learns an audio task from demonstrations in its prompt.

* `audio-few-shot-classification`: scores every candidate label's log-likelihood after the prompt, reusing the KV
  cache of the shared prompt for every query and label; or compares LM hidden-state embeddings of the clips with
  per-class prototypes (`method="embedding"`).
* `audio-few-shot-generation`: the LM writes codec tokens under a logits processor that only allows what is valid
  at each position of the generation serialisation; the tokens are decoded to a waveform.

Both are created with `pipeline(TASK, model=codec, language_model=lm, tokenizer=lm_tokenizer)`. The LM is the one
whose vocabulary the codec speaks (checked), or, for classification with `audio_format="text"`, any causal LM: layer 1
is then written as its English words, tokenised by that LM's own tokenizer.
"""

import copy
import math
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    Pipeline,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .processing_llm_codec import LLMCodecProcessor


def _adds_bos_token(tokenizer) -> bool:
    from .language_model import adds_bos_token

    return adds_bos_token(tokenizer)


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


class _LLMCodecPipelineBase(Pipeline):
    """Shared set-up: a codec (`self.model`), a causal LM and its tokenizer, and the processor binding them."""

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(
        self,
        model,
        language_model=None,
        tokenizer=None,
        allow_vocabulary_mismatch=False,
        dtype=None,
        separator="\n",
        audio_format="ids",
        **kwargs,
    ):
        from .language_model import load_language_model

        if language_model is None:
            raise ValueError(
                "Give the causal LM to read the audio tokens: pipeline(task, model=codec, language_model=LM or path, "
                "tokenizer=its tokenizer). `llm_codec.language_model.load_language_model()` gives the offline default."
            )
        if isinstance(language_model, str):
            language_model, loaded_tokenizer = load_language_model(language_model)
            tokenizer = tokenizer or loaded_tokenizer
        if isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        if tokenizer is None:
            raise ValueError("Give the LM's `tokenizer` (an object or a local path).")
        kwargs.pop("feature_extractor", None)
        super().__init__(model=model, tokenizer=tokenizer, **kwargs)
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
        self.bos_ids = [tokenizer.bos_token_id] if _adds_bos_token(tokenizer) else []
        self._lock = threading.Lock()  # the codec's projection cache is shared; encode under a lock

    # Pipeline's abstract hooks: these pipelines run their own batched loop in __call__.
    def _sanitize_parameters(self, **kwargs):
        return {}, {}, {}

    def preprocess(self, inputs, **kwargs):
        return inputs

    def _forward(self, model_inputs, **kwargs):
        return model_inputs

    def postprocess(self, model_outputs, **kwargs):
        return model_outputs

    # -------------------------------------------------------------------------------------------------- audio

    def _as_clip(self, audio, sampling_rate):
        """Accepts an array/tensor (with `sampling_rate`), a file path, or a dict {"array"|"raw", "sampling_rate"}."""
        if isinstance(audio, str):
            from .audio_io import load_audio

            return load_audio(audio)
        if isinstance(audio, dict):
            array = audio.get("array", audio.get("raw"))
            return np.asarray(array), audio.get("sampling_rate", sampling_rate)
        if sampling_rate is None:
            raise ValueError(
                "Audio given as an array needs `sampling_rate=` (or pass file paths or {'array', 'sampling_rate'} dicts)."
            )
        return audio, sampling_rate

    def encode_audio(self, clips, sampling_rate=None, batch_size=8) -> list[tuple]:
        """Clips -> per clip, its codes as a tuple of `(1, T_k)` LongTensors (batched through the codec)."""
        results = []
        for start in range(0, len(clips), batch_size):
            group = [self._as_clip(c, sampling_rate) for c in clips[start : start + batch_size]]
            rates = {rate for _, rate in group}
            arrays = [a for a, _ in group]
            if len(rates) > 1:  # resample one by one, then batch at the codec rate
                arrays = [
                    self.codec_processor.feature_extractor(a, sampling_rate=r)["input_values"][0, 0] for a, r in group
                ]
                rates = {self.model.config.sample_rate}
            inputs = self.codec_processor.feature_extractor(arrays, sampling_rate=rates.pop(), return_tensors="pt")
            with self._lock, torch.no_grad():
                encoded = self.model.encode(
                    inputs["input_values"].to(self.device), padding_mask=inputs["padding_mask"].to(self.device)
                )
            for i in range(len(arrays)):
                lengths = encoded.audio_codes_lengths[i]
                results.append(tuple(c[i : i + 1, : int(n)].cpu() for c, n in zip(encoded.audio_codes, lengths)))
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

    def _progress(self, total, enabled, description):
        from tqdm.auto import tqdm

        if enabled is None:
            enabled = total >= 16
        return tqdm(total=total, desc=description, disable=not enabled)


class AudioFewShotClassificationPipeline(_LLMCodecPipelineBase):
    """
    Few-shot audio classification with a frozen causal LM.

    Prompt (the paper's format): an instruction line listing the labels, then per demonstration
    `###\\nInput: <audio tokens>\\nOutput: <label>\\n` (repeated `n_repeats` times), then the query
    `###\\nInput: <audio tokens>\\nOutput:`; each candidate `" <label>"` is scored by its log-likelihood.
    """

    def __call__(
        self,
        inputs,
        demonstrations,
        candidate_labels=None,
        sampling_rate=None,
        method="icl",
        calibrate=False,
        n_repeats=1,
        instruction=True,
        layers=(0,),
        length_normalize=True,
        batch_size=8,
        progress=None,
        top_k=None,
    ):
        """
        Args:
            inputs: one query clip or a list (arrays with `sampling_rate`, file paths, or {"array", "sampling_rate"}).
            demonstrations: list of `(audio, label)` pairs.
            candidate_labels: labels to rank (default: the demonstrations' labels, in first-seen order).
            method: `"icl"` (label likelihood after the prompt) or `"embedding"` (LM hidden-state prototypes).
            calibrate: divide label probabilities by those after a content-free query (contextual calibration).
            n_repeats: how many times the demonstrations are repeated in the prompt.
            instruction: start the prompt with a line listing the labels.
            layers: codec layers written into the prompt (default layer 1, as in the paper; with the pipeline's
                `audio_format="text"`, layer 1 only).
            length_normalize: score labels by mean (True) or summed (False) token log-probability.
            batch_size: queries per LM forward pass.
            progress: show a progress bar (default: when there are 16 queries or more).
            top_k: keep only the best k labels.

        Returns:
            For one query a list of `{"label", "score"}` sorted by score (scores sum to 1); for a list, one such list
            per query.
        """
        single = not isinstance(inputs, (list, tuple))
        queries = [inputs] if single else list(inputs)
        if not queries:
            raise ValueError("Give at least one query clip (an empty list was given).")
        if not demonstrations:
            raise ValueError("Give at least one `(audio, label)` demonstration.")
        _check_labels([l for _, l in demonstrations], "demonstrations", distinct=False)
        labels = list(candidate_labels) if candidate_labels is not None else list(dict.fromkeys(l for _, l in demonstrations))
        _check_labels(labels, "candidate_labels")
        _check_count("n_repeats", n_repeats)
        _check_count("batch_size", batch_size)
        _check_count("top_k", top_k, allow_none=True)
        if len(labels) < 2:
            raise ValueError(f"Need at least two candidate labels, got {labels}.")
        unknown = {l for _, l in demonstrations} - set(labels)
        if unknown:
            raise ValueError(f"Demonstration labels {sorted(unknown)} are not among candidate_labels {labels}.")
        if method not in ("icl", "embedding"):
            raise ValueError(f"method must be 'icl' or 'embedding', got {method!r}.")

        demo_codes = self.encode_audio([a for a, _ in demonstrations], sampling_rate, batch_size)
        query_codes = self.encode_audio(queries, sampling_rate, batch_size)
        to_ids = lambda codes: self.codec_processor.codes_to_ids(codes, layers=layers)[0]  # noqa: E731
        demo_ids = [to_ids(c) for c in demo_codes]
        query_ids = [to_ids(c) for c in query_codes]

        if method == "embedding":
            scores = self._embedding_scores(demo_ids, [l for _, l in demonstrations], query_ids, labels, batch_size, progress)
        else:
            prefix = self.build_prefix(demo_ids, [l for _, l in demonstrations], labels, n_repeats, instruction)
            scores = self.score_labels(prefix, query_ids, labels, length_normalize, batch_size, progress)
            if calibrate:
                content_free = Prompt().add_text(self.tokenizer, "N/A").ids
                baseline = self.score_labels(prefix, [content_free], labels, length_normalize, 1, False)[0]
                scores = scores - baseline[None, :]
        results = rank_labels(scores, labels, top_k)
        return results[0] if single else results

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
        bar = self._progress(len(query_ids), progress, "scoring queries")
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
        bar = self._progress(len(id_lists), progress, "embedding clips")
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

    def _embedding_scores(self, demo_ids, demo_labels, query_ids, labels, batch_size, progress):
        missing = [label for label in labels if label not in demo_labels]
        if missing:
            raise ValueError(f"method='embedding' needs at least one demonstration of every label; none for {missing}.")
        demos = torch.nn.functional.normalize(self.embed_ids(demo_ids, batch_size, False), dim=-1)
        prototypes = torch.stack([demos[[i for i, l in enumerate(demo_labels) if l == label]].mean(0) for label in labels])
        prototypes = torch.nn.functional.normalize(prototypes, dim=-1)
        queries = torch.nn.functional.normalize(self.embed_ids(query_ids, batch_size, progress), dim=-1)
        return (queries @ prototypes.t() / 0.05).numpy()  # cosine similarity at temperature 0.05


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


class AudioFewShotGenerationPipeline(_LLMCodecPipelineBase):
    """
    Few-shot audio generation: demonstrations of `(input, output)` pairs, where each side is audio or text; the LM
    continues `###\\nInput: <query>\\nOutput:` with codec tokens (generation serialisation), which are decoded.
    The LM must be the codec's own (`audio_format="ids"`): it writes ids of that vocabulary.
    """

    def __init__(self, *args, audio_format="ids", **kwargs):
        if audio_format != "ids":
            raise ValueError(
                "audio-few-shot-generation needs audio_format='ids' with the codec's own LLM: the LM writes codec "
                "ids of that vocabulary (audio_format='text' is for understanding tasks such as classification)."
            )
        super().__init__(*args, audio_format=audio_format, **kwargs)

    def __call__(
        self,
        inputs,
        demonstrations,
        sampling_rate=None,
        max_audio_seconds=2.0,
        do_sample=False,
        temperature=1.0,
        top_k=None,
        instruction=None,
        seed=None,
        progress=None,
    ):
        """
        Args:
            inputs: a query (text string, or audio as array with `sampling_rate`, path, or dict) or a list of them.
            demonstrations: list of `(input, output)` pairs; outputs must be audio.
            max_audio_seconds: longest audio to generate (rounded down to whole attention windows).
            do_sample, temperature, top_k: decoding options (greedy by default).
            instruction: optional first line of the prompt.
            seed: seeds sampling and the decoder noise for reproducible audio.

        Returns:
            For one query `{"audio": np.ndarray (samples,), "sampling_rate": int, "tokens": list[int]}`; for a list,
            one such dict per query.
        """
        single = not isinstance(inputs, (list, tuple))
        queries = [inputs] if single else list(inputs)
        if not queries:
            raise ValueError("Give at least one query (an empty list was given).")
        if not demonstrations:
            raise ValueError("Give at least one `(input, output)` demonstration.")
        if isinstance(max_audio_seconds, bool) or not isinstance(max_audio_seconds, (int, float)) or not (
            math.isfinite(max_audio_seconds) and max_audio_seconds > 0
        ):
            raise ValueError(f"max_audio_seconds must be a positive number of seconds, got {max_audio_seconds!r}.")
        prompt = Prompt().add_ids(self.bos_ids)
        if instruction:
            prompt.add_text(self.tokenizer, instruction.rstrip("\n") + "\n")
        for source, target in demonstrations:
            prompt.add_text(self.tokenizer, "###\nInput:").add_ids(self._side_ids(source, sampling_rate, "understanding"))
            target_ids = self._side_ids(target, sampling_rate, "generation")
            if isinstance(target, str):
                raise ValueError("Demonstration outputs must be audio (this pipeline generates audio).")
            prompt.add_text(self.tokenizer, "\nOutput:").add_ids(target_ids).add_text(self.tokenizer, "\n")
        config = self.model.config
        max_words = int(max_audio_seconds * config.frame_rate / config.vq_strides[0])
        results = []
        bar = self._progress(len(queries), progress, "generating")
        for query in queries:
            ids = list(prompt.ids)
            ids += Prompt().add_text(self.tokenizer, "###\nInput:").ids
            ids += self._side_ids(query, sampling_rate, "understanding")
            ids += Prompt().add_text(self.tokenizer, "\nOutput:").ids
            results.append(self._generate(ids, max_words, do_sample, temperature, top_k, seed))
            bar.update(1)
        bar.close()
        return results[0] if single else results

    def _side_ids(self, side, sampling_rate, format):
        if isinstance(side, str) and not side.endswith((".wav", ".flac", ".ogg", ".mp3")):
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


def register_pipelines():
    """Registers both tasks with transformers' pipeline registry (done on `import llm_codec`)."""
    from .modeling_llm_codec import LLMCodecModel

    PIPELINE_REGISTRY.register_pipeline(
        "audio-few-shot-classification", pipeline_class=AudioFewShotClassificationPipeline, pt_model=LLMCodecModel, type="audio"
    )
    PIPELINE_REGISTRY.register_pipeline(
        "audio-few-shot-generation", pipeline_class=AudioFewShotGenerationPipeline, pt_model=LLMCodecModel, type="audio"
    )


__all__ = [
    "AudioFewShotClassificationPipeline",
    "AudioFewShotGenerationPipeline",
    "CodecTokenLogitsProcessor",
    "register_pipelines",
]
