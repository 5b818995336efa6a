"""Hub model card (`README.md`) written next to every saved LLM-Codec."""

import json
import math
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .language_model import (
    CACHE_MARKER,
    DEFAULT_LM_CACHE_NAME,
    DEFAULT_LM_NAME,
    OFFLINE_LANGUAGE_MODELS,
    find_offline_language_model,
)


PAPER_URL = "https://arxiv.org/abs/2406.10056"
"""UniAudio 1.5 (NeurIPS 2024), the paper that introduced LLM-Codec."""

CITATION = """
```bibtex
@inproceedings{yang2024uniaudio15,
  title     = {UniAudio 1.5: Large Language Model-driven Audio Codec is A Few-shot Audio Task Learner},
  author    = {Yang, Dongchao and Guo, Haohan and Wang, Yuanyuan and Huang, Rongjie and Li, Xiang and Tan, Xu and
               Wu, Xixin and Meng, Helen},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2024},
  eprint    = {2406.10056},
  archivePrefix = {arXiv},
  url       = {https://arxiv.org/abs/2406.10056}
}
```
"""

DEFAULT_USAGE = """
## Usage

```python
import llm_codec  # registers the classes (or pass trust_remote_code=True without the package)
from transformers import AutoModel, AutoFeatureExtractor

model = AutoModel.from_pretrained("path/to/this/folder")
features = AutoFeatureExtractor.from_pretrained("path/to/this/folder")   # AutoProcessor gives the same here
inputs = features(audio, sampling_rate=sr, return_tensors="pt")
codes = model.encode(**inputs).audio_codes          # one LongTensor per layer
audio = model.decode(codes).audio_values            # (batch, 1, samples)
```
"""

# `llm-codec evaluate codec` results.json keys -> (Hub metric id, pretty name)
CODEC_METRICS = {
    "pesq_wb": ("pesq", "PESQ-WB"),
    "stoi": ("stoi", "STOI"),
    "mel_distance": ("mel_distance", "mel distance (lower is better)"),
    "si_sdr": ("si_sdr", "SI-SDR (dB)"),
}


def hub_model_id(name_or_path) -> str | None:
    """
    The Hugging Face Hub id of the language model a codec's codebooks came from (`config.llm_name_or_path`), for the
    `base_model` of its model card; `None` when it is unknown. A local path never comes back.

    - a registered offline LM's name or alias (`llm_codec.language_model.OFFLINE_LANGUAGE_MODELS`, e.g.
      `"qwen2.5-coder-0.5b"`) -> its Hub id;
    - a local folder written by llm_codec's LM cache (its `llm_codec_cache.json` records the Hub id, or its folder name
      is a cache name such as `smollm2-135m-instruct`) -> that Hub id;
    - anything else shaped like a Hub id (`owner/name`, not an existing folder) -> itself; other paths -> `None`.
    """
    if not name_or_path:
        return None
    text = str(name_or_path).strip()
    entry = find_offline_language_model(text)
    if entry is not None:
        return entry.name
    path = Path(text).expanduser()
    marker = path / CACHE_MARKER
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text()).get("name_or_path")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if recorded and recorded != text:
            return hub_model_id(recorded)
    cache_names = {DEFAULT_LM_CACHE_NAME: DEFAULT_LM_NAME}
    cache_names.update({e.cache_name: e.name for e in OFFLINE_LANGUAGE_MODELS.values()})
    if path.name in cache_names:
        return cache_names[path.name]
    if path.is_dir() or path.is_absolute() or text.startswith((".", "~")) or "\\" in text or text.count("/") != 1:
        return None
    try:
        validate_repo_id(text)
    except HFValidationError:
        return None
    return text


def codec_eval_results(results: dict, dataset_name: str, dataset_type: str = "custom",
                       dataset_split: str | None = None, system: str = "llm-codec") -> list[EvalResult]:
    """
    The `model-index` entries (`huggingface_hub.EvalResult`, task `audio-to-audio`) of one system's mean scores in
    the `results.json` written by `llm-codec evaluate codec` (`results`: that file's content).

    Args:
        results (`dict`): the parsed `results.json`.
        dataset_name (`str`): a readable name of the evaluation data, e.g. "held-out speech (100 clips)".
        dataset_type (`str`): its Hub dataset id, or a custom identifier when it is not on the Hub.
        dataset_split (`str`, *optional*): the split evaluated.
        system (`str`): the row of `results["systems"]` to report (default: the codec itself, not a baseline).
    """
    rows = [row for row in results.get("systems", []) if row.get("system") == system]
    if not rows:
        raise ValueError(f"No system {system!r} in these results (have {[r.get('system') for r in results.get('systems', [])]}).")
    means = rows[0].get("means", {})
    entries = []
    for key, (metric_type, metric_name) in CODEC_METRICS.items():
        value = means.get(key)
        if value is None or not math.isfinite(value):
            continue
        entries.append(EvalResult(task_type="audio-to-audio", task_name="Audio codec (reconstruction)",
                                  dataset_type=dataset_type, dataset_name=dataset_name, dataset_split=dataset_split,
                                  metric_type=metric_type, metric_name=metric_name, metric_value=round(float(value), 4)))
    return entries


