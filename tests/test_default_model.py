"""The embedded default codec as shipped: weights that fit its architecture, a model card, nothing mistakable."""

import json
from pathlib import Path

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


@pytest.mark.slow
def test_training_can_start_from_the_shipped_codec():
    from safetensors.torch import load_file

    from llm_codec.training import TrainingConfig
    from llm_codec.training.build import build_codec

    codec = build_codec(TrainingConfig(init_from="default", trainable="decoder"))
    shipped = load_file(str(default_codec_dir() / WEIGHTS_NAME))
    state = codec.state_dict()
    assert all(torch.equal(state[k].float(), v.float()) for k, v in shipped.items())
    assert all(p.dtype == torch.float32 for p in codec.parameters())


@pytest.mark.slow
def test_ship_script_takes_a_decoder_only_checkpoint_and_refuses_changed_codes(tmp_path):
    import importlib.util
    import shutil

    import numpy as np
    import soundfile as sf
    from safetensors.torch import load_file, save_file

    from llm_codec.training import Trainer, TrainingConfig

    spec = importlib.util.spec_from_file_location("ship", Path(__file__).resolve().parents[1] / "scripts/ship_default_codec.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)

    rng = np.random.default_rng(0)
    for k in range(3):
        sf.write(tmp_path / f"clip{k}.wav", (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
    config = TrainingConfig(init_from="default", trainable="decoder", train_data=str(tmp_path), num_val_clips=1,
                            crop_seconds=0.24, batch_size=1, max_steps=1, save_every=1, eval_every=0, lr_generator=1e-2,
                            disc_hop_lengths=[32, 64], disc_hidden_channels=[4, 4, 4], output_dir=str(tmp_path / "run"),
                            progress=False)
    trainer = Trainer(config)
    trainer.train()
    checkpoint = trainer.latest_checkpoint()
    pack = tmp_path / "pack"
    with pytest.raises(SystemExit):  # a resume pack without its step
        ship.main([str(checkpoint), "--output", str(tmp_path / "shipped.safetensors"), "--resume-pack", str(pack)])
    (tmp_path / "disc.safetensors").write_bytes(b"discriminator")
    ship.main([str(checkpoint), "--output", str(tmp_path / "shipped.safetensors"), "--resume-pack", str(pack),
               "--step", "7", "--training-config", "some.yaml", "--discriminator", str(tmp_path / "disc.safetensors")])
    shipped, before = load_file(str(tmp_path / "shipped.safetensors")), load_file(str(default_codec_dir() / WEIGHTS_NAME))
    packed = load_file(str(pack / "model.safetensors"))
    assert packed.keys() == shipped.keys() and all(torch.equal(packed[k], v.half()) for k, v in shipped.items())
    assert json.loads((pack / "progress.json").read_text())["step"] == 7
    assert (pack / "discriminator.safetensors").read_bytes() == b"discriminator"
    with pytest.raises(SystemExit):  # a resume pack is written when shipping only
        ship.main([str(checkpoint), "--evaluation-folder", str(tmp_path / "x"), "--resume-pack", str(pack), "--step", "7"])
    ship.main([str(checkpoint), "--output", str(tmp_path / "shipped.safetensors"), "--resume-pack", str(pack), "--step", "8"])
    progress = json.loads((pack / "progress.json").read_text())  # the discriminator stays, and so does what it is
    assert progress["step"] == 8 and "disc.safetensors" in progress["discriminator"]
    assert (pack / "discriminator.safetensors").read_bytes() == b"discriminator"
    assert shipped.keys() == before.keys()
    changed = {k for k in shipped if not torch.allclose(shipped[k], before[k].float(), atol=1e-6, rtol=1e-5)}
    assert changed and all(k.startswith("decoder.") for k in changed)

    # a folded weights file (what experiments/gpu/gpu_train.py returns) -> a complete folder to evaluate the candidate with
    ship.main([str(tmp_path / "shipped.safetensors"), "--evaluation-folder", str(tmp_path / "candidate")])
    candidate = LLMCodecModel.from_pretrained(str(tmp_path / "candidate")).state_dict()
    assert all(torch.equal(candidate[k].float(), v) for k, v in shipped.items())
    assert any(k.endswith(".codebook") for k in candidate)
    shutil.rmtree(tmp_path / "candidate")  # a full codec folder is 0.25 GB: keep the test's disk use small

    tampered = tmp_path / "tampered"
    shutil.copytree(checkpoint, tampered)
    state = load_file(str(tampered / "model.safetensors"))
    key = next(k for k in sorted(state) if k.startswith("codec.encoder.") and state[k].is_floating_point())
    state[key] = state[key] + 0.5
    save_file(state, str(tampered / "model.safetensors"))
    with pytest.raises(SystemExit, match="codes would change"):
        ship.main([str(tampered), "--output", str(tmp_path / "refused.safetensors")])
    assert not (tmp_path / "refused.safetensors").exists()
    ship.main([str(tampered), "--evaluation-folder", str(tmp_path / "tampered_candidate")])  # evaluating is allowed
    assert (tmp_path / "tampered_candidate" / "config.json").is_file()
