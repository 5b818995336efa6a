"""The embedded default codec as shipped: weights that fit its architecture, a model card, nothing mistakable."""

import pytest
import torch
from safetensors import safe_open

from llm_codec import LLMCodecConfig, LLMCodecModel
from llm_codec.default_model import DEFAULT_CODEC_ARCH, WEIGHTS_NAME, default_codec_dir


def test_shipped_weights_fit_the_architecture_without_codebooks():
    folder = default_codec_dir()
    config = LLMCodecConfig.from_pretrained(folder)
    arch = {k: v for k, v in DEFAULT_CODEC_ARCH.items() if v is not None}  # latent_dim None = derived (256)
    assert {k: getattr(config, k) for k in arch} == arch
    assert config.llm_name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct" and config.llm_vocab_fingerprint
    assert (folder / WEIGHTS_NAME).stat().st_size < 60 * 2**20
    expected = {k: v.shape for k, v in LLMCodecModel(config).state_dict().items() if not k.endswith(".codebook")}
    with safe_open(str(folder / WEIGHTS_NAME), "pt") as handle:
        shipped = {k: handle.get_slice(k).get_shape() for k in handle.keys()}
        assert all(torch.isfinite(handle.get_tensor(k)).all() for k in handle.keys())
    assert shipped.keys() == expected.keys()
    assert all(list(expected[k]) == list(shipped[k]) for k in expected)


def test_shipped_folder_has_a_model_card_and_is_not_a_full_checkpoint():
    folder = default_codec_dir()
    card = (folder / "README.md").read_text()
    for heading in ("## Usage", "## Training data", "## Training", "## Evaluation", "## Intended use and limits"):
        assert heading in card
    assert "load_default_codec" in card and "PESQ-WB" in card and "H100" in card
    with pytest.raises(OSError):
        LLMCodecModel.from_pretrained(folder)  # codebooks are rebuilt from the LM: only load_default_codec() will do


def test_training_can_start_from_the_shipped_codec():
    from safetensors.torch import load_file

    from llm_codec.training import TrainingConfig
    from llm_codec.training.trainer import build_codec

    codec = build_codec(TrainingConfig(init_from="default", trainable="decoder"))
    shipped = load_file(str(default_codec_dir() / WEIGHTS_NAME))
    state = codec.state_dict()
    assert all(torch.equal(state[k].float(), v.float()) for k, v in shipped.items())
    assert all(p.dtype == torch.float32 for p in codec.parameters())
