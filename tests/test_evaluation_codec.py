"""Codec-quality evaluation: the shipped audio metric modules, `evaluate_codec`, baselines, and the CLI commands."""

import json
import math
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from llm_codec import LLMCodecModel
from llm_codec.cli import main as cli_main
from llm_codec.evaluation.baselines import Baseline
from llm_codec.evaluation.codec_quality import evaluate_codec, select_clips
from llm_codec.evaluation.metrics import load_metric
from llm_codec.evaluation.report import save_results

from .conftest import REPO, tiny_config

RATE = 16000
SPEECH = REPO / "llm_codec" / "assets" / "example_speech.flac"
HAVE_CODEC2 = shutil.which("c2enc") is not None and shutil.which("c2dec") is not None
HAVE_OPUS = shutil.which("opusenc") is not None and shutil.which("opusdec") is not None


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def metrics():
    return {name: load_metric(name) for name in ("pesq_wb", "stoi", "si_sdr", "mel_distance")}


@pytest.fixture(scope="module")
def speech():
    audio, rate = sf.read(str(SPEECH), dtype="float64")
    assert rate == RATE
    return audio


def noise_at_snr(signal: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """White noise scaled so that signal energy / noise energy is exactly `snr_db` (both zero-mean)."""
    noise = np.random.default_rng(seed).standard_normal(signal.size)
    noise -= noise.mean()
    noise -= np.dot(noise, signal) / np.dot(signal, signal) * signal  # orthogonal to the signal
    return noise * np.linalg.norm(signal) / np.linalg.norm(noise) / 10 ** (snr_db / 20)


# ------------------------------------------------------------------------------------------------- metric modules


def test_identical_signals(metrics, speech):
    clip = speech[: 2 * RATE]
    results = {name: m.compute(predictions=[clip], references=[clip], sampling_rate=RATE) for name, m in metrics.items()}
    assert results["stoi"]["stoi"] == pytest.approx(1.0, abs=1e-3)
    assert results["si_sdr"]["si_sdr"] > 100.0
    assert results["mel_distance"]["mel_distance"] == 0.0
    assert results["pesq_wb"]["pesq_wb"] > 4.5  # the top of the wideband MOS-LQO scale (4.64)
    for name, result in results.items():
        assert result["scores"] == [result[name]] and result["nan_reasons"] == [None] and result["num_scored"] == 1


def test_si_sdr_is_scale_invariant_and_matches_the_snr(metrics, speech):
    clip = speech[: 2 * RATE] - speech[: 2 * RATE].mean()
    si_sdr = metrics["si_sdr"]
    noisy = {snr: clip + noise_at_snr(clip, snr, seed=snr + 1) for snr in (0, 10, 20)}
    scores = si_sdr.compute(predictions=list(noisy.values()), references=[clip] * 3, sampling_rate=RATE)["scores"]
    for snr, score in zip(noisy, scores):
        assert score == pytest.approx(snr, abs=0.05)  # float32 storage in the metric's Arrow cache
    scaled = si_sdr.compute(predictions=[0.1 * noisy[10], -7.0 * noisy[10]], references=[clip, clip], sampling_rate=RATE)
    assert scaled["scores"] == pytest.approx([scores[1]] * 2, abs=1e-3)
    # the other metrics do see the noise, and more of it is worse
    mel = metrics["mel_distance"].compute(predictions=[noisy[0], noisy[20]], references=[clip, clip], sampling_rate=RATE)
    assert 0.0 < mel["scores"][1] < mel["scores"][0]


def test_silence_and_short_clips_give_nan_with_a_reason(metrics, speech):
    clip = speech[:RATE]
    silence = np.zeros(RATE)
    short = speech[:800]  # 50 ms
    results = {
        name: m.compute(predictions=[clip, silence, short, []], references=[silence, clip, short, []], sampling_rate=RATE)
        for name, m in metrics.items()
    }
    si = results["si_sdr"]
    assert math.isnan(si["scores"][0]) and "reference is silent" in si["nan_reasons"][0]
    assert math.isnan(si["scores"][1]) and "prediction is silent" in si["nan_reasons"][1]
    assert si["scores"][2] > 100 and si["num_scored"] == 1 and si["si_sdr"] == si["scores"][2]
    pesq = results["pesq_wb"]
    assert all(math.isnan(v) for v in pesq["scores"]) and math.isnan(pesq["pesq_wb"]) and pesq["num_scored"] == 0
    assert "silent" in pesq["nan_reasons"][0] and "silent" in pesq["nan_reasons"][1]
    assert "short" in pesq["nan_reasons"][2].lower()  # PESQ's own BufferTooShortError
    stoi = results["stoi"]
    assert math.isnan(stoi["scores"][0]) and "silent" in stoi["nan_reasons"][0]
    assert math.isnan(stoi["scores"][2]) and "384 ms" in stoi["nan_reasons"][2]
    mel = results["mel_distance"]
    assert mel["scores"][2] == 0.0 and mel["scores"][0] > 0.0  # silence is a valid input for the mel distance
    for name, result in results.items():
        assert math.isnan(result["scores"][3]) and result["nan_reasons"][3] == "empty clip", name


def test_lengths_are_trimmed_and_other_rates_resampled(metrics, speech):
    clip = speech[:RATE]
    longer = np.concatenate([clip, np.random.default_rng(0).standard_normal(4000)])
    assert metrics["si_sdr"].compute(predictions=[longer], references=[clip], sampling_rate=RATE)["si_sdr"] > 100
    assert metrics["mel_distance"].compute(predictions=[clip], references=[longer], sampling_rate=RATE)["mel_distance"] == 0
    # 8 kHz input: PESQ-WB and the mel distance resample to 16 kHz
    narrow = speech[: 2 * RATE : 2]
    assert metrics["pesq_wb"].compute(predictions=[narrow], references=[narrow], sampling_rate=8000)["pesq_wb"] > 4.5
    assert metrics["mel_distance"].compute(predictions=[narrow], references=[narrow], sampling_rate=8000)["mel_distance"] == 0
    with pytest.raises(ValueError, match="sampling_rate"):
        metrics["si_sdr"].compute(predictions=[clip], references=[clip])


# ------------------------------------------------------------------------------------------------- evaluate_codec


@pytest.fixture
def tiny_codec():
    torch.manual_seed(0)
    codec = LLMCodecModel(tiny_config()).eval()
    for layer in codec.quantizer.layers:
        layer.codebook.normal_()
    return codec


@pytest.fixture
def clip_folder(tmp_path, speech):
    """Three 1 s speech clips (one of them stereo at 22.05 kHz) and one silent clip, plus a manifest."""
    import soxr

    folder = tmp_path / "clips"
    (folder / "a").mkdir(parents=True)
    sf.write(str(folder / "a" / "one.wav"), speech[:RATE], RATE)
    sf.write(str(folder / "a" / "two.flac"), speech[RATE : 2 * RATE], RATE)
    stereo = soxr.resample(speech[2 * RATE : 3 * RATE], RATE, 22050)
    sf.write(str(folder / "three.wav"), np.stack([stereo, 0.5 * stereo], axis=1), 22050)
    sf.write(str(folder / "silent.wav"), np.zeros(RATE // 2), RATE)
    rows = [
        {"path": "clips/a/one.wav", "kind": "speech", "source": "src-a"},
        {"path": "clips/a/two.flac", "kind": "speech", "source": "src-a"},
        {"path": "clips/three.wav", "kind": "speech", "source": "src-b"},
        {"path": "clips/silent.wav", "kind": "silence", "source": "src-b"},
    ]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder, manifest


def test_select_clips(clip_folder):
    folder, manifest = clip_folder
    from_folder = select_clips(folder)
    assert [p["clip"] for p in from_folder] == ["a/one.wav", "a/two.flac", "silent.wav", "three.wav"]
    assert all(p["path"].startswith(str(folder.resolve())) for p in from_folder)
    speech_rows = select_clips(manifest, kind="speech")
    assert [r["index"] for r in speech_rows] == [0, 1, 2] and all(r["path"].startswith(str(folder)) for r in speech_rows)
    assert [r["index"] for r in select_clips(manifest, filters={"source": "src-b"})] == [2, 3]
    subset = select_clips(manifest, max_clips=2, seed=3)
    assert len(subset) == 2 and subset == select_clips(manifest, max_clips=2, seed=3)
    with pytest.raises(ValueError, match="manifest"):
        select_clips(folder, kind="speech")
    with pytest.raises(ValueError, match="`speaker` field"):
        select_clips(manifest, filters={"speaker": "x"})
    with pytest.raises(ValueError, match="No clip"):
        select_clips(manifest, kind="music")
    with pytest.raises(FileNotFoundError):
        select_clips(folder / "nowhere")


def test_evaluate_codec_on_a_tiny_codec(tiny_codec, clip_folder, tmp_path):
    _, manifest = clip_folder
    results = evaluate_codec(tiny_codec, manifest, seed=0, progress=False, spectrogram_path=tmp_path / "spec.png")
    ours = results.system("llm-codec")
    config = tiny_codec.config
    # the token rates and bitrate of the config, by hand: hop 2 * 3 = 6 samples, pools 4, 2, 1
    frame_rate = 16000 / 6
    rates = [frame_rate / 4, frame_rate / 2, frame_rate]
    assert ours.tokens_per_second_per_layer == pytest.approx(rates)
    assert ours.tokens_per_second == pytest.approx(sum(rates))
    assert ours.bitrate == pytest.approx(sum(r * math.log2(n) for r, n in zip(rates, [40, 200, 200])))
    assert ours.bitrate == pytest.approx(config.bitrate)
    assert ours.bitrate <= ours.measured_bitrate < 1.05 * ours.bitrate  # padding to whole windows only adds a little
    # per-clip rows
    assert results.num_clips == ours.num_clips == len(ours.per_clip) == 4
    assert results.total_duration_s == pytest.approx(3.5)
    for row in ours.per_clip:
        assert set(row) >= {"clip", "source", "duration_s", "pesq_wb", "stoi", "mel_distance", "si_sdr", "num_codes"}
        assert math.isfinite(row["mel_distance"]) and row["mel_distance"] > 0
    silent = ours.per_clip[3]
    assert math.isnan(silent["si_sdr"]) and "reference is silent" in silent["nan_reasons"]["si_sdr"]
    assert ours.num_scored["si_sdr"] == 3 and ours.nan_reasons["si_sdr"] == {"reference is silent (SI-SDR undefined)": 1}
    assert ours.means["mel_distance"] == pytest.approx(np.mean([r["mel_distance"] for r in ours.per_clip]))
    assert set(ours.by_source) == {"src-a", "src-b"} and ours.by_source["src-a"]["clips"] == 2
    assert ours.real_time_factor > 0 and ours.encode_seconds > 0 and ours.decode_seconds > 0
    assert (tmp_path / "spec.png").stat().st_size > 0
    # JSON (NaN as null) and Markdown
    json_path, md_path = save_results(results, tmp_path / "out")
    saved = json.loads(json_path.read_text())
    assert saved["systems"][0]["system"] == "llm-codec" and saved["systems"][0]["per_clip"][3]["si_sdr"] is None
    table = md_path.read_text()
    assert "| system | bitrate (bit/s) | tokens/s | PESQ-WB | STOI | mel distance | SI-SDR (dB) | clips |" in table
    assert f"| llm-codec | {config.bitrate:.0f} | {sum(rates):.2f} |" in table and "src-b" in table
    # deterministic, and a clip's result does not depend on which other clips are evaluated
    again = evaluate_codec(tiny_codec, manifest, seed=0, kind="speech", filters={"source": "src-b"}, progress=False)
    row = again.system("llm-codec").per_clip[0]
    assert row["clip"] == ours.per_clip[2]["clip"] == "clips/three.wav"
    assert row["mel_distance"] == ours.per_clip[2]["mel_distance"] and row["si_sdr"] == ours.per_clip[2]["si_sdr"]


def test_baseline_names():
    assert Baseline.parse("codec2-700c") == Baseline("codec2-700C", "codec2", "700C", 700.0)
    assert Baseline.parse("opus-6k").bitrate == 6000.0
    for bad, message in (("opus-4k", "below 6"), ("codec2-999", "codec2 mode"), ("mp3-8k", "Unknown baseline")):
        with pytest.raises(ValueError, match=message):
            Baseline.parse(bad)


def test_missing_baseline_tools_are_skipped_with_a_note(tiny_codec, clip_folder, monkeypatch):
    folder, _ = clip_folder
    monkeypatch.setattr(shutil, "which", lambda name: None)
    results = evaluate_codec(tiny_codec, folder / "a", baselines=["codec2-700C", "opus-6k"], progress=False)
    assert [s.system for s in results.systems] == ["llm-codec"]
    assert "c2enc" in results.skipped_baselines["codec2-700C"] and "opus-tools" in results.skipped_baselines["opus-6k"]
    assert "baseline opus-6k skipped" in results.to_markdown()


@pytest.mark.skipif(not (HAVE_CODEC2 and HAVE_OPUS), reason="codec2 (c2enc/c2dec) or opus-tools not installed")
def test_codec2_and_opus_baselines(tiny_codec, clip_folder):
    folder, _ = clip_folder
    results = evaluate_codec(tiny_codec, folder / "a", baselines=["codec2-700C", "codec2-3200", "opus-6k"], progress=False)
    assert [s.system for s in results.systems] == ["llm-codec", "codec2-700C", "codec2-3200", "opus-6k"]
    c2, c2_high, opus = results.systems[1:]
    assert c2.bitrate == 700 and 700 <= c2.measured_bitrate <= 850  # 28-bit frames stored in 4 bytes
    assert c2_high.bitrate == 3200 and 3100 <= c2_high.measured_bitrate <= 3300
    assert opus.bitrate == 6000 and 3000 <= opus.measured_bitrate <= 9000
    for system in (c2, c2_high, opus):
        assert system.num_clips == 2 and system.tokens_per_second is None and system.real_time_factor > 0
        assert system.num_scored["pesq_wb"] == 2 and 1.0 <= system.means["pesq_wb"] <= 4.7
        assert 0.0 < system.means["stoi"] <= 1.0
    # real speech through real codecs: more bits, better; Opus at 6 kbit/s keeps the waveform, codec2 does not
    assert c2_high.means["mel_distance"] < c2.means["mel_distance"]
    assert opus.means["stoi"] > c2.means["stoi"] and opus.means["si_sdr"] > c2.means["si_sdr"]


# ------------------------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def codec_folder(tiny_codec, tmp_path):
    tiny_codec.save_pretrained(tmp_path / "codec")
    return tmp_path / "codec"


def test_cli_evaluate_codec(codec_folder, clip_folder, tmp_path, capsys):
    _, manifest = clip_folder
    out = tmp_path / "eval"
    code = cli_main(["evaluate", "codec", "--data", str(manifest), "--model", str(codec_folder), "--output", str(out),
                     "--kind", "speech", "--max-clips", "2", "--baselines", "none", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| llm-codec |" in printed and "Method:" in printed
    saved = json.loads((out / "results.json").read_text())
    assert saved["num_clips"] == 2 and saved["filters"] == {"kind": "speech"} and saved["max_clips"] == 2
    assert (out / "results.md").is_file() and (out / "spectrogram.png").is_file()
    # errors say what to fix and exit with 2
    assert cli_main(["evaluate", "codec", "--data", str(tmp_path / "nothing"), "--model", str(codec_folder),
                     "--output", str(out)]) == 2
    assert "give a folder of audio files or a JSONL manifest" in capsys.readouterr().err
    assert cli_main(["evaluate", "codec", "--data", str(manifest), "--model", str(codec_folder), "--output", str(out),
                     "--baselines", "opus-2k"]) == 2
    assert "opus-6k or more" in capsys.readouterr().err


def test_cli_evaluate_codec_with_refined_codes(codec_folder, clip_folder, tmp_path, capsys):
    _, manifest = clip_folder
    runs = {}
    for steps in (0, 6):
        out = tmp_path / f"refine{steps}"
        assert cli_main(["evaluate", "codec", "--data", str(manifest), "--model", str(codec_folder), "--output", str(out),
                         "--kind", "speech", "--max-clips", "1", "--baselines", "none", "--quiet", "--no-spectrogram",
                         "--refine-steps", str(steps)]) == 0
        runs[steps] = json.loads((out / "results.json").read_text())["systems"][0]
    assert runs[0]["system"] == "llm-codec" and runs[6]["system"] == "llm-codec-refine6"
    assert "analysis-by-synthesis (6 steps" in runs[6]["note"] and "analysis" not in runs[0]["note"]
    assert runs[6]["per_clip"][0]["mel_distance"] != runs[0]["per_clip"][0]["mel_distance"]
    assert runs[6]["bitrate"] == runs[0]["bitrate"]  # the same token rate
    with pytest.raises(SystemExit):
        cli_main(["evaluate", "codec", "--data", str(manifest), "--model", str(codec_folder),
                  "--output", str(tmp_path / "x"), "--refine-steps", "-1"])
    assert "--refine-steps: must be 0 or more" in capsys.readouterr().err


def test_cli_bench(codec_folder, tmp_path, capsys):
    report = tmp_path / "bench.json"
    code = cli_main(["bench", "--model", str(codec_folder), "--seconds", "0.5", "--repeats", "2", "--threads", "1",
                     "--output", str(report)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Method:" in printed and "real-time factor" in printed and "peak RSS" in printed
    figures = json.loads(report.read_text())
    assert figures["seconds"] == 0.5 and figures["threads"] == 1 and len(figures["encode_runs_s"]) == 2
    assert figures["real_time_factor"] == pytest.approx((figures["encode_s"] + figures["decode_s"]) / 0.5)
    assert figures["peak_rss_mb"] > 0 and figures["bitrate"] == pytest.approx(tiny_config().bitrate)
    assert cli_main(["bench", "--model", str(tmp_path / "missing")]) == 2
    assert str(tmp_path / "missing") in capsys.readouterr().err


def test_delay_compensation_finds_the_lag_and_restores_the_scores():
    from llm_codec.evaluation.scoring import align_to_reference, score_clip

    rng = np.random.default_rng(0)
    gains = np.repeat(rng.uniform(0.01, 0.5, 50), 320)  # speech-like bursts: a new level every 20 ms
    reference = (gains * rng.standard_normal(16000)).astype(np.float32)
    late = np.concatenate([np.zeros(320, np.float32), reference])  # 20 ms late and longer
    aligned, lag = align_to_reference(late, reference, 16000)
    assert lag == 320 and aligned.shape == reference.shape
    np.testing.assert_array_equal(aligned, reference)
    early, lag = align_to_reference(reference[160:], reference, 16000)
    assert lag == -160 and np.array_equal(early[160:], reference[160:]) and not early[:160].any()
    raw, _ = score_clip(late[: reference.size], reference, 16000)
    fixed, _ = score_clip(aligned, reference, 16000)
    assert fixed["si_sdr"] > 100 > raw["si_sdr"]  # identical once aligned; a 20 ms delay ruins SI-SDR
    # a codec that keeps the envelope but not the waveform (new noise, same levels) is still aligned correctly
    other = (gains * rng.standard_normal(16000)).astype(np.float32)
    _, lag = align_to_reference(np.concatenate([np.zeros(480, np.float32), other]), reference, 16000)
    assert abs(lag - 480) <= 32
    _, lag = align_to_reference(np.concatenate([np.zeros(8000, np.float32), reference]), reference, 16000)
    assert abs(lag) <= 1600  # the search stops at +-100 ms (the true lag, 8000, is outside)


def test_results_markdown_pairs_the_codec_with_each_baseline_clip_by_clip():
    from llm_codec.evaluation.report import CodecEvaluationResults, SystemResult
    from llm_codec.evaluation.statistics import paired_difference

    def system(name, pesq):
        return SystemResult(system=name, bitrate=700.0, per_clip=[
            {"clip": f"c{i}", "source": "s", "pesq_wb": p, "stoi": 0.5} for i, p in enumerate(pesq)])

    codec = system("llm-codec", [1.5, 1.2, float("nan"), 1.4])
    baseline = system("codec2-700C", [1.0, 1.4, 1.3, 1.2])
    results = CodecEvaluationResults(systems=[codec, baseline], data="d", num_clips=4, total_duration_s=4.0,
                                     sample_rate=16000, seed=0)
    (row,) = results.paired_differences("pesq_wb")
    assert row["baseline"] == "codec2-700C" and row["clips"] == 3
    assert row["mean"] == pytest.approx(0.5 / 3) and row["higher"] == pytest.approx(2 / 3)
    assert row["low"] <= row["mean"] <= row["high"]
    markdown = results.to_markdown()
    assert f"| codec2-700C | PESQ-WB | 3 | +0.167 | [{row['low']:+.3f}, {row['high']:+.3f}] | 67 % |" in markdown
    assert "| codec2-700C | STOI | 4 | +0.000 |" in markdown
    # nothing scored by both: NaNs, not an error
    assert paired_difference(np.array([np.nan]), np.array([1.0]))["clips"] == 0
