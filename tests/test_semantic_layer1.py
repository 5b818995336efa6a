"""A teacher-computed layer 1 (`LLMCodecConfig.semantic_teacher`): config, the Resemblyzer window rule, fitting,
encoding / decoding, saving, refinement, conversion of a trained codec and training with it.

Most tests use a voice encoder with random (seeded) weights, which is enough to check the rule; the tests marked
`needs_resemblyzer` load the real weights from the installed `Resemblyzer` 0.1.4 wheel."""

import copy
import dataclasses
import json
import math
import random

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassClassValidationError as Invalid

from llm_codec import LLMCodecConfig, LLMCodecModel
from llm_codec.training import (
    add_semantic_layer1,
    choose_layer1_words,
    fit_semantic_layer1,
    spherical_kmeans,
)
from llm_codec.voice_encoder import ResemblyzerMel

from .conftest import tiny_tokenizer
from .test_training import VOCAB, WORDS, needs_resemblyzer, run_config, tiny_lm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 16000
# hop 480 (the default encoder rates), layer-1 step 4 * 480 = 1920 samples = 12 mel frames of 10 ms
SEMANTIC_ARCH = dict(encoder_dim=8, latent_dim=None, decoder_dim=64, attn_head_dim=16)
STEP_FRAMES = 12
WINDOW_FRAMES = 160  # 1.6 s


def semantic_config(**overrides) -> LLMCodecConfig:
    arguments = dict(SEMANTIC_ARCH, codebook_sizes=[50, 40, 40], codebook_dim=16, semantic_teacher="resemblyzer",
                     semantic_clusters=4)
    arguments.update(overrides)
    return LLMCodecConfig(**arguments)


def semantic_codec(seed: int = 0, **overrides) -> LLMCodecModel:
    """A tiny semantic codec, unfitted, its codebooks spread so that codes vary, and a voice encoder with random
    N(0, 0.1^2) weights: with PyTorch's default LSTM init the mel-power input saturates the LSTM and nearly every
    window embeds alike (the rule could not be checked), and with larger weights the LSTM turns chaotic."""
    torch.manual_seed(seed)
    codec = LLMCodecModel(semantic_config(**overrides)).eval()
    with torch.no_grad():
        for layer in codec.quantizer.layers:
            layer.codebook.normal_()
        for parameter in codec.semantic.voice_encoder.parameters():
            parameter.normal_(0, 0.1)
    return codec


def tone(seconds: float, f0: float, seed: int, amp: float = 0.3, noise: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * RATE))) / RATE
    x = amp * np.sin(2 * np.pi * f0 * t * (1 + 0.3 * t)) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (x + noise * rng.standard_normal(t.shape)).astype(np.float32)


def four_seconds() -> np.ndarray:
    """4 s below -30 dBFS (so it is raised first): a very quiet low tone, then a louder noisy high one."""
    return np.concatenate([tone(2.0, 150, 0, amp=0.004, noise=0.0005), tone(2.0, 900, 1, amp=0.02, noise=0.01)])


def hand_slices(n_samples: int) -> list[int]:
    """Start mel frames of the windows, by Resemblyzer's rule with a step of 12 frames, written out independently."""
    n_frames = math.ceil((n_samples + 1) / 160)
    starts = list(range(0, max(1, n_frames - WINDOW_FRAMES + STEP_FRAMES + 1), STEP_FRAMES))
    if len(starts) > 1 and (n_samples - starts[-1] * 160) / (WINDOW_FRAMES * 160) < 0.75:
        starts = starts[:-1]
    return starts


@torch.no_grad()
def hand_window_embeddings(codec: LLMCodecModel, clip: np.ndarray) -> torch.Tensor:
    """The teacher's window embeddings of a clip computed from scratch: raise to -30 dBFS if quieter (never lower),
    zero-pad to the end of the last window, Resemblyzer mel, voice encoder on mel frames [t * 12, t * 12 + 160)."""
    audio = torch.from_numpy(clip)[None].double()
    rms = audio.pow(2).mean().sqrt()
    target = 10 ** (-30 / 20)
    if rms < target:
        audio = audio * (target / rms)
    audio = audio.float()
    starts = hand_slices(audio.shape[-1])
    end = (starts[-1] + WINDOW_FRAMES) * 160
    audio = F.pad(audio, (0, max(0, end - audio.shape[-1])))
    mel = ResemblyzerMel()(audio)[0]
    return codec.semantic.voice_encoder(torch.stack([mel[s : s + WINDOW_FRAMES] for s in starts]))


