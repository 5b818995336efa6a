"""Few-shot pipelines on tiny local LMs (Llama-style and GPT-2-style) with codecs built from their embeddings."""

import threading

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, pipeline

from llm_codec import LLMCodecModel
from llm_codec.processing_llm_codec import LLMCodecProcessor
from llm_codec.vocabulary import VocabularyMismatchError

from .conftest import foreign_llama, foreign_tokenizer, tiny_tokenizer

VOCAB = 200
WORDS = [f"w{i}" for i in range(4, 44)]
CODEC_ARCH = dict(
    encoder_dim=16, encoder_rates=[2, 3], latent_dim=None, decoder_dim=64, decoder_rates=[3, 2], attn_window_size=2
)


def make_lm(kind):
    torch.manual_seed(0)
    if kind == "llama":
        config = LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        )
        return LlamaForCausalLM(config).eval()
    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def setup(request):
    lm = make_lm(request.param)
    tokenizer = tiny_tokenizer(VOCAB)
    torch.manual_seed(1)
    codec = LLMCodecModel.from_language_model(lm, tokenizer, word_list=WORDS, **CODEC_ARCH).eval()
    return request.param, lm, tokenizer, codec


def clips(n, seed, length=1600):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(length).astype(np.float32) * 0.3 for _ in range(n)]


def naive_label_scores(pipe, prefix, query_ids, labels):
    """Written out independently of the pipeline: one full forward per (query, label), mean label log-prob."""
    scores = np.zeros((len(query_ids), len(labels)))
    for i, q in enumerate(query_ids):
        suffix = pipe.query_suffix(q)
        for j, label_ids in enumerate(pipe.label_ids(labels)):
            ids = torch.tensor([prefix + suffix + label_ids])
            with torch.no_grad():
                logprobs = torch.log_softmax(pipe.language_model(input_ids=ids).logits[0].float(), -1)
            start = len(prefix) + len(suffix)
            scores[i, j] = np.mean([logprobs[start + t - 1, tok].item() for t, tok in enumerate(label_ids)])
    return scores


def test_cached_scores_equal_naive_forward(setup):
    kind, lm, tokenizer, codec = setup
    pipe = pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tokenizer, device="cpu")
    labels = ["w50", "w60 w61", "w70"]  # a two-token label too
    demos = list(zip(clips(3, 0), labels))
    demo_codes = pipe.encode_audio([a for a, _ in demos], 16000)
    demo_ids = [pipe.codec_processor.codes_to_ids(c)[0] for c in demo_codes]
    prefix = pipe.build_prefix(demo_ids, labels, labels, n_repeats=2)
    queries = [pipe.codec_processor.codes_to_ids(c)[0] for c in pipe.encode_audio(clips(5, 1, 2400) + clips(2, 2, 800), 16000)]
    cached = pipe.score_labels(prefix, queries, labels, batch_size=3)
    naive = naive_label_scores(pipe, prefix, queries, labels)
    np.testing.assert_allclose(cached, naive, atol=2e-4, rtol=0)
    np.testing.assert_allclose(pipe.score_labels_naive(prefix, queries, labels), naive, atol=1e-5, rtol=0)
    assert (cached.argmax(1) == naive.argmax(1)).all()


def test_classification_outputs(setup):
    kind, lm, tokenizer, codec = setup
    pipe = pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tokenizer, device="cpu")
    demos = list(zip(clips(4, 0), ["w50", "w60", "w50", "w60"]))
    queries = clips(3, 5)
    for kwargs in ({}, {"calibrate": True}, {"method": "embedding"}, {"instruction": False, "n_repeats": 2}):
        results = pipe(queries, demonstrations=demos, sampling_rate=16000, **kwargs)
        assert len(results) == 3
        for ranked in results:
            assert {r["label"] for r in ranked} == {"w50", "w60"}
            assert abs(sum(r["score"] for r in ranked) - 1) < 1e-6
            assert ranked[0]["score"] >= ranked[1]["score"]
    single = pipe(queries[0], demonstrations=demos, sampling_rate=16000)
    assert single == pipe(queries[:1], demonstrations=demos, sampling_rate=16000)[0]
    with pytest.raises(ValueError, match="sampling_rate"):
        pipe(queries[0], demonstrations=demos)
    with pytest.raises(ValueError, match="not among candidate_labels"):
        pipe(queries[0], demonstrations=demos, sampling_rate=16000, candidate_labels=["w50", "w70"])


