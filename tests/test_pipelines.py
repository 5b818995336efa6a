"""Few-shot pipelines on tiny local LMs (Llama-style and GPT-2-style) with codecs built from their embeddings."""

import copy
import threading

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, pipeline

from llm_codec import LLMCodecModel
from llm_codec.pipeline_llm_codec import AudioFewShotClassificationPipeline
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
    # a saved codec names its pipelines (custom_pipelines): transformers runs them as remote code, so by path it
    # asks for trust_remote_code=True
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline("audio-few-shot-classification", model=str(tmp_path / "codec"), language_model=lm, tokenizer=tokenizer)
    pipe = pipeline(
        "audio-few-shot-classification", model=str(tmp_path / "codec"), language_model=str(tmp_path / "lm"),
        tokenizer=str(tmp_path / "lm"), device="cpu", trust_remote_code=True,
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
        tokenizer=str(tmp_path / "lm"), device="cpu", dtype=torch.bfloat16, trust_remote_code=True,
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


# ------------------------------------------------------------------------------ collapse_repeats


def with_layer1(pipe, transform):
    """Replaces the pipeline's codec codes (demonstrations and queries alike) by ones whose layer 1 is transformed."""
    encode = type(pipe)._encode.__get__(pipe)
    pipe._encode = lambda *a: [(transform(c[0]), *c[1:]) for c in encode(*a)]
    return pipe


@pytest.mark.parametrize("audio_format", ["ids", "text"])
def test_collapse_repeats_prompts_each_run_of_layer1_words_once(setup, audio_format):
    kind, lm, tokenizer, codec = setup
    if audio_format == "text":
        tokenizer = foreign_tokenizer(VOCAB)
        lm = foreign_llama(tokenizer)
    pipe = pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tokenizer,
                    device="cpu", audio_format=audio_format)
    labels = ["w50", "w60", "w50"]
    demos, queries = list(zip(clips(3, 0), labels)), clips(3, 1)
    processor = pipe.codec_processor
    # the codes as the codec gives them, every layer-1 code written three times over: runs of repeats
    repeated = with_layer1(pipe, lambda c: c.repeat_interleave(3, dim=1))
    codes = repeated.encode_audio([a for a, _ in demos], 16000)
    collapsed_ids = [processor.codes_to_ids(c, collapse_repeats=True)[0] for c in codes]
    assert collapsed_ids == [processor.codes_to_ids((torch.unique_consecutive(c[0], dim=1),))[0] for c in codes]
    on = repeated.build_context(demos, sampling_rate=16000, collapse_repeats=True)
    off = repeated.build_context(demos, sampling_rate=16000)
    assert on.prefix_ids == repeated.build_prefix(collapsed_ids, labels, ["w50", "w60"])
    assert len(on.prefix_ids) < len(off.prefix_ids)
    runs = {method: repeated(queries, demonstrations=demos, sampling_rate=16000, method=method, collapse_repeats=True)
            for method in ("icl", "embedding")}
    # the same scores as a pipeline fed codes without repeats (each run already written once), collapse off
    distinct = pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tokenizer,
                        device="cpu", audio_format=audio_format)
    distinct = with_layer1(distinct, lambda c: torch.unique_consecutive(c, dim=1))
    for method, rankings in runs.items():
        expected = distinct(queries, demonstrations=demos, sampling_rate=16000, method=method)
        uncollapsed = repeated(queries, demonstrations=demos, sampling_rate=16000, method=method)
        for ours, theirs, other in zip(rankings, expected, uncollapsed):
            assert [r["label"] for r in ours] == [r["label"] for r in theirs]
            np.testing.assert_allclose([r["score"] for r in ours], [r["score"] for r in theirs], atol=1e-5)
            assert {r["label"]: r["score"] for r in ours} != {r["label"]: r["score"] for r in other}
    with pytest.raises(ValueError, match="belong to each call"):
        classify_pipe(setup, collapse_repeats=True)