@torch.no_grad()
def hand_layer1_codes(codec: LLMCodecModel, clip: np.ndarray, positions: int) -> torch.Tensor:
    """The layer-1 codes by hand: the word of the nearest centroid (cosine) of each window; positions past the last
    window take the last one's."""
    embeddings = hand_window_embeddings(codec, clip)
    nearest = (embeddings @ F.normalize(codec.semantic.centroids, dim=-1).T).argmax(dim=1)
    words = codec.semantic.word_codes[nearest]
    return words[torch.arange(positions).clamp(max=len(embeddings) - 1)]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny semantic codec fitted on four arrays (4 s, 1 s, 2.5 s, 9 s of noise) and one 16 kHz WAV (9 s); both
    kinds of source are read up to `seconds=8`."""
    codec = semantic_codec()
    wav = tmp_path_factory.mktemp("clips") / "tone.wav"
    sf.write(wav, tone(9.0, 400, 4), RATE)
    clips = [four_seconds(), tone(1.0, 300, 2), tone(2.5, 500, 3, amp=0.02),
             (0.1 * np.random.default_rng(5).standard_normal(9 * RATE)).astype(np.float32), str(wav)]
    assert not codec.semantic.is_fitted
    stats = fit_semantic_layer1(codec, clips, progress=False)
    lengths = [4 * RATE, RATE, 2.5 * RATE, 8 * RATE, 8 * RATE]
    return codec, stats, sum(len(hand_slices(int(n))) for n in lengths)


def encode(codec, clip: np.ndarray):
    with torch.no_grad():
        return codec.encode(torch.from_numpy(clip)[None, None])


# --------------------------------------------------------------------------------------------------------- config


def test_config_validation_and_round_trip():
    with pytest.raises(Invalid, match="semantic_teacher"):
        semantic_config(semantic_teacher="whisper")
    for clusters in (1, 51):  # 2..codebook_sizes[0]
        with pytest.raises(Invalid, match="semantic_clusters"):
            semantic_config(semantic_clusters=clusters)
    assert semantic_config(semantic_clusters=50).semantic_clusters == 50
    with pytest.raises(Invalid, match="sample_rate 16000"):
        semantic_config(sample_rate=24000)
    with pytest.raises(Invalid, match="multiple of 160"):  # hop 6 * 4 = 24 samples per layer-1 code
        semantic_config(encoder_rates=[2, 3], decoder_rates=[3, 2], attn_window_size=2)
    config = semantic_config(semantic_clusters=7)
    again = LLMCodecConfig.from_dict(config.to_dict())
    assert (again.semantic_teacher, again.semantic_clusters) == ("resemblyzer", 7)
    plain = LLMCodecConfig.from_dict(semantic_config(semantic_teacher=None).to_dict())
    assert plain.semantic_teacher is None and LLMCodecModel(plain).semantic is None


# ----------------------------------------------------------------------------------------------------- the layer


def test_unfitted_semantic_codec_refuses_to_encode():
    codec = semantic_codec()
    assert codec.semantic is not None and not codec.semantic.is_fitted
    assert codec.semantic.centroids.shape == (4, 256) and codec.semantic.word_codes.shape == (4,)
    assert not any(p.requires_grad for p in codec.semantic.parameters())
    codec.train()
    assert not codec.semantic.training and codec.encoder.training  # the teacher stays in eval mode
    codec.eval()
    with pytest.raises(RuntimeError, match="fit_semantic_layer1"):
        encode(codec, tone(1.0, 200, 0))


def test_fitting_gives_unit_centroids_and_distinct_words(fitted):
    codec, stats, windows = fitted
    layer = codec.semantic
    assert layer.is_fitted
    assert torch.allclose(layer.centroids.norm(dim=-1), torch.ones(4), atol=1e-5)
    words = layer.word_codes.tolist()
    assert len(set(words)) == 4 and all(0 <= w < 50 for w in words)
    assert stats["word_codes"] == words and stats["clips"] == 5 and stats["windows"] == windows
    assert 1 <= stats["clusters_used"] <= 4
    codes = encode(codec, four_seconds()).audio_codes[0]  # every layer-1 code is one of the words
    assert set(codes.flatten().tolist()) <= set(words)


def test_layer1_codes_follow_the_window_rule(fitted):
    codec = fitted[0]
    quiet = four_seconds()
    assert np.sqrt(np.mean(quiet.astype(np.float64) ** 2)) < 10 ** (-30 / 20)  # raised to -30 dBFS first
    loud = quiet * np.float32(8)  # above -30 dBFS: left as it is
    positions = math.ceil(len(quiet) / codec.config.pad_multiple) * codec.config.pad_multiple // 1920
    windows = len(hand_slices(len(quiet)))
    assert positions == 34 and windows == 22  # positions 22..33 reuse the last window
    for clip in (quiet, loud):
        audio = torch.from_numpy(clip)
        hand = hand_window_embeddings(codec, clip)
        embeddings = codec.semantic.window_embeddings(audio)
        assert embeddings.shape == hand.shape == (windows, 256)
        assert torch.allclose(embeddings, hand, atol=1e-5)
        assert torch.equal(codec.semantic.window_embeddings(audio, positions),
                           embeddings[torch.arange(positions).clamp(max=windows - 1)])
        codes = encode(codec, clip).audio_codes[0][0]
        assert codes.shape == (positions,)
        assert torch.equal(codes, hand_layer1_codes(codec, clip, positions))
        assert (codes[windows - 1 :] == codes[windows - 1]).all()
        assert torch.equal(codec.semantic_codes(audio[None, None], frames=positions * 4)[0], codes)
        # again with centroids that make the codes vary along the clip: those of windows 0, 7, 14 and 21
        varied = copy.deepcopy(codec)
        varied.semantic.centroids.copy_(hand[[0, 7, 14, 21]])
        varied_codes = encode(varied, clip).audio_codes[0][0]
        assert torch.equal(varied_codes, hand_layer1_codes(varied, clip, positions))
        words = varied.semantic.word_codes
        assert [int(varied_codes[t]) for t in (0, 7, 14)] == words[:3].tolist()
        assert (varied_codes[21:] == words[3]).all()
    # the quiet clip is raised to -30 dBFS: a still quieter copy gets the same codes
    assert torch.equal(encode(codec, quiet * np.float32(0.3)).audio_codes[0][0], encode(codec, quiet).audio_codes[0][0])


def test_a_clip_shorter_than_a_window_has_one_code(fitted):
    codec = fitted[0]
    clip = tone(1.0, 300, 7)
    codes = encode(codec, clip).audio_codes[0][0]
    assert len(codes) == 10 and (codes == codes[0]).all()
    assert torch.allclose(codec.semantic.window_embeddings(torch.from_numpy(clip)), hand_window_embeddings(codec, clip),
                          atol=1e-5)  # one window, zero-padded to 1.6 s
    assert torch.equal(codes, hand_layer1_codes(codec, clip, len(codes)))


def test_padded_batch_items_get_their_codes_alone():
    """Each item's windows and its -30 dBFS raise use its own samples only, not the batch padding."""
    clips = [four_seconds(), tone(2.2, 600, 8, amp=0.005, noise=0.002), tone(0.7, 250, 9, amp=0.01)]
    codec = semantic_codec(semantic_clusters=12)
    fit_semantic_layer1(codec, clips + [np.zeros(RATE, np.float32)], progress=False)  # silence: a centroid too
    longest = max(len(c) for c in clips)
    batch = torch.randn(len(clips), 1, longest) * 0.5  # junk in the padding, masked out
    mask = torch.zeros(len(clips), longest, dtype=torch.long)
    for i, clip in enumerate(clips):
        batch[i, 0, : len(clip)], mask[i, : len(clip)] = torch.from_numpy(clip), 1
    with torch.no_grad():
        out = codec.encode(batch, padding_mask=mask)
    for i, clip in enumerate(clips):
        alone = encode(codec, clip)
        assert torch.equal(alone.audio_codes[0][0], hand_layer1_codes(codec, clip, alone.audio_codes[0].shape[1]))
        for k in range(3):
            n = int(out.audio_codes_lengths[i, k])
            assert n == alone.audio_codes[k].shape[1]
            assert torch.equal(out.audio_codes[k][i, :n], alone.audio_codes[k][0]), (i, k)