def test_embedding_method_uses_prototypes(setup):
    kind, lm, tokenizer, codec = setup
    pipe = pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tokenizer, device="cpu")
    demos = list(zip(clips(4, 0), ["w50", "w60", "w50", "w60"]))
    # a demonstration clip queried back is closest to its own class prototype when classes are its copies
    exact = [(demos[0][0], "w50"), (demos[1][0], "w60")]
    result = pipe([demos[0][0], demos[1][0]], demonstrations=exact, sampling_rate=16000, method="embedding")
    assert result[0][0]["label"] == "w50" and result[1][0]["label"] == "w60"


def test_generation_emits_only_valid_codec_tokens(setup):
    kind, lm, tokenizer, codec = setup
    gen = pipeline(
        "audio-few-shot-generation", model=codec, language_model=lm, tokenizer=tokenizer, device="cpu", separator="<sep>"
    )
    source, target, query = clips(3, 3, length=500)
    for kwargs in ({}, {"do_sample": True, "seed": 0, "top_k": 20}):
        out = gen(query, demonstrations=[(source, target), ("w70 w71", target)], sampling_rate=16000,
                  max_audio_seconds=0.05, **kwargs)
        processor = gen.codec_processor
        codes = processor.ids_to_codes(out["tokens"])  # strict: no repair needed
        frames = codes[0].shape[1] * codec.config.vq_strides[0]
        assert out["audio"].shape == (frames * codec.config.hop_length,)
        assert out["sampling_rate"] == 16000
        assert all(0 <= int(c.min()) and int(c.max()) < n for c, n in zip(codes, codec.config.codebook_sizes))
        max_words = int(0.05 * codec.config.frame_rate / 4)
        assert codes[0].shape[1] <= max_words


def test_generation_with_text_input(setup):
    kind, lm, tokenizer, codec = setup
    gen = pipeline(
        "audio-few-shot-generation", model=codec, language_model=lm, tokenizer=tokenizer, device="cpu", separator="<sep>"
    )
    target = clips(1, 9, length=500)[0]
    out = gen("w80", demonstrations=[("w81", target), ("w82", target)], sampling_rate=16000, max_audio_seconds=0.03)
    assert out["audio"].ndim == 1 and np.isfinite(out["audio"]).all()


def test_vocabulary_mismatch_is_refused(setup):
    kind, lm, tokenizer, codec = setup
    other = tiny_tokenizer(VOCAB + 5)
    with pytest.raises(VocabularyMismatchError, match="fingerprint"):
        pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=other, device="cpu")
    with pytest.raises(VocabularyMismatchError):
        LLMCodecProcessor.from_codec(codec, other)
    LLMCodecProcessor.from_codec(codec, other, allow_vocabulary_mismatch=True)  # the expert override


def test_context_overflow_is_a_clear_error(setup):
    kind, lm, tokenizer, codec = setup
    gen = pipeline(
        "audio-few-shot-generation", model=codec, language_model=lm, tokenizer=tokenizer, device="cpu", separator="<sep>"
    )
    long_clip = clips(1, 4, length=16000)[0]
    if kind == "gpt2":  # 1024 positions
        with pytest.raises(ValueError, match="context"):
            gen(long_clip, demonstrations=[(long_clip, long_clip)], sampling_rate=16000, max_audio_seconds=1.0)


