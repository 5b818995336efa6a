"""LLMCodecProcessor: codes <-> LLM token ids (both serialisations), errors and the repair rule."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, LlamaForCausalLM

from llm_codec import LLMCodecFeatureExtractor, LLMCodecModel
from llm_codec.processing_llm_codec import CodeSequenceError, LLMCodecProcessor

from .conftest import tiny_tokenizer

VOCAB = 200
# words of one and of two tokens; "w5 w6"-style two-token words exercise the trie and its prefixes
WORDS = [f"w{i}" for i in range(4, 40)]
ARCH = dict(encoder_dim=16, encoder_rates=[2, 3], latent_dim=None, decoder_dim=64, decoder_rates=[3, 2], attn_window_size=8)


@pytest.fixture(scope="module")
def codec_and_processor():
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                      intermediate_size=64)).eval()
    tokenizer = tiny_tokenizer(VOCAB)
    codec = LLMCodecModel.from_language_model(lm, tokenizer, word_list=WORDS, **ARCH).eval()
    return codec, LLMCodecProcessor.from_codec(codec, tokenizer, separator="<sep>"), tokenizer


def random_codes(codec, windows, batch=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    t1 = windows * 2  # attention window 8 frames = 2 layer-1 codes
    return tuple(
        torch.randint(0, n, (batch, t1 * codec.config.vq_strides[0] // s), generator=generator)
        for n, s in zip(codec.config.codebook_sizes, codec.config.vq_strides)
    )


def test_understanding_format_is_word_ids_of_chosen_layers(codec_and_processor):
    codec, processor, tokenizer = codec_and_processor
    codes = random_codes(codec, 2)
    words = processor.codes_to_words(codes[0])[0]
    ids = processor.codes_to_ids(codes)[0]
    assert ids == tokenizer(" " + " ".join(words), add_special_tokens=False)["input_ids"]
    assert processor.codes_to_text(codes)[0] == " ".join(words)
    both = processor.codes_to_ids(codes, layers=(0, 2))[0]
    assert both == ids + codes[2][0].tolist()



def _with_layer1(codec, layer1, batch=1):
    """Codes whose layer 1 is `layer1` (a list of codes), the other layers random and aligned to it."""
    codes = list(random_codes(codec, len(layer1) // 2, batch=batch))
    codes[0] = torch.tensor([layer1] * batch)
    return tuple(codes)


@pytest.mark.parametrize("audio_format", ["ids", "text"])
def test_collapse_repeats_writes_each_run_of_layer1_codes_once(codec_and_processor, audio_format):
    codec, _, tokenizer = codec_and_processor
    processor = LLMCodecProcessor.from_codec(codec, tokenizer, separator="<sep>", audio_format=audio_format)
    a, b, c = 3, 7, 1  # "a b b b c c a a" -> "a b c a" (a later run of a is kept: only neighbours collapse)
    codes = _with_layer1(codec, [a, b, b, b, c, c, a, a])
    collapsed = processor.codes_to_ids(codes, collapse_repeats=True)[0]
    words = [WORDS[i] for i in (a, b, c, a)]
    assert collapsed == tokenizer(" " + " ".join(words), add_special_tokens=False)["input_ids"]
    assert collapsed == processor.codes_to_ids((torch.tensor([[a, b, c, a]]),))[0]
    assert processor.codes_to_text(codes, collapse_repeats=True)[0].split() == words
    assert len(processor.codes_to_ids(codes)[0]) > len(collapsed)  # off (the default): every code written
    assert processor.codes_to_text(codes)[0].split() == [WORDS[i] for i in (a, b, b, b, c, c, a, a)]
    # a sequence without repeats is unchanged; padding is dropped before collapsing; every item of a batch
    distinct = _with_layer1(codec, [a, b, c, a], batch=2)
    assert processor.codes_to_ids(distinct, collapse_repeats=True) == processor.codes_to_ids(distinct)
    padded = (torch.tensor([[a, a, b, b], [c, c, c, c]]),)
    assert processor.codes_to_ids(padded, torch.tensor([[3], [4]]), collapse_repeats=True) == [
        processor.codes_to_ids((torch.tensor([a, b]),))[0], processor.codes_to_ids((torch.tensor([c]),))[0]
    ]


def test_collapse_repeats_is_refused_where_layers_are_aligned_or_inverted(codec_and_processor):
    codec, processor, _ = codec_and_processor
    codes = random_codes(codec, 2)
    with pytest.raises(ValueError, match="layers=\\(0,\\).*aligned to layer 1"):
        processor.codes_to_ids(codes, layers=(0, 1), collapse_repeats=True)
    with pytest.raises(ValueError, match="aligned to layer 1"):
        processor.codes_to_text(codes, layers=(1,), collapse_repeats=True)
    with pytest.raises(ValueError, match="invertible"):
        processor.codes_to_ids(codes, format="generation", collapse_repeats=True)


def test_generation_round_trip_from_audio(codec_and_processor):
    codec, processor, _ = codec_and_processor
    encoded = codec.encode(torch.randn(2, 1, 3000), padding_mask=torch.tensor([[1] * 3000, [1] * 2000 + [0] * 1000]))
    all_ids = processor.codes_to_ids(encoded.audio_codes, encoded.audio_codes_lengths, format="generation")
    for i, ids in enumerate(all_ids):
        back = processor.ids_to_codes(ids)
        for k, layer in enumerate(back):
            n = int(encoded.audio_codes_lengths[i, k])
            assert torch.equal(layer[0], encoded.audio_codes[k][i, :n])
        audio = codec.decode(back).audio_values
        assert audio.shape[-1] == back[2].shape[1] * codec.config.hop_length


@settings(max_examples=25, deadline=None)
@given(windows=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_generation_round_trip_property(codec_and_processor, windows, seed):
    codec, processor, _ = codec_and_processor
    codes = random_codes(codec, windows, seed=seed)
    ids = processor.codes_to_ids(codes, format="generation")[0]
    back = processor.ids_to_codes(ids)
    assert all(torch.equal(a, b) for a, b in zip(codes, back))


def test_malformed_sequences_raise_with_position(codec_and_processor):
    codec, processor, _ = codec_and_processor
    ids = processor.codes_to_ids(random_codes(codec, 2), format="generation")[0]
    separator = processor.separator_id()
    cut = ids.index(separator)
    with pytest.raises(CodeSequenceError, match="No separator"):
        processor.ids_to_codes(ids[:cut] + ids[cut + 1 :])
    with pytest.raises(CodeSequenceError, match="position 1"):
        processor.ids_to_codes(ids[:1] + [150] + ids[2:])  # 150 is not a layer-1 word
    with pytest.raises(CodeSequenceError, match="truncated"):
        processor.ids_to_codes(ids[:-5])
    with pytest.raises(CodeSequenceError, match="truncated"):
        processor.ids_to_codes(ids + [5])
    with pytest.raises(CodeSequenceError, match="multiple of 2"):
        processor.ids_to_codes(ids[: cut - 1] + ids[cut:])  # 3 words: not a whole window


def test_repair_cuts_to_whole_windows(codec_and_processor):
    codec, processor, _ = codec_and_processor
    codes = random_codes(codec, 3)
    ids = processor.codes_to_ids(codes, format="generation")[0]
    repaired = processor.ids_to_codes(ids[:-1], repair=True)  # layer 3 short by one id
    assert [c.shape[1] for c in repaired] == [4, 8, 16]  # two whole windows remain
    assert all(torch.equal(a[:, : b.shape[1]], b) for a, b in zip(codes, repaired))
    with pytest.raises(CodeSequenceError, match="cannot repair"):
        processor.ids_to_codes(ids[: ids.index(processor.separator_id()) + 3], repair=True)


def test_codes_outside_codebooks_are_refused(codec_and_processor):
    codec, processor, _ = codec_and_processor
    codes = list(random_codes(codec, 1))
    codes[0] = codes[0] + 1000
    with pytest.raises(CodeSequenceError, match="outside the word list"):
        processor.codes_to_ids(tuple(codes))
    codes = list(random_codes(codec, 1))
    codes[1] = codes[1] + VOCAB
    with pytest.raises(CodeSequenceError, match="outside its codebook"):
        processor.codes_to_ids(tuple(codes), layers=(1,))


def test_layer_subset_maps_codes_to_token_ids():
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                      intermediate_size=64)).eval()
    tokenizer = tiny_tokenizer(VOCAB)
    subset = list(range(100, 180))
    codec = LLMCodecModel.from_language_model(lm, tokenizer, word_list=WORDS, layer_subset=subset, **ARCH).eval()
    processor = LLMCodecProcessor.from_codec(codec, tokenizer, separator="<sep>")
    codes = random_codes(codec, 2)
    ids = processor.codes_to_ids(codes, layers=(1,))[0]
    assert ids == [subset[c] for c in codes[1][0].tolist()]
    full = processor.codes_to_ids(codes, format="generation")[0]
    assert all(torch.equal(a, b) for a, b in zip(processor.ids_to_codes(full), codes))
    bad = list(full)
    bad[-1] = 5  # a token id outside the layer's subset
    with pytest.raises(CodeSequenceError, match="not a code of layer 3"):
        processor.ids_to_codes(bad)


def test_processor_saves_and_reloads(codec_and_processor, tmp_path):
    codec, processor, _ = codec_and_processor
    processor.save_pretrained(tmp_path)
    loaded = LLMCodecProcessor.from_pretrained(tmp_path)
    codes = random_codes(codec, 2)
    assert loaded.codes_to_ids(codes, format="generation") == processor.codes_to_ids(codes, format="generation")


def test_ids_that_are_not_integers_are_refused():
    from llm_codec.processing_llm_codec import CodeSequenceError

    processor = LLMCodecProcessor(LLMCodecFeatureExtractor(), tiny_tokenizer(), layer1_words=[f"w{i}" for i in range(4, 44)],
                                  codebook_sizes=[40, 200, 200], attn_window_size=2, separator="<sep>")
    for bad, position in (([5, 6, 1234.7], 2), ([True, 5], 0), (["5"], 0), ([5.5], 0)):
        with pytest.raises(CodeSequenceError, match=f"position {position} is not an integer id"):
            processor.ids_to_codes(bad)


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.one_of(st.integers(-2, 210), st.floats(allow_nan=True), st.booleans(), st.text(max_size=2)),
                    max_size=40),
       repair=st.booleans())
def test_fuzz_ids_to_codes_returns_codes_or_says_why(ids, repair):
    """Any sequence: valid codes back (that serialise to the same ids when not repaired), or a CodeSequenceError."""
    processor = LLMCodecProcessor(LLMCodecFeatureExtractor(), tiny_tokenizer(), layer1_words=[f"w{i}" for i in range(4, 44)],
                                  codebook_sizes=[40, 200, 200], attn_window_size=2, separator="<sep>")
    try:
        codes = processor.ids_to_codes(ids, repair=repair)
    except CodeSequenceError:
        return
    assert len(codes) == 3 and all(c.dtype == torch.long and c.shape[0] == 1 for c in codes)
    if not repair:
        assert processor.codes_to_ids(codes, format="generation")[0] == [int(i) for i in ids]