def test_layers_2_and_3_quantize_what_the_teachers_word_leaves(fitted):
    codec = fitted[0]
    clip = four_seconds()[: 16 * 3840]  # a whole number of pad units: no padding
    x = torch.from_numpy(clip)[None, None]
    out = encode(codec, x[0, 0].numpy())
    codes = out.audio_codes
    with torch.no_grad():
        assert torch.allclose(codec.quantizer.from_codes(codes), out.quantized_representation, atol=1e-5)
        layers = codec.quantizer.layers
        first = layers[0].embed(codes[0]).repeat_interleave(4, dim=-1)  # the teacher's word, through the projection
        latents = codec.encode_latents(x)
        _, second, _, _ = layers[1](latents - first)
        assert torch.equal(second, codes[1])
        rest = latents - first - layers[1].embed(second).repeat_interleave(2, dim=-1)
        assert torch.equal(layers[2](rest)[1], codes[2])
        rest_quantized = layers[1].embed(codes[1]).repeat_interleave(2, dim=-1) + layers[2].embed(codes[2])
        assert torch.allclose(out.quantized_representation - first, rest_quantized, atol=1e-5)
        # the plain nearest-entry search would mostly pick other words: layer 1 really is the teacher's
        assert not torch.equal(layers[0].lookup(F.avg_pool1d(latents, 4, 4)), codes[0])
        decoded = codec.decode(codes, audio_lengths=out.audio_lengths).audio_values
    assert decoded.shape == (1, 1, len(clip)) and torch.isfinite(decoded).all()


