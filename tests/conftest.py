import os
from pathlib import Path

import pytest
import torch

from llm_codec import LLMCodecConfig, LLMCodecModel

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = REPO / "tests" / "fixtures" / "official_llm_codec"  # reference vectors of the original implementation


# A small architecture (hop 6, attention window 2) that runs in milliseconds.
TINY_ARCH = dict(encoder_dim=16, encoder_rates=[2, 3], latent_dim=None, decoder_dim=64, decoder_rates=[3, 2], attn_window_size=2)


def tiny_config(**overrides) -> LLMCodecConfig:
    """`TINY_ARCH` with 40/200/200-entry codebooks of width 32."""
    arguments = dict(TINY_ARCH, codebook_sizes=[40, 200, 200], codebook_dim=32)
    arguments.update(overrides)
    return LLMCodecConfig(**arguments)


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    model = LLMCodecModel(tiny_config()).eval()
    # Random codebooks with more spread than the init, so that codes vary over a clip.
    for layer in model.quantizer.layers:
        layer.codebook.normal_()
    return model


@pytest.fixture(scope="session")
def official_dir():
    return OFFICIAL


TINY_WORDS = [f"w{i}" for i in range(4, 44)]


def tiny_llama(vocab_size: int = 200, layers: int = 1):
    """A seeded tiny Llama causal LM (hidden 32, 4 heads) with bos 1, eos 2, pad 0, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                         intermediate_size=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one intra-op thread is as fast and avoids OpenMP thrashing on a busy machine (20x slower
    otherwise). Modules opt in with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_tokenizer(vocab_size: int = 200):
    """A local word-level tokenizer with `vocab_size` entries (no download): `<unk>`, `<s>`, `</s>`, `<sep>`, w4..."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<sep>": 3}
    vocab.update({f"w{i}": i for i in range(4, vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def foreign_tokenizer(vocab_size: int = 200, missing=()):
    """A word-level tokenizer of *another* vocabulary than `tiny_tokenizer`'s: its words w4..w{vocab_size-1} at other
    ids (reversed order, shifted), plus words no tiny codec uses; `missing` words are left out (they become `<unk>`)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for word in [f"w{i}" for i in reversed(range(4, vocab_size))] + ["extra1", "extra2"]:
        if word not in missing:
            vocab[word] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def foreign_llama(tokenizer):
    """A seeded one-layer tiny Llama sized for `tokenizer` (an LM whose vocabulary is not the tiny codecs')."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


def slow_enabled(config) -> bool:
    """Slow tests (the real default LM) run with `-m slow` or LLM_CODEC_SLOW=1 (`scripts/run.sh test` sets it)."""
    return "slow" in (config.getoption("-m") or "") or os.environ.get("LLM_CODEC_SLOW", "") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    if slow_enabled(config):
        return
    skip = pytest.mark.skip(reason="slow: loads the real default LM (run with -m slow or LLM_CODEC_SLOW=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
