"""Codebooks from causal LMs (llm_codec.codebooks), with tiny local models and tokenizers only."""

import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from llm_codec import LLMCodecModel
from llm_codec.codebooks import (
    build_codec_from_language_model,
    build_word_codebook,
    codec_config_from_language_model,
    load_default_word_list,
    resolve_layer_subset,
    word_token_ids,
)
from llm_codec.vocabulary import vocabulary_fingerprint

from .conftest import TINY_ARCH, tiny_tokenizer


def handmade_tokenizer():
    """
    A byte-level BPE whose splits are known: " cat" -> [Ġcat], " catdog" -> [Ġcat, dog], " catdogdog" -> [Ġcat,
    dog, dog], " dog" -> [Ġ, dog] (a lone space token, then the word). Holds a byte-fallback-like `<0x0A>` token and
    an added special token `<extra>`.
    """
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(char, len(vocab))
    merges = []

    def merge(a, b):
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))

    for a, b in [("Ġ", "c"), ("Ġc", "a"), ("Ġca", "t"), ("d", "o"), ("do", "g"), ("Ġ", "b"), ("Ġb", "e"), ("Ġbe", "e")]:
        merge(a, b)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.add_tokens([AddedToken("<extra>", special=True)])
    return tokenizer


def trained_tokenizer(vocab_size: int = 700, num_words: int = 400):
    """A byte-level BPE trained on the first `num_words` shipped words (local, milliseconds)."""
    words = load_default_word_list()[:num_words]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([" " + word for word in words] * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def tiny_llama(vocab_size: int):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(vocab_size: int):
    torch.manual_seed(1)
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=vocab_size)).eval()


# -------------------------------------------------------------------------------------------------- word list


def test_default_word_list_is_clean_and_ordered():
    words = load_default_word_list()
    assert 3000 <= len(words) <= 5000
    assert len(set(words)) == len(words)
    assert words == sorted(words)
    assert all(w.isascii() and w.isalpha() and w.islower() for w in words)
    assert all(len(w) >= 2 or w in ("a", "i") for w in words)
    for common in ("the", "water", "house", "because"):
        assert common in words
    larger = load_default_word_list(size=20)
    assert larger[: len(words)] == words and len(set(larger)) == len(larger) > 2 * len(words)
    with pytest.raises(ValueError, match="size"):
        load_default_word_list(size=35)


# ----------------------------------------------------------------------------------------------- word codebook


def test_word_token_ids_use_leading_space_and_drop_lone_space_token():
    tokenizer = handmade_tokenizer()
    pieces = lambda word: tokenizer.convert_ids_to_tokens(word_token_ids(tokenizer, [word])[0])  # noqa: E731
    assert pieces("cat") == ["Ġcat"]
    assert pieces("catdog") == ["Ġcat", "dog"]
    assert pieces("catdogdog") == ["Ġcat", "dog", "dog"]
    assert pieces("dog") == ["dog"]  # " dog" is [Ġ, dog]: the lone space token is not a sub-word of the word
    assert word_token_ids(tokenizer, []) == []


def test_word_filter_by_subword_count_mean_and_order():
    tokenizer = handmade_tokenizer()
    embedding = torch.randn(len(tokenizer) + 5, 8)
    words = ["catdogdog", "catdog", "cat", "dog", "bee", "catdog", " cat ", ""]
    table, kept, ids = build_word_codebook(embedding, tokenizer, words, max_subwords=2)
    # 3 pieces dropped, duplicates (also after stripping) dropped, empty dropped, input order kept
    assert kept == ["catdog", "cat", "dog", "bee"]
    assert [tokenizer.convert_ids_to_tokens(i) for i in ids] == [["Ġcat", "dog"], ["Ġcat"], ["dog"], ["Ġbee"]]
    assert table.shape == (4, 8) and table.dtype == torch.float32
    for row, token_ids in zip(table, ids):
        assert torch.equal(row, embedding[token_ids].mean(dim=0))
    assert torch.equal(table[1], embedding[ids[1][0]])  # a one-piece word is its token's embedding

    _, kept1, _ = build_word_codebook(embedding, tokenizer, words, max_subwords=1)
    assert kept1 == ["cat", "dog", "bee"]
    _, kept3, _ = build_word_codebook(embedding, tokenizer, words, max_subwords=3)
    assert kept3 == ["catdogdog", "catdog", "cat", "dog", "bee"]


def test_word_codebook_mean_is_float32_for_low_precision_tables():
    tokenizer = handmade_tokenizer()
    embedding = torch.randn(len(tokenizer), 8).to(torch.bfloat16)
    table, _, ids = build_word_codebook(embedding, tokenizer, ["catdog"])
    assert table.dtype == torch.float32
    assert torch.equal(table[0], embedding[ids[0]].float().mean(dim=0))