def test_training_module_feeds_the_teachers_codes_to_the_quantizer(fitted):
    from llm_codec.training.generator import CodecTrainingModule

    codec = copy.deepcopy(fitted[0])
    codec.apply_weight_norm()
    module = CodecTrainingModule(codec).train()
    seen = []
    codec.quantizer.register_forward_pre_hook(
        lambda _, args, kwargs: seen.append(args[1] if len(args) > 1 else kwargs.get("first_codes")), with_kwargs=True)
    audio = torch.from_numpy(np.stack([four_seconds()[:30720], tone(1.92, 700, 6)]))[:, None]
    out = module(audio)
    assert len(seen) == 1 and seen[0] is not None and seen[0].shape == (2, 16)
    assert torch.equal(seen[0], codec.semantic_codes(audio))
    out["codebook"].backward()
    projection = codec.quantizer.layers[0].codebook_proj.weight.grad
    assert projection is not None and projection.abs().sum() > 0  # the codebook loss trains layer 1 towards them
    assert not any(p.grad is not None for p in codec.semantic.parameters())


def test_given_codes_of_a_wrong_shape_are_refused():
    codec = semantic_codec()
    layer = codec.quantizer.layers[0]  # stride 4
    residual = torch.randn(2, codec.config.latent_dim, 8)
    for shape in [(2, 3), (1, 2), (2,), (2, 8)]:
        with pytest.raises(ValueError, match="shape"):
            layer(residual, torch.zeros(shape, dtype=torch.long))
    given = torch.tensor([[1, 2], [3, 4]])
    with torch.no_grad():
        quantized, codes, _, _ = layer(residual, given)
    assert torch.equal(codes, given)
    assert torch.allclose(quantized, layer.embed(given).repeat_interleave(4, dim=-1))


def test_given_codes_in_training_have_no_straight_through_path_and_no_commitment():
    codec = semantic_codec()
    layer = codec.quantizer.layers[0].train()  # stride 4
    residual = torch.randn(2, codec.config.latent_dim, 8, requires_grad=True)
    given = torch.tensor([[1, 2], [3, 4]])
    quantized, _, commitment, codebook = layer(residual, given)
    assert torch.equal(commitment, torch.zeros(2)) and (codebook > 0).all()
    torch.testing.assert_close(quantized, layer.embed(given).repeat_interleave(4, dim=-1))
    quantized.sum().backward()  # what the decoder's loss sends back reaches the projection, not the encoder
    assert residual.grad is None and layer.codebook_proj.weight.grad.abs().sum() > 0
    chosen, _, commitment, _ = layer(residual)  # the codec's own choice: straight-through and a commitment
    chosen.sum().backward()
    assert residual.grad is not None and residual.grad.abs().sum() > 0 and (commitment > 0).all()


