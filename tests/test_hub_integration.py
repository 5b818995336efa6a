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


def save_folder(model, path):
    model.save_pretrained(path)
    LLMCodecFeatureExtractor(sampling_rate=model.config.sample_rate).save_pretrained(path)


def test_auto_classes_resolve_after_import(tiny_model, tmp_path):
    save_folder(tiny_model, tmp_path)
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
    save_folder(tiny_model, tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    assert {"configuration_llm_codec.py", "modeling_llm_codec.py", "feature_extraction_llm_codec.py"} <= files
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_llm_codec.LLMCodecModel"
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("---") and "library_name: transformers" in card
    assert "Bitrate" in card and f"{tiny_model.config.bitrate:.1f} bit/s" in card
    assert "| 3 | 1 | 200 |" in card  # layer table: layer, stride, codebook size


def test_trust_remote_code_without_the_package(tiny_model, tmp_path):
    """A fresh interpreter where `import llm_codec` fails loads the folder from its own code and gets the same codes."""
    folder = tmp_path / "codec"
    save_folder(tiny_model, folder)
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
        from transformers import AutoFeatureExtractor, AutoModel
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        features = AutoFeatureExtractor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
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