def build_model_card(
    config,
    extra_sections: dict[str, str] | None = None,
    usage: str | None = None,
    *,
    model_name: str | None = None,
    eval_results: list[EvalResult] | None = None,
    datasets: list[str] | None = None,
) -> ModelCard:
    """
    A model card stating the LLM vocabulary of the codebooks, token rates, bitrate and layers of `config`
    (an `LLMCodecConfig`), with a link to the paper and its BibTeX citation.

    Args:
        config (`LLMCodecConfig`): the codec's configuration.
        extra_sections (`dict[str, str]`, *optional*): heading -> Markdown (data, training, metrics, ...).
        usage (`str`, *optional*): replaces the generic "Usage" section (for folders that do not load with
            `from_pretrained` alone).
        model_name (`str`, *optional*): the name in the card's `model-index` (default: "LLM-Codec (<LM> vocabulary)").
        eval_results (`list[huggingface_hub.EvalResult]`, *optional*): measured metrics for the `model-index` (see
            `codec_eval_results`); nothing is written when not given.
        datasets (`list[str]`, *optional*): Hub ids of the training data sets, when they are on the Hub.

    The metadata's `base_model` is the Hub id of the LM whose vocabulary the codebooks hold (`hub_model_id`), and is
    left out when that is not known: a local path never goes into the metadata.
    """
    base_model = hub_model_id(config.llm_name_or_path)
    llm = base_model or config.llm_name_or_path
    name = model_name or f"LLM-Codec ({llm or 'unknown'} vocabulary)"
    data = ModelCardData(
        model_name=name if eval_results else None,
        library_name="transformers",
        license=getattr(config, "license", None) or "apache-2.0",
        tags=["audio", "audio-codec", "llm-codec", "uniaudio-1.5", "trust-remote-code", "arxiv:2406.10056"],
        pipeline_tag="audio-to-audio",
        base_model=base_model,
        datasets=list(datasets) if datasets else None,
        eval_results=list(eval_results) if eval_results else None,
    )
    rows = []
    for k, (stride, size, rate) in enumerate(zip(config.vq_strides, config.codebook_sizes, config.tokens_per_second)):
        if k == 0 and config.layer1_words is not None:
            kind = f"{len(config.layer1_words)} whole words (mean of their sub-word embeddings)"
            if config.semantic_teacher and config.semantic_groups:
                kind += (f"; the frozen {config.semantic_teacher} teacher chooses one of {config.semantic_clusters} "
                         "groups of words and the latent the word in it (an LM reads the group's head word)")
            elif config.semantic_teacher:
                kind += (f"; the code is chosen by the frozen {config.semantic_teacher} teacher, one of "
                         f"{config.semantic_clusters} words")
        else:
            ids = (config.layer_token_ids or [None] * len(config.vq_strides))[k]
            kind = "LLM sub-word tokens" + (" (a subset, mapped to LLM ids)" if ids is not None else " (code = token id)")
        rows.append(f"| {k + 1} | {stride} | {size} | {rate:.2f} | {math.log2(size):.2f} | {kind} |")
    usage_section = "## Usage\n\n" + usage.strip() if usage is not None else DEFAULT_USAGE.strip()
    if llm:
        details = [f"size {config.llm_vocab_size}" if config.llm_vocab_size is not None else None,
                   f"fingerprint `{config.llm_vocab_fingerprint}`" if config.llm_vocab_fingerprint else None]
        details = ", ".join(d for d in details if d)
        vocabulary = f"`{llm}`" + (f" ({details})" if details else "")
    else:
        vocabulary = "not recorded (random codebooks, or built without naming the LM)"
    title = f"LLM-Codec ({llm} vocabulary)" if llm else "LLM-Codec"
    body = f"""
# {title}

An audio codec whose tokens are tokens of a language model's vocabulary: LLM-Codec, from the paper
[UniAudio 1.5: Large Language Model-driven Audio Codec is A Few-shot Audio Task Learner]({PAPER_URL}).
Audio at {config.sample_rate} Hz becomes {len(config.vq_strides)} code sequences that a frozen causal LM can read and
write as ordinary words and sub-words, so it can learn audio tasks from a few demonstrations.

- LLM vocabulary of the codebooks: {vocabulary}
- Hop: {config.hop_length} samples, {config.frame_rate:.2f} latent frames/s
- Tokens per second (all layers): {sum(config.tokens_per_second):.2f}
- Bitrate: {config.bitrate:.1f} bit/s

| layer | pool stride | codebook size | tokens/s | bits/token | entries |
| --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

{usage_section}
"""
    for heading, text in (extra_sections or {}).items():
        body += f"\n## {heading}\n\n{text.strip()}\n"
    body += f"\n## Citation\n\nLLM-Codec was introduced in UniAudio 1.5 ([arXiv:2406.10056]({PAPER_URL})):\n{CITATION}"
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


__all__ = ["CITATION", "PAPER_URL", "build_model_card", "codec_eval_results", "hub_model_id"]
