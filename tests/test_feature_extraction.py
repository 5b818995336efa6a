"""Tests of `LLMCodecFeatureExtractor` and `to_mono_float32`."""

import math

import numpy as np
import pytest
import soxr
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_codec.feature_extraction_llm_codec import LLMCodecFeatureExtractor, to_mono_float32


@pytest.fixture(scope="module")
def fe():
    return LLMCodecFeatureExtractor()


def _rng(seed=0):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------- construction / config


def test_defaults_and_input_names(fe):
    assert fe.model_input_names == ["input_values", "padding_mask"]
    assert fe.feature_size == 1
    assert fe.sampling_rate == 16000
    assert fe.padding_value == 0.0


def test_save_and_load_round_trip(tmp_path):
    fe = LLMCodecFeatureExtractor(sampling_rate=24000, padding_value=0.0)
    fe.save_pretrained(tmp_path)
    loaded = LLMCodecFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.sampling_rate == 24000
    assert loaded.to_dict() == fe.to_dict()


@pytest.mark.parametrize("rate", [0, -16000, float("nan"), "16000", True])
def test_constructor_rejects_bad_sampling_rate(rate):
    with pytest.raises(ValueError, match="sampling_rate"):
        LLMCodecFeatureExtractor(sampling_rate=rate)


def test_constructor_rejects_non_mono_feature_size():
    with pytest.raises(ValueError, match="mono"):
        LLMCodecFeatureExtractor(feature_size=2)


def test_constructor_rejects_left_padding():
    with pytest.raises(ValueError, match="right"):
        LLMCodecFeatureExtractor(padding_side="left")


# ------------------------------------------------------------------------------------------------- output structure


def test_single_clip_numpy_output(fe):
    clip = _rng().uniform(-1, 1, 1000).astype(np.float32)
    out = fe(clip, sampling_rate=16000)
    assert set(out.keys()) == {"input_values", "padding_mask"}
    assert isinstance(out["input_values"], np.ndarray)
    assert out["input_values"].shape == (1, 1, 1000)
    assert out["input_values"].dtype == np.float32
    assert out["padding_mask"].shape == (1, 1000)
    assert out["padding_mask"].dtype == np.int64
    assert out["padding_mask"].all()
    np.testing.assert_array_equal(out["input_values"][0, 0], clip)


def test_batch_padding_and_mask(fe):
    rng = _rng(1)
    clips = [rng.uniform(-1, 1, n).astype(np.float32) for n in (300, 1000, 17)]
    out = fe(clips, sampling_rate=16000)
    assert out["input_values"].shape == (3, 1, 1000)
    assert out["padding_mask"].shape == (3, 1000)
    np.testing.assert_array_equal(out["padding_mask"].sum(-1), [300, 1000, 17])
    for row, clip in enumerate(clips):
        n = len(clip)
        np.testing.assert_array_equal(out["input_values"][row, 0, :n], clip)
        assert not out["input_values"][row, 0, n:].any()
        assert out["padding_mask"][row, :n].all() and not out["padding_mask"][row, n:].any()


def test_return_tensors_pt(fe):
    clips = [torch.rand(2, 400) * 2 - 1, np.zeros(250, dtype=np.int16)]
    out = fe(clips, sampling_rate=16000, return_tensors="pt")
    assert torch.is_tensor(out["input_values"]) and torch.is_tensor(out["padding_mask"])
    assert out["input_values"].dtype == torch.float32 and out["input_values"].shape == (2, 1, 400)
    assert out["padding_mask"].dtype == torch.int64 and out["padding_mask"].shape == (2, 400)
    assert out["padding_mask"].sum(-1).tolist() == [400, 250]


def test_return_tensors_np(fe):
    out = fe([0.1, 0.2, 0.3], sampling_rate=16000, return_tensors="np")
    assert isinstance(out["input_values"], np.ndarray)
    np.testing.assert_array_equal(out["input_values"], np.array([[[0.1, 0.2, 0.3]]], dtype=np.float32))