def test_collapse_repeats_is_on_by_default_for_a_teacher_computed_layer1(setup, monkeypatch):
    from llm_codec.modeling_llm_codec import LLMCodecSemanticLayer1
    from llm_codec.training import fit_semantic_layer1

    _, lm, tokenizer, _ = setup
    # hop 160 and layer-1 stride 4: one teacher window step (4 mel frames) per layer-1 code; random teacher weights
    monkeypatch.setattr(LLMCodecSemanticLayer1, "load_teacher_weights", lambda self, path=None: None)
    torch.manual_seed(1)
    codec = LLMCodecModel.from_language_model(
        lm, tokenizer, word_list=WORDS, encoder_dim=8, encoder_rates=[4, 5, 8], latent_dim=None, decoder_dim=64,
        decoder_rates=[8, 5, 4], attn_window_size=2, attn_head_dim=16, semantic_teacher="resemblyzer",
        semantic_clusters=3,
    ).eval()
    fit_semantic_layer1(codec, clips(6, 5, length=16000), progress=False)
    pipe = pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tokenizer, device="cpu")
    demos = list(zip(clips(2, 0, length=8000), ["w50", "w60"]))
    words = pipe.encode_audio([demos[0][0]], 16000)[0][0]
    assert words.shape[1] > len(torch.unique_consecutive(words[0]))  # slowly varying words: runs of repeats
    default = pipe.build_context(demos, sampling_rate=16000)
    assert default.collapse_repeats is True
    assert default.prefix_ids == pipe.build_context(demos, sampling_rate=16000, collapse_repeats=True).prefix_ids
    assert pipe.build_context(demos, sampling_rate=16000, collapse_repeats=False).collapse_repeats is False
    assert pipe.build_context(demos, sampling_rate=16000, layers=(0, 1)).collapse_repeats is False
    assert classify_pipe(setup).build_context(demos, sampling_rate=16000).collapse_repeats is False  # paper's layer 1


def grouped_codecs(setup, monkeypatch):
    """A fitted codec with grouped layer-1 words and its design-2 twin (same weights, centroids and head words)."""
    from llm_codec.modeling_llm_codec import LLMCodecSemanticLayer1
    from llm_codec.training import fit_semantic_layer1

    _, lm, tokenizer, _ = setup
    monkeypatch.setattr(LLMCodecSemanticLayer1, "load_teacher_weights", lambda self, path=None: None)
    codecs = []
    for groups in (True, False):
        torch.manual_seed(1)
        codec = LLMCodecModel.from_language_model(
            lm, tokenizer, word_list=WORDS, encoder_dim=8, encoder_rates=[4, 5, 8], latent_dim=None, decoder_dim=64,
            decoder_rates=[8, 5, 4], attn_window_size=2, attn_head_dim=16, semantic_teacher="resemblyzer",
            semantic_clusters=3, semantic_groups=groups,
        ).eval()
        with torch.no_grad():  # a teacher whose windows differ (PyTorch's LSTM init embeds every window alike, so
            torch.manual_seed(2)  # float noise between two loads of the same weights could flip the nearest centroid)
            for parameter in codec.semantic.voice_encoder.parameters():
                parameter.normal_(0, 0.1)
        fit_semantic_layer1(codec, clips(6, 5, length=16000), progress=False)
        codecs.append(codec)
    return codecs


def test_the_demo_prints_grouped_layer1_words_and_the_heads_the_lm_reads(setup, monkeypatch, tmp_path, capsys):
    import soundfile as sf

    from llm_codec.demo import run_demo

    _, lm, tokenizer, _ = setup
    codec, _ = grouped_codecs(setup, monkeypatch)
    for role in ("demonstrations", "queries"):
        for label, seed in (("w50", 7), ("w60", 8)):
            folder = tmp_path / "clips" / role / label
            folder.mkdir(parents=True)
            sf.write(folder / f"k{role[0]}__0.wav", clips(1, seed, length=8000)[0], 16000)
    speech = clips(1, 3, length=24000)[0]
    sf.write(tmp_path / "speech.wav", speech, 16000)
    run_demo(str(tmp_path / "out"), tmp_path / "clips", str(tmp_path / "speech.wav"), codec=codec, language_model=lm,
             tokenizer=tokenizer, max_words=100)
    printed = capsys.readouterr().out
    processor = LLMCodecProcessor.from_codec(codec, tokenizer)
    with torch.no_grad():
        codes = codec.encode(**processor(audio=speech, sampling_rate=16000, return_tensors="pt")).audio_codes[0]
    words, heads = processor.codes_to_words(codes)[0], processor.codes_to_words(processor.read_layer1(codes))[0]
    assert words != heads  # the codes that decode are not the words the LM reads
    assert f"  layer 1 as words: {' '.join(words)}\n" in printed
    assert f"  as the LM reads them (group heads): {' '.join(heads)}\n" in printed


