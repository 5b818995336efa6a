"""The main job (`llm-codec demo`): bundled labelled clips, and a full run on tiny models (the real default is slow)."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from llm_codec import LLMCodecModel
from llm_codec.demo import demo_clips_dir, labelled_clips, run_demo

from .conftest import TINY_ARCH, TINY_WORDS, foreign_llama, foreign_tokenizer, tiny_llama, tiny_tokenizer

WORDS, ARCH = TINY_WORDS, TINY_ARCH


def test_bundled_clips_are_labelled_and_from_other_kits():
    demos = labelled_clips(demo_clips_dir() / "demonstrations")
    queries = labelled_clips(demo_clips_dir() / "queries")
    assert len(demos) == 9 and len(queries) == 52
    assert {label for _, label in demos} == {label for _, label in queries} == {"hihat", "kick", "snare"}
    kit = lambda path: path.name.split("__")[0]  # noqa: E731
    assert {kit(p) for p, _ in demos}.isdisjoint({kit(p) for p, _ in queries})
    attribution = (demo_clips_dir().parent / "ATTRIBUTION.md").read_text()
    assert all(name in attribution for name in ("BJA_Pacific", "rumpf_kit_z01_h2", "Audiophob", "FluidR3"))
    assert all(p.name.split("__")[0] in attribution for p, _ in queries)  # every kit's licence is stated
    assert "Frank Wen" in (demo_clips_dir().parent / "FluidR3.LICENSE").read_text()  # the MIT notice travels along
    counts = {label: sum(l == label for _, l in queries) for label in ("hihat", "kick", "snare")}
    assert min(counts.values()) >= 15, counts
    with pytest.raises(FileNotFoundError, match="No labelled clips"):
        labelled_clips(demo_clips_dir())  # its subfolders hold folders, not audio


def test_demo_runs_end_to_end_on_tiny_models(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for role, count in (("demonstrations", 2), ("queries", 3)):
        for label, freq in (("w50", 300.0), ("w60", 2000.0)):
            folder = tmp_path / "clips" / role / label
            folder.mkdir(parents=True)
            for i in range(count):
                t = np.arange(3200) / 16000
                sf.write(folder / f"k{role[0]}__{i}.wav", (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(3200)).astype(np.float32), 16000)
    sf.write(tmp_path / "speech.wav", (0.1 * rng.standard_normal(4000)).astype(np.float32), 16000)
    lm = tiny_llama()
    tokenizer = tiny_tokenizer(200)
    codec = LLMCodecModel.from_language_model(lm, tokenizer, word_list=WORDS, **ARCH).eval()
    result = run_demo(str(tmp_path / "out"), tmp_path / "clips", str(tmp_path / "speech.wav"), codec=codec,
                      language_model=lm, tokenizer=tokenizer)
    printed = capsys.readouterr().out
    assert torch.is_grad_enabled()  # run without gradient, the caller's mode left alone
    assert set(result.accuracy) == {"icl", "calibrated", "embedding", "logmel"}
    assert result.accuracy["logmel"] == 1.0  # 300 Hz vs 2 kHz tones: the no-learning reference cannot miss
    assert "no-learning reference logmel 100% (6/6, 61%-100%)" in printed  # Wilson interval of 6 of 6
    assert "  layer 1 as words: " in printed and "group heads" not in printed  # the paper's layer 1: no heads
    assert result.intervals["logmel"][0] < 1 and set(result.intervals) == set(result.accuracy)
    for name, rankings in result.rankings.items():
        assert len(rankings) == 6
        for ranked in rankings:
            assert [r["label"] for r in ranked] != [] and abs(sum(r["score"] for r in ranked) - 1) < 1e-6
            assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
        hits = sum(r[0]["label"] == label for r, (_, label) in zip(rankings, result.queries))
        assert result.accuracy[name] == hits / 6
        low, high = result.intervals[name]
        assert low <= result.accuracy[name] <= high
        assert f"{name} {result.accuracy[name]:.0%} ({hits}/6, {low:.0%}-{high:.0%})" in printed
    assert Path(result.wav).is_file() and Path(result.png).is_file()
    assert sf.info(result.wav).frames == 4000


@pytest.mark.slow
def test_demo_on_the_embedded_default(tmp_path, capsys):
    result = run_demo(str(tmp_path))
    assert "llm-codec demo --model shipped:semantic" in capsys.readouterr().out  # where to go for in-context learning
    assert result.trained, "the shipped default codec weights were not found"
    assert len(result.queries) == 52 and all(0 <= a <= 1 for a in result.accuracy.values())
    assert Path(result.wav).is_file() and Path(result.png).is_file()


def test_demo_runs_another_stack_from_the_command_line(tmp_path, monkeypatch, capsys):
    """`llm-codec demo --model ... --lm ... --audio-format text`: the same job with another codec and LM."""
    import llm_codec.cli as cli

    seen = {}
    monkeypatch.setattr(cli, "load_models", lambda *args: seen.setdefault("load", args) and ("codec", "lm", "tok"))
    monkeypatch.setattr(cli, "run_demo", lambda *args, **kwargs: seen.setdefault("run", (args, kwargs)))
    out = str(tmp_path / "out")
    assert cli.main(["demo", "--output", out, "--model", "my-codec", "--lm", "Qwen/Qwen2.5-Coder-1.5B-Instruct",
                     "--audio-format", "text"]) == 0
    assert seen["load"] == ("my-codec", "Qwen/Qwen2.5-Coder-1.5B-Instruct", None, "text")
    args, kwargs = seen["run"]
    assert args[0] == out and kwargs == dict(audio_format="text", codec="codec", language_model="lm", tokenizer="tok")
    seen.clear()
    assert cli.main(["demo", "--output", out]) == 0  # the default stack: run_demo loads it
    assert "load" not in seen and seen["run"][1] == dict(audio_format="ids")
    assert cli.main(["demo", "--output", out, "--audio-format", "text"]) == 2
    assert "add --lm" in capsys.readouterr().err


def test_demo_reads_the_codes_as_text_for_another_lm(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for role in ("demonstrations", "queries"):
        for label, freq in (("low", 300.0), ("high", 2000.0)):
            folder = tmp_path / "clips" / role / label
            folder.mkdir(parents=True)
            t = np.arange(3200) / 16000
            sf.write(folder / f"k{role[0]}__0.wav", (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)
    sf.write(tmp_path / "speech.wav", (0.1 * rng.standard_normal(4000)).astype(np.float32), 16000)
    codec = LLMCodecModel.from_language_model(tiny_llama(), tiny_tokenizer(200), word_list=WORDS, **ARCH).eval()
    other = foreign_tokenizer(200)  # an LM of another vocabulary: it can only read the layer-1 words as text
    clips, speech = tmp_path / "clips", str(tmp_path / "speech.wav")
    with pytest.raises(ValueError, match="vocabulary"):
        run_demo(str(tmp_path / "out"), clips, speech, codec=codec, language_model=foreign_llama(other), tokenizer=other)
    result = run_demo(str(tmp_path / "out"), clips, speech, codec=codec, language_model=foreign_llama(other),
                      tokenizer=other, audio_format="text")
    assert "reading the codes as text" in capsys.readouterr().out
    assert len(result.queries) == 2 and set(result.accuracy) == {"icl", "calibrated", "embedding", "logmel"}