def test_output_feeds_the_model(fe):
    from llm_codec import LLMCodecConfig, LLMCodecModel

    config = LLMCodecConfig(
        encoder_dim=4,
        encoder_rates=[2, 2],
        decoder_rates=[2, 2],
        latent_dim=None,
        decoder_dim=16,
        vq_strides=[2, 1],
        codebook_sizes=[8, 8],
        codebook_dim=8,
        attn_window_size=None,
    )
    model = LLMCodecModel(config).eval()
    rng = _rng(2)
    inputs = fe(
        [rng.uniform(-1, 1, 50).astype(np.float32), rng.uniform(-1, 1, 30).astype(np.float32)],
        sampling_rate=16000,
        return_tensors="pt",
    )
    with torch.no_grad():
        encoded = model.encode(**inputs)
        model(**inputs)
    assert encoded.audio_lengths.tolist() == [50, 30]


# ----------------------------------------------------------------------------------------- padding / truncation


def test_padding_max_length(fe):
    clips = [np.ones(10, np.float32), np.ones(20, np.float32)]
    out = fe(clips, sampling_rate=16000, padding="max_length", max_length=32)
    assert out["input_values"].shape == (2, 1, 32)
    assert out["padding_mask"].sum(-1).tolist() == [10, 20]
    assert not out["input_values"][:, :, 20:].any()


def test_padding_max_length_too_short_without_truncation(fe):
    with pytest.raises(ValueError, match="truncation=True"):
        fe([np.ones(40, np.float32)], sampling_rate=16000, padding="max_length", max_length=32)


def test_padding_max_length_needs_max_length(fe):
    with pytest.raises(ValueError, match="max_length"):
        fe(np.ones(4, np.float32), sampling_rate=16000, padding="max_length")


def test_truncation(fe):
    clips = [np.arange(50, dtype=np.float32) / 50, np.ones(10, np.float32)]
    out = fe(clips, sampling_rate=16000, truncation=True, max_length=16)
    assert out["input_values"].shape == (2, 1, 16)
    np.testing.assert_array_equal(out["input_values"][0, 0], clips[0][:16])
    assert out["padding_mask"].sum(-1).tolist() == [16, 10]


def test_truncation_needs_max_length(fe):
    with pytest.raises(ValueError, match="max_length"):
        fe(np.ones(4, np.float32), sampling_rate=16000, truncation=True)


@pytest.mark.parametrize("max_length", [0, -3, 2.5, True])
def test_bad_max_length(fe, max_length):
    with pytest.raises(ValueError, match="max_length"):
        fe(np.ones(4, np.float32), sampling_rate=16000, padding="max_length", max_length=max_length)


def test_no_padding_equal_lengths(fe):
    out = fe([np.ones(8, np.float32), np.zeros(8, np.float32)], sampling_rate=16000, padding=False)
    assert out["input_values"].shape == (2, 1, 8)
    assert out["padding_mask"].all()


def test_no_padding_unequal_lengths_raises(fe):
    with pytest.raises(ValueError, match="padding=True"):
        fe([np.ones(8, np.float32), np.zeros(9, np.float32)], sampling_rate=16000, padding=False)


# ------------------------------------------------------------------------------------------------- dtypes / channels


def test_int16_scaling_exact():
    clip = np.array([16384, -16384, 32767, -32768, 0, 1], dtype=np.int16)
    out = to_mono_float32(clip)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([0.5, -0.5, 32767 / 32768, -1.0, 0.0, 1 / 32768], dtype=np.float32))


def test_int32_scaling():
    clip = np.array([2**30, -(2**31), 2**31 - 1, 0], dtype=np.int32)
    out = to_mono_float32(clip)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([0.5, -1.0, (2**31 - 1) / 2**31, 0.0], dtype=np.float32))