def test_an_lm_reads_grouped_layer1_words_as_their_heads(setup, monkeypatch, tmp_path):
    _, lm, tokenizer, _ = setup
    codec, twin = grouped_codecs(setup, monkeypatch)
    heads = codec.quantizer.layers[0].word_heads
    audio = torch.from_numpy(clips(1, 3, length=24000)[0])[None, None]
    with torch.no_grad():
        codes, head_codes = codec.encode(audio).audio_codes, twin.encode(audio).audio_codes
    assert torch.equal(heads[codes[0]], head_codes[0]) and not torch.equal(codes[0], head_codes[0])
    processor = LLMCodecProcessor.from_codec(codec, tokenizer, separator="<sep>")
    assert processor.layer1_heads == heads.tolist()
    plain = LLMCodecProcessor.from_codec(twin, tokenizer, separator="<sep>")
    assert plain.layer1_heads is None
    for collapse in (False, True):  # the understanding serialisation writes the heads: design 2's prompt
        assert processor.codes_to_ids(codes, collapse_repeats=collapse) == plain.codes_to_ids(head_codes,
                                                                                               collapse_repeats=collapse)
    assert processor.codes_to_ids(codes, layers=(0, 1))[0][: len(head_codes[0][0])] == \
        plain.codes_to_ids(head_codes)[0][: len(head_codes[0][0])]
    # the generation serialisation keeps the codes themselves (they decode to audio) and inverts
    generation = processor.codes_to_ids(codes, format="generation")[0]
    assert all(torch.equal(a, b) for a, b in zip(processor.ids_to_codes(generation), codes))
    assert processor.read_layer1([int(c) for c in codes[0][0]]) == head_codes[0][0].tolist()
    assert torch.equal(processor.read_layer1(codes[0]), head_codes[0])
    processor.save_pretrained(tmp_path)
    reloaded = LLMCodecProcessor.from_pretrained(tmp_path)
    assert reloaded.layer1_heads == heads.tolist()
    assert reloaded.codes_to_ids(codes, collapse_repeats=True) == processor.codes_to_ids(codes, collapse_repeats=True)
    with pytest.raises(ValueError, match="build the processor from the model"):
        LLMCodecProcessor.from_codec(codec.config, tokenizer)
    unfitted = copy.deepcopy(codec)
    unfitted.quantizer.layers[0].word_heads.fill_(-1)
    with pytest.raises(ValueError, match="never fitted"):
        LLMCodecProcessor.from_codec(unfitted, tokenizer)


def test_cli_encode_writes_the_head_words_of_grouped_layer1_words(setup, monkeypatch, tmp_path):
    import json

    import soundfile as sf

    from llm_codec.cli import main as cli_main

    _, lm, tokenizer, _ = setup
    codec, twin = grouped_codecs(setup, monkeypatch)
    lm.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    codec.save_pretrained(tmp_path / "codec")
    clip = clips(1, 4, length=24000)[0]
    sf.write(tmp_path / "clip.wav", clip, 16000)
    assert cli_main(["encode", "--model", str(tmp_path / "codec"), "--audio", str(tmp_path / "clip.wav"), "--lm",
                     str(tmp_path / "lm"), "--separator", "<sep>", "--output", str(tmp_path / "codes.json")]) == 0
    layer1 = json.loads((tmp_path / "codes.json").read_text())["layers"]["0"]
    audio = torch.from_numpy(sf.read(tmp_path / "clip.wav", dtype="float32")[0])[None, None]
    with torch.no_grad():
        heads = twin.encode(audio)
    words = codec.config.layer1_words
    assert layer1["head_words"] == [words[c] for c in heads.audio_codes[0][0].tolist()]
    assert layer1["words"] == [words[c] for c in layer1["codes"]] and layer1["words"] != layer1["head_words"]
    assert layer1["token_ids"] == LLMCodecProcessor.from_codec(twin, tokenizer).codes_to_ids(heads.audio_codes)[0]


