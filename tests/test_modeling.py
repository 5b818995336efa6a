import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import torch.nn.functional as F

from llm_codec import LLMCodecConfig, LLMCodecModel
from llm_codec import modeling_llm_codec as modeling

from .conftest import tiny_config


def reference_codes(model, latents):
    """The original algorithm, written plainly: project every codebook on each call, L2-normalise, argmin distance."""
    residual, all_codes = latents, []
    for layer in model.quantizer.layers:
        pooled = F.avg_pool1d(residual, layer.stride, layer.stride)
        table = layer.codebook_proj(layer.codebook)
        frames = F.normalize(pooled.transpose(1, 2).reshape(-1, pooled.shape[1]))
        normed = F.normalize(table)
        dist = frames.pow(2).sum(1, keepdim=True) - 2 * frames @ normed.t() + normed.pow(2).sum(1, keepdim=True).t()
        codes = dist.argmin(1).view(pooled.shape[0], -1)
        quantized = F.embedding(codes, table).transpose(1, 2).repeat_interleave(layer.stride, dim=-1)
        residual = residual - quantized
        all_codes.append(codes)
    return all_codes


def test_shapes_and_lengths(tiny_model):
    config = tiny_model.config
    x = torch.randn(2, 1, 1000)
    with torch.no_grad():
        out = tiny_model.encode(x)
    unit = config.pad_multiple  # 6 * lcm(4, 2) = 24
    frames = math.ceil(1000 / unit) * unit // config.hop_length
    assert [tuple(c.shape) for c in out.audio_codes] == [(2, frames // s) for s in config.vq_strides]
    assert all(c.dtype == torch.long for c in out.audio_codes)
    assert out.audio_codes_lengths.tolist() == [[frames // s for s in config.vq_strides]] * 2
    assert out.audio_lengths.tolist() == [1000, 1000]
    decoded = tiny_model.decode(out.audio_codes, audio_lengths=out.audio_lengths)
    assert decoded.audio_values.shape == (2, 1, 1000)
    assert tiny_model.decode(out.audio_codes).audio_values.shape == (2, 1, frames * config.hop_length)


def test_fast_lookup_equals_reference_algorithm(tiny_model):
    x = torch.randn(3, 1, 2400)
    with torch.no_grad():
        latents = tiny_model.encode_latents(x)
        expected = reference_codes(tiny_model, latents)
        got = tiny_model.encode(x).audio_codes
    for k, (a, b) in enumerate(zip(got, expected)):
        assert torch.equal(a, b), f"layer {k}"


def test_fast_decode_equals_projecting_the_full_codebook(tiny_model):
    codes = tiny_model.encode(torch.randn(1, 1, 2400)).audio_codes
    with torch.no_grad():
        fast = tiny_model.quantizer.from_codes(codes)
        slow = sum(
            F.embedding(c, layer.codebook_proj(layer.codebook)).transpose(1, 2).repeat_interleave(layer.stride, -1)
            for layer, c in zip(tiny_model.quantizer.layers, codes)
        )
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_projection_cache_is_reused_and_refreshed(tiny_model):
    layer = tiny_model.quantizer.layers[1]
    x = torch.randn(1, 1, 2400)
    with torch.no_grad():
        tiny_model.encode(x)
        table_before = layer.search_table()[0]
        tiny_model.encode(x)
        assert layer.search_table()[0] is table_before  # no re-projection between calls
        layer.codebook_proj.weight.mul_(-1.0)  # in-place change, as an optimizer step would do
        assert layer.search_table()[0] is not table_before
        latents = tiny_model.encode_latents(x)
        assert all(torch.equal(a, b) for a, b in zip(tiny_model.encode(x).audio_codes, reference_codes(tiny_model, latents)))
    # load_state_dict replaces values in place: the cache must follow too
    fresh = LLMCodecModel(tiny_model.config).eval()
    fresh.encode(x)
    fresh.load_state_dict(tiny_model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fresh.encode(x).audio_codes, tiny_model.encode(x).audio_codes))


def test_codebooks_are_frozen_buffers(tiny_model):
    names = dict(tiny_model.named_parameters())
    assert not any(n.endswith(".codebook") for n in names)
    buffers = dict(tiny_model.named_buffers())
    assert {f"quantizer.layers.{k}.codebook" for k in range(3)} <= set(buffers)
    tiny_model.train()
    before = [layer.codebook.clone() for layer in tiny_model.quantizer.layers]
    optimizer = torch.optim.SGD(tiny_model.parameters(), lr=0.1)
    out = tiny_model(torch.randn(2, 1, 480))
    assert out.loss is not None and out.loss.requires_grad
    (out.loss + out.audio_values.pow(2).mean()).backward()
    assert tiny_model.quantizer.layers[0].codebook_proj.weight.grad is not None
    assert tiny_model.encoder.conv_in.weight.grad is not None
    optimizer.step()
    for layer, old in zip(tiny_model.quantizer.layers, before):
        assert torch.equal(layer.codebook, old)


def test_training_losses_match_definition(tiny_model):
    tiny_model.train()
    x = torch.randn(2, 1, 480)
    torch.manual_seed(3)
    out = tiny_model(x)
    latents = tiny_model.encode_latents(x)
    residual, commit = latents, 0.0
    for layer in tiny_model.quantizer.layers:
        pooled = F.avg_pool1d(residual, layer.stride, layer.stride)
        codes = layer.lookup(pooled)
        quantized = layer.codebook_proj(layer.codebook[codes]).transpose(1, 2)
        commit = commit + F.mse_loss(pooled, quantized, reduction="none").mean([1, 2])
        residual = residual - quantized.repeat_interleave(layer.stride, -1)
    torch.testing.assert_close(out.commitment_loss, commit.mean())
    torch.testing.assert_close(out.codebook_loss, commit.mean())
    torch.testing.assert_close(out.loss, 1.25 * commit.mean())


def test_return_dict_false_matches_dataclass(tiny_model):
    x = torch.randn(1, 1, 1000)
    enc = tiny_model.encode(x)
    enc_tuple = tiny_model.encode(x, return_dict=False)
    assert all(torch.equal(a, b) for a, b in zip(enc.audio_codes, enc_tuple[0]))
    torch.manual_seed(0)
    dec = tiny_model.decode(enc.audio_codes)
    torch.manual_seed(0)
    dec_tuple = tiny_model.decode(enc.audio_codes, return_dict=False)
    assert torch.equal(dec.audio_values, dec_tuple[0])
    torch.manual_seed(0)
    fwd = tiny_model(x)
    torch.manual_seed(0)
    fwd_tuple = tiny_model(x, return_dict=False)
    assert torch.equal(fwd.audio_values, fwd_tuple[1])
    assert fwd.audio_values.shape == x.shape


def test_batched_encoding_agrees_with_single_items(tiny_model):
    lengths = [1000, 2399, 1601, 480]
    clips = [torch.randn(1, 1, n) for n in lengths]
    batch = torch.zeros(len(clips), 1, max(lengths))
    mask = torch.zeros(len(clips), max(lengths), dtype=torch.long)
    for i, clip in enumerate(clips):
        batch[i, :, : clip.shape[-1]] = clip
        mask[i, : clip.shape[-1]] = 1
    batch[0, :, 1000:] = 5.0  # garbage in the padding must be ignored
    with torch.no_grad():
        batched = tiny_model.encode(batch, padding_mask=mask)
    for i, clip in enumerate(clips):
        single = tiny_model.encode(clip)
        for k, stride in enumerate(tiny_model.config.vq_strides):
            n = single.audio_codes[k].shape[1]
            assert batched.audio_codes_lengths[i, k] == n
            assert torch.equal(batched.audio_codes[k][i, :n], single.audio_codes[k][0]), (i, k)


def test_long_audio_is_chunked_with_identical_codes(tiny_model):
    chunked = LLMCodecModel(tiny_config()).eval()
    chunked.load_state_dict(tiny_model.state_dict())
    chunked.encode_chunk_s, chunked.encode_context_s = 0.06, 0.03
    x = torch.randn(1, 1, 16000)  # 1 s = many chunks of 0.06 s
    calls = []
    hook = chunked.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[-1]))
    with torch.no_grad():
        a = tiny_model.encode(x).audio_codes
        b = chunked.encode(x).audio_codes
    hook.remove()
    assert len(calls) > 5 and max(calls) < 16000 / 4
    for k in range(3):
        assert torch.equal(a[k], b[k]), k


def test_tiled_decoder_equals_untiled(tiny_model, monkeypatch):
    codes = tiny_model.encode(torch.randn(1, 1, 16000)).audio_codes
    with torch.no_grad():
        torch.manual_seed(5)
        untiled = tiny_model.decode(codes).audio_values
        monkeypatch.setattr(modeling.LLMCodecDecoderBlock, "tile_samples", 500)
        torch.manual_seed(5)
        tiled = tiny_model.decode(codes).audio_values
    torch.testing.assert_close(tiled, untiled, rtol=0, atol=1e-5)


def test_long_code_sequences_are_decoded_in_chunks_with_the_same_audio(tiny_model):
    config = tiny_config()
    chunked = LLMCodecModel(config).eval()
    chunked.load_state_dict(tiny_model.state_dict())
    chunked.decode_chunk_s = 0.01  # about 26 latent frames per chunk
    codes = tiny_model.encode(torch.randn(2, 1, 8000)).audio_codes  # 1334 frames: many chunks, a batch of two
    calls = []
    hook = chunked.decoder.conv_out.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[-1]))
    with torch.no_grad():
        whole = tiny_model.decode(codes, generator=torch.Generator().manual_seed(3)).audio_values
        pieces = chunked.decode(codes, generator=torch.Generator().manual_seed(3)).audio_values
    hook.remove()
    hop = config.hop_length
    assert len(calls) > 10 and max(calls) <= (26 + 2 * chunked.decoder.halo_frames()) * hop
    assert pieces.shape == whole.shape
    torch.testing.assert_close(pieces, whole, rtol=0, atol=1e-5)
    # without the overlap the audio changes at the seams: the halo is what makes chunks exact
    chunked.decoder.halo_frames = lambda: 0
    with torch.no_grad():
        seams = chunked.decode(codes, generator=torch.Generator().manual_seed(3)).audio_values
    assert (seams - whole).abs().max() > 1e-4
    with pytest.raises(ValueError, match="multiple of the attention window"):
        with torch.no_grad():
            chunked.decoder(torch.zeros(1, config.latent_dim, 400), chunk_frames=3)