def test_uint8_centred():
    clip = np.array([0, 64, 128, 192, 255], dtype=np.uint8)
    np.testing.assert_array_equal(
        to_mono_float32(clip), np.array([-1.0, -0.5, 0.0, 0.5, 127 / 128], dtype=np.float32)
    )


def test_int8_scaling():
    np.testing.assert_array_equal(to_mono_float32(np.array([64, -128], np.int8)), np.array([0.5, -1.0], np.float32))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_dtypes(dtype):
    clip = np.array([0.5, -0.25, 1.0], dtype=dtype)
    out = to_mono_float32(clip)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([0.5, -0.25, 1.0], dtype=np.float32))


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int16, torch.int32]
)
def test_torch_dtypes(dtype):
    if dtype.is_floating_point:
        clip = torch.tensor([0.5, -0.25], dtype=dtype)
    else:
        full_scale = 32768 if dtype == torch.int16 else 2**31
        clip = torch.tensor([full_scale // 2, -full_scale // 4], dtype=dtype)
    np.testing.assert_array_equal(to_mono_float32(clip), np.array([0.5, -0.25], np.float32))


def test_torch_tensor_with_grad():
    clip = torch.tensor([0.5, -0.5], requires_grad=True)
    np.testing.assert_array_equal(to_mono_float32(clip), np.array([0.5, -0.5], np.float32))


def test_python_list_of_floats(fe):
    out = fe([0.0, 0.5, -0.5], sampling_rate=16000)
    np.testing.assert_array_equal(out["input_values"], np.array([[[0.0, 0.5, -0.5]]], np.float32))
    batch = fe([[0.0, 0.5], [0.25]], sampling_rate=16000)
    assert batch["input_values"].shape == (2, 1, 2)
    assert batch["padding_mask"].tolist() == [[1, 1], [1, 0]]


def test_stereo_downmix_is_channel_mean(fe):
    stereo = _rng(3).uniform(-1, 1, (2, 500)).astype(np.float32)
    expected = stereo.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(to_mono_float32(stereo), expected, rtol=0, atol=1e-7)
    out = fe(stereo, sampling_rate=16000)
    assert out["input_values"].shape == (1, 1, 500)
    np.testing.assert_allclose(out["input_values"][0, 0], expected, rtol=0, atol=1e-7)


def test_int16_stereo_downmix():
    stereo = np.array([[16384, 0], [0, -16384]], dtype=np.int16)
    np.testing.assert_array_equal(to_mono_float32(stereo), np.array([0.25, -0.25], np.float32))


def test_single_channel_2d_is_identity():
    clip = _rng(4).standard_normal((1, 64)).astype(np.float32)
    np.testing.assert_array_equal(to_mono_float32(clip), clip[0])


def test_clipped_values_pass_through(fe):
    clip = np.array([1.5, -3.0, 0.25, 100.0], dtype=np.float32)
    out = fe(clip, sampling_rate=16000)
    np.testing.assert_array_equal(out["input_values"][0, 0], clip)


# --------------------------------------------------------------------------------------------------------- errors


def test_sampling_rate_required(fe):
    with pytest.raises(ValueError, match=r"sampling_rate=16000"):
        fe(np.zeros(10, np.float32))


@pytest.mark.parametrize("rate", [0, -8000, float("inf"), float("nan")])
def test_non_positive_sampling_rate(fe, rate):
    with pytest.raises(ValueError, match="positive"):
        fe(np.zeros(10, np.float32), sampling_rate=rate)


@pytest.mark.parametrize("rate", [16, 44.1, 999])
def test_a_rate_in_khz_is_refused(fe, rate):
    with pytest.raises(ValueError, match="not kHz"):
        fe(np.zeros(10, np.float32), sampling_rate=rate)


def test_resample_false_with_other_rate(fe):
    with pytest.raises(ValueError, match="resample=True"):
        fe(np.zeros(480, np.float32), sampling_rate=48000, resample=False)


def test_resample_false_same_rate_is_fine(fe):
    out = fe(np.zeros(10, np.float32), sampling_rate=16000, resample=False)
    assert out["input_values"].shape == (1, 1, 10)


@pytest.mark.parametrize(
    "clip", [np.zeros(0, np.float32), np.zeros((2, 0), np.float32), np.zeros((100, 0), np.float32), torch.zeros(0)],
    ids=["np", "2d", "2d-tall", "torch"],
)
def test_empty_clip(fe, clip):
    with pytest.raises(ValueError, match="empty"):
        fe(clip, sampling_rate=16000)


def test_empty_clip_in_batch_names_index(fe):
    with pytest.raises(ValueError, match=r"clip 1.*empty"):
        fe([np.ones(5, np.float32), np.zeros(0, np.float32)], sampling_rate=16000)


@pytest.mark.parametrize("raw_audio", [[], ()], ids=["list", "tuple"])
def test_empty_list_of_clips(fe, raw_audio):
    with pytest.raises(ValueError, match="empty list"):
        fe(raw_audio, sampling_rate=16000)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_the_clip(fe, bad):
    broken = np.ones(10, np.float32)
    broken[3] = bad
    with pytest.raises(ValueError, match=r"clip 2.*NaN or infinite"):
        fe([np.ones(4, np.float32), np.ones(4, np.float32), broken], sampling_rate=16000)


def test_float64_overflowing_float32_is_rejected():
    with pytest.raises(ValueError, match="NaN or infinite"):
        to_mono_float32(np.array([1e300, 0.0]))


def test_more_than_two_dimensions(fe):
    with pytest.raises(ValueError, match=r"\(time,\).*\(channels, time\)"):
        fe(np.zeros((2, 2, 100), np.float32), sampling_rate=16000)


def test_scalar_clip():
    with pytest.raises(ValueError, match=r"\(time,\)"):
        to_mono_float32(np.float32(0.5))


def test_time_channels_layout_suggests_transpose(fe):
    with pytest.raises(ValueError, match="[Tt]ranspose"):
        fe(np.zeros((1000, 2), np.float32), sampling_rate=16000)


def test_many_channels_short_clip_is_accepted():
    # 8 channels is still plausible: treated as (channels, time) (with a warning when rows outnumber columns).
    assert to_mono_float32(np.ones((8, 3), np.float32)).shape == (3,)
    # more than 8 rows is not read as channels, however wide
    with pytest.raises(ValueError, match="12 channels"):
        to_mono_float32(np.ones((12, 9), np.float32))


def test_complex_dtype(fe):
    with pytest.raises(ValueError, match="[Cc]omplex"):
        fe(np.zeros(10, np.complex64), sampling_rate=16000)


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.bool_])
def test_ambiguous_dtypes(dtype):
    with pytest.raises(ValueError, match="Unsupported audio dtype"):
        to_mono_float32(np.zeros(10, dtype=dtype))


