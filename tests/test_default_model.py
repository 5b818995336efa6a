"""The embedded codecs as shipped (the default one and the opt-in semantic one): weights that fit their architecture,
a model card, nothing mistakable."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from llm_codec import LLMCodecConfig, LLMCodecModel
from llm_codec.default_model import (
    DEFAULT_CODEC_ARCH, WEIGHTS_NAME, default_codec_dir, load_default_codec, load_semantic_codec, semantic_codec_dir,
)

from .test_training import needs_resemblyzer


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


# ---------------------------------------------------------------------------------------- the semantic codec


FIXTURE = Path(__file__).parent / "fixtures" / "semantic_codec_example.json"


def test_shipped_semantic_weights_fit_a_grouped_default_codec_without_codebooks_or_teacher():
    folder = semantic_codec_dir()
    config = LLMCodecConfig.from_pretrained(folder)
    default = LLMCodecConfig.from_pretrained(default_codec_dir())
    assert {k: getattr(config, k) for k in DEFAULT_CODEC_ARCH} == {k: getattr(default, k) for k in DEFAULT_CODEC_ARCH}
    assert config.llm_vocab_fingerprint == default.llm_vocab_fingerprint
    assert config.layer1_words == default.layer1_words
    assert (config.semantic_teacher, config.semantic_clusters, config.semantic_groups) == ("resemblyzer", 16, True)
    expected = {k: v.shape for k, v in LLMCodecModel(config).state_dict().items()
                if not k.endswith(".codebook") and not k.startswith("semantic.voice_encoder.")}
    with safe_open(str(folder / WEIGHTS_NAME), "pt") as handle:
        shipped = {k: handle.get_slice(k).get_shape() for k in handle.keys()}
        heads = handle.get_tensor("quantizer.layers.0.word_heads")
        words = handle.get_tensor("semantic.word_codes")
        assert all(torch.isfinite(handle.get_tensor(k)).all() for k in handle.keys())
    assert shipped.keys() == expected.keys()
    assert all(list(expected[k]) == list(shipped[k]) for k in expected)
    # every word belongs to the group of one of the 16 centroid words, each of which heads its own group
    assert set(heads.tolist()) == set(words.tolist()) and all(heads[w] == w for w in words.tolist())
    card = (folder / "README.md").read_text()
    assert "load_semantic_codec" in card and "shipped:semantic" in card and "## Reconstruction" in card
    assert "## Few-shot classification" in card and "logmel" in card
    with pytest.raises(OSError):
        LLMCodecModel.from_pretrained(folder)  # not a complete checkpoint: only load_semantic_codec() will do


@pytest.mark.slow
@needs_resemblyzer
def test_semantic_codec_gives_the_codes_of_the_codec_it_was_shipped_from():
    from llm_codec import example_audio_path
    from llm_codec.audio_io import read_audio
    from llm_codec.processing_llm_codec import LLMCodecProcessor

    expected = json.loads(FIXTURE.read_text())  # written from the trained folder before shipping
    codec, (lm, tokenizer) = load_semantic_codec()
    assert not any(p.requires_grad for p in codec.semantic.parameters())
    audio = torch.from_numpy(read_audio(example_audio_path(), 16000))[None, None]
    with torch.no_grad():
        codes = codec.encode(audio).audio_codes
        out = codec.decode(codes, generator=torch.Generator().manual_seed(0)).audio_values[0, 0]
    assert [c[0].tolist() for c in codes] == expected["audio_codes"]
    assert torch.allclose(out[1000:1016], torch.tensor(expected["decoded_first_samples"]), atol=1e-4)
    assert abs(float(out.pow(2).mean().sqrt()) - expected["decoded_rms"]) < 1e-4
    # what an LM reads for understanding: each word's group head, the teacher's word
    processor = LLMCodecProcessor.from_codec(codec, tokenizer)
    assert processor.read_layer1(codes[0][0].tolist()) == expected["group_heads"]
    words = {codec.config.layer1_words[h] for h in expected["group_heads"]}
    assert sorted(words) == expected["head_words"] and len(words) < 8  # few, slowly varying words
    # the default codec's layer 1 on the same clip: many more distinct words
    torch.manual_seed(123)
    state = torch.get_rng_state()
    default, _, _ = load_default_codec(lm, tokenizer)
    assert torch.equal(torch.get_rng_state(), state)  # loading leaves the caller's random numbers alone
    with torch.no_grad():
        default_words = set(default.encode(audio).audio_codes[0][0].tolist())
    assert len(default_words) > 3 * len(words)


def test_shipped_codec_names_on_the_command_line():
    from llm_codec.default_model import shipped_codec_name
    from llm_codec.evaluation.fewshot_cli import load_models

    assert shipped_codec_name("shipped:semantic") == "semantic" and shipped_codec_name("shipped:default") == "default"
    assert shipped_codec_name(None) is None and shipped_codec_name("runs/my_codec") is None
    with pytest.raises(ValueError, match="shipped:default, shipped:semantic"):
        shipped_codec_name("shipped:semantics")
    with pytest.raises(ValueError, match="--audio-format text"):  # both shipped codecs speak SmolLM2's vocabulary
        load_models("shipped:semantic", "Qwen/Qwen2.5-Coder-1.5B-Instruct", "cpu", "ids")


@pytest.mark.slow
def test_semantic_codec_without_resemblyzer_names_the_pip_command(monkeypatch):
    import importlib.metadata

    from llm_codec.language_model import load_language_model
    from llm_codec.voice_encoder import TeacherUnavailable

    lm, tokenizer = load_language_model()

    real = importlib.metadata.distribution

    def distribution(name):
        if name.lower() == "resemblyzer":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with pytest.raises(TeacherUnavailable, match="pip install --no-deps Resemblyzer==0.1.4"):
        load_semantic_codec(lm, tokenizer)


@pytest.mark.slow
@needs_resemblyzer
def test_ship_script_reproduces_the_shipped_semantic_codec_and_refuses_a_plain_codec(tmp_path):
    import importlib.util
    import shutil

    from safetensors.torch import load_file

    from llm_codec.training.export import export_codec

    spec = importlib.util.spec_from_file_location("ship_semantic", Path(__file__).resolve().parents[1] / "scripts/ship_semantic_codec.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    codec, _ = load_semantic_codec()
    export_codec(codec, tmp_path / "source")  # a complete folder, as export_checkpoint.py writes one
    ship.main([str(tmp_path / "source"), "--output", str(tmp_path / "out")])
    shutil.rmtree(tmp_path / "source")  # a full codec folder is 0.25 GB: keep the test's disk use small
    written, shipped = load_file(str(tmp_path / "out" / WEIGHTS_NAME)), load_file(str(semantic_codec_dir() / WEIGHTS_NAME))
    assert written.keys() == shipped.keys() and all(torch.equal(written[k], v) for k, v in shipped.items())
    assert LLMCodecConfig.from_pretrained(tmp_path / "out").to_dict() == LLMCodecConfig.from_pretrained(semantic_codec_dir()).to_dict()
    assert "## Why a second codec" in (tmp_path / "out" / "README.md").read_text()

    default, _, _ = load_default_codec()
    export_codec(default, tmp_path / "plain")
    with pytest.raises(SystemExit, match="not a grouped codec"):
        ship.main([str(tmp_path / "plain"), "--output", str(tmp_path / "refused")])
    shutil.rmtree(tmp_path / "plain")
    assert not (tmp_path / "refused").exists()
