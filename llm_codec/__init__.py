"""llm-codec: audio as a foreign language for any frozen causal language model (LLM-Codec, UniAudio 1.5)."""

from .configuration_llm_codec import LLMCodecConfig
from .modeling_llm_codec import (
    LLMCodecDecoderOutput,
    LLMCodecEncoderOutput,
    LLMCodecModel,
    LLMCodecOutput,
    LLMCodecPreTrainedModel,
)

__version__ = "0.1.0"

__all__ = [
    "LLMCodecConfig",
    "LLMCodecModel",
    "LLMCodecPreTrainedModel",
    "LLMCodecEncoderOutput",
    "LLMCodecDecoderOutput",
    "LLMCodecOutput",
]
