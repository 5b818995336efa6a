"""Grouped layer-1 words (`LLMCodecConfig.semantic_groups`): the teacher chooses a group of layer-1 words, the latent
the word within it; fitting the groups, encoding, training gradients, saving, conversion and the build check.

The processor, pipeline and harness side (an LM reads each word as its group's head) is in test_pipelines.py."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassClassValidationError as Invalid

from llm_codec import LLMCodecConfig, LLMCodecModel
from llm_codec.training import add_semantic_layer1, fit_semantic_layer1, group_layer1_words, groups_headed_by

from .test_semantic_layer1 import four_seconds, semantic_codec, semantic_config, tiny_plain_codec, tone

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 16000


def fit_clips() -> list[np.ndarray]:
    return [four_seconds(), tone(1.0, 300, 2), tone(2.5, 500, 3, amp=0.02),
            (0.1 * np.random.default_rng(5).standard_normal(5 * RATE)).astype(np.float32)]


@pytest.fixture(scope="module")
def grouped():
    """A fitted grouped codec, its fitting statistics, and a design-2 twin fitted on the same clips (same weights)."""
    codec = semantic_codec(semantic_groups=True)
    stats = fit_semantic_layer1(codec, fit_clips(), progress=False)
    twin = semantic_codec()  # same seed: the same weights, without groups
    fit_semantic_layer1(twin, fit_clips(), progress=False)
    return codec, stats, twin


def encode(codec, clip: np.ndarray):
    with torch.no_grad():
        return codec.encode(torch.from_numpy(clip)[None, None])


def test_config_needs_a_teacher_and_round_trips():
    with pytest.raises(Invalid, match="semantic_groups"):
        semantic_config(semantic_teacher=None, semantic_groups=True)
    again = LLMCodecConfig.from_dict(semantic_config(semantic_groups=True).to_dict())
    assert again.semantic_groups is True
    assert semantic_config().semantic_groups is False
    assert LLMCodecModel(semantic_config()).quantizer.layers[0].word_heads is None
    codec = LLMCodecModel(semantic_config(semantic_groups=True))
    assert torch.equal(codec.quantizer.layers[0].word_heads, torch.full((50,), -1))  # unfitted
    assert all(layer.word_heads is None for layer in codec.quantizer.layers[1:])


def test_fitting_splits_the_words_into_balanced_groups_headed_by_the_centroids_words(grouped):
    codec, stats, twin = grouped
    heads = codec.quantizer.layers[0].word_heads
    words = codec.semantic.word_codes.tolist()
    # the centroids and their words are those of the same fit without groups
    assert torch.equal(codec.semantic.centroids, twin.semantic.centroids) and words == twin.semantic.word_codes.tolist()
    assert sorted(heads.unique().tolist()) == sorted(words)  # every word is in the group of one centroid's word
    assert heads[words].tolist() == words  # each head word is in its own group
    sizes = [int((heads == w).sum()) for w in words]
    assert sum(sizes) == 50 and max(sizes) - min(sizes) <= 1 and stats["group_sizes"] == sizes
    assert torch.equal(group_layer1_words(codec, words, seed=0), heads)  # deterministic
    assert groups_headed_by(heads, codec.semantic.word_codes)
    unfitted, moved_head, other_words = heads.clone(), heads.clone(), heads.clone()
    unfitted[next(w for w in range(50) if w not in words)] = -1
    moved_head[words[0]] = words[1]  # a head outside its own group
    assert not groups_headed_by(unfitted, words) and not groups_headed_by(moved_head, words)
    assert not groups_headed_by(other_words, [words[0], words[1], words[2], next(w for w in range(50) if w not in words)])
    with pytest.raises(ValueError, match="distinct"):
        group_layer1_words(codec, [words[0], words[0], words[1], words[2]])
    with pytest.raises(ValueError, match="distinct"):
        group_layer1_words(codec, [0, 1, 2, 50])


def test_groups_are_dealt_across_the_latent_space(grouped):
    """Nearby words go to different groups: for each word, its nearest neighbour (cosine, in the search table) is
    mostly in another group, which a partition by similarity would not do."""
    codec = grouped[0]
    table = F.normalize(codec.quantizer.layers[0].search_table()[0], dim=-1)
    similarity = table @ table.T
    similarity.fill_diagonal_(-2)
    neighbour = similarity.argmax(1)
    heads = codec.quantizer.layers[0].word_heads
    assert float((heads[neighbour] != heads).float().mean()) > 0.75
    # the contrast: groups made of similar words (k-means cells of the table) keep most neighbours together
    from llm_codec.training import spherical_kmeans

    cells = (table @ F.normalize(spherical_kmeans(table, 4, seed=0), dim=-1).T).argmax(1)
    assert float((cells[neighbour] != cells).float().mean()) < 0.5


def test_layer1_is_the_nearest_word_of_the_teachers_group(grouped):
    codec, _, twin = grouped
    clip = four_seconds()[: 16 * 3840]  # a whole number of pad units
    out = encode(codec, clip)
    x = torch.from_numpy(clip)[None, None]
    heads = codec.quantizer.layers[0].word_heads
    with torch.no_grad():
        teacher = codec.semantic_codes(x)
        assert torch.equal(teacher, twin.encode(x).audio_codes[0])  # the design-2 codes are the group heads
        first = out.audio_codes[0]
        assert torch.equal(heads[first], teacher)  # every code is in the group the teacher chose
        assert not torch.equal(first, teacher)  # and not just the head: the latent chooses within the group
        # by hand: cosine against the projected words of the chosen group only
        layer = codec.quantizer.layers[0]
        pooled = F.avg_pool1d(codec.encode_latents(x), 4, 4)[0].T
        table = layer.codebook_proj(layer.codebook)
        scores = F.normalize(pooled, dim=-1) @ F.normalize(table, dim=-1).T
        scores[heads[None, :] != teacher[0][:, None]] = -float("inf")
        assert torch.equal(scores.argmax(1), first[0])
        assert torch.allclose(codec.quantizer.from_codes(out.audio_codes), out.quantized_representation, atol=1e-5)
        decoded = codec.decode(out.audio_codes, audio_lengths=out.audio_lengths).audio_values
    assert decoded.shape == (1, 1, len(clip)) and torch.isfinite(decoded).all()


def test_grouped_layer1_keeps_more_of_the_latent_than_the_head_word(grouped):
    codec, _, twin = grouped
    x = torch.from_numpy(four_seconds()[: 16 * 3840])[None, None]
    with torch.no_grad():
        latents = codec.encode_latents(x)
        error = {name: float((latents - model.quantizer.layers[0].embed(
            model.encode(x).audio_codes[0]).repeat_interleave(4, dim=-1)).pow(2).mean())
            for name, model in (("grouped", codec), ("design 2", twin))}
    assert error["grouped"] < error["design 2"]


def test_unfitted_groups_and_foreign_heads_are_refused(grouped):
    codec = copy.deepcopy(grouped[0])
    layer = codec.quantizer.layers[0]
    residual = torch.randn(1, codec.config.latent_dim, 8)
    not_a_head = next(w for w in range(50) if w not in set(layer.word_heads.tolist()))
    with pytest.raises(ValueError, match="heads no group"):
        layer(residual, torch.tensor([[layer.word_heads[0], not_a_head]]))
    with pytest.raises(ValueError, match="heads no group"):
        layer(residual, torch.tensor([[-1, 60]]))
    layer.word_heads.fill_(-1)
    with pytest.raises(RuntimeError, match="never fitted"):
        encode(codec, tone(1.0, 200, 0))


def test_in_training_the_encoder_chooses_within_the_group(grouped):
    """Unlike design 2's given codes: a straight-through gradient to the latent and a commitment loss."""
    codec = copy.deepcopy(grouped[0])
    layer = codec.quantizer.layers[0].train()
    residual = torch.randn(2, codec.config.latent_dim, 8, requires_grad=True)
    heads = codec.semantic.word_codes[torch.tensor([[0, 1], [2, 3]])]
    quantized, codes, commitment, codebook = layer(residual, heads)
    assert torch.equal(layer.word_heads[codes], heads)
    assert (commitment > 0).all() and (codebook > 0).all()
    quantized.sum().backward()
    assert residual.grad is not None and residual.grad.abs().sum() > 0