def test_unsupported_type():
    with pytest.raises(ValueError, match="Unsupported audio clip type"):
        to_mono_float32("not audio")


# ----------------------------------------------------------------------------------------------------- resampling


def test_resampling_sine_48k_to_16k(fe):
    in_rate, freq, seconds = 48000, 1000.0, 0.5
    n = int(in_rate * seconds)
    sine = (0.5 * np.sin(2 * np.pi * freq * np.arange(n) / in_rate)).astype(np.float32)
    out = fe(sine, sampling_rate=in_rate)
    length = out["input_values"].shape[-1]
    assert abs(length - math.ceil(n / 3)) <= 1
    assert out["padding_mask"].sum() == length
    spectrum = np.abs(np.fft.rfft(out["input_values"][0, 0]))
    freqs = np.fft.rfftfreq(length, d=1 / 16000)
    assert abs(freqs[spectrum.argmax()] - freq) <= 16000 / length
    # amplitude is preserved by a good resampler (away from the edges)
    np.testing.assert_allclose(np.abs(out["input_values"][0, 0, 100:-100]).max(), 0.5, atol=0.01)


def test_resampling_upsamples_too(fe):
    out = fe(np.zeros(800, np.int16), sampling_rate=8000)
    assert abs(out["input_values"].shape[-1] - 1600) <= 1


