"""Hub model card (`README.md`) written next to every saved LLM-Codec."""

import math

from huggingface_hub import ModelCard, ModelCardData


DEFAULT_USAGE = """
## Usage

```python
import llm_codec  # registers the classes (or pass trust_remote_code=True without the package)
from transformers import AutoModel, AutoFeatureExtractor

model = AutoModel.from_pretrained("path/to/this/folder")
features = AutoFeatureExtractor.from_pretrained("path/to/this/folder")
inputs = features(audio, sampling_rate=sr, return_tensors="pt")
codes = model.encode(**inputs).audio_codes          # one LongTensor per layer
audio = model.decode(codes).audio_values            # (batch, 1, samples)
```
"""


def build_model_card(config, extra_sections: dict[str, str] | None = None, usage: str | None = None) -> ModelCard:
    """
    A model card stating the LLM vocabulary of the codebooks, token rates, bitrate and layers of `config`
    (an `LLMCodecConfig`). `extra_sections` maps a heading to Markdown (data, training, metrics, ...); `usage`
    replaces the generic "Usage" section (for folders that do not load with `from_pretrained` alone).
    """
    llm = config.llm_name_or_path or "unknown (random or unrecorded codebooks)"
    data = ModelCardData(
        library_name="transformers",
        license=getattr(config, "license", None) or "apache-2.0",
        tags=["audio", "audio-codec", "llm-codec", "uniaudio-1.5", "trust-remote-code"],
        pipeline_tag="audio-to-audio",
        base_model=config.llm_name_or_path if config.llm_name_or_path and "/" in config.llm_name_or_path else None,
    )
    rows = []
    for k, (stride, size, rate) in enumerate(zip(config.vq_strides, config.codebook_sizes, config.tokens_per_second)):
        if k == 0 and config.layer1_words is not None:
            kind = f"{len(config.layer1_words)} whole words (mean of their sub-word embeddings)"
        else:
            ids = (config.layer_token_ids or [None] * len(config.vq_strides))[k]
            kind = "LLM sub-word tokens" + (" (a subset, mapped to LLM ids)" if ids is not None else " (code = token id)")
        rows.append(f"| {k + 1} | {stride} | {size} | {rate:.2f} | {math.log2(size):.2f} | {kind} |")
    usage_section = "## Usage\n\n" + usage.strip() if usage is not None else DEFAULT_USAGE.strip()
    body = f"""
# LLM-Codec ({llm} vocabulary)

An audio codec whose tokens are tokens of a language model's vocabulary (LLM-Codec, from the UniAudio 1.5
paper). Audio at {config.sample_rate} Hz becomes {len(config.vq_strides)} code sequences that a frozen causal LM
can read and write as ordinary words and sub-words, so it can learn audio tasks from a few demonstrations.

- LLM vocabulary of the codebooks: `{llm}` (size {config.llm_vocab_size}, fingerprint `{config.llm_vocab_fingerprint}`)
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
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
