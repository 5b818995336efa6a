import math

import pytest
import torch

from llm_codec import refine_codes
from llm_codec.mel import MultiScaleMelLoss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _audio(seconds_in_samples: int, seed: int = 0) -> torch.Tensor:
    """A chirp plus a little noise: (1, 1, samples) in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(seconds_in_samples) / 16000
    wave = 0.4 * torch.sin(2 * math.pi * (200 + 1500 * t) * t) + 0.05 * torch.randn(seconds_in_samples, generator=generator)
    return wave[None, None]


def _mel_distance(model, codes, audio, seed=0) -> float:
    """The refinement's objective for these codes, decoded with the noise of step 0."""
    with torch.no_grad():
        quantized = model.quantizer.from_codes(codes)
        prediction = model.decoder(quantized, generator=torch.Generator().manual_seed(seed))[..., : audio.shape[-1]]
        return float(MultiScaleMelLoss(model.config.sample_rate)(prediction, audio))


def test_refinement_lowers_the_mel_distance_and_keeps_layer_one(tiny_model):
    audio = _audio(2400)
    encoded = tiny_model.encode(audio)
    refined = refine_codes(tiny_model, audio, steps=30, learning_rate=0.2)
    before = _mel_distance(tiny_model, encoded.audio_codes, audio)
    after = _mel_distance(tiny_model, refined.audio_codes, audio)
    assert after < before
    assert torch.equal(refined.audio_codes[0], encoded.audio_codes[0])  # the layer-1 words stay the encoder's
    changed = sum(int((a != b).sum()) for a, b in zip(refined.audio_codes[1:], encoded.audio_codes[1:]))
    assert changed > 0
    for a, b in zip(refined.audio_codes, encoded.audio_codes):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert int(a.min()) >= 0
    assert torch.equal(refined.audio_codes_lengths, encoded.audio_codes_lengths)
    assert torch.equal(refined.audio_lengths, encoded.audio_lengths)
    assert torch.allclose(refined.quantized_representation, tiny_model.quantizer.from_codes(refined.audio_codes))
    # the refined codes decode like any codes
    decoded = tiny_model.decode(refined.audio_codes, audio_lengths=refined.audio_lengths)
    assert decoded.audio_values.shape == (1, 1, 2400)


def test_refinement_of_every_layer_may_change_layer_one(tiny_model):
    audio = _audio(2400)
    encoded = tiny_model.encode(audio)
    refined = refine_codes(tiny_model, audio, steps=30, learning_rate=0.5, frozen_layers=0)
    assert not torch.equal(refined.audio_codes[0], encoded.audio_codes[0])


def test_zero_steps_are_the_encoders_codes(tiny_model):
    audio = _audio(1000)
    encoded = tiny_model.encode(audio)
    refined = refine_codes(tiny_model, audio, steps=0)
    for a, b in zip(refined.audio_codes, encoded.audio_codes):
        assert torch.equal(a, b)
    as_tuple = refine_codes(tiny_model, audio, steps=0, return_dict=False)
    assert torch.equal(as_tuple[0][1], encoded.audio_codes[1])


def test_batch_items_are_refined_on_their_own_samples(tiny_model):
    long, short = _audio(2400, seed=1), _audio(1300, seed=2)
    batch = torch.zeros(2, 1, 2400)
    batch[0], batch[1, :, :1300] = long[0], short[0]
    mask = torch.zeros(2, 2400, dtype=torch.long)
    mask[0], mask[1, :1300] = 1, 1
    together = refine_codes(tiny_model, batch, padding_mask=mask, steps=8, learning_rate=0.2)
    alone = refine_codes(tiny_model, short, steps=8, learning_rate=0.2)
    for k, layer_codes in enumerate(alone.audio_codes):
        valid = int(together.audio_codes_lengths[1, k])
        assert valid == layer_codes.shape[-1]
        assert torch.equal(together.audio_codes[k][1, :valid], layer_codes[0])


def test_the_codec_is_left_untouched(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    refine_codes(tiny_model, _audio(1200), steps=3)
    assert not tiny_model.training and not any(m.training for m in tiny_model.modules())
    assert all(p.grad is None for p in tiny_model.parameters())
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=-1), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(frozen_layers=3), "frozen_layers"),
        (dict(frozen_layers=-1), "frozen_layers"),
        (dict(chunk_s=0), "chunk_s"),
        (dict(chunk_s="10"), "chunk_s"),
    ],
)
def test_bad_arguments_say_what_to_change(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        refine_codes(tiny_model, _audio(600), **kwargs)


def test_grad_mode_of_the_caller(tiny_model):
    audio = _audio(1200)
    expected = refine_codes(tiny_model, audio, steps=4, learning_rate=0.2)
    with torch.no_grad():  # as inference commands run; the refinement turns gradients on for itself
        inside = refine_codes(tiny_model, audio, steps=4, learning_rate=0.2)
    for a, b in zip(inside.audio_codes, expected.audio_codes):
        assert torch.equal(a, b)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        refine_codes(tiny_model, audio, steps=4)


def test_long_items_are_refined_window_by_window(tiny_model):
    audio = _audio(4800, seed=3)  # 800 latent frames of the tiny codec (hop 6)
    seen = []
    hook = tiny_model.decoder.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[-1]))
    try:
        encoded = tiny_model.encode(audio)
        refined = refine_codes(tiny_model, audio, steps=6, learning_rate=0.2, chunk_s=0.06)  # 160-frame windows
    finally:
        hook.remove()
    halo = tiny_model.decoder.halo_frames()
    assert len(seen) == 5 * 7  # five windows, each scored at its start and after each of six steps
    assert max(seen) <= 160 + 2 * (halo + 4)  # never the whole item (the context is rounded up to whole 4-frame units)
    assert _mel_distance(tiny_model, refined.audio_codes, audio) < _mel_distance(tiny_model, encoded.audio_codes, audio)
    assert torch.equal(refined.audio_codes[0], encoded.audio_codes[0])
    for a, b in zip(refined.audio_codes, encoded.audio_codes):
        assert a.shape == b.shape
    # every window changed something: refinement reached the whole item, not just its first window
    changed = (refined.audio_codes[2] != encoded.audio_codes[2])[0].reshape(5, -1).any(-1)
    assert bool(changed.all())


def test_items_up_to_one_and_a_half_windows_are_refined_in_one_piece(tiny_model):
    audio = _audio(2400, seed=4)  # 400 frames: not more than 1.5 x 300
    whole = refine_codes(tiny_model, audio, steps=5, learning_rate=0.2, chunk_s=None)
    windowed = refine_codes(tiny_model, audio, steps=5, learning_rate=0.2, chunk_s=300 * 6 / 16000)
    for a, b in zip(whole.audio_codes, windowed.audio_codes):
        assert torch.equal(a, b)


def test_windows_cover_the_item_in_whole_units():
    from llm_codec.refinement import _windows

    assert _windows(96, None, 8) == [(0, 96)]
    assert _windows(96, 64, 8) == [(0, 96)]  # 96 <= 1.5 x 64
    windows = _windows(1000, 96, 8)
    assert windows[0][0] == 0 and windows[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))
    assert all(start % 8 == 0 and end % 8 == 0 and 80 <= end - start <= 112 for start, end in windows)