def test_save_reload_and_encode_the_same(grouped, tmp_path):
    from safetensors.torch import load_file

    codec = grouped[0]
    codec.save_pretrained(tmp_path / "codec")
    assert "quantizer.layers.0.word_heads" in load_file(tmp_path / "codec" / "model.safetensors")
    loaded = LLMCodecModel.from_pretrained(tmp_path / "codec").eval()
    assert loaded.config.semantic_groups
    assert torch.equal(loaded.quantizer.layers[0].word_heads, codec.quantizer.layers[0].word_heads)
    clip = tone(2.3, 350, 7)
    ours, theirs = encode(codec, clip), encode(loaded, clip)
    assert all(torch.equal(a, b) for a, b in zip(ours.audio_codes, theirs.audio_codes))


def test_add_semantic_layer1_with_groups_keeps_every_other_weight():
    codec = tiny_plain_codec()
    before = codec.state_dict()
    new = add_semantic_layer1(codec, clusters=3, groups=True)
    assert new.config.semantic_groups and not codec.config.semantic_groups
    state = new.state_dict()
    assert set(state) - set(before) == {k for k in state if k.startswith("semantic.")} | {"quantizer.layers.0.word_heads"}
    assert all(torch.equal(state[k], v) for k, v in before.items())
    assert (new.quantizer.layers[0].word_heads == -1).all()