def test_words_with_unknown_tokens_or_same_tokens_are_dropped():
    tokenizer = tiny_tokenizer(50)  # word-level: "w3".."w49" known, anything else is <unk>
    embedding = torch.randn(50, 4)
    table, kept, ids = build_word_codebook(embedding, tokenizer, ["w5", "hello", "w7", "W7"])
    assert kept == ["w5", "w7"] and ids == [[5], [7]]
    assert torch.equal(table, embedding[[5, 7]])


def test_word_codebook_errors():
    tokenizer = handmade_tokenizer()
    embedding = torch.randn(len(tokenizer), 8)
    with pytest.raises(ValueError, match="No word is left"):
        build_word_codebook(embedding, tokenizer, ["catdogdog"], max_subwords=2)
    with pytest.raises(ValueError, match="No word is left"):
        build_word_codebook(embedding, tokenizer, [])
    with pytest.raises(ValueError, match="max_subwords"):
        build_word_codebook(embedding, tokenizer, ["cat"], max_subwords=0)
    with pytest.raises(ValueError, match="list of words"):
        build_word_codebook(embedding, tokenizer, "cat")
    with pytest.raises(ValueError, match="strings"):
        build_word_codebook(embedding, tokenizer, ["cat", 3])
    with pytest.raises(ValueError, match="2-D"):
        build_word_codebook(embedding[0], tokenizer, ["cat"])
    with pytest.raises(ValueError, match="does not belong"):
        build_word_codebook(embedding[:10], tokenizer, ["cat"])


# -------------------------------------------------------------------------------------------- layer subsets


def test_layer_subset_no_special_drops_special_byte_fallback_and_padding_rows():
    tokenizer = handmade_tokenizer()
    extra = tokenizer.convert_tokens_to_ids("<extra>")
    rows = len(tokenizer) + 3  # padding rows past the tokenizer
    ids = resolve_layer_subset("no_special", tokenizer, rows)
    assert ids == sorted(ids)
    excluded = {0, 1, 2, 3, extra} | set(range(len(tokenizer), rows))  # <unk> <s> </s> <0x0A> <extra> padding
    assert set(ids) == set(range(rows)) - excluded
    assert resolve_layer_subset(None, tokenizer, rows) is None


def test_layer_subset_explicit_ids_and_errors():
    tokenizer = handmade_tokenizer()
    assert resolve_layer_subset([7, 5, 9], tokenizer, 20) == [7, 5, 9]
    assert resolve_layer_subset(torch.tensor([4, 6]), tokenizer, 20) == [4, 6]
    with pytest.raises(ValueError, match="outside"):
        resolve_layer_subset([1, 20], tokenizer, 20)
    with pytest.raises(ValueError, match="more than once"):
        resolve_layer_subset([1, 2, 1], tokenizer, 20)
    with pytest.raises(ValueError, match="integers"):
        resolve_layer_subset([1.5], tokenizer, 20)
    with pytest.raises(ValueError, match="no token"):
        resolve_layer_subset([], tokenizer, 20)
    with pytest.raises(ValueError, match="Unknown"):
        resolve_layer_subset("all", tokenizer, 20)


# ------------------------------------------------------------------------------------------------ codec configs


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_codec_config_from_language_model(architecture):
    tokenizer = trained_tokenizer()
    rows = len(tokenizer) + 4 if architecture == "llama" else len(tokenizer)  # Llama: padding rows in the table
    lm = tiny_llama(rows) if architecture == "llama" else tiny_gpt2(rows)
    lm.config._name_or_path = f"local/tiny-{architecture}"
    words = load_default_word_list()[:300]
    config, codebooks = codec_config_from_language_model(lm, tokenizer, words=words, **TINY_ARCH)
    embedding = lm.get_input_embeddings().weight.detach()
    expected_table, expected_words, _ = build_word_codebook(embedding, tokenizer, words)
    assert 0 < len(expected_words) < len(words)  # some of the words need more than two pieces
    assert config.layer1_words == expected_words
    assert config.codebook_dim == 32
    assert config.codebook_sizes == [len(expected_words), rows, rows]
    assert config.llm_name_or_path == f"local/tiny-{architecture}"
    assert config.llm_vocab_size == len(tokenizer)
    assert config.llm_vocab_fingerprint == vocabulary_fingerprint(tokenizer)
    assert config.layer_token_ids is None
    assert torch.equal(codebooks[0], expected_table)
    assert torch.equal(codebooks[1], embedding) and torch.equal(codebooks[2], embedding)
    assert codebooks[1].data_ptr() != codebooks[2].data_ptr() != embedding.data_ptr()