def test_save_and_reload(fitted, tmp_path):
    from safetensors.torch import load_file, save_file

    codec = fitted[0]
    codec.save_pretrained(tmp_path / "codec")
    state = load_file(tmp_path / "codec" / "model.safetensors")
    semantic = {k for k in state if k.startswith("semantic.")}
    assert {"semantic.centroids", "semantic.word_codes", "semantic.voice_encoder.lstm.weight_ih_l0",
            "semantic.voice_encoder.linear.weight"} <= semantic
    loaded = LLMCodecModel.from_pretrained(tmp_path / "codec").eval()
    assert loaded.config.semantic_teacher == "resemblyzer" and loaded.config.semantic_clusters == 4
    assert loaded.semantic.is_fitted
    ours, theirs = codec.state_dict(), loaded.state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not [n for n, p in loaded.named_parameters() if n.startswith("semantic.") and p.requires_grad]
    assert any(p.requires_grad for p in loaded.encoder.parameters())
    # a folder without the teacher's weights is refused, not loaded with a random teacher
    broken = tmp_path / "broken"
    codec.save_pretrained(broken)
    save_file({k: v for k, v in state.items() if not k.startswith("semantic.")}, broken / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing weights"):
        LLMCodecModel.from_pretrained(broken)


def test_a_reloaded_codec_encodes_the_same(fitted, tmp_path):
    """The mel filters and window are not saved (non-persistent): loading must rebuild them, not leave the
    loader's uninitialised memory there."""
    codec = fitted[0]
    codec.save_pretrained(tmp_path / "codec")
    loaded = LLMCodecModel.from_pretrained(tmp_path / "codec").eval()
    fresh = ResemblyzerMel()
    assert torch.equal(loaded.semantic.mel.filters, fresh.filters)
    assert torch.equal(loaded.semantic.mel.window, fresh.window)
    clip = four_seconds()
    assert torch.allclose(loaded.semantic.window_embeddings(torch.from_numpy(clip)),
                          codec.semantic.window_embeddings(torch.from_numpy(clip)), atol=1e-6)
    for a, b in zip(encode(codec, clip).audio_codes, encode(loaded, clip).audio_codes):
        assert torch.equal(a, b)


def test_a_bfloat16_semantic_codec_encodes(fitted):
    codec = fitted[0]
    clip = torch.from_numpy(four_seconds())[None, None]
    with torch.no_grad():
        reference = codec.encode(clip).audio_codes[0]
        half = copy.deepcopy(codec).to(torch.bfloat16).encode(clip).audio_codes[0]
    assert half.shape == reference.shape and set(half.flatten().tolist()) <= set(codec.semantic.word_codes.tolist())
    assert (half == reference).float().mean() >= 0.8


def test_refinement_keeps_the_teachers_layer(fitted):
    from llm_codec.refinement import refine_codes

    codec = fitted[0]
    x = torch.from_numpy(tone(0.5, 300, 3))[None, None]
    with pytest.raises(ValueError, match="semantic teacher"):
        refine_codes(codec, x, steps=1, frozen_layers=0)
    refined = refine_codes(codec, x, steps=1)  # frozen_layers=1: the teacher's words stay
    assert torch.equal(refined.audio_codes[0], encode(codec, x[0, 0].numpy()).audio_codes[0])


# ----------------------------------------------------------------------------------------------------- fitting


def test_choose_layer1_words_with_a_tokenizer():
    words = [f"a{i}" for i in range(50)]
    codec = LLMCodecModel(semantic_config(layer1_words=words))
    calls = []

    def tokenizer(text, add_special_tokens=True):
        assert add_special_tokens is False
        calls.append(text)
        index = int(text.strip()[1:])
        return {"input_ids": [index] if index % 2 == 0 else [index, 0]}  # odd words are two tokens

    chosen = choose_layer1_words(codec, 10, seed=3, tokenizer=tokenizer)
    assert calls and all(text.startswith(" a") for text in calls)  # each word as the LM reads it, after a space
    assert len(chosen) == len(set(chosen)) == 10 and chosen == sorted(chosen)
    assert all(c % 2 == 0 and 0 <= c < 50 for c in chosen)
    assert choose_layer1_words(codec, 10, seed=3, tokenizer=tokenizer) == chosen  # seeded
    assert sorted(choose_layer1_words(codec, 25, tokenizer=tokenizer)) == list(range(0, 50, 2))
    with pytest.raises(ValueError, match="Only 25"):
        choose_layer1_words(codec, 26, tokenizer=tokenizer)
    assert choose_layer1_words(codec, 50) == list(range(50))  # without a tokenizer: any word
    with pytest.raises(ValueError):
        choose_layer1_words(codec, 51)


def test_spherical_kmeans_recovers_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    rotation = torch.linalg.qr(torch.randn(8, 8, generator=generator))[0]
    centres = rotation[:3] * torch.tensor([[5.0], [0.5], [2.0]])  # orthogonal directions, any length
    labels = torch.randperm(90, generator=generator) % 3
    points = centres[labels] + 0.1 * centres.norm(dim=1, keepdim=True)[labels] * torch.randn(90, 8, generator=generator)
    for seed in range(5):
        centroids = spherical_kmeans(points, 3, seed=seed)
        assert centroids.shape == (3, 8) and torch.allclose(centroids.norm(dim=-1), torch.ones(3), atol=1e-5)
        similarity = centroids @ F.normalize(centres, dim=-1).T
        assert (similarity.max(dim=0).values > 0.98).all(), seed  # every true centre has a centroid
        assert sorted(similarity.argmax(dim=1).tolist()) == [0, 1, 2], seed  # ... and a different one
        assignment = (F.normalize(points, dim=-1) @ centroids.T).argmax(dim=1)
        assert all(len(set(assignment[labels == c].tolist())) == 1 for c in range(3)), seed
    assert torch.equal(spherical_kmeans(points, 3, seed=2), spherical_kmeans(points, 3, seed=2))  # seeded
    with pytest.raises(ValueError, match="4 centroids to 3 vectors"):
        spherical_kmeans(points[:3], 4)
    with pytest.raises(ValueError):
        spherical_kmeans(points, 0)


def test_spherical_kmeans_finds_many_random_clusters():
    """k-means++ seeding and restarts: 16 random well-separated clusters (the default cluster count) are found for
    every seed; random initial points alone missed them (merged or split clusters) for most seeds."""
    for seed in range(5):
        generator = torch.Generator().manual_seed(100 + seed)
        centres = F.normalize(torch.randn(16, 32, generator=generator), dim=-1)
        labels = torch.arange(16).repeat_interleave(20)
        points = centres[labels] + 0.05 * torch.randn(320, 32, generator=generator)
        assignment = (F.normalize(points, dim=-1) @ spherical_kmeans(points, 16, seed=seed).T).argmax(dim=1)
        assert all(len(set(assignment[labels == c].tolist())) == 1 for c in range(16)), seed  # no cluster split
        assert len(set(assignment.tolist())) == 16, seed  # ... and none merged


def test_fitting_needs_a_semantic_codec_and_audio():
    plain = LLMCodecModel(semantic_config(semantic_teacher=None))
    with pytest.raises(ValueError, match="semantic_teacher"):
        fit_semantic_layer1(plain, [tone(1.0, 200, 0)], progress=False)
    with pytest.raises(ValueError, match="No audio"):
        fit_semantic_layer1(semantic_codec(), [np.zeros(0, np.float32)], progress=False)
    with pytest.raises(ValueError, match="centroids"):  # one window, four clusters
        fit_semantic_layer1(semantic_codec(), [tone(1.0, 200, 0)], progress=False)


def test_build_codec_refuses_another_cluster_count(tmp_path):
    from llm_codec.training import build_codec

    semantic_codec().save_pretrained(tmp_path / "codec")
    base = dict(init_from=str(tmp_path / "codec"), semantic_teacher="resemblyzer")
    with pytest.raises(ValueError, match="4 clusters"):
        build_codec(run_config(tmp_path / "out", tmp_path, **base, semantic_clusters=5))
    codec = build_codec(run_config(tmp_path / "out", tmp_path, **base, semantic_clusters=4))
    assert codec.config.semantic_clusters == 4 and codec.semantic is not None


# ---------------------------------------------------------------------------- with the real Resemblyzer weights


def tiny_plain_codec() -> LLMCodecModel:
    torch.manual_seed(0)
    return LLMCodecModel.from_language_model(tiny_lm(), tiny_tokenizer(VOCAB), word_list=WORDS, **SEMANTIC_ARCH)


def voice_encoder_equals_the_wheels(codec) -> bool:
    from llm_codec.voice_encoder import load_resemblyzer_state_dict

    ours = codec.semantic.voice_encoder.state_dict()
    return all(torch.equal(ours[k], v) for k, v in load_resemblyzer_state_dict().items()) and \
        set(ours) == set(load_resemblyzer_state_dict())


@needs_resemblyzer
def test_from_language_model_loads_the_teacher():
    torch.manual_seed(0)
    codec = LLMCodecModel.from_language_model(tiny_lm(), tiny_tokenizer(VOCAB), word_list=WORDS, **SEMANTIC_ARCH,
                                              semantic_teacher="resemblyzer", semantic_clusters=3)
    assert codec.config.semantic_clusters == 3 and not codec.semantic.is_fitted
    assert voice_encoder_equals_the_wheels(codec)
    assert not any(p.requires_grad for p in codec.semantic.parameters())


@needs_resemblyzer
def test_add_semantic_layer1_keeps_every_other_weight():
    codec = tiny_plain_codec().train()
    before = {k: v.clone() for k, v in codec.state_dict().items()}
    new = add_semantic_layer1(codec, clusters=3)
    assert codec.semantic is None and codec.config.semantic_teacher is None  # the original is untouched
    assert (new.config.semantic_teacher, new.config.semantic_clusters) == ("resemblyzer", 3)
    assert new.config.layer1_words == codec.config.layer1_words and new.training and not new.semantic.training
    state = new.state_dict()
    assert set(state) - set(before) == {k for k in state if k.startswith("semantic.")}
    assert all(torch.equal(state[k], v) for k, v in before.items())
    assert voice_encoder_equals_the_wheels(new) and not new.semantic.is_fitted
    assert not any(p.requires_grad for p in new.semantic.parameters())
    with pytest.raises(ValueError, match="already"):
        add_semantic_layer1(new)


@needs_resemblyzer
def test_training_converts_fits_and_resumes_without_refitting(tmp_path, monkeypatch):
    pytest.importorskip("accelerate")
    from llm_codec.training import Trainer
    from llm_codec.training import trainer as trainer_module

    data = tmp_path / "data"
    data.mkdir()
    for k in range(4):  # clips longer than the crop, so that each crop holds a whole teacher window
        sf.write(data / f"c{k}.wav", tone(2.5, 200 + 150 * k, k, amp=0.1 * (k + 1)), RATE)
    plain = tiny_plain_codec()
    assert plain.config.pad_multiple == 3840
    plain.save_pretrained(tmp_path / "plain")
    config = run_config(tmp_path / "out", data, init_from=str(tmp_path / "plain"), semantic_teacher="resemblyzer",
                        semantic_clusters=3, semantic_fit_clips=2, crop_seconds=1.92, val_seconds=1.0,
                        max_steps=2, save_every=2, eval_every=0,
                        loss_weights={"adversarial": 0.0, "feature_matching": 0.0})
    trainer = Trainer(config)
    codec = trainer.codec
    assert codec.semantic is not None and not codec.semantic.is_fitted  # converted, fitted at the first step
    projection = codec.quantizer.layers[0].codebook_proj.weight.detach().clone()
    trainer.train()
    layer = codec.semantic
    assert layer.is_fitted and voice_encoder_equals_the_wheels(codec)
    centroids, words = layer.centroids.clone(), layer.word_codes.clone()
    assert len(set(words.tolist())) == 3
    # the fitting happens before the first step; redo it and compare with what training left in place
    fresh = add_semantic_layer1(LLMCodecModel.from_pretrained(tmp_path / "plain"), clusters=3)
    assert len(trainer.train_dataset.sources) == 3  # one clip held out for validation
    order = list(range(len(trainer.train_dataset.sources)))
    random.Random(config.seed).shuffle(order)
    fit_semantic_layer1(fresh, [trainer.train_dataset.sources[i] for i in order[:2]], seed=config.seed,
                        progress=False)
    assert torch.allclose(fresh.semantic.centroids, centroids, atol=1e-5)  # unchanged by the optimiser steps
    assert torch.equal(fresh.semantic.word_codes, words)
    assert not torch.equal(projection, codec.quantizer.layers[0].codebook_proj.weight)  # trained towards the words
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["type"] == "train"] == [1, 2]
    assert all(math.isfinite(r["codebook"]) for r in log if r["type"] == "train")

    def no_refit(*args, **kwargs):
        raise AssertionError("a resumed run must keep the checkpoint's centroids")

    monkeypatch.setattr(trainer_module, "fit_semantic_layer1", no_refit)
    resumed = Trainer(dataclasses.replace(config, max_steps=3))
    assert not resumed.codec.semantic.is_fitted
    resumed.train(resume=True)
    assert resumed.step == 3
    assert torch.equal(resumed.codec.semantic.centroids, centroids)
    assert torch.equal(resumed.codec.semantic.word_codes, words)
    assert voice_encoder_equals_the_wheels(resumed.codec)