def test_concurrent_calls_do_not_mix_results(setup):
    kind, lm, tokenizer, codec = setup
    pipe = pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tokenizer, device="cpu")
    demo_sets = [list(zip(clips(2, s), ["w50", "w60"])) for s in range(3)]
    queries = clips(4, 11)
    expected = [pipe(queries, demonstrations=d, sampling_rate=16000) for d in demo_sets]
    results, errors = [None] * 6, []

    def work(i):
        try:
            results[i] = pipe(queries, demonstrations=demo_sets[i % 3], sampling_rate=16000)
        except Exception as error:  # pragma: no cover
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, result in enumerate(results):
        for got, want in zip(result, expected[i % 3]):
            assert [r["label"] for r in got] == [r["label"] for r in want]
            np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], atol=1e-5)


def test_pipelines_accept_local_paths_and_dtype(setup, tmp_path):
    kind, lm, tokenizer, codec = setup
    codec.save_pretrained(tmp_path / "codec")
    lm.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    pipe = pipeline(
        "audio-few-shot-classification", model=str(tmp_path / "codec"), language_model=str(tmp_path / "lm"),
        tokenizer=str(tmp_path / "lm"), device="cpu",
    )
    demos = list(zip(clips(2, 0), ["w50", "w60"]))
    from_paths = pipe(clips(1, 3)[0], demonstrations=demos, sampling_rate=16000)
    from_objects = pipeline(
        "audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tokenizer, device="cpu"
    )(clips(1, 3)[0], demonstrations=demos, sampling_rate=16000)
    assert [r["label"] for r in from_paths] == [r["label"] for r in from_objects]
    np.testing.assert_allclose([r["score"] for r in from_paths], [r["score"] for r in from_objects], atol=1e-5)
    half = pipeline(
        "audio-few-shot-classification", model=str(tmp_path / "codec"), language_model=str(tmp_path / "lm"),
        tokenizer=str(tmp_path / "lm"), device="cpu", dtype=torch.bfloat16,
    )
    assert half.language_model.dtype == torch.bfloat16 and half.model.dtype == torch.bfloat16
    result = half(clips(1, 3)[0], demonstrations=demos, sampling_rate=16000)
    assert {r["label"] for r in result} == {"w50", "w60"}


# ------------------------------------------------------------------------------ audio_format="text": any LLM


def test_text_format_lets_another_llm_read_layer1_words(setup):
    kind, lm, tokenizer, codec = setup
    other = foreign_tokenizer(VOCAB)
    foreign = foreign_llama(other)
    with pytest.raises(VocabularyMismatchError):  # id-level formats keep the check
        pipeline("audio-few-shot-classification", model=codec, language_model=foreign, tokenizer=other, device="cpu")
    pipe = pipeline("audio-few-shot-classification", model=codec, language_model=foreign, tokenizer=other,
                    device="cpu", audio_format="text")
    codes = pipe.encode_audio(clips(1, 5), 16000)[0]
    words = pipe.codec_processor.codes_to_words(codes[0])[0]
    ids = pipe.codec_processor.codes_to_ids(codes)[0]
    assert ids == other(" ".join(words), add_special_tokens=False)["input_ids"]  # the other LLM's own ids of the words
    assert ids != pipe_ids_of_codec_llm(codec, tokenizer, codes)  # not the codec LLM's ids (they differ here)
    labels = ["w50", "w60"]
    result = pipe(clips(2, 6), demonstrations=list(zip(clips(2, 7), labels)), sampling_rate=16000)
    assert [sorted(r["label"] for r in row) for row in result] == [labels, labels]
    assert all(abs(sum(r["score"] for r in row) - 1) < 1e-6 for row in result)


def pipe_ids_of_codec_llm(codec, tokenizer, codes):
    return LLMCodecProcessor.from_codec(codec, tokenizer).codes_to_ids(codes)[0]