def test_build_codec_refuses_a_codec_without_the_configs_groups(tmp_path):
    from llm_codec.training import build_codec

    from .test_training import run_config

    add_semantic_layer1(tiny_plain_codec(), clusters=3).save_pretrained(tmp_path / "design2")
    config = run_config(tmp_path / "out", tmp_path, init_from=str(tmp_path / "design2"), semantic_teacher="resemblyzer",
                        semantic_clusters=3, semantic_groups=True)
    with pytest.raises(ValueError, match="semantic_groups: False"):
        build_codec(config)
    converted = build_codec(run_config(tmp_path / "out", tmp_path, init_from=str(tmp_path / "design2"),
                                       semantic_teacher="resemblyzer", semantic_clusters=3))
    assert converted.semantic is not None and not converted.config.semantic_groups


def test_training_fits_the_groups_and_a_resumed_run_keeps_them(tmp_path, monkeypatch):
    pytest.importorskip("accelerate")
    import dataclasses

    import soundfile as sf

    from llm_codec.training import Trainer
    from llm_codec.training import trainer as trainer_module

    from .test_training import run_config

    data = tmp_path / "data"
    data.mkdir()
    for k in range(4):
        sf.write(data / f"c{k}.wav", tone(2.5, 200 + 150 * k, k, amp=0.1 * (k + 1)), RATE)
    tiny_plain_codec().save_pretrained(tmp_path / "plain")
    config = run_config(tmp_path / "out", data, init_from=str(tmp_path / "plain"), semantic_teacher="resemblyzer",
                        semantic_clusters=3, semantic_groups=True, semantic_fit_clips=2, crop_seconds=1.92,
                        val_seconds=1.0, max_steps=2, save_every=2, eval_every=0,
                        loss_weights={"adversarial": 0.0, "feature_matching": 0.0})
    trainer = Trainer(config)
    layer = trainer.codec.quantizer.layers[0]
    assert trainer.codec.config.semantic_groups and (layer.word_heads == -1).all()
    trainer.train()
    heads = layer.word_heads.clone()
    assert sorted(heads.unique().tolist()) == sorted(trainer.codec.semantic.word_codes.tolist())
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out" / "checkpoints" / "step_00000002" / "model.safetensors"), "pt") as handle:
        saved = set(handle.keys())  # the teacher's network is rebuilt from its wheel; what was fitted is saved
    assert not any(".voice_encoder." in k or k.endswith(".codebook") for k in saved)
    assert {"codec.semantic.centroids", "codec.semantic.word_codes", "codec.quantizer.layers.0.word_heads"} <= saved

    def no_refit(*args, **kwargs):
        raise AssertionError("a resumed run must keep the checkpoint's groups")

    monkeypatch.setattr(trainer_module, "fit_semantic_layer1", no_refit)
    resumed = Trainer(dataclasses.replace(config, max_steps=3))
    assert (resumed.codec.quantizer.layers[0].word_heads == -1).all()
    resumed.train(resume=True)
    assert resumed.step == 3 and torch.equal(resumed.codec.quantizer.layers[0].word_heads, heads)


def test_training_fits_only_the_groups_of_a_codec_whose_centroids_are_fitted(grouped, tmp_path, monkeypatch):
    pytest.importorskip("accelerate")
    import soundfile as sf

    from llm_codec.training import Trainer
    from llm_codec.training import trainer as trainer_module

    from .test_training import run_config

    data = tmp_path / "data"
    data.mkdir()
    for k in range(3):
        sf.write(data / f"c{k}.wav", tone(2.5, 250 + 100 * k, k, amp=0.1), RATE)
    codec = copy.deepcopy(grouped[0])
    codec.quantizer.layers[0].word_heads.fill_(-1)  # centroids and words fitted, groups not
    codec.save_pretrained(tmp_path / "start")

    def no_refit(*args, **kwargs):
        raise AssertionError("fitted centroids must be kept")

    monkeypatch.setattr(trainer_module, "fit_semantic_layer1", no_refit)
    config = run_config(tmp_path / "out", data, init_from=str(tmp_path / "start"), semantic_teacher="resemblyzer",
                        semantic_clusters=4, semantic_groups=True, crop_seconds=1.92, val_seconds=1.0, max_steps=1,
                        save_every=0, eval_every=0, loss_weights={"adversarial": 0.0, "feature_matching": 0.0})
    trainer = Trainer(config)
    trainer.train()
    assert torch.equal(trainer.codec.semantic.centroids, grouped[0].semantic.centroids)
    # grouped on the starting codec's layer-1 table, before the step
    assert torch.equal(trainer.codec.quantizer.layers[0].word_heads,
                       group_layer1_words(grouped[0], grouped[0].semantic.word_codes.tolist(), seed=config.seed))