def test_decoder_noise_follows_seed_and_generator(tiny_model):
    codes = tiny_model.encode(torch.randn(1, 1, 1000)).audio_codes
    torch.manual_seed(1)
    a = tiny_model.decode(codes).audio_values
    torch.manual_seed(1)
    b = tiny_model.decode(codes).audio_values
    c = tiny_model.decode(codes, generator=torch.Generator().manual_seed(1)).audio_values
    d = tiny_model.decode(codes, generator=torch.Generator().manual_seed(1)).audio_values
    assert torch.equal(a, b) and torch.equal(c, d)
    assert not torch.equal(tiny_model.decode(codes).audio_values, a)


def test_bfloat16_runs_and_mostly_agrees(tiny_model):
    x = torch.randn(2, 1, 4800) * 0.5
    reference = tiny_model.encode(x).audio_codes
    model16 = LLMCodecModel(tiny_model.config).eval()
    model16.load_state_dict(tiny_model.state_dict())
    model16 = model16.to(torch.bfloat16)
    out = model16.encode(x)
    agreement = [(a == b).float().mean().item() for a, b in zip(out.audio_codes, reference)]
    assert agreement[0] > 0.8, agreement
    audio = model16.decode(out.audio_codes).audio_values
    assert audio.dtype == torch.bfloat16 and torch.isfinite(audio.float()).all()


