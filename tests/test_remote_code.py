"""Saved codec folders run the few-shot pipelines as remote code in a process where `llm_codec` cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import pipeline

from llm_codec import LLMCodecModel

from .conftest import TINY_WORDS, tiny_llama, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CODEC_ARCH = dict(
    encoder_dim=16, encoder_rates=[2, 3], latent_dim=None, decoder_dim=64, decoder_rates=[3, 2], attn_window_size=2
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny LM saved to a folder, and a codec built from it whose config names that folder."""
    root = tmp_path_factory.mktemp("remote")
    lm, tokenizer = tiny_llama(), tiny_tokenizer()
    lm.save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")
    torch.manual_seed(1)
    codec = LLMCodecModel.from_language_model(lm, tokenizer, word_list=TINY_WORDS, **CODEC_ARCH).eval()
    codec.config.llm_name_or_path = str(root / "lm")
    rng = np.random.default_rng(0)
    clips = {name: (rng.standard_normal(1600) * 0.3).astype(np.float32) for name in ("a", "b", "q1", "q2")}
    np.savez(root / "clips.npz", **clips)
    return root, lm, tokenizer, codec, clips


def run_without_llm_codec(script: str, cwd, env_extra=None) -> dict:
    """Runs `script` in a fresh interpreter (cwd `cwd`, offline) where `import llm_codec` fails; returns its JSON."""
    prelude = textwrap.dedent(
        """
        import sys
        sys.modules["llm_codec"] = None  # the installed package cannot be imported
        sys.path = [p for p in sys.path if p not in ("", ".")]
        try:
            import llm_codec
            raise SystemExit("llm_codec is still importable")
        except ImportError:
            pass
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(cwd / "modules"), **(env_extra or {}))
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)], capture_output=True, text=True, cwd=cwd, env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def classify_script(folder, root, with_lm: bool) -> str:
    lm = f"language_model={str(root / 'lm')!r}, tokenizer={str(root / 'lm')!r}, " if with_lm else ""
    return f"""
        import json
        import numpy as np
        from transformers import pipeline
        clips = np.load({str(root / "clips.npz")!r})
        pipe = pipeline("audio-few-shot-classification", model={str(folder)!r}, trust_remote_code=True, {lm}device="cpu")
        assert type(pipe).__module__.startswith("transformers_modules"), type(pipe).__module__
        demos = [(clips["a"], "w50"), (clips["b"], "w60")]
        result = pipe([clips["q1"], clips["q2"]], demonstrations=demos, sampling_rate=16000, batch_size=2)
        print(json.dumps({{"result": result, "class": type(pipe).__name__}}))
    """


@pytest.mark.parametrize("saved_by", ["model", "pipeline"])
def test_saved_folder_runs_classification_without_the_package(models, saved_by, tmp_path):
    root, lm, tokenizer, codec, clips = models
    pipe = pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tokenizer, device="cpu")
    folder = tmp_path / "codec"
    (codec if saved_by == "model" else pipe).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"]["audio-few-shot-classification"] == {
        "impl": "pipeline_llm_codec.AudioFewShotClassificationPipeline", "pt": ["AutoModel"], "type": "audio",
    }
    assert "audio-few-shot-generation" in config["custom_pipelines"]
    assert {"pipeline_llm_codec.py", "processing_llm_codec.py", "preprocessor_config.json"} <= set(os.listdir(folder))
    if saved_by == "model":
        assert not hasattr(codec.config, "custom_pipelines")  # written to the folder, not left on the model's config
    expected = pipe(
        [clips["q1"], clips["q2"]], demonstrations=[(clips["a"], "w50"), (clips["b"], "w60")], sampling_rate=16000
    )
    for with_lm in (True, False):  # without language_model=: the LM named by the codec's config
        out = run_without_llm_codec(classify_script(folder, root, with_lm), tmp_path)
        assert out["class"] == "AudioFewShotClassificationPipeline"
        assert [[r["label"] for r in row] for row in out["result"]] == [[r["label"] for r in row] for row in expected]
        np.testing.assert_allclose(
            [[r["score"] for r in row] for row in out["result"]], [[r["score"] for r in row] for row in expected],
            atol=1e-5,
        )


def test_saved_folder_runs_generation_without_the_package(models, tmp_path):
    root, lm, tokenizer, codec, clips = models
    folder = tmp_path / "codec"
    codec.save_pretrained(folder)
    generate = pipeline("audio-few-shot-generation", model=codec, language_model=lm, tokenizer=tokenizer,
                        device="cpu", separator="<sep>")
    arguments = dict(sampling_rate=16000, max_audio_seconds=0.05, do_sample=True, seed=0, top_k=20)
    expected = generate("w80", demonstrations=[(clips["a"], clips["b"]), ("w81", clips["b"])], **arguments)
    script = f"""
        import json
        import numpy as np
        from transformers import pipeline
        clips = np.load({str(root / "clips.npz")!r})
        generate = pipeline("audio-few-shot-generation", model={str(folder)!r}, trust_remote_code=True,
                            separator="<sep>", device="cpu")
        out = generate("w80", demonstrations=[(clips["a"], clips["b"]), ("w81", clips["b"])], **{arguments!r})
        print(json.dumps({{"tokens": out["tokens"], "audio": out["audio"].tolist(), "rate": out["sampling_rate"]}}))
    """
    out = run_without_llm_codec(script, tmp_path)
    assert out["tokens"] == expected["tokens"] and out["rate"] == 16000
    np.testing.assert_allclose(out["audio"], expected["audio"], atol=1e-5)


def test_saved_folder_needs_trust_remote_code(models, tmp_path):
    """A folder naming custom pipelines is transformers' remote code: refused without `trust_remote_code=True`."""
    root, lm, tokenizer, codec, clips = models
    codec.save_pretrained(tmp_path / "codec")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline("audio-few-shot-classification", model=str(tmp_path / "codec"), language_model=lm, tokenizer=tokenizer)