def test_training_fits_on_semantic_fit_data_when_given(tmp_path, monkeypatch):
    pytest.importorskip("accelerate")
    from llm_codec.training import Trainer, draw_fit_clips
    from llm_codec.training import trainer as trainer_module

    data, other = tmp_path / "data", tmp_path / "fit"
    data.mkdir()
    other.mkdir()
    for k in range(3):
        sf.write(data / f"c{k}.wav", tone(2.5, 200 + 150 * k, k), RATE)
    fit_paths = []
    for k in range(5):
        fit_paths.append(other / f"f{k}.wav")
        sf.write(fit_paths[-1], tone(2.0, 900 + 50 * k, k), RATE)
    seen = []
    monkeypatch.setattr(trainer_module, "fit_semantic_layer1",
                        lambda codec, clips, **kwargs: seen.append(list(clips)) or fit_semantic_layer1(codec, clips, **kwargs))
    for fit_data, expected in ((None, None), (str(other), 5)):
        config = run_config(tmp_path / f"out{len(seen)}", data, semantic_fit_data=fit_data, semantic_fit_clips=4,
                            crop_seconds=1.92, val_seconds=1.0, max_steps=1, save_every=0, eval_every=0,
                            loss_weights={"adversarial": 0.0, "feature_matching": 0.0})
        trainer = Trainer(config, codec=semantic_codec())
        trainer.train()
        drawn = [str(p) for p in seen[-1]]
        if expected is None:  # the training clips
            assert set(drawn) <= {str(s) for s in trainer.train_dataset.sources}
        else:  # four of the five fitting clips, drawn with the run's seed
            assert drawn == [str(p) for p in draw_fit_clips(sorted(fit_paths), 4, config.seed)]


def test_same_length_clips_go_through_the_teacher_together_with_the_same_embeddings():
    codec = semantic_codec()
    clips = torch.from_numpy(np.stack([tone(2.4, 200 + 300 * k, k, amp=0.05 * (k + 1)) for k in range(3)]))
    together = codec.semantic.window_embeddings(clips, positions=25)
    assert together.shape == (3, 25, 256)
    for k in range(3):
        torch.testing.assert_close(together[k], codec.semantic.window_embeddings(clips[k], positions=25),
                                   atol=1e-5, rtol=1e-4)


def test_teacher_weights_load_from_a_state_dict_strictly():
    codec, source = semantic_codec(), semantic_codec(seed=3)
    state = {k: v.half() for k, v in source.semantic.voice_encoder.state_dict().items()}
    codec.semantic.load_teacher_weights(state)
    for key, value in codec.semantic.voice_encoder.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, state[key].float())
    assert not any(p.requires_grad for p in codec.semantic.parameters())
    with pytest.raises(RuntimeError, match="Missing key"):
        codec.semantic.load_teacher_weights({k: v for k, v in state.items() if k != "linear.bias"})
