"""llm-codec: audio as a foreign language for any frozen causal language model (LLM-Codec, UniAudio 1.5).

Importing the package registers the config, model, feature extractor and processor with transformers' Auto
classes, and marks them for `trust_remote_code` export: `save_pretrained` writes the code next to the weights.
"""

from importlib.resources import files

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoProcessor

from .configuration_llm_codec import LLMCodecConfig
from .feature_extraction_llm_codec import LLMCodecFeatureExtractor
from .modeling_llm_codec import (
    LLMCodecDecoderOutput,
    LLMCodecEncoderOutput,
    LLMCodecModel,
    LLMCodecOutput,
    LLMCodecPreTrainedModel,
)
from .pipeline_llm_codec import (
    AudioFewShotClassificationPipeline,
    AudioFewShotGenerationPipeline,
    register_pipelines,
)
from .processing_llm_codec import CodeSequenceError, LLMCodecProcessor
from .refinement import refine_codes

__version__ = "0.1.0"


def example_audio_path() -> str:
    """Path of the bundled 5.6 s English speech clip (16 kHz mono FLAC; see `assets/ATTRIBUTION.md`)."""
    return str(files(__name__) / "assets" / "example_speech.flac")


AutoConfig.register(LLMCodecConfig.model_type, LLMCodecConfig, exist_ok=True)
AutoModel.register(LLMCodecConfig, LLMCodecModel, exist_ok=True)
AutoFeatureExtractor.register(LLMCodecConfig, LLMCodecFeatureExtractor, exist_ok=True)
AutoProcessor.register(LLMCodecConfig, LLMCodecProcessor, exist_ok=True)
LLMCodecConfig.register_for_auto_class()
LLMCodecModel.register_for_auto_class("AutoModel")
LLMCodecFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
LLMCodecProcessor.register_for_auto_class("AutoProcessor")
register_pipelines()

__all__ = [
    "example_audio_path",
    "LLMCodecConfig",
    "LLMCodecModel",
    "LLMCodecPreTrainedModel",
    "LLMCodecEncoderOutput",
    "LLMCodecDecoderOutput",
    "LLMCodecOutput",
    "LLMCodecFeatureExtractor",
    "LLMCodecProcessor",
    "CodeSequenceError",
    "refine_codes",
    "AudioFewShotClassificationPipeline",
    "AudioFewShotGenerationPipeline",
]