def test_grouped_codec_prompts_and_code_prototypes_equal_design_2s(setup, monkeypatch):
    from llm_codec.evaluation.fewshot import ClipPool, FewShotEvaluator, sample_episodes

    _, lm, tokenizer, _ = setup
    codec, twin = grouped_codecs(setup, monkeypatch)
    pipes = [pipeline("audio-few-shot-classification", model=c, language_model=lm, tokenizer=tokenizer, device="cpu")
             for c in (codec, twin)]
    demos = list(zip(clips(2, 0, length=12000), ["w50", "w60"]))
    contexts = [p.build_context(demos, sampling_rate=16000) for p in pipes]
    assert contexts[0].collapse_repeats and contexts[0].prefix_ids == contexts[1].prefix_ids
    queries = clips(2, 9, length=20000)
    results = [p(queries, demonstrations=demos, sampling_rate=16000) for p in pipes]
    assert scores_of(results[0]).tolist() == scores_of(results[1]).tolist()
    # the harness's "codes" method: histograms of the heads, as the LM reads them
    import io

    import soundfile as sf

    sources = []
    for array in clips(6, 11, length=16000):
        buffer = io.BytesIO()
        sf.write(buffer, array, 16000, format="WAV")
        sources.append(buffer.getvalue())
    pool = ClipPool(sources, ["w50", "w60", "w70"] * 2, name="grouped")
    episode = sample_episodes(pool, 3, 1, 1, 1, seed=0)[0]
    scores = [FewShotEvaluator(p, pool, progress=False).episode_scores(episode, ("codes",))["codes"] for p in pipes]
    np.testing.assert_allclose(scores[0], scores[1])


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
        (dict(collapse_repeats=True, layers=(0, 1)), "collapse_repeats=True needs layers=\\(0,\\)"),
        (dict(collapse_repeats="yes"), "collapse_repeats must be True, False or None"),
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


# ------------------------------------------------------------------- the Pipeline contract: batching, input forms


def classify_pipe(setup, **kwargs):
    kind, lm, tokenizer, codec = setup
    return pipeline("audio-few-shot-classification", model=codec, language_model=lm, tokenizer=tokenizer,
                    device="cpu", **kwargs)


def scores_of(results):
    return np.array([[r["score"] for r in sorted(row, key=lambda r: r["label"])] for row in results])


@pytest.mark.parametrize("method", [{}, {"calibrate": True}, {"method": "embedding"}])
def test_batched_scores_equal_unbatched(setup, method):
    pipe = classify_pipe(setup)
    demos = list(zip(clips(3, 0), ["w50", "w60 w61", "w70"]))
    queries = clips(3, 1, 2400) + clips(2, 2, 800)  # different lengths: the batch is padded
    one_by_one = [pipe(q, demonstrations=demos, sampling_rate=16000, **method) for q in queries]
    for batch_size in (1, 2, 5):
        batched = pipe(queries, demonstrations=demos, sampling_rate=16000, batch_size=batch_size, **method)
        assert [[r["label"] for r in row] for row in batched] == [[r["label"] for r in row] for row in one_by_one]
        np.testing.assert_allclose(scores_of(batched), scores_of(one_by_one), atol=1e-5, rtol=0)
    # the constructor's batch_size is the default of every call
    built = classify_pipe(setup, batch_size=2)(queries, demonstrations=demos, sampling_rate=16000, **method)
    np.testing.assert_allclose(scores_of(built), scores_of(one_by_one), atol=1e-5, rtol=0)


def test_batch_size_batches_the_codec_and_the_lm_and_shares_the_prompt(setup):
    pipe = classify_pipe(setup)
    calls = {"encode": [], "score": [], "prefix": 0}
    encode, score, prefix = pipe.model.encode, pipe._score_batch, pipe.prefix_cache

    def counting_encode(input_values, **kwargs):
        calls["encode"].append(input_values.shape[0])
        return encode(input_values, **kwargs)

    def counting_score(prefix_cache, prefix_len, suffixes, *args):
        calls["score"].append(len(suffixes))
        return score(prefix_cache, prefix_len, suffixes, *args)

    def counting_prefix(ids):
        calls["prefix"] += 1
        return prefix(ids)

    pipe.model.encode, pipe._score_batch, pipe.prefix_cache = counting_encode, counting_score, counting_prefix
    try:
        demos = list(zip(clips(2, 0), ["w50", "w60"]))
        pipe(clips(5, 1), demonstrations=demos, sampling_rate=16000, batch_size=2, calibrate=True)
    finally:
        del pipe.model.encode
    assert calls["encode"] == [2, 2, 2, 1]  # the demonstrations once, then the queries two by two
    assert calls["score"] == [1, 2, 2, 1]  # the content-free query once, then the queries two by two
    assert calls["prefix"] == 1  # the prompt prefix runs through the LM once per call