def test_codec_config_rejects_derived_overrides_and_names_the_lm():
    tokenizer = trained_tokenizer()
    lm = tiny_gpt2(len(tokenizer))
    words = load_default_word_list()[:100]
    with pytest.raises(ValueError, match="codebook_dim"):
        codec_config_from_language_model(lm, tokenizer, words=words, codebook_dim=64)
    config, _ = codec_config_from_language_model(lm, tokenizer, words=words, llm_name_or_path="mine", **TINY_ARCH)
    assert config.llm_name_or_path == "mine"
    lm.config._name_or_path = ""
    config, _ = codec_config_from_language_model(lm, tokenizer, words=words, **TINY_ARCH)
    assert config.llm_name_or_path is None


def test_codec_with_more_vq_layers_uses_the_vocabulary_for_all_but_the_first():
    tokenizer = trained_tokenizer()
    lm = tiny_gpt2(len(tokenizer))
    arch = {**TINY_ARCH, "vq_strides": [4, 2, 1, 1]}
    config, codebooks = codec_config_from_language_model(
        lm, tokenizer, words=load_default_word_list()[:100], layer_subset=[5, 6, 7], **arch
    )
    assert config.codebook_sizes[1:] == [3, 3, 3] and len(codebooks) == 4
    assert config.layer_token_ids == [None, [5, 6, 7], [5, 6, 7], [5, 6, 7]]


# -------------------------------------------------------------------------------------------------- the codec


def test_build_codec_copies_tables_into_buffers_and_encodes(tmp_path):
    tokenizer = trained_tokenizer()
    lm = tiny_llama(len(tokenizer) + 4)
    words = load_default_word_list()[:300]
    model = build_codec_from_language_model(lm, tokenizer=tokenizer, word_list=words, **TINY_ARCH)
    assert isinstance(model, LLMCodecModel)
    embedding = lm.get_input_embeddings().weight.detach()
    table, kept, _ = build_word_codebook(embedding, tokenizer, words)
    buffers = dict(model.named_buffers())
    params = dict(model.named_parameters())
    for k, expected in enumerate([table, embedding, embedding]):
        name = f"quantizer.layers.{k}.codebook"
        assert name in buffers and name not in params
        assert torch.equal(model.quantizer.layers[k].codebook, expected)
    assert model.config.layer1_words == kept
    assert model.config.llm_vocab_fingerprint == vocabulary_fingerprint(tokenizer)

    model.eval()
    audio = torch.randn(1, 1, 240, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        codes = model.encode(audio).audio_codes
    assert int(codes[0].max()) < len(kept) and int(codes[1].max()) < embedding.shape[0]

    model.save_pretrained(tmp_path)
    reloaded = LLMCodecModel.from_pretrained(tmp_path)
    assert reloaded.config.layer1_words == kept
    assert reloaded.config.llm_vocab_fingerprint == model.config.llm_vocab_fingerprint
    for a, b in zip(model.quantizer.layers, reloaded.quantizer.layers):
        assert torch.equal(a.codebook, b.codebook)


def test_build_codec_with_layer_subset_records_the_index_map(tmp_path):
    tokenizer = handmade_tokenizer()
    lm = tiny_gpt2(len(tokenizer) + 2)
    model = build_codec_from_language_model(
        (lm, tokenizer), word_list=["cat", "catdog", "bee"], layer_subset="no_special", **TINY_ARCH
    )
    ids = model.config.layer_token_ids[1]
    assert model.config.layer_token_ids == [None, ids, ids]
    assert model.config.codebook_sizes == [3, len(ids), len(ids)]
    assert tokenizer.bos_token_id not in ids and tokenizer.convert_tokens_to_ids("<0x0A>") not in ids
    embedding = lm.get_input_embeddings().weight.detach()
    for k in (1, 2):
        assert torch.equal(model.quantizer.layers[k].codebook, embedding[ids])
    # a code of layer 2 turns back into the LM token whose embedding it is
    code = 17
    assert torch.equal(model.quantizer.layers[1].codebook[code], embedding[model.config.layer_token_ids[1][code]])

    model.save_pretrained(tmp_path)
    reloaded = LLMCodecModel.from_pretrained(tmp_path)
    assert reloaded.config.layer_token_ids == [None, ids, ids]


def test_build_codec_from_a_local_folder(tmp_path):
    tokenizer = trained_tokenizer()
    lm = tiny_gpt2(len(tokenizer))
    lm.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    words = load_default_word_list()[:100]
    model = build_codec_from_language_model(str(tmp_path / "lm"), word_list=words, **TINY_ARCH)
    assert model.config.llm_name_or_path == str(tmp_path / "lm")
    assert torch.equal(model.quantizer.layers[1].codebook, lm.get_input_embeddings().weight)
    # a loaded model whose folder holds its tokenizer needs no tokenizer argument
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    model = build_codec_from_language_model(loaded, word_list=words, **TINY_ARCH)
    assert model.config.llm_vocab_fingerprint == vocabulary_fingerprint(tokenizer)
    lm.config._name_or_path = ""
    with pytest.raises(ValueError, match="tokenizer"):
        build_codec_from_language_model(lm, word_list=words, **TINY_ARCH)
