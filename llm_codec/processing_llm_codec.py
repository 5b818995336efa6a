"""Processor pairing the LLM-Codec feature extractor with the tokenizer of the LLM whose vocabulary the codes use."""

from transformers import ProcessorMixin
from transformers.feature_extraction_utils import BatchFeature


class LLMCodecProcessor(ProcessorMixin):
    """
    Wraps an [`LLMCodecFeatureExtractor`] (audio -> `input_values`, `padding_mask`) and, optionally, the LLM's
    tokenizer (text -> `input_ids`).

    Args:
        feature_extractor (`LLMCodecFeatureExtractor`): turns raw audio into model inputs.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): the tokenizer of the LLM the codebooks came from.
    """

    def __init__(self, feature_extractor, tokenizer=None):
        super().__init__(feature_extractor, tokenizer)

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
            if self.tokenizer is None:
                raise ValueError("This processor has no tokenizer: build it with the LLM's tokenizer to encode text.")
            outputs.update(self.tokenizer(text, return_tensors=return_tensors))
        return BatchFeature(outputs, tensor_type=return_tensors)


__all__ = ["LLMCodecProcessor"]