def test_list_generator_keydataset_and_datasets_column_agree(setup, tmp_path):
    import datasets
    import soundfile as sf
    from transformers.pipelines.pt_utils import KeyDataset

    pipe = classify_pipe(setup)
    demos = list(zip(clips(2, 0), ["w50", "w60"]))
    queries = clips(3, 1, 2000)
    paths = []
    for i, clip in enumerate(queries):
        paths.append(str(tmp_path / f"q{i}.wav"))
        sf.write(paths[-1], clip, 16000, subtype="FLOAT")  # exact samples
    arguments = dict(demonstrations=demos, sampling_rate=16000, batch_size=2)
    expected = pipe(queries, **arguments)
    dataset = datasets.Dataset.from_dict({"audio": paths, "label": [0, 1, 0]}).cast_column(
        "audio", datasets.Audio(decode=False)
    )
    as_generator = pipe((q for q in queries), **arguments)
    assert not isinstance(as_generator, list)  # streamed, like transformers' pipelines
    for got in (
        list(as_generator),
        list(pipe(KeyDataset(dataset, "audio"), **arguments)),
        pipe(dataset["audio"], **arguments),
        pipe(tuple(queries), **arguments),
        pipe([{"array": q, "sampling_rate": 16000} for q in queries], batch_size=3,
             demonstrations=[({"array": a, "sampling_rate": 16000}, label) for a, label in demos]),
    ):
        assert got == expected
    with pytest.raises(TypeError, match="KeyDataset"):
        pipe(dataset, **arguments)


def test_every_audio_form_gives_the_same_result(setup, tmp_path):
    import soundfile as sf

    pipe = classify_pipe(setup)
    demos = list(zip(clips(2, 0), ["w50", "w60"]))
    clip = clips(1, 4, 2000)[0]
    path = tmp_path / "q.wav"
    sf.write(path, clip, 16000, subtype="FLOAT")  # exact samples
    data = path.read_bytes()
    expected = pipe(clip, demonstrations=demos, sampling_rate=16000)
    forms = [
        torch.from_numpy(clip), str(path), path, data, {"array": clip, "sampling_rate": 16000},
        {"raw": clip, "sampling_rate": 16000}, {"path": str(path), "bytes": None}, {"path": None, "bytes": data},
        {"path": "elsewhere/q.wav", "bytes": data},
    ]
    for form in forms:
        assert pipe(form, demonstrations=demos, sampling_rate=16000) == expected, type(form)
    assert pipe([clip.tolist()], demonstrations=demos, sampling_rate=16000) == [expected]  # a list of float samples
    # demonstrations take the same forms
    assert pipe(path, demonstrations=[(path, "w50"), ({"path": None, "bytes": data}, "w60")]) == pipe(
        clip, demonstrations=[(clip, "w50"), (clip, "w60")], sampling_rate=16000
    )


@pytest.mark.parametrize(
    "inputs, error, message",
    [
        (12345, TypeError, "Cannot read a int as queries"),
        (None, TypeError, "Cannot read a NoneType"),
        ([clips(1, 0)[0], 3.5], TypeError, "Query 1 is a float .*np.asarray"),
        ([clips(1, 0)[0], object()], TypeError, "Query 1 is a object: a query is a numpy array"),
        ({"audio": [0.1]}, ValueError, "needs 'array' \\(or 'raw'\\) and 'sampling_rate', or 'path'"),
        ({"path": None, "bytes": None}, ValueError, "both set to None"),
        (b"not audio at all", ValueError, "Could not read the given 16 bytes as audio"),
        ({"array": clips(1, 0)[0]}, ValueError, "needs its 'sampling_rate'"),
        ("missing.wav", FileNotFoundError, "missing.wav"),
        (lambda: (q for q in [object()]), TypeError, "Cannot read a object as audio"),  # a fresh generator per run
    ],
)
def test_unreadable_inputs_say_what_is_accepted(setup, inputs, error, message):
    pipe = classify_pipe(setup)
    demos = [({"array": clip, "sampling_rate": 16000}, label) for clip, label in zip(clips(2, 0), ["w50", "w60"])]
    inputs = inputs() if callable(inputs) else inputs
    with pytest.raises(error, match=message):
        result = pipe(inputs, demonstrations=demos, sampling_rate=None if isinstance(inputs, dict) else 16000)
        list(result)  # a generator is read lazily