def test_weight_norm_round_trip_keeps_outputs(tiny_model):
    x = torch.randn(1, 1, 1000)
    with torch.no_grad():
        before = tiny_model.encode_latents(x)
        tiny_model.apply_weight_norm()
        assert any("parametrizations" in n for n, _ in tiny_model.named_parameters())
        during = tiny_model.encode_latents(x)
        tiny_model.remove_weight_norm()
        after = tiny_model.encode_latents(x)
    assert not any("parametrizations" in n for n in tiny_model.state_dict())
    torch.testing.assert_close(during, before, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_non_cblinear_variant_works():
    model = LLMCodecModel(tiny_config(use_cblinear=False)).eval()
    out = model.encode(torch.randn(1, 1, 1000))
    assert model.decode(out.audio_codes).audio_values.shape[-1] == 1008


def test_readable_checkpoint_keys(tiny_model):
    keys = set(tiny_model.state_dict())
    for key in (
        "encoder.conv_in.weight",
        "encoder.blocks.0.res_unit1.conv1.weight",
        "encoder.blocks.1.snake.alpha",
        "encoder.attention.qkv_proj.weight",
        "quantizer.layers.0.codebook",
        "quantizer.layers.2.codebook_proj.weight",
        "decoder.blocks.0.conv_t.weight",
        "decoder.blocks.1.noise.conv.weight",
        "decoder.conv_out.bias",
    ):
        assert key in keys, key


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda: torch.randn(1000), "shape"),
        (lambda: torch.randn(1, 2, 1000), "mono"),
        (lambda: torch.randn(1, 1, 0), "empty"),
        (lambda: [0.0] * 10, "torch tensor"),
    ],
)
def test_encode_input_errors(tiny_model, bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tiny_model.encode(bad())


def test_decode_input_errors(tiny_model):
    codes = tiny_model.encode(torch.randn(1, 1, 1000)).audio_codes
    with pytest.raises(ValueError, match="outside this layer's codebook"):
        tiny_model.decode((codes[0] + 1000, codes[1], codes[2]))
    with pytest.raises(ValueError, match="3 code tensors"):
        tiny_model.decode(codes[:2])
    with pytest.raises(ValueError, match="do not describe one clip"):
        tiny_model.decode((codes[0], codes[1][:, :-2], codes[2]))
    with pytest.raises(ValueError, match="positive multiple"):
        tiny_model.decode(tuple(c[:, :0] for c in codes))
    with pytest.raises(ValueError, match="integers"):
        tiny_model.decode(tuple(c.float() for c in codes))
    with pytest.raises(ValueError, match="all-zero"):
        tiny_model.encode(torch.randn(2, 1, 100), padding_mask=torch.tensor([[1] * 100, [0] * 100]))


def test_config_validation_messages():
    from huggingface_hub.errors import StrictDataclassClassValidationError as Invalid

    with pytest.raises(Invalid, match="one codebook size per VQ layer"):
        LLMCodecConfig(codebook_sizes=[10, 10])
    with pytest.raises(Invalid, match="latent_dim"):
        tiny_config(latent_dim=8)
    with pytest.raises(Invalid, match="layer1_words"):
        tiny_config(layer1_words=["a", "b"])
    config = LLMCodecConfig()
    assert config.hop_length == 480 and config.pad_multiple == 3840
    assert [round(r, 2) for r in config.tokens_per_second] == [8.33, 16.67, 33.33]
    assert config.sampling_rate == 16000


@settings(max_examples=10, deadline=None)
@given(lengths=st.lists(st.integers(1, 900), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_encode_decode_lengths_and_batch_invariance_property(lengths, seed):
    """Any lengths: codes per layer = padded frames / stride, decode gives back each length, batch = one by one."""
    model = _property_model()
    rng = np.random.default_rng(seed)
    clips = [torch.from_numpy(rng.uniform(-1, 1, n).astype(np.float32)) for n in lengths]
    batch = torch.zeros(len(clips), 1, max(lengths))
    mask = torch.zeros(len(clips), max(lengths), dtype=torch.long)
    for i, clip in enumerate(clips):
        batch[i, 0, : len(clip)], mask[i, : len(clip)] = clip, 1
    unit, config = model.config.pad_multiple, model.config
    with torch.no_grad():
        encoded = model.encode(batch, padding_mask=mask)
        for i, clip in enumerate(clips):
            frames = -(-len(clip) // unit) * unit // config.hop_length
            single = model.encode(clip[None, None])
            for k, stride in enumerate(config.vq_strides):
                assert int(encoded.audio_codes_lengths[i, k]) == frames // stride
                assert torch.equal(encoded.audio_codes[k][i, : frames // stride], single.audio_codes[k][0])
            decoded = model.decode(single.audio_codes, audio_lengths=single.audio_lengths).audio_values
            assert decoded.shape == (1, 1, len(clip)) and torch.isfinite(decoded).all()
            assert decoded.abs().max() <= 1


_PROPERTY_MODEL = []


def _property_model():
    if not _PROPERTY_MODEL:
        torch.manual_seed(0)
        _PROPERTY_MODEL.append(LLMCodecModel(tiny_config()).eval())
    return _PROPERTY_MODEL[0]


def test_a_damaged_checkpoint_is_refused_by_name(tiny_model, tmp_path):
    """A missing weight (transformers would initialise it at random) or NaN values: a ValueError naming the tensor."""
    from safetensors.torch import load_file, save_file

    tiny_model.save_pretrained(tmp_path / "ok")
    LLMCodecModel.from_pretrained(tmp_path / "ok")  # complete: loads
    state = load_file(tmp_path / "ok" / "model.safetensors")
    name = next(k for k in state if k.startswith("decoder."))
    for folder, change in (("missing", lambda s: s.pop(name)), ("nan", lambda s: s[name].fill_(float("nan")))):
        tiny_model.save_pretrained(tmp_path / folder)
        damaged = dict(state)
        damaged = {k: v.clone() for k, v in damaged.items()}
        change(damaged)
        save_file(damaged, tmp_path / folder / "model.safetensors", metadata={"format": "pt"})
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            LLMCodecModel.from_pretrained(tmp_path / folder)


def test_encode_refuses_what_it_would_misread(tiny_model):
    audio = torch.randn(2, 1, 960) * 0.1
    with pytest.raises(TypeError, match="divide by 32768"):
        tiny_model.encode((audio * 32767).to(torch.int16))
    broken = audio.clone()
    broken[0, 0, 5] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        tiny_model.encode(broken)
    left_padded = torch.ones(2, 960, dtype=torch.long)
    left_padded[1, :100] = 0
    with pytest.raises(ValueError, match="right padding"):
        tiny_model.encode(audio, padding_mask=left_padded)
    right_padded = torch.ones(2, 960, dtype=torch.long)
    right_padded[1, 860:] = 0
    tiny_model.encode(audio, padding_mask=right_padded)  # the supported form


def test_codes_of_bool_or_uint8_dtype_are_refused(tiny_model):
    codes = tiny_model.encode(torch.randn(1, 1, 960) * 0.1).audio_codes
    for dtype in (torch.bool, torch.uint8):
        with pytest.raises(ValueError, match="must be integers"):
            tiny_model.decode(tuple(c.to(dtype) for c in codes))


def test_memory_settings_are_not_saved(tiny_model, tmp_path):
    """The chunk lengths are settings of an instance, not of the codec: nothing of them goes into config.json."""
    tiny_model.decode_chunk_s = 5.0
    tiny_model.save_pretrained(tmp_path)
    saved = (tmp_path / "config.json").read_text()
    assert "chunk_s" not in saved and "context_s" not in saved
    assert LLMCodecModel.from_pretrained(tmp_path).decode_chunk_s == 30.0
    tiny_model.decode_chunk_s = 30.0


def test_a_reloaded_semantic_codec_refills_the_teachers_constant_buffers(tmp_path):
    """The voice encoder's mel filters and window are not saved (non-persistent); transformers' loader builds the
    model on the meta device, so `_init_weights` must refill them, or every window embeds garbage (NaN)."""
    from llm_codec.voice_encoder import ResemblyzerMel

    torch.manual_seed(0)
    config = LLMCodecConfig(encoder_dim=8, latent_dim=None, decoder_dim=64, codebook_sizes=[50, 40, 40],
                            codebook_dim=16, attn_head_dim=16, semantic_teacher="resemblyzer", semantic_clusters=4)
    model = LLMCodecModel(config).eval()
    model.semantic.centroids.copy_(F.normalize(torch.randn(4, 256), dim=-1))
    model.semantic.word_codes.copy_(torch.tensor([3, 7, 11, 13]))
    model.save_pretrained(tmp_path)
    loaded = LLMCodecModel.from_pretrained(tmp_path).eval()
    reference = ResemblyzerMel()
    assert torch.equal(loaded.semantic.mel.filters, reference.filters)
    assert torch.equal(loaded.semantic.mel.window, reference.window)
    audio = torch.from_numpy(np.random.default_rng(0).standard_normal(40000).astype(np.float32) * 0.1)
    expected = model.semantic.window_embeddings(audio)
    assert torch.isfinite(expected).all()
    torch.testing.assert_close(loaded.semantic.window_embeddings(audio), expected)
    assert torch.equal(loaded.encode(audio[None, None]).audio_codes[0], model.encode(audio[None, None]).audio_codes[0])
    assert not any(p.requires_grad for p in loaded.semantic.parameters())