def test_resampling_to_nothing_raises(fe):
    with pytest.raises(ValueError, match="longer clip"):
        fe(np.ones(1, np.float32), sampling_rate=48000)


# --------------------------------------------------------------------------------------------- property-based tests

_DTYPES = ["float16", "float32", "float64", "int16", "int32", "uint8"]


def _random_clip(rng, dtype, channels, length):
    if dtype.startswith("float"):
        data = rng.uniform(-1, 1, (channels, length)).astype(dtype)
    elif dtype == "uint8":
        data = rng.integers(0, 256, (channels, length)).astype(np.uint8)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, (channels, length), endpoint=True).astype(dtype)
    return data[0] if channels == 1 and rng.random() < 0.5 else data


@settings(max_examples=25, deadline=None)
@given(
    specs=st.lists(
        st.tuples(st.integers(1, 400), st.integers(1, 4), st.sampled_from(_DTYPES), st.booleans()),
        min_size=1,
        max_size=4,
    ),
    in_rate=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_shapes_mask_and_padding(fe, specs, in_rate, seed):
    rng = np.random.default_rng(seed)
    clips = []
    for length, channels, dtype, as_torch in specs:
        # long enough to survive down-sampling by up to 6x
        clip = _random_clip(rng, dtype, channels, length + 8)
        clips.append(torch.from_numpy(clip) if as_torch and dtype != "uint8" else clip)
    mono = [to_mono_float32(c) for c in clips]
    if in_rate != 16000:
        mono = [soxr.resample(m, in_rate, 16000, quality="HQ") for m in mono]
    expected_lengths = [len(m) for m in mono]
    out = fe(clips, sampling_rate=in_rate)
    values, mask = out["input_values"], out["padding_mask"]
    assert values.dtype == np.float32 and mask.dtype == np.int64
    assert values.shape == (len(clips), 1, max(expected_lengths))
    assert mask.shape == (len(clips), max(expected_lengths))
    assert mask.sum(-1).tolist() == expected_lengths
    for row, n in enumerate(expected_lengths):
        assert mask[row, :n].all()
        assert not values[row, 0, n:].any()
    assert np.isfinite(values).all()


@settings(max_examples=25, deadline=None)
@given(length=st.integers(1, 2000), seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1.0, 2.0, 1e-3]))
def test_property_float32_16k_is_bit_identical(fe, length, seed, scale):
    clip = (np.random.default_rng(seed).standard_normal(length) * scale).astype(np.float32)
    out = fe(clip, sampling_rate=16000)
    assert out["input_values"].shape == (1, 1, length)
    assert out["input_values"][0, 0].tobytes() == clip.tobytes()
    assert out["padding_mask"].sum() == length


@settings(max_examples=25, deadline=None)
@given(
    channels=st.integers(1, 6),
    length=st.integers(1, 300),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_downmix_is_mean_int16(channels, length, seed):
    data = np.random.default_rng(seed).integers(-32768, 32767, (channels, length), endpoint=True).astype(np.int16)
    expected = (data.astype(np.float64) / 32768).mean(axis=0)
    np.testing.assert_allclose(to_mono_float32(data), expected, rtol=0, atol=1e-7)


def test_shapes_that_are_not_channels_by_time(caplog):
    with pytest.raises(ValueError, match="9 channels"):
        to_mono_float32(np.zeros((9, 9), np.float32))
    with pytest.raises(ValueError, match="transpose"):
        to_mono_float32(np.zeros((16000, 2), np.float32))
    with caplog.at_level("WARNING"):
        assert to_mono_float32(np.zeros((8, 2), np.float32)).shape == (2,)  # kept, but said
    assert "8 channels of 2 samples" in caplog.text