def test_missing_demonstrations_and_misplaced_arguments(setup):
    kind, lm, tokenizer, codec = setup
    pipe = classify_pipe(setup)
    with pytest.raises(ValueError, match="at least one `\\(audio, label\\)` demonstration"):
        pipe(clips(1, 0)[0], sampling_rate=16000)
    with pytest.raises(ValueError, match="belong to each call"):
        classify_pipe(setup, demonstrations=list(zip(clips(2, 0), ["w50", "w60"])))
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        classify_pipe(setup, batch_size=0)


def test_language_model_defaults_to_the_one_the_codec_names(setup, tmp_path):
    kind, lm, tokenizer, codec = setup
    lm.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    named = copy.deepcopy(codec)
    named.config.llm_name_or_path = str(tmp_path / "lm")
    pipe = pipeline("audio-few-shot-classification", model=named, device="cpu")
    demos = list(zip(clips(2, 0), ["w50", "w60"]))
    got = pipe(clips(2, 3), demonstrations=demos, sampling_rate=16000)
    expected = classify_pipe(setup)(clips(2, 3), demonstrations=demos, sampling_rate=16000)
    np.testing.assert_allclose(scores_of(got), scores_of(expected), atol=1e-5)
    named.config.llm_name_or_path = None
    with pytest.raises(ValueError, match="names no LM"):
        pipeline("audio-few-shot-classification", model=named, device="cpu")
    named.config.llm_name_or_path = str(tmp_path / "no-such-lm")
    with pytest.raises(ValueError, match="(?s)llm_name_or_path=.*no-such-lm.*could not be loaded.*Pass language_model="):
        pipeline("audio-few-shot-classification", model=named, device="cpu")


def test_generation_batches_and_streams_like_single_calls(setup):
    kind, lm, tokenizer, codec = setup
    gen = pipeline("audio-few-shot-generation", model=codec, language_model=lm, tokenizer=tokenizer, device="cpu",
                   separator="<sep>")
    source, target, query = clips(3, 3, length=500)
    arguments = dict(demonstrations=[(source, target), ("w70 w71", target)], sampling_rate=16000,
                     max_audio_seconds=0.05, do_sample=True, seed=0, top_k=20)
    queries = [query, "w80", {"array": source, "sampling_rate": 16000}]
    single = [gen(q, **arguments) for q in queries]
    for got in (gen(queries, batch_size=3, **arguments), list(gen((q for q in queries), batch_size=2, **arguments))):
        assert [g["tokens"] for g in got] == [s["tokens"] for s in single]
        for g, s in zip(got, single):
            assert g["sampling_rate"] == s["sampling_rate"] and g["audio"].dtype == np.float32
            np.testing.assert_array_equal(g["audio"], s["audio"])
    with pytest.raises(ValueError, match="outputs must be audio"):
        gen(query, demonstrations=[(source, "w70")], sampling_rate=16000)
    with pytest.raises(TypeError, match="a query is text \\(a str\\) or audio"):
        gen([query, 7], **arguments)


def test_a_codec_loaded_from_a_folder_runs_the_installed_pipeline(setup, tmp_path):
    """A saved folder names its pipelines (`custom_pipelines`, for remote code); the model loaded from it by the
    installed package runs the installed pipeline classes, without `trust_remote_code`."""
    kind, lm, tokenizer, codec = setup
    codec.save_pretrained(tmp_path / "codec")
    loaded = LLMCodecModel.from_pretrained(tmp_path / "codec")
    pipe = pipeline("audio-few-shot-classification", model=loaded, language_model=lm, tokenizer=tokenizer)
    assert type(pipe) is AudioFewShotClassificationPipeline
    demos = list(zip(clips(2, 0), ["w50", "w60"]))
    assert {r["label"] for r in pipe(clips(1, 3)[0], demonstrations=demos, sampling_rate=16000)} == {"w50", "w60"}
