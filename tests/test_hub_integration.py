import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoProcessor

from llm_codec import LLMCodecConfig, LLMCodecFeatureExtractor, LLMCodecModel, LLMCodecProcessor

from .conftest import tiny_tokenizer


def test_auto_classes_resolve_after_import(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), LLMCodecConfig)
    model = AutoModel.from_pretrained(tmp_path)
    assert isinstance(model, LLMCodecModel)
    assert isinstance(AutoFeatureExtractor.from_pretrained(tmp_path), LLMCodecFeatureExtractor)
    LLMCodecProcessor(LLMCodecFeatureExtractor(), tiny_tokenizer()).save_pretrained(tmp_path)
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(processor, LLMCodecProcessor)
    batch = processor(audio=np.zeros(100, np.float32), text="w5 w6", sampling_rate=16000, return_tensors="pt")
    assert batch["input_values"].shape == (1, 1, 100) and batch["input_ids"].tolist() == [[5, 6]]
    # frozen codebooks come back as buffers, not trainable parameters
    assert not any(name.endswith(".codebook") for name, _ in model.named_parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), tiny_model.state_dict().values()))


def test_saved_folder_layout_and_model_card(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    assert {"configuration_llm_codec.py", "modeling_llm_codec.py", "feature_extraction_llm_codec.py",
            "preprocessor_config.json"} <= files
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_llm_codec.LLMCodecModel"
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("---") and "library_name: transformers" in card
    assert "Bitrate" in card and f"{tiny_model.config.bitrate:.1f} bit/s" in card
    assert "| 3 | 1 | 200 |" in card  # layer table: layer, stride, codebook size


def test_trust_remote_code_without_the_package(tiny_model, tmp_path):
    """A fresh interpreter where `import llm_codec` fails loads the folder from its own code and gets the same codes."""
    folder = tmp_path / "codec"
    tiny_model.save_pretrained(folder)  # the model's folder alone: weights, code, feature extractor
    x = torch.randn(1, 1, 2000)
    np.save(tmp_path / "x.npy", x.numpy())
    expected = [c.tolist() for c in tiny_model.encode(x).audio_codes]
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["llm_codec"] = None  # make the installed package unimportable
        sys.path = [p for p in sys.path if p not in ("", {str(tmp_path.parents[0])!r})]
        try:
            import llm_codec
            raise SystemExit("llm_codec is still importable")
        except ImportError:
            pass
        import numpy as np, torch
        from transformers import AutoFeatureExtractor, AutoModel, AutoProcessor
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        features = AutoFeatureExtractor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(processor).__name__ == "LLMCodecFeatureExtractor", type(processor)
        assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
        x = np.load({str(tmp_path / "x.npy")!r})[0, 0]
        inputs = features(x, sampling_rate=16000, return_tensors="pt")
        print(json.dumps([c.tolist() for c in model.encode(**inputs).audio_codes]))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


def test_truncated_weights_are_refused(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception, match="incomplete|not fully covered|deserializ"):
        LLMCodecModel.from_pretrained(tmp_path)


def test_config_disagreeing_with_weights_is_refused(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["codebook_sizes"] = [40, 300, 200]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        LLMCodecModel.from_pretrained(tmp_path)


class _FakeHub:
    """Stands in for `huggingface_hub.HfApi`: records each upload and the README.md it carried (no network)."""

    uploads: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False):
        from types import SimpleNamespace

        return SimpleNamespace(repo_id=repo_id if "/" in repo_id else f"me/{repo_id}")

    def upload_folder(self, repo_id, folder_path, commit_message=None, revision=None, create_pr=False):
        from pathlib import Path

        files = sorted(p.name for p in Path(folder_path).iterdir())
        _FakeHub.uploads.append({"repo_id": repo_id, "files": files, "readme": (Path(folder_path) / "README.md").read_text(),
                                 "message": commit_message})
        return "commit"


def test_push_to_hub_uploads_the_project_card(tiny_model, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeHub)
    _FakeHub.uploads = []
    assert tiny_model.push_to_hub("someone/my-codec") == "commit"
    tiny_model.save_pretrained(tmp_path / "my-codec", push_to_hub=True, commit_message="first")
    assert [u["repo_id"] for u in _FakeHub.uploads] == ["someone/my-codec", "me/my-codec"]
    for upload in _FakeHub.uploads:
        assert {"README.md", "config.json", "model.safetensors"} <= set(upload["files"])
        readme = upload["readme"]
        assert "# LLM-Codec" in readme and "llm-codec" in readme.split("---")[1]  # the project's card and tags
        assert "Model Card for Model ID" not in readme
    assert _FakeHub.uploads[1]["message"] == "first"
    assert (tmp_path / "my-codec" / "README.md").read_text() == _FakeHub.uploads[1]["readme"]


# ------------------------------------------------------------------------- feature extractor in every folder


def test_a_saved_codec_folder_gives_its_feature_extractor_through_the_auto_classes(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)  # no tokenizer: a codec folder, as the trainer and the converter write
    for loader in (AutoFeatureExtractor, AutoProcessor):
        features = loader.from_pretrained(tmp_path)
        assert isinstance(features, LLMCodecFeatureExtractor), loader
        assert features.sampling_rate == tiny_model.config.sample_rate
        batch = features(np.zeros(100, np.float32), sampling_rate=16000, return_tensors="pt")
        assert batch["input_values"].shape == (1, 1, 100)
    with pytest.raises(ValueError, match="holds no processor.*AutoFeatureExtractor.*from_codec"):
        LLMCodecProcessor.from_pretrained(tmp_path)


def test_a_trained_codec_folder_loads_with_the_auto_classes(tmp_path):
    """`llm-codec train --output DIR` writes DIR/model, which the Auto classes load (tiny run, one step)."""
    pytest.importorskip("accelerate")
    import soundfile as sf

    from llm_codec.cli import main as cli_main
    from llm_codec.training import TrainingConfig

    from .conftest import TINY_ARCH, TINY_WORDS, tiny_llama

    tiny_llama().save_pretrained(tmp_path / "lm")
    tiny_tokenizer(200).save_pretrained(tmp_path / "lm")
    (tmp_path / "data").mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        sf.write(tmp_path / "data" / f"c{k}.wav", (0.2 * rng.standard_normal(8000)).astype(np.float32), 16000)
    TrainingConfig(
        lm=str(tmp_path / "lm"), word_list=TINY_WORDS, codec=dict(TINY_ARCH), crop_seconds=0.1, batch_size=2,
        max_steps=1, log_every=1, eval_every=0, save_every=0, num_val_clips=1, val_seconds=0.5,
        mel_window_lengths=[32, 64, 128], mel_n_mels=[5, 10, 20], disc_periods=None, progress=False, seed=1,
        loss_weights={"adversarial": 0, "feature_matching": 0},
    ).save(tmp_path / "cfg.yaml")
    assert cli_main(["train", "--config", str(tmp_path / "cfg.yaml"), "--data", str(tmp_path / "data"),
                     "--output", str(tmp_path / "out"), "--no-progress"]) == 0
    folder = tmp_path / "out" / "model"
    assert isinstance(AutoModel.from_pretrained(folder), LLMCodecModel)
    for loader in (AutoFeatureExtractor, AutoProcessor):
        assert isinstance(loader.from_pretrained(folder), LLMCodecFeatureExtractor), loader


# ------------------------------------------------------------------------------------------ model card


def _metadata(card_text: str) -> str:
    return card_text.split("---")[1]


def test_model_card_base_model_is_a_hub_id_never_a_local_path(tmp_path):
    from llm_codec.language_model import CACHE_MARKER, DEFAULT_LM_NAME
    from llm_codec.model_card import build_model_card, hub_model_id

    from .conftest import tiny_config

    cached = tmp_path / "cache" / "qwen-local"
    cached.mkdir(parents=True)
    (cached / CACHE_MARKER).write_text(json.dumps({"name_or_path": "Qwen/Qwen2.5-Coder-0.5B-Instruct"}))
    cases = {
        DEFAULT_LM_NAME: DEFAULT_LM_NAME,
        str(tmp_path / "llm_codec" / "smollm2-135m-instruct"): DEFAULT_LM_NAME,  # the offline default LM's cache
        str(cached): "Qwen/Qwen2.5-Coder-0.5B-Instruct",  # a cache folder records its Hub id
        "qwen2.5-coder-1.5b": "Qwen/Qwen2.5-Coder-1.5B-Instruct",  # an offline alias
        "someone/my-lm": "someone/my-lm",
        str(tmp_path / "my_lm"): None,
        "./lm": None,
        None: None,
    }
    for recorded, expected in cases.items():
        assert hub_model_id(recorded) == expected, recorded
        card = build_model_card(tiny_config(llm_name_or_path=recorded))
        metadata = _metadata(str(card))
        assert card.data.base_model == expected, recorded
        assert str(tmp_path) not in metadata and "./lm" not in metadata


def test_model_card_has_the_paper_the_citation_and_never_prints_none():
    from llm_codec.model_card import build_model_card

    from .conftest import tiny_config

    for config in (tiny_config(), tiny_config(llm_name_or_path="someone/lm", llm_vocab_size=200)):
        text = str(build_model_card(config))
        assert "None" not in text and "`None`" not in text
        assert "https://arxiv.org/abs/2406.10056" in text and "arxiv:2406.10056" in _metadata(text)
        assert "## Citation" in text and "@inproceedings{yang2024uniaudio15" in text
        assert "UniAudio 1.5: Large Language Model-driven Audio Codec is A Few-shot Audio Task Learner" in text
    text = str(build_model_card(tiny_config(llm_name_or_path="someone/lm", llm_vocab_size=200)))
    assert "`someone/lm` (size 200)" in text and "fingerprint" not in text
    assert "teacher" not in text


def test_model_card_says_when_layer1_is_chosen_by_a_teacher():
    from llm_codec.model_card import build_model_card

    from .conftest import tiny_config

    plain = tiny_config()
    words = [f"w{i}" for i in range(plain.codebook_sizes[0])]
    config = tiny_config(layer1_words=words, semantic_teacher="resemblyzer", semantic_clusters=4,
                         encoder_rates=[4, 5, 8], decoder_rates=[8, 5, 4])
    text = str(build_model_card(config))
    assert "chosen by the frozen resemblyzer teacher, one of 4 words" in text and "None" not in text
    grouped = tiny_config(layer1_words=words, semantic_teacher="resemblyzer", semantic_clusters=4, semantic_groups=True,
                          encoder_rates=[4, 5, 8], decoder_rates=[8, 5, 4])
    text = str(build_model_card(grouped))
    assert "teacher chooses one of 4 groups of words and the latent the word in it" in text and "one of 4 words" not in text


def test_model_card_model_index_and_datasets_from_measured_results():
    from huggingface_hub import ModelCard

    from llm_codec.model_card import build_model_card, codec_eval_results

    from .conftest import REPO, tiny_config

    results = json.loads((REPO / "benchmarks" / "results_codec_heldout" / "results.json").read_text())
    entries = codec_eval_results(results, dataset_name="held-out speech", dataset_type="llm-codec-heldout-speech")
    card = build_model_card(tiny_config(llm_name_or_path="someone/lm"), eval_results=entries, datasets=["someone/audio"])
    data = ModelCard(str(card)).data  # what the Hub reads back
    assert data.datasets == ["someone/audio"] and data.model_name
    measured = {r.metric_type: r.metric_value for r in data.eval_results}
    means = next(s for s in results["systems"] if s["system"] == "llm-codec")["means"]
    assert measured == {"pesq": round(means["pesq_wb"], 4), "stoi": round(means["stoi"], 4),
                        "mel_distance": round(means["mel_distance"], 4), "si_sdr": round(means["si_sdr"], 4)}
    assert {r.task_type for r in data.eval_results} == {"audio-to-audio"}
    assert "model-index" in _metadata(str(card))
    plain = str(build_model_card(tiny_config()))  # nothing measured, nothing claimed
    assert "model-index" not in plain and "datasets" not in _metadata(plain)


def test_the_default_codec_card_states_its_base_model_and_measured_results():
    from huggingface_hub import ModelCard

    from llm_codec.language_model import DEFAULT_LM_NAME

    from .conftest import REPO

    card = ModelCard((REPO / "llm_codec" / "assets" / "default_codec" / "README.md").read_text())
    assert card.data.base_model == DEFAULT_LM_NAME and "None" not in card.text
    results = json.loads((REPO / "benchmarks" / "results_codec_heldout" / "results.json").read_text())
    means = next(s for s in results["systems"] if s["system"] == "llm-codec")["means"]
    measured = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert measured["pesq"] == round(means["pesq_wb"], 4) and measured["stoi"] == round(means["stoi"], 4)
    assert "@inproceedings{yang2024uniaudio15" in card.text