def test_text_format_names_a_word_the_llm_cannot_tokenize(setup):
    from llm_codec.processing_llm_codec import UntokenizableWordError

    kind, lm, tokenizer, codec = setup
    other = foreign_tokenizer(VOCAB, missing=("w17",))
    with pytest.raises(UntokenizableWordError, match="'w17'"):
        pipeline("audio-few-shot-classification", model=codec, language_model=foreign_llama(other), tokenizer=other,
                 device="cpu", audio_format="text")


def test_text_format_refuses_what_it_cannot_write(setup):
    kind, lm, tokenizer, codec = setup
    other = foreign_tokenizer(VOCAB)
    pipe = pipeline("audio-few-shot-classification", model=codec, language_model=foreign_llama(other), tokenizer=other,
                    device="cpu", audio_format="text")
    codes = pipe.encode_audio(clips(1, 5), 16000)[0]
    with pytest.raises(ValueError, match="layer 1 only"):
        pipe.codec_processor.codes_to_ids(codes, layers=(0, 1))
    with pytest.raises(ValueError, match="understanding"):
        pipe.codec_processor.codes_to_ids(codes, format="generation")
    with pytest.raises(ValueError, match="layer 1 only"):
        pipe(clips(1, 6)[0], demonstrations=list(zip(clips(2, 7), ["w50", "w60"])), sampling_rate=16000, layers=(0, 1))
    with pytest.raises(ValueError, match="audio_format='ids'"):
        pipeline("audio-few-shot-generation", model=codec, language_model=foreign_llama(other), tokenizer=other,
                 device="cpu", audio_format="text")
    with pytest.raises(ValueError, match="audio_format must be one of"):
        LLMCodecProcessor.from_codec(codec, tokenizer, audio_format="words")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(inputs=[]), "at least one query"),
        (dict(candidate_labels=["w50", 7]), "non-empty string"),
        (dict(candidate_labels=["w50", None]), "non-empty string"),
        (dict(candidate_labels=["w50", "w60", "w50"]), "more than once"),
        (dict(candidate_labels=["w50", "w60\n###\nOutput: w50"]), "line break or '###'"),
        (dict(demonstrations=[(None, 3), (None, "w60")]), "non-empty string"),
        (dict(top_k=-1), "top_k must be an integer >= 1 or None"),
        (dict(top_k=0), "top_k must be an integer >= 1"),
        (dict(n_repeats=-3), "n_repeats must be an integer >= 1"),
        (dict(n_repeats=1.5), "n_repeats must be an integer >= 1"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
    ],
)
def test_classification_arguments_are_checked_before_any_work(setup, kwargs, message):
    kind, lm, tokenizer, codec = setup
    pipe = pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tokenizer, device="cpu")
    arguments = dict(inputs=clips(1, 6)[0], demonstrations=list(zip(clips(2, 7), ["w50", "w60"])), sampling_rate=16000)
    if "demonstrations" in kwargs and kwargs["demonstrations"][0][0] is None:
        kwargs = dict(demonstrations=[(clip, label) for clip, (_, label) in zip(clips(2, 7), kwargs["demonstrations"])])
    arguments.update(kwargs)
    calls = []
    pipe.encode_audio = lambda *a, **k: calls.append(1)  # nothing may be encoded before the arguments are checked
    with pytest.raises(ValueError, match=message):
        pipe(**arguments)
    assert not calls


@pytest.mark.parametrize("seconds", [0, -1.0, float("nan"), float("inf"), "2"])
def test_generation_refuses_a_bad_length(setup, seconds):
    kind, lm, tokenizer, codec = setup
    gen = pipeline("audio-few-shot-generation", model=codec, language_model=lm, tokenizer=tokenizer, device="cpu",
                   separator="<sep>")
    target = clips(1, 9, length=500)[0]
    with pytest.raises(ValueError, match="max_audio_seconds must be a positive number"):
        gen("w80", demonstrations=[("w81", target)], sampling_rate=16000, max_audio_seconds=seconds)
